"""The contract between the tsgu core and a solver backend.

This module is the only thing a backend author implements against. A backend
is any object with the attributes and the three methods of
:class:`SolverBackend`; it does not subclass anything.

Rules of the contract
---------------------
* ``prepare(A, method, options)`` is called once per forward solve. ``A`` is a
  detached torch sparse tensor, COO (coalesced) or CSR, 2-D and square, already
  validated: finite, float32/float64 (complex64/complex128 only for a method
  declared ``complex=True``), indices int32/int64 and in bounds, on a
  device the backend declared. Convert, factorize, build preconditioners here.
  Only a method declared ``batched`` ever receives a batch: a CSR ``A`` of shape
  ``(b, n, n)`` whose members share one pattern, and ``B`` of shape ``(b, n, k)``.
* ``solve(state, B, *, transpose, x0=None)`` solves ``A X = B`` (or
  ``Aᵀ X = B`` when ``transpose=True``) for a dense ``B`` of shape ``(n, k)``
  with ``k ≥ 1`` and returns ``(X, report)`` with ``X`` of ``B``'s shape, dtype
  and device. It is called for the forward solve and again, with
  ``transpose=True`` and the same state, in the backward pass: a direct
  backend reuses its factorization, an iterative backend uses ``Aᵀ``.
  For a complex ``A``, ``transpose=True`` means the *plain* transpose ``Aᵀ``,
  never the conjugate transpose: the core conjugates around it for the
  backward's ``A⁻ᴴ G = conj(A⁻ᵀ conj(G))`` (:func:`tsgu_core.engine.autograd.adjoint_solve`).
* ``options`` is a :class:`SolveOptions`: every option the method declares
  (:class:`Option`), checked and with its default filled in, and for iterative
  methods the resolved ``rtol``, ``atol`` and ``maxiter``. A backend never
  re-parses options and never receives a gradient, ``ctx`` or a vector ``B``.
* The core checks the true residual of every solve and raises on failure; a
  backend only reports what it knows. A direct backend raises
  :class:`tsgu_core.errors.SingularMatrixError` when its factorization fails.
  Any other exception escaping ``prepare``/``solve`` reaches the user wrapped
  in :class:`tsgu_core.errors.BackendError`, naming backend and method.
* Threads: the core never calls ``solve`` from two threads at once with the
  same state — it holds a lock of the prepared state around the call — so
  ``solve`` may change its state (a scaling, a mode flag, a shared buffer, a
  lazily built transpose). A backend whose ``solve`` stands concurrent calls
  on one state (it writes nothing shared, or locks what it writes) declares
  ``thread_safe = True`` and is then called concurrently. Different states
  are used from different threads at the same time (``prepare`` and ``solve``
  of other matrices run in parallel): module-level state needs its own lock.
* ``is_available(device_type)`` never raises and never imports a heavy
  library just to answer (check ``importlib.util.find_spec`` first).
* A backend that can solve systems whose rows are spread over MPI processes
  also implements :class:`DistributedBackend` (one more method).
* A backend whose prepared states (of methods declared
  ``selected_inversion=True``) can give ``log|det A|`` and entries of ``A⁻¹``
  also implements :class:`SelectedInversionBackend` (two more methods).
* A backend whose prepared states (of methods declared ``sampling=True``)
  can draw Gaussian samples with precision ``A`` also implements
  :class:`SamplingBackend` (one more method).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

import torch

from tsgu_core.errors import BackendContractError, InvalidOptionError

__all__ = [
    "COMMON_ITERATIVE_OPTIONS",
    "MAXITER_LIMIT",
    "Assumption",
    "Availability",
    "BackendReport",
    "DistributedBackend",
    "MethodKind",
    "MethodSpec",
    "Operation",
    "Option",
    "SamplingBackend",
    "SelectedInversionBackend",
    "SolveOptions",
    "SolverBackend",
]

Assumption = Literal["general", "symmetric", "spd"]
"""What a method assumes of ``A``: any invertible matrix, symmetric, or SPD."""

MethodKind = Literal["direct", "iterative"]

Operation = Literal["solve", "triangular", "lstsq"]
"""What a method computes (see :class:`MethodSpec`)."""

_NO_CHOICES: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Option:
    """One option a method accepts: its meaning, type, default and allowed values.

    The core checks every option a user passes against its declaration
    (:meth:`check`) and fills in the defaults, so a backend reads
    ``options["name"]`` and never parses options by hand. ``tsgu info`` and
    :class:`~tsgu_core.errors.UnknownOptionError` print the declarations.

    Parameters
    ----------
    doc : str
        One line describing the option.
    type : type or tuple of types
        What a value must be. ``int`` accepts any integral number (NumPy's
        included) and ``float`` any real number, both returned as Python
        numbers; ``bool`` is never taken for a number. ``object`` accepts
        anything (an operator, a callable, a dict).
    default : object
        The value used when the option is not passed. ``None`` is always
        accepted when it is the default ("not set").
    choices : tuple, optional
        The only values allowed (e.g. preconditioner names).
    minimum : float, optional
        The smallest value allowed, for numbers.
    maximum : float, optional
        The largest value allowed, for numbers (e.g. an iteration count a
        compiled solver stores in a 32-bit integer).

    Examples
    --------
    >>> restart = Option("Krylov dimension per cycle", type=int, default=20, minimum=1)
    >>> restart.check("restart", 30)
    30
    >>> restart.check("restart", 0)
    Traceback (most recent call last):
    ...
    tsgu_core.errors.InvalidOptionError: option restart must be ≥ 1, got 0
    """

    doc: str
    type: type | tuple[type, ...] = object
    default: Any = None
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    @property
    def type_name(self) -> str:
        """The accepted type(s) as users read them, e.g. ``"int"`` or ``"str | None"``."""
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        names = ["any" if t is object else t.__name__ for t in types]
        if self.default is None and "any" not in names:
            names.append("None")
        return " | ".join(names)

    def describe(self) -> str:
        """``"doc (type; default ...; one of ...)"`` — one line for errors and ``tsgu info``."""
        facts = [self.type_name]
        if "default" not in self.doc:
            facts.append(f"default {self.default!r}")
        if self.choices is not None:
            facts.append("one of " + ", ".join(map(repr, self.choices)))
        if self.minimum is not None:
            facts.append(f"≥ {self.minimum:g}")
        if self.maximum is not None:
            facts.append(f"≤ {_number(self.maximum)}")
        return f"{self.doc} ({'; '.join(facts)})"

    def check(self, name: str, value: Any) -> Any:
        """``value`` checked against this declaration (numbers normalised), or :class:`InvalidOptionError`."""
        if value is None and self.default is None:
            return None
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        checked = _coerce(value, types)
        if checked is _REJECTED:
            raise InvalidOptionError(
                f"option {name} must be {self.type_name}, got {value!r} ({type(value).__name__})", option=name
            )
        if self.choices is not None and checked not in self.choices:
            raise InvalidOptionError(f"option {name} must be one of {list(self.choices)}, got {value!r}", option=name)
        if (
            self.minimum is not None
            and isinstance(checked, (int, float))
            and not (math.isfinite(checked) and checked >= self.minimum)
        ):
            raise InvalidOptionError(f"option {name} must be ≥ {self.minimum:g}, got {value!r}", option=name)
        if self.maximum is not None and isinstance(checked, (int, float)) and not checked <= self.maximum:
            top = _number(self.maximum)
            allowed = f"{_number(self.minimum)} ≤ {name} ≤ {top}" if self.minimum is not None else f"≤ {top}"
            raise InvalidOptionError(f"option {name} must be {allowed}, got {value!r}", option=name)
        return checked


_REJECTED = object()


def _number(value: float) -> str:
    """``2147483647`` for an integral bound, ``1e-08`` otherwise."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e16 else f"{value:g}"


