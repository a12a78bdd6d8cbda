"""Batches of matrices ``A`` of shape ``(b, n, n)``, grouped by sparsity pattern.

The core hands every backend a batch in one form: a detached batched CSR
tensor (``crow_indices`` ``(g, n + 1)``, ``col_indices`` and ``values``
``(g, nnz)``) whose members have identical ``crow_indices`` and
``col_indices``. Sharing one pattern is an optimisation, not a contract of the
public API: :func:`group_by_pattern` splits any batch into groups of members
that share a pattern (often one group, the fast path; at worst one group per
member), each with the map from its values back to ``A``'s own values, so
that a solve runs group by group and the gradient of ``A`` lands in each
member's own pattern, in ``A``'s layout.

``A``'s *flat values* are ``A.values()`` flattened: for a coalesced COO batch
its values in (member, row, column) order — each member's entries are a
contiguous run, already in CSR order — and for a batched CSR tensor its
``(b, nnz)`` values row-major.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from tsgu_core.errors import LayoutError, ShapeError
from tsgu_core.plugins.info import SolveInfo
from tsgu_core.plugins.kit.csr import row_pointers

__all__ = ["MemberGroup", "as_shared_pattern_csr", "group_by_pattern", "run_by_groups"]


@dataclass(frozen=True)
class MemberGroup:
    """Members of a batch that share one sparsity pattern.

    Attributes
    ----------
    members : Tensor
        The members' indices in the batch (int64, increasing), shape ``(g,)``.
    A : Tensor
        A detached batched CSR ``(g, n, n)`` of these members, sharing one
        ``crow_indices``/``col_indices`` row, with their values.
    value_index : Tensor
        int64 ``(g, nnz)``: ``A.values() == flat_values[value_index]``, where
        ``flat_values`` are the batch's values flattened (see the module
        docstring). Gathering with it is differentiable, and its backward
        scatters each member's gradient back into that member's own entries.
    """

    members: torch.Tensor
    A: torch.Tensor
    value_index: torch.Tensor

    def with_values(self, values: torch.Tensor) -> torch.Tensor:
        """This group's detached batched CSR pattern holding ``values`` ``(g, nnz)`` (detached)."""
        A = self.A
        return torch.sparse_csr_tensor(
            A.crow_indices(), A.col_indices(), values.detach(), A.shape, check_invariants=False
        )

    def values_of(self, flat_values: torch.Tensor) -> torch.Tensor:
        """This group's ``(g, nnz)`` values, gathered (differentiably) from the batch's flat values."""
        return flat_values.reshape(-1)[self.value_index.reshape(-1)].reshape(self.value_index.shape)


def _differs(name: str, member: int) -> ShapeError:
    return ShapeError(
        f"a batched A must share one sparsity pattern here, but member {member} differs from member 0 in {name}; "
        "store explicit zeros so every member has the same pattern, or solve the members separately"
    )


def as_shared_pattern_csr(A: torch.Tensor) -> torch.Tensor:
    """A detached batched CSR copy-free view of ``A`` ``(b, n, n)``, checking that all members share a pattern.

    Parameters
    ----------
    A : Tensor
        Coalesced COO with three sparse dimensions, or batched CSR.

    Raises
    ------
    ShapeError
        If the members' patterns differ (use :func:`group_by_pattern` to
        accept that).
    """
    groups = group_by_pattern(A)
    if len(groups) > 1:
        first = int(groups[1].members[0])
        raise _differs("its sparsity pattern", first)
    return groups[0].A


def _member_csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _groups_of_keys(count: int, same: Callable[[int, int], bool]) -> list[list[int]]:
    """Partition ``range(count)`` into classes of ``same``, each in increasing order, by first member."""
    classes: list[list[int]] = []
    for member in range(count):
        for members in classes:
            if same(members[0], member):
                members.append(member)
                break
        else:
            classes.append([member])
    return classes


