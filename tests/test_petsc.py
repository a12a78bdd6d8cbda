"""The petsc backend: its availability here, and its tests inside the PETSc environment.

The PETSc environment is made by scripts/setup-petsc-env.sh (Debian's petsc4py and Open MPI, in its own
virtual environment, because they need NumPy 1.x). Where it exists, these tests run the petsc backend's
conformance suite and its own tests in one process, and the distributed check under ``mpiexec -n 4`` — which
solves every case on 1, 2 and 4 ranks (sub-communicators) and compares them with each other and with dense torch,
and checks the bytes the ghost exchange sends against the ghost count; where it does not, they are skipped with
that reason.
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
    """Run ``command``; past ``timeout``, stop it with SIGTERM (mpiexec passes it on to its ranks) and fail."""
    environment = dict(os.environ, TSGU_PETSC_TESTS="1", OMP_NUM_THREADS="1")
    with subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                stdout, stderr = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            pytest.fail(f"{' '.join(command)} ran past {timeout} s (a hang?):\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@needs_env
def test_petsc_conformance_in_one_process():
    result = run(
        str(PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "tests/mpi/test_petsc_conformance.py", "tests/mpi/test_petsc_backend.py",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout


@needs_env
@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="needs mpiexec (Open MPI: apt-get install openmpi-bin)")
def test_one_two_and_four_ranks_match_each_other_and_dense_torch():
    result = run(
        "mpiexec", "--allow-run-as-root", "--oversubscribe", "-n", "4", str(PYTHON), "tests/mpi/petsc_check.py",
        timeout=300,  # a collective step one rank skips hangs: fail instead
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK on [1, 2, 4] rank(s)" in result.stdout
