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
    columns = np.empty(pointers[n], dtype=np.int32)  # SuperLU's indices are 32-bit: n < 2³¹
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
def distinct_columns(lower_ptr: Any, lower_col: Any, n: int) -> Any:  # pragma: no cover - compiled
    """The strictly lower pattern given by rows (repeats allowed), by columns: rows sorted, each once.

    Rows are visited in increasing order, so a repeat of ``(i, k)`` is the last
    row written to column ``k``: two counting passes, no sort.
    """
    last = np.full(n, -1, dtype=np.int64)
    counts = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        for p in range(lower_ptr[i], lower_ptr[i + 1]):
            k = lower_col[p]
            if last[k] != i:
                last[k] = i
                counts[k + 1] += 1
    for k in range(n):
        counts[k + 1] += counts[k]
    rows = np.empty(counts[n], dtype=np.int32)
    fill = counts[:n].copy()
    for i in range(n):
        for p in range(lower_ptr[i], lower_ptr[i + 1]):
            k = lower_col[p]
            if fill[k] == counts[k] or rows[fill[k] - 1] != i:
                rows[fill[k]] = i
                fill[k] += 1
    return counts, rows


@jit
def closed(cptr: Any, crows: Any) -> bool:  # pragma: no cover - compiled
    """Whether a strictly lower pattern (columns, rows sorted) is its own symbolic Cholesky factor (no fill).

    It is when, for every column ``j`` with rows ``p < r₁ < r₂ < …``, the rows
    ``r₁, r₂, …`` are rows of column ``p`` (Rose, Tarjan and Lueker 1976: the
    order is then a perfect elimination order). One merge per column.
    """
    n = cptr.shape[0] - 1
    for j in range(n):
        start, stop = cptr[j], cptr[j + 1]
        if stop - start < 2:
            continue
        parent = crows[start]
        q, end = cptr[parent], cptr[parent + 1]
        for p in range(start + 1, stop):
            row = crows[p]
            while q < end and crows[q] < row:
                q += 1
            if q == end or crows[q] != row:
                return False
    return True


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
    rows = np.empty(counts[n], dtype=np.int32)
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
def gather_block(
    cptr: Any, crows: Any, last_of: Any, z_low: Any, z_up: Any, z_diag: Any, column: int, out: Any, offset: int
) -> None:  # pragma: no cover - compiled
    """``out[offset:, offset:] = Z[S, S]`` for ``S`` the rows below the diagonal of ``column`` (a clique of C).

    By the supernodes ``G = g..h`` (``last_of[a] = h``) that ``S`` meets: column
    ``a`` of ``G`` holds rows ``a+1..h`` then ``S_G`` (column ``h``'s rows), so
    the places in ``S_G`` of the rows of ``S`` beyond ``h`` are found by one merge
    for all of ``G``'s columns in ``S`` (relative indices), not one per column.
    """
    s_start = cptr[column]
    m = cptr[column + 1] - s_start
    place = np.empty(m, dtype=np.int64)
    s = 0
    while s < m:
        h = last_of[crows[s_start + s]]
        e = s
        while e < m and crows[s_start + e] <= h:
            e += 1
        q = cptr[h]
        for u in range(e, m):  # S beyond h lies in S_G (S is a clique): one merge
            b = crows[s_start + u]
            while crows[q] != b:
                q += 1
            place[u] = q - cptr[h]
        for i in range(s, e):
            a = crows[s_start + i]
            x = offset + i
            out[x, x] = z_diag[a]
            base = cptr[a]
            for u in range(i + 1, e):
                q = base + crows[s_start + u] - a - 1
                out[offset + u, x] = z_low[q]
                out[x, offset + u] = z_up[q]
            base += h - a
            for u in range(e, m):
                q = base + place[u]
                out[offset + u, x] = z_low[q]
                out[x, offset + u] = z_up[q]
        s = e


