"""The convergence and failure policy, applied to every solve in one place.

Two steps: :func:`measure` computes what the answer is (true residuals and
norms, nothing decided), and the judges — :func:`direct_verdict` and the
iterative test — decide what it means, then the policy (:func:`assess`)
returns the :class:`SolveInfo`, warns or raises.

After every solve — forward and the backward's transpose solve alike — the
core computes the true residual ``R = B − op(A) X`` itself (it does not trust
a backend's estimate) and judges each column ``j``:

* iterative methods: ``‖R_j‖ ≤ max(rtol·‖B_j‖, atol)``, else the solve failed;
* direct methods: a non-finite ``X`` means ``A`` is exactly singular (always
  raises); otherwise the column must pass two tests (see :func:`direct_verdict`):
  its normwise backward error
  ``η_j = ‖R_j‖ / (‖A‖_F·‖X_j‖ + ‖B_j‖) ≤ C_BACKWARD·ε`` and its relative
  residual ``‖R_j‖/‖B_j‖ ≤ √ε``. A column that passes while the backend
  reports that its factorization saw ``A`` singular (a perturbed or tiny
  pivot: :attr:`BackendReport.singular <tsgu_core.BackendReport>`) warns with
  :class:`~tsgu_core.errors.SingularMatrixWarning`: ``X`` then solves the
  system but is not unique.

Every norm is scale-safe (:func:`tsgu_core.plugins.norms.scaled_norm`): a problem
whose ``A`` and ``B`` are scaled together by ``1e±300`` is judged exactly as
the unscaled one.

A failed iterative solve raises :class:`~tsgu_core.errors.ConvergenceError`
(``on_failure="raise"``, the default), warns with
:class:`~tsgu_core.errors.ConvergenceWarning` (``"warn"``) or is returned
as is (``"ignore"``). A direct solve that fails its tests raises
:class:`~tsgu_core.errors.SingularMatrixError` under the same ``on_failure``
choice (it is an inaccurate answer, which a caller may want anyway); a
non-finite direct solution (exact singularity) raises it whatever
``on_failure`` says.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

from tsgu_core.base.callers import user_stacklevel
from tsgu_core.errors import ConvergenceError, ConvergenceWarning, SingularMatrixError, SingularMatrixWarning
from tsgu_core.plugins.info import SolveInfo
from tsgu_core.plugins.protocol import BackendReport, MethodSpec, SolveOptions
from tsgu_core.sparse.pattern import SparsePattern

__all__ = ["C_BACKWARD", "Measured", "assess", "direct_verdict", "measure"]

C_BACKWARD = 1000.0
"""A direct solve's normwise backward error may be at most ``C_BACKWARD·ε`` (ε of its dtype).

Backward-stable LU gives ``η ≲ γ·n·ε`` in theory and, in practice, a small
multiple of ε. Measured by ``benchmarks/direct_backward_error.py`` (SciPy's
splu/spsolve and JAX's spsolve, forward and transpose; 2-D Poisson and
convection-diffusion up to n = 4·10⁴, random nonsymmetric n = 50…2000;
float32 and float64): the largest ``η/ε`` on well-conditioned problems is
0.15, and on numerically singular ones it is 0.43 — η alone does not catch
them, the relative-residual test of :func:`direct_verdict` does (there
``‖r‖/‖b‖`` is 10⁸·√ε against at most 0.015·√ε on the well-conditioned ones).
``1000`` leaves four orders of magnitude of headroom for larger ``n`` and
pivot growth, yet flags any answer that is not the exact solution of a system
within ``1000·ε`` of the given one (float64: ``2.2e-13``).
"""


def _remedy(
    spec: MethodSpec, options: SolveOptions, dtype: torch.dtype, iterations: int | None, on_failure: str
) -> str:
    hints = []
    if options.rtol is not None and options.rtol < 100 * torch.finfo(dtype).eps:
        hints.append(f"rtol={options.rtol:g} is below what {dtype} can reach; use float64 or a larger rtol")
    if spec.assumes != "general":
        hints.append(
            f"method {spec.name!r} assumes a {spec.assumes} A; if A is not, use a general method such as 'gmres'"
        )
    if iterations is not None and options.maxiter is not None and iterations >= options.maxiter:
        hints.append(f"raise maxiter (it was {options.maxiter})")
    hints.append("use a preconditioner, loosen rtol/atol, or a direct method")
    if on_failure == "raise":
        hints.append("pass on_failure='warn' or 'ignore' to get the unconverged result anyway")
    return "; ".join(hints)


def direct_verdict(
    r_norm: torch.Tensor, b_norm: torch.Tensor, x_norm: torch.Tensor, a_norm: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Judge direct-solve columns: ``(backward_error, ok)``, both shaped like ``r_norm``.

    A column passes when

    * its normwise backward error ``η = ‖r‖ / (‖A‖_F·‖x‖ + ‖b‖) ≤ C_BACKWARD·ε``:
      ``x`` is the exact solution of a system within ``C_BACKWARD·ε`` of the
      given one (Rigal & Gaches; ``‖A‖_F ≥ ‖A‖₂``, so this η is at most the
      2-norm one: the test errs on the lenient side by at most ``√n``), and
    * its relative residual ``‖r‖/‖b‖ ≤ √ε`` (``‖r‖ ≤ √ε`` where ``b = 0``).

    The second test is what catches a numerically singular ``A``: partial
    pivoting is backward stable even then, so η stays near ε while ``x`` grows
    to ``~1/ε`` and its residual to ``O(‖b‖)`` (measured on the matrix with
    rows ``r₁``, ``r₂``, ``r₁ + r₂``: η = 0.02ε … 0.3ε, relative residual
    0.07 … 1.0). Since ``‖r‖/‖b‖ ≈ η·(‖A‖‖x‖/‖b‖)`` and ``‖A‖₂‖x‖/‖b‖`` is a
    lower bound of ``cond₂(A)``, it fails only when ``A`` is proven to have a
    condition number near ``1/√ε`` or above *and* the answer does not solve
    the system to half the working precision.
    """
    eps = torch.finfo(dtype).eps
    denominator = a_norm * x_norm + b_norm
    eta = torch.where(denominator > 0, r_norm / torch.where(denominator > 0, denominator, 1), r_norm)
    relative = torch.where(b_norm > 0, r_norm / torch.where(b_norm > 0, b_norm, 1), r_norm)
    ok = (eta <= C_BACKWARD * eps) & (relative <= eps**0.5)
    return eta, ok


