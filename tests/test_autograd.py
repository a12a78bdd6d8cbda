"""The one autograd rule: gradients, their layouts, second derivatives, and the policy in backward (S3, S5)."""

import warnings

import pytest
import torch

import tsgu_core
from tsgu_core import errors
from tsgu_core.plugins.protocol import BackendReport, MethodSpec
from tsgu_core.sparse.pattern import SparsePattern
from tsgu_core.testing import DenseBackend, random_nonsymmetric, to_layout

N = 12


def dense_reference(D, B, G):
    D = D.clone().requires_grad_()
    B = B.detach().clone().requires_grad_()
    X = torch.linalg.solve(D, B)
    (X * G).sum().backward()
    return X.detach(), D.grad, B.grad


class PlainBackend:
    """An iterative-looking backend built on dense solves, whose transpose solve can be spoiled."""

    device_types = ("cpu",)
    methods = {"exact": MethodSpec("exact", "iterative", "general")}
    default_method = "exact"
    priority = 0

    def __init__(self, name, spoil_transpose=0.0, spoil_forward=0.0, returns=None):
        self.name = name
        self.spoil_transpose = spoil_transpose
        self.spoil_forward = spoil_forward
        self.returns = returns

    def is_available(self, device_type):
        return tsgu_core.Availability.yes()

    def prepare(self, A, method, options):
        return A.to_dense()

    def solve(self, state, B, *, transpose, x0=None):
        if self.returns is not None:
            return self.returns(B), BackendReport(iterations=1)
        X = torch.linalg.solve(state.T if transpose else state, B)
        spoil = self.spoil_transpose if transpose else self.spoil_forward
        return X * (1 + spoil), BackendReport(iterations=3, converged=True)


def test_uncoalesced_coo_is_accepted_and_its_duplicates_summed():
    D = random_nonsymmetric(N, seed=2)
    C = D.to_sparse().coalesce()
    indices = torch.cat([C.indices(), C.indices()[:, :5]], dim=1)
    values = torch.cat([C.values(), torch.ones(5, dtype=torch.float64)])
    A = torch.sparse_coo_tensor(indices, values, D.shape).requires_grad_()
    assert not A.is_coalesced()
    b = torch.randn(N, dtype=torch.float64)
    x = tsgu_core.solve(A, b, backend="torch", rtol=1e-13)
    D_sum = A.detach().to_dense()
    torch.testing.assert_close(x, torch.linalg.solve(D_sum, b))
    x.sum().backward()
    _, gD, _ = dense_reference(D_sum, b, torch.ones(N, dtype=torch.float64))
    torch.testing.assert_close(A.grad.to_dense(), gD * (D_sum != 0))


def test_gradient_flows_to_values_of_a_non_leaf_A():
    D = random_nonsymmetric(N, seed=4)
    C = D.to_sparse_csr()
    values = C.values().clone().requires_grad_()
    A = torch.sparse_csr_tensor(C.crow_indices(), C.col_indices(), values, C.shape)
    b = torch.randn(N, dtype=torch.float64)
    tsgu_core.solve(A, b, backend="torch", rtol=1e-13).sum().backward()
    _, gD, _ = dense_reference(D, b, torch.ones(N, dtype=torch.float64))
    crow = C.crow_indices()
    rows = torch.repeat_interleave(torch.arange(N), crow[1:] - crow[:-1])
    torch.testing.assert_close(values.grad, gD[rows, C.col_indices()])


def test_gradients_accumulate_over_two_backward_passes():
    D = random_nonsymmetric(N, seed=6)
    A = to_layout(D, "csr").requires_grad_()
    b = torch.randn(N, dtype=torch.float64)
    tsgu_core.solve(A, b, backend="torch", rtol=1e-13).sum().backward()
    once = A.grad.to_dense().clone()
    tsgu_core.solve(A, b, backend="torch", rtol=1e-13).sum().backward()
    torch.testing.assert_close(A.grad.to_dense(), 2 * once)


