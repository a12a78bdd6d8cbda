"""``Factorization.slogdet`` / ``diagonal_of_inverse``: one factorization serves solves and log-determinants."""

import pytest
import torch
from test_determinants import _batch, _negative

import tsgu_core
from tsgu_core.errors import StaleFactorizationError, UnknownMethodError
from tsgu_core.testing import random_nonsymmetric, to_layout

LAYOUTS = ["coo", "csr"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("rhs", ["vector", "matrix"])
def test_logdet_and_solve_share_one_factorization(layout, rhs, monkeypatch):
    D = _negative(random_nonsymmetric(30, seed=3))
    B = torch.randn(
        30, *(() if rhs == "vector" else (3,)), dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    A = to_layout(D, layout).requires_grad_()
    handle = tsgu_core.factorize(A, backend="scipy", method="splu")
    calls = []
    backend_class = type(handle._plan.backend)
    original = backend_class.prepare
    monkeypatch.setattr(backend_class, "prepare", lambda *a, **k: calls.append(1) or original(*a, **k))
    sign, logabsdet = handle.slogdet()
    X = handle.solve(B)
    (2.0 * logabsdet + (X * X).sum()).backward()
    assert calls == []  # neither the log-determinant, its gradient nor the solve factorized again

    leaf = D.clone().requires_grad_()
    reference = torch.linalg.slogdet(leaf)
    X_ref = torch.linalg.solve(leaf, B)
    (2.0 * reference.logabsdet + (X_ref * X_ref).sum()).backward()
    assert sign.item() == reference.sign.item() == -1.0
    torch.testing.assert_close(logabsdet, reference.logabsdet.detach(), rtol=1e-12, atol=1e-12)
    assert A.grad.layout == A.layout
    torch.testing.assert_close(A.grad.to_dense(), leaf.grad * (D != 0), rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(handle.diagonal_of_inverse(), torch.linalg.inv(D).diagonal(), rtol=1e-10, atol=0)


@pytest.mark.parametrize("patterns", ["shared", "per-member"])
def test_batched(patterns):
    D = _batch(patterns)
    A = D.to_sparse_csr().requires_grad_()
    handle = tsgu_core.factorize(A, backend="scipy", method="splu")
    sign, logabsdet = handle.slogdet()
    leaf = D.clone().requires_grad_()
    reference = torch.linalg.slogdet(leaf)
    assert torch.equal(sign, reference.sign)
    weights = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    (logabsdet * weights).sum().backward()
    (reference.logabsdet * weights).sum().backward()
    torch.testing.assert_close(logabsdet, reference.logabsdet.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(A.grad.to_dense(), leaf.grad * (D != 0), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        handle.diagonal_of_inverse(), torch.linalg.inv(D).diagonal(dim1=-2, dim2=-1), rtol=1e-10, atol=0
    )


def test_ldlt_for_an_spd_matrix():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(20, 20, generator=g, dtype=torch.float64) * (torch.rand(20, 20, generator=g) < 0.2)
    D = M @ M.T + 20 * torch.eye(20, dtype=torch.float64)
    A = D.to_sparse().requires_grad_()
    handle = tsgu_core.factorize(A, backend="scipy", method="ldlt", assume="spd")
    _, logabsdet = handle.slogdet()
    logabsdet.backward()
    leaf = D.clone().requires_grad_()
    torch.linalg.slogdet(leaf).logabsdet.backward()
    torch.testing.assert_close(logabsdet, torch.linalg.slogdet(D).logabsdet, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(A.grad.to_dense(), leaf.grad * (D != 0), rtol=1e-10, atol=1e-12)


def test_a_method_without_determinants_is_refused_by_name():
    A = random_nonsymmetric(8, seed=0).to_sparse_csr()
    handle = tsgu_core.factorize(A, backend="torch", method="gmres")
    with pytest.raises(UnknownMethodError, match="gives no log-determinants"):
        handle.slogdet()
    with pytest.raises(UnknownMethodError, match="gives no log-determinants"):
        handle.diagonal_of_inverse()


def test_a_changed_matrix_is_stale():
    A = random_nonsymmetric(8, seed=0).to_sparse_csr()
    handle = tsgu_core.factorize(A, backend="scipy", method="splu")
    with torch.no_grad():
        A.values().mul_(2.0)
    with pytest.raises(StaleFactorizationError):
        handle.slogdet()
