"""Bad inputs give the documented, typed errors before any backend work."""

import pytest
import torch

import tsgu_core
from tsgu_core import errors
from tsgu_core.testing import DenseBackend, random_nonsymmetric, to_layout

N = 6


@pytest.fixture
def A():
    return to_layout(random_nonsymmetric(N, seed=3), "csr")


@pytest.fixture
def b():
    return torch.ones(N, dtype=torch.float64)


@pytest.fixture
def counting_backend(register):
    """A registered backend that counts factorizations (to prove validation comes first)."""
    return register(DenseBackend(name="counting"))


@pytest.mark.parametrize(
    ("make", "error", "advice"),
    [
        (lambda D: D, errors.LayoutError, "to_sparse_csr"),
        (lambda D: D.to_sparse_csc(), errors.LayoutError, "to_sparse_csr"),
        (lambda D: D.to_sparse_bsr((2, 2)), errors.LayoutError, "to_sparse_coo"),
        (lambda D: D[:, :4].to_sparse_csr(), errors.ShapeError, "square"),
        (lambda D: D.to(torch.float16).to_sparse_csr(), errors.DtypeMismatchError, "complex128"),
        (lambda D: D.to(torch.bfloat16).to_sparse_csr(), errors.DtypeMismatchError, "float32, float64"),
        (lambda D: (10 * D).to(torch.int64).to_sparse_csr(), errors.DtypeMismatchError, "float64"),
        (lambda D: torch.stack([D, D]).unsqueeze(0).to_sparse(), errors.ShapeError, "2-D"),
        (lambda D: "not a tensor", errors.LayoutError, "sparse"),
    ],
)
def test_bad_matrix(make, error, advice, b, counting_backend):
    with pytest.raises(error, match=advice):
        tsgu_core.solve(make(random_nonsymmetric(N)), b, backend="counting")
    assert counting_backend.factorizations == 0


def test_csr_with_mixed_index_dtypes_is_rejected(A, b):
    mixed = torch.sparse_csr_tensor(A.crow_indices(), A.col_indices().to(torch.int32), A.values(), A.shape)
    with pytest.raises(errors.DtypeMismatchError, match="must match"):
        tsgu_core.solve(mixed, b)


@pytest.mark.parametrize(
    ("B", "error", "words"),
    [
        (torch.ones(N + 1, dtype=torch.float64), errors.ShapeError, "shape"),
        (torch.ones(N, 2, 2, dtype=torch.float64), errors.ShapeError, "shape"),
        (torch.ones(N, dtype=torch.float32), errors.DtypeMismatchError, "does not cast"),
        (torch.ones(N, dtype=torch.float64).to_sparse(), errors.LayoutError, "dense"),
        ([1.0] * N, TypeError, "tensor"),
    ],
)
def test_bad_rhs(A, B, error, words, counting_backend):
    with pytest.raises(error, match=words):
        tsgu_core.solve(A, B, backend="counting")
    assert counting_backend.factorizations == 0


@pytest.mark.parametrize("where", ["A", "B"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input(A, b, where, bad, counting_backend):
    if where == "A":
        values = A.values().clone()
        values[2] = bad
        A = torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), values, A.shape)
    else:
        b = b.clone()
        b[1] = bad
    with pytest.raises(errors.NonFiniteError, match=f"{where} contains 1 non-finite"):
        tsgu_core.solve(A, b, backend="counting")
    assert counting_backend.factorizations == 0


def test_unknown_option_lists_accepted(A, b):
    with pytest.raises(errors.UnknownOptionError, match="accepted options:\n  rtol: ") as caught:
        tsgu_core.solve(A, b, backend="torch", method="gmres", tol=1e-3)
    assert caught.value.unknown == ("tol",) and "restart" in caught.value.accepted
    assert isinstance(caught.value, TypeError)


def test_direct_method_rejects_tolerances(A, b, counting_backend):
    with pytest.raises(errors.UnknownOptionError, match="direct method takes no tolerance"):
        tsgu_core.solve(A, b, backend="counting", rtol=1e-3)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"rtol": -1.0}, ValueError),
        ({"rtol": "small"}, TypeError),
        ({"atol": float("nan")}, ValueError),
        ({"maxiter": 0}, ValueError),
        ({"maxiter": 2.5}, TypeError),
        ({"maxiter": True}, TypeError),
        ({"restart": 0}, ValueError),
        ({"preconditioner": "ilu"}, ValueError),
        ({"x0": torch.ones(N + 1, dtype=torch.float64)}, errors.ShapeError),
        ({"x0": torch.ones(N, dtype=torch.float32)}, errors.DtypeMismatchError),
    ],
)
def test_bad_option_values(A, b, options, error):
    with pytest.raises(error):
        tsgu_core.solve(A, b, backend="torch", method="gmres", **options)


def test_bad_on_failure(A, b):
    with pytest.raises(ValueError, match="on_failure"):
        tsgu_core.solve(A, b, backend="torch", on_failure="shrug")


def test_unknown_method_lists_valid(A, b):
    with pytest.raises(errors.UnknownMethodError, match="bicgstab") as caught:
        tsgu_core.solve(A, b, backend="torch", method="lu-please")
    assert "gmres" in caught.value.valid


def test_unknown_backend_lists_registered(A, b):
    with pytest.raises(errors.UnknownBackendError, match=r"torch \(tsgu") as caught:
        tsgu_core.solve(A, b, backend="no-such-backend")
    assert "torch" in caught.value.registered


@pytest.mark.parametrize("shape", [(0,), (0, 3), (N, 0)])
def test_empty_problems(shape):
    n = shape[0]
    A = to_layout(random_nonsymmetric(n) if n else torch.zeros(0, 0, dtype=torch.float64), "coo")
    A.requires_grad_()
    B = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
    X = tsgu_core.solve(A, B, backend="torch")
    assert X.shape == B.shape
    X.sum().backward()
    assert B.grad.shape == B.shape
    assert A.grad is not None and A.grad._nnz() == A._nnz() and not A.grad.to_dense().any()
