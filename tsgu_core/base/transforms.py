"""Whether tsgu runs under one of PyTorch's program transforms — answered without importing anything heavy.

``torch.compile`` traces Python and cannot hold a sparse tensor; ``torch.func``
(``grad``, ``vmap``, ``jvp``, …) and forward-mode AD wrap tensors in ways a
sparse tensor cannot follow, and ``vmap`` forbids reading a tensor's data in
Python. Under any of them tsgu takes the route of :mod:`tsgu_core.engine.traced`:
one opaque operator on dense index tensors.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = ["is_wrapped", "outside_graphs", "transformed"]

F = TypeVar("F", bound=Callable[..., Any])


def is_wrapped(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is seen through ``torch.func`` (vmap, grad, jvp, …) or carries a forward-mode tangent."""
    if torch._C._functorch.is_functorch_wrapped_tensor(tensor):
        return True
    if tensor.layout != torch.strided:  # torch cannot ask a sparse tensor for a tangent (it has no storage)
        return False
    return torch.autograd.forward_ad.unpack_dual(tensor).tangent is not None


def transformed(*tensors: torch.Tensor) -> bool:
    """Whether ``torch.compile`` is tracing, or any of ``tensors`` is seen through a transform."""
    return torch.compiler.is_compiling() or any(is_wrapped(t) for t in tensors if isinstance(t, torch.Tensor))


def outside_graphs(function: F) -> F:
    """``function`` never traced by ``torch.compile``: inside a compiled function it runs eagerly, a graph break.

    For the functions that take a sparse ``A``, which Dynamo cannot hold: left
    to Dynamo, it would skip their frame but still try to compile the frames
    they call. Importing Dynamo costs about a second, so the disabled variant
    is made on the first call that finds Dynamo loaded — nothing can be
    compiling before.
    """
    disabled: list[Callable[..., Any]] = []

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" not in sys.modules:
            return function(*args, **kwargs)
        if not disabled:
            disabled.append(torch.compiler.disable(function, recursive=True))
        return disabled[0](*args, **kwargs)

    return wrapper  # type: ignore[return-value]
