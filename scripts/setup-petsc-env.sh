#!/usr/bin/env bash
# A separate environment for the petsc backend, from Debian's PETSc (petsc4py 3.18, Open MPI, MUMPS, hypre).
#
# Why not pip: PyPI has only source distributions of petsc and petsc4py; building them takes 15–25 min on
# 2 cores, on every fresh machine. Debian's packages install in ~15 s. They are built against Debian's
# NumPy 1.24 and cannot be imported next to NumPy 2 (which the main environment has, for JAX), hence a
# separate environment on Debian's /usr/bin/python3 with the system site-packages visible.
#
# Usage: scripts/setup-petsc-env.sh [ENV_DIR]      (default .venv-petsc; idempotent)
set -euo pipefail
cd "$(dirname "$0")/.."
env_dir=${1:-.venv-petsc}

packages="python3-petsc4py python3-petsc4py-real python3-mpi4py openmpi-bin python3-numpy python3-venv"
if ! dpkg -s $packages >/dev/null 2>&1; then
    sudo_if_needed=""
    [ "$(id -u)" -ne 0 ] && sudo_if_needed="sudo"
    DEBIAN_FRONTEND=noninteractive $sudo_if_needed apt-get install -y -qq --no-install-recommends $packages >/dev/null \
        || { $sudo_if_needed apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_if_needed apt-get install -y -qq --no-install-recommends $packages >/dev/null; }
fi

petsc_dir=$(ls -d /usr/lib/petscdir/petsc*/x86_64-linux-gnu-real 2>/dev/null | sort | tail -n 1)
[ -n "$petsc_dir" ] || petsc_dir=$(ls -d /usr/lib/petscdir/petsc*/*-real | sort | tail -n 1)
numpy_version=$(/usr/bin/python3 -c "import numpy; print(numpy.__version__)")

/usr/bin/python3 -m venv --system-site-packages "$env_dir"
site=$("$env_dir/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# Debian's petsc4py.pth finds its module through PETSC_DIR (its /usr/lib/petsc link may be absent):
# set it before that .pth runs (this environment's site-packages come first).
echo "import os; os.environ.setdefault('PETSC_DIR', '$petsc_dir')" > "$site/00-tsgu-petsc-dir.pth"
"$env_dir/bin/pip" install --quiet -c constraints.txt torch==2.13.0 "numpy==$numpy_version" "scipy<1.16" \
    pluggy tqdm pytest pytest-xdist
"$env_dir/bin/pip" install --quiet --no-deps --no-build-isolation -e .
"$env_dir/bin/python" -c "from petsc4py import PETSc; from mpi4py import MPI; import tsgu_core; \
print('petsc env ready: PETSc', PETSc.Sys.getVersion(), '|', MPI.Get_library_version().splitlines()[0], '|', \
[e.name for e in tsgu_core.list_backends() if e.availability('cpu')])"
