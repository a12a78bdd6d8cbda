"""The selected-inversion kernels of the scipy backend: the symmetric path, the closed-pattern shortcut, the blocks.

Every result is checked against a dense inverse (NumPy) or a dense ``torch.linalg.slogdet`` + autograd.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as sla
import torch

import tsgu_core
from tsgu_backends.scipy_cupy_backend import selinv
from tsgu_backends.scipy_cupy_backend.selinv import selected_inverse_of_factors
from tsgu_core.testing import poisson_2d, to_layout

SYMMETRIC_MODE = {"permc_spec": "MMD_AT_PLUS_A", "diag_pivot_thresh": 0.0, "options": {"SymmetricMode": True}}


def _symmetric(n: int, seed: int, *, definite: bool, dtype=np.float64) -> np.ndarray:
    """A symmetric (``A = Aᵀ``, also for complex) sparse-patterned matrix; indefinite with det < 0 unless asked."""
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((n, n)) * (rng.random((n, n)) < 0.15)
    if np.issubdtype(dtype, np.complexfloating):
        D = D * np.exp(1j * rng.standard_normal((n, n)))
    D = np.tril(D, -1)
    D = D + D.T
    if definite:
        return D + np.diag(np.abs(D).sum(axis=1) + 1.0)
    diagonal = 1.0 + rng.random(n) * 3.0
    diagonal[: n // 3] *= -1  # indefinite: some negative pivots
    return (D + np.diag(diagonal)).astype(dtype)


class _Spy:
    """Records the ``symmetric`` argument each call of the numeric kernel got."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        kernels = selinv._kernels()
        original = kernels["selinv"]
        self.flags: list[bool] = []

        def spy(*args):
            self.flags.append(bool(args[-1]))
            return original(*args)

        monkeypatch.setitem(kernels, "selinv", spy)


@pytest.mark.parametrize("blocked_from", [0, 10**18], ids=["blocked", "columns"])
@pytest.mark.parametrize("kind", ["definite", "indefinite", "complex"], ids=["spd", "indefinite", "complex-symmetric"])
def test_the_symmetric_path_at_any_position(kind, blocked_from, monkeypatch):
    """``symmetric=True`` on symmetric-mode factors (``perm_r = perm_c``) reads ``L`` and ``D`` only: still exact."""
    dtype = np.complex128 if kind == "complex" else np.float64
    D = _symmetric(70, seed=4, definite=kind == "definite", dtype=dtype)
    lu = sla.splu(sp.csc_matrix(D), **SYMMETRIC_MODE)
    assert np.array_equal(lu.perm_r, lu.perm_c)
    assert not np.array_equal(lu.perm_c, np.arange(70))
    rng = np.random.default_rng(1)
    rows, cols = rng.integers(0, 70, 400), rng.integers(0, 70, 400)
    spy = _Spy(monkeypatch)
    got = selected_inverse_of_factors(lu, rows, cols, symmetric=True, blocked_from=blocked_from)
    assert spy.flags == [True]
    np.testing.assert_allclose(got, np.linalg.inv(D)[rows, cols], rtol=1e-10, atol=1e-13)


