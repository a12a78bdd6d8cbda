"""The numba loops behind :mod:`tsgu_backends.torch_backend.fused_cpu` (imported on first use: numba loads here).

Every array is one-dimensional and C-contiguous: a block vector is ``(batch, n, k)`` flattened (members one after
the other, ``k`` columns interleaved), per-column scalars are ``(batch, k)`` flattened, masks are ``bool``. Sums
run over ``w = k·lanes`` interleaved partial sums folded at the end, so a column is summed by ``lanes`` chains,
not one serial chain (the loop over ``w`` vectorises; no reassociation is asked of the compiler: ``fastmath`` is
off). :mod:`fused_cpu` checks dtypes, shapes and contiguity before any call: nothing here checks bounds.

:func:`cg_loop` and :func:`bicgstab_loop` run whole iterations (the products with ``A`` included, from its CSR
arrays) in one call; a product row's accumulator is one LLVM vector of ``k`` numbers (:func:`_row_zero`,
:func:`_row_axpy`, :func:`_row_store`), and so is each row of the pointwise update a product pass makes before
it (:func:`_row_intrinsic`), ``k`` known when compiling: it is the length of the tuple ``kk`` (one compile per
``k``).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# no cache here: fused_cpu attaches its own (checked) disk cache; no fastmath: sums are not reassociated
_jit = numba.njit(nogil=True, fastmath=False, cache=False)


@_jit
def _safe(x):  # type: ignore[no-untyped-def]
    return x if x != 0 else x * 0 + 1


@_jit
def _lanes(a, k, w):  # type: ignore[no-untyped-def]
    """Per-lane copies of per-column scalars: lane ``j`` belongs to column ``j % k``."""
    out = np.empty(w, dtype=a.dtype)
    for j in range(w):
        out[j] = a[j % k]
    return out


@_jit
def _fold(acc, out, k, w):  # type: ignore[no-untyped-def]
    """``out[c] = Σ_l acc[l·k + c]``: the lanes of each column summed."""
    for c in range(k):
        s = acc[c]
        for j in range(c + k, w, k):
            s += acc[j]
        out[c] = s


@_jit
def _rows(a, w):  # type: ignore[no-untyped-def]
    """The whole blocks of ``w`` elements of ``a`` as the rows of a 2-D view (the rest: ``a[rows.size:]``).

    Looping over rows of a 2-D view, numba vectorises the loop over a row; the same loop written with 1-D
    indices ``a[i + j]`` runs 4–6× slower when it touches several arrays (measured, numba 0.68).
    """
    m = a.shape[0] // w
    return a[: m * w].reshape((m, w))


@_jit
def _dot(u, v, out, k, w):  # type: ignore[no-untyped-def]
    """``out = Σ u·v`` per column."""
    acc = np.zeros(w, dtype=u.dtype)
    U, V = _rows(u, w), _rows(v, w)
    for i in range(U.shape[0]):
        ur, vr = U[i], V[i]
        for j in range(w):
            acc[j] += ur[j] * vr[j]
    body = U.size
    for i in range(body, u.shape[0]):
        acc[i - body] += u[i] * v[i]
    _fold(acc, out, k, w)


@_jit
def _dot2(u, v, x, y, out1, out2, k, w):  # type: ignore[no-untyped-def]
    """``out1 = Σ u·v`` and ``out2 = Σ x·y`` per column, in one pass."""
    a1 = np.zeros(w, dtype=u.dtype)
    a2 = np.zeros(w, dtype=u.dtype)
    U, V, X, Y = _rows(u, w), _rows(v, w), _rows(x, w), _rows(y, w)
    for i in range(U.shape[0]):  # two loops per row (in L1): each few enough arrays for LLVM's alias checks
        ur, vr, xr, yr = U[i], V[i], X[i], Y[i]
        for j in range(w):
            a1[j] += ur[j] * vr[j]
        for j in range(w):
            a2[j] += xr[j] * yr[j]
    body = U.size
    for i in range(body, u.shape[0]):
        a1[i - body] += u[i] * v[i]
        a2[i - body] += x[i] * y[i]
    _fold(a1, out1, k, w)
    _fold(a2, out2, k, w)


@_jit
def _axpy_norm(r, a, z, norm, k, w):  # type: ignore[no-untyped-def]
    """``r −= a·z``, then ``norm = Σ r²`` per column, in one pass."""
    al = _lanes(a, k, w)
    acc = np.zeros(w, dtype=r.dtype)
    R, Z = _rows(r, w), _rows(z, w)
    for i in range(R.shape[0]):
        rr_, zr = R[i], Z[i]
        for j in range(w):
            x = rr_[j] - al[j] * zr[j]
            rr_[j] = x
            acc[j] += x * x
    body = R.size
    for i in range(body, r.shape[0]):
        j = i - body
        x = r[i] - al[j] * z[i]
        r[i] = x
        acc[j] += x * x
    _fold(acc, norm, k, w)


@_jit
def _cg_update(x, p, z, a, b, k, w):  # type: ignore[no-untyped-def]
    """``x += a·p``, then ``p = z + b·p``, in one pass."""
    al = _lanes(a, k, w)
    be = _lanes(b, k, w)
    X, P, Z = _rows(x, w), _rows(p, w), _rows(z, w)
    for i in range(X.shape[0]):
        xr, pr, zr = X[i], P[i], Z[i]
        for j in range(w):
            q = pr[j]
            xr[j] += al[j] * q
            pr[j] = zr[j] + be[j] * q
    body = X.size
    for i in range(body, x.shape[0]):
        j = i - body
        q = p[i]
        x[i] += al[j] * q
        p[i] = z[i] + be[j] * q


@_jit
def _cg_half(p, ap, r, rz, active, tol2, alpha, rr, k, w):  # type: ignore[no-untyped-def]
    """CG passes 1–2: ``α = rz/⟨P, AP⟩`` where the column may go on, ``R −= α·AP``, ``rr = ‖R‖²``."""
    pap = np.empty(k, dtype=p.dtype)
    ok = np.empty(k, dtype=np.bool_)
    _dot(p, ap, pap, k, w)
    for c in range(k):
        ok[c] = active[c] and pap[c] > 0 and np.isfinite(pap[c])  # pap ≤ 0: A is not SPD along P
        alpha[c] = rz[c] / pap[c] if ok[c] else 0
    _axpy_norm(r, alpha, ap, rr, k, w)
    count = 0
    for c in range(k):
        active[c] = ok[c] and rr[c] > tol2[c]
        count += active[c]
    return count


@_jit
def cg_iteration(batch, n, k, w, P, AP, R, X, rz, active, tol2):  # type: ignore[no-untyped-def]
    """One CG iteration after ``AP = A P``, no preconditioner (``Z = R``); ``rz`` becomes ``‖R‖²``."""
    count = 0
    alpha = np.empty(k, dtype=P.dtype)
    rr = np.empty(k, dtype=P.dtype)
    beta = np.empty(k, dtype=P.dtype)
    for b in range(batch):
        o, s = b * n * k, b * k
        v, e = slice(o, o + n * k), slice(s, s + k)
        count += _cg_half(P[v], AP[v], R[v], rz[e], active[e], tol2[e], alpha, rr, k, w)
        for c in range(k):
            beta[c] = rr[c] / _safe(rz[s + c]) if active[s + c] else 0
            rz[s + c] = rr[c]
        _cg_update(X[v], P[v], R[v], alpha, beta, k, w)
    return count


@_jit
def cg_step(batch, n, k, w, P, AP, R, rz, active, tol2, alpha, rr):  # type: ignore[no-untyped-def]
    """CG with a preconditioner, passes 1–2 (``α`` and ``rr`` out; ``Z = M⁻¹R`` comes next, outside)."""
    count = 0
    for b in range(batch):
        o, s = b * n * k, b * k
        v, e = slice(o, o + n * k), slice(s, s + k)
        count += _cg_half(P[v], AP[v], R[v], rz[e], active[e], tol2[e], alpha[e], rr[e], k, w)
    return count


@_jit
def cg_advance(batch, n, k, w, X, P, Z, alpha, rz, rz_new, active):  # type: ignore[no-untyped-def]
    """CG with a preconditioner, pass 3: ``β = rz_new/rz`` where active, ``X += α·P``, ``P = Z + β·P``."""
    beta = np.empty(k, dtype=P.dtype)
    for b in range(batch):
        o, s = b * n * k, b * k
        v, e = slice(o, o + n * k), slice(s, s + k)
        for c in range(k):
            beta[c] = rz_new[s + c] / _safe(rz[s + c]) if active[s + c] else 0
        _cg_update(X[v], P[v], Z[v], alpha[e], beta, k, w)
    return 0


@_jit
def _direction(s, k, rho_new, rho, alpha, omega, active, rr, rhat_norm, eps, ok, beta):  # type: ignore[no-untyped-def]
    """BiCGSTAB, one member's columns ``s … s+k−1``: which may go on (``ok``, counted) and their ``β``."""
    count = 0
    for c in range(k):
        i = s + c
        ok[i] = active[i] and abs(rho_new[i]) > eps * rhat_norm[i] * np.sqrt(rr[i]) and omega[i] != 0
        beta[c] = (rho_new[i] / _safe(rho[i])) * (alpha[i] / _safe(omega[i])) if ok[i] else 0
        count += ok[i]
    return count


