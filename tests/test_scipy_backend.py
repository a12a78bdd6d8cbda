"""The scipy backend beyond the conformance suite: factorization reuse, failures, options, preconditioners."""

import importlib.util

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as sla
import torch

import tsgu_core
from tsgu_backends.scipy_cupy_backend.convert import scipy_to_torch, torch_to_scipy
from tsgu_core import errors
from tsgu_core.testing import convection_diffusion_2d, poisson_2d, random_nonsymmetric, to_layout

N = 12


@pytest.fixture
def count_factorizations(monkeypatch):
    calls = []
    original = sla.splu
    monkeypatch.setattr(sla, "splu", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


@pytest.mark.parametrize("method", ["splu", "spsolve"])
@pytest.mark.parametrize("k", [None, 4])
def test_backward_reuses_the_factorization(count_factorizations, method, k):
    D = random_nonsymmetric(N, seed=1)
    A = to_layout(D, "csr").requires_grad_()
    B = torch.randn((N,) if k is None else (N, k), dtype=torch.float64, requires_grad=True)
    X = tsgu_core.solve(A, B, backend="scipy", method=method)
    X.square().sum().backward()
    assert count_factorizations == [1]
    D_ref = D.clone().requires_grad_()
    torch.linalg.solve(D_ref, B.detach() if k else B.detach().unsqueeze(1)).square().sum().backward()
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (D != 0))


def test_cg_on_a_nonsymmetric_matrix_is_refused_before_solving():
    A = convection_diffusion_2d(12, peclet=0.9)  # strongly nonsymmetric: CG is the wrong method
    b = torch.ones(A.shape[0], dtype=torch.float64)
    with pytest.raises(errors.StructureError, match="method 'cg' needs a symmetric A"):
        tsgu_core.solve(A, b, backend="scipy", method="cg", maxiter=50)


def test_options_keep_scipy_names_and_unknown_ones_raise():
    A = convection_diffusion_2d(8)
    b = torch.ones(A.shape[0], dtype=torch.float64)
    x = tsgu_core.solve(A, b, backend="scipy", method="gmres", restart=5, rtol=1e-10)
    torch.testing.assert_close(A.to_dense() @ x, b)
    listing = r"accepted options:\n  rtol: .*\n  atol: .*\n  maxiter: .*\n  x0: .*\n  restart: "
    with pytest.raises(errors.UnknownOptionError, match=listing):
        tsgu_core.solve(A, b, backend="scipy", method="gmres", tol=1e-3)
    with pytest.raises(errors.InvalidOptionError, match="option restart must be int"):
        tsgu_core.solve(A, b, backend="scipy", method="gmres", restart="20")
    with pytest.raises(TypeError):  # InvalidOptionError is a TypeError (and a ValueError) too
        tsgu_core.solve(A, b, backend="scipy", method="gmres", restart=0)
    with pytest.raises(errors.UnknownOptionError):
        tsgu_core.solve(A, b, backend="scipy", method="splu", maxiter=3)
    X = tsgu_core.solve(A, b, backend="scipy", method="splu", permc_spec="NATURAL", options={"Equil": False})
    torch.testing.assert_close(A.to_dense() @ X, b)


AMG = pytest.param("amg", marks=pytest.mark.skipif(importlib.util.find_spec("pyamg") is None, reason="needs pyamg"))


@pytest.mark.parametrize("preconditioner", ["jacobi", "ilu", AMG])
@pytest.mark.parametrize("method", ["gmres", "bicgstab"])
def test_named_preconditioners_keep_gradients_right(preconditioner, method):
    D = convection_diffusion_2d(6, peclet=0.8).to_dense()  # nonsymmetric: the transpose preconditioner matters
    A = to_layout(D, "csr").requires_grad_()
    B = torch.randn(D.shape[0], 2, dtype=torch.float64, requires_grad=True)
    X = tsgu_core.solve(A, B, backend="scipy", method=method, preconditioner=preconditioner, rtol=1e-12)
    X.square().sum().backward()
    D_ref = D.clone().requires_grad_()
    B_ref = B.detach().clone().requires_grad_()
    torch.linalg.solve(D_ref, B_ref).square().sum().backward()
    torch.testing.assert_close(B.grad, B_ref.grad)
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (D != 0))


