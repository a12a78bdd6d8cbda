"""SuperLU's ordering chosen from A's structure, and the plain solve for a symmetric A's transpose (scipy backend)."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import tsgu_core
from tsgu_backends.scipy_cupy.scipy_backend import (
    SYMMETRIC_MODE,
    PatternFacts,
    ScipyBackend,
    factorise_chosen,
    pattern_facts,
)
from tsgu_core import SolveOptions
from tsgu_core.testing import convection_diffusion_2d, poisson_2d, random_nonsymmetric, random_spd, to_layout


def _scipy(A: torch.Tensor) -> sp.csr_matrix:
    return sp.csr_matrix((A.values().numpy(), A.col_indices().numpy(), A.crow_indices().numpy()), shape=A.shape)


def _random_values_on_poisson_pattern(m: int, seed: int) -> sp.csr_matrix:
    M = _scipy(poisson_2d(m)).copy()
    M.data = np.random.default_rng(seed).standard_normal(M.nnz)
    return M


def test_pattern_facts():
    assert pattern_facts(_scipy(poisson_2d(5))) == PatternFacts(True, True)
    assert pattern_facts(_scipy(convection_diffusion_2d(5))) == PatternFacts(True, False)
    assert pattern_facts(_scipy(random_nonsymmetric(12).to_sparse_csr())) == PatternFacts(False, False)


def test_symmetric_pattern_gets_symmetric_mode():
    for make in (poisson_2d, convection_diffusion_2d):
        M = _scipy(make(12))
        lu, options = factorise_chosen(M, {}, pattern_facts(M))
        assert options["permc_spec"] == SYMMETRIC_MODE["permc_spec"] and options["options"]["SymmetricMode"]
        b = np.linspace(-1.0, 1.0, M.shape[0])
        np.testing.assert_allclose(lu.solve(b), np.linalg.solve(M.toarray(), b), rtol=1e-12, atol=1e-12)


def test_nonsymmetric_pattern_keeps_defaults():
    M = _scipy(random_nonsymmetric(12).to_sparse_csr())
    assert factorise_chosen(M, {}, pattern_facts(M))[1] == {}


def test_users_ordering_wins():
    M = _scipy(poisson_2d(8))
    for options in ({"permc_spec": "COLAMD"}, {"diag_pivot_thresh": 1.0}, {"options": {"SymmetricMode": False}}):
        assert factorise_chosen(M, dict(options), pattern_facts(M))[1] == options
    merged = factorise_chosen(M, {"relax": 2, "options": {"Equil": False}}, pattern_facts(M))[1]
    assert merged["relax"] == 2 and merged["options"] == {"Equil": False, "SymmetricMode": True}


def test_falls_back_when_diagonal_pivoting_loses_digits():
    M = _random_values_on_poisson_pattern(40, seed=0)  # symmetric pattern, values far from dominant diagonals
    lu, options = factorise_chosen(M, {}, pattern_facts(M))
    assert options == {}  # symmetric mode's backward error was above 100 ε: refactorised with the defaults
    b = np.cos(np.arange(M.shape[0]))
    x = lu.solve(b)
    assert np.abs(b - M @ x).max() / (abs(M).sum(1).max() * np.abs(x).max()) < 1e-15


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("k", [None, 3])
def test_gradients_on_a_symmetric_pattern_with_nonsymmetric_values(layout, k):
    D = convection_diffusion_2d(5, peclet=0.9).to_dense()
    A = to_layout(D, layout).requires_grad_()
    B = torch.randn(D.shape[0], *(() if k is None else (k,)), dtype=torch.float64, requires_grad=True)
    X = tsgu_core.solve(A, B, backend="scipy", method="splu")
    X.square().sum().backward()
    D_ref, B_ref = D.clone().requires_grad_(), B.detach().clone().requires_grad_()
    torch.linalg.solve(D_ref, B_ref).square().sum().backward()
    torch.testing.assert_close(X, torch.linalg.solve(D, B.detach()))
    torch.testing.assert_close(B.grad, B_ref.grad)
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (D != 0))


class _Recording:
    """Wraps a SuperLU object and records the ``trans`` of each solve."""

    def __init__(self, lu):
        self.lu, self.calls = lu, []

    def solve(self, b, trans="N"):
        self.calls.append(trans)
        return self.lu.solve(b, trans=trans)


@pytest.mark.parametrize(
    ("D", "expected"),
    [(random_spd(20), "N"), (random_nonsymmetric(20), "T"), (convection_diffusion_2d(4).to_dense(), "T")],
    ids=["symmetric", "nonsymmetric", "symmetric-pattern"],
)
def test_transpose_solve_of_a_symmetric_matrix_is_a_plain_solve(D, expected):
    backend = ScipyBackend()
    state = backend.prepare(to_layout(D, "csr"), "splu", SolveOptions())
    state.factors[0] = recording = _Recording(state.factors[0])
    B = torch.randn(D.shape[0], 8, dtype=torch.float64)
    X, _ = backend.solve(state, B, transpose=True)
    assert recording.calls == [expected]
    torch.testing.assert_close(X, torch.linalg.solve(D.T, B))
