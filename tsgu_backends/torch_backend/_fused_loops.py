"""The numba loops behind :mod:`tsgu_backends.torch_backend.fused_cpu` (imported on first use: numba loads here).

Every array is one-dimensional and C-contiguous: a block vector is ``(batch, n, k)`` flattened (members one after
the other, ``k`` columns interleaved), per-column scalars are ``(batch, k)`` flattened, masks are ``bool``. Sums
run over ``w = k·lanes`` interleaved partial sums folded at the end, so a column is summed by ``lanes`` chains,
not one serial chain (the loop over ``w`` vectorises; no reassociation is asked of the compiler: ``fastmath`` is
off). :mod:`fused_cpu` checks dtypes, shapes and contiguity before any call: nothing here checks bounds.
"""

from __future__ import annotations

import numba
import numpy as np

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
def bicg_direction(  # type: ignore[no-untyped-def]
    batch, n, k, w, P, V, R, rho_new, rho, alpha, omega, active, rr, rhat_norm, eps, ok
):
    """BiCGSTAB: the columns that may go on (``ok``), ``β``, and ``P = R + β(P − ω·V)``."""
    count = 0
    beta = np.empty(k, dtype=P.dtype)
    for b in range(batch):
        o, s = b * n * k, b * k
        for c in range(k):
            i = s + c
            ok[i] = active[i] and abs(rho_new[i]) > eps * rhat_norm[i] * np.sqrt(rr[i]) and omega[i] != 0
            beta[c] = (rho_new[i] / _safe(rho[i])) * (alpha[i] / _safe(omega[i])) if ok[i] else 0
            count += ok[i]
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
        a1 = np.zeros(w, dtype=R.dtype)
        a2 = np.zeros(w, dtype=R.dtype)
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
        body, total = T2.size, n * k
        for i in range(body, total):
            j = i - body
            y = x[i] + ph[i] * al[j]
            x[i] = y + sh[i] * om[j]
            z = r[i] - t[i] * om[j]
            r[i] = z
            a1[j] += z * z
            a2[j] += rh[i] * z
        _fold(a1, rr[s : s + k], k, w)
        _fold(a2, rho_next[s : s + k], k, w)
        for c in range(k):
            i = s + c
            active[i] = go_on[i] and omega[i] != 0 and rr[i] > tol2[i]
            count += active[i]
    return count


KERNELS = {
    "cg_iteration": cg_iteration,
    "cg_step": cg_step,
    "cg_advance": cg_advance,
    "bicg_direction": bicg_direction,
    "bicg_half": bicg_half,
    "bicg_finish": bicg_finish,
}
