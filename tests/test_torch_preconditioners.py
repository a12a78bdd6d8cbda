"""The torch backend's user preconditioners: a callable M (with M_transpose) or a tensor M, forward and backward."""

import pytest
import torch

import tsgu_core
from tsgu_backends.torch_backend.ilu import IncompleteLU
from tsgu_core import SparsePattern, errors
from tsgu_core.testing import conformance_cases, convection_diffusion_2d, run_case

M_GRID = 8
N = M_GRID * M_GRID


def problem():
    A = convection_diffusion_2d(M_GRID, peclet=0.8)  # nonsymmetric
    return A, A.to_dense(), torch.linspace(1.0, 2.0, N, dtype=torch.float64)


def dense_reference(D, b):
    D_ref, b_ref = D.clone().requires_grad_(), b.clone().requires_grad_()
    torch.linalg.solve(D_ref, b_ref).square().sum().backward()
    return torch.linalg.solve(D, b), D_ref.grad, b_ref.grad


@pytest.mark.parametrize("method", ["gmres", "bicgstab"])
@pytest.mark.parametrize("kind", ["callable", "dense", "sparse"])
def test_user_preconditioners_serve_forward_and_backward(method, kind):
    A, D, b = problem()
    lower = torch.tril(D)  # Gauss–Seidel: M = L⁻¹ (not symmetric, so Mᵀ ≠ M matters)
    calls = {"M": 0, "M_transpose": 0}

    def M(R):
        calls["M"] += 1
        return torch.linalg.solve_triangular(lower, R, upper=False)

    def M_transpose(R):
        calls["M_transpose"] += 1
        return torch.linalg.solve_triangular(lower.T, R, upper=True)

    inverse = torch.linalg.inv(lower)
    options = {
        "callable": {"M": M, "M_transpose": M_transpose},
        "dense": {"M": inverse},
        "sparse": {"M": inverse.to_sparse_csr()},
    }[kind]
    A = A.clone().requires_grad_()
    b = b.clone().requires_grad_()
    x, info = tsgu_core.solve(A, b, backend="torch", method=method, rtol=1e-12, return_info=True, **options)
    x.square().sum().backward()
    expected, grad_A, grad_b = dense_reference(D, b.detach())
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(b.grad, grad_b)
    torch.testing.assert_close(A.grad.to_dense(), grad_A * (D != 0))
    if kind == "callable":
        assert calls["M"] > 0 and calls["M_transpose"] > 0
    plain = tsgu_core.solve(A.detach(), b.detach(), backend="torch", method=method, rtol=1e-12, return_info=True)[1]
    assert info.iterations < plain.iterations  # the preconditioner is really applied


def test_a_callable_M_without_its_transpose_fails_the_backward_loudly():
    A, D, b = problem()
    A = A.clone().requires_grad_()
    x = tsgu_core.solve(A, b, backend="torch", M=lambda R: R / 4.0, rtol=1e-10)  # forward is fine
    with pytest.raises(errors.InvalidOptionError, match="needs Mᵀ: pass M_transpose"):
        x.sum().backward()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"M": torch.eye(3, dtype=torch.float64)}, r"M must be an \(64, 64\) matrix"),
        ({"M": "ilu"}, "M must be a tensor or a callable"),
        ({"M": lambda R: R, "preconditioner": "jacobi"}, "either M or a named preconditioner"),
        ({"M_transpose": lambda R: R}, "M_transpose goes with a callable M"),
    ],
)
def test_bad_preconditioners_are_option_errors(options, match):
    A, _, b = problem()
    with pytest.raises(errors.InvalidOptionError, match=match):
        tsgu_core.solve(A, b, backend="torch", **options)


@pytest.mark.parametrize("case", conformance_cases(
    "torch", methods=["gmres", "bicgstab"], checks=("reference", "transpose", "gradcheck", "batched"),
    options={"gmres": {"preconditioner": "ilu0"}, "bicgstab": {"preconditioner": "ilu0"}},
), ids=str)  # fmt: skip
def test_ilu0_conformance(case):
    run_case(case)


def test_ilu0_converges_to_the_exact_incomplete_factors_and_cuts_iterations():
    A, D, b = problem()
    pattern = SparsePattern.of(A)
    factors = IncompleteLU(pattern, A.values(), sweeps=40)
    product = (factors.L.to_dense() + torch.eye(N, dtype=torch.float64)) @ factors.U.to_dense()
    torch.testing.assert_close(product[D != 0], D[D != 0])  # ILU(0): exact on the pattern
    few = tsgu_core.solve(A, b, backend="torch", preconditioner="ilu0", rtol=1e-10, return_info=True)[1]
    none = tsgu_core.solve(A, b, backend="torch", rtol=1e-10, return_info=True)[1]
    assert few.iterations < none.iterations / 3


def test_ilu0_needs_a_stored_diagonal():
    D = problem()[1].clone()
    D[5, 5] = 0.0
    with pytest.raises(errors.InvalidOptionError, match="row 5 has none"):
        tsgu_core.solve(D.to_sparse_csr(), torch.ones(N, dtype=torch.float64), backend="torch", preconditioner="ilu0")
