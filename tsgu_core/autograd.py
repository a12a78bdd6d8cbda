"""THE differentiable sparse solve: one ``torch.autograd.Function`` for every backend.

For ``op(A) X = B`` with ``op(A) = A`` or ``Aᵀ`` and upstream gradient
``G = ∂L/∂X``:

* ``∂L/∂B = S`` with ``op(A)ᵀ S = G`` — one solve with the *other* transpose
  flag, asked of the same backend state (a direct backend reuses its
  factorisation);
* ``∂L/∂A`` at a stored entry ``(i, j)``: ``−⟨S_i, X_j⟩`` when
  ``op(A) = A`` and ``−⟨X_i, S_j⟩`` when ``op(A) = Aᵀ``.

The Function works on ``A``'s values (a dense 1-D tensor in ``A.values()``
order), so torch turns the values' gradient into a sparse gradient of ``A`` in
its own layout. The backward is written with this same Function and
differentiable index operations, so second derivatives are exact, not
approximated. The backend never sees ``ctx`` or a gradient.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from tsgu_core.convergence import assess
from tsgu_core.errors import BackendContractError, SecondDerivativeError
from tsgu_core.info import SolveInfo
from tsgu_core.pattern import SparsePattern
from tsgu_core.protocol import BackendReport, MethodSpec, SolveOptions, SolverBackend

__all__ = ["InfoSink", "PreparedSolve", "SparseSolveFunction", "SparseValues"]


@dataclass
class InfoSink:
    """Receives the :class:`SolveInfo` of one forward solve (and, later, of its backward)."""

    info: SolveInfo | None = None


@dataclass
class PreparedSolve:
    """A backend's prepared state for one ``A``, with everything the Function needs.

    The same prepared state serves the forward solve, the backward's transpose
    solve and, through :func:`tsgu_core.factorize`, any number of further solves.
    """

    backend: SolverBackend
    spec: MethodSpec
    options: SolveOptions
    state: Any
    pattern: SparsePattern
    on_failure: str
    prepare_time: float = 0.0
    member_states: list[Any] | None = None
    _prepare_time_reported: bool = field(default=False, repr=False)

    @classmethod
    def of(
        cls,
        backend: SolverBackend,
        spec: MethodSpec,
        A: torch.Tensor,
        options: SolveOptions,
        on_failure: str,
        pattern: SparsePattern | None = None,
    ) -> PreparedSolve:
        """Prepare ``A`` (detached; a batch is a shared-pattern CSR ``(b, n, n)``) with ``backend``.

        A batch goes to ``prepare`` whole when the method is ``batched``, else
        member by member. ``pattern`` replaces the pattern read off ``A``
        (e.g. one with an implicit unit diagonal).
        """
        start = time.perf_counter()
        override, members = pattern, None
        if A.dim() == 3:
            crow, col = A.crow_indices()[0], A.col_indices()[0]
            n = A.shape[-1]

            def member(values: torch.Tensor) -> torch.Tensor:
                return torch.sparse_csr_tensor(crow, col, values, (n, n), check_invariants=False)

            pattern = SparsePattern.of(member(A.values()[0]))
            if spec.batched:
                state = backend.prepare(A, spec.name, options)
            else:
                state = None
                members = [backend.prepare(member(values), spec.name, options) for values in A.values()]
        else:
            pattern = SparsePattern.of(A)
            state = backend.prepare(A, spec.name, options)
        return cls(backend, spec, options, state, override or pattern, on_failure, time.perf_counter() - start, members)

    def _backend_solve(
        self, B: torch.Tensor, transpose: bool, x0: torch.Tensor | None
    ) -> tuple[torch.Tensor, BackendReport]:
        if self.member_states is None:
            return self.backend.solve(self.state, B, transpose=transpose, x0=x0)
        results = [
            self.backend.solve(state, B[i], transpose=transpose, x0=None if x0 is None else x0[i])
            for i, state in enumerate(self.member_states)
        ]
        reports = [report for _, report in results]
        iterations = [r.iterations for r in reports if r.iterations is not None]
        verdicts = [r.converged for r in reports]
        report = BackendReport(
            iterations=max(iterations) if iterations else None,
            converged=None if None in verdicts else all(verdicts),
            message="; ".join(sorted({r.message for r in reports if r.message})),
        )
        return torch.stack([X for X, _ in results]), report

    def run(
        self, values: torch.Tensor, B: torch.Tensor, transpose: bool, x0: torch.Tensor | None
    ) -> tuple[torch.Tensor, SolveInfo]:
        """One backend solve followed by the core's residual check."""
        start = time.perf_counter()
        X, report = self._backend_solve(B, transpose, x0)
        elapsed = time.perf_counter() - start
        if not isinstance(X, torch.Tensor) or X.shape != B.shape or X.dtype != B.dtype or X.device != B.device:
            got = f"{tuple(X.shape)} {X.dtype} on {X.device}" if isinstance(X, torch.Tensor) else type(X).__name__
            raise BackendContractError(
                f"backend {self.backend.name!r} returned {got} for B of {tuple(B.shape)} {B.dtype} on {B.device}; "
                "solve() must return X shaped like B, with its dtype and device"
            )
        if not self._prepare_time_reported:
            elapsed += self.prepare_time
            self._prepare_time_reported = True
        info = assess(
            pattern=self.pattern,
            values=values,
            B=B,
            X=X,
            transpose=transpose,
            backend=self.backend.name,
            spec=self.spec,
            options=self.options,
            report=report,
            on_failure=self.on_failure,
            wall_time=elapsed,
        )
        return X, info


