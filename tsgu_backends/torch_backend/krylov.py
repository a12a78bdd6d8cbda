"""Block Krylov solvers in pure torch: every column of ``B`` iterates together.

Each method works on ``(..., n, k)`` tensors — optional batch dimensions in
front, one system per batch member — with per-column scalars (shape
``(..., k)``) and a per-column ``active`` mask: a column that has converged or
broken down stops changing (updates go through ``torch.where``, so nothing
from a stopped column can leak NaN into its solution). There is no Python
loop over columns.

:func:`krylov_solve` drives a method: it computes the *true* residual,
runs the method from the current iterate until the method's own estimate
says every column is done, and repeats (a restart from the true residual)
while columns are unconverged, progress is made and iterations remain. This
corrects residual drift, restarts BiCGSTAB after a breakdown, and is what
makes GMRES "restarted" (one cycle per pass).

Conventions: ``op(X)`` returns ``A @ X`` for ``X`` of shape ``(..., n, k)``, and
``op(X, out=Y)`` may write it into a buffer ``Y`` of that shape instead (the
methods reuse one buffer per product: see :func:`krylov_solve`'s ``op_into``);
``precond(R)`` applies ``M⁻¹``; ``tol`` is the per-column absolute threshold
``max(rtol·‖b‖, atol)``. One iteration is one step of the method (BiCGSTAB:
two products with ``A``; the others: one).

Complex dtypes: inner products conjugate their first argument (``vdot``), so
GMRES and BiCGSTAB solve any invertible complex ``A``, and CG and MINRES a
Hermitian (positive definite, for CG) one, whose Lanczos scalars are real
(their real parts are taken). GMRES's Givens rotations are the complex ones
(``[[c̄, s̄], [−s, c]]`` with ``c = a/ρ``, ``s = b/ρ``). For real dtypes every
change is a no-op.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tsgu_backends.torch_backend import fused_cpu
from tsgu_core.errors import InvalidOptionError
from tsgu_core.plugins.kit import Restarts, largest_power_of_two, power_of_two, scaled_norm

__all__ = ["METHODS", "KrylovResult", "krylov_solve"]

Operator = Callable[..., torch.Tensor]  # X ↦ op(A) X; CG and BiCGSTAB also pass out= (a reused buffer)
ProductInto = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def _dot(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Column-wise inner products ``Σ conj(U) V``: ``(..., n, k) × (..., n, k) → (..., k)``."""
    return ((U.conj() if U.is_complex() else U) * V).sum(-2)


