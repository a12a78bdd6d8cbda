"""The sparsity pattern of ``A`` as the core sees it: stored (row, col) pairs.

The core needs two products over the stored entries only, both
``O(nnz·k)`` and never ``O(n²)``:

* ``A @ X`` and ``Aᵀ @ X`` from the values, for the true-residual check;
* the gradient at the stored entries, ``grad[k] = −⟨S[row_k], X[col_k]⟩``.

Both have a differentiable form written with gather/scatter on the index
lists (second derivatives go through it; it runs on any device) and, for a
pattern in CSR order, a fast form on torch's sparse kernels — a CSR product
for ``A @ X`` and ``torch.sparse.sampled_addmm`` for the gradient — used when
no graph is being recorded. Measured on the CPU (n = 1e5, nnz = 5e5, k = 8,
one thread): 1.8 ms against 25 ms for the product, 12 ms against 45 ms for
the gradient.

What differs between kinds of pattern is said by overriding methods, one
mechanism for all: the products (:meth:`SparsePattern.matmul`,
:meth:`~SparsePattern.outer_at_entries`), the norms the convergence policy takes
(:meth:`~SparsePattern.column_norms`, :meth:`~SparsePattern.matrix_norm`) and
the structure checks behind ``assume=`` (:meth:`~SparsePattern.asymmetry`,
:meth:`~SparsePattern.first_bad_diagonal`). :class:`UnitDiagonalPattern` adds
an implicit unit diagonal; a distributed pattern
(:class:`tsgu_core.api.distributed.DistributedPattern`) exchanges ghost rows and
reduces over processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from tsgu_core.base.transforms import transformed
from tsgu_core.errors import InvalidArgumentError
from tsgu_core.plugins.kit.csr import row_indices, row_pointers, transpose_csr
from tsgu_core.plugins.norms import scaled_norm

__all__ = ["SparsePattern", "UnitDiagonalPattern"]

_SAMPLED_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


@dataclass(frozen=True)
class SparsePattern:
    """Where a sparse matrix stores its entries: row and column index of each, in ``values`` order.

    Built by :meth:`of` from a torch COO or CSR tensor (or a batch whose
    members share one pattern). It holds only dense index tensors and the
    size, so it can be passed where torch's sparse tensors cannot go
    (``torch.compile``, ``torch.func``), and it gives backends the index
    work they all need — CSR arrays in the index dtype they want, the
    transpose, the diagonal — written once.

    Value order: CSR order, i.e. sorted by row, then column. That is the
    order of ``A.values()`` for a CSR tensor and of a *coalesced* COO
    tensor's ``A.values()``; an uncoalesced COO tensor must be coalesced
    first (``A.coalesce()``, which sums duplicates).

    Attributes
    ----------
    row, col : Tensor
        int64 index tensors of length nnz.
    n : int
        The number of columns (and, for a square matrix, of rows).
    crow : Tensor or None
        int64 row pointers when the entries are in CSR order (always, when
        built by :meth:`of`), which enables the fast kernels.

    Examples
    --------
    >>> import torch
    >>> A = torch.tensor([[2.0, 0.0], [1.0, 3.0]]).to_sparse_csr()
    >>> pattern = SparsePattern.of(A)
    >>> pattern.row.tolist(), pattern.col.tolist(), pattern.nnz
    ([0, 1, 1], [0, 0, 1], 3)
    >>> transposed, order = pattern.transposed()
    >>> transposed.col.tolist(), order.tolist()  # Aᵀ's values are A.values()[order]
    ([0, 1, 1], [0, 1, 2])
    """

    row: torch.Tensor
    col: torch.Tensor
    n: int
    crow: torch.Tensor | None = None

    @classmethod
    def of(cls, A: torch.Tensor) -> SparsePattern:
        """The pattern of a coalesced COO or a CSR tensor, ``(m, n)`` or a shared-pattern batch ``(b, n, n)``.

        A batch gives its members' common pattern (see
        :func:`tsgu_core.sparse.batch.as_shared_pattern_csr`); its values are then
        ``(b, nnz)`` in this order.

        Raises
        ------
        InvalidArgumentError
            For an uncoalesced COO tensor: its stored order is not the order
            the pattern's values follow, and it may store an entry twice
            (``solve_values(A, …)`` refuses it for the same reason). Coalesce
            it first (``A = A.coalesce()`` sums duplicates), then pass
            ``A.values()``.
        """
        if A.layout == torch.sparse_coo and not A.is_coalesced():
            raise InvalidArgumentError(
                "SparsePattern.of needs a coalesced COO tensor: an uncoalesced one stores entries out of order "
                "(and possibly twice), so its values would be read against the wrong pattern; use "
                "A = A.coalesce() (duplicates are summed) and pass A.values()"
            )
        if A.dim() == 3:
            from tsgu_core.sparse.batch import as_shared_pattern_csr

            shared = as_shared_pattern_csr(A)
            return cls.from_csr(shared.crow_indices()[0], shared.col_indices()[0], A.shape[-1])
        if A.layout == torch.sparse_coo:
            row, col = A._indices().to(torch.int64)
            return cls(row, col, A.shape[1], row_pointers(row, A.shape[0]))
        return cls.from_csr(A.crow_indices(), A.col_indices(), A.shape[1])

    @classmethod
    def from_rows(cls, row: torch.Tensor, col: torch.Tensor, n: int, rows: int | None = None) -> SparsePattern:
        """The pattern of entries ``(row, col)`` already sorted by row (as CSR order is), with row pointers."""
        row = row.to(torch.int64)
        return cls(row, col.to(torch.int64), n, row_pointers(row, n if rows is None else rows))

    @classmethod
    def from_csr(cls, crow: torch.Tensor, col: torch.Tensor, n: int) -> SparsePattern:
        """The pattern given by CSR row pointers and column indices (any integer dtype)."""
        crow = crow.to(torch.int64)
        return cls(row_indices(crow), col.to(torch.int64), n, crow)

    @property
    def nnz(self) -> int:
        """The number of stored entries."""
        return self.col.numel()

    @property
    def rows(self) -> int:
        """The number of rows (``n`` unless the pattern is of a non-square matrix)."""
        return self.crow.numel() - 1 if self.crow is not None else self.n

    def csr_indices(self, dtype: torch.dtype = torch.int64) -> tuple[torch.Tensor, torch.Tensor]:
        """``(crow, col)`` in ``dtype`` (e.g. ``torch.int32`` for faster kernels and for JAX/cuSPARSE)."""
        assert self.crow is not None, "only a pattern in CSR order has row pointers"
        return self.crow.to(dtype), self.col.to(dtype)

    def to_csr(self, values: torch.Tensor, index_dtype: torch.dtype = torch.int64) -> torch.Tensor:
        """A torch CSR tensor with this pattern and ``values`` (shape ``(nnz,)``), sharing ``values``."""
        crow, col = self.csr_indices(index_dtype)
        return torch.sparse_csr_tensor(crow, col, values, (self.rows, self.n), check_invariants=False)

    def transposed(self) -> tuple[SparsePattern, torch.Tensor]:
        """The pattern of ``Aᵀ`` in CSR order, and ``order`` such that ``Aᵀ``'s values are ``values[..., order]``."""
        crow, col, order = self._transposed
        return SparsePattern(self.col[order], col, self.rows, crow), order

    def diagonal(self, values: torch.Tensor) -> torch.Tensor:
        """The diagonal for ``values`` (``(..., nnz)``), dense ``(..., n)``, with zeros where nothing is stored."""
        on_diagonal = self.row == self.col
        diagonal = values.new_zeros(*values.shape[:-1], min(self.rows, self.n))
        return diagonal.index_add(-1, self.row[on_diagonal], values[..., on_diagonal])

    def _fast(self, *tensors: torch.Tensor, values: torch.Tensor | None = None) -> bool:
        """Whether the torch sparse kernels may serve: CSR order, one matrix, no graph to record.

        Never while ``torch.compile`` traces or for tensors ``torch.func`` wraps: neither can hold a
        sparse tensor, and the index form serves them exactly.
        """
        every = tensors if values is None else (*tensors, values)
        return (
            self.crow is not None
            and self.n == self.crow.numel() - 1
            and all(t.dim() == 2 for t in tensors)
            and (values is None or values.dim() == 1)
            and not (torch.is_grad_enabled() and any(t.requires_grad for t in every))
            and not transformed(*every)
        )

    def _fast_batch(self, values: torch.Tensor, X: torch.Tensor) -> bool:
        """Whether a batch (``values`` ``(b, nnz)``, ``X`` ``(b, n, k)``) is worth one fast product per member."""
        return (
            values.dim() == 2
            and X.dim() == 3
            and values.shape[0] == X.shape[0]
            and self.nnz >= _MEMBER_PRODUCT_NNZ
            and self._fast(X[0], values=values[0])
            and not (torch.is_grad_enabled() and (values.requires_grad or X.requires_grad))
        )

    @cached_property
    def _transposed(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(crow, col, order)`` of ``Aᵀ`` in CSR order: ``Aᵀ``'s values are ``values[order]``."""
        return transpose_csr(self.row, self.col, self.n)

    def matmul(self, values: torch.Tensor, X: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
        """``A @ X`` (or ``Aᵀ @ X``) for ``values`` ``(..., nnz)`` and ``X`` ``(..., n, k)``.

        Leading dimensions are a batch of matrices sharing this pattern.
        """
        return self._stored_matmul(values, X, transpose)

    def _stored_matmul(self, values: torch.Tensor, X: torch.Tensor, transpose: bool) -> torch.Tensor:
        """The product over the stored entries only (what a subclass's :meth:`matmul` adds its terms to)."""
        if self._fast(X, values=values):
            if transpose:
                crow, col, order = self._transposed
                matrix = torch.sparse_csr_tensor(crow, col, values[order], (self.n, self.n), check_invariants=False)
            else:
                matrix = self.to_csr(values)
            return (matrix @ X[:, 0]).unsqueeze(1) if X.shape[1] == 1 else matrix @ X
        if self._fast_batch(values, X):
            # one CSR product per member: measured (CPU, one thread, 32 members of n = 1e4, 5e4 entries each)
            # 1.7 ms against 28 ms for the gathers and index_add below
            return torch.stack(
                [self._stored_matmul(member, rhs, transpose) for member, rhs in zip(values, X, strict=True)]
            )
        source, target = (self.row, self.col) if transpose else (self.col, self.row)
        dim = X.dim() - 2
        products = values.unsqueeze(-1) * X.index_select(dim, source)
        return torch.zeros_like(X).index_add(dim, target, products)

    def column_norms(self, X: torch.Tensor) -> torch.Tensor:
        """The 2-norm of every column of ``X`` ``(..., n, k)``, shape ``(..., k)``, scale-safe.

        Free of underflow and overflow (:func:`~tsgu_core.plugins.norms.scaled_norm`).
        A distributed pattern (rows spread over processes) reduces over every
        process here; this one has all rows locally.
        """
        return scaled_norm(X, dim=-2)

    def matrix_norm(self, values: torch.Tensor) -> torch.Tensor:
        """``‖A‖_F`` for ``values`` ``(..., nnz)``, shape ``(...)``, scale-safe (implicit entries included)."""
        return self.column_norms(values.unsqueeze(-1)).squeeze(-1)

    def asymmetry(self, values: torch.Tensor, *, conjugate: bool = False) -> float:
        """``max |a_ij − a_ji| / max |a_ij|`` (0 for a zero matrix); ``values`` ``(..., nnz)``, batches included.

        With ``conjugate``, ``max |a_ij − conj(a_ji)| / max |a_ij|``: how far ``A`` is from Hermitian.
        Cost: for a structurally symmetric pattern in CSR order one sort of the column indices
        (:meth:`mirror_order`, cached and reused by the backward's transposed products); otherwise the
        entries are paired by key with ``torch.unique``.
        """
        if values.numel() == 0:
            return 0.0
        mirrored = values.conj() if conjugate and values.is_complex() else values
        mirror = self.mirror_order()
        if mirror is not None:  # a_ji is values[mirror] at each stored (i, j)
            difference = values - mirrored[..., mirror]
        else:  # pair the entries by key: (i, j) gathers +a_ij and −a_ji
            n = self.n
            key = torch.cat([self.row * n + self.col, self.col * n + self.row])
            unique, inverse = torch.unique(key, return_inverse=True)
            signed = torch.cat([values, -mirrored], dim=-1)
            difference = values.new_zeros(*values.shape[:-1], unique.numel()).index_add(-1, inverse, signed)
        scale = values.abs().max()
        return float(difference.abs().max() / scale) if bool(scale > 0) else 0.0

    def mirror_order(self) -> torch.Tensor | None:
        """For a structurally symmetric square pattern in CSR order, ``order`` with ``a_ji = values[order]``.

        ``None`` for any other pattern. Aᵀ's pattern in CSR order equals A's exactly when the pattern is
        symmetric, and then Aᵀ's values, ``values[order]``, sit at A's positions. Measured on the CPU at
        n = 1e5, nnz = 5e5: ~5 ms against ~50 ms for pairing by key with ``torch.unique``.
        """
        if self.crow is None or self.rows != self.n:
            return None
        transposed, order = self.transposed()
        crow = transposed.crow
        if crow is not None and torch.equal(crow, self.crow) and torch.equal(transposed.col, self.col):
            return order
        return None

    def first_bad_diagonal(self, values: torch.Tensor) -> tuple[int, bool] | None:
        """The first row whose diagonal entry is unstored or not positive, and whether it is stored; else None.

        ``values`` ``(..., nnz)`` of a Hermitian ``A`` (a real diagonal); a batch fails at a row where any
        member fails.
        """
        diagonal = self.diagonal(values).real
        stored = torch.zeros(self.n, dtype=torch.bool, device=self.row.device)
        stored[self.row[self.row == self.col]] = True
        bad = (~stored) | (diagonal <= 0).reshape(-1, self.n).any(0)
        if not bool(bad.any()):
            return None
        row = int(bad.nonzero()[0])
        return row, bool(stored[row])

    def outer_at_entries(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """``(left @ rightᵀ)`` at the stored entries: ``Σ_c left[row, c]·right[col, c]``, shape ``(..., nnz)``.

        No conjugation: for complex operands conjugate one first (see
        :func:`tsgu_core.engine.autograd.values_gradient`).
        """
        # torch's sampled_addmm serves float32/64 and complex64/128 (checked with torch 2.13 on the CPU)
        if self._fast(left, right) and left.dtype in _SAMPLED_DTYPES and not (left.is_conj() or right.is_conj()):
            pattern = self.to_csr(torch.zeros(self.col.numel(), dtype=left.dtype, device=left.device))
            sampled: torch.Tensor = torch.sparse.sampled_addmm(pattern, left, right.T, beta=0.0)
            return sampled.values()
        dim = left.dim() - 2
        return (left.index_select(dim, self.row) * right.index_select(dim, self.col)).sum(-1)


_MEMBER_PRODUCT_NNZ = 1024  # below it, a Python loop over members costs more than the gathers it saves


@dataclass(frozen=True)
class UnitDiagonalPattern(SparsePattern):
    """A pattern whose matrix also has an implicit (unstored) unit diagonal: ``A = I + stored``.

    The implicit ones have no values, so they take no gradient.
    """

    def matmul(self, values: torch.Tensor, X: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
        return super().matmul(values, X, transpose=transpose) + X

    def matrix_norm(self, values: torch.Tensor) -> torch.Tensor:
        stored = super().matrix_norm(values)
        return torch.hypot(stored, torch.tensor(float(self.n), dtype=stored.dtype, device=stored.device).sqrt())
