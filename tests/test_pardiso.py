"""The ``pardiso`` backend (MKL PARDISO): conformance, matrix-type choice, factor reuse, freeing, fallbacks.

Works with the entry point installed or not: absent, the plugin module is
registered in-process (as ``TSGU_PLUGINS=tsgu_backends.pardiso_backend.plugin`` would).
"""

import gc
import importlib.util

import pytest
import torch

import tsgu_core
from tsgu_core import SolveOptions
from tsgu_core.testing import conformance_cases, random_nonsymmetric, random_spd, run_case, to_layout

if "pardiso" not in [entry.name for entry in tsgu_core.list_backends()]:
    from tsgu_backends.pardiso_backend import plugin

    tsgu_core.register_plugin(plugin, name="pardiso")

needs_pardiso = pytest.mark.skipif(
    importlib.util.find_spec("pypardiso") is None, reason="pypardiso (MKL PARDISO) is not installed"
)


@pytest.mark.parametrize("case", conformance_cases("pardiso"), ids=str)
def test_conformance(case):
    run_case(case)


def _backend():
    return tsgu_core.get_backend("pardiso")


def _symmetric_pattern_nonsymmetric_values(n: int = 20, small_diagonal: bool = False) -> torch.Tensor:
    S = random_spd(n, seed=3)
    mask = S != 0
    generator = torch.Generator().manual_seed(5)
    D = torch.randn(n, n, generator=generator, dtype=torch.float64) * mask
    D.fill_diagonal_(0.0)
    D += torch.diag(0.01 if small_diagonal else D.abs().sum(1) + 1) * torch.eye(n, dtype=torch.float64)
    return D


@pytest.fixture
def phases(monkeypatch):
    """Count the PARDISO phases run (11 analysis, 22 factorization, 33 solve, -1 release)."""
    from tsgu_backends.pardiso_backend import backend

    counted: list[int] = []
    original = backend._pardiso

    def counting(function, pt, maxfct, mnum, mtype, phase, n, arrays):
        counted.append(phase)
        return original(function, pt, maxfct, mnum, mtype, phase, n, arrays)

    monkeypatch.setattr(backend, "_pardiso", counting)
    return counted


def _check_against_dense(D: torch.Tensor, layout: str, k: int | None, **options) -> str:
    """Forward and both gradients against dense torch.linalg.solve; returns the solve's message."""
    n = D.shape[0]
    A = to_layout(D, layout).requires_grad_()
    generator = torch.Generator().manual_seed(1)
    B = torch.randn(n, *(() if k is None else (k,)), generator=generator, dtype=D.dtype, requires_grad=True)
    X, info = tsgu_core.solve(A, B, backend="pardiso", return_info=True, **options)
    X.square().sum().backward()
    D_ref, B_ref = D.clone().requires_grad_(), B.detach().clone().requires_grad_()
    X_ref = torch.linalg.solve(D_ref, B_ref)
    X_ref.square().sum().backward()
    torch.testing.assert_close(X, X_ref)
    torch.testing.assert_close(B.grad, B_ref.grad)
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (D != 0))
    return info.message


@needs_pardiso
@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("k", [None, 4])
def test_mtype_chosen_from_the_pattern(layout, k):
    assert "mtype 11" in _check_against_dense(random_nonsymmetric(24), layout, k)
    assert "mtype 2" in _check_against_dense(random_spd(24), layout, k)
    # a symmetric pattern with nonsymmetric values: 11 by default (1 only when asked)
    assert "mtype 11" in _check_against_dense(_symmetric_pattern_nonsymmetric_values(), layout, k)
    assert "mtype 1 " in _check_against_dense(_symmetric_pattern_nonsymmetric_values(), layout, k, mtype=1)


@needs_pardiso
def test_symmetric_indefinite_falls_back_from_cholesky_to_lu():
    D = random_spd(24, seed=2)
    D -= torch.diag(D.diagonal() - 0.1)  # symmetric, positive diagonal, off-diagonal dominant: indefinite
    assert bool((D.diagonal() > 0).all()) and bool(torch.linalg.eigvalsh(D).min() < 0)
    message = _check_against_dense(D, "csr", 3)
    assert message.startswith("PARDISO mtype 11") and "mtype 2: not positive definite" in message


@needs_pardiso
def test_explicit_mtype_is_checked():
    A = to_layout(random_nonsymmetric(12), "csr")
    B = torch.ones(12, dtype=torch.float64)
    with pytest.raises((TypeError, ValueError), match="mtype=2"):
        tsgu_core.solve(A, B, backend="pardiso", mtype=2)
    with pytest.raises((TypeError, ValueError), match="mtype=1"):
        tsgu_core.solve(A, B, backend="pardiso", mtype=1)
    with pytest.raises((TypeError, ValueError), match="option mtype must be"):
        tsgu_core.solve(A, B, backend="pardiso", mtype=13)


@needs_pardiso
def test_float32():
    D = random_nonsymmetric(24, dtype=torch.float32)
    A = to_layout(D, "csr")
    B = torch.randn(24, 2, dtype=torch.float32)
    X = tsgu_core.solve(A, B, backend="pardiso")
    assert X.dtype == torch.float32
    torch.testing.assert_close(X, torch.linalg.solve(D.double(), B.double()).float(), rtol=1e-4, atol=1e-5)


