"""Fused CPU loops for block CG and BiCGSTAB: one pass over memory per vector stage, compiled from C.

``fused=True`` on the CPU runs each iteration's vector work — everything
except the products with ``A`` (torch's MKL SpMM) — in a few C loops that read
and write each ``(n, k)`` block vector once per stage and keep the per-column
scalar logic (``α``, ``β``, ``ω``, the ``active`` masks) inside the same call:

* CG: ``⟨P, AP⟩``; ``R −= α·AP`` with ``‖R‖²``; ``X += α·P`` with
  ``P = R + β·P`` — three passes (the floor: each needs the previous
  reduction), one call per iteration without a preconditioner;
* BiCGSTAB: ``P = R + β(P − ω·V)``; ``⟨R̂, V⟩`` with ``‖V‖²``; ``R −= α·V``
  with ``‖R‖²``; ``⟨T, T⟩`` with ``⟨T, R⟩``; ``X += α·P̂ + ω·Ŝ`` with
  ``R −= ω·T``, ``‖R‖²`` and the next ``⟨R̂, R⟩`` — five passes.

Why not ``torch.compile``: measured (torch 2.13, one thread, n = 1e5, 8
columns), inductor evaluates a pointwise update and a column reduction of its
result (``R −= α·AP`` then ``‖R‖²``) in two loops over memory, recomputing
the update, and a whole iteration compiled as one graph writes ``R`` to a fresh
buffer first (6.4 ms against 0.5 ms for the split kernels).

The source is specialised per (dtype, k) — the column count is a compile-time
constant so the column loop vectorises — compiled once with the system C
compiler (``$CC``, else ``cc``/``gcc``/``clang``) into a per-user cache
directory (``$TSGU_KERNEL_CACHE``, else ``<tmp>/tsgu-kernels-<uid>``) and
loaded with :mod:`ctypes`. Sums run over ``W = k·L`` interleaved lanes (a
multiple of ``k`` near 32 elements) folded at the end, so one column is summed
with 32 partial sums, not one serial chain. Arithmetic per element is the eager
loops' (same operations in the same order; the compiler may contract ``a·b + c``
into one rounding, and sums associate differently, as torch's do).

The loops run on the calling thread only (the products keep torch's threads):
they are measured with one thread, where they win; with several threads torch's
eager vector operations run in parallel, so measure before choosing ``fused``.

Tensors passed in are C-contiguous, real ``float32``/``float64`` on the CPU,
``(B, n, k)`` flattened (batch members one after the other) with scalars of
shape ``(B, k)``; masks are ``torch.bool`` (one byte each).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

__all__ = ["FusedKernels", "kernels_for"]

_SOURCE = r"""
#include <math.h>
#include <stdint.h>

typedef __T__ T;
#define K __K__
#define L __L__
#define W (K * L)

static inline T safe(T x) { return x == 0 ? (T)1 : x; }

/* per-lane copies of per-column scalars: lane j belongs to column j % K */
static inline void lanes(const T *a, T *out) { for (int j = 0; j < W; j++) out[j] = a[j % K]; }

static inline void fold(const T *acc, T *out) {
    for (int c = 0; c < K; c++) {
        T s = 0;
        for (int l = 0; l < L; l++) s += acc[l * K + c];
        out[c] = s;
    }
}

/* out1 = sum u*v, and out2 = sum w*y when w is given (one pass) */
static void dots(int64_t n, const T *restrict u, const T *restrict v, const T *restrict w, const T *restrict y,
                 T *out1, T *out2) {
    T a1[W] = {0}, a2[W] = {0};
    int64_t total = n * K, body = total - total % W;
    if (w) {
        for (int64_t i = 0; i < body; i += W)
            for (int j = 0; j < W; j++) { a1[j] += u[i + j] * v[i + j]; a2[j] += w[i + j] * y[i + j]; }
        for (int64_t i = body; i < total; i++) { a1[i - body] += u[i] * v[i]; a2[i - body] += w[i] * y[i]; }
        fold(a2, out2);
    } else {
        for (int64_t i = 0; i < body; i += W)
            for (int j = 0; j < W; j++) a1[j] += u[i + j] * v[i + j];
        for (int64_t i = body; i < total; i++) a1[i - body] += u[i] * v[i];
    }
    fold(a1, out1);
}

