"""Test-session settings: one thread per worker (measured: 2 torch threads under load ran
CSR products 7–40× slower than 1), and no CUDA test without a CUDA device."""

import os

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import tsgu_core  # noqa: E402

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


@pytest.fixture
def register():
    """``register(backend)`` registers a backend object as an in-test plugin, removed after the test."""
    names = []

    def _register(backend):
        class Plugin:
            @tsgu_core.hookimpl
            def tsgu_register_backends(self, register):
                register(backend)

        name = f"plugin-{backend.name}"
        tsgu_core.register_plugin(Plugin(), name=name)
        names.append(name)
        return backend

    yield _register
    for name in names:
        tsgu_core.unregister_plugin(name)