def group_by_pattern(A: torch.Tensor) -> list[MemberGroup]:
    """Split a batch ``A`` ``(b, n, n)`` into groups of members that share one sparsity pattern.

    Parameters
    ----------
    A : Tensor
        Coalesced COO with three sparse dimensions (members may store
        different numbers of entries), or batched CSR (equal ``nnz`` per
        member, possibly different rows and columns).

    Returns
    -------
    list of MemberGroup
        Ordered by each group's first member; one group when all members
        share a pattern (then its ``A`` is a view of ``A``'s own tensors and
        its ``value_index`` is ``arange(b·nnz).reshape(b, nnz)``).

    Examples
    --------
    >>> import torch
    >>> D = torch.tensor([[[2.0, 1.0], [0.0, 3.0]], [[4.0, 0.0], [1.0, 5.0]], [[6.0, 2.0], [0.0, 7.0]]])
    >>> groups = group_by_pattern(D.to_sparse())
    >>> [g.members.tolist() for g in groups]
    [[0, 2], [1]]
    >>> groups[0].value_index.tolist()
    [[0, 1, 2], [6, 7, 8]]
    """
    A = A.detach()
    batch, n = A.shape[0], A.shape[-1]
    shape = torch.Size((n, n))
    device = A.device
    if A.layout == torch.sparse_csr:
        crow, col, values = A.crow_indices(), A.col_indices(), A.values()
        nnz = col.shape[-1]
        flat = torch.arange(batch * nnz, device=device).reshape(batch, nnz)
        if batch == 0 or (bool((crow == crow[:1]).all()) and bool((col == col[:1]).all())):
            return [MemberGroup(torch.arange(batch, device=device), A, flat)]

        def same_csr(i: int, j: int) -> bool:
            return torch.equal(crow[i], crow[j]) and torch.equal(col[i], col[j])

        groups = []
        for members in _groups_of_keys(batch, same_csr):
            index = torch.tensor(members, dtype=torch.int64, device=device)
            first = members[0]
            size = len(members)
            group_A = torch.sparse_csr_tensor(
                crow[first].expand(size, n + 1).contiguous(),
                col[first].expand(size, nnz).contiguous(),
                values[index],
                (size, n, n),
                check_invariants=False,
            )
            groups.append(MemberGroup(index, group_A, flat[index]))
        return groups

    if not A.is_coalesced():
        raise LayoutError("group_by_pattern needs a coalesced COO batch: use A.coalesce()")
    indices, values = A._indices(), A._values()
    starts = row_pointers(indices[0], batch)  # where each member's entries start
    counts = starts.diff()
    counts_list, starts_list = counts.tolist(), starts.tolist()
    rows, cols = indices[1], indices[2]

    def span(member: int) -> slice:
        return slice(starts_list[member], starts_list[member + 1])

    def same_coo(i: int, j: int) -> bool:
        return (
            counts_list[i] == counts_list[j]
            and torch.equal(rows[span(i)], rows[span(j)])
            and torch.equal(cols[span(i)], cols[span(j)])
        )

    uniform = batch == 0 or all(c == counts_list[0] for c in counts_list)
    if uniform and batch:
        nnz = counts_list[0]
        r, c = rows.reshape(batch, nnz), cols.reshape(batch, nnz)
        shared = bool((r == r[:1]).all()) and bool((c == c[:1]).all())
        classes = [list(range(batch))] if shared else _groups_of_keys(batch, same_coo)
    else:
        classes = _groups_of_keys(batch, same_coo) if batch else [[]]
    groups = []
    for members in classes:
        index = torch.tensor(members, dtype=torch.int64, device=device)
        size, nnz = len(members), (counts_list[members[0]] if members else 0)
        first_span = span(members[0]) if members else slice(0, 0)
        crow = row_pointers(rows[first_span], n)
        value_index = starts[index].unsqueeze(1) + torch.arange(nnz, device=device)
        group_A = torch.sparse_csr_tensor(
            crow.expand(size, n + 1).contiguous(),
            cols[first_span].expand(size, nnz).contiguous(),
            values[value_index.reshape(-1)].reshape(size, nnz),
            (size, *shape),
            check_invariants=False,
        )
        groups.append(MemberGroup(index, group_A, value_index))
    return groups