@_jit
def bicg_direction(  # type: ignore[no-untyped-def]
    batch, n, k, w, P, V, R, rho_new, rho, alpha, omega, active, rr, rhat_norm, eps, ok
):
    """BiCGSTAB: the columns that may go on (``ok``), ``β``, and ``P = R + β(P − ω·V)``."""
    count = 0
    beta = np.empty(k, dtype=P.dtype)
    for b in range(batch):
        o, s = b * n * k, b * k
        count += _direction(s, k, rho_new, rho, alpha, omega, active, rr, rhat_norm, eps, ok, beta)
        be = _lanes(beta, k, w)
        om = _lanes(omega[s : s + k], k, w)
        p, v, r = P[o : o + n * k], V[o : o + n * k], R[o : o + n * k]
        P2, V2, R2 = _rows(p, w), _rows(v, w), _rows(r, w)
        for i in range(P2.shape[0]):
            pr, vr, rr_ = P2[i], V2[i], R2[i]
            for j in range(w):
                pr[j] = (pr[j] - vr[j] * om[j]) * be[j] + rr_[j]
        body = P2.size
        for i in range(body, n * k):
            j = i - body
            p[i] = (p[i] - v[i] * om[j]) * be[j] + r[i]
    return count


@_jit
def bicg_half(  # type: ignore[no-untyped-def]
    batch, n, k, w, Rhat, V, R, rho_new, rhat_norm, eps, ok, tol2, alpha, go_on
):
    """BiCGSTAB after ``V = A P̂``: ``α = ρ/⟨R̂, V⟩`` where ok, ``R −= α·V`` (R becomes S), ``go_on``."""
    count = 0
    rv = np.empty(k, dtype=R.dtype)
    vv = np.empty(k, dtype=R.dtype)
    ss = np.empty(k, dtype=R.dtype)
    for b in range(batch):
        o, s = b * n * k, b * k
        v = slice(o, o + n * k)
        _dot2(Rhat[v], V[v], V[v], V[v], rv, vv, k, w)
        for c in range(k):
            i = s + c
            ok[i] = ok[i] and abs(rv[c]) > eps * rhat_norm[i] * np.sqrt(vv[c]) and np.isfinite(rv[c])
            alpha[i] = rho_new[i] / rv[c] if ok[i] else 0
        _axpy_norm(R[v], alpha[s : s + k], V[v], ss, k, w)
        for c in range(k):
            go_on[s + c] = ok[s + c] and ss[c] > tol2[s + c]
            count += go_on[s + c]
    return count