/* r -= a*z, then norm = sum r*r (one pass) */
static void axpy_norm(int64_t n, T *restrict r, const T *a, const T *restrict z, T *norm) {
    T al[W], acc[W] = {0};
    lanes(a, al);
    int64_t total = n * K, body = total - total % W;
    for (int64_t i = 0; i < body; i += W)
        for (int j = 0; j < W; j++) { T x = r[i + j] - al[j] * z[i + j]; r[i + j] = x; acc[j] += x * x; }
    for (int64_t i = body; i < total; i++) {
        int j = (int)(i - body);
        T x = r[i] - al[j] * z[i]; r[i] = x; acc[j] += x * x;
    }
    fold(acc, norm);
}

/* x += a*p, then p = z + b*p (one pass) */
static void cg_update(int64_t n, T *restrict x, T *restrict p, const T *restrict z, const T *a, const T *b) {
    T al[W], be[W];
    lanes(a, al); lanes(b, be);
    int64_t total = n * K, body = total - total % W;
    for (int64_t i = 0; i < body; i += W)
        for (int j = 0; j < W; j++) { T q = p[i + j]; x[i + j] += al[j] * q; p[i + j] = z[i + j] + be[j] * q; }
    for (int64_t i = body; i < total; i++) {
        int j = (int)(i - body);
        T q = p[i]; x[i] += al[j] * q; p[i] = z[i] + be[j] * q;
    }
}

/* CG, passes 1-2: alpha = rz/<P,AP> where the column may go on, R -= alpha*AP, rr = |R|^2, active &= rr > tol2 */
static int64_t cg_half(int64_t n, const T *p, const T *ap, T *r, const T *rz, uint8_t *active, const T *tol2,
                       T *alpha, T *rr) {
    T pap[K];
    uint8_t ok[K];
    dots(n, p, ap, 0, 0, pap, 0);
    for (int c = 0; c < K; c++) {
        ok[c] = active[c] && pap[c] > 0 && isfinite(pap[c]); /* pap <= 0: A is not SPD along P */
        alpha[c] = ok[c] ? rz[c] / pap[c] : 0;
    }
    axpy_norm(n, r, alpha, ap, rr);
    int64_t count = 0;
    for (int c = 0; c < K; c++) { active[c] = ok[c] && rr[c] > tol2[c]; count += active[c]; }
    return count;
}

/* one CG iteration after AP = A P, no preconditioner (Z = R, <R,Z> = |R|^2); rz becomes |R|^2 */
int64_t cg_iteration(int64_t batch, int64_t n, T *P, const T *AP, T *R, T *X, T *rz, uint8_t *active,
                     const T *tol2) {
    int64_t count = 0;
    for (int64_t b = 0; b < batch; b++) {
        int64_t o = b * n * K, s = b * K;
        T alpha[K], rr[K], beta[K];
        count += cg_half(n, P + o, AP + o, R + o, rz + s, active + s, tol2 + s, alpha, rr);
        for (int c = 0; c < K; c++) {
            beta[c] = active[s + c] ? rr[c] / safe(rz[s + c]) : 0;
            rz[s + c] = rr[c];
        }
        cg_update(n, X + o, P + o, R + o, alpha, beta);
    }
    return count;
}

/* CG with a preconditioner, passes 1-2 (alpha and rr out; Z = M^-1 R comes next, outside) */
int64_t cg_step(int64_t batch, int64_t n, const T *P, const T *AP, T *R, const T *rz, uint8_t *active,
                const T *tol2, T *alpha, T *rr) {
    int64_t count = 0;
    for (int64_t b = 0; b < batch; b++) {
        int64_t o = b * n * K, s = b * K;
        count += cg_half(n, P + o, AP + o, R + o, rz + s, active + s, tol2 + s, alpha + s, rr + s);
    }
    return count;
}

/* CG with a preconditioner, pass 3: beta = rz_new/rz where active, X += alpha*P, P = Z + beta*P */
void cg_advance(int64_t batch, int64_t n, T *X, T *P, const T *Z, const T *alpha, const T *rz, const T *rz_new,
                const uint8_t *active) {
    for (int64_t b = 0; b < batch; b++) {
        int64_t o = b * n * K, s = b * K;
        T beta[K];
        for (int c = 0; c < K; c++) beta[c] = active[s + c] ? rz_new[s + c] / safe(rz[s + c]) : 0;
        cg_update(n, X + o, P + o, Z + o, alpha + s, beta);
    }
}

