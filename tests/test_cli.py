"""The tsgu command line, through subprocesses as a user runs it (SPEC S8)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
import torch

from tsgu_core.testing import random_nonsymmetric

pyamg = pytest.importorskip("pyamg", reason="needs pyamg (its gallery matrices)")


SCRIPT = Path(sys.executable).parent / "tsgu"  # the installed console script


def tsgu(*args, check=True):
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "tsgu_core.cli"]
    result = subprocess.run([*command, *args], capture_output=True, text=True, env=environment, check=False)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def system(tmp_path):
    D = random_nonsymmetric(30, seed=7).numpy()
    path = tmp_path / "A.mtx"
    scipy.io.mmwrite(path, sp.csr_matrix(D))
    return D, str(path)


def test_info_lists_backends_and_defaults():
    out = tsgu("info").stdout
    assert "scipy  [tsgu" in out and "torch  [tsgu" in out
    assert "defaults:" in out and "cpu: scipy / splu" in out
    assert "[lstsq]" in out and "[triangular]" in out


def test_explain_says_why():
    out = tsgu("explain", "--device", "cpu", "--method", "cg").stdout
    assert "backend='scipy' method='cg'" in out and "highest priority" in out


def test_solve_writes_the_solution(system, tmp_path):
    D, path = system
    b = np.arange(30, dtype=float)
    np.save(tmp_path / "b.npy", b)
    out = tsgu("solve", path, str(tmp_path / "b.npy"), "-o", str(tmp_path / "x.npy")).stdout
    assert "backend     scipy / splu" in out and "residual" in out
    np.testing.assert_allclose(D @ np.load(tmp_path / "x.npy"), b, atol=1e-10)
    out = tsgu("solve", path, "--backend", "torch", "--method", "bicgstab", "--rtol", "1e-10",
               "--option", "preconditioner='jacobi'", "-o", str(tmp_path / "x.mtx")).stdout  # fmt: skip
    assert "iterations  " in out
    np.testing.assert_allclose(D @ scipy.io.mmread(tmp_path / "x.mtx").ravel(), np.ones(30), atol=1e-8)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p.write_text("this is not a matrix\n"), "not a readable Matrix Market file"),
        (lambda p: None, "no such file"),
    ],
)
def test_bad_files_get_a_message_not_a_traceback(tmp_path, make, words):
    path = tmp_path / "bad.mtx"
    make(path)
    result = tsgu("solve", str(path), check=False)
    assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr


def test_bad_options_and_shapes_are_reported(system, tmp_path):
    _, path = system
    result = tsgu("solve", path, "--method", "gmres", "--option", "tol=1e-3", check=False)
    assert result.returncode == 2 and "UnknownOptionError" in result.stderr and "accepted" in result.stderr
    np.save(tmp_path / "short.npy", np.ones(7))
    result = tsgu("solve", path, str(tmp_path / "short.npy"), check=False)
    assert result.returncode == 2 and "needs (30,)" in result.stderr
    result = tsgu("solve", path, "--backend", "nope", check=False)
    assert result.returncode == 2 and "registered backends" in result.stderr


def test_bench_on_a_gallery_matrix_with_a_plot(tmp_path):
    out = tsgu("bench", "--problem", "recirc_flow", "--repeats", "1", "--backends", "scipy", "torch",
               "--methods", "splu", "gmres", "cg", "--plot", str(tmp_path / "bench.png")).stdout  # fmt: skip
    assert "recirc_flow" in out and "splu" in out and "gmres" in out
    assert "skipped: assumes a spd A" in out  # recirc_flow is nonsymmetric
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_bench_rejects_an_unknown_problem():
    result = tsgu("bench", "--problem", "nonsense", check=False)
    assert result.returncode == 2 and "unknown problem" in result.stderr


def test_demo_recovers_the_field(tmp_path):
    out = tsgu("demo", "--size", "12", "--iterations", "60", "--backends", "scipy", "torch",
               "--plot", str(tmp_path / "demo.png")).stdout  # fmt: skip
    start = float(out.split("relative error of κ at the start:")[1].split()[0])
    finals = [float(line.split()[-1]) for line in out.splitlines() if line.startswith(("scipy ", "torch "))]
    assert start > 0.3 and len(finals) == 2
    assert all(final < 0.15 for final in finals)  # stated bound: the error of κ falls from ~0.35 below 0.15
    assert (tmp_path / "demo.png").stat().st_size > 1000


def test_demo_model_gradient_is_exact():
    """The demo's gradient flows through A's values: check it against finite differences."""
    from tsgu_core import solve
    from tsgu_core.examples.diffusion import DiffusionProblem

    problem = DiffusionProblem(m=4, sources=2)
    theta = 0.1 * torch.randn(problem.n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    theta.requires_grad_()

    def U(t):
        return solve(problem.matrix(t), problem.B, backend="scipy")

    assert torch.autograd.gradcheck(U, (theta,))
