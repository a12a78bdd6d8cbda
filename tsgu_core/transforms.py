"""Whether tsgu runs under one of PyTorch's program transforms — answered without importing anything heavy.

``torch.compile`` traces Python and cannot hold a sparse tensor; ``torch.func``
(``grad``, ``vmap``, ``jvp``, …) and forward-mode AD wrap tensors in ways a
sparse tensor cannot follow, and ``vmap`` forbids reading a tensor's data in
Python. Under any of them tsgu takes the route of :mod:`tsgu_core.traced`:
one opaque operator on dense index tensors.
"""

from __future__ import annotations

import torch

__all__ = ["is_wrapped", "transformed"]


def is_wrapped(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is seen through ``torch.func`` (vmap, grad, jvp, …) or carries a forward-mode tangent."""
    if torch._C._functorch.is_functorch_wrapped_tensor(tensor):
        return True
    return torch.autograd.forward_ad.unpack_dual(tensor).tangent is not None


def transformed(*tensors: torch.Tensor) -> bool:
    """Whether ``torch.compile`` is tracing, or any of ``tensors`` is seen through a transform."""
    return torch.compiler.is_compiling() or any(is_wrapped(t) for t in tensors if isinstance(t, torch.Tensor))
