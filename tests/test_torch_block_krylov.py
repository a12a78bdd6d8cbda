"""The torch backend's block Krylov fast paths: products into reused buffers, and the opt-in fused CG kernels."""

import pytest
import torch

import tsgu_core
from tsgu_backends.torch_native import krylov
from tsgu_backends.torch_native.operator import CsrOperator
from tsgu_core.testing import conformance_cases, random_nonsymmetric, random_spd, run_case, to_layout

N = 24


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_apply_into_overwrites_the_buffer_with_the_scaled_product(layout, k, transpose, dtype):
    D = random_nonsymmetric(N, seed=3, dtype=dtype)
    operator = CsrOperator(to_layout(D, layout))  # int64 indices in
    X = torch.randn(N, k, dtype=dtype, generator=torch.Generator().manual_seed(1))
    out = torch.full((N, k), float("nan"), dtype=dtype)  # beta = 0 must ignore what the buffer holds
    returned = operator.apply_into(X, out, 0.25, transpose=transpose)
    expected = 0.25 * ((D.T if transpose else D) @ X)
    assert returned is out
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(operator.apply(X, transpose=transpose), expected / 0.25)


def test_apply_into_serves_a_batch():
    D = random_nonsymmetric(N)
    weights = 1 + torch.rand(N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    members = torch.stack([D, D * weights])  # one pattern, different values
    A = members.to_sparse_csr()  # (2, n, n) CSR
    operator = CsrOperator(A)
    X = torch.randn(2, N, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = torch.empty_like(X)
    operator.apply_into(X, out, 0.5)
    torch.testing.assert_close(out, 0.5 * (members @ X))


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_int64_indices_are_prepared_as_int32(layout):
    A = to_layout(random_nonsymmetric(N), layout, torch.int64)
    matrix = CsrOperator(A).matrix
    assert matrix.crow_indices().dtype == torch.int32 and matrix.col_indices().dtype == torch.int32


def _dense_solve_and_grads(D, B):
    D_ref, B_ref = D.clone().requires_grad_(), B.clone().requires_grad_()
    X = torch.linalg.solve(D_ref, B_ref)
    X.square().sum().backward()
    return X.detach(), D_ref.grad, B_ref.grad


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("shape", [(N,), (N, 3)])
def test_fused_cg_solves_and_differentiates(layout, shape):
    D = random_spd(N, seed=5)
    B = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    A = to_layout(D, layout).requires_grad_()
    b = B.clone().requires_grad_()
    x, info = tsgu_core.solve(A, b, backend="torch", method="cg", rtol=1e-12, fused=True, return_info=True)
    x.square().sum().backward()
    expected, grad_A, grad_B = _dense_solve_and_grads(D, B)
    torch.testing.assert_close(x.detach(), expected)
    torch.testing.assert_close(b.grad, grad_B)
    torch.testing.assert_close(A.grad.to_dense(), grad_A * (D != 0))
    eager = tsgu_core.solve(A.detach(), B, backend="torch", method="cg", rtol=1e-12, return_info=True)[1]
    assert info.iterations == eager.iterations  # the same method, only the vector work is compiled
    assert "cpu" not in krylov._compile_failure and krylov._COMPILED_KERNELS  # the compiled kernels did the work


def test_fused_cg_falls_back_to_eager_with_a_warning_when_compilation_fails(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(krylov, "_compile_failure", {})
    monkeypatch.setattr(krylov, "_COMPILED_KERNELS", {})
    D = random_spd(N, seed=6)
    B = torch.randn(N, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    with pytest.warns(RuntimeWarning, match="torch.compile is unavailable"):
        x = tsgu_core.solve(to_layout(D, "csr"), B, backend="torch", method="cg", rtol=1e-12, fused=True)
    torch.testing.assert_close(x, torch.linalg.solve(D, B))
    assert "cpu" in krylov._compile_failure  # remembered: later CPU solves take the eager kernels, no retry


def test_fused_cg_refuses_complex_dtypes():
    """fused=True is real-only: a complex A is a typed error, not an option quietly ignored."""
    D = random_spd(N, seed=8, dtype=torch.complex128)  # Hermitian positive definite
    B = torch.randn(N, 2, dtype=torch.complex128, generator=torch.Generator().manual_seed(9))
    with pytest.raises(tsgu_core.InvalidOptionError, match="real dtypes only"):
        tsgu_core.solve(to_layout(D, "coo"), B, backend="torch", method="cg", rtol=1e-12, fused=True)


@pytest.mark.parametrize(
    "case", conformance_cases("torch", methods=["cg"], options={"cg": {"fused": True}}), ids=lambda c: f"fused-{c}"
)
def test_fused_cg_passes_the_conformance_kit(case):
    if case.device != "cpu":
        pytest.skip("fused=True is measured and tested on the CPU here")  # CUDA would need triton
    if case.dtype.startswith("complex"):
        pytest.skip("fused=True refuses a complex A (test_fused_cg_refuses_complex_dtypes)")
    run_case(case)
