"""What a caller asked of a solve, frozen once at the front door: :class:`SolveRequest`.

Every front door (``solve``, ``solve_values``, ``triangular_solve``, ``lstsq``,
``factorize``, ``solve_distributed``) turns its keywords ``backend``,
``method``, ``assume``, ``on_failure`` and ``**options`` into one
:class:`SolveRequest` and hands that record down: :func:`tsgu_core.engine.pipeline.plan`
reads it, and the traced path (:mod:`tsgu_core.engine.traced`) keys its cache on it.
A new keyword is one new field here, not ten new parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType
from typing import Any

__all__ = ["SolveRequest"]

_PLAIN = (bool, int, float, complex, str, type(None))


def _token(value: Any) -> Any:
    """``value`` as a part of a key: plain scalars and strings (and tuples of them) by type and value, else by identity.

    Two option values that merely print or compare alike (two preconditioner
    callables, two arrays, two tensors) are different requests. An identity
    is only meaningful while the object lives: the record that owns the key
    keeps it alive.
    """
    if isinstance(value, _PLAIN) or (isinstance(value, tuple) and all(isinstance(v, _PLAIN) for v in value)):
        return (type(value).__name__, value)
    return ("id", type(value).__module__, type(value).__qualname__, id(value))


@dataclass(frozen=True, eq=False)
class SolveRequest:
    """The request of one front-door call: who should solve, how, and what is known of ``A``.

    Attributes
    ----------
    backend : str, backend object or None
        As passed (``None``: choose by priority).
    method : str or None
        As passed (``None``: the backend's default).
    assume : str
        What the caller knows of ``A`` (``"general"``, ``"spd"``, …); checked by
        :func:`~tsgu_core.engine.pipeline.plan`.
    on_failure : str
        ``"raise"``, ``"warn"`` or ``"ignore"``; checked by :func:`~tsgu_core.engine.pipeline.plan`.
    options : Mapping
        The method options, a read-only copy of the caller's ``**options`` (``x0`` included).

    Two requests are equal when their plain parts (strings, numbers, tuples of them) are equal and their
    other parts (a backend object, a preconditioner) are the very same objects: :attr:`key`.

    Examples
    --------
    >>> request = SolveRequest.of("scipy", "splu", options={"permc_spec": "COLAMD"})
    >>> request == SolveRequest.of("scipy", "splu", options={"permc_spec": "COLAMD"})
    True
    >>> request.replace(method="spsolve") == request
    False
    """

    backend: Any = None
    method: str | None = None
    assume: str = "general"
    on_failure: str = "raise"
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of(
        cls,
        backend: Any = None,
        method: str | None = None,
        *,
        assume: str = "general",
        on_failure: str = "raise",
        options: Mapping[str, Any] | None = None,
    ) -> SolveRequest:
        """Freeze a front door's keywords (``options`` is copied: later changes to the caller's dict do not leak in)."""
        return cls(backend, method, assume, on_failure, MappingProxyType(dict(options or {})))

    @property
    def x0(self) -> Any:
        """The initial guess passed among the options, or ``None``."""
        return self.options.get("x0")

    def replace(self, **changes: Any) -> SolveRequest:
        """A copy with some fields changed (``options`` is frozen again)."""
        if "options" in changes:
            changes["options"] = MappingProxyType(dict(changes["options"]))
        return replace(self, **changes)

    def with_options(self, **options: Any) -> SolveRequest:
        """A copy with these options set (e.g. one group's ``x0``)."""
        return self.replace(options={**self.options, **options})

    def without(self, *names: str) -> SolveRequest:
        """A copy without these options (e.g. without ``x0``, which is data rather than a request)."""
        return self.replace(options={k: v for k, v in self.options.items() if k not in names})

    @cached_property
    def key(self) -> tuple[Any, ...]:
        """A hashable identity of the request (see the class docstring); options in name order."""
        options = tuple(sorted((name, _token(value)) for name, value in self.options.items()))
        return (_token(self.backend), self.method, self.assume, self.on_failure, options)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SolveRequest) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)
