"""Scale-safe vector norms: the 2-norm without underflow or overflow of the squares.

``‖x‖₂ = sqrt(Σ xᵢ²)`` computed naively squares every entry first: in float64
an ``x`` of size ``1e-170`` gives ``0`` and one of size ``1e+160`` gives
``inf`` (float32: ``1e-20`` and ``1e+20``), although the norm itself is
representable. Every norm a convergence or stopping test takes goes through
:func:`scaled_norm` instead, which divides by the largest magnitude first,

    ‖x‖₂ = s · ‖x / s‖₂,   s = max |xᵢ|,

so the squares lie in ``[0, 1]`` and the sum in ``[1, n]``. NaN propagates,
an infinite entry gives ``inf``, a zero vector gives ``0``. Cost: one extra
pass over ``x`` (the max) and one division.

Example
-------
>>> import torch
>>> x = torch.full((4,), 1e-300, dtype=torch.float64)
>>> float(torch.linalg.vector_norm(x)), float(scaled_norm(x, dim=0))
(0.0, 2e-300)
"""

from __future__ import annotations

import torch

__all__ = ["scaled_norm"]


def scaled_norm(X: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """The 2-norm of ``X`` along ``dim``, free of underflow and overflow.

    Parameters
    ----------
    X : Tensor
        Any real floating tensor.
    dim : int
        The dimension reduced (default ``-2``: the columns of ``(..., n, k)``).

    Returns
    -------
    Tensor
        ``X``'s shape without ``dim``; ``s·‖X/s‖`` with ``s`` the largest
        magnitude along ``dim``.
    """
    if X.shape[dim] == 0:
        empty: torch.Tensor = torch.linalg.vector_norm(X, dim=dim)
        return empty
    s = X.abs().amax(dim=dim, keepdim=True)
    finite_nonzero = torch.isfinite(s) & (s > 0)
    safe = torch.where(finite_nonzero, s, torch.ones_like(s))
    norm = safe.squeeze(dim) * torch.linalg.vector_norm(X / safe, dim=dim)
    s = s.squeeze(dim)
    # s = 0: the zero vector; s = inf or NaN: the norm is s itself (inf, or NaN for a NaN entry)
    return torch.where(torch.isfinite(s) & (s > 0), norm, torch.where(s == 0, torch.zeros_like(s), s))