def _real_dot(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """The real part of :func:`_dot`: what is real in exact arithmetic (``⟨R, R⟩``, ``⟨P, A P⟩`` for Hermitian A)."""
    return _dot(U, V).real


def _col(a: torch.Tensor) -> torch.Tensor:
    """Per-column scalars ``(..., k)`` shaped to scale ``(..., n, k)`` tensors."""
    return a.unsqueeze(-2)


def _norm(R: torch.Tensor) -> torch.Tensor:
    norms: torch.Tensor = torch.linalg.vector_norm(R, dim=-2)
    return norms


def _safe(x: torch.Tensor) -> torch.Tensor:
    """``x`` with zeros replaced by ones, for divisions whose result is masked anyway."""
    return torch.where(x == 0, torch.ones_like(x), x)


_FUSED_DTYPES = (torch.float32, torch.float64)
_compile_failure: dict[str, str] = {}  # "cpu" → why the fused loops could not be built: eager from then on
_fallback_warned: set[str] = set()  # the (device, dtype) pairs already warned about running eagerly


def _fused_kernels(R: torch.Tensor) -> fused_cpu.FusedKernels | None:
    """The fused loops for ``R``'s dtype, or ``None`` (run eagerly) with a warning once.

    The loops exist for float32/float64 on the CPU; numba compiles them on first use per dtype (seconds; kept
    in a checked disk cache, see :mod:`tsgu_backends.torch_backend.fused_cpu`). When that fails a warning says
    why, once, and the eager loops run for the rest of the process.
    """
    if R.device.type != "cpu" or R.dtype not in _FUSED_DTYPES:
        where = f"{R.device.type}/{R.dtype}"
        if where not in _fallback_warned:
            _fallback_warned.add(where)
            warnings.warn(
                f"fused=True: the fused loops are built for float32/float64 on the CPU; {where} runs eagerly",
                RuntimeWarning,
                stacklevel=4,
            )
        return None
    if "cpu" in _compile_failure:
        return None
    try:
        return fused_cpu.kernels_for(R.dtype, R.shape[-1])
    except Exception as error:  # any failure to build the optional loops means: eager, said once
        reason = _compile_failure["cpu"] = f"{type(error).__name__}: {error}"
        warnings.warn(
            f"fused=True: the fused CPU loops could not be built ({reason[:300]}); the eager loops run instead, "
            "for the rest of this process",
            RuntimeWarning,
            stacklevel=4,
        )
        return None


def _blocks(R: torch.Tensor) -> tuple[int, int, int]:
    """``(batch, n, k)`` of a ``(..., n, k)`` tensor: the layout the fused loops take."""
    n, k = R.shape[-2], R.shape[-1]
    return R.numel() // max(n * k, 1), n, k


def _dense(Y: torch.Tensor) -> torch.Tensor:
    return Y if Y.is_contiguous() else Y.contiguous()


def _in_loop(product: tuple[torch.Tensor, float] | None, precond: Operator | None, batch: int, n: int, k: int) -> bool:
    """Whether the fused method runs every iteration in one call (:meth:`fused_cpu.FusedKernels.loop`): given
    ``A``'s CSR and a scale, without a preconditioner, for 2 to ``LOOP_MAX_K`` columns. One column keeps
    torch's product (measured, CG on 2-D Poisson, n = 1e5: the loop's own product made the solve 1.1× slower)."""
    return product is not None and precond is None and batch > 0 and n > 0 and 2 <= k <= fused_cpu.LOOP_MAX_K


def _cg(
    op: Operator,
    precond: Operator | None,
    X: torch.Tensor,
    R: torch.Tensor,
    tol: torch.Tensor,
    maxiter: int,
    active: torch.Tensor,
    fused: bool = False,
    product: tuple[torch.Tensor, float] | None = None,
    **_: object,
) -> tuple[torch.Tensor, int]:
    # In-place updates keep one pass over memory per vector operation; without a
    # preconditioner Z is R, so ⟨R, Z⟩ is ‖R‖² and one dot product is saved.
    kernels = _fused_kernels(R) if fused else None
    if kernels is not None:
        return _cg_fused(kernels, op, precond, _dense(X), _dense(R), tol, maxiter, active, product)
    Z = R if precond is None else precond(R)
    P = Z.clone()
    AP = torch.empty_like(P, memory_format=torch.contiguous_format)  # op(·, out=) buffers are contiguous
    rz = _real_dot(R, Z)
    its = 0
    while its < maxiter:
        AP = op(P, out=AP)
        pAp = _real_dot(P, AP)
        ok = active & (pAp > 0) & torch.isfinite(pAp)  # pAp ≤ 0: A is not SPD along P
        alpha = torch.where(ok, rz / _safe(pAp), 0)
        X.addcmul_(P, _col(alpha))
        R.addcmul_(AP, _col(alpha), value=-1)
        rr = _real_dot(R, R)
        its += 1
        active = ok & (rr > tol**2)
        if not bool(active.any()) or its == maxiter:
            break
        if precond is None:
            Z, rz_new = R, rr
        else:
            Z = precond(R)
            rz_new = _real_dot(R, Z)
        beta = torch.where(active, rz_new / _safe(rz), 0)
        torch.addcmul(Z, P, _col(beta), out=P)  # P = Z + β P in one pass
        rz = rz_new
    return X, its


def _cg_fused(
    kernels: fused_cpu.FusedKernels,
    op: Operator,
    precond: Operator | None,
    X: torch.Tensor,
    R: torch.Tensor,
    tol: torch.Tensor,
    maxiter: int,
    active: torch.Tensor,
    product: tuple[torch.Tensor, float] | None = None,
) -> tuple[torch.Tensor, int]:
    """:func:`_cg`'s loop with the vector work in the fused CPU loops: three passes per iteration.

    Without a preconditioner one call does all of it (``⟨P, AP⟩``; ``R −= α·AP`` with ``‖R‖²``;
    ``X += α·P`` with ``P = R + β·P``) and returns how many columns go on; ``X``'s update rides
    in the pass that rewrites ``P``. With one, ``Z = M⁻¹R`` and ``⟨R, Z⟩`` come between two calls.

    With ``product = (A, s)`` (``op(V) = s·A V``, ``A`` a CSR tensor), no preconditioner and at most
    :data:`fused_cpu.LOOP_MAX_K` columns, every iteration runs in one call that computes the products
    itself, two passes per iteration: ``X``/``P`` updates with ``AP`` and ``⟨P, AP⟩`` (each row of ``P``
    updated just before the product first reads it), then ``R −= α·AP`` with ``‖R‖²``.
    """
    batch, n, k = _blocks(R)
    if _in_loop(product, precond, batch, n, k):
        assert product is not None  # for mypy: _in_loop says so
        matrix, scale = product
        P = R.clone(memory_format=torch.contiguous_format)
        rz = _dense(_real_dot(R, R)).clone()
        tol2 = _dense((tol**2).to(R.dtype))
        flags = _dense(active).clone()
        arguments = (X, P, R, torch.empty_like(P), rz, flags, tol2)
        return X, kernels.loop("cg_loop", matrix, scale, (batch, n, k), arguments, maxiter)
    Z = R if precond is None else _dense(precond(R))
    P = Z.clone(memory_format=torch.contiguous_format)
    AP = torch.empty_like(P)
    rz = _dense(_real_dot(R, Z)).clone()
    tol2 = _dense((tol**2).to(R.dtype))
    active = _dense(active).clone()  # updated in place by the loops
    its = 0
    if precond is None:
        while its < maxiter:
            AP = _dense(op(P, out=AP))
            going = kernels.call("cg_iteration", batch, n, k, P, AP, R, X, rz, active, tol2)
            its += 1
            if not going:
                break
        return X, its
    alpha, rr = torch.empty_like(rz), torch.empty_like(rz)
    while its < maxiter:
        AP = _dense(op(P, out=AP))
        going = kernels.call("cg_step", batch, n, k, P, AP, R, rz, active, tol2, alpha, rr)
        its += 1
        if not going or its == maxiter:
            X.addcmul_(P, _col(alpha))
            break
        Z = _dense(precond(R))
        rz_new = _dense(_real_dot(R, Z))
        kernels.call("cg_advance", batch, n, k, X, P, Z, alpha, rz, rz_new, active)
        rz = rz_new
    return X, its


def _bicgstab(
    op: Operator,
    precond: Operator | None,
    X: torch.Tensor,
    R: torch.Tensor,
    tol: torch.Tensor,
    maxiter: int,
    active: torch.Tensor,
    fused: bool = False,
    product: tuple[torch.Tensor, float] | None = None,
    **_: object,
) -> tuple[torch.Tensor, int]:
    kernels = _fused_kernels(R) if fused else None
    if kernels is not None:
        return _bicgstab_fused(kernels, op, precond, _dense(X), _dense(R), tol, maxiter, active, product)
    # Near-breakdown is breakdown: |⟨r̂, r⟩| ≤ ε‖r̂‖‖r‖ (or |⟨r̂, v⟩| ≤ ε‖r̂‖‖v‖) stops the column, and the
    # driver restarts it from its true residual. Where r̂ is orthogonal to r in exact arithmetic (a one-hot
    # right-hand side), real rounding tends to give exactly 0, complex rounding ~ε, and chasing ~ε^k ratios
    # ends in 0/0 once they underflow.
    eps = torch.finfo(tol.dtype).eps
    R_hat = R.clone()
    r_hat_norm = torch.sqrt(_real_dot(R_hat, R_hat))
    rr = _real_dot(R, R)
    ones = torch.ones_like(tol, dtype=R.dtype)
    rho, alpha, omega = ones, ones, ones
    P = torch.zeros_like(R)
    V = torch.zeros_like(R, memory_format=torch.contiguous_format)  # op(·, out=) buffers are contiguous
    T = torch.empty_like(V)
    its = 0
    while its < maxiter:
        rho_new = _dot(R_hat, R)
        ok = active & (rho_new.abs() > eps * r_hat_norm * torch.sqrt(rr)) & (omega != 0)
        beta = torch.where(ok, (rho_new / _safe(rho)) * (alpha / _safe(omega)), 0)
        P.addcmul_(V, _col(omega), value=-1).mul_(_col(beta)).add_(R)  # P = R + β (P − ω V)
        P_hat = P if precond is None else precond(P)
        V = op(P_hat, out=V)
        r_hat_v = _dot(R_hat, V)
        ok = ok & (r_hat_v.abs() > eps * r_hat_norm * torch.sqrt(_real_dot(V, V))) & torch.isfinite(r_hat_v)
        alpha = torch.where(ok, rho_new / _safe(r_hat_v), 0)
        X.addcmul_(P_hat, _col(alpha))
        R.addcmul_(V, _col(alpha), value=-1)  # R now holds S = R − α V
        its += 1
        go_on = ok & (_real_dot(R, R) > tol**2)
        if bool(go_on.any()):
            S_hat = R if precond is None else precond(R)
            T = op(S_hat, out=T)
            tt = _real_dot(T, T)
            omega = torch.where(go_on & (tt > 0), _dot(T, R) / _safe(tt), 0)
            X.addcmul_(S_hat, _col(omega))
            R.addcmul_(T, _col(omega), value=-1)
        rho = rho_new
        rr = _real_dot(R, R)
        active = go_on & (omega != 0) & (rr > tol**2)
        if not bool(active.any()):
            break
    return X, its


def _bicgstab_fused(
    kernels: fused_cpu.FusedKernels,
    op: Operator,
    precond: Operator | None,
    X: torch.Tensor,
    R: torch.Tensor,
    tol: torch.Tensor,
    maxiter: int,
    active: torch.Tensor,
    product: tuple[torch.Tensor, float] | None = None,
) -> tuple[torch.Tensor, int]:
    """:func:`_bicgstab`'s loop with the vector work in the fused CPU loops: five passes per iteration.

    The same scalars, tests and order of operations as the eager loop; ``X``'s update by ``α·P̂`` is
    delayed to the pass that adds ``ω·Ŝ`` (and done alone when no column takes the second half).

    With ``product`` (see :func:`_cg_fused`), no preconditioner and at most :data:`fused_cpu.LOOP_MAX_K`
    columns, every iteration runs in one call that computes both products itself, three passes per
    iteration (the direction update rides in the pass of the first product, ``S = R − α·V`` with ``‖S‖²`` in
    the pass of the second; ``⟨R̂, V⟩``, ``‖V‖²``, ``⟨T, T⟩`` and ``⟨T, S⟩`` in the passes of the products).
    """
    batch, n, k = _blocks(R)
    eps = float(torch.finfo(R.dtype).eps)
    R_hat = R.clone()
    r_hat_norm = _dense(torch.sqrt(_real_dot(R_hat, R_hat)))
    rr = _dense(_real_dot(R, R)).clone()
    rho_new = _dense(_dot(R_hat, R)).clone()  # ⟨R̂, R⟩ of the coming iteration: the last pass writes it
    tol2 = _dense((tol**2).to(R.dtype))
    if _in_loop(product, precond, batch, n, k):
        assert product is not None  # for mypy: _in_loop says so
        matrix, scale = product
        flags = _dense(active).clone()
        vectors = (X, torch.zeros_like(R), torch.zeros_like(R), R, R_hat, torch.empty_like(R))
        arguments = (*vectors, rr, rho_new, r_hat_norm, flags, tol2)
        return X, kernels.loop("bicgstab_loop", matrix, scale, (batch, n, k), arguments, maxiter)
    rho, alpha, omega = (torch.ones_like(rr) for _ in range(3))
    active = _dense(active).clone()
    ok, go_on = torch.empty_like(active), torch.empty_like(active)
    P = torch.zeros_like(R)
    V = torch.zeros_like(R)
    T = torch.empty_like(R)
    its = 0
    while its < maxiter:
        kernels.call(
            "bicg_direction", batch, n, k, P, V, R, rho_new, rho, alpha, omega, active, rr, r_hat_norm, eps, ok
        )
        P_hat = P if precond is None else _dense(precond(P))
        V = _dense(op(P_hat, out=V))
        going = kernels.call("bicg_half", batch, n, k, R_hat, V, R, rho_new, r_hat_norm, eps, ok, tol2, alpha, go_on)
        its += 1
        if not going:  # no column takes the second half: X += α P̂ alone, and every column has stopped
            X.addcmul_(P_hat, _col(alpha))
            break
        S_hat = R if precond is None else _dense(precond(R))
        T = _dense(op(S_hat, out=T))
        rho.copy_(rho_new)
        going = kernels.call(
            "bicg_finish", batch, n, k, T, R, X, P_hat, S_hat, R_hat, alpha, go_on, tol2, omega, rr, rho_new, active
        )
        if not going:
            break
    return X, its


def _identity(R: torch.Tensor) -> torch.Tensor:
    return R


def _conj(x: torch.Tensor) -> torch.Tensor:
    return x.conj() if x.is_complex() else x


def _minres(
    op: Operator,
    precond: Operator | None,
    X: torch.Tensor,
    R: torch.Tensor,
    tol: torch.Tensor,
    maxiter: int,
    active: torch.Tensor,
    **_: object,
) -> tuple[torch.Tensor, int]:
    # Paige & Saunders' MINRES, with the scalars of the Lanczos process and of the
    # Givens rotations kept per column. ``phibar`` estimates the residual in the
    # M⁻¹-norm; the stopping test scales ``tol`` by the same factor at the start.
    precond = precond or _identity
    zeros = torch.zeros_like(tol)
    r1 = R
    y = precond(R)
    beta1 = torch.sqrt(torch.clamp(_real_dot(R, y), min=0))
    tol_m = tol * beta1 / _safe(_norm(R))
    old_beta, beta, dbar, epsln, phibar = zeros, beta1, zeros, zeros, beta1
    cs, sn = -torch.ones_like(tol), zeros
    w = w2 = torch.zeros_like(R)
    r2 = r1
    active = active & (beta1 > 0)
    tiny = torch.finfo(tol.dtype).tiny
    its = 0
    while its < maxiter and bool(active.any()):
        v = y / _col(_safe(beta))
        y = op(v)
        if its > 0:
            y = y - _col(beta / _safe(old_beta)) * r1
        alpha = _real_dot(v, y)
        y = y - _col(alpha / _safe(beta)) * r2
        r1, r2 = r2, y
        y = precond(r2)
        old_beta = beta
        beta = torch.sqrt(torch.clamp(_real_dot(r2, y), min=0))
        old_eps = epsln
        delta = cs * dbar + sn * alpha
        gbar = sn * dbar - cs * alpha
        epsln = sn * beta
        dbar = -cs * beta
        gamma = torch.clamp(torch.sqrt(gbar**2 + beta**2), min=tiny)
        cs, sn = gbar / gamma, beta / gamma
        phi = cs * phibar
        phibar = sn * phibar
        w1, w2 = w2, w
        w = (v - _col(old_eps) * w1 - _col(delta) * w2) / _col(gamma)
        X = torch.where(_col(active), X + _col(phi) * w, X)
        its += 1
        active = active & (phibar > tol_m) & (beta > 0) & torch.isfinite(phibar)
    return X, its


def _gmres(
    op: Operator,
    precond: Operator | None,
    X: torch.Tensor,
    R: torch.Tensor,
    tol: torch.Tensor,
    maxiter: int,
    active: torch.Tensor,
    restart: int | None = None,
    **_: object,
) -> tuple[torch.Tensor, int]:
    # One cycle of right-preconditioned GMRES(m), per column: Arnoldi with
    # classical Gram-Schmidt applied twice (batched over columns), Givens
    # rotations giving each column's residual norm at every step, and a
    # batched triangular solve in which each column uses only its own steps.
    # Internally every (batch member, column) pair is one row of a (C, n) tensor.
    precond = precond or _identity
    shape = R.shape  # (..., n, k)
    n = shape[-2]

    def to_rows(Y: torch.Tensor) -> torch.Tensor:
        return Y.movedim(-1, -2).reshape(-1, n)

    def from_rows(Y: torch.Tensor) -> torch.Tensor:
        return Y.reshape(*shape[:-2], shape[-1], n).movedim(-1, -2)

    tol, active = tol.reshape(-1), active.reshape(-1)
    Rc = to_rows(R)
    k = Rc.shape[0]
    if restart is None:
        raise InvalidOptionError("GMRES needs its cycle length: pass restart= (the 'restart' option)", option="restart")
    m = max(1, min(restart, maxiter, n))
    beta = torch.linalg.vector_norm(Rc, dim=1)
    # The basis is stored step-major, V[j] a contiguous (C, n) block: for one right-hand side per
    # member, from_rows(V[j]) is a contiguous (..., n, 1) view, so the product with A reads it without
    # a copy and writes straight into V[j + 1] (op's out=), where the new vector is orthogonalised and
    # normalised in place. Rows past the current step are never read: no zero-fill (53 MB, 29 ms, for
    # 32 members of n = 1e4 at m = 20). Products with the basis are (1, n) × (n, j+1) and in-place
    # baddbmm_: measured (CPU, one thread, 32 members, n = 1e4, j = 10) 1.0 ms each, against 3.1 ms
    # for torch.bmm(basis, w) ((j+1, n) × (n, 1)) and 2.0 ms plus a copy for W − bmm(h, basis).
    V = R.new_empty(m + 1, k, n)
    V[0] = Rc / _safe(beta).unsqueeze(1)
    H = R.new_zeros(k, m, m)
    g = R.new_zeros(k, m + 1)
    g[:, 0] = beta
    cs = R.new_zeros(k, m)
    sn = R.new_zeros(k, m)
    steps = torch.zeros(k, dtype=torch.int64, device=R.device)
    live = active.clone()
    its = 0
    for j in range(m):
        target = from_rows(V[j + 1])
        product = op(precond(from_rows(V[j])), out=target) if target.is_contiguous() else op(precond(from_rows(V[j])))
        W = V[j + 1]
        if product.data_ptr() != target.data_ptr():
            W.copy_(to_rows(product))
        W.masked_fill_(~live[:, None], 0)  # a stopped column's vector is 0 (NaN included)
        basis = V[: j + 1].transpose(0, 1)  # (C, j+1, n), strided
        adjoint = basis.conj() if basis.is_complex() else basis  # h = Vᴴ w, as the row wᵀ V̄ᵀ
        W_row = W.unsqueeze(1)  # (C, 1, n)
        h = torch.bmm(W_row, adjoint.mT)
        W_row.baddbmm_(h, basis, alpha=-1)
        h2 = torch.bmm(W_row, adjoint.mT)
        W_row.baddbmm_(h2, basis, alpha=-1)
        h = (h + h2).squeeze(1)
        h_next = torch.linalg.vector_norm(W, dim=1)
        W.div_(_safe(h_next).unsqueeze(1))
        for i in range(j):
            a, b = h[:, i].clone(), h[:, i + 1].clone()
            h[:, i] = _conj(cs[:, i]) * a + _conj(sn[:, i]) * b
            h[:, i + 1] = -sn[:, i] * a + cs[:, i] * b
        a = h[:, j]
        denom = torch.sqrt(a.abs() ** 2 + h_next**2)
        cs[:, j] = torch.where(denom > 0, a / _safe(denom), 1)
        sn[:, j] = torch.where(denom > 0, h_next / _safe(denom), 0)
        h[:, j] = denom
        H[:, : j + 1, j] = h
        g[:, j + 1] = -sn[:, j] * g[:, j]
        g[:, j] = _conj(cs[:, j]) * g[:, j]
        valid = live & (denom > 0)  # denom = 0: A·M⁻¹ annihilates the basis vector
        steps = steps + valid.to(torch.int64)
        live = valid & (g[:, j + 1].abs() > tol) & (h_next > 0)
        its = j + 1
        if not bool(live.any()):
            break
    used = torch.arange(its, device=R.device).unsqueeze(0) < steps.unsqueeze(1)  # (C, its)
    eye = torch.eye(its, dtype=R.dtype, device=R.device)
    triangle = torch.where(used.unsqueeze(2), H[:, :its, :its], eye)
    rhs = torch.where(used, g[:, :its], 0)
    y = torch.linalg.solve_triangular(triangle, rhs.unsqueeze(2), upper=True).squeeze(2)
    update = torch.bmm(y.unsqueeze(1), V[:its].transpose(0, 1)).squeeze(1)
    X = X + precond(from_rows(update))
    return X, its


METHODS: dict[str, Callable[..., tuple[torch.Tensor, int]]] = {
    "cg": _cg,
    "bicgstab": _bicgstab,
    "minres": _minres,
    "gmres": _gmres,
}


@dataclass(frozen=True)
class KrylovResult:
    """The outcome of :func:`krylov_solve`."""

    X: torch.Tensor
    iterations: int
    converged: bool
    message: str
    history: tuple[float, ...] = ()  # see tsgu_core.SolveInfo.history


_SHARED_SCALE_SPREAD = 256.0  # batch members whose σ lie within this factor share one σ (exact: powers of two)


def _reciprocal(sigma: torch.Tensor, dtype: torch.dtype) -> float | None:
    """``1/σ`` as a Python float when ``σ`` is one number whose reciprocal is a normal number of ``dtype``."""
    if sigma.numel() != 1:
        return None
    inverse = 1.0 / float(sigma)
    info = torch.finfo(dtype)
    return inverse if info.tiny <= inverse <= info.max else None


def krylov_solve(
    method: str,
    op: Operator,
    precond: Operator | None,
    B: torch.Tensor,
    *,
    x0: torch.Tensor | None,
    rtol: float,
    atol: float,
    maxiter: int,
    restart: int | None = None,
    scale: float | None = None,
    op_into: ProductInto | None = None,
    fused: bool = False,
    csr: torch.Tensor | None = None,
) -> KrylovResult:
    """Solve ``A X = B`` column-wise with ``method``, restarting from the true residual.

    Stops when every column meets ``‖b − A x‖ ≤ max(rtol·‖b‖, atol)``, when
    ``maxiter`` iterations are spent, or when a pass makes no progress.

    Scaling: each pass solves for a correction ``D`` of the scaled system
    ``(A/σ) D = R/s`` and adds ``(s/σ)·D`` to ``X``, with ``s`` the largest
    magnitude of each column of the true residual ``R`` and ``σ`` the scale of
    ``A`` (``scale``, or by default the largest magnitude of ``A·(R/s)``
    measured once, per batch member — shared by all members when they lie
    within a factor 256 of each other), both rounded to powers of two so the
    scaling is exact. The method's vectors are then of order one whatever the
    scale of ``A`` and ``B``: a problem scaled by ``1e±300`` (float64) or
    ``1e±25`` (float32) takes the same iterations as the unscaled one, where
    unscaled sums of squares would underflow to 0 (a false "converged") or
    overflow to inf. Every norm of the driver is scale-safe
    (:func:`tsgu_core.plugins.kit.scaled_norm`).

    Products: ``op(X)`` must return a new tensor (the driver scales it in
    place). ``op_into(X, out, alpha)``, when given, writes ``alpha · A X`` into
    the buffer ``out`` and returns it; the methods then reuse one buffer per
    product and the scaling by ``1/σ`` is folded into ``alpha`` — exact, since
    ``σ`` is a power of two — where ``σ`` is one number whose reciprocal is a
    normal number; members with different σ get the product into the buffer
    and one in-place division. On the CPU this halves the cost of a block
    product (torch's ``A @ X`` zero-fills and copies a fresh output). GMRES
    passes ``out=`` too: its next basis vector, when that is a contiguous block
    (one column per member).

    ``fused`` (CG and BiCGSTAB; float32/float64 on the CPU): the per-iteration
    vector work in the numba loops of :mod:`tsgu_backends.torch_backend.fused_cpu`
    (CG: three passes, BiCGSTAB: five), compiled on first use per dtype (see
    :func:`_fused_kernels`); elsewhere, or when they cannot be built, the eager
    loop runs after a warning. The backend refuses it for a complex ``A``.
    ``csr``, when given with ``fused`` and ``op_into``, is the sparse CSR tensor
    ``op`` multiplies by (block-diagonal for a batch): unpreconditioned fused CG
    then computes the products itself inside one loop (see :func:`_cg_fused`).
    """
    step = METHODS[method]
    b_norm = scaled_norm(B)
    X = torch.zeros_like(B) if x0 is None else x0.clone()
    sigma: torch.Tensor | None = None
    if scale is not None:
        sigma = power_of_two(torch.tensor(float(scale), dtype=b_norm.dtype, device=B.device))
    rules = Restarts(
        maxiter, reference=b_norm.detach().cpu()
    )  # one pass per attempt; no nudges (BiCGSTAB restarts from the true residual)
    while True:
        R = B - op(X)
        r_norm = scaled_norm(R)
        # ‖r‖ ≤ max(rtol·‖b‖, atol), compared as a ratio so that rtol·‖b‖ cannot underflow
        done = ((r_norm / _safe(b_norm) <= rtol) & (b_norm > 0)) | (r_norm <= atol)
        active = ~done
        if rules.review(r_norm.detach().cpu(), done.cpu()) != "attempt":
            break
        s = largest_power_of_two(R, dim=-2)  # (..., k)
        R_scaled = R / _col(s)
        if sigma is None:
            probe = op(R_scaled).abs().amax(dim=(-2, -1), keepdim=True)  # (..., 1, 1)
            sigma = power_of_two(probe)
            if sigma.numel() > 1 and bool(sigma.amax() <= _SHARED_SCALE_SPREAD * sigma.amin()):
                # members of like scale share the largest σ: one number, folded into the product
                sigma = sigma.amax().reshape((1,) * sigma.dim())
        # tol for the scaled residual: max(rtol·‖b‖, atol) / s, formed without rtol·‖b‖ or atol·… underflowing
        tol = torch.maximum(rtol * (b_norm / s), atol / s)

        inv_sigma = _reciprocal(sigma, B.dtype) if op_into is not None else None

        def op_scaled(
            V: torch.Tensor, out: torch.Tensor | None = None, sigma: torch.Tensor = sigma, inv: float | None = inv_sigma
        ) -> torch.Tensor:
            if out is not None and op_into is not None:
                # members with different σ (a batch): the product into the buffer, then one in-place division
                return op_into(V, out, inv) if inv is not None else op_into(V, out, 1.0).div_(sigma)
            return op(V).div_(sigma)  # in place: a fresh (n, k) temporary costs as much as the division

        precond_scaled = None
        if precond is not None:

            def precond_scaled(V: torch.Tensor, sigma: torch.Tensor = sigma) -> torch.Tensor:
                return precond(V) * sigma

        D, its = step(
            op_scaled,
            precond_scaled,
            torch.zeros_like(R),
            R_scaled,
            tol,
            rules.left,
            active,
            restart=restart,
            fused=fused,
            product=None if csr is None or inv_sigma is None else (csr, inv_sigma),
        )
        X = X + D * (_col(s) / sigma)
        rules.charge(its)
        if its == 0:
            rules.message = "broke down immediately"
            break
    return KrylovResult(X, rules.used, not bool(active.any()), rules.message, tuple(rules.history))
