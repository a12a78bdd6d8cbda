"""lstsq: least squares for tall sparse A (SPEC S7.2).

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
