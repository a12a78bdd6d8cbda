"""What a solve reports: :class:`SolveInfo`."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SolveInfo"]


@dataclass(kw_only=True)
class SolveInfo:
    """The record of one solve (``solve(..., return_info=True)``), built with keywords only.

    Attributes
    ----------
    backend, method : str
        Who solved.
    kind : {"direct", "iterative"}
        The method's kind.
    transpose : bool
        ``True`` for the transpose solve of a backward pass.
    iterations : int or None
        Iterations the backend used (largest over columns); ``None`` for
        direct methods.
    residuals : tuple of float
        True relative residual ``‖b_j − A x_j‖ / ‖b_j‖`` of every column ``j``
        (absolute where ``b_j = 0``), computed by the core, not the backend.
        For a batch, member by member (``b·k`` values).
    thresholds : tuple of float or None
        The relative residual each column had to reach,
        ``max(rtol, atol / ‖b_j‖)``; ``None`` for direct methods.
    converged : bool
        Every column met its threshold (direct: the solution is finite and
        passed the backward-error test of :func:`tsgu_core.engine.convergence.direct_verdict`).
    wall_time : float
        Seconds spent in the backend (``prepare`` and ``solve``).
    message : str
        The backend's own remark, if any.
    batch : int or None
        The number of batch members for a batched solve.
    history : tuple of float or None
        The residual history of an iterative solve: the true relative
        residual (largest over the columns) the backend measured before its
        first attempt and after each attempt — a GMRES cycle or Krylov pass
        (torch), a library call (SciPy, CuPy, PETSc), a refinement pass (JAX,
        least squares). ``None`` for direct methods and backends that report none.
    backward : SolveInfo or None
        Filled in when the backward pass runs its transpose solve.
    """

    backend: str
    method: str
    kind: str
    transpose: bool
    iterations: int | None
    residuals: tuple[float, ...]
    thresholds: tuple[float, ...] | None
    converged: bool
    wall_time: float
    message: str = ""
    batch: int | None = None
    history: tuple[float, ...] | None = None
    backward: SolveInfo | None = None

    @property
    def max_residual(self) -> float:
        """The largest relative residual over the columns (0.0 when there are none)."""
        return max(self.residuals, default=0.0)

    def __repr__(self) -> str:
        """One short line: who solved, the verdict, the worst residual, iterations and time."""
        parts = [
            f"backend={self.backend!r}",
            f"method={self.method!r}",
            f"converged={self.converged}",
            f"max_residual={self.max_residual:.3g}",
            f"columns={len(self.residuals)}",
        ]
        if self.iterations is not None:
            parts.append(f"iterations={self.iterations}")
        if self.batch is not None:
            parts.append(f"batch={self.batch}")
        if self.transpose:
            parts.append("transpose=True")
        parts.append(f"wall_time={self.wall_time:.3g}s")
        if self.backward is not None:
            parts.append(f"backward={self.backward!r}")
        return f"SolveInfo({', '.join(parts)})"

    def __str__(self) -> str:
        """A readable multi-line report (what ``print(info)`` shows)."""
        which = "transpose solve (backward pass)" if self.transpose else "solve"
        lines = [
            f"{which} by {self.backend} / {self.method} ({self.kind}): {'converged' if self.converged else 'FAILED'}",
            f"  relative residual: max {self.max_residual:.3g} over {len(self.residuals)} column(s)"
            + (f", threshold {max(self.thresholds, default=0.0):.3g}" if self.thresholds else ""),
        ]
        if self.iterations is not None:
            lines.append(f"  iterations: {self.iterations}")
        if self.history:
            shown = " → ".join(f"{value:.2g}" for value in self.history[:8])
            lines.append(f"  residual history: {shown}{' → …' if len(self.history) > 8 else ''}")
        lines.append(f"  wall time: {self.wall_time:.3g} s" + (f"; batch of {self.batch}" if self.batch else ""))
        if self.message:
            lines.append(f"  backend says: {self.message}")
        if self.backward is not None:
            lines.append("  backward: " + str(self.backward).replace("\n", "\n  "))
        return "\n".join(lines)