class SparseSolveFunction(torch.autograd.Function):
    """``X = op(A)⁻¹ B`` on ``A``'s values; see the module docstring for the math.

    ``apply(values, B, prepared, transpose, x0, sink)`` with ``B`` of shape
    ``(n, k)`` (or ``(b, n, k)`` with ``values`` ``(b, nnz)`` for a batch);
    the forward's :class:`SolveInfo` goes to ``sink.info`` and the backward's
    transpose solve to ``sink.info.backward``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        values: torch.Tensor,
        B: torch.Tensor,
        prepared: PreparedSolve,
        transpose: bool,
        x0: torch.Tensor | None,
        sink: InfoSink,
    ) -> torch.Tensor:
        X, sink.info = prepared.run(values.detach(), B.detach().contiguous(), transpose, x0)
        return X

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        values, _, prepared, transpose, _, sink = inputs
        ctx.prepared = prepared
        ctx.transpose = transpose
        ctx.sink = sink
        ctx.save_for_backward(values, output)

    @staticmethod
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        values, X = ctx.saved_tensors
        need_values, need_B = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_values or need_B):
            return None, None, None, None, None, None
        prepared: PreparedSolve = ctx.prepared
        inner = InfoSink()
        S = SparseSolveFunction.apply(values, G, prepared, not ctx.transpose, None, inner)
        if ctx.sink.info is not None:
            ctx.sink.info.backward = inner.info
        grad_values = None
        if need_values:
            pattern = prepared.pattern
            grad_values = -(pattern.outer_at_entries(X, S) if ctx.transpose else pattern.outer_at_entries(S, X))
        return grad_values, (S if need_B else None), None, None, None, None


class SparseValues(torch.autograd.Function):
    """``A.values()`` whose backward builds ``∂L/∂A`` in ``A``'s layout, differentiably.

    torch's own ``values()`` backward drops the graph under ``create_graph=True``
    (its gradient has no ``grad_fn``), which would make second derivatives
    with respect to ``A`` silently zero. This Function keeps them exact for a
    leaf ``A``. For a non-leaf ``A`` (built by a sparse constructor from
    values), torch's constructor backward loses higher derivatives, so a
    higher-order pass raises :class:`~tsgu_core.errors.SecondDerivativeError`
    instead of returning a wrong number.
    """

    @staticmethod
    def forward(A: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return A.values() if A.layout == torch.sparse_csr else A._values()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        (A,) = inputs
        ctx.pattern_of = A.detach()
        ctx.is_leaf = A.is_leaf

    @staticmethod
    def backward(ctx: Any, grad_values: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        A = ctx.pattern_of
        if torch.is_grad_enabled() and grad_values.requires_grad and not ctx.is_leaf:
            raise SecondDerivativeError(
                "second derivatives with respect to a sparse A that was built from other tensors are lost by "
                "torch's sparse constructors; pass A's values explicitly with "
                "tsgu_core.solve_values(A_pattern, values, B) (exact to any order), or detach A"
            )
        if A.layout == torch.sparse_csr:
            return torch.sparse_csr_tensor(
                A.crow_indices(), A.col_indices(), grad_values, A.shape, check_invariants=False
            )
        return torch.sparse_coo_tensor(A._indices(), grad_values, A.shape, is_coalesced=True, check_invariants=False)
