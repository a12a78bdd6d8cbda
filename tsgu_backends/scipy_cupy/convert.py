"""torch sparse ↔ SciPy / CuPy sparse, without copying values where the layouts allow.

* CPU: ``Tensor.numpy()`` shares memory, so a CSR tensor becomes a
  ``scipy.sparse.csr_matrix`` over the same buffers; a coalesced COO tensor
  becomes a ``coo_matrix`` over its indices and values.
* CUDA: ``cupy.from_dlpack`` / ``torch.from_dlpack`` share device memory.

Index arrays keep their dtype (int32 or int64). The reverse direction
(:func:`scipy_to_torch`, :func:`cupy_to_torch`) returns COO or CSR tensors.
"""

from __future__ import annotations

from typing import Any

import torch

from tsgu_core.errors import DeviceMismatchError, LayoutError

__all__ = ["cupy_to_torch", "scipy_to_torch", "torch_to_cupy", "torch_to_scipy"]


def _parts(A: torch.Tensor) -> tuple[str, tuple[torch.Tensor, ...]]:
    A = A.detach()
    if A.layout == torch.sparse_csr:
        return "csr", (A.values(), A.col_indices(), A.crow_indices())
    if A.layout == torch.sparse_coo:
        A = A if A.is_coalesced() else A.coalesce()
        indices = A.indices()
        return "coo", (A.values(), indices[0], indices[1])
    raise LayoutError(f"expected a sparse COO or CSR tensor, got layout {A.layout}")


def torch_to_scipy(A: torch.Tensor) -> Any:
    """A CPU sparse COO/CSR tensor as a SciPy ``coo_matrix``/``csr_matrix`` sharing its memory.

    >>> import torch
    >>> A = torch.eye(3, dtype=torch.float64).to_sparse_csr()
    >>> M = torch_to_scipy(A)
    >>> type(M).__name__, M.shape
    ('csr_matrix', (3, 3))
    """
    import scipy.sparse as sp

    if A.device.type != "cpu":
        raise DeviceMismatchError(
            f"torch_to_scipy needs a CPU tensor, got one on {A.device}; use torch_to_cupy for CUDA"
        )
    kind, (values, first, second) = _parts(A)
    if kind == "csr":
        return sp.csr_matrix((values.numpy(), first.numpy(), second.numpy()), shape=tuple(A.shape), copy=False)
    return sp.coo_matrix((values.numpy(), (first.numpy(), second.numpy())), shape=tuple(A.shape), copy=False)


def scipy_to_torch(M: Any, layout: torch.layout = torch.sparse_csr) -> torch.Tensor:
    """A SciPy sparse matrix as a torch COO or CSR tensor: :func:`tsgu_core.from_scipy`.

    >>> import scipy.sparse as sp, torch
    >>> scipy_to_torch(sp.eye(2, format="csr")).layout
    torch.sparse_csr
    """
    from tsgu_core.interop import from_scipy

    return from_scipy(M, layout)


def torch_to_cupy(A: torch.Tensor) -> Any:
    """A CUDA sparse COO/CSR tensor as a ``cupyx.scipy.sparse`` matrix, through DLPack (no copy)."""
    import cupy
    import cupyx.scipy.sparse as csp

    if A.device.type != "cuda":
        raise DeviceMismatchError(
            f"torch_to_cupy needs a CUDA tensor, got one on {A.device}; use torch_to_scipy for CPU"
        )
    kind, arrays = _parts(A)
    values, first, second = (cupy.from_dlpack(t.contiguous()) for t in arrays)
    if kind == "csr":
        return csp.csr_matrix((values, first, second), shape=tuple(A.shape))
    return csp.coo_matrix((values, (first, second)), shape=tuple(A.shape))


def cupy_to_torch(M: Any, layout: torch.layout = torch.sparse_csr) -> torch.Tensor:
    """A ``cupyx.scipy.sparse`` matrix as a CUDA torch COO or CSR tensor: :func:`tsgu_core.from_cupy`."""
    from tsgu_core.interop import from_cupy

    return from_cupy(M, layout)
