"""The one solve pipeline behind every public function.

``solve``, ``solve_values``, ``triangular_solve``, ``lstsq``, ``factorize``
and ``solve_distributed`` differ only in what they validate and how they
shape the problem. Everything after that is here, once:

1. :func:`plan` — for the caller's :class:`~tsgu_core.engine.request.SolveRequest`, choose the backend
   and method (:func:`tsgu_core.plugins.select.select`) and check and complete the options
   (:func:`tsgu_core.plugins.options.resolve_options`);
2. :func:`matrix_values` — ``A``'s values as the tensor the gradient flows to (:func:`pattern_matrix` for
   ``solve_values``, whose values come apart from ``A``; :func:`split_by_pattern` for a batch of several
   patterns);
3. :func:`execute` — right-hand sides as columns, the empty case, ``x0``,
   preparing the backend and the differentiable solve, and the
   :class:`~tsgu_core.plugins.info.SolveInfo`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from tsgu_core.engine.autograd import SparseSolveFunction, SparseValues
from tsgu_core.engine.prepared import PreparedSolve
from tsgu_core.engine.request import SolveRequest
from tsgu_core.errors import DeviceMismatchError, DtypeMismatchError, InvalidArgumentError, LayoutError, ShapeError
from tsgu_core.plugins.info import SolveInfo
from tsgu_core.plugins.options import check_on_failure, resolve_options
from tsgu_core.plugins.protocol import MethodSpec, SolveOptions, SolverBackend
from tsgu_core.plugins.select import Selection, select
from tsgu_core.sparse.batch import MemberGroup, as_shared_pattern_csr, group_by_pattern
from tsgu_core.sparse.pattern import SparsePattern
from tsgu_core.sparse.structure import check_assume, check_structure
from tsgu_core.sparse.validate import SOLVE_DTYPES, check_finite, check_matrix, check_values, check_x0

__all__ = [
    "Plan",
    "as_columns",
    "check_pattern_source",
    "check_pattern_values",
    "execute",
    "matrix_values",
    "pattern_matrix",
    "plan",
    "split_by_pattern",
]


@dataclass(frozen=True)
class Plan:
    """What a solve will use: the selection, the method and its completed options, the failure policy."""

    selection: Selection
    options: SolveOptions
    on_failure: str
    operation: str = "solve"

    @property
    def backend(self) -> SolverBackend[Any]:
        return self.selection.entry.backend

    @property
    def spec(self) -> MethodSpec:
        return self.backend.methods[self.selection.method]

    def prepare(
        self, A: torch.Tensor, *, pattern: Any = None, prepare: Callable[[torch.Tensor], Any] | None = None
    ) -> PreparedSolve:
        """The backend's prepared state for ``A``, after checking ``A`` against what is assumed of it."""
        if self.operation == "solve" and (self.spec.assumes != "general" or self.options.assume != "general"):
            own = pattern if isinstance(pattern, SparsePattern) else SparsePattern.of(A)  # distributed: collective
            values = A.values() if A.layout == torch.sparse_csr else A._values()
            check_structure(own, values, self.options.assume, what=f"assume={self.options.assume!r}")
            check_structure(own, values, self.spec.assumes, what=f"method {self.spec.name!r}", method=True)
            pattern = own  # read off A once
        return PreparedSolve.of(self.backend, self.spec, A, self.options, self.on_failure, pattern, prepare)


def plan(
    request: SolveRequest,
    A: torch.Tensor,
    *,
    n: int | None = None,
    operation: str = "solve",
    capability: str | None = None,
    supplied: Mapping[str, Any] | None = None,
) -> Plan:
    """Choose backend and method for ``request`` and ``A`` (its device), and check and complete the options.

    ``request`` is what the caller asked (its ``assume`` and ``on_failure`` are
    checked here). ``n`` is the size of the system actually solved (default
    ``A``'s column count), which sets the default ``maxiter``.
    ``capability="distributed"`` restricts the choice to backends that implement
    :class:`~tsgu_core.plugins.protocol.DistributedBackend`. ``x0`` is only
    type-checked here; the solve checks it against ``B``.
    """
    check_on_failure(request.on_failure)
    assume = check_assume(request.assume)
    selection = select(
        request.backend,
        A.device.type,
        request.method,
        operation,
        capability=capability,
        assume=assume,
        dtype=A.dtype,
        matrix=A,
    )
    spec = selection.entry.backend.methods[selection.method]
    size = A.shape[-1] if n is None else n
    solve_options = resolve_options(spec, selection.backend, request.options, size, A.dtype, supplied=supplied)
    return Plan(selection, dataclasses.replace(solve_options, assume=assume), request.on_failure, operation)


