"""Issue 25, items 9, 10 and 12: hostile input gets a typed, clear error (or a one-line CLI message), never a
traceback, a raw torch message or a silent O(n²).

The command-line cases run ``tsgu`` in the test process (``cli_runs.tsgu_in_process``: the exit code, stdout
and stderr a user sees); under a memory limit, and for torch's once-per-process notices, in a fresh process.
"""

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import scipy.io
import scipy.sparse as sp
import torch
from cli_runs import tsgu_in_process, tsgu_process

import tsgu_core
from tsgu_core import (
    InvalidOptionError,
    PerformanceWarning,
    ShapeError,
    SingularMatrixError,
    UnknownBackendError,
    UnknownMethodError,
    UnknownOptionError,
    UnsupportedDeviceError,
    solve,
    solve_values,
)
from tsgu_core.testing import random_nonsymmetric

HAS_JAX = tsgu_core.get_entry("jax").availability("cpu")


def tsgu(*args, memory_limit=None):
    """Run ``tsgu ARGS`` in this process; ``memory_limit`` (bytes): in a fresh process capped as ``ulimit -v`` does."""
    return tsgu_process(*args, memory_limit=memory_limit) if memory_limit else tsgu_in_process(*args)


def refused(result, *words):
    """Exit code 2, no traceback, the words on stderr."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


@pytest.fixture
def small_system(tmp_path):
    path = tmp_path / "A.mtx"
    scipy.io.mmwrite(path, sp.csr_matrix(random_nonsymmetric(12, seed=3).numpy()))
    return str(path)


def matrix_market(path, header):
    path.write_text(f"%%MatrixMarket matrix coordinate real general\n{header}\n1 1 1.0\n")
    return str(path)


# --- item 9: the command line ------------------------------------------------------------------------------


def test_a_header_claiming_2e9_rows_is_refused_before_any_allocation(tmp_path):
    """60 bytes claiming 2e9 × 2e9: SciPy would allocate 7.45 GiB of row pointers first (a traceback)."""
    path = matrix_market(tmp_path / "big.mtx", "2000000000 2000000000 1")
    assert Path(path).stat().st_size < 100
    refused(tsgu("solve", path, memory_limit=8 * 2**30), "needs about", "of memory", "2000000000 × 2000000000")


def test_a_header_claiming_more_entries_than_the_file_holds_is_refused(tmp_path):
    path = matrix_market(tmp_path / "many.mtx", "3 3 1000000000000")
    refused(tsgu("solve", path), "1000000000000 stored entries", "truncated or its header is wrong")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device that is always full)")
def test_writing_onto_a_full_disk_is_one_line_not_a_traceback(small_system, tmp_path):
    target = tmp_path / "x.npy"
    target.symlink_to("/dev/full")
    refused(tsgu("solve", small_system, "-o", str(target)), "cannot write the solution", "No space left")


def test_demo_and_bench_refuse_what_memory_cannot_hold_before_allocating():
    refused(tsgu("demo", "--size", "100000", "-q"), "--size 100000", "needs about", "TB")
    refused(tsgu("bench", "--n", "10000000000", "-q"), "--n 10000000000", "needs about")


@pytest.mark.parametrize("rtol", ["-1", "nan", "inf", "0"])
def test_bench_refuses_a_bad_rtol_before_any_work(rtol):
    result = tsgu("bench", "--n", "16", "--rtol", rtol, "-q")
    refused(result, "--rtol must be a finite number > 0")
    assert result.stdout == ""  # no case ran


def test_solve_refuses_an_empty_output_name(small_system):
    refused(tsgu("solve", small_system, "-o", ""), "-o got an empty file name")


def test_solve_takes_a_device(small_system, tmp_path):
    out = tmp_path / "x.npy"
    result = tsgu("solve", small_system, "--device", "cpu", "--backend", "scipy", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "on cpu" in result.stdout and out.exists()
    refused(tsgu("solve", small_system, "--device", "meta"), "--device meta")
    refused(tsgu("solve", small_system, "--device", "nonsense"), "not a device name")


def test_explain_takes_assume_and_a_matrix(tmp_path):
    M = sp.random(20, 20, density=0.2, random_state=1)
    path = tmp_path / "S.mtx"
    scipy.io.mmwrite(path, M + M.T + 10 * sp.eye(20))
    result = tsgu("explain", str(path), "--assume", "spd")
    assert result.returncode == 0, result.stderr
    first, chosen = result.stdout.splitlines()[:2]
    assert first.startswith(f"matrix: {path} — 20×20") and first.endswith("float64, symmetric")
    assert "assume='spd'" in chosen
    hinted = tsgu("explain", str(path)).stdout
    assert "--assume spd" in hinted  # a symmetric matrix without --assume gets the hint
    general = tmp_path / "G.mtx"
    scipy.io.mmwrite(general, sp.csr_matrix(random_nonsymmetric(8, seed=1).numpy()))
    assert "nonsymmetric" in tsgu("explain", str(general)).stdout.splitlines()[0]
    refused(tsgu("explain", "--assume", "spdd"), "invalid choice")


def test_an_unknown_option_lists_the_accepted_ones_one_per_line(small_system):
    result = tsgu("solve", small_system, "--backend", "torch", "--method", "gmres", "--option", "restrat=30")
    refused(result, "(did you mean 'restart'?)")
    first, *listing = result.stderr.splitlines()
    assert first.startswith("tsgu solve: UnknownOptionError: ") and first.endswith("accepted options:")
    names = [line.split(":")[0].strip() for line in listing]
    assert {"rtol", "atol", "maxiter", "restart", "preconditioner"} <= set(names)
    assert all(line.startswith("  ") and len(line) < 400 for line in listing)


def test_a_mistyped_method_or_backend_gets_a_suggestion_on_the_command_line(small_system):
    refused(tsgu("solve", small_system, "--method", "gmers"), "did you mean 'gmres'")
    refused(tsgu("solve", small_system, "--backend", "scpiy"), "did you mean 'scipy'")


# --- item 10: typed and clear errors ---------------------------------------------------------------------------


def system(n=6, seed=1):
    return random_nonsymmetric(n, seed=seed).to_sparse_csr(), torch.ones(n, dtype=torch.float64)


@pytest.mark.parametrize("layout", ["csr", "coo"])
def test_an_A_on_the_meta_device_is_a_typed_error(layout):
    A, b = system()
    A = A if layout == "csr" else A.to_sparse_coo()
    with pytest.raises(UnsupportedDeviceError, match="'meta' device"):
        solve(A.to("meta"), b.to("meta"))


@pytest.mark.parametrize(
    "M, said",
    [
        (lambda R: None, "returned NoneType"),
        (lambda R: R[..., :3, :], "returned (3, 1)"),
        (lambda R: R.to(torch.float32), "torch.float32"),
    ],
    ids=["None", "wrong shape", "wrong dtype"],
)
def test_a_callable_preconditioner_returning_the_wrong_thing_is_named(M, said):
    A, b = system()
    with pytest.raises(InvalidOptionError, match="the preconditioner M") as caught:
        solve(A, b, backend="torch", method="gmres", M=M)
    assert said in str(caught.value) and caught.value.option == "M"


def test_a_tensor_preconditioner_of_another_dtype_is_named():
    A, b = system()
    with pytest.raises(InvalidOptionError, match="the preconditioner M is torch.float32") as caught:
        solve(A, b, backend="torch", method="gmres", M=torch.eye(6))
    assert caught.value.option == "M"
    x = solve(A, b, backend="torch", method="gmres", M=torch.eye(6, dtype=torch.float64), rtol=1e-12)
    torch.testing.assert_close(x, torch.linalg.solve(A.to_dense(), b))


@pytest.mark.skipif(not HAS_JAX, reason="needs JAX (pip install 'tsgu[jax]')")
@pytest.mark.parametrize("method", ["gmres", "bicgstab"])
def test_jax_krylov_on_the_zero_matrix_is_singular(method):
    A = torch.sparse_csr_tensor(torch.zeros(4, dtype=torch.int64), torch.zeros(0, dtype=torch.int64),
                                torch.zeros(0, dtype=torch.float64), (3, 3))  # fmt: skip
    with pytest.raises(SingularMatrixError, match="no stored entries"):
        solve(A, torch.ones(3, dtype=torch.float64), backend="jax", method=method)


@pytest.mark.parametrize("backend", [pytest.param("jax", marks=pytest.mark.skipif(not HAS_JAX, reason="no JAX")),
                                     "torch", "scipy"])  # fmt: skip
def test_a_maxiter_beyond_the_declared_range_is_refused(backend):
    A, b = system()
    with pytest.raises(InvalidOptionError, match=r"1 ≤ maxiter ≤ 2147483647, got 9223372036854775808"):
        solve(A, b, backend=backend, method="bicgstab", maxiter=2**63)
    solve(A, b, backend=backend, method="bicgstab", maxiter=2**31 - 1)  # the largest allowed still runs


@pytest.mark.parametrize(
    "options, error, suggestion",
    [
        ({"backend": "scpiy"}, UnknownBackendError, "'scipy'"),
        ({"backend": "torch", "method": "gmers"}, UnknownMethodError, "'gmres'"),
        ({"method": "bicgstba"}, UnknownMethodError, "'bicgstab'"),
        ({"backend": "torch", "method": "gmres", "restrat": 30}, UnknownOptionError, "'restart'"),
    ],
    ids=["backend", "method of a backend", "method", "option"],
)
def test_typos_get_did_you_mean(options, error, suggestion):
    A, b = system()
    with pytest.raises(error, match=f"did you mean {suggestion}"):
        solve(A, b, **options)


def test_no_suggestion_for_an_unrelated_name():
    A, b = system()
    with pytest.raises(UnknownBackendError) as caught:
        solve(A, b, backend="zzzzzz")
    assert "did you mean" not in str(caught.value)


def test_a_transposed_B_gets_the_hint_to_pass_B_T():
    A, _ = system()
    B = torch.ones(3, 6, dtype=torch.float64)
    with pytest.raises(ShapeError, match=r"pass B\.T"):
        solve(A, B)
    with pytest.raises(ShapeError) as caught:  # a plain wrong size: no such hint
        solve(A, torch.ones(5, 2, dtype=torch.float64))
    assert "B.T" not in str(caught.value)


# --- item 12: the O(n²) backward of torch's CSR constructor --------------------------------------------------


@pytest.fixture
def fresh_warning(monkeypatch):
    import tsgu_core.sparse.gradient_cost as cost

    monkeypatch.setattr(cost, "_warned", False)
    monkeypatch.setattr(cost, "DENSE_GRADIENT_WARNING_N", 50)  # the threshold is a measured 4000; small here
    return cost


def _diffusion(m):
    from tsgu_core.examples.diffusion import DiffusionProblem

    problem = DiffusionProblem(m=m, sources=2)
    theta = torch.linspace(-0.3, 0.3, problem.n, dtype=torch.float64).requires_grad_()
    return problem, theta


def test_a_differentiable_csr_constructor_feeding_solve_warns_once(fresh_warning):
    problem, theta = _diffusion(8)  # n = 64 ≥ the lowered threshold
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        U = solve(problem.matrix(theta), problem.B, backend="scipy")
        solve(problem.matrix(theta), problem.B, backend="scipy")
    found = [w for w in caught if issubclass(w.category, PerformanceWarning)]
    assert len(found) == 1 and found[0].filename == __file__  # once, pointing at the user's line
    assert "solve_values" in str(found[0].message) and "O(n²)" in str(found[0].message)
    # the numbers stay right: the gradient equals the one through solve_values (and the dense reference)
    (grad,) = torch.autograd.grad(U.square().sum(), theta)
    U2 = solve_values(problem.pattern, problem.values(theta), problem.B, backend="scipy")
    (grad2,) = torch.autograd.grad(U2.square().sum(), theta)
    dense = problem.matrix(theta).to_dense()
    (grad3,) = torch.autograd.grad(torch.linalg.solve(dense, problem.B).square().sum(), theta)
    torch.testing.assert_close(grad, grad2)
    torch.testing.assert_close(grad2, grad3)


def test_no_warning_below_the_threshold_for_solve_values_coo_or_no_grad(fresh_warning):
    problem, theta = _diffusion(8)
    indices = torch.stack([problem.pattern.row, problem.pattern.col])
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerformanceWarning)
        solve_values(problem.pattern, problem.values(theta), problem.B, backend="scipy")
        coo = torch.sparse_coo_tensor(indices, problem.values(theta), (problem.n, problem.n), is_coalesced=True)
        solve(coo, problem.B, backend="scipy")  # the COO constructor's backward stays sparse
        with torch.no_grad():
            solve(problem.matrix(theta), problem.B, backend="scipy")
        small, small_theta = _diffusion(7)  # n = 49 < 50
        solve(small.matrix(small_theta), small.B, backend="scipy")


# --- item 14: tsgu's own constructors are quiet --------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "from tsgu_core.testing import convection_diffusion_2d; convection_diffusion_2d(4)",
        "from tsgu_core.testing import poisson_2d; poisson_2d(4)",
        "import torch; from tsgu_core.testing import to_layout; to_layout(torch.eye(3), 'csr')",
        "import scipy.sparse as sp; from tsgu_core import from_scipy; from_scipy(sp.eye(3, format='csr'))",
        "import scipy.sparse as sp; from tsgu_core import from_scipy; from_scipy(sp.eye(3), layout='coo')",
    ],
    ids=["convection_diffusion_2d", "poisson_2d", "to_layout", "from_scipy csr", "from_scipy coo"],
)
def test_tsgu_constructors_emit_no_torch_notice(code):
    """A fresh process (torch shows each notice once per process) with every warning an error."""
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