@_jit
def bicg_finish(  # type: ignore[no-untyped-def]
    batch, n, k, w, T, R, X, Phat, Shat, Rhat, alpha, go_on, tol2, omega, rr, rho_next, active
):
    """BiCGSTAB after ``T = A Ŝ``: ``ω = ⟨T, S⟩/⟨T, T⟩`` where go_on, ``X += α·P̂ + ω·Ŝ``, ``R −= ω·T``,
    ``rr = ‖R‖²``, ``rho_next = ⟨R̂, R⟩``, ``active = go_on ∧ ω ≠ 0 ∧ rr > tol²``. ``Ŝ`` may be ``R`` itself."""
    count = 0
    tt = np.empty(k, dtype=R.dtype)
    ts = np.empty(k, dtype=R.dtype)
    for b in range(batch):
        o, s = b * n * k, b * k
        v = slice(o, o + n * k)
        t, r, x, ph, sh, rh = T[v], R[v], X[v], Phat[v], Shat[v], Rhat[v]
        _dot2(t, t, t, r, tt, ts, k, w)
        for c in range(k):
            i = s + c
            omega[i] = ts[c] / tt[c] if go_on[i] and tt[c] > 0 else 0
        al = _lanes(alpha[s : s + k], k, w)
        om = _lanes(omega[s : s + k], k, w)
        _finish_pass(t, r, x, ph, sh, rh, al, om, rr[s : s + k], rho_next[s : s + k], k, w)
        for c in range(k):
            i = s + c
            active[i] = go_on[i] and omega[i] != 0 and rr[i] > tol2[i]
            count += active[i]
    return count