def matrix_values(
    A: torch.Tensor, *, allow_batch: bool = False, tall: bool = False, any_shape: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(detached A, values)`` for a checked sparse ``A``: the values are what the gradient flows to.

    An uncoalesced COO ``A`` is coalesced (differentiably; duplicates are
    summed, as in ``A``'s meaning). A batch ``(b, n, n)`` becomes a
    shared-pattern batched CSR with values ``(b, nnz)``. The values are
    checked to be finite.
    """
    check_matrix(A, allow_batch=allow_batch, tall=tall, any_shape=any_shape)
    if A.layout == torch.sparse_coo and not A.is_coalesced():
        A = A.coalesce()
    values = SparseValues.apply(A) if A.requires_grad else A.detach().values()
    detached = A.detach()
    if A.dim() == 3:
        detached = as_shared_pattern_csr(A)
        values = values.reshape(detached.values().shape)
    check_finite(A=values.detach())
    return detached, values


def check_pattern_source(A: Any) -> None:
    """``solve_values``' ``A``: a :class:`SparsePattern`, or a sparse tensor whose values are not used.

    A tensor must be a checked COO/CSR matrix or ``(b, n, n)`` batch that does not require grad (its values
    are ignored) and, for COO, is coalesced (the values follow its order). Checked once per call, at the front
    door; only the tensor's metadata and indices are read.
    """
    if isinstance(A, SparsePattern):
        return
    check_matrix(A, allow_batch=True)
    if A.requires_grad:
        raise InvalidArgumentError(
            "A must not require grad in solve_values: its values are not used; detach it (or pass SparsePattern.of(A))"
        )
    if A.layout == torch.sparse_coo and not A.is_coalesced():
        raise InvalidArgumentError("solve_values needs a coalesced COO A (values follow its order): use A.coalesce()")


def check_pattern_values(pattern: SparsePattern, values: Any) -> None:
    """``values`` for ``pattern``: dense ``(nnz,)`` or ``(b, nnz)``, a solvable dtype, the pattern's device.

    Reads no data (a tracer can run it). The one check of a values shape against a pattern: a wrong shape is a
    :class:`~tsgu_core.errors.ShapeError` on every path.
    """
    if not isinstance(values, torch.Tensor) or values.layout != torch.strided:
        raise LayoutError(f"values must be a dense torch tensor, got {type(values).__name__}")
    if values.dim() not in (1, 2) or values.shape[-1] != pattern.nnz:
        raise ShapeError(
            f"values must have shape ({pattern.nnz},) — or (b, {pattern.nnz}) for a batch — to match the pattern, "
            f"got {tuple(values.shape)}"
        )
    if values.dtype not in SOLVE_DTYPES:
        raise DtypeMismatchError(
            f"values have dtype {values.dtype}; tsgu solves in float32, float64, complex64 or complex128: convert "
            "with values.to(torch.float64) (or torch.complex128)"
        )
    if values.device != pattern.col.device:
        raise DeviceMismatchError(
            f"values are on {values.device} but the pattern's indices on {pattern.col.device}; move one with .to(...)"
        )


def pattern_matrix(A: torch.Tensor | SparsePattern, values: torch.Tensor) -> torch.Tensor:
    """A detached sparse matrix with ``A``'s pattern (checked by :func:`check_pattern_source`) and ``values``."""
    if isinstance(A, SparsePattern):
        check_pattern_values(A, values)
        if values.dim() == 2:
            crow, col = A.csr_indices()
            batch = values.shape[0]
            matrix = torch.sparse_csr_tensor(
                crow.expand(batch, -1), col.expand(batch, -1), values.detach(), (batch, A.rows, A.n),
                check_invariants=False,
            )  # fmt: skip
        else:
            matrix = A.to_csr(values.detach())
        check_matrix(matrix, "values", allow_batch=True)
        return matrix
    if A.dim() == 3:
        shared = as_shared_pattern_csr(A)
        check_values(values, shared)
        return torch.sparse_csr_tensor(
            shared.crow_indices(), shared.col_indices(), values.detach(), A.shape, check_invariants=False
        )
    check_values(values, A)
    if A.layout == torch.sparse_coo:
        return torch.sparse_coo_tensor(
            A._indices(), values.detach(), A.shape, is_coalesced=True, check_invariants=False
        )
    return torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), values.detach(), A.shape, check_invariants=False)