def test_the_symmetric_flag_is_ignored_when_pivoting_was_not_symmetric(monkeypatch):
    """Partial pivoting (``perm_r ≠ perm_c``): ``U ≠ D Lᵀ``, so the general recurrences run and stay exact."""
    D = _symmetric(60, seed=2, definite=False)
    lu = sla.splu(sp.csc_matrix(D), permc_spec="COLAMD")
    assert not np.array_equal(lu.perm_r, lu.perm_c)
    rows, cols = np.nonzero(D)
    spy = _Spy(monkeypatch)
    got = selected_inverse_of_factors(lu, rows, cols, symmetric=True)
    assert spy.flags == [False]
    np.testing.assert_allclose(got, np.linalg.inv(D)[rows, cols], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("definite", [True, False], ids=["spd", "det<0"])
def test_slogdet_of_a_symmetric_matrix_takes_the_symmetric_path(layout, definite, monkeypatch):
    """Through the backend: a symmetric A is factorized in symmetric mode and differentiated on ``L`` alone."""
    D = torch.from_numpy(_symmetric(50, seed=9, definite=definite))
    leaf = D.clone().requires_grad_()
    sign_ref, logabsdet_ref = torch.linalg.slogdet(leaf)
    logabsdet_ref.backward()
    assert sign_ref.item() == (1.0 if definite else -1.0)
    spy = _Spy(monkeypatch)
    A = to_layout(D, layout).requires_grad_()
    sign, logabsdet = tsgu_core.slogdet(A)
    assert sign.item() == sign_ref.item()
    torch.testing.assert_close(logabsdet, logabsdet_ref.detach(), rtol=1e-12, atol=1e-12)
    logabsdet.backward()
    assert spy.flags == [True]
    torch.testing.assert_close(A.grad.to_dense(), leaf.grad * (D != 0), rtol=1e-10, atol=1e-12)


def test_slogdet_of_a_nonsymmetric_matrix_takes_the_general_path(monkeypatch):
    """A symmetric pattern with nonsymmetric values: symmetric mode, but ``U ≠ D Lᵀ``, so the general path."""
    D = torch.from_numpy(_symmetric(40, seed=3, definite=True))
    D = D + torch.triu(D, 1) * 0.5  # same pattern, values no longer symmetric
    leaf = D.clone().requires_grad_()
    torch.linalg.slogdet(leaf).logabsdet.backward()
    spy = _Spy(monkeypatch)
    A = D.to_sparse_csr().requires_grad_()
    tsgu_core.slogdet(A)[1].backward()
    assert spy.flags == [False]
    torch.testing.assert_close(A.grad.to_dense(), leaf.grad * (D != 0), rtol=1e-10, atol=1e-12)


def _rows_of(lower: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A strictly lower pattern as the row lists the kernels take (row i: its columns k < i), with repeats."""
    n = lower.shape[0]
    csr = sp.csr_matrix(np.tril(lower, -1))
    # every entry twice, as when L and Uᵀ both hold it
    pointers = np.concatenate([[0], np.cumsum(2 * np.diff(csr.indptr))]).astype(np.int64)
    columns = np.repeat(csr.indices, 2)
    assert pointers.shape[0] == n + 1
    return pointers, columns.astype(np.int32)


@pytest.mark.parametrize("seed", range(6))
def test_a_closed_pattern_is_its_own_symbolic_factor(seed):
    """``closed`` says whether the symbolic factorization adds fill; when it says so, the shortcut's C is the same."""
    kernels = selinv._kernels()
    n = 40
    rng = np.random.default_rng(seed)
    pattern = rng.random((n, n)) < 0.06
    pointers, columns = _rows_of(pattern)
    cptr, crows = kernels["distinct_columns"](pointers, columns, n)
    lower = sp.csc_matrix(np.tril(pattern, -1))
    assert np.array_equal(cptr, lower.indptr)
    assert np.array_equal(crows, lower.indices)  # sorted, each once
    parent = kernels["etree"](pointers, columns, n)
    fptr, frows = kernels["symbolic"](pointers, columns, parent, n)
    fill = fptr[-1] > cptr[-1]
    assert fill  # random patterns fill in: the check below is really tested
    assert not kernels["closed"](cptr, crows)
    # the filled pattern is closed, and the shortcut finds it unchanged
    filled = sp.csc_matrix((np.ones(frows.shape[0]), frows, fptr), shape=(n, n)).toarray() != 0
    assert kernels["closed"](fptr, frows)
    pointers, columns = _rows_of(filled)
    again_ptr, again_rows = selinv._pattern(kernels, pointers, columns, n)
    assert np.array_equal(again_ptr, fptr) and np.array_equal(again_rows, frows)


def test_the_shortcut_is_taken_for_symmetric_mode_factors(monkeypatch):
    """Poisson in symmetric mode: the factors' pattern is closed, so no elimination tree is built; same answer."""
    kernels = selinv._kernels()
    calls = []
    original = kernels["etree"]
    monkeypatch.setitem(kernels, "etree", lambda *args: calls.append(1) or original(*args))
    A = poisson_2d(12)
    M = sp.csc_matrix(A.to_dense().numpy())
    lu = sla.splu(M, **SYMMETRIC_MODE)
    rows, cols = M.nonzero()
    for symmetric in (True, False):
        got = selected_inverse_of_factors(lu, rows, cols, symmetric=symmetric)
        np.testing.assert_allclose(got, np.linalg.inv(M.toarray())[rows, cols], rtol=1e-12, atol=1e-15)
    assert calls == []
    # row interchanges on a nonsymmetric pattern: L + Uᵀ fills in, and the general symbolic factorization runs
    D = np.tril(_symmetric(60, seed=5, definite=False), 3)
    lu = sla.splu(sp.csc_matrix(D), permc_spec="COLAMD")
    rows, cols = np.nonzero(D)
    got = selected_inverse_of_factors(lu, rows, cols)
    np.testing.assert_allclose(got, np.linalg.inv(D)[rows, cols], rtol=1e-10, atol=1e-13)
    assert calls == [1]


@pytest.mark.parametrize("w", [1, 2, 31, 32, 33, 70])
def test_unit_lower_inverse(w):
    """Only the strict lower part is read (the diagonal is taken as ones), blocks of 32 rows included."""
    rng = np.random.default_rng(w)
    T = rng.standard_normal((w, w)) * 0.3
    unit = np.tril(T, -1) + np.eye(w)
    got = selinv._kernels()["unit_lower_inverse"](T)
    np.testing.assert_allclose(got, np.linalg.inv(unit), rtol=1e-12, atol=1e-12)
    assert np.array_equal(got, np.tril(got))


def test_the_symmetric_path_in_float32(monkeypatch):
    """float32: the symmetric path with the dense blocks (``blocked_from=0``) in single precision, against float64."""
    D = _symmetric(60, seed=6, definite=False)
    lu = sla.splu(sp.csc_matrix(D.astype(np.float32)), **SYMMETRIC_MODE)
    rows, cols = np.nonzero(D)
    spy = _Spy(monkeypatch)
    got = selected_inverse_of_factors(lu, rows, cols, symmetric=True, blocked_from=0)
    assert spy.flags == [True] and got.dtype == np.float32
    np.testing.assert_allclose(got, np.linalg.inv(D)[rows, cols], rtol=2e-4, atol=1e-5)
