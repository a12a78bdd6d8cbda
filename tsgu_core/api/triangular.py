"""Sparse triangular solves: :func:`triangular_solve`."""

from __future__ import annotations

import re
from typing import Any, Literal, overload

import torch

from tsgu_core.base.quiet import quietly
from tsgu_core.base.transforms import outside_graphs
from tsgu_core.engine.pipeline import as_columns, execute, matrix_values, plan, split_by_pattern
from tsgu_core.engine.request import SolveRequest
from tsgu_core.errors import InvalidArgumentError, SingularMatrixError, StructureError
from tsgu_core.plugins.info import SolveInfo
from tsgu_core.plugins.protocol import SolverBackend
from tsgu_core.sparse.batch import MemberGroup, run_by_groups
from tsgu_core.sparse.pattern import SparsePattern, UnitDiagonalPattern
from tsgu_core.sparse.validate import check_rhs

__all__ = ["triangular_solve"]


def _check_triangular(pattern: SparsePattern, values: torch.Tensor, *, upper: bool, unit_diagonal: bool) -> None:
    """Raise unless the stored entries lie on the declared side, with the declared diagonal."""
    row, col = pattern.row, pattern.col
    wrong = (row > col) if upper else (row < col)
    if bool(wrong.any()):
        first = int(wrong.nonzero()[0])
        side = "below" if upper else "above"
        raise StructureError(
            f"A is not {'upper' if upper else 'lower'} triangular: {int(wrong.sum())} stored entries lie {side} the "
            f"diagonal (the first at ({int(row[first])}, {int(col[first])})); check upper= or transpose A"
        )
    on_diagonal = row == col
    if unit_diagonal:
        if bool(on_diagonal.any()):
            raise StructureError(
                f"unit_diagonal=True, but A stores {int(on_diagonal.sum())} diagonal entries; the diagonal is taken "
                "as ones, so remove them (or pass unit_diagonal=False)"
            )
        return
    present = torch.zeros(pattern.n, dtype=torch.bool, device=row.device)
    present[row[on_diagonal]] = True
    if not bool(present.all()):
        missing = int((~present).nonzero()[0])
        raise SingularMatrixError(f"A is singular: row {missing} has no stored diagonal entry")
    zero = (values[..., on_diagonal] == 0).nonzero()
    if zero.numel():
        where = zero[0].tolist()
        index = int(row[on_diagonal][where[-1]])
        member = f" in batch member {where[0]}" if len(where) > 1 else ""
        raise SingularMatrixError(f"A is singular: its diagonal entry ({index}, {index}){member} is zero")


@overload
def triangular_solve(
    A: torch.Tensor,
    B: torch.Tensor,
    *,
    upper: bool,
    unit_diagonal: bool = ...,
    transpose: bool = ...,
    backend: str | SolverBackend | None = ...,
    method: str | None = ...,
    return_info: Literal[False] = ...,
    **options: Any,
) -> torch.Tensor: ...


@overload
def triangular_solve(
    A: torch.Tensor,
    B: torch.Tensor,
    *,
    upper: bool,
    unit_diagonal: bool = ...,
    transpose: bool = ...,
    backend: str | SolverBackend | None = ...,
    method: str | None = ...,
    return_info: Literal[True],
    **options: Any,
) -> tuple[torch.Tensor, SolveInfo]: ...