# -- whole CG iterations, the product with A included --------------------------------------------------------------
#
# numba leaves LLVM's SLP vectoriser off, so a row accumulator written as k scalars (or a small array) stays scalar:
# 8 multiplies and 8 adds per stored entry for k = 8. These intrinsics keep it as one vector value of k numbers
# (an ``alloca`` of ``<k x T>``, promoted to a register), whose type comes from the tuple ``kk``. Plain fmul and
# fadd: no contraction, no reassociation (each column's sum runs over the row's entries in stored order).


def _splat(builder, vector_type, value):  # type: ignore[no-untyped-def]
    out = ir.Constant(vector_type, None)
    for c in range(vector_type.count):
        out = builder.insert_element(out, value, ir.Constant(ir.IntType(32), c))
    return out


def _row_operands(context, builder, signature, args, like):  # type: ignore[no-untyped-def]
    """For ``(acc, scalar, array, offset, like)``: the accumulator and ``array[offset:]`` as pointers to a vector
    of ``len(like)`` numbers, and the scalar splat into such a vector."""
    acc_ptr, scalar, ary, start, _ = args
    vector = ir.VectorType(context.get_value_type(like.dtype), like.count)
    data = context.make_array(signature.args[2])(context, builder, ary).data
    row = builder.bitcast(builder.gep(data, [start]), vector.as_pointer())
    scalar = context.cast(builder, scalar, signature.args[1], like.dtype)
    return builder.bitcast(acc_ptr, vector.as_pointer()), row, _splat(builder, vector, scalar)


@intrinsic
def _row_zero(typingctx, like):  # type: ignore[no-untyped-def]
    """A zeroed accumulator of ``len(like)`` numbers of ``like``'s type on the stack; its address."""
    sig = types.CPointer(like.dtype)(like)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        vector = ir.VectorType(context.get_value_type(like.dtype), like.count)
        slot = cgutils.alloca_once(builder, vector)
        builder.store(ir.Constant(vector, None), slot)
        return builder.bitcast(slot, context.get_value_type(like.dtype).as_pointer())

    return sig, codegen


@intrinsic
def _row_axpy(typingctx, acc, value, array, offset, like):  # type: ignore[no-untyped-def]
    """``acc += value · array[offset : offset + k]`` as one vector operation (the caller keeps it in bounds)."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        slot, row, scalar = _row_operands(context, builder, signature, args, like)
        product = builder.fmul(scalar, builder.load(row, align=1))
        builder.store(builder.fadd(builder.load(slot), product), slot)
        return context.get_dummy_value()

    return types.void(acc, value, array, offset, like), codegen


@intrinsic
def _row_store(typingctx, acc, scale, array, offset, like):  # type: ignore[no-untyped-def]
    """``array[offset : offset + k] = acc · scale`` (the caller keeps it in bounds)."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        slot, row, scalar = _row_operands(context, builder, signature, args, like)
        builder.store(builder.fmul(builder.load(slot), scalar), row, align=1)
        return context.get_dummy_value()

    return types.void(acc, scale, array, offset, like), codegen


def _at(context, builder, array_type, array, offset, like):  # type: ignore[no-untyped-def]
    """A pointer to ``array[offset : offset + k]`` as one vector of ``k = len(like)`` numbers."""
    vector = ir.VectorType(context.get_value_type(like.dtype), like.count)
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [offset]), vector.as_pointer())


