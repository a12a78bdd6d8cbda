#!/usr/bin/env bash
# The GPU checks, prepared for the first session that is lent a device machine: run it there, from the
# repository root, as ONE command (device tool: `bash scripts/gpu-check.sh`, timeout_s 580).
#
# The device image has python3 with torch (CUDA), CuPy, JAX (CUDA), numba, pluggy, pytest and pytest-xdist,
# and no network: tsgu is installed from this tree without dependencies and without build isolation. cuDSS needs
# nvmath-python, which is not in the image: carry its wheels in .whl/ (see the device tool's README) to include it.
# Writes logs under $OUT (the device tool's folder that comes back), else under gpu-results/.
set -uo pipefail
out=${OUT:-gpu-results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1

if [ -d .whl ]; then  # optional extra wheels (nvmath-python and its needs, for the cudss backend)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . 2>&1 | tail -3
nvidia-smi -L | tee "$out/device.txt"
python3 -c "import torch, tsgu_core; print(torch.__version__, torch.cuda.get_device_name()); \
print([(e.name, e.availability.available, e.availability.reason) for e in tsgu_core.list_backends()])" \
    2>&1 | tee -a "$out/device.txt"

# 1. every test that needs a CUDA device (the conformance kit's cuda cases included), slow ones too
timeout 330 python3 -m pytest -o addopts="" -p no:cacheprovider -m cuda -n 8 -q -rs tests 2>&1 \
    | tee "$out/cuda-tests.log" | tail -40

# 2. the GPU benchmarks, small sizes first so that something comes back within the limit
timeout 90 python3 benchmarks/cudss.py --quick 2>&1 | tee "$out/bench-cudss-quick.log" | tail -30
timeout 120 python3 benchmarks/cudss.py --repeats 3 2>&1 | tee "$out/bench-cudss.log" | tail -30
cp benchmarks/results/*cudss* "$out/" 2>/dev/null || true
echo "gpu-check done"
