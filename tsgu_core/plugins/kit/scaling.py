"""Exact scaling by powers of two: the one rounding rule every backend uses.

An iterative solve of ``A X = B`` whose entries lie near ``1e±300`` (or near
``1e±30`` in float32) overflows or underflows in its inner products long
before the answer does. Every built-in backend therefore solves a scaled
system, ``(A/σ) Y = B/s``, ``X = Y·s/σ``, with ``σ`` and ``s`` powers of two
near the largest magnitude of ``A`` and of each column of ``B``. A power of
two changes only the exponent of a floating-point number, so the scaled
entries are exact (no rounding at all, unless a result leaves the normal
range) and the solve's answer does not depend on the scale.

The rule, chosen once for all backends:

    power_of_two(x) = 2^⌊log₂ x⌋   for finite x > 0,   1 otherwise,

so ``x / power_of_two(x)`` lies in ``[1, 2)``. It is computed from the
exponent field (``frexp``), never from a logarithm, so it is exact for every
normal and subnormal ``x``. Divide by ``σ`` rather than multiply by ``1/σ``:
for a subnormal ``x`` the reciprocal ``1/σ`` overflows.
"""

from __future__ import annotations

import math
from typing import overload

import torch

__all__ = ["largest_power_of_two", "power_of_two"]


@overload
def power_of_two(x: float) -> float: ...


@overload
def power_of_two(x: torch.Tensor) -> torch.Tensor: ...


def power_of_two(x: float | torch.Tensor) -> float | torch.Tensor:
    """The largest power of two not above ``x`` (elementwise); ``1`` where ``x`` is not finite and positive.

    Parameters
    ----------
    x : float or Tensor
        A magnitude, e.g. ``max |aᵢⱼ|``; a tensor is mapped elementwise
        (any real floating dtype, any device).

    Returns
    -------
    float or Tensor
        ``2^⌊log₂ x⌋`` (so ``1 ≤ x/σ < 2``), of ``x``'s type and dtype; ``1``
        for ``x ≤ 0``, ``inf`` or NaN (nothing to scale, or nothing sensible).

    Examples
    --------
    >>> power_of_two(3.0), power_of_two(0.25), power_of_two(0.0)
    (2.0, 0.25, 1.0)
    >>> power_of_two(1e-300) == 2.0**-997, power_of_two(1e300) == 2.0**996
    (True, True)
    >>> import torch
    >>> power_of_two(torch.tensor([5.0, 1e-40, float("nan")]))
    tensor([4.0000e+00, 9.1835e-41, 1.0000e+00])
    """
    if isinstance(x, torch.Tensor):
        good = torch.isfinite(x) & (x > 0)
        one = torch.ones_like(x)
        _, exponent = torch.frexp(torch.where(good, x, one))
        return torch.where(good, torch.ldexp(one, exponent - 1), one)
    x = float(x)
    if not (math.isfinite(x) and x > 0):
        return 1.0
    return math.ldexp(1.0, math.frexp(x)[1] - 1)


def largest_power_of_two(X: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """:func:`power_of_two` of the largest magnitude of ``X`` (over ``dim``, or over everything).

    ``σ = power_of_two(max |X|)``; an empty reduction (no stored entry, no
    row) gives ``1``. Dividing ``X`` by it puts the largest magnitude in
    ``[1, 2)`` exactly.

    Parameters
    ----------
    X : Tensor
        Real or complex (magnitudes are taken).
    dim : int, optional
        Reduce over this dimension only (e.g. ``0`` for each column of a
        ``(n, k)`` right-hand side); ``None`` reduces over all of ``X``.

    Returns
    -------
    Tensor
        Real, ``X``'s real dtype, ``X``'s shape without ``dim`` (a scalar for ``dim=None``).

    Examples
    --------
    >>> import torch
    >>> B = torch.tensor([[3.0, 0.0], [-6.0, 0.0]], dtype=torch.float64)
    >>> largest_power_of_two(B).item(), largest_power_of_two(B, dim=0).tolist()
    (4.0, [4.0, 1.0])
    >>> largest_power_of_two(torch.zeros(0, 3), dim=0).tolist()
    [1.0, 1.0, 1.0]
    """
    magnitudes = X.abs()
    if dim is None:
        magnitudes = magnitudes.reshape(-1)
        dim = 0
    if magnitudes.shape[dim] == 0:
        shape = [size for axis, size in enumerate(magnitudes.shape) if axis != dim % magnitudes.dim()]
        return torch.ones(shape, dtype=magnitudes.dtype, device=magnitudes.device)
    return power_of_two(magnitudes.amax(dim=dim))