@dataclass(frozen=True)
class Measured:
    """What one solve's answer is, measured by the core: per column ``j`` (flattened over a batch).

    Attributes
    ----------
    r_norm, b_norm, x_norm : Tensor
        ``‖R_j‖``, ``‖B_j‖``, ``‖X_j‖`` with ``R = B − op(A) X``, shape ``(..., k)``, scale-safe.
    relative : Tensor
        ``‖R_j‖ / ‖B_j‖`` (``‖R_j‖`` where ``B_j = 0``), flattened.
    residuals : tuple of float
        ``relative`` as numbers, for :class:`SolveInfo`.
    finite : bool
        Whether ``X`` and its norms are finite.
    batch : int or None
        The batch size, or ``None``.
    columns : int
        ``k``.
    """

    r_norm: torch.Tensor
    b_norm: torch.Tensor
    x_norm: torch.Tensor
    relative: torch.Tensor
    residuals: tuple[float, ...]
    finite: bool
    batch: int | None
    columns: int

    def label(self, j: int) -> str:
        """Column ``j`` (flattened) in words."""
        return f"member {j // self.columns} column {j % self.columns}" if self.batch is not None else f"column {j}"


def measure(
    pattern: SparsePattern, values: torch.Tensor, B: torch.Tensor, X: torch.Tensor, transpose: bool
) -> Measured:
    """The true residual ``R = B − op(A) X`` and the norms of ``R``, ``B`` and ``X`` per column (the pattern's)."""
    with torch.no_grad():
        residual = B - pattern.matmul(values, X, transpose=transpose)
        r_norm = pattern.column_norms(residual)  # (..., k)
        b_norm = pattern.column_norms(B)
        x_norm = pattern.column_norms(X)
        relative = torch.where(b_norm > 0, r_norm / torch.where(b_norm > 0, b_norm, 1), r_norm).reshape(-1)
        finite = bool(torch.isfinite(X).all()) and bool(torch.isfinite(x_norm).all())
        residuals = tuple(float(r) for r in relative.cpu())
    return Measured(
        r_norm, b_norm, x_norm, relative, residuals, finite, B.shape[0] if B.dim() == 3 else None, B.shape[-1]
    )


def _failed_columns(ok: torch.Tensor) -> list[int]:
    return [int(j) for j in torch.nonzero(~ok.reshape(-1)).flatten().cpu()]


def _shown(parts: list[str]) -> str:
    """The first five failed columns, and how many more."""
    more = f" (and {len(parts) - 5} more)" if len(parts) > 5 else ""
    return ", ".join(parts[:5]) + more


def _judge_direct(
    measured: Measured,
    a_norm: torch.Tensor,
    dtype: torch.dtype,
    which: str,
    backend: str,
    spec: MethodSpec,
    singular: str | None = None,
) -> tuple[list[int], str]:
    """The columns a direct solve got wrong (:func:`direct_verdict`), and the message that says so."""
    if not measured.finite:
        raise SingularMatrixError(
            f"backend {backend!r}, method {spec.name!r}: the {which} produced non-finite values, "
            "so A is singular (or numerically so); check A for empty rows/columns or dependent rows"
        )
    with torch.no_grad():
        eta, ok = direct_verdict(
            measured.r_norm, measured.b_norm, measured.x_norm, a_norm.unsqueeze(-1).expand_as(measured.r_norm), dtype
        )
        eta, failed = eta.reshape(-1), _failed_columns(ok)
    eps = torch.finfo(dtype).eps
    shown = _shown(
        [
            f"{measured.label(j)}: backward error {float(eta[j]) / eps:.3g}ε, "
            f"relative residual {measured.residuals[j]:.3g}"
            for j in failed
        ]
    )
    message = (
        f"backend {backend!r}, method {spec.name!r}: the {which} is not accurate: {shown} "
        f"(limits {C_BACKWARD:g}ε and {eps**0.5:.3g}){f'; the factorization saw {singular}' if singular else ''}. "
        "A is singular to working precision or too "
        "ill-conditioned for this method and dtype. Remedy: check A for dependent rows/columns; use float64; "
        "rescale rows/columns of A; pass on_failure='warn' or 'ignore' to get the inaccurate result anyway"
    )
    return failed, message


