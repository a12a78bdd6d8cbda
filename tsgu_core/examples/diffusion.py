r"""A differentiable inverse problem: recover a diffusion coefficient from noisy observations.

On the unit square with zero boundary values, ``u`` solves

.. math::

    -\nabla \cdot (\kappa \nabla u) = f,

discretised on an ``m × m`` grid of interior nodes by the 5-point finite-volume
stencil: the conductance of the edge between neighbouring nodes ``p`` and
``q`` is ``(κ_p + κ_q) / 2``, so ``A(κ)`` has a fixed sparsity pattern and
values that are linear in ``κ``. Given noisy observations of ``u`` for a few
sources ``f`` (the columns of ``B``), gradient descent on
``θ = log κ`` through :func:`tsgu_core.solve_values` recovers ``κ``:

.. math::

    \min_\theta \; \tfrac12 \|U(\theta) - U_{obs}\|^2 / \|U_{obs}\|^2
    + \tfrac{\lambda}{2} \|\nabla \theta\|^2,
    \qquad U(\theta) = A(e^\theta)^{-1} B.

Everything here is plain torch. The pattern of ``A`` is fixed
(:attr:`DiffusionProblem.pattern`) and only its values depend on ``θ``
(:meth:`DiffusionProblem.values`), so a training step is
:func:`tsgu_core.solve_values` on the pattern and dense values
(:meth:`DiffusionProblem.objective`): the gradient reaches ``θ`` through the
values, whichever backend solves, in ``O(nnz)``; the same form compiles with
``torch.compile(fullgraph=True)`` and composes with ``torch.func``.

:meth:`DiffusionProblem.matrix` builds the CSR tensor for solves without a
gradient (observations, preconditioning experiments). Do not differentiate
through it: torch's backward of ``torch.sparse_csr_tensor`` makes the
gradient dense, ``O(n²)`` (measured 19 s and +4.4 GiB per backward at
n = 22 500, against 0.02 s through ``solve_values``; tsgu warns once, see
:mod:`tsgu_core.sparse.gradient_cost`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tsgu_core.base.quiet import quiet_sparse_notices
from tsgu_core.plugins.kit.csr import row_pointers
from tsgu_core.sparse.pattern import SparsePattern

__all__ = ["DiffusionProblem", "true_coefficient"]


def true_coefficient(m: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The embedded ground truth: a smooth background with a bump and a channel, ``(m, m)``."""
    t = (torch.arange(m, dtype=dtype) + 1) / (m + 1)
    y, x = torch.meshgrid(t, t, indexing="ij")
    bump = 1.5 * torch.exp(-((x - 0.3) ** 2 + (y - 0.65) ** 2) / 0.02)
    channel = 0.8 * torch.exp(-((y - 0.3 - 0.2 * x) ** 2) / 0.005)
    return 1.0 + bump + channel + 0.2 * torch.sin(2 * math.pi * x)