@outside_graphs
@quietly
def triangular_solve(
    A: torch.Tensor,
    B: torch.Tensor,
    *,
    upper: bool,
    unit_diagonal: bool = False,
    transpose: bool = False,
    backend: str | SolverBackend | None = None,
    method: str | None = None,
    return_info: bool = False,
    **options: Any,
) -> torch.Tensor | tuple[torch.Tensor, SolveInfo]:
    r"""Solve :math:`\operatorname{op}(A) X = B` for a sparse triangular ``A``, differentiably.

    :math:`\operatorname{op}(A)` is ``A`` or, with ``transpose=True``, ``Aᵀ``.
    The gradients follow the same rule as :func:`tsgu_core.solve` and are
    non-zero only at ``A``'s stored entries, which all lie in its triangle:

    .. math::

        \frac{\partial L}{\partial B} = \operatorname{op}(A)^{-\top} G, \qquad
        \frac{\partial L}{\partial A_{ij}} = -\langle S_i, X_j \rangle \;(\text{or } -\langle X_i, S_j \rangle
        \text{ when transposed}).

    Before any solve, ``A``'s stored entries are checked against ``upper``
    (:class:`~tsgu_core.errors.StructureError` otherwise), and its diagonal:
    with ``unit_diagonal=True`` no diagonal entry may be stored (it is taken
    as ones and gets no gradient); otherwise every diagonal entry must be
    stored and non-zero (:class:`~tsgu_core.errors.SingularMatrixError`).

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR ``(n, n)``, or a ``(b, n, n)`` batch sharing one pattern.
    B : Tensor
        ``(n,)`` or ``(n, k)`` (batched: ``(b, n)`` or ``(b, n, k)``).
    upper : bool
        Whether ``A`` is upper (``True``) or lower triangular.
    unit_diagonal : bool
        Take the diagonal as ones (it must not be stored).
    transpose : bool
        Solve with ``Aᵀ``.
    backend, method : str, optional
        Default: the fastest available triangular method for ``A``'s device
        (by the methods' declared priority; ``tsgu explain`` shows it).
    return_info : bool
        Also return the :class:`SolveInfo`.

    Examples
    --------
    >>> import torch
    >>> from tsgu_core import triangular_solve
    >>> L = torch.tensor([[2.0, 0.0], [1.0, 4.0]], dtype=torch.float64).to_sparse_csr()
    >>> triangular_solve(L, torch.tensor([2.0, 9.0], dtype=torch.float64), upper=False)
    tensor([1., 2.], dtype=torch.float64)
    """
    for name, flag in (("upper", upper), ("unit_diagonal", unit_diagonal), ("transpose", transpose)):
        if not isinstance(flag, bool):
            raise InvalidArgumentError(f"{name} must be a bool, got {flag!r}")
    request = SolveRequest.of(backend, method, options=options)
    grouped = split_by_pattern(A)  # a batch whose members have different patterns: group by group
    if grouped is not None:
        groups, flat = grouped
        check_rhs(B, A)

        def run(group: MemberGroup, values: torch.Tensor, rhs: torch.Tensor) -> tuple[torch.Tensor, SolveInfo]:
            matrix = group.with_values(values)
            try:
                return _triangular(matrix, values, rhs, request, upper, unit_diagonal, transpose)
            except SingularMatrixError as error:  # name the member by its index in A, not in its group
                members = group.members.tolist()
                message = re.sub(r"batch member (\d+)", lambda m: f"batch member {members[int(m[1])]}", str(error))
                raise SingularMatrixError(message) from error

        X, info = run_by_groups(groups, flat, B, run)
        return (X, info) if return_info else X
    detached, values = matrix_values(A, allow_batch=True)
    X, info = _triangular(detached, values, B, request, upper, unit_diagonal, transpose)
    return (X, info) if return_info else X


def _triangular(
    detached: torch.Tensor,
    values: torch.Tensor,
    B: torch.Tensor,
    request: SolveRequest,
    upper: bool,
    unit_diagonal: bool,
    transpose: bool,
) -> tuple[torch.Tensor, SolveInfo]:
    """The body of :func:`triangular_solve` for a 2-D ``A`` or a batch sharing one pattern (detached)."""
    check_rhs(B, detached)
    base = SparsePattern.of(detached)
    _check_triangular(base, values.detach(), upper=upper, unit_diagonal=unit_diagonal)
    pattern = UnitDiagonalPattern(base.row, base.col, base.n, base.crow) if unit_diagonal else base
    flags = {"upper": upper, "unit_diagonal": unit_diagonal}
    the_plan = plan(request, detached, operation="triangular", supplied=flags)
    Bk, restore = as_columns(B, detached.dim())
    X, info = execute(the_plan, lambda: the_plan.prepare(detached, pattern=pattern), values, Bk, transpose=transpose)
    return restore(X), info
