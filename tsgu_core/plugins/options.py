"""Method options: checked against their declarations and completed, once, by the core.

A method declares its options as :class:`~tsgu_core.plugins.protocol.Option` records
(:attr:`MethodSpec.options <tsgu_core.plugins.protocol.MethodSpec>`); iterative
methods also take :data:`~tsgu_core.plugins.protocol.COMMON_ITERATIVE_OPTIONS`.
:func:`resolve_options` turns what a user passed as ``**options`` into the
:class:`~tsgu_core.plugins.protocol.SolveOptions` a backend's ``prepare`` receives:
every declared option present (defaults filled in), every value checked, and
nothing undeclared — an unknown name raises
:class:`~tsgu_core.errors.UnknownOptionError` listing what is accepted, a bad
value :class:`~tsgu_core.errors.InvalidOptionError` naming the option.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from tsgu_core.errors import InvalidArgumentError, UnknownOptionError, did_you_mean
from tsgu_core.plugins.protocol import MAXITER_LIMIT, MethodSpec, SolveOptions

__all__ = ["ON_FAILURE_CHOICES", "check_on_failure", "default_rtol", "resolve_options"]

ON_FAILURE_CHOICES = ("raise", "warn", "ignore")


def default_rtol(dtype: torch.dtype) -> float:
    """The default relative tolerance of iterative methods for ``dtype``: 1e-5 in single, 1e-8 in double precision."""
    return 1e-5 if dtype in (torch.float32, torch.complex64) else 1e-8


def check_on_failure(on_failure: Any) -> str:
    """Return ``on_failure`` if it is one of :data:`ON_FAILURE_CHOICES`, else raise :class:`InvalidArgumentError`."""
    if not isinstance(on_failure, str) or on_failure not in ON_FAILURE_CHOICES:
        raise InvalidArgumentError(f"on_failure must be one of {list(ON_FAILURE_CHOICES)}, got {on_failure!r}")
    return on_failure


def _listing(spec: MethodSpec) -> str:
    accepted = spec.accepted_options
    if not accepted:
        return "none"
    return "".join(f"\n  {name}: {option.describe()}" for name, option in accepted.items())


def resolve_options(
    spec: MethodSpec,
    backend_name: str,
    options: Mapping[str, Any],
    n: int,
    dtype: torch.dtype,
    *,
    supplied: Mapping[str, Any] | None = None,
) -> SolveOptions:
    """Check ``options`` against ``spec``'s declarations and complete them.

    Parameters
    ----------
    spec : MethodSpec
        The chosen method.
    backend_name : str
        For messages.
    options : mapping
        What the user passed (``x0`` may be among them; it is checked for its
        type here and for its shape by the solve itself).
    n : int
        The system size, for the default ``maxiter`` (``10·n``).
    dtype : torch.dtype
        For the default ``rtol``.
    supplied : mapping, optional
        Options the core itself adds (``upper``/``unit_diagonal`` of a
        triangular solve), passed through unchecked.

    Returns
    -------
    SolveOptions

    Raises
    ------
    UnknownOptionError
        An option the method does not declare; the message lists every
        accepted option with its type and default.
    InvalidOptionError
        A value of the wrong type, outside the allowed choices or below the minimum.

    Examples
    --------
    >>> import torch
    >>> from tsgu_core import get_backend
    >>> spec = get_backend("torch").methods["gmres"]
    >>> options = resolve_options(spec, "torch", {"restart": 30}, n=100, dtype=torch.float64)
    >>> options.rtol, options.maxiter, options["restart"], options["preconditioner"]
    (1e-08, 1000, 30, None)
    """
    accepted = spec.accepted_options
    unknown = [key for key in options if key not in accepted]
    if unknown:
        kind_note = " (a direct method takes no tolerance or iteration options)" if spec.kind == "direct" else ""
        for key in unknown:  # " (did you mean 'restart'?)" for each near miss
            hint = did_you_mean(key, accepted)
            kind_note += hint if len(unknown) == 1 else hint.replace("(did you mean", f"({key!r}: did you mean")
        raise UnknownOptionError(
            f"method {spec.name!r} of backend {backend_name!r} does not accept option(s) {unknown}{kind_note}; "
            f"accepted options:{_listing(spec)}",
            unknown=unknown,
            accepted=tuple(accepted),
        )
    checked = {name: accepted[name].check(name, value) for name, value in options.items()}
    extra = {name: checked.get(name, option.default) for name, option in spec.options.items()}
    extra.update(supplied or {})
    if spec.kind == "direct":
        return SolveOptions(extra=extra)
    rtol = checked.get("rtol")
    maxiter = checked.get("maxiter")
    return SolveOptions(
        rtol=default_rtol(dtype) if rtol is None else rtol,
        atol=checked.get("atol") or 0.0,
        maxiter=min(max(10 * n, 1), MAXITER_LIMIT) if maxiter is None else maxiter,
        extra=extra,
    )
