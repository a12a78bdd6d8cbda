"""The petsc backend: its availability here, and its tests inside the PETSc environment (SPEC S9.1).

The PETSc environment is made by scripts/setup-petsc-env.sh (Debian's petsc4py and Open MPI, in its own
virtual environment, because they need NumPy 1.x). Where it exists, these tests run the petsc backend's
conformance suite in one process and a 2-rank distributed check under mpiexec; where it does not, they are
skipped with that reason.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import tsgu_core

ROOT = Path(__file__).parents[1]
PYTHON = Path(os.environ.get("TSGU_PETSC_PYTHON", ROOT / ".venv-petsc" / "bin" / "python"))
needs_env = pytest.mark.skipif(
    not PYTHON.exists(), reason="needs the PETSc environment: run scripts/setup-petsc-env.sh"
)


def test_petsc_backend_is_listed_with_its_availability():
    entry = tsgu_core.get_entry("petsc")
    availability = entry.availability("cpu")
    if not availability:
        assert "not importable" in availability.reason and "setup-petsc-env.sh" in availability.install
        with pytest.raises(tsgu_core.BackendUnavailableError, match="setup-petsc-env"):
            tsgu_core.explain("cpu", backend="petsc")


def run(*command, timeout=600):
    environment = dict(os.environ, TSGU_PETSC_TESTS="1", OMP_NUM_THREADS="1")
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=environment, timeout=timeout)


@needs_env
def test_petsc_conformance_in_one_process():
    result = run(str(PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/mpi/test_petsc_conformance.py")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout


@needs_env
@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs mpiexec (Open MPI: apt-get install openmpi-bin)")
def test_two_ranks_match_the_single_process_answer():
    result = run(
        "mpiexec", "--allow-run-as-root", "--oversubscribe", "-n", "2", str(PYTHON), "tests/mpi/petsc_check.py"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK on 2 rank(s)" in result.stdout
