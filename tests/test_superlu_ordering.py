"""SuperLU's ordering chosen from A's structure, and the plain solve for a symmetric A's transpose (scipy backend)."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import tsgu_core
from tsgu_backends.scipy_cupy_backend.scipy_backend import (
    SYMMETRIC_MODE,
    PatternFacts,
    ScipyBackend,
    factorize_member,
    ordering_options,
    pattern_facts,
)
from tsgu_core import SolveOptions
from tsgu_core.testing import convection_diffusion_2d, poisson_2d, random_nonsymmetric, random_spd, to_layout


def _scipy(A: torch.Tensor) -> sp.csr_matrix:
    return sp.csr_matrix((A.values().numpy(), A.col_indices().numpy(), A.crow_indices().numpy()), shape=A.shape)


def test_pattern_facts():
    assert pattern_facts(_scipy(poisson_2d(5))) == PatternFacts(True, True)
    assert pattern_facts(_scipy(convection_diffusion_2d(5))) == PatternFacts(True, False)
    assert pattern_facts(_scipy(random_nonsymmetric(12).to_sparse_csr())) == PatternFacts(False, False)


def test_symmetric_pattern_gets_symmetric_mode():
    for make in (poisson_2d, convection_diffusion_2d):
        M = _scipy(make(12))
        member = factorize_member(M, {})
        assert (
            member.options["permc_spec"] == SYMMETRIC_MODE["permc_spec"] and member.options["options"]["SymmetricMode"]
        )
        b = np.linspace(-1.0, 1.0, M.shape[0])
        np.testing.assert_allclose(member.solve(b, False), np.linalg.solve(M.toarray(), b), rtol=1e-12, atol=1e-12)
        assert member.unverified is None and member.options["permc_spec"] == "MMD_AT_PLUS_A"  # checked, kept


def test_nonsymmetric_pattern_keeps_defaults():
    M = _scipy(random_nonsymmetric(12).to_sparse_csr())
    member = factorize_member(M, {})
    assert member.options == {} and member.unverified is None


def test_users_ordering_wins():
    facts = pattern_facts(_scipy(poisson_2d(8)))
    for options in ({"permc_spec": "COLAMD"}, {"diag_pivot_thresh": 1.0}, {"options": {"SymmetricMode": False}}):
        assert ordering_options(dict(options), facts) is None
        assert factorize_member(_scipy(poisson_2d(8)), dict(options)).options == options
    merged = ordering_options({"relax": 2, "options": {"Equil": False}}, facts)
    assert merged["relax"] == 2 and merged["options"] == {"Equil": False, "SymmetricMode": True}


@pytest.mark.parametrize("transpose", [False, True])
def test_falls_back_when_diagonal_pivoting_loses_digits(transpose):
    # symmetric pattern; 2×2 blocks whose diagonal passes the 0.01 pivot threshold but grows the factors ~100×
    n, rng = 200, np.random.default_rng(0)
    D = np.zeros((n, n))
    for i in range(0, n, 2):
        D[i, i], D[i + 1, i + 1] = 0.0101 * (1 + rng.random()), 0.0101 * (1 + rng.random())
        D[i, i + 1], D[i + 1, i] = 1 + rng.random(), -(1 + rng.random())
    for i in range(n - 2):
        D[i, i + 2], D[i + 2, i] = 0.3 * rng.standard_normal(), 0.3 * rng.standard_normal()
    M = sp.csr_matrix(D)
    member = factorize_member(M, {})
    assert member.options["permc_spec"] == "MMD_AT_PLUS_A"
    b = np.cos(np.arange(M.shape[0]))
    x = member.solve(b, transpose)
    assert member.options == {}  # symmetric mode's backward error was above 10 ε: refactorized with the defaults
    op = M.T if transpose else M
    np.testing.assert_allclose(x, np.linalg.solve(op.toarray(), b), rtol=1e-10, atol=1e-10)
    assert np.abs(b - op @ x).max() / (abs(op).sum(1).max() * np.abs(x).max()) < 1e-15


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
    state.members[0].lu = recording = _Recording(state.members[0].lu)
    B = torch.randn(D.shape[0], 8, dtype=torch.float64)
    X, _ = backend.solve(state, B, transpose=True)
    assert recording.calls == [expected]
    torch.testing.assert_close(X, torch.linalg.solve(D.T, B))
