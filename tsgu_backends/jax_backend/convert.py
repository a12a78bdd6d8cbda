"""torch ↔ JAX through DLPack, and the per-call float64 scope.

JAX keeps 64-bit types off unless ``jax_enable_x64`` is set; tsgu never
changes that process-wide. :func:`precision` enables it only around a
float64 or complex128 call (``jax.enable_x64``), and leaves float32 and
complex64 calls as they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["from_jax", "precision", "to_jax"]


@contextlib.contextmanager
def precision(dtype: torch.dtype) -> Iterator[None]:
    """Run the body with JAX's 64-bit types enabled iff ``dtype`` is float64 or complex128."""
    import jax

    if dtype in (torch.float64, torch.complex128):
        with jax.enable_x64(True):
            yield
    else:
        yield


def to_jax(tensor: torch.Tensor) -> Any:
    """A torch tensor as a JAX array on the same device, without a copy where DLPack allows.

    Call inside :func:`precision` for float64 and complex128 tensors.
    """
    import jax.dlpack

    return jax.dlpack.from_dlpack(tensor.detach().contiguous())


def from_jax(array: Any) -> torch.Tensor:
    """A JAX array as a torch tensor, through DLPack."""
    return torch.from_dlpack(array)