def _row_intrinsic(arithmetic):  # type: ignore[no-untyped-def]
    """An intrinsic ``f(arrays, offsets, like)`` on rows of ``k = len(like)`` numbers: ``arrays`` and ``offsets``
    are tuples of one length; ``arithmetic(builder, rows)`` gets each ``arrays[i][offsets[i] : offsets[i] + k]``
    loaded as one vector and returns the vectors to store back, by position (``None``: left as it was); every
    load comes before every store. Plain fmul/fadd/fsub, in the order of the per-iteration loops' expressions.

    Measured (a BiCGSTAB product pass, n = 1e5, k = 8, one thread, loaded machine, medians of 40 interleaved
    runs): the update written as one vector operation per row took the direction pass from 2.0–2.3 ms to
    1.7–1.9 ms; the per-chunk loops it replaces (a slice and a vectorised loop of 64 numbers, with its alias
    checks, per 512-byte chunk) cost about 26 ns per chunk. Sums into the lanes per row this way were not
    faster than the per-chunk loops of :func:`_product_pass` (1.2–1.4 ms against 1.1–1.3 ms): those stay.
    """

    @intrinsic
    def row(typingctx, arrays, offsets, like):  # type: ignore[no-untyped-def]
        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            array_types, _, _ = signature.args
            arrays_in = cgutils.unpack_tuple(builder, args[0])
            offsets_in = cgutils.unpack_tuple(builder, args[1])
            pointers = [
                _at(context, builder, t, a, o, like) for t, a, o in zip(array_types, arrays_in, offsets_in, strict=True)
            ]
            results = arithmetic(builder, [builder.load(q, align=1) for q in pointers])
            for pointer, value in zip(pointers, results, strict=True):
                if value is not None:
                    builder.store(value, pointer, align=1)
            return context.get_dummy_value()

        return types.void(arrays, offsets, like), codegen

    return row


def _cg_rows(builder, rows):  # type: ignore[no-untyped-def]
    u, v, z, l1, l2 = rows  # u += l1·v, v = z + l2·v
    return builder.fadd(u, builder.fmul(l1, v)), builder.fadd(z, builder.fmul(l2, v)), None, None, None


def _direction_rows(builder, rows):  # type: ignore[no-untyped-def]
    u, v, z, l1, l2 = rows  # v = (v − u·l1)·l2 + z
    return None, builder.fadd(builder.fmul(builder.fsub(v, builder.fmul(u, l1)), l2), z), None, None, None


def _half_rows(builder, rows):  # type: ignore[no-untyped-def]
    u, v, l1, acc = rows  # v −= l1·u, acc += v²
    x = builder.fsub(v, builder.fmul(l1, u))
    return None, x, None, builder.fadd(acc, builder.fmul(x, x))


_row_cg = _row_intrinsic(_cg_rows)
_row_direction = _row_intrinsic(_direction_rows)
_row_half = _row_intrinsic(_half_rows)


@_jit
def csr_fits(crow, col, values, batch, n):  # type: ignore[no-untyped-def]
    """Whether ``(crow, col, values)`` is a CSR matrix of ``batch·n`` rows whose rows of member ``b`` hold only
    columns of member ``b`` (``[b·n, (b+1)·n)``): what :func:`cg_loop` needs to stay inside its arrays."""
    rows = batch * n
    if crow.shape[0] != rows + 1 or crow[0] != 0 or crow[rows] != col.shape[0] or col.shape[0] != values.shape[0]:
        return False
    for b in range(batch):
        low, high = b * n, (b + 1) * n
        for i in range(low, high):
            if crow[i + 1] < crow[i]:
                return False
            for e in range(crow[i], crow[i + 1]):
                if col[e] < low or col[e] >= high:
                    return False
    return True


