"""A warning, once, when torch's own autograd would make the gradient of a sparse ``A`` dense.

``torch.sparse_csr_tensor(crow, col, values)`` with ``values`` that require
grad records ``SparseCompressedTensorBackward0``, whose backward turns the
incoming gradient into a dense ``n × n`` tensor (``to_dense``) before it keeps
the stored entries (``sparse_mask``): ``O(n²)`` time and memory, whatever tsgu
returns as ``A``'s gradient, which has ``A``'s pattern. Measured with
``solve(..., backend="scipy")`` and one backward on the 5-point diffusion
matrix of :mod:`tsgu_core.examples.diffusion` (one thread, float64;
``benchmarks/csr_constructor_backward.py``):

=========  ======================  =======================
n          through the constructor through ``solve_values``
=========  ======================  =======================
2 500      0.18 s, +85 MiB         0.003 s, +31 MiB
10 000     2.6 s, +895 MiB         0.013 s, +35 MiB
22 500     19 s, +4.4 GiB          0.021 s, +43 MiB
=========  ======================  =======================

tsgu cannot avoid this cost (it is in torch's backward of the constructor,
before tsgu's gradient arrives), so it warns, once per process, from
:data:`DENSE_GRADIENT_WARNING_N` unknowns on: the dense gradient is then
``8·n² ≥ 128 MB`` in float64 and costs ≥ 0.5 s per backward. The fix is
:func:`tsgu_core.solve_values` with the pattern and the values (or a COO
``A`` from ``torch.sparse_coo_tensor``, whose backward stays sparse:
0.035 s at n = 10 000).
"""

from __future__ import annotations

import warnings

import torch

from tsgu_core.base.callers import user_stacklevel
from tsgu_core.errors import PerformanceWarning

__all__ = ["DENSE_GRADIENT_WARNING_N", "warn_dense_constructor_gradient"]

DENSE_GRADIENT_WARNING_N = 4000
"""From this many unknowns, a differentiable CSR constructor feeding a solve is warned about (see the module)."""

_CONSTRUCTORS = ("SparseCompressedTensorBackward0",)
"""torch's autograd nodes of ``torch.sparse_csr_tensor`` / ``sparse_compressed_tensor`` (dense gradient)."""

_warned = False


def warn_dense_constructor_gradient(A: torch.Tensor) -> None:
    """Warn (:class:`~tsgu_core.errors.PerformanceWarning`, once per process) if ``A``'s backward will be dense.

    Only for an ``A`` whose ``grad_fn`` is torch's CSR constructor and with at least
    :data:`DENSE_GRADIENT_WARNING_N` rows; nothing else is looked at, nothing is changed.
    """
    global _warned
    if _warned or A.grad_fn is None or A.shape[-1] < DENSE_GRADIENT_WARNING_N:
        return
    if type(A.grad_fn).__name__ not in _CONSTRUCTORS:
        return
    _warned = True
    n = A.shape[-1]
    members = A.shape[0] if A.dim() == 3 else 1
    dense = members * n * n * A.element_size()
    warnings.warn(
        f"A ({n}×{n}) was built by torch.sparse_csr_tensor from values that require grad: torch's backward of "
        f"that constructor makes A's gradient dense ({dense / 1e9:.2g} GB here) before keeping the stored entries, "
        "O(n²) in time and memory (measured: 19 s and +4.4 GiB at n = 22 500, against 0.02 s through solve_values). "
        "Pass the pattern and the values instead: tsgu_core.solve_values(SparsePattern.from_csr(crow, col, n), "
        "values, B) — or build A with torch.sparse_coo_tensor, whose backward stays sparse. "
        "See the troubleshooting page, 'A slow, memory-hungry backward'. (Shown once per process.)",
        PerformanceWarning,
        stacklevel=user_stacklevel(),
    )
