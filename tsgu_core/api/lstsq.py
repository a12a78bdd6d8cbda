"""Sparse least squares for tall ``A``: :func:`lstsq`.

Least squares is posed as one square, symmetric, sparse system — the
augmented system

.. math::

    K \\begin{bmatrix} r \\\\ x \\end{bmatrix}
    = \\begin{bmatrix} I & A \\\\ A^\\top & 0 \\end{bmatrix}
      \\begin{bmatrix} r \\\\ x \\end{bmatrix}
    = \\begin{bmatrix} b \\\\ 0 \\end{bmatrix},

whose solution is the least-squares ``x`` and its residual ``r = b − A x``
(the second block row, ``Aᵀ r = 0``, is the normal equations). A complex
``A`` has ``Aᴴ`` in place of ``Aᵀ`` (``Aᴴ r = 0``): ``K`` is Hermitian. Because ``K``'s
values are ``A``'s values (twice) and ones, the one gradient rule of
:mod:`tsgu_core.engine.autograd` applied to ``K`` gives the full least-squares
gradient, residual term included — no second rule — and the core's
true-residual check on ``K`` checks the optimality conditions themselves, so
an unconverged or inaccurate least-squares solve cannot pass silently.
"""

from __future__ import annotations

import math
from typing import Any, Literal, overload

import torch

from tsgu_core.plugins.info import SolveInfo
from tsgu_core.sparse.pattern import SparsePattern
from tsgu_core.engine.pipeline import as_columns, execute, matrix_values, plan
from tsgu_core.engine.request import SolveRequest
from tsgu_core.plugins.protocol import SolverBackend
from tsgu_core.base.quiet import quietly
from tsgu_core.base.transforms import outside_graphs
from tsgu_core.sparse.validate import check_rhs, check_x0

__all__ = ["lstsq"]


def _power_of_two_scale(values: torch.Tensor) -> float:
    """A power of two near ``max |values|`` (1 for a zero or empty ``A``): dividing by it is exact."""
    largest = float(values.abs().max()) if values.numel() else 0.0
    return 2.0 ** round(math.log2(largest)) if largest > 0 and math.isfinite(largest) else 1.0


def _with_values(A: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``A``'s pattern (coalesced COO or CSR) with other ``values``."""
    if A.layout == torch.sparse_coo:
        return torch.sparse_coo_tensor(A._indices(), values, A.shape, is_coalesced=True, check_invariants=False)
    return torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), values, A.shape, check_invariants=False)


def _augmented_pattern(A: torch.Tensor) -> SparsePattern:
    """The pattern of ``K = [[I, A], [Aᵀ, 0]]``, its values ordered as ``[ones(m), A.values(), A.values()]``."""
    m, n = A.shape
    stored = SparsePattern.of(A)
    identity = torch.arange(m, device=A.device)
    row = torch.cat([identity, stored.row, m + stored.col])
    col = torch.cat([identity, m + stored.col, stored.row])
    return SparsePattern(row, col, m + n)


@overload
def lstsq(
    A: torch.Tensor,
    B: torch.Tensor,
    *,
    backend: str | SolverBackend | None = ...,
    method: str | None = ...,
    return_info: Literal[False] = ...,
    on_failure: str = ...,
    **options: Any,
) -> torch.Tensor: ...


@overload
def lstsq(
    A: torch.Tensor,
    B: torch.Tensor,
    *,
    backend: str | SolverBackend | None = ...,
    method: str | None = ...,
    return_info: Literal[True],
    on_failure: str = ...,
    **options: Any,
) -> tuple[torch.Tensor, SolveInfo]: ...