@jit
def unit_lower_inverse(T: Any) -> Any:  # pragma: no cover - compiled
    """``T⁻¹`` for ``T`` unit lower triangular (its diagonal and upper part are not read), by blocks of 32 rows.

    Block row ``I``: ``X_II = T_II⁻¹`` by substitution, then
    ``X_I,:I = −X_II (T_I,:I X_:I,:I)`` as one matrix product: about ``w³/3``
    operations, most of them BLAS-3 (``np.linalg.inv`` takes ``2w³``, pivoting).
    """
    w = T.shape[0]
    X = np.zeros((w, w), dtype=T.dtype)
    for i0 in range(0, w, 32):
        i1 = min(i0 + 32, w)
        for i in range(i0, i1):  # the diagonal block, row by row: X_ii,: = e_i − Σ_k T_ik X_k,:
            X[i, i] = 1.0
            for k in range(i0, i):
                c = T[i, k]
                for j in range(i0, k + 1):
                    X[i, j] -= c * X[k, j]
        if i0 > 0:
            below = np.dot(np.ascontiguousarray(T[i0:i1, :i0]), np.ascontiguousarray(X[:i0, :i0]))
            X[i0:i1, :i0] = -np.dot(np.ascontiguousarray(X[i0:i1, i0:i1]), below)
    return X


@jit
def panel(cptr: Any, values: Any, first: int, w: int, s: int) -> Any:  # pragma: no cover - compiled
    """The supernode ``F = first..first+w−1`` of a factor stored on C: ``(T, B)`` with ``T[x, t]`` (``x > t``) and
    ``B[u, t]`` its entries in column ``first + t`` at rows ``first + x`` and ``S[u]`` (``T``'s diagonal and upper
    part zero)."""
    T = np.zeros((w, w), dtype=values.dtype)
    B = np.zeros((s, w), dtype=values.dtype)
    for t in range(w):
        start = cptr[first + t]
        for x in range(t + 1, w):
            T[x, t] = values[start + x - t - 1]
        for u in range(s):
            B[u, t] = values[start + w - t - 1 + u]
    return T, B


@jit
def unpanel(cptr: Any, values: Any, first: int, T: Any, B: Any) -> None:  # pragma: no cover - compiled
    """The inverse of :func:`panel`: ``T``'s strict lower part and ``B`` written back to the supernode's entries."""
    w, s = T.shape[0], B.shape[0]
    for t in range(w):
        start = cptr[first + t]
        for x in range(t + 1, w):
            values[start + x - t - 1] = T[x, t]
        for u in range(s):
            values[start + w - t - 1 + u] = B[u, t]


@jit
def blocked(
    cptr: Any,
    crows: Any,
    last_of: Any,
    lower: Any,
    upper: Any,
    diagonal: Any,
    z_low: Any,
    z_up: Any,
    z_diag: Any,
    first: int,
    last: int,
    symmetric: bool,
    workspace: Any,
) -> None:  # pragma: no cover - compiled
    """One supernode ``F = first..last`` with dense BLAS-3 products (``S``: the rows below it).

    ``workspace`` holds at least ``|S|²`` numbers: ``Z_SS`` is gathered there
    (every entry written), so no block of that size is allocated per supernode.

    ``Z_SF = −Z_SS L_SF L_FF⁻¹``, ``Z_FS = −Ũ_FF⁻¹ Ũ_FS Z_SS`` and
    ``Z_FF = (Ũ_FF⁻¹ D_F⁻¹ − Z_FS L_SF) L_FF⁻¹`` (the recurrences, one block at a time).
    ``symmetric`` (``Ũ = Lᵀ``, ``upper`` and ``z_up`` are ``lower`` and ``z_low``):
    ``Z_FS = Z_SFᵀ``, one product with ``Z_SS`` instead of two.
    """
    w = last - first + 1
    s = cptr[last + 1] - cptr[last]
    dtype = diagonal.dtype
    Zss = workspace[: s * s].reshape((s, s))
    gather_block(cptr, crows, last_of, z_low, z_up, z_diag, last, Zss, 0)
    Lff, Lsf = panel(cptr, lower, first, w, s)
    dinv = np.zeros((1, w), dtype=dtype)
    for t in range(w):
        dinv[0, t] = 1.0 / diagonal[first + t]
    Linv = unit_lower_inverse(Lff)
    if symmetric:
        Ufs = np.ascontiguousarray(Lsf.T)
        Uinv = np.ascontiguousarray(Linv.T)
    else:
        Uff_t, Usf = panel(cptr, upper, first, w, s)  # Ũ_FFᵀ and Ũ_FSᵀ
        Ufs = np.ascontiguousarray(Usf.T)
        Uinv = np.ascontiguousarray(unit_lower_inverse(Uff_t).T)
    if s > 0:
        Zsf = -np.dot(np.dot(Zss, Lsf), Linv)
        Zfs = np.ascontiguousarray(Zsf.T) if symmetric else -np.dot(Uinv, np.dot(Ufs, Zss))
        Zff = np.dot(Uinv * dinv - np.dot(Zfs, Lsf), Linv)
    else:
        Zsf = Lsf
        Zfs = Ufs
        Zff = np.dot(Uinv * dinv, Linv)
    unpanel(cptr, z_low, first, Zff, Zsf)
    if not symmetric:
        unpanel(cptr, z_up, first, Zff.T, Zfs.T)
    for t in range(w):
        z_diag[first + t] = Zff[t, t]


