"""The convergence and failure policy, applied to every solve in one place.

After every solve — forward and the backward's transpose solve alike — the
core computes the true residual ``R = B − op(A) X`` itself (it does not trust
a backend's estimate) and judges each column ``j``:

* iterative methods: ``‖R_j‖ ≤ max(rtol·‖B_j‖, atol)``, else the solve failed;
* direct methods: a non-finite ``X`` means ``A`` is singular.

A failed iterative solve raises :class:`~tsgu_core.errors.ConvergenceError`
(``on_failure="raise"``, the default), warns with
:class:`~tsgu_core.errors.ConvergenceWarning` (``"warn"``) or is returned
as is (``"ignore"``). A singular matrix always raises
:class:`~tsgu_core.errors.SingularMatrixError`.
"""

from __future__ import annotations

import os
import sys
import warnings

import torch

from tsgu_core.errors import ConvergenceError, ConvergenceWarning, SingularMatrixError
from tsgu_core.info import SolveInfo
from tsgu_core.pattern import SparsePattern
from tsgu_core.protocol import BackendReport, MethodSpec, SolveOptions

__all__ = ["assess"]


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


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_INTERNAL = tuple(
    path + os.sep
    for path in (
        os.path.dirname(torch.__file__),
        os.path.join(_ROOT, "tsgu_core"),
        os.path.join(_ROOT, "tsgu_backends"),
    )
)


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside tsgu and torch: the user's line."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1  # type: ignore[assignment]
    return level


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
    with torch.no_grad():
        residual = B - pattern.matmul(values, X, transpose=transpose)
        r_norm = pattern.column_norms(residual).reshape(-1)  # batch members' columns in order
        b_norm = pattern.column_norms(B).reshape(-1)
        relative = torch.where(b_norm > 0, r_norm / torch.where(b_norm > 0, b_norm, 1), r_norm)
        finite = bool(torch.isfinite(X).all()) and bool(torch.isfinite(pattern.column_norms(X)).all())
        residuals = tuple(float(r) for r in relative.cpu())
    which = "transpose solve (backward pass)" if transpose else "solve"
    batch = B.shape[0] if B.dim() == 3 else None
    columns = B.shape[-1]

    def label(j: int) -> str:
        return f"member {j // columns} column {j % columns}" if batch is not None else f"column {j}"

    if spec.kind == "direct":
        if not finite:
            raise SingularMatrixError(
                f"backend {backend!r}, method {spec.name!r}: the {which} produced non-finite values, "
                "so A is singular (or numerically so); check A for empty rows/columns or dependent rows"
            )
        return SolveInfo(
            backend=backend,
            method=spec.name,
            kind="direct",
            transpose=transpose,
            iterations=None,
            residuals=residuals,
            thresholds=None,
            converged=True,
            wall_time=wall_time,
            message=report.message,
            batch=batch,
        )

    with torch.no_grad():
        limit = torch.clamp(options.rtol * b_norm, min=options.atol)
        ok = (r_norm <= limit) & torch.isfinite(r_norm)
        failed = [int(j) for j in torch.nonzero(~ok).flatten().cpu()]
        thresholds = tuple(
            float(t) for t in torch.where(b_norm > 0, limit / torch.where(b_norm > 0, b_norm, 1), limit).cpu()
        )
    info = SolveInfo(
        backend=backend,
        method=spec.name,
        kind="iterative",
        transpose=transpose,
        iterations=report.iterations,
        residuals=residuals,
        thresholds=thresholds,
        converged=not failed and finite,
        wall_time=wall_time,
        message=report.message,
        batch=batch,
    )
    if info.converged or on_failure == "ignore":
        return info
    shown = ", ".join(f"{label(j)}: {residuals[j]:.3g} > {thresholds[j]:.3g}" for j in failed[:5])
    more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
    message = (
        f"backend {backend!r}, method {spec.name!r}: the {which} did not converge"
        f"{f' after {report.iterations} iteration(s)' if report.iterations is not None else ''}; "
        f"true relative residual {shown}{more}"
        f"{'; backend says: ' + report.message if report.message else ''}. "
        f"Remedy: {_remedy(spec, options, X.dtype, report.iterations, on_failure)}"
    )
    if on_failure == "warn":
        warnings.warn(message, ConvergenceWarning, stacklevel=_caller_stacklevel())
        return info
    raise ConvergenceError(
        message,
        backend=backend,
        method=spec.name,
        transpose=transpose,
        iterations=report.iterations,
        residuals=residuals,
        thresholds=thresholds,
        failed_columns=failed,
    )
