"""Batched A (b, n, n) whose members have different sparsity patterns, against dense references."""

import pytest
import torch

import tsgu_core
from tsgu_core.sparse.batch import group_by_pattern
from tsgu_core.testing import DenseBackend

N = 7
# members 0 and 3 share a pattern; 1 and 2 have their own (so the groups' order is no involution of the
# members'). Per member: the off-diagonal positions.
OFF_DIAGONAL = {
    "coo": [[(0, 3), (2, 5), (6, 1)], [(1, 4), (5, 0)], [(3, 2), (4, 6), (0, 1), (5, 3)], [(0, 3), (2, 5), (6, 1)]],
    # batched CSR needs equal nnz per member: same count, other rows and columns
    "csr": [[(0, 3), (2, 5), (6, 1)], [(1, 4), (5, 0), (3, 6)], [(4, 2), (4, 6), (0, 1)], [(0, 3), (2, 5), (6, 1)]],
}
GROUPS = [[0, 3], [1], [2]]


def batch(layout, seed=0, triangle=None):
    """Dense members (nonsymmetric, well conditioned) and the sparse batch in ``layout``."""
    generator = torch.Generator().manual_seed(seed)
    members = []
    for positions in OFF_DIAGONAL[layout]:
        D = torch.diag(torch.rand(N, dtype=torch.float64, generator=generator) + 2.0)
        for i, j in positions:
            if triangle == "lower":
                i, j = max(i, j), min(i, j)
            elif triangle == "upper":
                i, j = min(i, j), max(i, j)
            D[i, j] = torch.rand((), dtype=torch.float64, generator=generator) * 2 - 1
        members.append(D)
    D = torch.stack(members)
    return D, (D.to_sparse().coalesce() if layout == "coo" else D.to_sparse_csr())


def rhs(k, seed=1, batch_size=4):
    shape = (batch_size, N) if k is None else (batch_size, N, k)
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def dense_solve(D, B):
    return torch.linalg.solve(D, B.unsqueeze(-1)).squeeze(-1) if B.dim() == 2 else torch.linalg.solve(D, B)


@pytest.fixture
def dense_loop(register):
    return register(DenseBackend(name="dense-loop"))


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_group_by_pattern_groups_members_and_maps_values_back(layout):
    D, A = batch(layout)
    groups = group_by_pattern(A)
    assert [g.members.tolist() for g in groups] == GROUPS
    flat = A.values().reshape(-1)
    for group in groups:
        assert group.A.layout == torch.sparse_csr and group.A.shape == (len(group.members), N, N)
        assert bool((group.A.crow_indices() == group.A.crow_indices()[:1]).all())
        assert bool((group.A.col_indices() == group.A.col_indices()[:1]).all())
        torch.testing.assert_close(group.A.values(), flat[group.value_index])
        torch.testing.assert_close(group.A.to_dense(), D[group.members])
    covered = torch.cat([g.value_index.reshape(-1) for g in groups]).sort().values
    assert torch.equal(covered, torch.arange(flat.numel()))  # every stored entry belongs to exactly one group


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_shared_pattern_is_one_group_without_copies(layout):
    D, _ = batch(layout)
    same = D[0].ne(0) * torch.rand(4, N, N, dtype=torch.float64) + torch.eye(N, dtype=torch.float64)
    A = same.to_sparse().coalesce() if layout == "coo" else same.to_sparse_csr()
    (group,) = group_by_pattern(A)
    assert group.members.tolist() == [0, 1, 2, 3]
    assert torch.equal(group.value_index.reshape(-1), torch.arange(A.values().numel()))