def _judge_iterative(measured: Measured, options: SolveOptions) -> tuple[list[int], tuple[float, ...]]:
    """The columns an iterative solve left above ``max(rtol·‖b‖, atol)``, and each column's threshold."""
    with torch.no_grad():
        # ‖r‖ ≤ max(rtol·‖b‖, atol), compared as ratios: rtol·‖b‖ may underflow where ‖r‖/‖b‖ does not
        r_flat, b_flat = measured.r_norm.reshape(-1), measured.b_norm.reshape(-1)
        ok = ((measured.relative <= options.rtol) & (b_flat > 0)) | (r_flat <= options.atol)
        failed = _failed_columns(ok & torch.isfinite(r_flat))
        floor = torch.clamp(options.atol / torch.where(b_flat > 0, b_flat, 1), min=options.rtol)
        thresholds = tuple(float(t) for t in torch.where(b_flat > 0, floor, options.atol).cpu())
    return failed, thresholds


def _apply_policy(info: SolveInfo, on_failure: str, message: str, error: Exception) -> SolveInfo:
    """``info`` when the solve passed or failures are ignored; else warn (``"warn"``) or raise ``error``."""
    if info.converged or on_failure == "ignore":
        return info
    if on_failure == "warn":
        warnings.warn(message, ConvergenceWarning, stacklevel=user_stacklevel())
        return info
    raise error


def assess(
    *,
    pattern: SparsePattern,
    values: torch.Tensor,
    B: torch.Tensor,
    X: torch.Tensor,
    transpose: bool,
    backend: str,
    spec: MethodSpec,
    options: SolveOptions,
    report: BackendReport,
    on_failure: str,
    wall_time: float,
) -> SolveInfo:
    """Check ``X`` against ``B`` by its true residual and apply the policy.

    Returns the :class:`SolveInfo` of the solve, or raises as described in the
    module docstring.
    """
    measured = measure(pattern, values, B, X, transpose)
    which = "transpose solve (backward pass)" if transpose else "solve"
    common: dict[str, Any] = dict(
        backend=backend,
        method=spec.name,
        transpose=transpose,
        residuals=measured.residuals,
        wall_time=wall_time,
        message=report.message,
        batch=measured.batch,
    )
    if spec.kind == "direct":
        with torch.no_grad():
            a_norm = pattern.matrix_norm(values)
        failed, message = _judge_direct(measured, a_norm, X.dtype, which, backend, spec, report.singular)
        info = SolveInfo(kind="direct", iterations=None, thresholds=None, converged=not failed, **common)
        if not failed and report.singular and on_failure != "ignore":
            warnings.warn(
                f"backend {backend!r}, method {spec.name!r}: the {which} passed the accuracy check, but "
                f"{report.singular}: A is singular or nearly so, and X is then one of many solutions (a "
                "pure-Neumann problem fixes X only up to a constant); the backward pass will usually fail. "
                "Remedy: pin the null space (a Dirichlet condition, or fix one unknown)",
                SingularMatrixWarning,
                stacklevel=user_stacklevel(),
            )
        return _apply_policy(info, on_failure, message, SingularMatrixError(message))
    failed, thresholds = _judge_iterative(measured, options)
    info = SolveInfo(
        kind="iterative",
        iterations=report.iterations,
        thresholds=thresholds,
        converged=not failed and measured.finite,
        history=report.history,
        **common,
    )
    shown = _shown([f"{measured.label(j)}: {measured.residuals[j]:.3g} > {thresholds[j]:.3g}" for j in failed])
    message = (
        f"backend {backend!r}, method {spec.name!r}: the {which} did not converge"
        f"{f' after {report.iterations} iteration(s)' if report.iterations is not None else ''}; "
        f"true relative residual {shown}"
        f"{'; backend says: ' + report.message if report.message else ''}. "
        f"Remedy: {_remedy(spec, options, X.dtype, report.iterations, on_failure)}"
    )
    error = ConvergenceError(
        message,
        backend=backend,
        method=spec.name,
        transpose=transpose,
        iterations=report.iterations,
        residuals=measured.residuals,
        thresholds=thresholds,
        failed_columns=failed,
    )
    return _apply_policy(info, on_failure, message, error)