@_jit
def _reach(crow, col, start, stop, rows):  # type: ignore[no-untyped-def]
    """Per chunk of ``rows`` rows of ``[start, stop)``: how far (in whole chunks) P must be updated before the
    chunk's product reads it — past the chunk itself and every column its rows hold."""
    chunks = (stop - start + rows - 1) // rows
    out = np.empty(chunks, dtype=np.int64)
    need = start
    for b in range(chunks):
        low = start + b * rows
        high = min(stop, low + rows)
        need = max(need, high)
        for e in range(crow[low], crow[high]):
            if col[e] + 1 > need:
                need = col[e] + 1
        out[b] = min(stop, start + (need - start + rows - 1) // rows * rows)
    return out


@_jit
def _product_pass(csr, start, stop, reach, mode, U, V, W, l1, l2, out, d1, d2, two, kk, s1, s2, s3):  # type: ignore[no-untyped-def]
    """One member's rows ``[start, stop)`` in one pass: a pointwise update of ``V`` (``mode`` 1, CG:
    ``U += l1·V``, ``V = W + l2·V``; ``mode`` 2, BiCGSTAB's direction: ``V = (V − U·l1)·l2 + W``; ``mode`` 3,
    BiCGSTAB's half step: ``V −= l1·U`` and ``s3 = ‖V‖²`` per column, of the updated ``V``; ``mode`` 0: none),
    each row updated before the product first reads it; ``out = scale · A V``; ``s1 = ⟨d1, out⟩`` and, with
    ``two``, ``s2 = ⟨d2, out⟩`` per column (``d1``, ``d2`` read after the update). ``l1``, ``l2`` are per-lane
    (``w`` of them: a chunk of ``w/k`` rows); ``out`` is none of the others, except that ``mode`` 2 may
    overwrite ``U`` (each row of ``U`` is read before the product writes it) and ``d1`` may be ``out``.
    ``csr`` is ``(crow, col, values, scale)``. Each sum runs over the ``w`` lanes of a chunk, folded at the end.
    Each row's update and product is one vector operation on ``k`` numbers; the sums of ``out`` run per chunk."""
    crow, col, values, scale = csr
    k = len(kk)
    w = l1.shape[0]
    rows = w // k
    a1 = np.zeros(w, dtype=V.dtype)
    a2 = np.zeros(w, dtype=V.dtype)
    a3 = np.zeros(w, dtype=V.dtype)
    done = start  # rows of V already updated; chunks of ``rows`` rows from ``start``, as the lanes of a1/a2/a3
    ku = np.uint64(k)
    for b in range(reach.shape[0]):
        while mode != 0 and done < reach[b]:
            upto = min(stop, done + rows)
            if mode == 1:
                for r in range(done, upto):
                    o = np.uint64(r) * ku
                    _row_cg((U, V, W, l1, l2), (o, o, o, 0, 0), kk)
            elif mode == 2:
                for r in range(done, upto):
                    o = np.uint64(r) * ku
                    _row_direction((U, V, W, l1, l2), (o, o, o, 0, 0), kk)
            else:
                for r in range(done, upto):
                    o = np.uint64(r) * ku
                    _row_half((U, V, l1, a3), (o, o, 0, np.uint64(r - done) * ku), kk)
            done = upto
        low = start + b * rows
        high = min(stop, low + rows)
        for i in range(low, high):
            t = _row_zero(kk)
            for e in range(np.uint64(crow[i]), np.uint64(crow[i + 1])):
                _row_axpy(t, values[e], V, np.uint64(col[e]) * ku, kk)
            _row_store(t, scale, out, i * k, kk)
        y, x1, x2 = out[low * k : high * k], d1[low * k : high * k], d2[low * k : high * k]
        for j in range(y.shape[0]):
            a1[j] += x1[j] * y[j]
        if two:
            for j in range(y.shape[0]):
                a2[j] += x2[j] * y[j]
    _fold(a1, s1, k, w)
    if two:
        _fold(a2, s2, k, w)
    if mode == 3:
        _fold(a3, s3, k, w)


@_jit
def _chunk(w, k):  # type: ignore[no-untyped-def]
    """The lanes of a product pass: a quarter of ``w`` (about 512 bytes), a multiple of ``k``. Each chunk's
    update alternates with its rows' products; measured (a BiCGSTAB product pass, n = 1e5, k = 8, loaded machine):
    512-byte chunks took about 0.8× the time of 2 KiB ones, 0.7× of 8 KiB ones; 64-byte ones (one row) 1.7×.
    Re-measured with each row's update one vector operation: still the best of 64 bytes to 16 KiB."""
    return max(k, w // 4 // k * k)


@_jit
def _reaches(crow, col, batch, n, rows):  # type: ignore[no-untyped-def]
    """:func:`_reach` of every batch member, one row each."""
    reach = np.empty((batch, (n + rows - 1) // rows), dtype=np.int64)
    for b in range(batch):
        reach[b] = _reach(crow, col, b * n, (b + 1) * n, rows)
    return reach


@_jit
def _add_scaled(X, P, alpha, o, size, k, w):  # type: ignore[no-untyped-def]
    """``X[o : o + size] += α·P[o : o + size]`` per column (``α`` of ``k`` numbers)."""
    al = _lanes(alpha, k, w)
    Xb, Pb = _rows(X[o : o + size], w), _rows(P[o : o + size], w)
    for i in range(Xb.shape[0]):
        x, p = Xb[i], Pb[i]
        for j in range(w):
            x[j] += al[j] * p[j]
    for i in range(Xb.size, size):
        X[o + i] += al[i - Xb.size] * P[o + i]


@_jit
def cg_loop(crow, col, values, scale, batch, n, kk, w, X, P, R, AP, rz, active, tol2, maxiter):  # type: ignore[no-untyped-def]
    """Unpreconditioned CG, every iteration in this call: per iteration two passes over memory, ``X``/``P`` updates
    with ``AP = scale·A P`` and ``⟨P, AP⟩``, then ``R −= α·AP`` with ``‖R‖²``; the iterations run.

    The same arithmetic as :func:`cg_iteration` after a product (``X``'s update rides in the next iteration's first
    pass, the last one after the loop). ``P = R`` on entry; ``rz = ‖R‖²``; ``(crow, col, values)`` fit
    (:func:`csr_fits`); ``w`` is a multiple of ``k = len(kk)``.
    """
    k = len(kk)
    wp = _chunk(w, k)
    reach = _reaches(crow, col, batch, n, wp // k)
    csr = (crow, col, values, scale)
    alpha = np.zeros(batch * k, dtype=P.dtype)
    beta = np.zeros(batch * k, dtype=P.dtype)
    pap = np.empty(k, dtype=P.dtype)
    rr = np.empty(k, dtype=P.dtype)
    ok = np.empty(k, dtype=np.bool_)
    its = 0
    while its < maxiter:
        count = 0
        for b in range(batch):
            o, s = b * n * k, b * k
            v = slice(o, o + n * k)
            al, be = _lanes(alpha[s : s + k], k, wp), _lanes(beta[s : s + k], k, wp)
            mode = 1 if its > 0 else 0  # P = R on entry
            _product_pass(csr, b * n, (b + 1) * n, reach[b], mode, X, P, R, al, be, AP, P, P, False, kk, pap, pap, pap)
            for c in range(k):
                ok[c] = active[s + c] and pap[c] > 0 and np.isfinite(pap[c])  # pap ≤ 0: A is not SPD along P
                alpha[s + c] = rz[s + c] / pap[c] if ok[c] else 0
            _axpy_norm(R[v], alpha[s : s + k], AP[v], rr, k, w)
            for c in range(k):
                active[s + c] = ok[c] and rr[c] > tol2[s + c]
                count += active[s + c]
                beta[s + c] = rr[c] / _safe(rz[s + c]) if active[s + c] else 0
                rz[s + c] = rr[c]
        its += 1
        if count == 0:
            break
    for b in range(batch):  # the last iteration's X += α·P
        _add_scaled(X, P, alpha[b * k : (b + 1) * k], b * n * k, n * k, k, w)
    return its


@_jit
def _finish_pass(t, r, x, ph, sh, rh, al, om, rr, rho_next, k, w):  # type: ignore[no-untyped-def]
    """``X += α·P̂ + ω·Ŝ``, ``R −= ω·T``, then ``rr = ‖R‖²`` and ``rho_next = ⟨R̂, R⟩``, in one pass (``al``, ``om``
    per lane). ``Ŝ`` may be ``R`` itself: ``X`` is updated first."""
    a1 = np.zeros(w, dtype=r.dtype)
    a2 = np.zeros(w, dtype=r.dtype)
    T2, R2, X2 = _rows(t, w), _rows(r, w), _rows(x, w)
    PH, SH, RH = _rows(ph, w), _rows(sh, w), _rows(rh, w)
    for i in range(T2.shape[0]):  # three loops per row (in L1), as in _dot2; X first: Ŝ may be R
        xr, pr, sr, tr, rr_, hr = X2[i], PH[i], SH[i], T2[i], R2[i], RH[i]
        for j in range(w):
            xr[j] = (xr[j] + pr[j] * al[j]) + sr[j] * om[j]
        for j in range(w):
            rr_[j] = rr_[j] - tr[j] * om[j]
        for j in range(w):
            z = rr_[j]
            a1[j] += z * z
            a2[j] += hr[j] * z
    body = T2.size
    for i in range(body, r.shape[0]):
        j = i - body
        y = x[i] + ph[i] * al[j]
        x[i] = y + sh[i] * om[j]
        z = r[i] - t[i] * om[j]
        r[i] = z
        a1[j] += z * z
        a2[j] += rh[i] * z
    _fold(a1, rr, k, w)
    _fold(a2, rho_next, k, w)


@_jit
def bicgstab_loop(  # type: ignore[no-untyped-def]
    crow, col, values, scale, batch, n, kk, w, X, P, V, R, Rhat, T, rr, rho_new, rhat_norm, active, tol2, eps, maxiter
):
    """Unpreconditioned BiCGSTAB, every iteration in this call, three passes over memory per iteration:
    ``P = R + β(P − ω·V)`` with ``V = scale·A P``, ``⟨R̂, V⟩`` and ``‖V‖²``; ``R −= α·V`` (``R`` becomes ``S``)
    with ``‖S‖²`` and ``T = scale·A S``, ``⟨T, T⟩``, ``⟨T, S⟩``; ``X += α·P + ω·S``, ``R −= ω·T`` with ``‖R‖²``
    and ``⟨R̂, R⟩``. The same scalars, tests and arithmetic per entry as :func:`bicg_direction`,
    :func:`bicg_half` and :func:`bicg_finish` after torch's products (sums split into other lanes). When no
    column takes the second half, ``X += α·P`` alone and the loop ends (the ``T`` of that iteration unused).
    ``P = V = 0``, ``rr = ‖R‖²``, ``rho_new = ⟨R̂, R⟩`` on entry.
    """
    k = len(kk)
    wp = _chunk(w, k)
    reach = _reaches(crow, col, batch, n, wp // k)
    csr = (crow, col, values, scale)
    ones = batch * k
    rho = np.ones(ones, dtype=R.dtype)
    alpha = np.ones(ones, dtype=R.dtype)
    omega = np.ones(ones, dtype=R.dtype)
    ok = np.empty(ones, dtype=np.bool_)
    go_on = np.empty(ones, dtype=np.bool_)
    beta = np.empty(k, dtype=R.dtype)
    rv = np.empty(k, dtype=R.dtype)
    vv = np.empty(k, dtype=R.dtype)
    ss = np.empty(k, dtype=R.dtype)
    its = 0
    while its < maxiter:
        for b in range(batch):
            s = b * k
            _direction(s, k, rho_new, rho, alpha, omega, active, rr, rhat_norm, eps, ok, beta)
            om, be = _lanes(omega[s : s + k], k, wp), _lanes(beta, k, wp)
            _product_pass(csr, b * n, (b + 1) * n, reach[b], 2, V, P, R, om, be, V, Rhat, V, True, kk, rv, vv, vv)
            for c in range(k):
                i = s + c
                ok[i] = ok[i] and abs(rv[c]) > eps * rhat_norm[i] * np.sqrt(vv[c]) and np.isfinite(rv[c])
                alpha[i] = rho_new[i] / rv[c] if ok[i] else 0
        its += 1
        going = 0
        for b in range(batch):  # R becomes S, T = A S in the same pass
            s = b * k
            al = _lanes(alpha[s : s + k], k, wp)
            _product_pass(csr, b * n, (b + 1) * n, reach[b], 3, V, R, R, al, al, T, T, R, True, kk, rv, vv, ss)
            for c in range(k):  # ss: ‖S‖², rv: ⟨T, T⟩, vv: ⟨T, S⟩
                i = s + c
                go_on[i] = ok[i] and ss[c] > tol2[i]
                going += go_on[i]
                omega[i] = vv[c] / rv[c] if go_on[i] and rv[c] > 0 else 0
        if going == 0:  # no column takes the second half: X += α·P alone, and every column has stopped
            for b in range(batch):
                _add_scaled(X, P, alpha[b * k : (b + 1) * k], b * n * k, n * k, k, w)
            break
        going = 0
        for b in range(batch):
            o, s = b * n * k, b * k
            v = slice(o, o + n * k)
            for c in range(k):
                rho[s + c] = rho_new[s + c]
            al, om = _lanes(alpha[s : s + k], k, w), _lanes(omega[s : s + k], k, w)
            _finish_pass(T[v], R[v], X[v], P[v], R[v], Rhat[v], al, om, rr[s : s + k], rho_new[s : s + k], k, w)
            for c in range(k):
                i = s + c
                active[i] = go_on[i] and omega[i] != 0 and rr[i] > tol2[i]
                going += active[i]
        if going == 0:
            break
    return its


KERNELS = {
    "cg_iteration": cg_iteration,
    "cg_step": cg_step,
    "cg_advance": cg_advance,
    "bicg_direction": bicg_direction,
    "bicg_half": bicg_half,
    "bicg_finish": bicg_finish,
    "cg_loop": cg_loop,  # compiled per (dtype, index dtype, k) on first use, not with the others
    "bicgstab_loop": bicgstab_loop,
    "csr_fits": csr_fits,
}