@vectorized
def selinv(
    cptr: Any, crows: Any, lower: Any, upper: Any, diagonal: Any, blocked_from: int, symmetric: bool
) -> Any:  # pragma: no cover
    """Z on the pattern C: ``(z_low, z_up, z_diag)`` with ``z_low[p] = Z[row, col]``, ``z_up[p] = Z[col, row]``.

    Supernode by supernode (columns ``f..l`` whose rows below the diagonal are
    ``{j+1..l} ∪ S``), from the last. A supernode whose work ``w·(w + |S|)²``
    reaches ``blocked_from`` goes to :func:`blocked` (BLAS-3); a smaller one is
    held in a dense block ``W`` with ``Z[S, S]`` gathered from ``C`` once, each
    column two contiguous dense products with that block (one when
    ``symmetric``: then ``upper`` is ``lower``, ``Z = Zᵀ`` and the returned
    ``z_up`` is ``z_low`` itself).
    """
    n = cptr.shape[0] - 1
    z_low = np.zeros_like(lower)
    z_up = z_low if symmetric else np.zeros_like(upper)
    z_diag = np.zeros_like(diagonal)
    firsts = np.zeros(n, dtype=np.int64)  # firsts[l]: the first column of the supernode ending at l
    last_of = np.zeros(n, dtype=np.int64)  # last_of[j]: the last column of j's supernode
    size = 1
    largest = 0  # the largest |S|² of a blocked supernode
    last = n - 1
    while last >= 0:
        first = last
        while first > 0 and chained(cptr, crows, first - 1):
            first -= 1
        firsts[last] = first
        last_of[first : last + 1] = last
        k = cptr[first + 1] - cptr[first] + 1
        if (last - first + 1) * k * k < blocked_from:
            size = max(size, k)
        else:
            below = k - (last - first + 1)
            largest = max(largest, below * below)
        last = first - 1
    W = np.zeros((size, size), dtype=diagonal.dtype)
    workspace = np.empty(largest, dtype=diagonal.dtype)
    lv = np.zeros(size, dtype=lower.dtype)
    uv = np.zeros(size, dtype=upper.dtype)
    acc_up = np.zeros(size, dtype=diagonal.dtype)
    last = n - 1
    while last >= 0:
        first = firsts[last]
        width = last - first + 1
        k = cptr[first + 1] - cptr[first] + 1
        if width * k * k >= blocked_from:
            blocked(
                cptr, crows, last_of, lower, upper, diagonal, z_low, z_up, z_diag, first, last, symmetric, workspace
            )
            last = first - 1
            continue
        gather_block(cptr, crows, last_of, z_low, z_up, z_diag, last, W, width)
        for j in range(last, first - 1, -1):
            t = j - first
            start = cptr[j]
            total = 0.0 * diagonal[j]
            if symmetric:
                for x in range(t + 1, k):
                    lv[x] = lower[start + x - t - 1]
                for x in range(t + 1, k):
                    dot = 0.0 * diagonal[j]
                    for y in range(t + 1, k):
                        dot += W[x, y] * lv[y]
                    z_low[start + x - t - 1] = -dot
                    W[x, t] = -dot
                    W[t, x] = -dot
                    total -= lv[x] * dot
            else:
                for x in range(t + 1, k):
                    lv[x] = lower[start + x - t - 1]
                    uv[x] = upper[start + x - t - 1]
                    acc_up[x] = 0.0
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