def test_user_preconditioner_operator_and_its_adjoint():
    D = random_nonsymmetric(N, seed=3)
    A = to_layout(D, "csr").requires_grad_()
    M = sp.csr_matrix(np.linalg.inv(D.numpy()) * 0.9)  # a (deliberately inexact) nonsymmetric approximate inverse
    b = torch.randn(N, dtype=torch.float64)
    x = tsgu_core.solve(A, b, backend="scipy", method="gmres", M=M, rtol=1e-12)
    x.sum().backward()
    D_ref = D.clone().requires_grad_()
    torch.linalg.solve(D_ref, b).sum().backward()
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (D != 0))
    with pytest.raises(ValueError, match="either M"):
        tsgu_core.solve(A.detach(), b, backend="scipy", method="gmres", M=M, preconditioner="jacobi")
    with pytest.raises(ValueError, match="preconditioner must be one of"):
        tsgu_core.solve(A.detach(), b, backend="scipy", method="gmres", preconditioner="multigrid")


@pytest.mark.skipif(importlib.util.find_spec("pyamg") is None, reason="needs pyamg")
def test_amg_cuts_cg_iterations_on_poisson():
    A = poisson_2d(40)
    b = torch.ones(A.shape[0], dtype=torch.float64)
    _, plain = tsgu_core.solve(A, b, backend="scipy", method="cg", return_info=True)
    _, amg = tsgu_core.solve(A, b, backend="scipy", method="cg", preconditioner="amg", return_info=True)
    assert amg.converged and amg.iterations * 5 <= plain.iterations


def test_float32_stays_float32():
    D = random_nonsymmetric(N, seed=4, dtype=torch.float32)
    for method in ("splu", "minres", "gmres"):
        matrix = D + D.T if method == "minres" else D
        x = tsgu_core.solve(to_layout(matrix, "csr"), torch.ones(N), backend="scipy", method=method)
        assert x.dtype == torch.float32


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_converters_round_trip_and_share_memory(layout, index_dtype):
    A = to_layout(random_nonsymmetric(N, seed=5), layout, index_dtype)
    M = torch_to_scipy(A)
    assert np.shares_memory(M.data, A.values().numpy())
    np.testing.assert_array_equal(M.toarray(), A.to_dense().numpy())
    back = scipy_to_torch(M, A.layout)
    assert back.layout == A.layout
    torch.testing.assert_close(back.to_dense(), A.to_dense())


def test_batched_splu_reuses_the_pattern_work(count_factorizations):
    base = random_nonsymmetric(N, seed=6)
    D = torch.stack([base * (1 + 0.1 * i) for i in range(3)])
    A = D.to_sparse_csr()
    B = torch.randn(3, N, 2, dtype=torch.float64)
    X = tsgu_core.solve(A, B, backend="scipy")
    torch.testing.assert_close(X, torch.linalg.solve(D, B))
    assert len(count_factorizations) == 3


def test_cupy_is_unavailable_here_with_a_reason():
    entry = tsgu_core.get_entry("cupy")
    availability = entry.availability("cuda")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device; the CUDA tests cover cupy")
    assert not availability and availability.reason == "no CUDA device"
    with pytest.raises(errors.BackendUnavailableError, match="no CUDA device"):
        tsgu_core.explain("cuda", backend="cupy")


def test_cupy_reports_a_broken_install(monkeypatch):
    from tsgu_backends.scipy_cupy_backend import cupy_backend

    monkeypatch.setattr(cupy_backend.importlib.util, "find_spec", lambda name: None)
    availability = cupy_backend.CupyBackend().is_available("cuda")
    assert not availability and "not installed" in availability.reason and "tsgu[cupy]" in availability.install


def test_ilu_is_refused_for_symmetric_methods():
    A = poisson_2d(5)
    with pytest.raises(ValueError, match="not symmetric"):
        tsgu_core.solve(A, torch.ones(25, dtype=torch.float64), backend="scipy", method="cg", preconditioner="ilu")
