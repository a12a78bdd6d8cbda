"""The one solve pipeline behind every public function.

``solve``, ``solve_values``, ``triangular_solve``, ``lstsq``, ``factorize``
and ``solve_distributed`` differ only in what they validate and how they
shape the problem. Everything after that is here, once:

1. :func:`plan` — choose the backend and method (:func:`tsgu_core.plugins.select.select`)
   and check and complete the options (:func:`tsgu_core.plugins.options.resolve_options`);
2. :func:`matrix_values` — ``A``'s values as the tensor the gradient flows to;
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
from tsgu_core.sparse.batch import as_shared_pattern_csr
from tsgu_core.plugins.info import SolveInfo
from tsgu_core.plugins.options import check_on_failure, resolve_options
from tsgu_core.sparse.pattern import SparsePattern
from tsgu_core.engine.prepared import PreparedSolve
from tsgu_core.plugins.protocol import MethodSpec, SolveOptions, SolverBackend
from tsgu_core.plugins.select import Selection, select
from tsgu_core.sparse.structure import check_assume, check_structure
from tsgu_core.sparse.validate import check_finite, check_matrix, check_x0

__all__ = ["Plan", "as_columns", "execute", "matrix_values", "plan"]


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
    backend: str | SolverBackend[Any] | None,
    method: str | None,
    A: torch.Tensor,
    options: Mapping[str, Any],
    *,
    n: int | None = None,
    on_failure: str = "raise",
    operation: str = "solve",
    capability: str | None = None,
    supplied: Mapping[str, Any] | None = None,
    assume: str = "general",
) -> Plan:
    """Choose backend and method for ``A`` (its device), and check and complete the options.

    ``n`` is the size of the system actually solved (default ``A``'s column
    count), which sets the default ``maxiter``. ``capability="distributed"``
    restricts the choice to backends that implement
    :class:`~tsgu_core.plugins.protocol.DistributedBackend`. ``x0`` is only
    type-checked here; the solve checks it against ``B``.
    """
    check_on_failure(on_failure)
    check_assume(assume)
    selection = select(
        backend, A.device.type, method, operation, capability=capability, assume=assume, dtype=A.dtype, matrix=A
    )
    spec = selection.entry.backend.methods[selection.method]
    size = A.shape[-1] if n is None else n
    solve_options = resolve_options(spec, selection.backend, options, size, A.dtype, supplied=supplied)
    return Plan(selection, dataclasses.replace(solve_options, assume=assume), on_failure, operation)


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