/* BiCGSTAB: the columns that may go on (ok), beta, and P = R + beta*(P - omega*V) */
int64_t bicg_direction(int64_t batch, int64_t n, T *P, const T *V, const T *R, const T *rho_new, const T *rho,
                       const T *alpha, const T *omega, const uint8_t *active, const T *rr, const T *rhat_norm,
                       T eps, uint8_t *ok) {
    int64_t count = 0;
    for (int64_t b = 0; b < batch; b++) {
        int64_t o = b * n * K, s = b * K;
        T be[W], om[W], beta[K];
        for (int c = 0; c < K; c++) {
            int64_t i = s + c;
            ok[i] = active[i] && fabs(rho_new[i]) > eps * rhat_norm[i] * sqrt(rr[i]) && omega[i] != 0;
            beta[c] = ok[i] ? (rho_new[i] / safe(rho[i])) * (alpha[i] / safe(omega[i])) : 0;
            count += ok[i];
        }
        lanes(beta, be); lanes(omega + s, om);
        T *p = P + o;
        const T *v = V + o, *r = R + o;
        int64_t total = n * K, body = total - total % W;
        for (int64_t i = 0; i < body; i += W)
            for (int j = 0; j < W; j++) p[i + j] = (p[i + j] - v[i + j] * om[j]) * be[j] + r[i + j];
        for (int64_t i = body; i < total; i++) {
            int j = (int)(i - body);
            p[i] = (p[i] - v[i] * om[j]) * be[j] + r[i];
        }
    }
    return count;
}

/* BiCGSTAB after V = A P^: alpha = rho_new/<R^,V> where ok, R -= alpha*V (R becomes S), go_on = ok & |S|^2 > tol2 */
int64_t bicg_half(int64_t batch, int64_t n, const T *Rhat, const T *V, T *R, const T *rho_new, const T *rhat_norm,
                  T eps, uint8_t *ok, const T *tol2, T *alpha, uint8_t *go_on) {
    int64_t count = 0;
    for (int64_t b = 0; b < batch; b++) {
        int64_t o = b * n * K, s = b * K;
        T rv[K], vv[K], ss[K];
        dots(n, Rhat + o, V + o, V + o, V + o, rv, vv);
        for (int c = 0; c < K; c++) {
            int64_t i = s + c;
            ok[i] = ok[i] && fabs(rv[c]) > eps * rhat_norm[i] * sqrt(vv[c]) && isfinite(rv[c]);
            alpha[i] = ok[i] ? rho_new[i] / rv[c] : 0;
        }
        axpy_norm(n, R + o, alpha + s, V + o, ss);
        for (int c = 0; c < K; c++) { go_on[s + c] = ok[s + c] && ss[c] > tol2[s + c]; count += go_on[s + c]; }
    }
    return count;
}

/* BiCGSTAB after T = A S^: omega = <T,S>/<T,T> where go_on, X += alpha*P^ + omega*S^, R -= omega*T,
   rr = |R|^2, rho_next = <R^,R>, active = go_on & omega != 0 & rr > tol2. S^ may be R itself. */
