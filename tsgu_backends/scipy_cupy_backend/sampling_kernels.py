"""The numba kernel of :mod:`tsgu_backends.scipy_cupy_backend.sampling` (imported on first use only).

Compiled on first call (called in double precision only) and cached on disk as the selected-inversion kernels are
(:func:`tsgu_backends.numba_cache.attach_trusted_cache`: a folder only the user can write).
"""

from __future__ import annotations

import numba
import numpy as np

from tsgu_backends.numba_cache import attach_trusted_cache

__all__ = ["upper_solve"]


@numba.njit(nogil=True, error_model="numpy")
def upper_solve(
    ptr: np.ndarray, rows: np.ndarray, values: np.ndarray, diagonal: np.ndarray, B: np.ndarray
) -> np.ndarray:  # pragma: no cover - compiled
    """``U⁻¹ B``, in place in ``B`` ``(n, k)`` (C order), for an upper triangular ``U`` in CSC arrays.

    Column-oriented back substitution, last column first: ``x_j = b_j / U_jj``, then
    ``b_i −= U_ij x_j`` for the rows ``i < j`` stored in column ``j``; the ``k`` right-hand sides
    of a row are contiguous. ``O(nnz(U)·k)`` work.
    """
    n, k = B.shape
    for j in range(n - 1, -1, -1):
        pivot = diagonal[j]
        for c in range(k):
            B[j, c] /= pivot
        for t in range(ptr[j], ptr[j + 1]):
            i = rows[t]
            if i < j:
                u = values[t]
                for c in range(k):
                    B[i, c] -= u * B[j, c]
    return B


CACHE = attach_trusted_cache([upper_solve], what="Gaussian sampling (the ldlt factor's triangular solve)", stacklevel=1)