def _coerce(value: Any, types: tuple[type, ...]) -> Any:
    """``value`` as the first of ``types`` it fits (ints and floats from any numeric type), else ``_REJECTED``."""
    for wanted in types:
        if wanted is object:
            return value
        if wanted is bool:
            if isinstance(value, bool) or (hasattr(value, "dtype") and str(getattr(value, "dtype", "")) == "bool"):
                return bool(value)
            continue
        if isinstance(value, bool):
            continue
        if wanted is int and isinstance(value, numbers.Integral):
            return int(value)
        if wanted is float and isinstance(value, numbers.Real):
            return float(value)
        if wanted not in (int, float) and isinstance(value, wanted):
            return value
    return _REJECTED


MAXITER_LIMIT = 2**31 - 1
"""The largest ``maxiter`` (compiled solvers, JAX's among them, count iterations in 32-bit integers)."""

COMMON_ITERATIVE_OPTIONS: Mapping[str, Option] = {
    "rtol": Option(
        "relative tolerance: stop when ‖b − A x‖ ≤ max(rtol·‖b‖, atol) (default 1e-5 for float32, 1e-8 for float64)",
        type=float,
        minimum=0.0,
    ),
    "atol": Option("absolute tolerance", type=float, default=0.0, minimum=0.0),
    "maxiter": Option("maximum number of iterations (default 10·n)", type=int, minimum=1, maximum=MAXITER_LIMIT),
    "x0": Option("initial guess for the forward solve, shaped like B (default zeros)", type=torch.Tensor),
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
    options : mapping of str to Option
        Method-specific options beyond the common ones, each declared by an
        :class:`Option` (a plain string is read as ``Option(doc)``: any value,
        default ``None``).
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
        :func:`tsgu_core.triangular_solve`; ``options`` always holds
        ``upper`` and ``unit_diagonal`` (bools; with ``unit_diagonal`` the
        diagonal is not stored and is taken as ones). ``"lstsq"``: a tall
        ``A`` of shape ``(m, n)``, used by :func:`tsgu_core.lstsq`; ``solve``
        receives ``Z = [c; d]`` of shape ``(m + n, k)`` and returns ``[r; x]``
        solving the augmented system ``[[I, A], [Aᵀ, 0]] [r; x] = [c; d]``
        (symmetric, so ``transpose`` changes nothing for a real ``A``; a
        complex one has ``Aᴴ`` in place of ``Aᵀ``, see ``complex``): ``x`` is
        the least-squares solution of ``A x ≈ c`` when ``d = 0``.
    priority : int or None
        Ranks this method against other backends' methods of the same
        operation when none is named (default: the backend's priority).
        For ``"solve"`` the backend's priority and default method decide.
    complex : bool
        The method solves complex64/complex128 ``A`` and ``B`` (with
        ``transpose=True`` the plain transpose ``Aᵀ``). Without it the core
        never hands it a complex ``A``: selection skips it, and naming it
        raises :class:`~tsgu_core.errors.ComplexNotSupportedError`. A method
        that ``assumes`` ``"symmetric"`` or ``"spd"`` needs a *Hermitian*
        (positive definite) ``A`` when complex; the core checks that. For
        ``operation="lstsq"`` the augmented system of a complex ``A`` is
        ``[[I, A], [Aᴴ, 0]]`` (Hermitian), its plain transpose its conjugate.
    selected_inversion : bool
        The state ``prepare`` returns for this method also serves
        :meth:`SelectedInversionBackend.logdet` and
        :meth:`SelectedInversionBackend.selected_inverse` (the backend must
        implement that protocol); :func:`tsgu_core.slogdet` and
        :func:`tsgu_core.selected_inverse` choose among such methods only.
    sampling : bool
        The state ``prepare`` returns for this method also serves
        :meth:`SamplingBackend.precision_sample` (the backend must implement
        that protocol). Such a method assumes ``"spd"`` and its ``prepare``
        refuses an ``A`` that is not positive definite:
        :class:`~tsgu_core.errors.NotPositiveDefiniteError` (or
        :class:`~tsgu_core.errors.SingularMatrixError` for an exactly singular
        one). :class:`tsgu_core.distributions.GaussianMarkovRandomField`
        chooses among methods declared both ``sampling`` and
        ``selected_inversion``.
    """

    name: str
    kind: MethodKind
    assumes: Assumption
    options: Mapping[str, Option] = field(default_factory=dict)
    summary: str = ""
    batched: bool = False
    operation: Operation = "solve"
    priority: int | None = None
    complex: bool = False
    selected_inversion: bool = False
    sampling: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("direct", "iterative"):
            raise BackendContractError(
                f"MethodSpec {self.name!r}: kind must be 'direct' or 'iterative', got {self.kind!r}"
            )
        if self.assumes not in ("general", "symmetric", "spd"):
            raise BackendContractError(
                f"MethodSpec {self.name!r}: assumes must be 'general', 'symmetric' or 'spd', got {self.assumes!r}"
            )
        if self.sampling and self.assumes != "spd":
            raise BackendContractError(
                f"MethodSpec {self.name!r}: a method declared sampling=True must assume 'spd', got {self.assumes!r}"
            )
        if self.operation not in ("solve", "triangular", "lstsq"):
            raise BackendContractError(
                f"MethodSpec {self.name!r}: operation must be 'solve', 'triangular' or 'lstsq', got {self.operation!r}"
            )
        reserved = set(COMMON_ITERATIVE_OPTIONS) | (
            {"upper", "unit_diagonal"} if self.operation == "triangular" else set()
        )
        clash = set(self.options) & reserved
        if clash:
            raise BackendContractError(
                f"MethodSpec {self.name!r}: options {sorted(clash)} are supplied by the core; do not redeclare them"
            )
        declared = {
            name: option if isinstance(option, Option) else Option(str(option)) for name, option in self.options.items()
        }
        object.__setattr__(self, "options", declared)

    @property
    def accepted_options(self) -> Mapping[str, Option]:
        """Every option this method accepts, the common iterative ones included, with its declaration."""
        common = dict(COMMON_ITERATIVE_OPTIONS) if self.kind == "iterative" else {}
        return {**common, **self.options}


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
    """Options handed to :meth:`SolverBackend.prepare`, checked and complete.

    ``extra`` holds every option the method declares, with its default where
    the user passed none (read one as ``options["restart"]``). For an
    iterative method ``rtol``, ``atol`` and ``maxiter`` are the resolved
    tolerances; a direct method gets ``0.0``, ``0.0`` and ``0`` there and
    should not read them. ``assume`` is what the user said of ``A``
    (``"general"``, ``"symmetric"``, ``"hermitian"`` or ``"spd"``; the core has
    checked what it cheaply can): a backend may pick a cheaper mode from it,
    e.g. a symmetric factorization.
    """

    rtol: float = 0.0
    atol: float = 0.0
    maxiter: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)
    assume: str = "general"

    def __getitem__(self, name: str) -> Any:
        return self.extra[name]


@dataclass(frozen=True)
class BackendReport:
    """What a backend knows about one solve it did.

    Parameters
    ----------
    iterations : int or None
        Iterations used (the largest over columns); ``None`` for direct methods.
    converged : bool or None
        The backend's own verdict, if it has one (some libraries report none). The core's
        true-residual check decides regardless.
    message : str
        Anything worth showing a user (e.g. SciPy's ``info`` code).
    history : tuple of float or None
        The true relative residual (largest over the columns) the backend
        measured before its first attempt and after each attempt (a restart
        cycle, a library call, a refinement pass), if it measures one.
    singular : str
        For a direct method: what its factorization saw that shows ``A``
        singular or nearly so, though it still gave an answer (e.g. "PARDISO
        perturbed 1 pivot; SuperLU's smallest pivot is 1.4e-15 of its
        largest"); empty if nothing. The core raises
        :class:`~tsgu_core.errors.SingularMatrixError` if the answer fails its
        accuracy check, and otherwise warns with
        :class:`~tsgu_core.errors.SingularMatrixWarning`.
    """

    iterations: int | None = None
    converged: bool | None = None
    message: str = ""
    history: tuple[float, ...] | None = None
    singular: str = ""


StateT = TypeVar("StateT")


@runtime_checkable
class SolverBackend(Protocol, Generic[StateT]):
    """A solver backend: what a plugin registers.

    Generic in the type of its prepared state (``SolverBackend[MyState]``),
    as lineax's solvers are in theirs.

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
        Ranks backends for ``backend=None`` on a device: the highest
        available wins, ties broken by name (``tsgu info`` shows the values).
    preferred_methods : mapping of str to str, optional
        Not part of the protocol's required members: a backend may declare,
        per structure a user can claim with ``assume=`` (``"spd"``,
        ``"symmetric"``, ``"hermitian"``), the method it prefers then
        (e.g. ``{"spd": "cg"}``); ``method=None`` picks it.
    complex_note : str, optional
        Also optional: one line on complex support beyond the methods'
        ``complex`` flags (e.g. "only with a PETSc built with complex
        scalars"), shown by ``tsgu info`` and in
        :class:`~tsgu_core.errors.ComplexNotSupportedError`.
    thread_safe : bool, optional
        Also optional (default ``False``): ``True`` when :meth:`solve` may run
        in several threads at once with one state. Without it the core
        serializes the solves of each prepared state (see :meth:`solve`).
    priority_for : callable, optional
        Also optional: ``priority_for(A) -> (priority, why)``, the backend's
        priority for this ``A`` (a size/structure rule read off measurements,
        e.g. PARDISO ranks below SuperLU for small 2-D-like patterns), used
        instead of ``priority`` when a solve chooses automatically; ``why`` is
        one sentence that :func:`~tsgu_core.explain` shows. It must be cheap
        (``O(nnz)``), never raise, and not load the backend's libraries.
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

    def prepare(self, A: torch.Tensor, method: str, options: SolveOptions) -> StateT:
        """Convert/factorize ``A`` once; return an opaque state."""
        ...

    def solve(
        self,
        state: StateT,
        B: torch.Tensor,
        *,
        transpose: bool,
        x0: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, BackendReport]:
        """Solve ``A X = B`` (or ``Aᵀ X = B``) for ``B`` of shape ``(n, k)``.

        Never called by two threads at once with the same ``state`` unless
        the backend declares ``thread_safe = True``; so it may change
        ``state`` (only in ways that leave later solves right). Called with
        different states at the same time from different threads.
        """
        ...


@runtime_checkable
class DistributedBackend(SolverBackend[StateT], Protocol):
    """A backend that also solves systems whose rows are spread over MPI processes.

    :func:`tsgu_core.solve_distributed` selects among the backends that
    implement this (by priority, as :func:`tsgu_core.solve` does). The state
    ``prepare_distributed`` returns is used by :meth:`SolverBackend.solve` as
    usual, with ``B`` and ``X`` holding this process's rows.
    """

    def prepare_distributed(self, A_local: torch.Tensor, method: str, options: SolveOptions, comm: Any) -> StateT:
        """Assemble this process's rows ``A_local`` (``(n_local, n)``, global column indices) over ``comm``."""
        ...


@runtime_checkable
class SelectedInversionBackend(SolverBackend[StateT], Protocol):
    """A backend whose prepared states also give ``log|det A|`` and entries of ``A⁻¹`` (a capability).

    Only states prepared by a method declared ``selected_inversion=True``
    (:class:`MethodSpec`) are handed to these methods, for a square ``A``
    (``(n, n)``, or ``(b, n, n)`` sharing one pattern for a ``batched``
    method). :func:`tsgu_core.slogdet` is built on them, one rule for every
    backend: the forward value is :meth:`logdet`; the gradient with respect to
    ``A``'s stored values is ``(A⁻ᵀ)_ij`` at the stored entries, i.e.
    :meth:`selected_inverse` at the transposed positions, asked once in the
    backward pass. Both must be exact to rounding (never a stochastic
    estimate: that is :func:`tsgu_core.slogdet`'s ``method="stochastic"``,
    asked for explicitly) and must never form ``A⁻¹`` densely.

    A backend that cannot factorize a singular ``A`` raises
    :class:`~tsgu_core.errors.SingularMatrixError` from ``prepare`` (the core
    then returns ``sign = 0``, ``logabsdet = −inf``); one that can returns that
    from :meth:`logdet` and raises from :meth:`selected_inverse`.
    """

    def logdet(self, state: StateT) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sign, logabsdet)`` of the prepared ``A``, as :func:`torch.linalg.slogdet` gives them.

        Shapes ``()`` (``(b,)`` for a batch); ``sign`` in ``A``'s dtype (``±1``, a
        unit-modulus phase for complex, ``0`` when singular), ``logabsdet`` real
        (``−inf`` when singular). ``logabsdet`` must not over- or underflow where
        ``det A`` does (sum logarithms of the pivots).
        """
        ...

    def selected_inverse(self, state: StateT, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """``(A⁻¹)[rows[t], cols[t]]`` for each ``t`` (int64 index tensors ``(m,)``), shape ``(m,)`` (``(b, m)``).

        In ``A``'s dtype and on its device. The entries of ``A⁻ᵀ`` are the
        same entries with ``rows`` and ``cols`` swapped.
        """
        ...


@runtime_checkable
class SamplingBackend(SolverBackend[StateT], Protocol):
    r"""A backend whose prepared states also draw Gaussian samples with precision ``A`` (a capability).

    Only states prepared by a method declared ``sampling=True``
    (:class:`MethodSpec`) from one ``(n, n)`` ``A`` are handed to
    :meth:`precision_sample` (the core prepares a batch member by member
    for it). Such a ``prepare`` has factorized a symmetric positive definite
    ``A`` with a fill-reducing symmetric permutation ``P``,

    .. math:: A = P^{\mathsf T} L D L^{\mathsf T} P

    (``L`` unit lower triangular, ``D`` diagonal and positive), and refused any
    other ``A`` with :class:`~tsgu_core.errors.NotPositiveDefiniteError` (an
    exactly singular one: :class:`~tsgu_core.errors.SingularMatrixError`).
    :class:`tsgu_core.distributions.GaussianMarkovRandomField` draws
    ``x = μ + S z`` from it.
    """

    def precision_sample(self, state: StateT, Z: torch.Tensor) -> torch.Tensor:
        """``S Z`` for ``Z`` of shape ``(n, k)``, with ``S = Pᵀ L⁻ᵀ D^{-1/2}``, so that ``S Sᵀ = A⁻¹``.

        For ``Z`` of independent standard normal entries the columns of
        ``S Z`` are independent draws from ``N(0, A⁻¹)``. Exact to rounding
        (triangular solves with the factor; never a dense ``A⁻¹`` or an
        iterative approximation). In ``Z``'s shape, dtype and device.
        """
        ...
