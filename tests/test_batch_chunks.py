"""The torch backend's batched Krylov path: chunks of members (``batch_chunk``), GMRES's basis layout, and the
core's per-member residual product — every result against dense ``torch.linalg.solve`` member by member."""

import pytest
import torch

import tsgu_core
from tsgu_backends.torch_backend.backend import _members_per_chunk
from tsgu_core import SolveOptions, errors
from tsgu_core.sparse.pattern import SparsePattern, UnitDiagonalPattern
from tsgu_core.testing import matrix_for, random_nonsymmetric

B_SIZE, N = 5, 12  # 5 members in chunks of 2: two full chunks and a last one of a single member
ASSUMES = {"gmres": "general", "bicgstab": "general", "cg": "spd", "minres": "symmetric"}


def batch_of_matrices(assumes="general", seed=0, batch=B_SIZE):
    """Members with one pattern and different values (nonsymmetric for 'general'), kept in their class."""
    base = matrix_for(assumes, N, seed=seed)
    mask = base != 0
    generator = torch.Generator().manual_seed(seed + 1)
    if assumes == "general":  # independent entries: each member clearly nonsymmetric
        scale = torch.rand(batch, N, N, dtype=torch.float64, generator=generator) + 0.5
        return base * scale * mask
    # symmetric scaling D·A·D keeps symmetry and definiteness, and changes every member
    d = torch.rand(batch, N, dtype=torch.float64, generator=generator) + 0.5
    return d.unsqueeze(-1) * base * d.unsqueeze(-2)


def as_layout(D, layout):
    return D.to_sparse().coalesce() if layout == "coo" else D.to_sparse_csr()


def dense_solve(D, B):
    return torch.linalg.solve(D, B.unsqueeze(-1)).squeeze(-1) if B.dim() == 2 else torch.linalg.solve(D, B)


@pytest.mark.parametrize("method", ["gmres", "bicgstab", "cg", "minres"])
@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("k", [None, 3])
def test_chunked_batch_matches_dense_with_gradients(method, layout, k):
    D = batch_of_matrices(ASSUMES[method], seed=3)
    A = as_layout(D, layout).requires_grad_()
    B = torch.randn((B_SIZE, N) if k is None else (B_SIZE, N, k), dtype=torch.float64, requires_grad=True)
    G = torch.randn(B.shape, dtype=torch.float64)
    extra = {"restart": N} if method == "gmres" else {}  # GMRES(N): exact within one cycle
    X, info = tsgu_core.solve(
        A, B, backend="torch", method=method, rtol=1e-13, batch_chunk=2, return_info=True, **extra
    )
    (X * G).sum().backward()
    D_ref = D.clone().requires_grad_()
    B_ref = B.detach().clone().requires_grad_()
    X_ref = dense_solve(D_ref, B_ref)
    (X_ref * G).sum().backward()
    torch.testing.assert_close(X, X_ref)
    torch.testing.assert_close(B.grad, B_ref.grad)
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (D != 0))
    assert info.converged and info.batch == B_SIZE and len(info.residuals) == B_SIZE * (k or 1)


@pytest.mark.parametrize("method", ["gmres", "bicgstab"])
@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_chunked_batch_gradcheck(method, layout):
    D = batch_of_matrices(seed=5, batch=3)
    A = as_layout(D, layout)
    values = A.values().clone().requires_grad_()
    B = torch.randn(3, N, 2, dtype=torch.float64, requires_grad=True)

    def function(vals, rhs):
        if layout == "coo":
            matrix = torch.sparse_coo_tensor(A.indices(), vals, A.shape, is_coalesced=True)
        else:
            matrix = torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), vals, A.shape)
        return tsgu_core.solve(matrix, rhs, backend="torch", method=method, rtol=1e-13, batch_chunk=2)

    assert torch.autograd.gradcheck(function, (values, B))


@pytest.mark.parametrize("method", ["gmres", "bicgstab"])
@pytest.mark.parametrize("preconditioner", ["jacobi", "ilu0"])
def test_chunks_take_their_own_preconditioner_and_initial_guess(method, preconditioner):
    D = batch_of_matrices(seed=7)
    B = torch.randn(B_SIZE, N, 2, dtype=torch.float64)
    expected = torch.linalg.solve(D, B)
    X = tsgu_core.solve(
        as_layout(D, "csr"),
        B,
        backend="torch",
        method=method,
        rtol=1e-12,
        preconditioner=preconditioner,
        batch_chunk=2,
        x0=expected * 0.9,
    )
    torch.testing.assert_close(X, expected)


