"""The exception and warning types of tsgu.

Every error tsgu raises on purpose derives from :class:`TsguError` and also
from the built-in exception a Python user would expect (``TypeError`` for a
wrong layout or an unknown option, ``ValueError`` for a wrong shape, ...), so
``except ValueError`` keeps working while ``except TsguError`` catches them
all. Each error carries the facts needed to act on it as attributes, and its
message says what to do.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

__all__ = [
    "BackendContractError",
    "BackendError",
    "BackendUnavailableError",
    "ComplexNotSupportedError",
    "ConvergenceError",
    "ConvergenceWarning",
    "DeviceMismatchError",
    "DtypeMismatchError",
    "InvalidArgumentError",
    "InvalidOptionError",
    "LayoutError",
    "NonFiniteError",
    "NotPositiveDefiniteError",
    "PerformanceWarning",
    "PluginLoadError",
    "SecondDerivativeError",
    "ShapeError",
    "SingularMatrixError",
    "SingularMatrixWarning",
    "SolveFailedError",
    "StaleFactorizationError",
    "StructureError",
    "TransformError",
    "TsguError",
    "UnknownBackendError",
    "UnknownMethodError",
    "UnknownOptionError",
    "UnsupportedDeviceError",
    "did_you_mean",
]


def did_you_mean(name: object, candidates: Iterable[str]) -> str:
    """``" (did you mean 'restart'?)"`` when ``name`` is close to one of ``candidates``, else ``""``.

    The closeness is :func:`difflib.get_close_matches`'s (ratio ≥ 0.6), so a
    swapped or missing letter is caught (``restrat``, ``scpiy``) and an
    unrelated name gets no suggestion.

    Examples
    --------
    >>> did_you_mean("restrat", ["restart", "rtol", "maxiter"])
    " (did you mean 'restart'?)"
    >>> did_you_mean("spam", ["restart", "rtol"])
    ''
    """
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, [c for c in candidates if c != name], n=2)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


class TsguError(Exception):
    """Base class of every error raised by tsgu on purpose."""


# --- input errors ---------------------------------------------------------


class LayoutError(TsguError, TypeError):
    """A tensor has a layout tsgu does not accept (e.g. CSC, BSR or dense ``A``)."""


class ShapeError(TsguError, ValueError):
    """Shapes of ``A``, ``B`` or an option tensor do not fit together."""


class DtypeMismatchError(TsguError, TypeError):
    """An unsupported dtype, or ``A`` and ``B`` with different dtypes."""


class ComplexNotSupportedError(DtypeMismatchError):
    """A complex ``A`` asked of a backend or method that does not declare complex support.

    Attributes
    ----------
    supported : list of str
        ``"backend/method"`` for every registered method of the operation that does.
    """

    def __init__(self, message: str, *, supported: Sequence[str] = ()):
        super().__init__(message)
        self.supported = list(supported)


class DeviceMismatchError(TsguError, ValueError):
    """``A`` and ``B`` (or an option tensor) live on different devices."""


class StructureError(TsguError, ValueError):
    """``A``'s stored pattern contradicts what was declared (e.g. not triangular on the declared side)."""


class NotPositiveDefiniteError(StructureError):
    """A matrix that must be symmetric positive definite (e.g. a Gaussian's precision) is not.

    Raised when it is visibly not symmetric, or when its factorization meets a
    pivot that is not positive (it is indefinite, or singular). Subclasses
    :class:`StructureError`, so ``except StructureError`` (and ``ValueError``)
    catch it too.
    """


class NonFiniteError(TsguError, ValueError):
    """``A`` or ``B`` contains NaN or infinity."""


class InvalidArgumentError(TsguError, ValueError, TypeError):
    """An argument of a tsgu function has a value or type it cannot use (e.g. ``on_failure="maybe"``).

    Derives from both ``ValueError`` and ``TypeError``, so either ``except`` clause catches it.
    """


class TransformError(InvalidArgumentError):
    """A use under ``torch.compile``, ``torch.func`` or forward-mode AD that tsgu cannot follow.

    The message names the form that works — usually
    ``solve_values(SparsePattern.of(A), values, B)`` (see the docs page
    "tsgu with torch.compile and torch.func").
    """


class InvalidOptionError(InvalidArgumentError):
    """A method option has a value or type the method cannot use.

    Attributes
    ----------
    option : str
        The option's name.
    """

    def __init__(self, message: str, *, option: str = ""):
        super().__init__(message)
        self.option = option