def run_by_groups(
    groups: list[MemberGroup],
    flat_values: torch.Tensor,
    B: torch.Tensor,
    run: Callable[[MemberGroup, torch.Tensor, torch.Tensor], tuple[torch.Tensor, SolveInfo]],
) -> tuple[torch.Tensor, SolveInfo]:
    """Run ``run(group, group_values, group_B) -> (group_X, info)`` per group; members back in order.

    Parameters
    ----------
    groups : list of MemberGroup
        From :func:`group_by_pattern`.
    flat_values : Tensor
        The batch's values, flattened (may require grad: gradients reach each
        member's own entries through the gather).
    B : Tensor
        Batched right-hand sides, member first (``(b, n)`` or ``(b, n, k)``).
    run : callable
        Solves one group: its ``(g, nnz)`` values and ``(g, ...)``
        right-hand sides to ``(g, ...)`` solutions and their :class:`SolveInfo`.

    Returns
    -------
    (Tensor, SolveInfo)
        The solutions of all members in the batch's order, shaped like ``B``,
        and one :class:`SolveInfo` for the whole batch (residuals member by
        member in the batch's order; its ``backward`` is filled in once every
        group's backward solve has run).
    """
    if len(groups) == 1:
        return run(groups[0], groups[0].values_of(flat_values), B)
    results = [run(group, group.values_of(flat_values), B[group.members]) for group in groups]
    order = torch.cat([group.members for group in groups])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    X = torch.cat([X for X, _ in results])[inverse]
    return X, _GroupedInfo([info for _, info in results], [group.members.tolist() for group in groups])


class _GroupedInfo(SolveInfo):
    """One :class:`SolveInfo` for a batch solved group by group (members put back in the batch's order)."""

    def __init__(self, parts: list[SolveInfo], members: list[list[int]]):
        self._parts, self._members = parts, members
        batch = sum(len(m) for m in members)
        per_member: dict[int, tuple[list[float], list[float] | None]] = {}
        for info, group in zip(parts, members, strict=True):
            columns = len(info.residuals) // max(len(group), 1)
            for position, member in enumerate(group):
                window = slice(position * columns, (position + 1) * columns)
                thresholds = None if info.thresholds is None else list(info.thresholds[window])
                per_member[member] = (list(info.residuals[window]), thresholds)
        ordered = [per_member[m] for m in range(batch)]
        iterations = [info.iterations for info in parts if info.iterations is not None]
        super().__init__(
            backend=parts[0].backend,
            method=parts[0].method,
            kind=parts[0].kind,
            transpose=parts[0].transpose,
            iterations=max(iterations) if iterations else None,
            residuals=tuple(r for residuals, _ in ordered for r in residuals),
            thresholds=None
            if any(t is None for _, t in ordered)
            else tuple(t for _, thresholds in ordered for t in thresholds or ()),
            converged=all(info.converged for info in parts),
            wall_time=sum(info.wall_time for info in parts),
            message="; ".join(sorted({info.message for info in parts if info.message})),
            batch=batch,
        )

    @property
    def backward(self) -> SolveInfo | None:
        """The backward pass's record, once every group's backward solve has run."""
        backs = [getattr(info, "backward", None) for info in getattr(self, "_parts", [])]
        if not backs or any(back is None for back in backs):
            return None
        return _GroupedInfo(backs, self._members)  # type: ignore[arg-type]

    @backward.setter
    def backward(self, value: SolveInfo | None) -> None:
        """Set by the dataclass ``__init__`` only; the groups' own records are the source."""
