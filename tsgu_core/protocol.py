"""The contract between the tsgu core and a solver backend.

This module is the only thing a backend author implements against. A backend
is any object with the attributes and the three methods of
:class:`SolverBackend`; it does not subclass anything.

Rules of the contract
---------------------
* ``prepare(A, method, options)`` is called once per forward solve. ``A`` is a
  detached torch sparse tensor, COO (coalesced) or CSR, 2-D and square, already
  validated: finite, float32/float64, indices int32/int64, on a device the
  backend declared. Convert, factorise, build preconditioners here. Only a
  method declared ``batched`` ever receives a batch: a CSR ``A`` of shape
  ``(b, n, n)`` whose members share one pattern, and ``B`` of shape ``(b, n, k)``.
* ``solve(state, B, *, transpose, x0=None)`` solves ``A X = B`` (or
  ``Aᵀ X = B`` when ``transpose=True``) for a dense ``B`` of shape ``(n, k)``
  with ``k ≥ 1`` and returns ``(X, report)`` with ``X`` of ``B``'s shape, dtype
  and device. It is called for the forward solve and again, with
  ``transpose=True`` and the same state, in the backward pass: a direct
  backend reuses its factorisation, an iterative backend uses ``Aᵀ``.
* ``options`` holds only options the core has already checked against the
  method's :class:`MethodSpec`; the common iterative options are resolved to
  numbers. A backend never receives a gradient, ``ctx`` or a vector ``B``.
* The core checks the true residual of every iterative solve and raises on
  failure; a backend only reports what it knows. A direct backend raises
  :class:`tsgu_core.errors.SingularMatrixError` when its factorisation fails.
* ``is_available(device_type)`` never raises and never imports a heavy
  library just to answer (check ``importlib.util.find_spec`` first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch

__all__ = [
    "COMMON_ITERATIVE_OPTIONS",
    "Assumption",
    "Availability",
    "BackendReport",
    "MethodKind",
    "MethodSpec",
    "Operation",
    "SolveOptions",
    "SolverBackend",
]

Assumption = Literal["general", "symmetric", "spd"]
"""What a method assumes of ``A``: any invertible matrix, symmetric, or SPD."""

MethodKind = Literal["direct", "iterative"]

Operation = Literal["solve", "triangular", "lstsq"]
"""What a method computes (see :class:`MethodSpec`)."""

COMMON_ITERATIVE_OPTIONS: Mapping[str, str] = {
    "rtol": "relative tolerance: stop when ‖b − A x‖ ≤ max(rtol·‖b‖, atol) "
    "(default 1e-5 for float32, 1e-8 for float64)",
    "atol": "absolute tolerance (default 0.0)",
    "maxiter": "maximum number of iterations (default 10·n)",
    "x0": "initial guess for the forward solve, shaped like B (default zeros)",
}
"""Options every iterative method accepts; the core resolves their defaults."""


@dataclass(frozen=True)
class MethodSpec:
    """What one solve method is and what it accepts.

    Parameters
    ----------
    name : str
        The name users pass as ``method=``.
    kind : {"direct", "iterative"}
        Direct methods take no tolerance; iterative ones take
        :data:`COMMON_ITERATIVE_OPTIONS` and have their residual checked.
    assumes : {"general", "symmetric", "spd"}
        What the method requires of ``A``. Only ``"general"`` methods may be
        a backend's default.
    options : mapping of str to str
        Method-specific options beyond the common ones, each with a one-line
        description (shown in errors and ``tsgu info``).
    summary : str
        One line describing the method.
    batched : bool
        ``prepare`` accepts a batched CSR ``A`` of shape ``(b, n, n)`` whose
        members share one pattern, and ``solve`` a ``B`` of shape
        ``(b, n, k)``, solving every member at once. Without it the core
        prepares and solves the members one by one.
    operation : {"solve", "triangular", "lstsq"}
        ``"solve"`` (default): a square ``A``; used by :func:`tsgu_core.solve`.
        ``"triangular"``: a square triangular ``A``, used by
        :func:`tsgu_core.triangular_solve`; ``options.extra`` always holds
        ``upper`` and ``unit_diagonal`` (bools; with ``unit_diagonal`` the
        diagonal is not stored and is taken as ones). ``"lstsq"``: a tall
        ``A`` of shape ``(m, n)``, used by :func:`tsgu_core.lstsq`; ``solve``
        receives ``Z = [c; d]`` of shape ``(m + n, k)`` and returns ``[r; x]``
        solving the augmented system ``[[I, A], [Aᵀ, 0]] [r; x] = [c; d]``
        (symmetric, so ``transpose`` changes nothing): ``x`` is the least-squares
        solution of ``A x ≈ c`` when ``d = 0``.
    priority : int or None
        Ranks this method against other backends' methods of the same
        operation when none is named (default: the backend's priority).
        For ``"solve"`` the backend's priority and default method decide.
    """

    name: str
    kind: MethodKind
    assumes: Assumption
    options: Mapping[str, str] = field(default_factory=dict)
    summary: str = ""
    batched: bool = False
    operation: Operation = "solve"
    priority: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("direct", "iterative"):
            raise ValueError(f"MethodSpec {self.name!r}: kind must be 'direct' or 'iterative', got {self.kind!r}")
        if self.assumes not in ("general", "symmetric", "spd"):
            raise ValueError(
                f"MethodSpec {self.name!r}: assumes must be 'general', 'symmetric' or 'spd', got {self.assumes!r}"
            )
        if self.operation not in ("solve", "triangular", "lstsq"):
            raise ValueError(
                f"MethodSpec {self.name!r}: operation must be 'solve', 'triangular' or 'lstsq', got {self.operation!r}"
            )
        clash = set(self.options) & set(COMMON_ITERATIVE_OPTIONS)
        if clash:
            raise ValueError(
                f"MethodSpec {self.name!r}: options {sorted(clash)} are common options; do not redeclare them"
            )

    @property
    def accepted_options(self) -> tuple[str, ...]:
        """Every option name this method accepts, common ones included."""
        common = tuple(COMMON_ITERATIVE_OPTIONS) if self.kind == "iterative" else ()
        return common + tuple(self.options)


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run on a device type, and why not.

    Truthy when available. ``install`` names the command that fixes a missing
    dependency, where one exists.
    """

    available: bool
    reason: str = ""
    install: str | None = None

    def __bool__(self) -> bool:
        return self.available

    @classmethod
    def yes(cls) -> Availability:
        return cls(True, "available")

    @classmethod
    def no(cls, reason: str, install: str | None = None) -> Availability:
        return cls(False, reason, install)


@dataclass(frozen=True)
class SolveOptions:
    """Options handed to :meth:`SolverBackend.prepare`, already validated.

    For an iterative method ``rtol``, ``atol`` and ``maxiter`` are resolved
    numbers; for a direct method they are ``None``. ``extra`` holds the
    method-specific options the user passed (only names the method declared).
    """

    rtol: float | None = None
    atol: float | None = None
    maxiter: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendReport:
    """What a backend knows about one solve it did.

    Parameters
    ----------
    iterations : int or None
        Iterations used (the largest over columns); ``None`` for direct methods.
    converged : bool or None
        The backend's own verdict, if it has one (JAX has none). The core's
        true-residual check decides regardless.
    message : str
        Anything worth showing a user (e.g. SciPy's ``info`` code).
    """

    iterations: int | None = None
    converged: bool | None = None
    message: str = ""


@runtime_checkable
class SolverBackend(Protocol):
    """A solver backend: what a plugin registers.

    Attributes
    ----------
    name : str
        Unique name users pass as ``backend=``.
    device_types : tuple of str
        Torch device types served, e.g. ``("cpu",)`` or ``("cpu", "cuda")``.
    methods : mapping of str to MethodSpec
        The methods offered.
    default_method : str
        Used when ``method=None``; must be a ``"general"`` method.
    priority : int
        Ranks backends for ``backend=None`` on a device: highest available
        wins, ties broken by name. Built-ins: scipy and cupy 100, torch 50,
        jax 20.
    """

    @property
    def name(self) -> str: ...

    @property
    def device_types(self) -> tuple[str, ...]: ...

    @property
    def methods(self) -> Mapping[str, MethodSpec]: ...

    @property
    def default_method(self) -> str: ...

    @property
    def priority(self) -> int: ...

    def is_available(self, device_type: str) -> Availability:
        """Whether the backend can run on ``device_type`` now; never raises."""
        ...

    def prepare(self, A: torch.Tensor, method: str, options: SolveOptions) -> Any:
        """Convert/factorise ``A`` once; return an opaque state."""
        ...

    def solve(
        self,
        state: Any,
        B: torch.Tensor,
        *,
        transpose: bool,
        x0: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, BackendReport]:
        """Solve ``A X = B`` (or ``Aᵀ X = B``) for ``B`` of shape ``(n, k)``."""
        ...
