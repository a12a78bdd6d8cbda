"""Batches of matrices that share one sparsity pattern, ``A`` of shape ``(b, n, n)``.

The core hands every backend a batch in one form: a detached batched CSR
tensor (``crow_indices`` ``(b, n + 1)``, ``col_indices`` and ``values``
``(b, nnz)``) whose members have identical ``crow_indices`` and
``col_indices``. A coalesced COO batch is sorted by (member, row, column), so
its values, reshaped to ``(b, nnz)``, are already in that CSR order.
"""

from __future__ import annotations

import torch

from tsgu_core.errors import ShapeError

__all__ = ["as_shared_pattern_csr"]


def _differs(name: str, member: int) -> ShapeError:
    return ShapeError(
        f"a batched A must share one sparsity pattern, but member {member} differs from member 0 in {name}; "
        "store explicit zeros so every member has the same pattern, or solve the members separately"
    )


def as_shared_pattern_csr(A: torch.Tensor) -> torch.Tensor:
    """A detached batched CSR copy-free view of ``A`` ``(b, n, n)``, checking the shared pattern.

    Parameters
    ----------
    A : Tensor
        Coalesced COO with three sparse dimensions, or batched CSR.

    Raises
    ------
    ShapeError
        If the members' patterns differ.
    """
    A = A.detach()
    batch, n = A.shape[0], A.shape[-1]
    if A.layout == torch.sparse_csr:
        crow, col = A.crow_indices(), A.col_indices()
        for name, index in (("row pointers", crow), ("column indices", col)):
            mismatch = (index != index[:1]).any(dim=1).nonzero()
            if mismatch.numel():
                raise _differs(name, int(mismatch[0]))
        return A
    indices, values = A._indices(), A._values()
    counts = torch.bincount(indices[0], minlength=batch)
    uneven = (counts != counts[:1]).nonzero()
    if uneven.numel():
        raise _differs("a number of stored entries", int(uneven[0]))
    nnz = int(counts[0]) if batch else 0
    rows, cols = indices[1].reshape(batch, nnz), indices[2].reshape(batch, nnz)
    for name, index in (("row indices", rows), ("column indices", cols)):
        mismatch = (index != index[:1]).any(dim=1).nonzero()
        if mismatch.numel():
            raise _differs(name, int(mismatch[0]))
    crow = torch.zeros(n + 1, dtype=indices.dtype, device=A.device)
    if batch:
        crow[1:] = torch.cumsum(torch.bincount(rows[0], minlength=n), 0)
    return torch.sparse_csr_tensor(
        crow.expand(batch, n + 1).contiguous(),
        cols.contiguous(),
        values.reshape(batch, nnz),
        A.shape,
        check_invariants=False,
    )
