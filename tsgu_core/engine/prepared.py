"""A backend's prepared state for one ``A``, and the one place the core calls a backend.

:class:`PreparedSolve` holds what a solve needs besides the right-hand side:
the backend and method, the checked options, the backend's state and the
pattern the core's own products run on. Every call into a plugin —
``prepare`` and ``solve`` — happens here, so the contract is enforced once:

* an exception a plugin did not mean (anything but a :class:`~tsgu_core.errors.TsguError`)
  becomes :class:`~tsgu_core.errors.BackendError` naming backend and method,
  with the original chained; ``KeyboardInterrupt`` and ``SystemExit`` pass untouched;
* a ``solve`` that does not return ``(X, BackendReport)`` with ``X`` shaped
  like ``B`` (dtype and device too) is a :class:`~tsgu_core.errors.BackendContractError`;
* every solve, forward or transposed, is judged by
  :func:`tsgu_core.engine.convergence.assess`.

The same prepared state serves the forward solve, the backward's transpose
solve and, through :func:`tsgu_core.factorize`, any number of further solves —
from any number of threads. Backends' states change inside ``solve`` (PETSc
scales its matrix in place, PARDISO sets the transposed mode on its handle,
cuDSS copies ``B`` into one buffer, SuperLU may factorize again), so the core
never lets two threads into ``solve`` with one prepared state at once: each
:class:`PreparedSolve` has its own lock, held around the backend's ``solve``
(not around the residual check or the gradient). Per-call parameters would
not be enough: PARDISO's solve phase, run twice at once on one handle with
an ``iparm`` of its own per call, still returned wrong solutions (measured:
8 threads sharing a handle, ~840 solves, a wrong one in 2 of 3 runs; the
residual check caught them). A backend whose ``solve`` is safe to run
concurrently on one state says so with ``thread_safe = True``
(:func:`runs_concurrently`); its solves are not serialized. Different
prepared states never wait for each other.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from tsgu_core.engine.convergence import assess
from tsgu_core.errors import BackendContractError, BackendError, TsguError
from tsgu_core.plugins.info import SolveInfo
from tsgu_core.plugins.kit.reports import merge_reports
from tsgu_core.plugins.protocol import BackendReport, MethodSpec, SolveOptions, SolverBackend
from tsgu_core.sparse.pattern import SparsePattern

__all__ = ["PreparedSolve", "runs_concurrently"]

T = TypeVar("T")


def _call(backend: SolverBackend[Any], spec: MethodSpec, what: str, function: Callable[[], T]) -> T:
    """``function()``, with an unexpected exception from the plugin wrapped in :class:`BackendError`."""
    try:
        return function()
    except TsguError:
        raise
    except Exception as error:
        raise BackendError(
            f"backend {backend.name!r}, method {spec.name!r}: {what} raised {type(error).__name__}: {error}",
            backend=backend.name,
            method=spec.name,
        ) from error


def runs_concurrently(backend: SolverBackend[Any]) -> bool:
    """Whether ``backend`` declared its ``solve`` safe to call from several threads at once on one state.

    Only ``thread_safe = True`` (the bool, not any truthy value) counts; an
    undeclared backend is called one thread at a time per prepared state.

    >>> from tsgu_core.testing import DenseBackend
    >>> runs_concurrently(DenseBackend())
    False
    """
    return getattr(backend, "thread_safe", False) is True


@dataclass
class PreparedSolve:
    """A backend's prepared state for one ``A``, with everything a solve of it needs.

    Attributes
    ----------
    backend, spec, options
        Who solves, with which method and options.
    state
        What the backend's ``prepare`` returned (``member_states`` instead for
        a batch prepared member by member).
    pattern : SparsePattern
        What the core's residual check and gradient run on.
    on_failure : str
        The convergence policy of every solve with this state.
    prepare_time : float
        Seconds spent in ``prepare``; counted into the first solve's wall time.

    Notes
    -----
    Safe to share between threads: the backend's ``solve`` runs under this
    state's lock unless the backend declares ``thread_safe = True``
    (see the module docstring).
    """

    backend: SolverBackend[Any]
    spec: MethodSpec
    options: SolveOptions
    state: Any
    pattern: SparsePattern
    on_failure: str
    prepare_time: float = 0.0
    member_states: list[Any] | None = None
    _prepare_time_reported: bool = field(default=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @classmethod
    def of(
        cls,
        backend: SolverBackend[Any],
        spec: MethodSpec,
        A: torch.Tensor,
        options: SolveOptions,
        on_failure: str,
        pattern: SparsePattern | None = None,
        prepare: Callable[[torch.Tensor], Any] | None = None,
    ) -> PreparedSolve:
        """Prepare ``A`` (detached; a batch is a shared-pattern CSR ``(b, n, n)``) with ``backend``.

        A batch goes to ``prepare`` whole when the method is ``batched``, else
        member by member. ``pattern`` replaces the pattern read off ``A``
        (e.g. one with an implicit unit diagonal); ``prepare`` replaces the
        backend's ``prepare`` (e.g. its distributed variant).
        """
        start = time.perf_counter()
        members = None

        def prepare_one(matrix: torch.Tensor) -> Any:
            if prepare is not None:
                return _call(backend, spec, "prepare_distributed()", lambda: prepare(matrix))
            return _call(backend, spec, "prepare()", lambda: backend.prepare(matrix, spec.name, options))

        if pattern is None:
            pattern = SparsePattern.of(A)
        if A.dim() == 3 and not spec.batched:
            state = None
            members = [prepare_one(pattern.to_csr(values)) for values in A.values()]  # a batch's own pattern
        else:
            state = prepare_one(A)
        elapsed = time.perf_counter() - start
        return cls(backend, spec, options, state, pattern, on_failure, elapsed, members)

    def _backend_solve(
        self, B: torch.Tensor, transpose: bool, x0: torch.Tensor | None
    ) -> tuple[torch.Tensor, BackendReport]:
        def one(state: Any, rhs: torch.Tensor, guess: torch.Tensor | None) -> tuple[torch.Tensor, BackendReport]:
            result = _call(
                self.backend,
                self.spec,
                "solve()" if not transpose else "solve(transpose=True)",
                lambda: self.backend.solve(state, rhs, transpose=transpose, x0=guess),
            )
            return self._checked(result, rhs)

        # re-entrant: a backend's solve may call back into the core with this state (a preconditioner, say)
        with contextlib.nullcontext() if runs_concurrently(self.backend) else self._lock:
            if self.member_states is None:
                return one(self.state, B, x0)
            results = [one(state, B[i], None if x0 is None else x0[i]) for i, state in enumerate(self.member_states)]
        return torch.stack([X for X, _ in results]), merge_reports(report for _, report in results)

    def capability(self, what: str, name: str, *args: Any) -> list[Any]:
        """The backend's capability method ``name`` (e.g. ``"logdet"``) on each state: one result, or one per member.

        Called like a solve: an unexpected exception becomes :class:`BackendError` naming ``what``, and the
        state's lock is held unless the backend declared itself thread-safe (a factorization shared by threads
        serves a log-determinant or a selected inverse while others solve with it).
        """
        function = getattr(self.backend, name)
        states = [self.state] if self.member_states is None else self.member_states
        with contextlib.nullcontext() if runs_concurrently(self.backend) else self._lock:
            return [_call(self.backend, self.spec, what, functools.partial(function, s, *args)) for s in states]

    def _checked(self, result: Any, B: torch.Tensor) -> tuple[torch.Tensor, BackendReport]:
        """``result`` if it is ``(X, BackendReport)`` with ``X`` like ``B``, else :class:`BackendContractError`."""
        X, report = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
        if not isinstance(report, BackendReport):
            raise BackendContractError(
                f"backend {self.backend.name!r}, method {self.spec.name!r}: solve() returned "
                f"{type(result).__name__}; it must return (X, BackendReport)"
            )
        if not isinstance(X, torch.Tensor) or X.shape != B.shape or X.dtype != B.dtype or X.device != B.device:
            got = f"{tuple(X.shape)} {X.dtype} on {X.device}" if isinstance(X, torch.Tensor) else type(X).__name__
            raise BackendContractError(
                f"backend {self.backend.name!r} returned {got} for B of {tuple(B.shape)} {B.dtype} on {B.device}; "
                "solve() must return X shaped like B, with its dtype and device"
            )
        return X, report

    def run(
        self, values: torch.Tensor, B: torch.Tensor, transpose: bool, x0: torch.Tensor | None
    ) -> tuple[torch.Tensor, SolveInfo]:
        """One backend solve of ``op(A) X = B`` followed by the core's residual check."""
        start = time.perf_counter()
        X, report = self._backend_solve(B, transpose, x0)
        elapsed = time.perf_counter() - start
        with self._lock:  # only the first solve, whichever thread runs it, counts the preparation
            first, self._prepare_time_reported = not self._prepare_time_reported, True
        if first:
            elapsed += self.prepare_time
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
