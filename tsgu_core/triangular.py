"""Sparse triangular solves: :func:`triangular_solve`."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, overload

import torch

from tsgu_core.autograd import InfoSink, PreparedSolve, SparseSolveFunction, SparseValues
from tsgu_core.batch import as_shared_pattern_csr, group_by_pattern, run_by_groups
from tsgu_core.errors import SingularMatrixError, StructureError
from tsgu_core.info import SolveInfo
from tsgu_core.pattern import SparsePattern, UnitDiagonalPattern
from tsgu_core.protocol import SolverBackend
from tsgu_core.select import select
from tsgu_core.validate import check_finite, check_matrix, check_rhs, resolve_method_options

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
        Sparse COO or CSR ``(n, n)``, or a ``(b, n, n)`` batch (members may
        have different patterns: those sharing one are solved together).
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
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    check_matrix(A, allow_batch=True)
    if A.layout == torch.sparse_coo and not A.is_coalesced():
        A = A.coalesce()
    values = SparseValues.apply(A) if A.requires_grad else A.detach().values()
    flags = {"upper": upper, "unit_diagonal": unit_diagonal, "transpose": transpose}
    if A.dim() == 3:
        check_rhs(B, A)
        groups = group_by_pattern(A)
        if len(groups) > 1:  # members with different patterns: group by group
            solved = run_by_groups(
                groups,
                values,
                B,
                lambda g, v, rhs: _triangular(g.A, v, rhs, backend=backend, method=method, **flags, **options),
            )
            return solved if return_info else solved[0]
        A, values = groups[0].A, groups[0].values_of(values)
    return _triangular(A, values, B, backend=backend, method=method, return_info=return_info, **flags, **options)


def _triangular(
    A: torch.Tensor,
    values: torch.Tensor,
    B: torch.Tensor,
    *,
    upper: bool,
    unit_diagonal: bool,
    transpose: bool,
    backend: str | SolverBackend | None,
    method: str | None,
    return_info: bool = True,
    **options: Any,
) -> Any:
    """The body of :func:`triangular_solve` for a 2-D ``A`` or a batch sharing one pattern."""
    if A.dim() == 3:
        detached = as_shared_pattern_csr(A)
        n = A.shape[-1]
        first = torch.sparse_csr_tensor(
            detached.crow_indices()[0], detached.col_indices()[0], detached.values()[0], (n, n), check_invariants=False
        )
        base = SparsePattern.of(first)
    else:
        detached = A.detach()
        base = SparsePattern.of(detached)
    check_rhs(B, detached)
    check_finite(A=values.detach(), B=B.detach())
    _check_triangular(base, values.detach(), upper=upper, unit_diagonal=unit_diagonal)
    pattern = UnitDiagonalPattern(base.row, base.col, base.n, base.crow) if unit_diagonal else base

    selection = select(backend, A.device.type, method, "triangular")
    chosen = selection.entry.backend
    spec = chosen.methods[selection.method]
    solve_options = resolve_method_options(spec, chosen.name, options, A.shape[-1], A.dtype)
    solve_options = dataclasses.replace(
        solve_options, extra={**solve_options.extra, "upper": upper, "unit_diagonal": unit_diagonal}
    )
    Bk = B if B.dim() == detached.dim() else B.unsqueeze(-1)
    if Bk.numel() == 0:
        X = Bk * 0 + values.sum() * 0
        info = SolveInfo(chosen.name, spec.name, spec.kind, transpose, None, (), None, True, 0.0)
    else:
        prepared = PreparedSolve.of(chosen, spec, detached, solve_options, "raise", pattern=pattern)
        sink = InfoSink()
        X = SparseSolveFunction.apply(values, Bk, prepared, transpose, None, sink)
        assert sink.info is not None
        info = sink.info
    X = X if B.dim() == detached.dim() else X.squeeze(-1)
    return (X, info) if return_info else X