@outside_graphs
@quietly
def lstsq(
    A: torch.Tensor,
    B: torch.Tensor,
    *,
    backend: str | SolverBackend | None = None,
    method: str | None = None,
    return_info: bool = False,
    on_failure: str = "raise",
    **options: Any,
) -> torch.Tensor | tuple[torch.Tensor, SolveInfo]:
    r"""Least squares :math:`X = \arg\min_X \|A X - B\|_F` for a sparse tall ``A``, differentiably.

    With :math:`R = B - A X`, :math:`G = \partial L / \partial X` and
    :math:`Y = (A^\top A)^{-1} G` (for complex ``A``: :math:`Y = (A^H A)^{-1} G`,
    and the gradients below in PyTorch's conjugate-Wirtinger convention,
    :math:`\partial L/\partial A = R Y^H - A Y X^H` at the stored entries),

    .. math::

        \frac{\partial L}{\partial B} = A Y, \qquad
        \frac{\partial L}{\partial A_{ij}} = \langle R_i, Y_j \rangle - \langle (A Y)_i, X_j \rangle
        \quad \text{for every stored } (i, j),

    obtained from the augmented system (see the module docstring) by the
    core's one gradient rule. The residual term :math:`R Y^\top` is what a
    square-solve gradient would miss.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR ``(m, n)``, ``m ≥ n``, full column rank.
    B : Tensor
        ``(m,)`` or ``(m, k)``.
    backend, method : str, optional
        A least-squares method (``tsgu info`` lists them; e.g. ``"lsqr"`` of
        the torch backend). Default: the highest-priority available one.
    return_info : bool
        Also return the :class:`SolveInfo`; its residuals are those of the
        augmented system, i.e. of the optimality conditions.
    on_failure : {"raise", "warn", "ignore"}
        As for :func:`tsgu_core.solve`.
    **options
        Iterative methods take ``rtol``, ``atol``, ``maxiter`` (default
        ``10·(m + n)``) and ``x0`` (an initial ``X``), applied to the
        augmented system: ``‖[B; 0] − K [R; X]‖ ≤ max(rtol·‖B‖, atol)``.

    Examples
    --------
    >>> import torch
    >>> from tsgu_core import lstsq
    >>> A = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]], dtype=torch.float64).to_sparse_csr()
    >>> b = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)
    >>> x = lstsq(A, b, backend="torch", rtol=1e-12)
    >>> torch.allclose(x, torch.linalg.lstsq(A.to_dense(), b.unsqueeze(1)).solution.squeeze(1))
    True
    """
    detached, values = matrix_values(A, tall=True)
    m, n = detached.shape
    check_rhs(B, detached)
    request = SolveRequest.of(backend, method, on_failure=on_failure, options=options)
    the_plan = plan(request, detached, n=m + n, operation="lstsq")
    Bk, restore = as_columns(B, 2)
    # K = [[I, A/σ], [Aᵀ/σ, 0]] with σ a power of two near max |a_ij| (exact): the identity block and A's block
    # are then of one scale whatever A's, and [r; σ·x] solves it for the right-hand side [b; 0]
    sigma = _power_of_two_scale(values.detach())
    scaled = _with_values(detached, detached.values() / sigma)
    Z = torch.cat([Bk, Bk.new_zeros(n, Bk.shape[1])])
    z0 = None
    if options.get("x0") is not None:  # an initial X; the augmented system starts from [B − A x0; σ·x0]
        x0 = check_x0(options["x0"], Bk.new_empty(n, Bk.shape[1]))
        z0 = torch.cat([Bk.detach() - detached @ x0, sigma * x0])
    if n == 0:  # nothing to solve for; keep the result connected to A and B
        Z = Z[:0]
    # a complex A: K = [[I, A], [Aᴴ, 0]] (Hermitian), so the lower block holds conj(A)'s values; the one
    # gradient rule on K's values then gives the conjugate-Wirtinger gradient of A through both blocks
    lower = values.conj_physical() if values.is_complex() else values  # (a lazy conj of a CSR values() view fails)
    K_values = torch.cat([values.new_ones(m), values / sigma, lower / sigma])
    pattern = _augmented_pattern(detached)
    solution, info = execute(the_plan, lambda: the_plan.prepare(scaled, pattern=pattern), K_values, Z, x0=z0)
    X = restore(solution[m:] / sigma if n else Bk[:0] * 0 + Bk.sum() * 0 + values.sum() * 0)
    return (X, info) if return_info else X