def test_only_requested_gradients_are_computed(monkeypatch):
    calls = []
    original = SparsePattern.outer_at_entries
    monkeypatch.setattr(SparsePattern, "outer_at_entries", lambda self, *a: calls.append(1) or original(self, *a))
    D = random_nonsymmetric(N, seed=8)
    A = to_layout(D, "coo")
    b = torch.randn(N, dtype=torch.float64, requires_grad=True)
    tsgu_core.solve(A, b, backend="torch", rtol=1e-13).sum().backward()
    assert calls == [] and b.grad is not None
    A.requires_grad_()
    b2 = b.detach()
    tsgu_core.solve(A, b2, backend="torch", rtol=1e-13).sum().backward()
    assert calls == [1] and b2.grad is None and A.grad is not None


def _hessian_vector_products(solver, values, b, v):
    x = solver(values, b)
    gv, gb = torch.autograd.grad(x.square().sum(), (values, b), create_graph=True)
    assert gv.requires_grad and gb.requires_grad, "first derivatives must stay differentiable"
    return torch.autograd.grad((gv * v).sum() + gb.sum(), (values, b))


def _second_order_setup(layout):
    D = random_nonsymmetric(N, seed=9)
    A = to_layout(D, layout)
    pattern = SparsePattern.of(A)
    values = A.values().clone().requires_grad_()
    b = torch.randn(N, dtype=torch.float64, requires_grad=True)
    v = torch.randn(values.shape, dtype=torch.float64)

    def dense(vals, rhs):
        matrix = torch.zeros(N, N, dtype=torch.float64).index_put((pattern.row, pattern.col), vals)
        return torch.linalg.solve(matrix, rhs)

    return A, values, b, v, _hessian_vector_products(dense, values, b, v)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_second_derivatives_through_values_match_dense(layout):
    A, values, b, v, expected = _second_order_setup(layout)

    def ours(vals, rhs):
        return tsgu_core.solve_values(A, vals, rhs, backend="torch", rtol=1e-13)

    for got, want in zip(_hessian_vector_products(ours, values, b, v), expected, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_second_derivatives_for_a_leaf_sparse_A_match_dense(layout):
    A, values, b, v, expected = _second_order_setup(layout)
    leaf = A.clone().requires_grad_()
    x = tsgu_core.solve(leaf, b, backend="torch", rtol=1e-13)
    gA, gb = torch.autograd.grad(x.square().sum(), (leaf, b), create_graph=True)
    assert gA.layout == A.layout
    hA, hb = torch.autograd.grad((gA.values() * v).sum() + gb.sum(), (leaf, b))
    torch.testing.assert_close(hA.values(), expected[0])
    torch.testing.assert_close(hb, expected[1])


def test_second_derivatives_through_a_constructed_sparse_A_raise_clearly():
    A, values, b, _, _ = _second_order_setup("csr")
    built = torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), values, A.shape)
    x = tsgu_core.solve(built, b, backend="torch", rtol=1e-13)
    with pytest.raises(errors.SecondDerivativeError, match="solve_values"):
        torch.autograd.grad(x.square().sum(), (values, b), create_graph=True)
    x = tsgu_core.solve(built, b, backend="torch", rtol=1e-13)  # first order stays fine
    (g,) = torch.autograd.grad(x.square().sum(), values)
    assert g.shape == values.shape


def test_backward_obeys_the_convergence_policy(register):
    register(PlainBackend("spoiled", spoil_transpose=1e-3))
    D = random_nonsymmetric(N, seed=1)
    A = to_layout(D, "csr").requires_grad_()
    b = torch.randn(N, dtype=torch.float64)
    x, info = tsgu_core.solve(A, b, backend="spoiled", return_info=True, rtol=1e-8)
    assert info.converged and info.backward is None
    with pytest.raises(errors.ConvergenceError, match=r"transpose solve \(backward pass\)") as caught:
        x.sum().backward()
    assert caught.value.transpose and caught.value.failed_columns == (0,)
    x, info = tsgu_core.solve(A, b, backend="spoiled", return_info=True, rtol=1e-8, on_failure="warn")
    with pytest.warns(errors.ConvergenceWarning, match="backward pass"):
        x.sum().backward()
    assert info.backward is not None and info.backward.transpose and not info.backward.converged


