"""The sparsity pattern of ``A`` as the core sees it: stored (row, col) pairs.

The core needs two products over the stored entries only, both
``O(nnz·k)`` and never ``O(n²)``:

* ``A @ X`` and ``Aᵀ @ X`` from the values, for the true-residual check;
* the gradient at the stored entries, ``grad[k] = −⟨S[row_k], X[col_k]⟩``.

Both are written with gather/scatter on the index lists so that they are
differentiable (second derivatives go through them) and run unchanged on any
device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SparsePattern", "UnitDiagonalPattern"]


@dataclass(frozen=True)
class SparsePattern:
    """Row and column index of every stored entry, in ``A.values()`` order.

    Attributes
    ----------
    row, col : Tensor
        int64 index tensors of length nnz.
    n : int
        The matrix size.
    """

    row: torch.Tensor
    col: torch.Tensor
    n: int

    @classmethod
    def of(cls, A: torch.Tensor) -> SparsePattern:
        """The pattern of a coalesced COO or a CSR tensor, in its values' order."""
        if A.layout == torch.sparse_coo:
            indices = A._indices().to(torch.int64)
            return cls(indices[0], indices[1], A.shape[0])
        crow = A.crow_indices().to(torch.int64)
        counts = crow[1:] - crow[:-1]
        row = torch.repeat_interleave(torch.arange(A.shape[0], device=A.device), counts)
        return cls(row, A.col_indices().to(torch.int64), A.shape[0])

    def matmul(self, values: torch.Tensor, X: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
        """``A @ X`` (or ``Aᵀ @ X``) for ``values`` ``(..., nnz)`` and ``X`` ``(..., n, k)``.

        Leading dimensions are a batch of matrices sharing this pattern.
        """
        source, target = (self.row, self.col) if transpose else (self.col, self.row)
        dim = X.dim() - 2
        products = values.unsqueeze(-1) * X.index_select(dim, source)
        return torch.zeros_like(X).index_add(dim, target, products)

    def column_norms(self, X: torch.Tensor) -> torch.Tensor:
        """The 2-norm of every column of ``X`` ``(..., n, k)``, shape ``(..., k)``.

        A distributed pattern (rows spread over processes) reduces over every
        process here; this one has all rows locally.
        """
        return torch.linalg.vector_norm(X, dim=-2)

    def outer_at_entries(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """``(left @ rightᵀ)`` at the stored entries: ``⟨left[row], right[col]⟩``, shape ``(..., nnz)``."""
        dim = left.dim() - 2
        return (left.index_select(dim, self.row) * right.index_select(dim, self.col)).sum(-1)


@dataclass(frozen=True)
class UnitDiagonalPattern(SparsePattern):
    """A pattern whose matrix also has an implicit (unstored) unit diagonal: ``A = I + stored``.

    The implicit ones have no values, so they take no gradient.
    """

    def matmul(self, values: torch.Tensor, X: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
        return super().matmul(values, X, transpose=transpose) + X
