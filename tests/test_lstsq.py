"""lstsq: least squares for tall sparse A.

Every registered least-squares method is checked against dense references (gradient with its
residual term included) and gradcheck by the conformance kit (tests/test_conformance.py)."""

import pytest
import torch

import tsgu_core
from tsgu_core import errors

M, N = 14, 6


def lstsq_methods():
    cases = []
    for entry in tsgu_core.list_backends():
        for name, spec in entry.backend.methods.items():
            if spec.operation == "lstsq":
                available = entry.availability("cpu")
                marks = [] if available else [pytest.mark.skip(reason=f"needs {entry.name} on cpu: {available.reason}")]
                options = {"rtol": 1e-12} if spec.kind == "iterative" else {}
                cases.append(pytest.param(entry.name, name, options, marks=marks, id=f"{entry.name}-{name}"))
    return cases


def tall(seed=0, condition=None):
    generator = torch.Generator().manual_seed(seed)
    D = torch.randn(M, N, generator=generator, dtype=torch.float64) * (torch.rand(M, N, generator=generator) < 0.5)
    D[:N] += torch.eye(N, dtype=torch.float64) * 2  # full column rank
    if condition is not None:
        U, _, Vh = torch.linalg.svd(D, full_matrices=False)
        D = U @ torch.diag(torch.logspace(0, -torch.log10(torch.tensor(condition)).item(), N, dtype=torch.float64)) @ Vh
        D = D * (D.abs() > 1e-3)  # keep it sparse-ish while staying full rank
    return D


def dense_lstsq(D, B):
    return torch.linalg.solve(D.T @ D, D.T @ B)


@pytest.mark.parametrize(("backend", "method", "options"), lstsq_methods())
def test_ill_conditioned_is_right_or_refused(backend, method, options):
    """The seed returned a 99.6 % wrong answer at condition number 1e4 without a word."""
    D = tall(seed=3, condition=1e4)
    b = torch.randn(M, dtype=torch.float64)
    expected = torch.linalg.lstsq(D, b.unsqueeze(1)).solution.squeeze(1)
    try:
        x = tsgu_core.lstsq(D.to_sparse_csr(), b, backend=backend, method=method, **options)
    except errors.ConvergenceError:
        return
    assert (x - expected).norm() / expected.norm() < 1e-6


def test_wide_A_is_refused():
    with pytest.raises(errors.ShapeError, match="tall"):
        tsgu_core.lstsq(tall().T.to_sparse_csr(), torch.ones(N, dtype=torch.float64))


def test_initial_guess_is_used():
    D = tall(seed=5)
    b = torch.randn(M, dtype=torch.float64)
    expected = dense_lstsq(D, b.unsqueeze(1)).squeeze(1)
    x, info = tsgu_core.lstsq(D.to_sparse_csr(), b, backend="torch", rtol=1e-10, x0=expected, return_info=True)
    torch.testing.assert_close(x, expected)
    assert info.iterations <= 2


LSTSQ_METHODS = [("torch", "lsqr"), ("scipy", "lsmr"), ("scipy", "lsqr"), ("scipy", "augmented_splu")]


@pytest.mark.parametrize(("backend", "method"), LSTSQ_METHODS)
@pytest.mark.parametrize(
    ("dtype", "scale"), [(torch.float64, 1e-300), (torch.float64, 1e160), (torch.float32, 1e-25), (torch.float32, 1e21)]
)
def test_scaled_least_squares_gives_the_unscaled_answer(backend, method, dtype, scale):
    """A and b scaled together: the augmented system is solved as [[I, A/σ], [Aᵀ/σ, 0]] — same X and gradients."""
    D = tall(seed=6)
    b = torch.randn(M, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    A = (D * scale).to(dtype).to_sparse_csr().requires_grad_()
    rhs = (b * scale).to(dtype).requires_grad_()
    options = {} if method == "augmented_splu" else {"rtol": 1e-12 if dtype == torch.float64 else 1e-5}
    x = tsgu_core.lstsq(A, rhs, backend=backend, method=method, **options)
    x.sum().backward()
    D_ref, b_ref = D.clone().requires_grad_(), b.clone().requires_grad_()
    x_ref = torch.linalg.lstsq(D_ref, b_ref.unsqueeze(1)).solution.squeeze(1)
    x_ref.sum().backward()
    tolerance = {"rtol": 1e-8, "atol": 0.0} if dtype == torch.float64 else {"rtol": 1e-3, "atol": 1e-5}
    torch.testing.assert_close(x.double(), x_ref, **tolerance)
    torch.testing.assert_close(rhs.grad.double() * scale, b_ref.grad, **tolerance)  # ∂x/∂(s·b) = (∂x/∂b)/s
    grad_A = A.grad.to_dense().double() * scale  # x(sA, sb) = x(A, b), so ∂/∂(sA) = (∂/∂A)/s
    torch.testing.assert_close(grad_A, D_ref.grad * (D != 0), **tolerance)
