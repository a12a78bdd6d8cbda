"""When a restarted solve goes on, restarts, or stops: one set of rules for every backend's loop.

Every Krylov backend runs its method in attempts — a GMRES cycle, a
library call from the current iterate, a refinement pass — and measures the
true residual of each column between attempts (a library's own estimate
drifts, and some break down). What to do next is the same decision
everywhere, made here by :meth:`Restarts.review`:

* ``"done"``: every column meets its tolerance;
* ``"stop"``: the iterations (``maxiter``) or attempts are spent, or an
  attempt made no column better and no restart is left — ``message`` says
  which, for the backend's report (the core's residual check decides what
  the user sees);
* ``"restart"``: an attempt broke down (non-finite residual) or made no
  progress, and a restart is left: the loop moves its iterate by
  :func:`tsgu_core.plugins.kit.nudge.nudge` (a new shadow residual for the BiCG
  family) and tries again;
* ``"attempt"``: go on from the current iterate, with :attr:`Restarts.left`
  iterations at most.

The loops themselves — how an attempt runs, how an iterate is kept or nudged
— stay with each library (torch tensors, NumPy/CuPy arrays, JAX arrays,
PETSc vectors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["Restarts", "Verdict"]

Verdict = Literal["done", "attempt", "restart", "stop"]


@dataclass
class Restarts:
    """The state of one restarted solve (one column, or all columns together).

    Parameters
    ----------
    maxiter : int
        Iterations for the whole solve, every attempt included.
    max_restarts : int
        Nudged restarts allowed after a breakdown or an attempt without
        progress (0: such an attempt ends the solve).
    max_attempts : int, optional
        Attempts allowed (e.g. one solve and three refinement passes).
    reference : array, optional
        The norm of each column's right-hand side: :attr:`history` then
        records relative residuals.

    Attributes
    ----------
    history : list of float
        The largest (relative) true residual over the columns at every
        review: before the first attempt, then after each attempt or restart.

    Examples
    --------
    >>> rules = Restarts(maxiter=10, max_restarts=1)
    >>> rules.review([1.0], [False])
    'attempt'
    >>> rules.charge(4)
    >>> rules.review([0.5], [False]), rules.left
    ('attempt', 6)
    >>> rules.charge(4)
    >>> rules.review([0.5], [False])  # no progress: a nudged restart
    'restart'
    >>> rules.review([0.5], [False]), rules.left
    ('attempt', 2)
    >>> rules.charge(2)
    >>> rules.review([0.4], [False]), rules.message
    ('stop', 'reached maxiter=10')
    """

    maxiter: int
    max_restarts: int = 0
    max_attempts: int | None = None
    used: int = 0
    attempts: int = 0
    restarts: int = 0
    message: str = ""
    reference: Any = None
    history: list[float] = field(default_factory=list)
    _previous: Any = field(default=None, repr=False)

    @property
    def left(self) -> int:
        """Iterations the next attempt may use."""
        return max(self.maxiter - self.used, 0)

    def charge(self, iterations: int) -> None:
        """Count an attempt and the iterations it used."""
        self.used += int(iterations)
        self.attempts += 1

    def forget(self) -> None:
        """Judge the next attempt afresh (after the loop restarted some columns on its own)."""
        self._previous = None

    def _record(self, norms: Any) -> None:
        relative = norms
        if self.reference is not None:
            reference = np.asarray(self.reference, dtype=np.float64).reshape(-1)
            relative = np.where(reference > 0, norms / np.where(reference > 0, reference, 1.0), norms)
        self.history.append(float(np.max(relative, initial=0.0)))

    def review(self, norms: Any, done: Any) -> Verdict:
        """What to do after measuring the true residual ``norms`` of every column (``done``: met its tolerance)."""
        norms = np.asarray(norms, dtype=np.float64).reshape(-1)
        active = ~np.asarray(done, dtype=bool).reshape(-1)
        self._record(norms)
        if not active.any():
            return "done"
        finite = bool(np.isfinite(norms[active]).all())
        progress = finite and (self._previous is None or bool((norms < self._previous)[active].any()))
        if not progress and self.restarts < self.max_restarts and self.left > 0:
            self.restarts += 1
            self._previous = None
            return "restart"
        if not finite:
            self.message = "the iteration produced non-finite values (breakdown, or a singular A)"
        elif self.used >= self.maxiter:
            self.message = f"reached maxiter={self.maxiter}"
        elif self.max_attempts is not None and self.attempts >= self.max_attempts:
            self.message = f"stopped after {self.attempts} attempts ({self.used} iterations)"
        elif not progress:
            self.message = f"no progress after {self.used} iterations (a restart from the true residual did not help)"
        else:
            self._previous = norms
            return "attempt"
        return "stop"