def test_a_chunk_that_fails_names_its_member():
    D = batch_of_matrices(seed=8)
    B = torch.randn(B_SIZE, N, dtype=torch.float64)
    with pytest.raises(errors.ConvergenceError, match="member 0 column 0") as caught:
        tsgu_core.solve(
            as_layout(D, "csr"), B, backend="torch", method="bicgstab", batch_chunk=2, maxiter=1, rtol=1e-14
        )
    assert len(caught.value.residuals) == B_SIZE


def test_batch_chunk_is_checked():
    D = batch_of_matrices()
    with pytest.raises(errors.InvalidOptionError, match="batch_chunk"):
        tsgu_core.solve(as_layout(D, "csr"), torch.ones(B_SIZE, N, dtype=torch.float64), backend="torch", batch_chunk=0)
    # never ignored quietly: an A that is not batched, or a callable M that sees the whole batch, refuse it
    single = as_layout(D[0], "csr")
    with pytest.raises(errors.InvalidOptionError, match=r"cannot apply to A of \(12, 12\)"):
        tsgu_core.solve(single, torch.ones(N, dtype=torch.float64), backend="torch", method="gmres", batch_chunk=2)
    with pytest.raises(errors.InvalidOptionError, match="callable M"):
        tsgu_core.solve(as_layout(D, "csr"), torch.ones(B_SIZE, N, dtype=torch.float64), backend="torch",
                        method="gmres", batch_chunk=2, M=lambda R: R, M_transpose=lambda R: R)  # fmt: skip


def test_default_chunk_follows_the_working_set():
    def chunk(n, nnz_per_row, method, batch=64, **extra):
        crow = torch.arange(n + 1).mul(nnz_per_row).expand(batch, -1)
        col = (torch.arange(n * nnz_per_row) % n).expand(batch, -1)
        values = torch.ones(batch, n * nnz_per_row, dtype=torch.float64)
        A = torch.sparse_csr_tensor(crow, col, values, (batch, n, n), check_invariants=False)
        return _members_per_chunk(A, method, SolveOptions(extra={"restart": 20, "batch_chunk": None, **extra}))

    # n = 1e4, 5 entries a row (the benchmark's members): BiCGSTAB ≈ 1.4 MB a member, GMRES(20) ≈ 2.1 MB
    assert chunk(10_000, 5, "bicgstab") == 11
    assert chunk(10_000, 5, "gmres") == 8
    assert chunk(100, 5, "bicgstab") >= 64  # small members: the whole batch at once
    assert chunk(1_000_000, 5, "bicgstab") == 1  # a member beyond the budget: one at a time
    assert chunk(10_000, 5, "bicgstab", batch_chunk=3) == 3  # the option wins


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("unit", [False, True])
@pytest.mark.parametrize("n", [10, 64])  # 10: the gathers; 64 (≥ 1024 entries): one CSR product per member
def test_residual_product_of_a_batch_matches_dense(transpose, unit, n):
    """The core's batched ``pattern.matmul`` (the residual check of every batched solve)."""
    base = random_nonsymmetric(n, density=0.3, seed=9)
    D = base * (torch.rand(3, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.5)
    csr = base.to_sparse_csr()
    pattern = (UnitDiagonalPattern if unit else SparsePattern).from_csr(csr.crow_indices(), csr.col_indices(), n)
    values = torch.stack([member.to_sparse_csr().values() for member in D])
    X = torch.randn(3, n, 2, dtype=torch.float64)
    assert pattern._fast_batch(values, X) == (n == 64)
    dense = D + torch.eye(n, dtype=torch.float64) if unit else D
    expected = (dense.mT if transpose else dense) @ X
    torch.testing.assert_close(pattern.matmul(values, X, transpose=transpose), expected)


@pytest.mark.parametrize("method", ["gmres", "bicgstab"])
@pytest.mark.parametrize("spread", [4.0, 1e200])  # like scales share one σ; far-apart ones keep their own
def test_members_of_very_different_scale(method, spread):
    D = batch_of_matrices(seed=11, batch=3)
    D = D * torch.tensor([1.0, spread, 1.0 / spread], dtype=torch.float64).reshape(3, 1, 1)
    B = torch.randn(3, N, 2, dtype=torch.float64)
    extra = {"restart": N} if method == "gmres" else {}
    X, info = tsgu_core.solve(
        as_layout(D, "csr"), B, backend="torch", method=method, rtol=1e-12, return_info=True, **extra
    )
    expected = torch.linalg.solve(D, B)
    assert info.converged
    for member in range(3):
        torch.testing.assert_close(X[member], expected[member], rtol=1e-8, atol=0)
