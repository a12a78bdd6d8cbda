"""The plugin kit: the numerics every solver backend needs, written once, public and documented.

A backend — built-in or third-party — gets ``A`` as a torch sparse tensor and
must hand back ``X`` with a true residual the core will check. Between the
two, the same pieces recur in every backend, and each is easy to get
subtly wrong (a norm that underflows at ``1e-170``, a scale that rounds, a
restart rule that loops, a transpose that loses the value order). The kit
holds them; the built-in backends are its first users, and a plugin author
imports them from here (``tsgu_core.plugins.kit``), the one public path.

Scaling (:mod:`~tsgu_core.plugins.kit.scaling`, :mod:`~tsgu_core.plugins.norms`)
    :func:`power_of_two` and :func:`largest_power_of_two` — exact scaling by
    ``σ = 2^⌊log₂ x⌋``, one rounding rule for all; :func:`scaled_norm` —
    the 2-norm without underflow or overflow of the squares.
Iteration control (:mod:`~tsgu_core.plugins.kit.restarts`, :mod:`~tsgu_core.plugins.kit.nudge`)
    :class:`Restarts` — go on, restart, or stop, judged on the true residual;
    :func:`nudge` — the tiny seeded vector that gives a broken-down BiCG-family
    method a new shadow residual.
Least squares (:mod:`~tsgu_core.plugins.kit.augmented`)
    :func:`solve_augmented` — the augmented system ``[[I, A], [Aᵀ, 0]]`` that
    :func:`tsgu_core.lstsq` asks of a backend, from any least-squares routine
    (:func:`lsqr` in torch by default).
CSR index work (:mod:`~tsgu_core.plugins.kit.csr`)
    :func:`row_pointers`, :func:`row_indices`, :func:`transpose_csr` — for
    torch tensors on any device and NumPy arrays.
Reports (:mod:`~tsgu_core.plugins.kit.reports`)
    :func:`merge_reports` and :func:`combine_histories` — one report for a
    solve made of parts (columns, members, chunks).
A direct fallback (:mod:`~tsgu_core.plugins.kit.superlu`)
    :func:`superlu` — SciPy's SuperLU with a singular matrix as a typed error.

Options need no helper: the core fills every option a method declares
(:func:`tsgu_core.plugins.options.resolve_options`), default included, so a
backend reads ``options["restart"]`` and never repeats a default.

Examples
--------
A scaled, restarted Jacobi iteration in a few lines — the skeleton of a
backend's ``solve``:

>>> import torch
>>> from tsgu_core.plugins.kit import Restarts, largest_power_of_two, scaled_norm
>>> A = torch.tensor([[4.0, 1.0], [2.0, 5.0]], dtype=torch.float64) * 1e-300
>>> b = torch.tensor([[1.0], [2.0]], dtype=torch.float64) * 1e-300
>>> sigma, s = largest_power_of_two(A), largest_power_of_two(b)
>>> As, bs = A / sigma, b / s  # exact: only exponents change
>>> x = torch.zeros_like(bs)
>>> rules = Restarts(maxiter=200, reference=scaled_norm(bs, dim=0))
>>> while rules.review(norm := scaled_norm(bs - As @ x, dim=0), norm <= 1e-12 * scaled_norm(bs, dim=0)) == "attempt":
...     x = x + (bs - As @ x) / torch.diag(As).unsqueeze(1)
...     rules.charge(1)
>>> X = x * (s / sigma)
>>> torch.allclose(A @ X, b, rtol=1e-10, atol=0.0), rules.used < 50
(True, True)
"""

from __future__ import annotations

from tsgu_core.plugins.kit.augmented import AugmentedResult, lsqr, solve_augmented
from tsgu_core.plugins.kit.csr import row_indices, row_pointers, transpose_csr
from tsgu_core.plugins.kit.nudge import NUDGE, nudge
from tsgu_core.plugins.kit.reports import combine_histories, merge_reports
from tsgu_core.plugins.kit.restarts import Restarts, Verdict
from tsgu_core.plugins.kit.scaling import largest_power_of_two, power_of_two
from tsgu_core.plugins.kit.superlu import superlu
from tsgu_core.plugins.norms import scaled_norm

__all__ = [
    "NUDGE",
    "AugmentedResult",
    "Restarts",
    "Verdict",
    "combine_histories",
    "largest_power_of_two",
    "lsqr",
    "merge_reports",
    "nudge",
    "power_of_two",
    "row_indices",
    "row_pointers",
    "scaled_norm",
    "solve_augmented",
    "superlu",
    "transpose_csr",
]
