"""Whether tsgu runs under one of PyTorch's program transforms — answered without importing anything heavy.

``torch.compile`` traces Python and cannot hold a sparse tensor; ``torch.func``
(``grad``, ``vmap``, ``jvp``, …) and forward-mode AD wrap tensors in ways a
sparse tensor cannot follow, and ``vmap`` forbids reading a tensor's data in
Python. Under any of them tsgu takes the route of :mod:`tsgu_core.engine.traced`:
one opaque operator on dense index tensors.

Every answer here is about the *calling thread*. ``torch.compiler.is_compiling()``
is a process-wide flag, true in every thread while any one thread compiles;
:func:`compiling` asks what is true for the caller (see there), so a solve in
one thread is not mistaken for a traced one while another thread compiles.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = ["compiling", "is_wrapped", "outside_graphs", "transformed"]

F = TypeVar("F", bound=Callable[..., Any])


def is_wrapped(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is seen through ``torch.func`` (vmap, grad, jvp, …) or carries a forward-mode tangent."""
    if torch._C._functorch.is_functorch_wrapped_tensor(tensor):
        return True
    if tensor.layout != torch.strided:  # torch cannot ask a sparse tensor for a tangent (it has no storage)
        return False
    return torch.autograd.forward_ad.unpack_dual(tensor).tangent is not None


_TRACING_MODES = (
    torch._C._TorchDispatchModeKey.FAKE,
    torch._C._TorchDispatchModeKey.PROXY,
    torch._C._TorchDispatchModeKey.FUNCTIONAL,
)


def compiling() -> bool:
    """Whether ``torch.compile`` (or ``torch.export``) is tracing the calling thread's code now.

    * While Dynamo traces, ``torch.compiler.is_dynamo_compiling()`` reads as true (Dynamo folds it to a
      constant); run eagerly it is false.
    * Otherwise a graph is being traced in this thread only inside a compile session
      (``torch.compiler.is_compiling()``, process-wide) *and* with this thread's own evidence: a
      tracing context (``torch._guards.TracingContext``, thread-local) or one of the tracing
      dispatch modes — fake tensors, proxies, functionalization — active on this thread (torch keeps
      the mode stack per thread). AOTAutograd's and ``make_fx``'s traces leave both.

    A thread that merely runs eagerly while another thread compiles gets ``False``.
    """
    if torch.compiler.is_dynamo_compiling():
        return True
    if not torch.compiler.is_compiling():  # nothing compiles in this process: the cheap common answer
        return False
    if torch._guards.TracingContext.try_get() is not None:
        return True
    return any(torch._C._get_dispatch_mode(key) is not None for key in _TRACING_MODES)


def transformed(*tensors: torch.Tensor) -> bool:
    """Whether ``torch.compile`` is tracing this thread, or any of ``tensors`` is seen through a transform."""
    return compiling() or any(is_wrapped(t) for t in tensors if isinstance(t, torch.Tensor))


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