@pytest.mark.parametrize("backend", ["torch", "scipy", "dense-loop"])
@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("k", [None, 3])
def test_solution_and_gradients_land_in_each_members_pattern(backend, layout, k, dense_loop):
    D, A = batch(layout)
    A = A.requires_grad_()
    B = rhs(k).requires_grad_()
    G = rhs(k, seed=2)
    options = {"method": "gmres", "rtol": 1e-13} if backend == "torch" else {}
    X, info = tsgu_core.solve(A, B, backend=backend, return_info=True, **options)
    (X * G).sum().backward()

    D_ref, B_ref = D.clone().requires_grad_(), B.detach().clone().requires_grad_()
    X_ref = dense_solve(D_ref, B_ref)
    (X_ref * G).sum().backward()
    torch.testing.assert_close(X, X_ref)
    torch.testing.assert_close(B.grad, B_ref.grad)
    assert A.grad.layout == A.layout
    if layout == "coo":
        assert torch.equal(A.grad.coalesce().indices(), A.detach().indices())  # each member's own pattern
    else:
        assert torch.equal(A.grad.crow_indices(), A.detach().crow_indices())
        assert torch.equal(A.grad.col_indices(), A.detach().col_indices())
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (D != 0))

    # one record for the batch, in the batch's member order, and for its backward pass
    assert info.batch == 4 and len(info.residuals) == 4 * (k or 1)
    residual = torch.linalg.vector_norm(B.detach() - (D @ X.detach().reshape(4, N, -1)).reshape(B.shape), dim=1)
    expected = (residual / torch.linalg.vector_norm(B.detach(), dim=1)).reshape(-1)
    torch.testing.assert_close(torch.tensor(info.residuals, dtype=torch.float64), expected, atol=1e-12, rtol=0)
    assert info.backward is not None and info.backward.transpose and len(info.backward.residuals) == 4 * (k or 1)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_gradcheck_with_different_patterns(layout):
    _, A = batch(layout, seed=3)
    values = A.values().clone().requires_grad_()
    B = rhs(2, seed=4).requires_grad_()

    def function(vals, right):
        if layout == "coo":
            matrix = torch.sparse_coo_tensor(A.indices(), vals, A.shape, is_coalesced=True)
        else:
            matrix = torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), vals, A.shape)
        return tsgu_core.solve(matrix, right, backend="scipy")

    assert torch.autograd.gradcheck(function, (values, B))


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_solve_values_with_different_patterns_to_second_order(layout):
    D, A = batch(layout, seed=5)
    values = A.values().clone().requires_grad_()
    B = rhs(None, seed=6).requires_grad_()
    X = tsgu_core.solve_values(A, values, B, backend="scipy")
    torch.testing.assert_close(X, dense_solve(D, B.detach()))
    assert torch.autograd.gradcheck(lambda v, b: tsgu_core.solve_values(A, v, b, backend="scipy"), (values, B))
    assert torch.autograd.gradgradcheck(lambda v, b: tsgu_core.solve_values(A, v, b, backend="scipy"), (values, B))


def test_initial_guess_follows_the_members_into_their_groups():
    D, A = batch("coo", seed=7)
    B = rhs(2, seed=8)
    expected = dense_solve(D, B)
    X = tsgu_core.solve(A, B, backend="torch", method="gmres", rtol=1e-12, x0=expected * 0.99)
    torch.testing.assert_close(X, expected)


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("transpose", [False, True])
def test_triangular_solve_with_different_patterns(layout, upper, transpose):
    D, A = batch(layout, seed=9, triangle="upper" if upper else "lower")
    assert len(group_by_pattern(A)) > 1
    A = A.requires_grad_()
    B = rhs(2, seed=10).requires_grad_()
    G = rhs(2, seed=11)
    X = tsgu_core.triangular_solve(A, B, upper=upper, transpose=transpose)
    (X * G).sum().backward()
    D_ref, B_ref = D.clone().requires_grad_(), B.detach().clone().requires_grad_()
    X_ref = torch.linalg.solve(D_ref.transpose(-1, -2) if transpose else D_ref, B_ref)
    (X_ref * G).sum().backward()
    torch.testing.assert_close(X, X_ref)
    torch.testing.assert_close(B.grad, B_ref.grad)
    assert A.grad.layout == A.layout
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (D != 0))


def test_a_wrong_batch_size_of_B_is_a_shape_error_before_grouping():
    _, A = batch("coo")
    with pytest.raises(tsgu_core.ShapeError, match=r"\(4, 7\) or \(4, 7, k\)"):
        tsgu_core.solve(A, rhs(None, batch_size=3), backend="scipy")


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("transpose", [False, True])
def test_factorize_a_batch_with_different_patterns_prepares_once(layout, transpose, dense_loop):
    D, A = batch(layout, seed=12)
    A = A.requires_grad_()
    handle = tsgu_core.factorize(A, backend="dense-loop")
    assert dense_loop.factorizations == 4  # one prepare per member (the dense backend has no batch support)
    B1, B2 = rhs(2, seed=13).requires_grad_(), rhs(None, seed=14)
    for B, loss in ((B1, torch.sum), (B2, lambda X: X.square().sum())):
        # one backward per solve: torch 2.13 cannot accumulate two gradients of a batched CSR leaf
        # (AccumulateGrad breaks its indices, whatever the patterns), so A.grad is compared each time
        A.grad = None
        X, info = handle.solve(B, transpose=transpose, return_info=True)
        loss(X).backward()
        assert info.batch == 4 and info.backward is not None
        D_ref, B_ref = D.clone().requires_grad_(), B.detach().clone().requires_grad_()
        X_ref = dense_solve(D_ref.transpose(-1, -2) if transpose else D_ref, B_ref)
        loss(X_ref).backward()
        torch.testing.assert_close(X, X_ref)
        if B.requires_grad:
            torch.testing.assert_close(B.grad, B_ref.grad)
        assert A.grad.layout == A.layout
        torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (D != 0))
    assert dense_loop.factorizations == 4  # reused by both solves and their backward passes


