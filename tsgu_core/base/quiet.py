"""Torch's notices about sparse tensors, hidden while tsgu itself builds them — and only then.

torch prints "Sparse CSR tensor support is in beta state" and "Sparse invariant
checks are implicitly disabled" the first time a process builds such a tensor.
tsgu builds CSR tensors internally (patterns, operators, gradients), so a user
who never wrote one would see them from tsgu's lines. Every public function
runs under :func:`quiet_sparse_notices`, which ignores exactly these two
messages — every other warning (tsgu's ``ConvergenceWarning`` included)
passes. torch shows each notice once per process, so one hidden inside tsgu
is not shown again later for the user's own code.

Warning filters are one list for the whole process, so the scope is safe for
threads: the two filters are added when the first thread enters a scope and
removed (those two only) when the last one leaves, under a lock. A
:func:`warnings.catch_warnings` per call was not: its exit restores a copy
of the list taken at its entry, so with threads it dropped a filter another
thread had added meanwhile (a user's ``"error"`` filter, say) or left the two
ignore filters behind for good. While any thread is inside tsgu the two
notices are ignored in every thread.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

__all__ = ["TORCH_SPARSE_NOTICES", "quiet_sparse_notices", "quietly"]

TORCH_SPARSE_NOTICES = (
    r"Sparse (CSR|CSC|BSR|BSC) tensor support is in beta state",
    r"Sparse invariant checks are implicitly disabled",
)

F = TypeVar("F", bound=Callable[..., Any])


def _compiling() -> bool:
    from tsgu_core.base.transforms import compiling  # imports torch, loaded by then: every caller handles tensors

    return compiling()


_scopes_lock = threading.Lock()
_scopes = 0  # quiet_sparse_notices blocks open now, over all threads
_added: list[tuple[Any, ...]] = []  # the filters the first of them added, removed by the last


@contextlib.contextmanager
def quiet_sparse_notices() -> Iterator[None]:
    """Ignore torch's two sparse-tensor notices inside the block; nothing else changes (safe for threads)."""
    global _scopes
    with _scopes_lock:
        if _scopes == 0:
            for message in TORCH_SPARSE_NOTICES:
                entry = ("ignore", re.compile(message, re.I), UserWarning, None, 0)  # as filterwarnings stores it
                if entry not in warnings.filters:  # one the user set stays theirs
                    warnings.filterwarnings("ignore", message=message, category=UserWarning)
                    _added.append(entry)
        _scopes += 1
    try:
        yield
    finally:
        with _scopes_lock:
            _scopes -= 1
            if _scopes == 0:
                for entry in _added:
                    with contextlib.suppress(ValueError):  # gone with a catch_warnings scope that ended
                        cast(list[Any], warnings.filters).remove(entry)  # a list, typed as a Sequence
                _added.clear()


def quietly(function: F) -> F:
    """``function`` run under :func:`quiet_sparse_notices`."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _compiling():  # Dynamo cannot trace warnings filters; a traced solve builds no sparse tensor
            return function(*args, **kwargs)
        with quiet_sparse_notices():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