@dataclass
class DiffusionProblem:
    """The grid, the sources, the observations and the assembly of ``A(κ)``.

    Parameters
    ----------
    m : int
        Interior nodes per side; ``n = m²`` unknowns.
    sources : int
        Number of source terms (right-hand sides).
    noise : float
        Relative standard deviation of the observation noise.
    seed : int
        For the noise.

    Examples
    --------
    >>> import torch
    >>> from tsgu_core.examples.diffusion import DiffusionProblem
    >>> from tsgu_core import solve_values
    >>> problem = DiffusionProblem(m=8)
    >>> theta = torch.zeros(64, dtype=torch.float64, requires_grad=True)  # κ = 1: A is the Laplacian
    >>> U = solve_values(problem.pattern, problem.values(theta), problem.B)  # differentiable in θ, O(nnz)
    >>> U.shape
    torch.Size([64, 4])
    >>> A = problem.matrix(theta.detach())  # the same A as a CSR tensor, for solves without a gradient
    >>> A.shape, A.layout, problem.pattern.nnz == A.values().numel()
    (torch.Size([64, 64]), torch.sparse_csr, True)
    """

    m: int = 32
    sources: int = 4
    noise: float = 0.01
    seed: int = 0
    dtype: torch.dtype = torch.float64
    _indices: dict[torch.device, tuple[torch.Tensor, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _patterns: dict[torch.device, SparsePattern] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        m = self.m
        n = m * m
        h = 1.0 / (m + 1)
        index = torch.arange(n).reshape(m, m)
        # edges between interior neighbours, and the boundary edges of each node
        horizontal = torch.stack([index[:, :-1].reshape(-1), index[:, 1:].reshape(-1)])
        vertical = torch.stack([index[:-1, :].reshape(-1), index[1:, :].reshape(-1)])
        self.edges = torch.cat([horizontal, vertical], dim=1)  # (2, E)
        boundary_count = torch.zeros(m, m, dtype=self.dtype)
        boundary_count[0, :] += 1
        boundary_count[-1, :] += 1
        boundary_count[:, 0] += 1
        boundary_count[:, -1] += 1
        self.boundary_count = boundary_count.reshape(-1)
        # the CSR pattern: the diagonal, then each edge in both directions
        p, q = self.edges
        rows = torch.cat([torch.arange(n), p, q])
        cols = torch.cat([torch.arange(n), q, p])
        order = torch.argsort(rows * n + cols)
        self._order = order
        self._crow = row_pointers(rows, n)
        self._col = cols[order]
        self.pattern = SparsePattern.from_csr(self._crow, self._col, n)
        """The fixed sparsity pattern of ``A(κ)`` (CSR order, on the CPU; see :meth:`pattern_on`)."""
        self.scale = 1.0 / h**2
        # sources: Gaussian blobs at different places
        t = (torch.arange(m, dtype=self.dtype) + 1) / (m + 1)
        y, x = torch.meshgrid(t, t, indexing="ij")
        centres = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75), (0.5, 0.5), (0.5, 0.15)]
        blobs = [torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.01).reshape(-1) for cx, cy in centres]
        self.B = torch.stack([blobs[j % len(blobs)] for j in range(self.sources)], dim=1) * 10
        self.kappa_true = true_coefficient(m, self.dtype).reshape(-1)
        # the CPU entries exist from the start: a compiled step that looks them up never mutates (and recompiles)
        self._on(torch.device("cpu"))
        self.pattern_on(torch.device("cpu"))

    @property
    def n(self) -> int:
        return self.m * self.m

    def _on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        """The index tensors on ``device`` (copied once per device)."""
        if device not in self._indices:
            tensors = (self.edges[0], self.edges[1], self.boundary_count, self._order, self._crow, self._col)
            self._indices[device] = tuple(t.to(device) for t in tensors)
        return self._indices[device]

    def pattern_on(self, device: torch.device) -> SparsePattern:
        """:attr:`pattern` with its index tensors on ``device`` (copied once per device)."""
        if device not in self._patterns:
            pattern = self.pattern
            assert pattern.crow is not None, "built from CSR arrays"
            self._patterns[device] = SparsePattern(
                pattern.row.to(device), pattern.col.to(device), pattern.n, pattern.crow.to(device)
            )
        return self._patterns[device]

    def values(self, theta: torch.Tensor) -> torch.Tensor:
        """The values of ``A(exp(θ))`` in :attr:`pattern` order: a dense ``(nnz,)`` tensor, differentiable in ``θ``.

        Examples
        --------
        >>> import torch
        >>> from tsgu_core.examples.diffusion import DiffusionProblem
        >>> problem = DiffusionProblem(m=3)
        >>> problem.values(torch.zeros(9, dtype=torch.float64))[:3] * (1 / 4) ** 2  # row 0: 4, -1, -1
        tensor([ 4., -1., -1.], dtype=torch.float64)
        """
        p, q, boundary_count, order = self._on(theta.device)[:4]
        kappa = torch.exp(theta)
        conductance = (kappa[p] + kappa[q]) / 2
        diagonal = (kappa * boundary_count).index_add(0, p, conductance).index_add(0, q, conductance)
        return torch.cat([diagonal, -conductance, -conductance])[order] * self.scale

    def matrix(self, theta: torch.Tensor) -> torch.Tensor:
        """``A(exp(θ))`` as a CSR tensor on ``θ``'s device, for solves without a gradient.

        Its values are differentiable functions of ``θ``, but torch's backward of the
        CSR constructor is dense (``O(n²)`` time and memory): to differentiate, solve
        with :func:`tsgu_core.solve_values` on :attr:`pattern` and :meth:`values`
        (see :meth:`objective`).
        """
        crow, col = self._on(theta.device)[4:]
        values = self.values(theta)
        with quiet_sparse_notices():  # torch's notices about CSR support, scoped to this construction
            return torch.sparse_csr_tensor(crow, col, values, (self.n, self.n), check_invariants=False)

    def observations(self, solve: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Noisy observations of ``U(κ_true)``, computed with ``solve(A, B)``."""
        with torch.no_grad():
            U: torch.Tensor = solve(self.matrix(torch.log(self.kappa_true)), self.B)
        generator = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(U.shape, generator=generator, dtype=self.dtype).to(U.device)
        return U + self.noise * U.abs().mean() * noise

    def loss(self, theta: torch.Tensor, U: torch.Tensor, observed: torch.Tensor, smoothing: float) -> torch.Tensor:
        """Relative misfit plus the gradient penalty ``λ/2 ‖∇θ‖²``."""
        p, q = self._on(theta.device)[:2]
        misfit = 0.5 * (U - observed).square().sum() / observed.square().sum()
        return misfit + 0.5 * smoothing * (theta[p] - theta[q]).square().sum()

    def objective(
        self,
        theta: torch.Tensor,
        observed: torch.Tensor,
        smoothing: float,
        *,
        backend: str | None = None,
        method: str | None = None,
        **options: Any,
    ) -> torch.Tensor:
        r"""The training loss at ``θ`` through :func:`tsgu_core.solve_values`: dense tensors only.

        ``U(θ) = A(e^θ)⁻¹ B`` is solved from :attr:`pattern` and :meth:`values`,
        then scored by :meth:`loss` — the same number as building
        :meth:`matrix` and calling :func:`tsgu_core.solve`, but with no torch
        sparse tensor in sight, so it compiles with
        ``torch.compile(fullgraph=True)`` (the solve is one opaque operator,
        its backward compiled with it) and composes with ``torch.func``.

        Parameters
        ----------
        theta : Tensor
            ``log κ``, shape ``(n,)``.
        observed : Tensor
            The observations, ``(n, sources)`` (see :meth:`observations`).
        smoothing : float
            The weight ``λ`` of the gradient penalty.
        backend, method, **options
            As for :func:`tsgu_core.solve`.

        Examples
        --------
        >>> import torch
        >>> from tsgu_core import solve
        >>> from tsgu_core.examples.diffusion import DiffusionProblem
        >>> problem = DiffusionProblem(m=6, sources=2)
        >>> observed = problem.observations(lambda A, B: solve(A, B, backend="scipy"))
        >>> theta = torch.zeros(problem.n, dtype=torch.float64, requires_grad=True)
        >>> step = torch.compile(problem.objective, fullgraph=True, backend="eager")
        >>> loss = step(theta, observed, 1e-4, backend="scipy")
        >>> loss.backward()
        >>> with torch.no_grad():
        ...     U = solve(problem.matrix(theta), problem.B, backend="scipy")
        >>> bool(torch.isclose(loss, problem.loss(theta, U, observed, 1e-4)))
        True
        """
        from tsgu_core.api.solve import solve_values

        pattern, B = self.pattern_on(theta.device), self.B.to(theta.device)
        U = solve_values(pattern, self.values(theta), B, backend=backend, method=method, **options)
        return self.loss(theta, U, observed, smoothing)

    def relative_error(self, theta: torch.Tensor) -> float:
        """``‖κ − κ_true‖ / ‖κ_true‖``."""
        with torch.no_grad():
            truth = self.kappa_true.to(theta.device)
            return float((torch.exp(theta) - truth).norm() / truth.norm())