@needs_pardiso
def test_backward_reuses_the_factorization(phases):
    D = random_nonsymmetric(30)
    A = to_layout(D, "csr").requires_grad_()
    B = torch.randn(30, 8, dtype=torch.float64, requires_grad=True)
    X = tsgu_core.solve(A, B, backend="pardiso")
    X.sum().backward()
    assert phases.count(11) == 1 and phases.count(22) == 1  # one analysis, one factorization
    assert phases.count(33) == 2  # the forward solve and the transposed one, 8 columns each in one call
    torch.testing.assert_close(B.grad, torch.linalg.solve(D.T, torch.ones(30, 8, dtype=torch.float64)))


@needs_pardiso
def test_factors_are_freed_with_the_state(phases):
    A = to_layout(random_nonsymmetric(16), "csr")
    state = _backend().prepare(A, "pardiso", SolveOptions(extra={"mtype": None}))
    finalizer = state.handle.finalizer
    assert finalizer.alive and -1 not in phases
    del state
    gc.collect()
    assert not finalizer.alive and phases.count(-1) == 1


@needs_pardiso
def test_release_is_idempotent(phases):
    A = to_layout(random_spd(16), "coo")
    state = _backend().prepare(A, "pardiso", SolveOptions(extra={"mtype": None}))
    state.handle.release()
    state.handle.release()
    assert phases.count(-1) == 1


@needs_pardiso
def test_batch_shares_one_analysis(phases):
    n, b = 20, 3
    D = random_nonsymmetric(n)
    scales = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)[:, None, None]
    dense = torch.stack([D + torch.diag(torch.full((n,), float(i))) for i in range(b)]) * scales
    dense = dense * (D != 0) + torch.diag_embed(dense.diagonal(dim1=1, dim2=2))  # one shared pattern
    A = dense.to_sparse_csr().requires_grad_()
    B = torch.randn(b, n, 2, dtype=torch.float64, requires_grad=True)
    X = tsgu_core.solve(A, B, backend="pardiso")
    X.square().sum().backward()
    assert phases.count(11) == 1 and phases.count(22) == b
    D_ref, B_ref = dense.clone().requires_grad_(), B.detach().clone().requires_grad_()
    X_ref = torch.linalg.solve(D_ref, B_ref)
    X_ref.square().sum().backward()
    torch.testing.assert_close(X, X_ref)
    torch.testing.assert_close(B.grad, B_ref.grad)
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (dense != 0))


@needs_pardiso
def test_perturbed_pivots_fall_back_to_superlu():
    # nonsingular, but every diagonal entry is a stored zero: diagonal pivoting (mtype 1) must perturb pivots
    n = 12
    D = torch.zeros(n, n, dtype=torch.float64)
    for i in range(0, n, 2):
        D[i, i + 1], D[i + 1, i] = 2.0 + i, -1.0 - i
    for i in range(n - 2):
        D[i, i + 2] = D[i + 2, i] = 0.1
    A = torch.sparse_csr_tensor(*_with_zero_diagonal(D), size=(n, n))
    B = torch.randn(n, 2, dtype=torch.float64)
    X, info = tsgu_core.solve(A, B, backend="pardiso", mtype=1, return_info=True)
    assert "SuperLU" in info.message and "perturbed pivot" in info.message
    torch.testing.assert_close(X, torch.linalg.solve(D, B))


def _with_zero_diagonal(D: torch.Tensor):
    """CSR arrays of ``D`` with every diagonal entry stored (explicit zeros kept)."""
    n = D.shape[0]
    mask = (D != 0) | torch.eye(n, dtype=torch.bool)
    rows, cols = mask.nonzero(as_tuple=True)
    crow = torch.zeros(n + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return crow, cols, D[rows, cols]


@needs_pardiso
def test_numerically_singular_goes_to_superlu_like_the_scipy_backend():
    """PARDISO perturbs the zero pivot of a rank-deficient A; such factors are not used: SuperLU decides."""
    D = random_nonsymmetric(16)
    D[7] = 2.0 * D[8]  # rank deficient; no empty row or column
    A = torch.sparse_csr_tensor(*_with_zero_diagonal(D), size=(16, 16))
    b = torch.ones(16, dtype=torch.float64)
    for backend in ("pardiso", "scipy"):  # the core's accuracy check refuses the answer of either
        with pytest.raises(tsgu_core.SingularMatrixError, match="singular to working precision"):
            tsgu_core.solve(A, b, backend=backend)
    X, info = tsgu_core.solve(A, b, backend="pardiso", return_info=True, on_failure="ignore")
    assert "SuperLU for every member" in info.message and "perturbed pivot" in info.message
    assert not info.converged
    expected = tsgu_core.solve(A, b, backend="scipy", method="splu", on_failure="ignore")
    torch.testing.assert_close(X, expected, rtol=0, atol=0)


def test_availability_does_not_import_mkl():
    import subprocess
    import sys

    code = (
        "import sys; from tsgu_backends.pardiso_backend.backend import PardisoBackend; "
        "PardisoBackend().is_available('cpu'); print('pypardiso' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert not _backend().is_available("cuda")
