"""The augmented-system solve that :func:`tsgu_core.lstsq` asks of a backend, and LSQR in torch.

The core poses least squares as the square, symmetric system

    K [r; x] = [c; d],   K = [[I, A], [Aᵀ, 0]],

whose solution for ``d = 0`` is the least-squares ``x`` of ``A x ≈ c`` with
residual ``r``. For a general right-hand side, with ``r₂`` the minimum-norm
solution of ``Aᵀ r₂ = d``, the solution is ``x = argmin ‖A x − (c − r₂)‖``
and ``r = c − A x``: two least-squares runs, the first only when ``d ≠ 0``
(the backward pass). :func:`solve_augmented` does this with any
least-squares routine a backend hands it (the torch backend: :func:`lsqr`
below, every column its own LSQR of Paige & Saunders (1982) with per-column
scalars, all columns together; the scipy backend: SciPy's LSMR/LSQR), then
measures the true residual of ``K`` and, while it is above the tolerance,
solves for the correction (iterative refinement), so that the core's residual
check passes for a converged solve.

Every norm is scale-safe (:func:`tsgu_core.plugins.norms.scaled_norm`) and LSQR's
rotations use ``hypot``: its vectors are normalised and its scalars carry
``A``'s scale linearly, so a problem scaled by ``1e±300`` neither underflows
nor overflows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from tsgu_core.plugins.kit.restarts import Restarts
from tsgu_core.plugins.norms import scaled_norm

__all__ = ["AugmentedResult", "lsqr", "solve_augmented"]

Operator = Callable[[torch.Tensor], torch.Tensor]
LeastSquares = Callable[..., tuple[torch.Tensor, int]]
"""``(matvec, rmatvec, C, q, tol, maxiter, *, consistent) -> (Y, iterations)``, as :func:`lsqr`."""


def _safe(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x == 0, torch.ones_like(x), x)


def _normalise(V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    norm = scaled_norm(V, dim=0)
    return V / _safe(norm), norm


def lsqr(
    matvec: Operator, rmatvec: Operator, C: torch.Tensor, q: int, tol: torch.Tensor, maxiter: int, *, consistent: bool
) -> tuple[torch.Tensor, int]:
    """``Y = argmin ‖M Y − C‖`` column by column (minimum norm when the system is consistent).

    Parameters
    ----------
    matvec, rmatvec : callable
        ``M @ V`` for ``V`` ``(q, k)`` and ``Mᴴ @ U`` for ``U`` ``(p, k)`` (``Mᵀ`` when real;
        the bidiagonalisation's scalars ``α``, ``β`` are norms, so the rotations stay real).
    C : Tensor
        ``(p, k)``.
    q : int
        The number of columns of ``M``.
    tol : Tensor
        ``(k,)``: stop a column when ``‖Mᵀ (C − M y)‖`` (``consistent=False``)
        or ``‖C − M y‖`` (``consistent=True``) is estimated below it.
    maxiter : int
        Iteration cap.

    Returns
    -------
    (Y, iterations)
    """
    U, beta = _normalise(C)
    V, alpha = _normalise(rmatvec(U))
    W = V.clone()
    Y = C.new_zeros(q, C.shape[1])
    phi_bar, rho_bar = beta, alpha
    active = (beta > 0) & (alpha > 0)
    its = 0
    while its < maxiter and bool(active.any()):
        U, beta = _normalise(matvec(V) - alpha * U)
        V, alpha = _normalise(rmatvec(U) - beta * V)
        rho = torch.hypot(rho_bar, beta)  # without squaring: α, β carry A's scale
        c, s = rho_bar / _safe(rho), beta / _safe(rho)
        theta = s * alpha
        rho_bar = -c * alpha
        phi = c * phi_bar
        phi_bar = s * phi_bar
        step = torch.where(active, phi / _safe(rho), 0)
        Y = Y + step * W
        W = V - (theta / _safe(rho)) * W
        its += 1
        estimate = phi_bar if consistent else phi_bar * alpha * c.abs()
        active = active & (estimate > tol) & (beta > 0) & (alpha > 0) & torch.isfinite(estimate)
    return Y, its


@dataclass(frozen=True)
class AugmentedResult:
    """The outcome of :func:`solve_augmented`."""

    Z: torch.Tensor
    iterations: int
    converged: bool
    message: str
    history: tuple[float, ...] = ()  # see tsgu_core.SolveInfo.history


def solve_augmented(
    matvec: Operator,
    rmatvec: Operator,
    Z: torch.Tensor,
    m: int,
    *,
    rtol: float,
    atol: float,
    maxiter: int,
    z0: torch.Tensor | None = None,
    least_squares: LeastSquares | None = None,
    transpose: bool = False,
) -> AugmentedResult:
    """Solve ``[[I, A], [Aᵀ, 0]] [r; x] = Z`` for ``A`` ``(m, n)`` given by its products.

    ``z0`` is an initial guess ``[r0; x0]``; ``least_squares`` the routine for the
    sub-problems (default: :func:`lsqr`). ``rmatvec`` applies ``Aᴴ``: for a
    complex ``A`` the system is ``K = [[I, A], [Aᴴ, 0]]``, and ``transpose=True``
    solves with ``Kᵀ = conj(K)`` as ``conj(K⁻¹ conj(Z))`` (for a real ``A``
    ``Kᵀ = K``: ``transpose`` changes nothing).

    Stops when ``‖Z − K z‖ ≤ max(rtol·‖Z‖, atol)`` per column (the core's own
    criterion), when ``maxiter`` LSQR iterations are spent, or when a
    refinement pass does not reduce the residual.
    """
    if transpose and Z.is_complex():
        result = solve_augmented(
            matvec,
            rmatvec,
            Z.conj().resolve_conj(),
            m,
            rtol=rtol,
            atol=atol,
            maxiter=maxiter,
            z0=None if z0 is None else z0.conj().resolve_conj(),
            least_squares=least_squares,
        )
        return AugmentedResult(
            result.Z.conj().resolve_conj(), result.iterations, result.converged, result.message, result.history
        )
    tol = torch.clamp(rtol * scaled_norm(Z, dim=0), min=atol)
    n = Z.shape[0] - m
    solve_ls = least_squares or lsqr

    def residual_of(z: torch.Tensor) -> torch.Tensor:
        r, x = z[:m], z[m:]
        return Z - torch.cat([r + matvec(x), rmatvec(r)])

    solution = torch.zeros_like(Z) if z0 is None else z0.clone()
    residual = Z if z0 is None else residual_of(solution)
    rules = Restarts(
        maxiter, reference=scaled_norm(Z, dim=0).cpu()
    )  # each attempt is one refinement pass: solve for the correction of the residual
    while (verdict := rules.review((norm := scaled_norm(residual, dim=0)).cpu(), (norm <= tol).cpu())) == "attempt":
        c, d = residual[:m], residual[m:]
        r2 = torch.zeros_like(c)
        used = 0
        if bool(d.abs().max() > 0):
            r2, used = solve_ls(rmatvec, matvec, d, m, tol / 2, rules.left, consistent=True)
        x, its = solve_ls(matvec, rmatvec, c - r2, n, tol / 2, max(rules.left - used, 0), consistent=False)
        rules.charge(used + its)
        solution = solution + torch.cat([c - matvec(x), x])
        residual = residual_of(solution)
    return AugmentedResult(solution, rules.used, verdict == "done", rules.message, tuple(rules.history))
