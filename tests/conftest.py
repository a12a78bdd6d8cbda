"""Test-session settings: one thread per worker (measured: 2 torch threads under load ran
CSR products 7–40× slower than 1), and no CUDA test without a CUDA device."""

import os

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def pytest_ignore_collect(collection_path, config):
    """tests/mpi runs only inside the PETSc environment, launched by tests/test_petsc.py."""
    if "mpi" in collection_path.parts and not os.environ.get("TSGU_PETSC_TESTS"):
        return True
    return None