def test_factorize_a_batch_sharing_one_pattern_and_a_stale_one(dense_loop):
    D, _ = batch("coo")
    same = (D[0] != 0) * torch.rand(4, N, N, dtype=torch.float64) + 2 * torch.eye(N, dtype=torch.float64)
    A = same.to_sparse_csr()
    handle = tsgu_core.factorize(A, backend="scipy")
    B = rhs(3, seed=15)
    torch.testing.assert_close(handle.solve(B), torch.linalg.solve(same, B))
    _, mixed = batch("coo", seed=16)
    stale = tsgu_core.factorize(mixed, backend="scipy")
    mixed.values().mul_(2.0)
    with pytest.raises(tsgu_core.StaleFactorizationError):
        stale.solve(B)


def _batched_methods():
    """Every available CPU method that declares ``batched`` (it receives whole groups), with its operation."""
    params = []
    for entry in tsgu_core.list_backends():
        if "cpu" not in entry.backend.device_types or not entry.availability("cpu"):
            continue
        for name, spec in sorted(entry.backend.methods.items()):
            if spec.batched and spec.operation in ("solve", "triangular") and spec.assumes == "general":
                params.append(pytest.param(entry.name, name, spec.operation, spec.kind, id=f"{entry.name}-{name}"))
    return params


@pytest.mark.parametrize(("backend", "method", "operation", "kind"), _batched_methods())
@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_every_batched_method_gets_groups_with_different_patterns(backend, method, operation, kind, layout):
    D, A = batch(layout, seed=17, triangle="lower" if operation == "triangular" else None)
    A = A.requires_grad_()
    B = rhs(2, seed=18).requires_grad_()
    options = {"rtol": 1e-13} if kind == "iterative" else {}
    if operation == "triangular":
        X = tsgu_core.triangular_solve(A, B, upper=False, backend=backend, method=method, **options)
    else:
        X = tsgu_core.solve(A, B, backend=backend, method=method, **options)
    X.square().sum().backward()
    D_ref, B_ref = D.clone().requires_grad_(), B.detach().clone().requires_grad_()
    torch.linalg.solve(D_ref, B_ref).square().sum().backward()
    torch.testing.assert_close(X, torch.linalg.solve(D, B.detach()))
    torch.testing.assert_close(B.grad, B_ref.grad)
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (D != 0))


def test_a_singular_member_is_named_by_its_index_in_the_batch():
    _, A = batch("coo", seed=19, triangle="lower")
    index = A.indices()
    where = ((index[0] == 2) & (index[1] == 4) & (index[2] == 4)).nonzero().item()
    values = A.values().clone()
    values[where] = 0.0  # a stored zero on member 2's diagonal; member 2 is alone in its group (index 0 there)
    A = torch.sparse_coo_tensor(index, values, A.shape, is_coalesced=True)
    with pytest.raises(tsgu_core.SingularMatrixError, match=r"\(4, 4\) in batch member 2 is zero"):
        tsgu_core.triangular_solve(A, rhs(2, seed=20), upper=False)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_triangular_gradcheck_with_different_patterns(layout):
    _, A = batch(layout, seed=21, triangle="upper")
    values = A.values().clone().requires_grad_()
    B = rhs(2, seed=22).requires_grad_()

    def function(vals, right):
        if layout == "coo":
            matrix = torch.sparse_coo_tensor(A.indices(), vals, A.shape, is_coalesced=True)
        else:
            matrix = torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), vals, A.shape)
        return tsgu_core.triangular_solve(matrix, right, upper=True, transpose=True)

    assert torch.autograd.gradcheck(function, (values, B))