class UnknownOptionError(TsguError, TypeError):
    """An option the chosen method does not accept (never dropped silently).

    Attributes
    ----------
    unknown : tuple of str
        The rejected option names.
    accepted : tuple of str
        The option names the method accepts.
    """

    def __init__(self, message: str, *, unknown: Sequence[str], accepted: Sequence[str]):
        super().__init__(message)
        self.unknown = tuple(unknown)
        self.accepted = tuple(accepted)


# --- selection errors -----------------------------------------------------


class UnknownBackendError(TsguError, ValueError):
    """No backend of that name is registered.

    Attributes
    ----------
    name : str
        The requested name.
    registered : tuple of str
        The names that are registered.
    """

    def __init__(self, message: str, *, name: str, registered: Sequence[str]):
        super().__init__(message)
        self.name = name
        self.registered = tuple(registered)


class UnknownMethodError(TsguError, ValueError):
    """The backend has no method of that name (or none for that device).

    Attributes
    ----------
    method : str
        The requested method.
    valid : tuple of str
        The methods that would have been accepted.
    """

    def __init__(self, message: str, *, method: str, valid: Sequence[str]):
        super().__init__(message)
        self.method = method
        self.valid = tuple(valid)


class UnsupportedDeviceError(TsguError, ValueError):
    """The backend does not serve the device type of ``A``."""


class BackendUnavailableError(TsguError, RuntimeError):
    """The backend is registered but cannot run here.

    Attributes
    ----------
    backend : str
        The backend's name.
    reason : str
        Why it is unavailable.
    install : str or None
        The command that would fix it, where one exists.
    """

    def __init__(self, message: str, *, backend: str, reason: str, install: str | None = None):
        super().__init__(message)
        self.backend = backend
        self.reason = reason
        self.install = install


class BackendContractError(TsguError, RuntimeError):
    """A backend returned something the protocol does not allow (a plugin bug)."""


class BackendError(TsguError, RuntimeError):
    """A backend's ``prepare`` or ``solve`` raised an exception tsgu did not expect (a plugin failure).

    The original exception is chained (``raise ... from``) and kept as ``__cause__``.

    Attributes
    ----------
    backend, method : str
        Where it happened.
    """

    def __init__(self, message: str, *, backend: str, method: str):
        super().__init__(message)
        self.backend = backend
        self.method = method


class PluginLoadError(TsguError, ImportError):
    """A plugin failed to load; raised only when one of its backends is asked for."""


# --- solve failures -------------------------------------------------------


class SecondDerivativeError(TsguError, RuntimeError):
    """A higher derivative was asked for along a path where torch would silently drop it."""


class StaleFactorizationError(TsguError, RuntimeError):
    """``A`` changed after :func:`tsgu_core.factorize`; its handle no longer describes it."""


class SolveFailedError(TsguError, RuntimeError):
    """Base class of the errors that mean "no trustworthy solution was found"."""


class SingularMatrixError(SolveFailedError):
    """``A`` is (numerically) singular for a direct method."""


class ConvergenceError(SolveFailedError):
    """An iterative solve did not reach its tolerance.

    Attributes
    ----------
    backend, method : str
        Who solved.
    transpose : bool
        Whether it was the transpose solve of a backward pass.
    iterations : int or None
        Iterations the backend reports.
    residuals : tuple of float
        True relative residual ``‖b − A x‖ / ‖b‖`` of every column.
    thresholds : tuple of float
        The relative residual each column had to reach.
    failed_columns : tuple of int
        The columns that missed their threshold.
    """

    def __init__(
        self,
        message: str,
        *,
        backend: str,
        method: str,
        transpose: bool,
        iterations: int | None,
        residuals: Sequence[float],
        thresholds: Sequence[float],
        failed_columns: Sequence[int],
    ):
        super().__init__(message)
        self.backend = backend
        self.method = method
        self.transpose = transpose
        self.iterations = iterations
        self.residuals = tuple(residuals)
        self.thresholds = tuple(thresholds)
        self.failed_columns = tuple(failed_columns)


class ConvergenceWarning(UserWarning):
    """Issued instead of :class:`ConvergenceError` when ``on_failure="warn"``."""


class PerformanceWarning(UserWarning):
    """Issued once when a call will be much slower or larger in memory than an equivalent one tsgu names."""


class SingularMatrixWarning(UserWarning):
    """A direct solve passed the accuracy check, but its factorization showed ``A`` singular or nearly so.

    E.g. PARDISO perturbed a pivot and SuperLU's smallest pivot is tiny: for a
    consistent right-hand side (a pure-Neumann problem with a load that sums
    to zero) ``X`` solves the system, but it is one of many solutions, and
    the backward pass's transpose solve will usually fail. Pin the null space
    (a Dirichlet condition, or fix one unknown) to make ``A`` nonsingular.
    A solution that fails the accuracy check raises :class:`SingularMatrixError`
    instead.
    """
