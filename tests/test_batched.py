"""Batched A (b, n, n) sharing one pattern, with batched B."""

import pytest
import torch

import tsgu_core
from tsgu_core import errors
from tsgu_core.testing import DenseBackend, random_nonsymmetric

B_SIZE, N = 3, 9


@pytest.fixture(autouse=True)
def dense_backend(register):
    """A backend without batch support: the core solves its members one by one."""
    return register(DenseBackend(name="dense-loop"))


def batch_of_matrices(seed=0):
    """Members with the same pattern and different (nonsymmetric) values."""
    base = random_nonsymmetric(N, seed=seed)
    mask = base != 0
    scale = torch.rand(B_SIZE, N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) + 0.5
    return base * scale * mask


def as_layout(D, layout):
    return D.to_sparse().coalesce() if layout == "coo" else D.to_sparse_csr()


def options_for(backend):
    return {"method": "gmres", "rtol": 1e-13} if backend == "torch" else {}


@pytest.mark.parametrize("backend", ["torch", "dense-loop"])
@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("k", [None, 2])
def test_batched_solution_and_gradients_match_dense(backend, layout, k):
    D = batch_of_matrices()
    A = as_layout(D, layout).requires_grad_()
    B = torch.randn((B_SIZE, N) if k is None else (B_SIZE, N, k), dtype=torch.float64, requires_grad=True)
    G = torch.randn(B.shape, dtype=torch.float64)
    X, info = tsgu_core.solve(A, B, backend=backend, return_info=True, **options_for(backend))
    (X * G).sum().backward()
    D_ref = D.clone().requires_grad_()
    B_ref = B.detach().clone().requires_grad_()
    X_ref = (
        torch.linalg.solve(D_ref, B_ref.unsqueeze(-1)).squeeze(-1) if k is None else torch.linalg.solve(D_ref, B_ref)
    )
    (X_ref * G).sum().backward()
    torch.testing.assert_close(X, X_ref)
    torch.testing.assert_close(B.grad, B_ref.grad)
    assert A.grad.layout == A.layout
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (D != 0))
    assert info.batch == B_SIZE and len(info.residuals) == B_SIZE * (k or 1)


def test_native_batch_prepares_once_and_the_fallback_once_per_member(dense_backend):
    D = batch_of_matrices()
    tsgu_core.solve(as_layout(D, "csr"), torch.ones(B_SIZE, N, dtype=torch.float64), backend="dense-loop")
    assert dense_backend.factorizations == B_SIZE


@pytest.mark.parametrize("backend", ["torch", "dense-loop"])
@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_batched_gradcheck(backend, layout):
    D = batch_of_matrices(seed=2)
    A = as_layout(D, layout)
    values = A.values().clone().requires_grad_()
    B = torch.randn(B_SIZE, N, 2, dtype=torch.float64, requires_grad=True)

    def function(vals, rhs):
        if layout == "coo":
            matrix = torch.sparse_coo_tensor(A.indices(), vals, A.shape, is_coalesced=True)
        else:
            matrix = torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), vals, A.shape)
        return tsgu_core.solve(matrix, rhs, backend=backend, **options_for(backend))

    assert torch.autograd.gradcheck(function, (values, B))


def test_batched_rhs_shape_is_checked():
    A = as_layout(batch_of_matrices(), "csr")
    with pytest.raises(errors.ShapeError, match=r"\(3, 9\) or \(3, 9, k\)"):
        tsgu_core.solve(A, torch.ones(N, dtype=torch.float64), backend="torch")


def test_batched_convergence_failure_names_the_member():
    A = as_layout(batch_of_matrices(), "csr")
    with pytest.raises(errors.ConvergenceError, match="member 0 column 0") as caught:
        tsgu_core.solve(A, torch.ones(B_SIZE, N, dtype=torch.float64), backend="torch", maxiter=1, rtol=1e-14)
    assert len(caught.value.residuals) == B_SIZE


@pytest.mark.parametrize("method", ["gmres", "bicgstab"])
def test_batched_jacobi_and_initial_guess(method):
    D = batch_of_matrices()
    B = torch.randn(B_SIZE, N, 2, dtype=torch.float64)
    expected = torch.linalg.solve(D, B)
    X = tsgu_core.solve(
        as_layout(D, "coo"), B, backend="torch", method=method, rtol=1e-12, preconditioner="jacobi", x0=expected * 0.9
    )
    torch.testing.assert_close(X, expected)


def test_solve_values_takes_a_batch_of_values():
    D = batch_of_matrices(seed=4)
    pattern = as_layout(D, "csr")
    values = (pattern.values() * 2).requires_grad_()
    B = torch.randn(B_SIZE, N, dtype=torch.float64)
    X = tsgu_core.solve_values(pattern, values, B, backend="torch", rtol=1e-13)
    torch.testing.assert_close(X, torch.linalg.solve(2 * D, B.unsqueeze(-1)).squeeze(-1))
    (g,) = torch.autograd.grad(X.sum(), values, create_graph=True)
    assert g.shape == values.shape and g.requires_grad
    with pytest.raises(errors.ShapeError, match="stored entries"):
        tsgu_core.solve_values(pattern, values.detach()[:, :-1], B, backend="torch")