int64_t bicg_finish(int64_t batch, int64_t n, const T *Tm, T *R, T *X, const T *Phat, const T *Shat, const T *Rhat,
                    const T *alpha, const uint8_t *go_on, const T *tol2, T *omega, T *rr, T *rho_next,
                    uint8_t *active) {
    int64_t count = 0;
    for (int64_t b = 0; b < batch; b++) {
        int64_t o = b * n * K, s = b * K;
        T tt[K], ts[K], al[W], om[W], a1[W] = {0}, a2[W] = {0};
        const T *t = Tm + o, *ph = Phat + o, *sh = Shat + o, *rh = Rhat + o;
        T *r = R + o, *x = X + o;
        dots(n, t, t, t, r, tt, ts);
        for (int c = 0; c < K; c++) {
            int64_t i = s + c;
            omega[i] = go_on[i] && tt[c] > 0 ? ts[c] / tt[c] : 0;
        }
        lanes(alpha + s, al); lanes(omega + s, om);
        int64_t total = n * K, body = total - total % W;
        for (int64_t i = 0; i < body; i += W)
            for (int j = 0; j < W; j++) {
                T y = x[i + j] + ph[i + j] * al[j];
                x[i + j] = y + sh[i + j] * om[j];
                T z = r[i + j] - t[i + j] * om[j];
                r[i + j] = z;
                a1[j] += z * z;
                a2[j] += rh[i + j] * z;
            }
        for (int64_t i = body; i < total; i++) {
            int j = (int)(i - body);
            T y = x[i] + ph[i] * al[j];
            x[i] = y + sh[i] * om[j];
            T z = r[i] - t[i] * om[j];
            r[i] = z;
            a1[j] += z * z;
            a2[j] += rh[i] * z;
        }
        fold(a1, rr + s); fold(a2, rho_next + s);
        for (int c = 0; c < K; c++) {
            int64_t i = s + c;
            active[i] = go_on[i] && omega[i] != 0 && rr[i] > tol2[i];
            count += active[i];
        }
    }
    return count;
}
"""

_TYPES = {torch.float64: ("double", 8), torch.float32: ("float", 4)}
_FUNCTIONS = ("cg_iteration", "cg_step", "cg_advance", "bicg_direction", "bicg_half", "bicg_finish")
_LANE_BYTES = 256  # W·sizeof(T) ≈ 256 bytes: 32 doubles or 64 floats of partial sums per pass


class FusedKernels:
    """The compiled loops for one (dtype, k), called with tensors (see the module docstring for the layout)."""

    def __init__(self, library: ctypes.CDLL, dtype: torch.dtype, k: int):
        self.dtype = dtype
        self.k = k
        self._scalar = ctypes.c_double if dtype == torch.float64 else ctypes.c_float
        self._functions = {}
        for name in _FUNCTIONS:
            function = getattr(library, name)
            function.restype = None if name == "cg_advance" else ctypes.c_int64
            self._functions[name] = function

    def call(self, name: str, batch: int, n: int, *arguments: torch.Tensor | float) -> int:
        """Run ``name`` on ``arguments`` (tensors by pointer, a float as the scalar type); the active count."""
        converted = [
            self._scalar(value) if isinstance(value, float) else ctypes.c_void_p(value.data_ptr())
            for value in arguments
        ]
        result = self._functions[name](ctypes.c_int64(batch), ctypes.c_int64(n), *converted)
        return 0 if result is None else int(result)


_LOADED: dict[tuple[torch.dtype, int], FusedKernels] = {}


def _cache_directory() -> Path:
    configured = os.environ.get("TSGU_KERNEL_CACHE")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    directory = Path(configured) if configured else Path(tempfile.gettempdir()) / f"tsgu-kernels-{uid}"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if hasattr(os, "getuid") and directory.stat().st_uid != os.getuid():
        raise PermissionError(f"{directory} belongs to another user; set TSGU_KERNEL_CACHE")
    return directory


def _compiler() -> str:
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return candidate
    raise FileNotFoundError("no C compiler found ($CC, cc, gcc or clang)")


def _build(source: str) -> Path:
    compiler = _compiler()
    flags = ["-O3", "-std=c99", "-shared", "-fPIC"]
    host = platform.node() + platform.machine()  # -march=native code is for this machine: a shared cache keeps apart
    digest = hashlib.sha256((host + compiler + " ".join(flags) + source).encode()).hexdigest()[:20]
    directory = _cache_directory()
    library = directory / f"tsgu_krylov_{digest}.so"
    if library.exists():
        return library
    # this process's own source and output names: concurrent builds of the same kernel never share a file
    source_file = directory / f"tsgu_krylov_{digest}.{os.getpid()}.c"
    source_file.write_text(source)
    scratch = directory / f"tsgu_krylov_{digest}.{os.getpid()}.so"
    errors = ""
    try:
        for extra in (["-march=native"], []):  # -march=native where the compiler knows it: AVX-512 where the CPU has it
            done = subprocess.run(
                [compiler, *flags, *extra, str(source_file), "-o", str(scratch), "-lm"],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0:
                os.replace(scratch, library)  # atomic: a concurrent process sees the whole file or none
                return library
            errors = done.stderr.strip()
    finally:
        source_file.unlink(missing_ok=True)
        scratch.unlink(missing_ok=True)
    raise OSError(f"{compiler} failed: {errors[-500:]}")


def kernels_for(dtype: torch.dtype, k: int) -> FusedKernels:
    """The fused loops for ``dtype`` (float32/float64) and ``k`` columns, compiled on first use and cached.

    Raises
    ------
    OSError
        When no C compiler is found, it fails, or the library cannot be loaded (the caller falls back).
    """
    key = (dtype, k)
    kernels = _LOADED.get(key)
    if kernels is None:
        name, size = _TYPES[dtype]
        lanes = max(1, _LANE_BYTES // (size * k))
        source = _SOURCE.replace("__T__", name).replace("__K__", str(k)).replace("__L__", str(lanes))
        kernels = _LOADED[key] = FusedKernels(ctypes.CDLL(str(_build(source))), dtype, k)
    return kernels
