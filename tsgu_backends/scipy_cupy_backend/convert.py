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

__all__ = ["cupy_to_torch", "scipy_to_torch", "torch_to_cupy", "torch_to_scipy"]


def torch_to_scipy(A: torch.Tensor) -> Any:
    """A CPU sparse COO/CSR tensor as a SciPy ``coo_matrix``/``csr_matrix`` sharing its memory.

    :func:`tsgu_core.to_scipy` with ``matrix=True`` (the legacy matrix types, which the backends use).

    >>> import torch
    >>> A = torch.eye(3, dtype=torch.float64).to_sparse_csr()
    >>> M = torch_to_scipy(A)
    >>> type(M).__name__, M.shape
    ('csr_matrix', (3, 3))
    """
    from tsgu_core.sparse.interop import to_scipy

    return to_scipy(A, matrix=True)


def scipy_to_torch(M: Any, layout: torch.layout = torch.sparse_csr) -> torch.Tensor:
    """A SciPy sparse matrix as a torch COO or CSR tensor: :func:`tsgu_core.from_scipy`.

    >>> import scipy.sparse as sp, torch
    >>> scipy_to_torch(sp.eye(2, format="csr")).layout
    torch.sparse_csr
    """
    from tsgu_core.sparse.interop import from_scipy

    return from_scipy(M, layout)


def torch_to_cupy(A: torch.Tensor) -> Any:
    """A CUDA sparse COO/CSR tensor as a ``cupyx.scipy.sparse`` matrix, through DLPack: :func:`tsgu_core.to_cupy`."""
    from tsgu_core.sparse.interop import to_cupy

    return to_cupy(A)


def cupy_to_torch(M: Any, layout: torch.layout = torch.sparse_csr) -> torch.Tensor:
    """A ``cupyx.scipy.sparse`` matrix as a CUDA torch COO or CSR tensor: :func:`tsgu_core.from_cupy`."""
    from tsgu_core.sparse.interop import from_cupy

    return from_cupy(M, layout)
