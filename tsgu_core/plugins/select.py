"""Choosing a backend and a method for a solve.

One pure decision: (backend name or None, device type, method or None) →
(backend, method), made from declared data only — each backend's
``device_types``, ``priority``, ``methods`` and ``is_available`` — never from
plugin load order. Ties in priority are broken by name. A per-process
preference set with :func:`set_default_backend` comes before priority.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from tsgu_core.errors import (
    BackendUnavailableError,
    ComplexNotSupportedError,
    InvalidArgumentError,
    UnknownMethodError,
    UnsupportedDeviceError,
    did_you_mean,
)
from tsgu_core.plugins.protocol import DistributedBackend, SamplingBackend, SelectedInversionBackend, SolverBackend
from tsgu_core.plugins.registry import BackendEntry, check_backend, get_entry, list_backends

__all__ = ["Selection", "complex_supporters", "explain", "select", "set_default_backend", "sized_priority"]

_preferences: dict[str, str] = {}
_preferences_lock = threading.Lock()


def set_default_backend(device_type: str, name: str | None) -> None:
    """Prefer backend ``name`` for ``backend=None`` solves on ``device_type``.

    The preference holds for this process and comes before priority; it is
    still subject to availability and to the method asked for. ``None``
    removes it.

    Examples
    --------
    >>> from tsgu_core import set_default_backend, explain
    >>> set_default_backend("cpu", "torch")
    >>> explain("cpu").backend
    'torch'
    >>> set_default_backend("cpu", None)
    """
    with _preferences_lock:
        if name is None:
            _preferences.pop(device_type, None)
        else:
            get_entry(name)  # fail now on an unknown name
            _preferences[device_type] = name


@dataclass(frozen=True)
class Selection:
    """The backend and method a solve uses, and why.

    Attributes
    ----------
    backend : str
        The chosen backend's name.
    method : str
        The chosen method.
    device_type : str
        The device type of ``A``.
    reason : str
        One sentence on why this backend and method.
    considered : tuple of (str, str)
        Every backend looked at with its verdict, in the order considered.
    entry : BackendEntry
        The chosen backend's registry entry.
    """

    backend: str
    method: str
    device_type: str
    reason: str
    considered: tuple[tuple[str, str], ...]
    entry: BackendEntry

    def __str__(self) -> str:
        lines = [f"backend={self.backend!r} method={self.method!r} on {self.device_type}: {self.reason}"]
        lines += [f"  {name}: {verdict}" for name, verdict in self.considered]
        return "\n".join(lines)


def preferred_method(backend: SolverBackend, assume: str, complex: bool = False) -> str | None:
    """The method ``backend`` declares for a matrix known to be ``assume`` (``preferred_methods``), if any.

    For a complex ``A`` only a method declared ``complex`` counts, and ``assume="symmetric"`` prefers
    nothing: a complex-symmetric ``A`` (``Aᵀ = A``) is not Hermitian, which CG and MINRES need.
    """
    if complex and assume == "symmetric":
        return None
    preferred = getattr(backend, "preferred_methods", None) or {}
    method = preferred.get(assume)
    if not isinstance(method, str) or method not in backend.methods:
        return None
    return None if complex and not backend.methods[method].complex else method


def _methods_of(entry: BackendEntry, operation: str, assume: str = "general", complex: bool = False) -> list[str]:
    """The backend's methods for ``operation``, best first (method priority, then declaration order).

    For a square solve the first is the method the backend prefers for
    ``assume`` (see :func:`preferred_method`), else its default method. With
    ``complex``, only the methods declared ``complex``.
    """
    backend = entry.backend
    names = [
        name for name, spec in backend.methods.items() if spec.operation == operation and (spec.complex or not complex)
    ]
    if operation == "solve":
        first = preferred_method(backend, assume, complex) or backend.default_method
        # then general methods first: when the default cannot take a complex A, a general one stands in for it
        return sorted(names, key=lambda name: (name != first, backend.methods[name].assumes != "general"))
    return sorted(names, key=lambda name: -_method_priority(entry, name))


def complex_supporters(operation: str = "solve", device_type: str | None = None) -> list[str]:
    """``"backend/method"`` for every registered method of ``operation`` declared ``complex`` (on ``device_type``)."""
    return [
        f"{entry.name}/{name}"
        for entry in list_backends()
        if device_type is None or device_type in entry.backend.device_types
        for name in _methods_of(entry, operation, complex=True)
    ]


def _refuse_complex(entry: BackendEntry, method: str, device_type: str, operation: str) -> ComplexNotSupportedError:
    supported = complex_supporters(operation, device_type)
    what = "method" if operation == "solve" else f"{operation} method"
    return ComplexNotSupportedError(
        f"backend {entry.name!r}, {what} {method!r} does not solve complex A (its MethodSpec does not declare "
        f"complex=True); on {device_type}, complex is solved by: {', '.join(supported) or 'no registered backend'}"
        f"{'; ' + note if (note := getattr(entry.backend, 'complex_note', None)) else ''}",
        supported=supported,
    )


def _method_priority(entry: BackendEntry, method: str) -> int:
    spec = entry.backend.methods[method]
    return spec.priority if spec.priority is not None else entry.backend.priority


def _method_for(
    entry: BackendEntry,
    method: str | None,
    device_type: str,
    operation: str,
    assume: str = "general",
    complex: bool = False,
) -> str:
    offered = _methods_of(entry, operation, assume, complex)
    if method is None:
        if not offered:
            if complex and _methods_of(entry, operation):
                default = entry.backend.default_method if operation == "solve" else _methods_of(entry, operation)[0]
                raise _refuse_complex(entry, default, device_type, operation)
            raise UnknownMethodError(
                f"backend {entry.name!r} has no {operation!r} method; its methods: {sorted(entry.backend.methods)}",
                method="",
                valid=[],
            )
        return offered[0]
    if complex and method not in offered and method in _methods_of(entry, operation):
        raise _refuse_complex(entry, method, device_type, operation)
    if method not in offered:
        others = [
            e.name
            for e in list_backends()
            if method in _methods_of(e, operation) and device_type in e.backend.device_types
        ]
        elsewhere = f"; on {device_type}, {method!r} is offered by {others}" if others else ""
        what = "method" if operation == "solve" else f"{operation} method"
        raise UnknownMethodError(
            f"backend {entry.name!r} has no {what} {method!r}{did_you_mean(method, offered)}; "
            f"its {what}s: {sorted(offered)}{elsewhere}",
            method=method,
            valid=sorted(offered),
        )
    return method


def _entry_of(backend: str | SolverBackend) -> BackendEntry:
    if isinstance(backend, str):
        return get_entry(backend)
    problem = check_backend(backend)
    if problem:
        raise InvalidArgumentError(f"backend= must be a registered name or a backend object: {problem}")
    return BackendEntry(backend.name, backend, plugin="(an object passed as backend=)")


def _capable(entry: BackendEntry, capability: str | None) -> bool:
    if capability == "selected_inversion":
        backend = entry.backend
        return isinstance(backend, SelectedInversionBackend) and any(
            getattr(spec, "selected_inversion", False) for spec in backend.methods.values()
        )
    if capability == "sampling":  # Gaussian sampling: GaussianMarkovRandomField needs selected inversion too
        backend = entry.backend
        return (
            isinstance(backend, SamplingBackend)
            and isinstance(backend, SelectedInversionBackend)
            and any(
                getattr(spec, "sampling", False) and getattr(spec, "selected_inversion", False)
                for spec in backend.methods.values()
            )
        )
    return capability is None or (capability == "distributed" and isinstance(entry.backend, DistributedBackend))


_CAPABILITY_WORDS = {
    "selected_inversion": "log-determinants and selected inverses (SelectedInversionBackend)",
    "sampling": "Gaussian sampling with a sparse precision (SamplingBackend and SelectedInversionBackend)",
}


def _named(
    backend: str | SolverBackend,
    device_type: str,
    method: str | None,
    operation: str,
    capability: str | None,
    assume: str = "general",
    complex: bool = False,
) -> Selection:
    entry = _entry_of(backend)
    name = entry.name
    if not _capable(entry, capability):
        raise UnsupportedDeviceError(
            f"backend {name!r} does not offer {_CAPABILITY_WORDS.get(str(capability), f'{capability} solves')}; "
            "backends that do: "
            f"{[e.name for e in list_backends() if _capable(e, capability)] or 'none registered'}"
        )
    if device_type not in entry.backend.device_types:
        raise UnsupportedDeviceError(
            f"backend {name!r} serves device types {list(entry.backend.device_types)}, but A is on "
            f"{device_type!r}; move A and B with .to(...) or choose another backend"
        )
    available = entry.availability(device_type)
    if not available:
        fix = f"; to fix: {available.install}" if available.install else ""
        raise BackendUnavailableError(
            f"backend {name!r} is unavailable on {device_type}: {available.reason}{fix}",
            backend=name,
            reason=available.reason,
            install=available.install,
        )
    chosen = _method_for(entry, method, device_type, operation, assume, complex)
    if method is not None:
        how = "requested method"
    elif chosen == preferred_method(entry.backend, assume, complex) and operation == "solve":
        how = f"the backend's preferred method for a {assume} A (assume={assume!r})"
    elif complex and chosen != entry.backend.default_method and operation == "solve":
        how = "the backend's first method that solves complex A"
    else:
        how = "the backend's default method"
    return Selection(name, chosen, device_type, f"backend requested by name; {how}", ((name, "requested"),), entry)


def sized_priority(entry: BackendEntry, matrix: torch.Tensor | None) -> tuple[int, str]:
    """The backend's priority for ``matrix`` and why: its ``priority_for(matrix)`` rule if it declares one.

    Without a matrix or a rule, the declared ``priority`` (and ``""``). A rule that raises is
    ignored (the declared priority stands) and the reason says so.
    """
    backend = entry.backend
    rule = getattr(backend, "priority_for", None)
    if matrix is None or rule is None:
        return backend.priority, ""
    try:
        priority, why = rule(matrix)
        return int(priority), str(why)
    except Exception as error:  # a plugin's heuristic must not break a solve
        return backend.priority, f"priority_for failed ({type(error).__name__}: {error}); declared priority used"


def _rank(
    entry: BackendEntry,
    operation: str,
    method: str | None,
    complex: bool = False,
    matrix: torch.Tensor | None = None,
) -> int:
    if operation == "solve":
        return sized_priority(entry, matrix)[0]
    offered = _methods_of(entry, operation, complex=complex) if method is None else [method]
    return max((_method_priority(entry, m) for m in offered if m in entry.backend.methods), default=0)


def _ranked(
    device_type: str,
    operation: str = "solve",
    method: str | None = None,
    capability: str | None = None,
    complex: bool = False,
    matrix: torch.Tensor | None = None,
) -> list[BackendEntry]:
    preferred = _preferences.get(device_type) if operation == "solve" else None
    entries = [e for e in list_backends() if device_type in e.backend.device_types and _capable(e, capability)]
    ranks = {e.name: _rank(e, operation, method, complex, matrix) for e in entries}
    return sorted(entries, key=lambda e: (e.name != preferred, -ranks[e.name], e.name))


def _automatic(
    device_type: str,
    method: str | None,
    operation: str,
    capability: str | None,
    assume: str = "general",
    complex: bool = False,
    matrix: torch.Tensor | None = None,
) -> Selection:
    considered: list[tuple[str, str]] = []
    preferred = _preferences.get(device_type) if operation == "solve" else None
    what = "method" if operation == "solve" else f"{operation} method"
    ranked = _ranked(device_type, operation, method, capability, complex, matrix)
    sized = {e.name: sized_priority(e, matrix) for e in ranked} if operation == "solve" else {}
    if method is not None and not any(method in _methods_of(entry, operation) for entry in ranked):
        valid = sorted({m for entry in ranked for m in _methods_of(entry, operation)})
        raise UnknownMethodError(
            f"no backend for {device_type} offers {what} {method!r}{did_you_mean(method, valid)}; "
            f"{what}s offered there: {valid}",
            method=method,
            valid=valid,
        )
    if complex and method is not None and not any(method in _methods_of(e, operation, complex=True) for e in ranked):
        holder = next(entry for entry in ranked if method in _methods_of(entry, operation))
        raise _refuse_complex(holder, method, device_type, operation)
    for entry in ranked:
        offered = _methods_of(entry, operation)
        if not offered:
            considered.append((entry.name, f"no {what}"))
            continue
        if complex and not _methods_of(entry, operation, complex=True):
            considered.append((entry.name, f"no {what} for complex A"))
            continue
        available = entry.availability(device_type)
        if not available:
            considered.append((entry.name, f"unavailable: {available.reason}"))
            continue
        if method is not None and method not in _methods_of(entry, operation, complex=complex):
            considered.append((entry.name, f"no {what} {method!r}" + (" for complex A" if complex else "")))
            continue
        chosen = _method_for(entry, method, device_type, operation, assume, complex)
        priority = _rank(entry, operation, method, complex, matrix)
        rank = "the per-process default" if entry.name == preferred else f"highest priority ({priority})"
        why = sized.get(entry.name, (0, ""))[1]
        if method is not None:
            offer = f"offering {method!r}"
        elif operation == "solve" and chosen == preferred_method(entry.backend, assume, complex):
            offer = f"its preferred {what} for a {assume} A (assume={assume!r}): {chosen!r}"
        else:
            offer = f"default {what} {chosen!r}"
        considered.append((entry.name, "chosen"))
        considered += [  # lower-ranked backends whose rule ranked them for this A: say why they lost
            (other.name, f"priority {sized[other.name][0]} for this A ({sized[other.name][1]})")
            for other in ranked[ranked.index(entry) + 1 :]
            if sized.get(other.name, (0, ""))[1]
        ]
        reason = f"{rank} available backend for {device_type}, {offer}" + (f"; for this A: {why}" if why else "")
        return Selection(entry.name, chosen, device_type, reason, tuple(considered), entry)
    if not considered:
        kind = f" with {capability} solves" if capability else ""
        raise UnsupportedDeviceError(f"no registered backend{kind} serves device type {device_type!r}")
    summary = "; ".join(f"{name}: {verdict}" for name, verdict in considered)
    if complex and all(verdict.startswith("no ") and verdict.endswith("complex A") for _, verdict in considered):
        supported = complex_supporters(operation, device_type)
        raise ComplexNotSupportedError(
            f"no backend for {device_type} offers a {what} for complex A: {summary}", supported=supported
        )
    if all(verdict.startswith("no ") for _, verdict in considered):
        raise UnknownMethodError(f"no backend for {device_type} offers a {what}", method="", valid=[])
    raise BackendUnavailableError(
        f"no available backend on {device_type}{' offers ' + repr(method) if method else ''}: {summary}",
        backend="",
        reason=summary,
    )


def select(
    backend: str | SolverBackend | None,
    device_type: str,
    method: str | None,
    operation: str = "solve",
    *,
    capability: str | None = None,
    assume: str = "general",
    dtype: torch.dtype | None = None,
    matrix: torch.Tensor | None = None,
) -> Selection:
    """Decide the backend and method for an ``operation`` on ``device_type``.

    With a complex ``dtype`` only methods declared ``complex`` are chosen
    (see :attr:`MethodSpec.complex <tsgu_core.plugins.protocol.MethodSpec>`).
    With ``matrix`` (the sparse ``A`` to solve), a backend that declares a
    ``priority_for(A)`` rule (see :class:`~tsgu_core.plugins.protocol.SolverBackend`)
    is ranked by it — PARDISO's, for instance, yields to SuperLU for small
    or 2-D-like patterns.

    ``backend`` may be a registered name or a backend object (used as is,
    unregistered: handy to try a backend out before making it a plugin).

    Raises
    ------
    UnknownBackendError, PluginLoadError
        ``backend`` is not registered, or its plugin failed to load.
    UnsupportedDeviceError
        The backend does not serve ``device_type`` (or none does).
    BackendUnavailableError
        The backend (or every candidate) is unavailable; says why and how to fix.
    UnknownMethodError
        The method is not offered; lists the valid ones.
    ComplexNotSupportedError
        A complex ``dtype`` and a named backend or method that does not
        declare complex support; names those that do.
    """
    complex = dtype is not None and dtype.is_complex
    if method is not None and not isinstance(method, str):
        raise UnknownMethodError(
            f"method must be a method name (str) or None, got {method!r}; `tsgu info` lists the methods",
            method=repr(method),
            valid=[],
        )
    if backend is not None:
        return _named(backend, device_type, method, operation, capability, assume, complex)
    return _automatic(device_type, method, operation, capability, assume, complex, matrix)


def explain(
    A: torch.Tensor | torch.device | str,
    *,
    backend: str | None = None,
    method: str | None = None,
    operation: str = "solve",
    assume: str = "general",
    dtype: torch.dtype | None = None,
) -> Selection:
    """What :func:`tsgu_core.solve` would choose for ``A``, and why.

    Parameters
    ----------
    A : Tensor, torch.device or str
        The sparse matrix — its device, dtype, and for backends that rank
        themselves by size and structure (``priority_for``) its pattern — or
        a device.
    backend, method : str, optional
        As passed to :func:`tsgu_core.solve`.
    operation : {"solve", "triangular", "lstsq"}
        Which function asks: :func:`~tsgu_core.solve`,
        :func:`~tsgu_core.triangular_solve` or :func:`~tsgu_core.lstsq`.
    assume : str
        The structure hint passed to :func:`~tsgu_core.solve` (``"spd"``, ...):
        the reason then says how it changed the choice.
    dtype : torch.dtype, optional
        The dtype of ``A`` (default: ``A``'s, when ``A`` is a tensor): a
        complex one restricts the choice to methods declared ``complex``.

    Returns
    -------
    Selection
        ``str(selection)`` lists every backend considered with its verdict.

    Examples
    --------
    >>> import torch
    >>> from tsgu_core import explain
    >>> A = torch.eye(3).to_sparse_csr()
    >>> explain(A, backend="torch").method
    'gmres'
    """
    matrix = None
    if isinstance(A, torch.Tensor):
        device = A.device
        dtype = A.dtype if dtype is None else dtype
        matrix = A if A.layout in (torch.sparse_csr, torch.sparse_coo) and A.dim() in (2, 3) else None
    elif isinstance(A, (str, torch.device)):
        try:
            device = torch.device(A)
        except RuntimeError as error:
            raise InvalidArgumentError(f"explain: {A!r} is not a device torch knows ({error})") from error
    else:
        raise InvalidArgumentError(
            f"explain takes a tensor, a torch.device or a device string such as 'cpu' or 'cuda', got {A!r}"
        )
    return select(backend, device.type, method, operation, assume=assume, dtype=dtype, matrix=matrix)
