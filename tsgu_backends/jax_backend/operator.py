r"""``A`` (or ``Aᵀ``) as a JAX matrix–vector product that XLA compiles well on the CPU.

On the CPU the product is stored in a hybrid ELL + COO layout. Row ``i``'s
first ``w`` entries sit in slot ``j < w`` of two dense ``(w, n)`` arrays
(values and column indices; a short row is padded with a zero value and its
own index), and the entries past ``w`` stay in a short COO list:

.. math::

    (A x)_i = \sum_{j < w} V_{j i}\, x_{C_{j i}}
              + \sum_{k:\, r_k = i} v_k\, x_{c_k}.

XLA fuses the ``w`` gathers of the ELL part into one loop over the rows, with
no scatter, while a COO product (``BCOO`` or ``segment_sum``) is a scatter-add
that XLA's CPU backend runs serially. Measured on one CPU thread, 2-D Poisson
n = 1e5 (``w = 5``, no COO part), inside a compiled loop: 0.27 ms per product
against 1.2–1.3 ms for ``BCOO``/``segment_sum`` and 0.36 ms for SciPy's CSR.

The width ``w`` minimises ``n·w + 4·(entries past w)`` (a COO entry costs
about four ELL slots), capped at :data:`MAX_WIDTH` so that the unrolled sum
stays small to compile. A matrix with a few long rows keeps them in the COO
part instead of padding every row to their length.

On a GPU the backend keeps every entry in one ``BCOO`` matrix instead (a
cuSPARSE product).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tsgu_core.plugins.kit import row_pointers

__all__ = ["MAX_WIDTH", "HybridParts", "hybrid_matvec", "hybrid_parts", "hybrid_width"]

MAX_WIDTH = 32
"""The widest ELL part: the unrolled sum has at most this many gathers."""

COO_COST = 4
"""Cost of one COO entry in ELL slots (measured: 2.4 ns against 0.54 ns per entry, one CPU thread)."""

HybridParts = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""``(ell_values (w, n), ell_cols (w, n), coo_values, coo_rows, coo_cols)``, all torch tensors."""


def hybrid_width(row_lengths: torch.Tensor, n: int) -> int:
    """The ELL width ``w`` that minimises ``n·w + COO_COST·Σᵢ max(lenᵢ − w, 0)``, at most :data:`MAX_WIDTH`.

    >>> hybrid_width(torch.tensor([5, 5, 4, 3]), 4)
    5
    >>> hybrid_width(torch.tensor([1] * 99 + [90]), 100)  # one long row stays in the COO part
    1
    """
    if row_lengths.numel() == 0:
        return 0
    longest = min(int(row_lengths.max()), MAX_WIDTH)
    widths = torch.arange(longest + 1, device=row_lengths.device)
    past = torch.clamp(row_lengths.unsqueeze(0) - widths.unsqueeze(1), min=0).sum(1)
    cost = n * widths + COO_COST * past
    return int(torch.argmin(cost))


def hybrid_parts(row: torch.Tensor, col: torch.Tensor, values: torch.Tensor, n: int) -> HybridParts:
    """Split the entries ``(row, col, values)`` of an ``n × n`` matrix into ELL and COO parts.

    The entries must be sorted by row (any order within a row); duplicates
    are summed by the product, as in a COO matrix.

    Returns
    -------
    (ell_values, ell_cols, coo_values, coo_rows, coo_cols)
        ``ell_values``/``ell_cols`` of shape ``(w, n)`` (``ell_cols`` int32),
        and the entries that did not fit (int32 indices).

    Examples
    --------
    >>> row, col = torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 2, 1, 0, 1, 2])
    >>> V, C, v, r, c = hybrid_parts(row, col, torch.arange(1.0, 7.0), 3)
    >>> V.shape, v.numel()
    (torch.Size([3, 3]), 0)
    """
    device = row.device
    row = row.to(torch.int64)
    pointers = row_pointers(row, n)
    lengths, starts = pointers.diff(), pointers[:-1]
    width = hybrid_width(lengths, n)
    slot = torch.arange(row.numel(), device=device) - starts[row]  # position of each entry within its row
    in_ell = slot < width
    ell_values = torch.zeros(width * n, dtype=values.dtype, device=device)
    ell_cols = torch.arange(n, dtype=torch.int32, device=device).repeat(width)  # padding gathers its own row
    flat = slot[in_ell] * n + row[in_ell]
    ell_values[flat] = values[in_ell]
    ell_cols[flat] = col[in_ell].to(torch.int32)
    rest = ~in_ell
    return (
        ell_values.reshape(width, n),
        ell_cols.reshape(width, n),
        values[rest],
        row[rest].to(torch.int32),
        col[rest].to(torch.int32),
    )


def hybrid_matvec(n: int, width: int, has_coo: bool) -> Callable[..., Any]:
    """``matvec(ell_values, ell_cols, coo_values, coo_rows, coo_cols, x) -> A @ x`` for a 1-D ``x``.

    ``width`` and ``has_coo`` are static: one compiled product per pattern shape.
    """

    def matvec(ell_values: Any, ell_cols: Any, coo_values: Any, coo_rows: Any, coo_cols: Any, x: Any) -> Any:
        import jax
        import jax.numpy as jnp

        y = jnp.zeros(n, dtype=x.dtype)
        for j in range(width):  # unrolled: XLA fuses the gathers into one loop
            y = y + ell_values[j] * x[ell_cols[j]]
        if has_coo:
            y = y + jax.ops.segment_sum(coo_values * x[coo_cols], coo_rows, num_segments=n, indices_are_sorted=True)
        return y

    return matvec
