"""SciPy-style iterative solvers driven column by column, shared by the scipy and cupy backends.

SciPy's and CuPy's Krylov solvers take one right-hand side, so every column
of ``B`` is solved in turn (inside the backend; the core never loops). Each
column's solve is checked by its true residual right away and, if the
library stopped early (its own residual estimate drifted) or broke down,
restarted from where it stopped while that makes progress and iterations
remain (an attempt gets at most ``2n`` iterations, so an erratic method that
stalls, like CGS, is restarted too) — the core's final check then rarely sees
a library's false "converged". Iterations are counted with the library's callback; the
reported count is the largest over the columns.

Scaling: the libraries take plain, unscaled norms (``sqrt(dot(b, b))``), which
underflow to 0 for a ``b`` of size 1e-170 (float64) and overflow for 1e+160.
So every column is solved in scaled form: ``(A/σ) y = b/s`` with ``σ`` the
largest magnitude of ``A``'s stored values and ``s`` that of the column, both
powers of two (exact), and ``x = (s/σ)·y``; a preconditioner is scaled by
``σ`` (it approximates ``A⁻¹``), ``atol`` by ``1/s``, MINRES's ``shift`` by
``1/σ``. A problem whose ``A`` and ``B`` are scaled together by ``1e±300``
then runs exactly as the unscaled one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tsgu_core.plugins.kit import Restarts, combine_histories, nudge, power_of_two

__all__ = ["ColumnResult", "solve_columns"]

_MAX_RESTARTS = 3  # nudged restarts per column after a breakdown or a stall


def _scaled_problem(B: Any, operator: Any, keywords: Mapping[str, Any]) -> tuple[float, Any, dict[str, Any]]:
    """``(σ, A/σ, keywords for A/σ)``: σ is the largest stored magnitude of ``A`` as a power of two."""
    data = getattr(operator, "data", None)
    sigma = power_of_two(float(abs(data).max())) if data is not None and data.size else 1.0
    keywords = dict(keywords)
    if sigma == 1.0:
        return sigma, operator, keywords
    factor = B.dtype.type(sigma)
    for key in ("M", "M1"):  # a preconditioner approximates A⁻¹: (A/σ)⁻¹ = σ·A⁻¹
        if keywords.get(key) is not None:
            keywords[key] = keywords[key] * factor
    if keywords.get("shift") is not None:
        keywords["shift"] = keywords["shift"] / sigma
    return sigma, operator * B.dtype.type(1.0 / sigma), keywords


class _Breakdown(Exception):
    """Raised from the callback to stop a library that iterates on NaN."""


@dataclass(frozen=True)
class ColumnResult:
    """The outcome of :func:`solve_columns`."""

    X: Any
    iterations: int
    converged: bool
    message: str
    history: tuple[float, ...] = ()  # see tsgu_core.SolveInfo.history


def solve_columns(
    xp: Any,
    solver: Callable[..., tuple[Any, int]],
    operator: Any,
    B: Any,
    *,
    x0: Any | None,
    rtol: float,
    atol: float,
    maxiter: int,
    keywords: Mapping[str, Any],
    has_atol: bool = True,
    restart: int | None = None,
    inner_m: int | None = None,
    shadow_from_start: bool = False,
) -> ColumnResult:
    """Solve ``operator @ X = B`` column by column with a SciPy-style ``solver``.

    Parameters
    ----------
    xp : module
        ``numpy`` or ``cupy``.
    solver : callable
        ``solver(A, b, x0=..., rtol=..., atol=..., maxiter=..., callback=..., **keywords) -> (x, info)``.
    operator : matrix or LinearOperator
        ``A`` or ``Aᵀ``.
    B : array
        ``(n, k)``.
    maxiter : int
        Iterations per column, restarts included.
    has_atol : bool
        ``False`` for solvers without ``atol`` (SciPy's ``minres``): the
        column's threshold is then expressed through ``rtol`` alone.
    restart : int, optional
        For GMRES: the Krylov dimension. An inner step is an iteration
        (counted with ``callback_type="pr_norm"``); the library gets its
        ``maxiter`` in restart cycles, and a last cycle no longer than the
        iterations left.
    inner_m : int, optional
        For LGMRES: inner steps per outer iteration, counted likewise.
    shadow_from_start : bool
        For the BiCG family (BiCGSTAB, CGS, TFQMR), whose shadow residual is
        the initial residual: without ``x0``, start from the tiny nudge
        described below instead of zero, so that a right-hand side with few
        non-zeros (a one-hot gradient) does not break the method down.

    Notes
    -----
    A Krylov method whose shadow residual is orthogonal to the residual
    breaks down (BiCGSTAB, CGS, TFQMR on a right-hand side with one non-zero,
    say); the library then stops or returns NaN. The column is restarted from
    its last finite iterate nudged by a tiny, seeded random vector
    (``1e-6 ‖b‖ / ‖A‖_F``), which gives the restart a different shadow
    residual. The core's residual check judges the result as always.
    """
    k = B.shape[1]
    n = B.shape[0]
    X = xp.empty_like(B)
    total, converged, messages = 0, True, []
    histories: list[list[float]] = []
    sigma, operator, keywords = _scaled_problem(B, operator, keywords)
    a_norm = float(xp.linalg.norm(operator.data)) if hasattr(operator, "data") else 1.0

    def nudged(x: Any, b_norm: float, seed: int) -> Any:
        return x + xp.asarray(nudge(n, seed, b_norm, a_norm)).astype(B.dtype)

    for j in range(k):
        s = power_of_two(float(abs(B[:, j]).max())) if n else 1.0
        b = B[:, j] / B.dtype.type(s)  # the scaled column: its norm neither underflows nor overflows
        b_norm = float(xp.linalg.norm(b))
        atol_j = atol / s
        target = max(rtol * b_norm, atol_j)
        if b_norm == 0.0:
            X[:, j] = 0
            continue
        x = x0[:, j] * B.dtype.type(sigma / s) if x0 is not None else xp.zeros_like(b)
        if x0 is None and shadow_from_start:
            x = nudged(x, b_norm, 1000 * j)
        residual = float(xp.linalg.norm(b - operator @ x))
        rules, info = Restarts(maxiter, max_restarts=_MAX_RESTARTS, reference=[b_norm]), 0
        histories.append(rules.history)
        while (verdict := rules.review([residual], [residual <= target])) != "done":
            if verdict == "stop":
                messages.append(f"column {j}: {rules.message} at residual {residual:.3g} (library info={info})")
                break
            if verdict == "restart":  # breakdown or stagnation: restart from x with another shadow residual
                x = nudged(x, b_norm, 1000 * j + rules.restarts)
                residual = float(xp.linalg.norm(b - operator @ x))
                continue
            left = rules.left
            count = [0]

            def callback(progress: Any, count: list[int] = count) -> None:
                count[0] += 1
                if not bool(xp.isfinite(progress).all()):  # the iterate (or GMRES's residual norm) went NaN
                    raise _Breakdown

            arguments: dict[str, Any] = dict(keywords, x0=x, callback=callback)
            step = 1
            if restart is not None:
                cycle = min(restart, left)
                arguments.update(restart=cycle, maxiter=-(-left // cycle), callback_type="pr_norm")
            elif inner_m is not None:
                step = min(inner_m, left)
                arguments.update(inner_m=step, maxiter=-(-left // step))
            else:  # attempts of at most 2n iterations: an erratic method (CGS) that stalls is restarted
                arguments["maxiter"] = min(left, max(2 * n, 20))
            if has_atol:
                arguments.update(rtol=rtol, atol=atol_j)
            else:
                arguments.update(rtol=max(rtol, atol_j / b_norm))
            try:
                candidate, info = solver(operator, b, **arguments)
            except (_Breakdown, ArithmeticError, ValueError):  # NaN iterates, or the library's own LinAlgError
                candidate, info = xp.full_like(b, xp.nan), -1
            rules.charge(max(count[0], 1) * step)
            finite = bool(xp.isfinite(candidate).all())
            candidate_residual = float(xp.linalg.norm(b - operator @ candidate)) if finite else float("inf")
            if candidate_residual < residual:  # keep the better iterate; no progress makes the next review restart
                x, residual = candidate, candidate_residual
        total = max(total, rules.used)
        converged = converged and residual <= target
        X[:, j] = x * B.dtype.type(s / sigma)
    return ColumnResult(X, total, converged, "; ".join(messages), combine_histories(histories))