def test_forward_policy_raise_warn_ignore(register):
    register(PlainBackend("off", spoil_forward=1e-2))
    A = to_layout(random_nonsymmetric(N, seed=1), "coo")
    B = torch.randn(N, 2, dtype=torch.float64)
    with pytest.raises(errors.ConvergenceError) as caught:
        tsgu_core.solve(A, B, backend="off")
    error = caught.value
    assert (error.backend, error.method, error.iterations, error.failed_columns) == ("off", "exact", 3, (0, 1))
    assert all(r > t for r, t in zip(error.residuals, error.thresholds, strict=True))
    assert "Remedy" in str(error)
    with pytest.warns(errors.ConvergenceWarning):
        tsgu_core.solve(A, B, backend="off", on_failure="warn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X, info = tsgu_core.solve(A, B, backend="off", on_failure="ignore", return_info=True)
    assert not info.converged and len(info.residuals) == 2 and info.max_residual > 1e-3


def test_info_reports_true_residuals():
    A = to_layout(random_nonsymmetric(N, seed=1), "csr")
    B = torch.randn(N, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    X, info = tsgu_core.solve(A, B, backend="torch", method="bicgstab", rtol=1e-9, return_info=True)
    true = (B - A.to_dense() @ X).norm(dim=0) / B.norm(dim=0)
    # two summation orders of a residual near 1e-10 agree to a few digits, not to machine precision
    torch.testing.assert_close(torch.tensor(info.residuals, dtype=torch.float64), true, rtol=1e-3, atol=1e-15)
    assert info.converged and info.iterations > 0 and info.wall_time > 0
    assert (info.backend, info.method, info.kind, info.transpose) == ("torch", "bicgstab", "iterative", False)
    assert info.thresholds == pytest.approx((1e-9,) * 3)


def test_singular_direct_solve_raises(register):
    register(PlainBackend("nan", returns=lambda B: torch.full_like(B, float("nan"))))
    register(DenseBackend(name="lu-direct"))
    A = to_layout(random_nonsymmetric(N, seed=1), "csr")
    b = torch.ones(N, dtype=torch.float64)
    singular = A.to_dense()
    singular[3] = 0
    with pytest.raises(errors.SingularMatrixError):
        tsgu_core.solve(singular.to_sparse_csr(), b, backend="lu-direct")
    # an iterative backend that returns NaN is a failed solve, not a solution
    with pytest.raises(errors.ConvergenceError):
        tsgu_core.solve(A, b, backend="nan")


def test_backend_breaking_the_contract_is_named(register):
    register(PlainBackend("wrong-shape", returns=lambda B: B[:-1]))
    A = to_layout(random_nonsymmetric(N, seed=1), "csr")
    with pytest.raises(errors.BackendContractError, match="'wrong-shape' returned"):
        tsgu_core.solve(A, torch.ones(N, dtype=torch.float64), backend="wrong-shape")


@pytest.mark.cuda
def test_device_mismatch_is_an_error_not_a_copy():
    A = to_layout(random_nonsymmetric(N, seed=1), "csr").cuda()
    with pytest.raises(errors.DeviceMismatchError, match="does not copy"):
        tsgu_core.solve(A, torch.ones(N, dtype=torch.float64), backend="torch")


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_solve_values_uses_the_given_values_not_As(layout):
    D = random_nonsymmetric(N, seed=12)
    A = to_layout(D, layout)
    values = A.values() * 2
    b = torch.randn(N, dtype=torch.float64)
    x = tsgu_core.solve_values(A, values, b, backend="torch", rtol=1e-13)
    torch.testing.assert_close(x, torch.linalg.solve(2 * D, b))
    with pytest.raises(errors.ShapeError, match="stored entries"):
        tsgu_core.solve_values(A, values[:-1], b, backend="torch")
