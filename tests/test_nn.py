"""tsgu_core.nn.SparseSolve: a solve as a layer, batch-first, against dense references."""

import pytest
import torch

from tsgu_core import SparsePattern, errors, solve_values
from tsgu_core.nn import SparseSolve
from tsgu_core.testing import random_nonsymmetric, to_layout

N = 9


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("backend", ["scipy", "torch"])
def test_batch_first_solves_and_value_gradients_match_dense(layout, backend):
    D = random_nonsymmetric(N, seed=8)
    options = {"rtol": 1e-12} if backend == "torch" else {}
    layer = SparseSolve(to_layout(D, layout), backend=backend, **options)
    B = torch.randn(4, N, dtype=torch.float64, requires_grad=True)
    X = layer(B)
    assert X.shape == B.shape
    (X * torch.arange(1.0, N + 1, dtype=torch.float64)).sum().backward()
    D_ref, B_ref = D.clone().requires_grad_(), B.detach().clone().requires_grad_()
    X_ref = torch.linalg.solve(D_ref, B_ref.T).T
    (X_ref * torch.arange(1.0, N + 1, dtype=torch.float64)).sum().backward()
    torch.testing.assert_close(X, X_ref)
    torch.testing.assert_close(B.grad, B_ref.grad)
    torch.testing.assert_close(layer.values.grad, D_ref.grad[D != 0])


def test_an_optimiser_updates_the_values_and_second_derivatives_are_exact():
    D = random_nonsymmetric(N, seed=9)
    layer = SparseSolve(to_layout(D, "csr"), backend="scipy")
    b = torch.ones(N, dtype=torch.float64)
    before = layer.values.detach().clone()
    optimiser = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(b).square().sum().backward()
    optimiser.step()
    assert not torch.equal(before, layer.values.detach())
    values = layer.values.detach().clone().requires_grad_()

    def loss(v):
        return solve_values(layer.pattern, v, b, backend="scipy").square().sum()

    assert torch.autograd.gradgradcheck(loss, (values,))


def test_buffers_move_with_the_module_and_a_pattern_needs_values():
    D = random_nonsymmetric(N, seed=10)
    A = to_layout(D, "csr")
    layer = SparseSolve(A, learnable=False, batch_first=False, backend="torch", rtol=1e-12)
    assert not list(layer.parameters()) and set(dict(layer.named_buffers())) == {
        "crow_indices",
        "col_indices",
        "values",
    }
    torch.testing.assert_close(layer.matrix().to_dense(), D)
    torch.testing.assert_close(
        layer(torch.ones(N, 2, dtype=torch.float64)), torch.linalg.solve(D, torch.ones(N, 2, dtype=torch.float64))
    )
    with pytest.raises(errors.InvalidArgumentError, match="needs values"):
        SparseSolve(SparsePattern.of(A))
    with pytest.raises(errors.ShapeError):
        SparseSolve(SparsePattern.of(A), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("backend", ["scipy", "torch"])
def test_complex_values_train_like_dense(layout, backend):
    generator = torch.Generator().manual_seed(11)
    D = torch.complex(random_nonsymmetric(N, seed=11), torch.randn(N, N, dtype=torch.float64, generator=generator))
    D = D * (random_nonsymmetric(N, seed=11) != 0)  # the real part's pattern, nonsymmetric
    options = {"rtol": 1e-12} if backend == "torch" else {}
    layer = SparseSolve(to_layout(D, layout), backend=backend, **options)
    assert layer.values.dtype == torch.complex128
    B = torch.randn(3, N, dtype=torch.complex128, generator=generator, requires_grad=True)
    weights = torch.arange(1.0, N + 1, dtype=torch.float64)
    (layer(B).abs().square() * weights).sum().backward()
    D_ref, B_ref = D.clone().requires_grad_(), B.detach().clone().requires_grad_()
    X_ref = torch.linalg.solve(D_ref, B_ref.T).T
    (X_ref.abs().square() * weights).sum().backward()
    torch.testing.assert_close(layer(B.detach()), X_ref.detach())
    torch.testing.assert_close(B.grad, B_ref.grad)
    torch.testing.assert_close(layer.values.grad, D_ref.grad[D != 0])