def split_by_pattern(A: Any, values: torch.Tensor | None = None) -> tuple[list[MemberGroup], torch.Tensor] | None:
    """A batch whose members have different patterns: its groups and its flat values; ``None`` otherwise.

    ``None`` for anything but a ``(b, n, n)`` COO/CSR tensor with at least two
    patterns — the caller's ordinary path then handles (and checks) it. For
    :func:`tsgu_core.solve` (``values=None``) the values are ``A``'s own,
    connected for autograd; for :func:`tsgu_core.solve_values` (``A`` checked
    by :func:`check_pattern_source`) they are checked against ``A``'s stored
    entries (``(total nnz,)`` or, for equal counts, ``(b, nnz)`` for COO;
    ``(b, nnz)`` for CSR).
    """
    if not isinstance(A, torch.Tensor) or A.dim() != 3 or A.layout not in (torch.sparse_coo, torch.sparse_csr):
        return None
    if values is None:  # solve's A (solve_values' was checked at its front door)
        check_matrix(A, allow_batch=True)
        if A.layout == torch.sparse_coo and not A.is_coalesced():
            A = A.coalesce()  # differentiable; duplicates are summed, as in A's meaning
    groups = group_by_pattern(A)
    if len(groups) == 1:
        return None
    if values is None:
        values = SparseValues.apply(A) if A.requires_grad else A.detach().values()
    else:
        if A.layout == torch.sparse_coo and isinstance(values, torch.Tensor) and values.dim() == 2:
            values = values.reshape(-1)  # (b, nnz) with equal counts: the same order
        check_values(values, A)
    check_finite(A=values.detach())
    return groups, values.reshape(-1)


def as_columns(B: torch.Tensor, matrix_dims: int) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """``B`` as columns ``(..., n, k)`` and the function that gives a result ``B``'s own shape back."""
    if B.dim() == matrix_dims:
        return B, lambda X: X
    return B.unsqueeze(-1), lambda X: X.squeeze(-1)


def execute(
    the_plan: Plan,
    prepared: PreparedSolve | Callable[[], PreparedSolve],
    values: torch.Tensor,
    Bk: torch.Tensor,
    *,
    transpose: bool = False,
    x0: Any = None,
    empty: bool | None = None,
) -> tuple[torch.Tensor, SolveInfo]:
    """Solve ``op(A) X = Bk`` differentiably for ``Bk`` of shape ``(..., n, k)``; return ``(X, info)``.

    ``prepared`` may be a function that prepares on demand: an empty problem
    (``n = 0`` or ``k = 0``) never reaches the backend, and its result is
    still connected to ``values`` and ``Bk`` for autograd. ``empty`` overrides
    that judgement where ``Bk`` holds only part of the rows (a distributed
    solve: a process with no rows still takes part in the collective solve).
    """
    check_finite(B=Bk.detach())
    checked_x0 = None
    if x0 is not None:
        checked_x0 = check_x0(x0, Bk)
        check_finite(x0=checked_x0)
    if (Bk.numel() == 0) if empty is None else empty:
        spec = the_plan.spec
        info = SolveInfo(
            backend=the_plan.selection.backend,
            method=spec.name,
            kind=spec.kind,
            transpose=transpose,
            iterations=None,
            residuals=(),
            thresholds=None,
            converged=True,
            wall_time=0.0,
            batch=Bk.shape[0] if Bk.dim() == 3 else None,
        )
        return Bk * 0 + values.sum() * 0, info
    if not isinstance(prepared, PreparedSolve):
        prepared = prepared()
    X, info = SparseSolveFunction.apply(values, Bk, prepared, transpose, checked_x0)
    return X, info
