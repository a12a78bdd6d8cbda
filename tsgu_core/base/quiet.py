"""Torch's notices about sparse tensors, hidden while tsgu itself builds them — and only then.

torch prints "Sparse CSR tensor support is in beta state" and "Sparse invariant
checks are implicitly disabled" the first time a process builds such a tensor.
tsgu builds CSR tensors internally (patterns, operators, gradients), so a user
who never wrote one would see them from tsgu's lines. Every public function
runs under :func:`quiet_sparse_notices`: a :func:`warnings.catch_warnings`
scope that ignores exactly these two messages and restores the user's filters
on exit — every other warning (tsgu's ``ConvergenceWarning`` included) passes.
torch shows each notice once per process, so one hidden inside tsgu is not
shown again later for the user's own code.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["TORCH_SPARSE_NOTICES", "quiet_sparse_notices", "quietly"]

TORCH_SPARSE_NOTICES = (
    r"Sparse (CSR|CSC|BSR|BSC) tensor support is in beta state",
    r"Sparse invariant checks are implicitly disabled",
)

F = TypeVar("F", bound=Callable[..., Any])


def _compiling() -> bool:
    from tsgu_core.base.transforms import compiling  # imports torch, loaded by then: every caller handles tensors

    return compiling()


@contextlib.contextmanager
def quiet_sparse_notices() -> Iterator[None]:
    """Ignore torch's two sparse-tensor notices inside the block; nothing else changes."""
    with warnings.catch_warnings():
        for message in TORCH_SPARSE_NOTICES:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


def quietly(function: F) -> F:
    """``function`` run under :func:`quiet_sparse_notices`."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _compiling():  # Dynamo cannot trace warnings filters; a traced solve builds no sparse tensor
            return function(*args, **kwargs)
        with quiet_sparse_notices():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
