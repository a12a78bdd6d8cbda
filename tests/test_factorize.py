"""factorize(): prepare once, solve many, differentiably; refuse a changed A."""

import pytest
import torch

import tsgu_core
from tsgu_core import errors
from tsgu_core.testing import DenseBackend, random_nonsymmetric, to_layout

N = 10


@pytest.fixture
def dense_backend(register):
    return register(DenseBackend(name="dense-lu"))


def options_for(backend):
    return {"method": "gmres", "rtol": 1e-13} if backend == "torch" else {}


def test_one_factorization_serves_many_solves_and_their_backward(dense_backend):
    D = random_nonsymmetric(N, seed=1)
    A = to_layout(D, "csr").requires_grad_()
    handle = tsgu_core.factorize(A, backend="dense-lu")
    total = 0
    for seed in range(3):
        b = torch.randn(N, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        total = total + handle.solve(b).square().sum()
    total.backward()
    assert dense_backend.factorizations == 1
    D_ref = D.clone().requires_grad_()
    total_ref = sum(
        torch.linalg.solve(D_ref, torch.randn(N, dtype=torch.float64, generator=torch.Generator().manual_seed(s)))
        .square()
        .sum()
        for s in range(3)
    )
    total_ref.backward()
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (D != 0))


@pytest.mark.parametrize("backend", ["torch", "dense-lu"])
@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize("transpose", [False, True])
def test_gradcheck_through_the_handle(dense_backend, backend, layout, k, transpose):
    A = to_layout(random_nonsymmetric(N, seed=4), layout)
    values = A.values().clone().requires_grad_()
    B = torch.randn((N,) if k is None else (N, k), dtype=torch.float64, requires_grad=True)

    def function(vals, rhs):
        if layout == "coo":
            matrix = torch.sparse_coo_tensor(A.indices(), vals, A.shape, is_coalesced=True)
        else:
            matrix = torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), vals, A.shape)
        handle = tsgu_core.factorize(matrix, backend=backend, **options_for(backend))
        return handle.solve(rhs, transpose=transpose)

    assert torch.autograd.gradcheck(function, (values, B))


def test_transpose_solve_matches_dense(dense_backend):
    D = random_nonsymmetric(N, seed=2)
    handle = tsgu_core.factorize(to_layout(D, "coo"), backend="torch", method="bicgstab", rtol=1e-13)
    B = torch.randn(N, 2, dtype=torch.float64)
    torch.testing.assert_close(handle.solve(B, transpose=True), torch.linalg.solve(D.T, B))
    X, info = handle.solve(B, return_info=True, x0=torch.linalg.solve(D, B))
    torch.testing.assert_close(X, torch.linalg.solve(D, B))
    assert info.backend == "torch" and info.method == "bicgstab"


def test_a_changed_after_factorize_is_refused(dense_backend):
    A = to_layout(random_nonsymmetric(N, seed=3), "csr")
    handle = tsgu_core.factorize(A, backend="dense-lu")
    b = torch.ones(N, dtype=torch.float64)
    handle.solve(b)
    A.values()[0] += 1.0
    with pytest.raises(errors.StaleFactorizationError, match="factorize"):
        handle.solve(b)


def test_uncoalesced_coo_change_is_detected(dense_backend):
    D = random_nonsymmetric(N, seed=3)
    C = D.to_sparse().coalesce()
    A = torch.sparse_coo_tensor(
        torch.cat([C.indices(), C.indices()[:, :2]], 1), torch.cat([C.values(), C.values()[:2]])
    )
    handle = tsgu_core.factorize(A, backend="dense-lu")
    b = torch.ones(N, dtype=torch.float64)
    torch.testing.assert_close(handle.solve(b), torch.linalg.solve(A.to_dense(), b))
    A._values()[-1] = 7.0
    with pytest.raises(errors.StaleFactorizationError):
        handle.solve(b)


def test_options_are_checked_at_factorize(dense_backend):
    A = to_layout(random_nonsymmetric(N, seed=3), "csr")
    with pytest.raises(TypeError, match="handle.solve"):
        tsgu_core.factorize(A, backend="torch", x0=torch.zeros(N, dtype=torch.float64))
    with pytest.raises(errors.UnknownOptionError):
        tsgu_core.factorize(A, backend="dense-lu", rtol=1e-3)
    handle = tsgu_core.factorize(A, backend="dense-lu")
    with pytest.raises(TypeError, match="iterative"):
        handle.solve(torch.ones(N, dtype=torch.float64), x0=torch.ones(N, dtype=torch.float64))
    with pytest.raises(errors.DtypeMismatchError):
        handle.solve(torch.ones(N, dtype=torch.float32))


def test_convergence_policy_applies_to_handle_solves():
    A = to_layout(random_nonsymmetric(N, seed=3), "csr")
    handle = tsgu_core.factorize(A, backend="torch", method="gmres", maxiter=1, rtol=1e-14)
    with pytest.raises(errors.ConvergenceError):
        handle.solve(torch.ones(N, dtype=torch.float64))
