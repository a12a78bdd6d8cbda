"""The numba kernels of :mod:`tsgu_backends.scipy_cupy_backend.selinv` (imported on first use only).

Compiled on first call per dtype and kept on disk in the folder only the user
can write of :mod:`tsgu_backends.numba_cache` (``$TSGU_KERNEL_CACHE``, ``off``
disables it, else ``~/.cache/tsgu/kernels``): numba's cache files are pickles,
so a file is loaded only when no one else could have written it, and a folder
another user could write is refused with a warning (the kernels are then
compiled in memory). Entries are keyed by this file's SHA-256 and the CPU, so
a new process loads the kernels instead of compiling them, never stale code.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from tsgu_backends.numba_cache import attach_trusted_cache

KERNELS: list[Any] = []  # every dispatcher below, given the trusted disk cache at the end of this module


def _kernel(**options: Any) -> Any:
    """``numba.njit(**options)`` that also lists the dispatcher in :data:`KERNELS` (no ``cache=True``: numba's own
    cache folder is next to this file or user-wide, and loads any pickle found there)."""

    def decorate(function: Any) -> Any:
        dispatcher = numba.njit(**options)(function)
        KERNELS.append(dispatcher)
        return dispatcher

    return decorate


jit = _kernel(nogil=True, error_model="numpy")
# reassociation lets the dense inner products vectorize; no assumption about NaN or infinities
vectorized = _kernel(nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})


@jit
def parity(perm: Any) -> int:  # pragma: no cover - compiled
    n = perm.shape[0]
    seen = np.zeros(n, dtype=np.bool_)
    swaps = 0
    for start in range(n):
        if seen[start]:
            continue
        length = 0
        k = start
        while not seen[k]:
            seen[k] = True
            k = perm[k]
            length += 1
        swaps += length - 1
    return 1 - 2 * (swaps % 2)


@jit
def lower_rows(n: int, lptr: Any, lrows: Any, uptr: Any, urows: Any, a: Any, b: Any) -> Any:  # pragma: no cover
    """Rows of the strictly lower pattern ``L + Uᵀ + {(max(a,b), min(a,b))}`` (counting sort; repeats kept)."""
    pointers = np.zeros(n + 1, dtype=np.int64)
    for ptr, rows in ((lptr, lrows), (uptr, urows)):
        for j in range(n):
            for p in range(ptr[j], ptr[j + 1]):
                if rows[p] > j:
                    pointers[rows[p] + 1] += 1
    for t in range(a.shape[0]):
        if a[t] != b[t]:
            pointers[max(a[t], b[t]) + 1] += 1
    for i in range(n):
        pointers[i + 1] += pointers[i]
    columns = np.empty(pointers[n], dtype=np.int64)
    fill = pointers[:n].copy()
    for ptr, rows in ((lptr, lrows), (uptr, urows)):
        for j in range(n):
            for p in range(ptr[j], ptr[j + 1]):
                i = rows[p]
                if i > j:
                    columns[fill[i]] = j
                    fill[i] += 1
    for t in range(a.shape[0]):
        if a[t] != b[t]:
            i = max(a[t], b[t])
            columns[fill[i]] = min(a[t], b[t])
            fill[i] += 1
    return pointers, columns


@jit
def etree(lower_ptr: Any, lower_col: Any, n: int) -> Any:  # pragma: no cover - compiled
    """Elimination tree of a symmetric pattern given by its strictly lower rows (row i: columns k < i)."""
    parent = np.full(n, -1, dtype=np.int64)
    ancestor = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        for p in range(lower_ptr[i], lower_ptr[i + 1]):
            k = lower_col[p]
            while k != -1 and k < i:
                following = ancestor[k]
                ancestor[k] = i
                if following == -1:
                    parent[k] = i
                k = following
    return parent


@jit
def symbolic(lower_ptr: Any, lower_col: Any, parent: Any, n: int) -> Any:  # pragma: no cover - compiled
    """Strictly lower pattern of the Cholesky factor, by columns (rows sorted), from the row subtrees."""
    mark = np.full(n, -1, dtype=np.int64)
    counts = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):  # pass 1: column counts
        mark[i] = i
        for p in range(lower_ptr[i], lower_ptr[i + 1]):
            k = lower_col[p]
            while k != -1 and k < i and mark[k] != i:
                mark[k] = i
                counts[k + 1] += 1
                k = parent[k]
    for k in range(n):
        counts[k + 1] += counts[k]
    rows = np.empty(counts[n], dtype=np.int64)
    fill = counts[:n].copy()
    mark[:] = -1
    for i in range(n):  # pass 2: rows in increasing order, so each column's rows come out sorted
        mark[i] = i
        for p in range(lower_ptr[i], lower_ptr[i + 1]):
            k = lower_col[p]
            while k != -1 and k < i and mark[k] != i:
                mark[k] = i
                rows[fill[k]] = i
                fill[k] += 1
                k = parent[k]
    return counts, rows


@jit
def scatter(cptr: Any, crows: Any, fptr: Any, frows: Any, fvals: Any, scale: Any, out: Any) -> None:  # pragma: no cover
    """``out[p] = fvals[q] / scale[j]`` for each strictly lower entry (row, j) of the CSC factor ``f``."""
    n = cptr.shape[0] - 1
    where = np.full(n, -1, dtype=np.int64)
    for j in range(n):
        for p in range(cptr[j], cptr[j + 1]):
            where[crows[p]] = p
        for q in range(fptr[j], fptr[j + 1]):
            i = frows[q]
            if i > j:
                out[where[i]] = fvals[q] / scale[j]


@jit
def chained(cptr: Any, crows: Any, k: int) -> Any:  # pragma: no cover - compiled
    """Whether column ``k``'s rows are ``{k + 1}`` plus column ``k + 1``'s rows (one supernode)."""
    count = cptr[k + 1] - cptr[k]
    return count > 0 and crows[cptr[k]] == k + 1 and count == cptr[k + 2] - cptr[k + 1] + 1


@jit
def gather_block(cptr: Any, crows: Any, z_low: Any, z_up: Any, z_diag: Any, column: int, out: Any, offset: int) -> None:
    """``out[offset:, offset:] = Z[S, S]`` for ``S`` the rows below the diagonal of ``column`` (a clique of C)."""
    s_start, s_stop = cptr[column], cptr[column + 1]
    for s in range(s_stop - s_start):
        a = crows[s_start + s]
        x = offset + s
        out[x, x] = z_diag[a]
        q, end = cptr[a], cptr[a + 1]
        for u in range(s + 1, s_stop - s_start):
            b = crows[s_start + u]
            while q < end - 1 and crows[q] != b:
                q += 1
            out[offset + u, x] = z_low[q]
            out[x, offset + u] = z_up[q]


@jit
def blocked(
    cptr: Any,
    crows: Any,
    lower: Any,
    upper: Any,
    diagonal: Any,
    z_low: Any,
    z_up: Any,
    z_diag: Any,
    first: int,
    last: int,
) -> None:  # pragma: no cover - compiled
    """One supernode ``F = first..last`` with dense BLAS-3 products (``S``: the rows below it).

    ``Z_SF = −Z_SS L_SF L_FF⁻¹``, ``Z_FS = −Ũ_FF⁻¹ Ũ_FS Z_SS`` and
    ``Z_FF = (Ũ_FF⁻¹ D_F⁻¹ − Z_FS L_SF) L_FF⁻¹`` (the recurrences, one block at a time).
    """
    w = last - first + 1
    s = cptr[last + 1] - cptr[last]
    dtype = diagonal.dtype
    Zss = np.zeros((s, s), dtype=dtype)
    gather_block(cptr, crows, z_low, z_up, z_diag, last, Zss, 0)
    Lff = np.eye(w, dtype=dtype)
    Uff = np.eye(w, dtype=dtype)
    Lsf = np.zeros((s, w), dtype=dtype)
    Ufs = np.zeros((w, s), dtype=dtype)
    dinv = np.zeros((1, w), dtype=dtype)
    for t in range(w):
        start = cptr[first + t]
        for x in range(t + 1, w):
            Lff[x, t] = lower[start + x - t - 1]
            Uff[t, x] = upper[start + x - t - 1]
        for u in range(s):
            Lsf[u, t] = lower[start + w - t - 1 + u]
            Ufs[t, u] = upper[start + w - t - 1 + u]
        dinv[0, t] = 1.0 / diagonal[first + t]
    Linv = np.linalg.inv(Lff)
    Uinv = np.linalg.inv(Uff)
    if s > 0:
        Zsf = -np.dot(np.dot(Zss, Lsf), Linv)
        Zfs = -np.dot(Uinv, np.dot(Ufs, Zss))
        Zff = np.dot(Uinv * dinv - np.dot(Zfs, Lsf), Linv)
    else:
        Zsf = Lsf
        Zfs = Ufs
        Zff = np.dot(Uinv * dinv, Linv)
    for t in range(w):
        start = cptr[first + t]
        for x in range(t + 1, w):
            z_low[start + x - t - 1] = Zff[x, t]
            z_up[start + x - t - 1] = Zff[t, x]
        for u in range(s):
            z_low[start + w - t - 1 + u] = Zsf[u, t]
            z_up[start + w - t - 1 + u] = Zfs[t, u]
        z_diag[first + t] = Zff[t, t]


@vectorized
def selinv(cptr: Any, crows: Any, lower: Any, upper: Any, diagonal: Any, blocked_from: int) -> Any:  # pragma: no cover
    """Z on the pattern C: ``(z_low, z_up, z_diag)`` with ``z_low[p] = Z[row, col]``, ``z_up[p] = Z[col, row]``.

    Supernode by supernode (columns ``f..l`` whose rows below the diagonal are
    ``{j+1..l} ∪ S``), from the last. A supernode whose work ``w·(w + |S|)²``
    reaches ``blocked_from`` goes to :func:`blocked` (BLAS-3); a smaller one is
    held in a dense block ``W`` with ``Z[S, S]`` gathered from ``C`` once, each
    column two contiguous dense products with that block.
    """
    n = cptr.shape[0] - 1
    z_low = np.zeros_like(lower)
    z_up = np.zeros_like(upper)
    z_diag = np.zeros_like(diagonal)
    firsts = np.zeros(n, dtype=np.int64)  # firsts[l]: the first column of the supernode ending at l
    size = 1
    last = n - 1
    while last >= 0:
        first = last
        while first > 0 and chained(cptr, crows, first - 1):
            first -= 1
        firsts[last] = first
        k = cptr[first + 1] - cptr[first] + 1
        if (last - first + 1) * k * k < blocked_from:
            size = max(size, k)
        last = first - 1
    W = np.zeros((size, size), dtype=diagonal.dtype)
    lv = np.zeros(size, dtype=lower.dtype)
    uv = np.zeros(size, dtype=upper.dtype)
    acc_up = np.zeros(size, dtype=diagonal.dtype)
    last = n - 1
    while last >= 0:
        first = firsts[last]
        width = last - first + 1
        k = cptr[first + 1] - cptr[first] + 1
        if width * k * k >= blocked_from:
            blocked(cptr, crows, lower, upper, diagonal, z_low, z_up, z_diag, first, last)
            last = first - 1
            continue
        gather_block(cptr, crows, z_low, z_up, z_diag, last, W, width)
        for j in range(last, first - 1, -1):
            t = j - first
            start = cptr[j]
            for x in range(t + 1, k):
                lv[x] = lower[start + x - t - 1]
                uv[x] = upper[start + x - t - 1]
                acc_up[x] = 0.0
            total = 0.0 * diagonal[j]
            for x in range(t + 1, k):
                dot = 0.0 * diagonal[j]
                ux = uv[x]
                for y in range(t + 1, k):
                    w = W[x, y]
                    dot += w * lv[y]
                    acc_up[y] += ux * w
                z = -dot
                z_low[start + x - t - 1] = z
                W[x, t] = z
                total += ux * z
            for x in range(t + 1, k):
                z_up[start + x - t - 1] = -acc_up[x]
                W[t, x] = -acc_up[x]
            z_diag[j] = 1.0 / diagonal[j] - total
            W[t, t] = z_diag[j]
        last = first - 1
    return z_low, z_up, z_diag


@jit
def gather(cptr: Any, crows: Any, z_low: Any, z_up: Any, z_diag: Any, a: Any, b: Any) -> Any:  # pragma: no cover
    """``Z[a_t, b_t]`` for each t, by binary search in column ``min(a_t, b_t)`` of C."""
    out = np.empty(a.shape[0], dtype=z_diag.dtype)
    for t in range(a.shape[0]):
        i, j = a[t], b[t]
        if i == j:
            out[t] = z_diag[i]
            continue
        column, row = (j, i) if i > j else (i, j)
        lo, hi = cptr[column], cptr[column + 1]
        while lo < hi:
            mid = (lo + hi) // 2
            if crows[mid] < row:
                lo = mid + 1
            else:
                hi = mid
        out[t] = z_low[lo] if i > j else z_up[lo]
    return out


CACHE = attach_trusted_cache(KERNELS, what="selected inversion (slogdet's gradient)", stacklevel=1)
