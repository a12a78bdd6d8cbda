"""triangular_solve: structure checks, batches, selection.

Every registered triangular method is checked against dense references and gradcheck by the
conformance kit (tsgu_core.testing, run in tests/test_conformance.py)."""

import pytest
import torch

import tsgu_core
from tsgu_core import errors
from tsgu_core.testing import triangular_pair

N = 10


def triangle(upper, unit, seed=0):
    return triangular_pair(N, upper=upper, unit_diagonal=unit, seed=seed)


def sparse(T, layout):
    return T.to_sparse().coalesce() if layout == "coo" else T.to_sparse_csr()


def test_wrong_side_is_found_in_forward():
    stored, _ = triangle(upper=True, unit=False)
    with pytest.raises(errors.StructureError, match="not lower triangular.*above"):
        tsgu_core.triangular_solve(sparse(stored, "csr"), torch.ones(N, dtype=torch.float64), upper=False)


def test_unit_diagonal_must_not_be_stored():
    stored, _ = triangle(upper=True, unit=False)
    with pytest.raises(errors.StructureError, match="stores 10 diagonal entries"):
        tsgu_core.triangular_solve(
            sparse(stored, "coo"), torch.ones(N, dtype=torch.float64), upper=True, unit_diagonal=True
        )


def test_missing_or_zero_diagonal_is_singular():
    stored, _ = triangle(upper=False, unit=False)
    missing = stored.clone()
    missing[4, 4] = 0.0
    with pytest.raises(errors.SingularMatrixError, match="row 4 has no stored diagonal"):
        tsgu_core.triangular_solve(sparse(missing, "csr"), torch.ones(N, dtype=torch.float64), upper=False)
    A = sparse(stored, "csr")
    values = A.values().clone()
    diagonal_position = int(A.crow_indices()[7]) - 1  # the last entry of row 6 of a lower triangle
    assert int(A.col_indices()[diagonal_position]) == 6
    values[diagonal_position] = 0.0
    zero = torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), values, A.shape)
    with pytest.raises(errors.SingularMatrixError, match=r"\(6, 6\) is zero"):
        tsgu_core.triangular_solve(zero, torch.ones(N, dtype=torch.float64), upper=False)


def test_batched_triangular():
    D = torch.stack([triangle(upper=False, unit=False, seed=s)[0] for s in range(3)])
    mask = (D != 0).any(0)
    D = (D + 0.1) * mask  # one shared pattern
    A = D.to_sparse_csr().requires_grad_()
    B = torch.randn(3, N, 2, dtype=torch.float64)
    X = tsgu_core.triangular_solve(A, B, upper=False)
    torch.testing.assert_close(X, torch.linalg.solve_triangular(D, B, upper=False))
    X.sum().backward()
    D_ref = D.clone().requires_grad_()
    torch.linalg.solve_triangular(D_ref, B, upper=False).sum().backward()
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * mask)


def test_default_triangular_method_is_the_declared_fastest():
    selection = tsgu_core.explain("cpu", operation="triangular")
    assert (selection.backend, selection.method) == ("torch", "triangular")
    with pytest.raises(errors.UnknownMethodError, match="triangular"):
        tsgu_core.solve(
            sparse(triangle(True, False)[0], "csr"),
            torch.ones(N, dtype=torch.float64),
            backend="torch",
            method="triangular",
        )


def test_torch_kernel_gets_a_contiguous_rhs():
    """torch's sparse triangular_solve mis-solves a strided (n, 1) view; the backend must guard it."""
    stored, _ = triangle(upper=False, unit=False)
    backend = tsgu_core.get_backend("torch")
    options = tsgu_core.SolveOptions(extra={"upper": False, "unit_diagonal": False})
    state = backend.prepare(stored.to_sparse_csr(), "triangular", options)
    wide = torch.randn(N, 2, dtype=torch.float64)
    X, _ = backend.solve(state, wide[:, :1], transpose=False)
    torch.testing.assert_close(X, torch.linalg.solve_triangular(stored, wide[:, :1], upper=False))
