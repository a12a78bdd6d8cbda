"""The tiny random restart shared by the Krylov backends (SciPy/CuPy, JAX, PETSc): one definition.

The BiCG family (BiCGSTAB, CGS, TFQMR) takes its shadow residual from the
initial residual. For a right-hand side with few non-zeros — a one-hot
gradient in a backward pass — it can be orthogonal to the Krylov vectors, and
the method breaks down (SciPy stops, JAX returns NaN, PETSc diverges). Starting
(or restarting) from an iterate moved by a tiny, seeded random vector makes
the shadow residual generic. The vector's norm is :data:`NUDGE` ``·‖b‖/‖A‖_F``,
so the residual it adds is at most ``NUDGE·‖b‖``: far below any tolerance a
restart has to reach, and the core's true-residual check judges the result as
always. Seeds are reproducible (same problem, same numbers).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["NUDGE", "nudge"]

NUDGE = 1e-6
"""The nudge's norm relative to ``‖b‖/‖A‖_F``."""


def nudge(size: int, seed: int, b_norm: float, a_norm: float) -> Any:
    """A NumPy float64 vector of ``size`` seeded normals scaled to norm ``NUDGE·b_norm/a_norm``.

    Each library converts it to its own array (``cupy.asarray``,
    ``jnp.asarray``, a PETSc ``Vec``'s ``array``) in its dtype. A distributed
    caller passes its local size and a per-rank seed; the scaling is then
    per process, which only changes a tiny vector's size by ``√p``.

    >>> v = nudge(4, seed=1, b_norm=2.0, a_norm=4.0)
    >>> round(float(np.linalg.norm(v)), 12) == 0.5e-6
    True
    """
    vector = np.random.default_rng(seed).standard_normal(size)
    length = float(np.linalg.norm(vector))
    if length == 0.0 or a_norm <= 0.0:
        return np.zeros(size)
    return vector * (NUDGE * b_norm / (a_norm * length))
