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
        Every column met its threshold (direct: the solution is finite).
    wall_time : float
        Seconds spent in the backend (``prepare`` and ``solve``).
    message : str
        The backend's own remark, if any.
    batch : int or None
        The number of batch members for a batched solve.
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
    backward: SolveInfo | None = None

    @property
    def max_residual(self) -> float:
        """The largest relative residual over the columns (0.0 when there are none)."""
        return max(self.residuals, default=0.0)
