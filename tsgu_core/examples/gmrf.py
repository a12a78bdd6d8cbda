r"""Fit a Matérn (SPDE) Gaussian Markov random field to noisy data by its exact marginal likelihood.

**The field.** On an ``m × m`` grid (unit spacing, ``n = m²`` nodes in
row-major order), with ``Δ`` the 5-point *graph* Laplacian
(``Δ_ii`` = the number of grid neighbours of ``i``, ``Δ_ij = −1`` for
neighbours: zero-flux, Neumann-type boundaries),

.. math::

    K = \kappa^2 I + \Delta, \qquad Q(\kappa, \tau) = \tau^2 K K,
    \qquad x \sim \mathcal N(0, Q^{-1}).

This is the SPDE ``(κ² − ∇²) x = W/τ`` of Lindgren, Rue and Lindström (2011)
with ``α = 2`` (smoothness ``ν = α − d/2 = 1`` in ``d = 2``), discretised with
unit grid spacing: a Matérn field whose *practical range* (where the
correlation has dropped to about 0.13) and *marginal variance* are, for
``κ ≪ 1`` and away from the boundary,

.. math::

    \rho = \frac{\sqrt{8\nu}}{\kappa} = \frac{\sqrt 8}{\kappa} \ \text{(grid units)},
    \qquad
    \sigma_x^2 = \frac{\Gamma(\nu)}{\Gamma(\nu + 1)\,4\pi\,\kappa^{2\nu}\tau^2} = \frac{1}{4\pi\kappa^2\tau^2}.

Both are the continuous-space formulas; on the lattice they are approximate
(:meth:`MaternGMRF.marginal_variance` gives the exact variances by selected
inversion): at the centre of the grid, 1.013, 1.053 and 1.115 times the
formula's for ranges 20, 8 and 4. Near the boundary the zero-flux Laplacian lets
the variance grow: to about twice the formula's in the middle of an edge and
3–4 times in a corner.

**The data.** ``y = A x + ε``, ``ε ~ N(0, σ² I)``, where ``A`` picks a
random subset of ``n_obs`` nodes (all of them with ``observed=1``). The field
is drawn exactly as ``x = τ⁻¹ K⁻¹ z``, ``z ~ N(0, I)`` — one sparse solve,
since ``Cov x = τ⁻² K⁻¹ K⁻ᵀ = τ⁻² K⁻² = Q⁻¹``.

**The likelihood.** For ``θ = (log κ, log τ, log σ)``, with posterior
precision ``Q_p = Q + σ⁻² AᵀA`` and posterior mean
``μ_p = Q_p⁻¹ σ⁻² Aᵀ y``, the exact log marginal likelihood is (Bayes' rule
``p(y) = p(y | x) p(x) / p(x | y)`` at ``x = μ_p``)

.. math::

    \log p(y \mid \theta) = \tfrac12 \log\det Q - \tfrac12 \log\det Q_p
    - \tfrac{n_{obs}}2 \log(2\pi\sigma^2)
    - \tfrac12 \bigl[\mu_p^{\mathsf T} Q \mu_p + \sigma^{-2} \|y - A\mu_p\|^2\bigr],

with ``log det Q = 2n log τ + 2 log det K``. Everything is plain torch on the
stored values of ``K`` and ``Q_p`` (fixed patterns, values that are smooth
functions of ``θ``): :func:`tsgu_core.slogdet` gives the two log-determinants
and :func:`tsgu_core.solve` the posterior mean, both differentiable, so
``backward()`` gives the exact gradient with respect to ``θ`` (the
log-determinants' gradients by selected inversion, never a dense inverse).
:func:`fit` maximises it with ``torch.optim.LBFGS``; :func:`fit` also returns
standard errors from the observed information (the Hessian of
``−log p(y | θ)`` at the optimum, by central differences of the exact
gradient).

Examples
--------
>>> import torch
>>> from tsgu_core.examples.gmrf import MaternGMRF, fit
>>> model = MaternGMRF(m=16, practical_range=4.0, seed=0)
>>> y = model.simulate().y
>>> result = fit(model, y, iterations=30)
>>> bool(((result.theta - model.theta_true).abs() < 4 * result.standard_errors).all())
True
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from tsgu_core.api.determinants import diagonal_of_inverse, slogdet
from tsgu_core.api.factorize import factorize
from tsgu_core.api.solve import solve
from tsgu_core.base.quiet import quiet_sparse_notices
from tsgu_core.errors import InvalidArgumentError

__all__ = [
    "PARAMETERS",
    "GMRFFit",
    "MaternGMRF",
    "Simulation",
    "fit",
    "grid_laplacian",
    "kappa_tau",
    "observed_information",
    "plot_fit",
    "range_variance",
    "starting_point",
    "summary",
]

PARAMETERS = ("log κ", "log τ", "log σ")
"""The names of the three entries of ``θ``."""


def kappa_tau(practical_range: float, variance: float) -> tuple[float, float]:
    """``(κ, τ)`` of a field with practical range ``ρ = √8/κ`` (grid units) and marginal variance ``1/(4πκ²τ²)``.

    Examples
    --------
    >>> kappa, tau = kappa_tau(20.0, 1.0)
    >>> round(kappa, 4), round(tau, 4)
    (0.1414, 1.9947)
    """
    kappa = math.sqrt(8.0) / practical_range
    return kappa, 1.0 / (kappa * math.sqrt(4 * math.pi * variance))


def range_variance(theta: torch.Tensor) -> tuple[float, float]:
    """The inverse of :func:`kappa_tau`: ``(ρ, σ_x²)`` of ``θ = (log κ, log τ, …)``."""
    kappa, tau = math.exp(float(theta[0])), math.exp(float(theta[1]))
    return math.sqrt(8.0) / kappa, 1.0 / (4 * math.pi * kappa**2 * tau**2)


def grid_laplacian(m: int) -> sp.csr_matrix:
    """The 5-point graph Laplacian of an ``m × m`` grid (zero-flux boundaries: each row sums to 0), CSR."""
    ones = np.ones(m)
    path = sp.diags([-ones[:-1], 2 * ones, -ones[:-1]], [-1, 0, 1], format="lil")
    path[0, 0] = path[m - 1, m - 1] = 1  # an end of the path has one neighbour
    eye = sp.identity(m, format="csr")
    laplacian = (sp.kron(eye, path) + sp.kron(path, eye)).tocsr()
    laplacian.eliminate_zeros()  # kron stores the zeros of its factors' blocks
    laplacian.sort_indices()
    return laplacian


def _values_on(pattern: sp.csr_matrix, matrix: sp.spmatrix) -> torch.Tensor:
    """``matrix``'s entries at ``pattern``'s positions (CSR order); ``matrix``'s pattern must lie inside it."""
    n = pattern.shape[0]
    coo = pattern.tocoo()
    keys = coo.row.astype(np.int64) * n + coo.col
    other = sp.coo_matrix(matrix)
    other.sum_duplicates()
    where = np.searchsorted(keys, other.row.astype(np.int64) * n + other.col)
    assert np.array_equal(keys[where], other.row.astype(np.int64) * n + other.col), "pattern must contain matrix"
    values = np.zeros(len(keys))
    values[where] = other.data
    return torch.from_numpy(values)


def _indices(pattern: sp.csr_matrix) -> torch.Tensor:
    coo = pattern.tocoo()
    return torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))


@dataclass
class Simulation:
    """A draw from the model: the field ``x`` (``(n,)``), the observed nodes and the data ``y`` there."""

    x: torch.Tensor
    observed: torch.Tensor
    y: torch.Tensor


@dataclass
class MaternGMRF:
    """The grid, the true parameters, the observation pattern and the exact log marginal likelihood.

    Parameters
    ----------
    m : int
        Nodes per side; ``n = m²``.
    practical_range : float
        The true ``ρ = √8/κ`` in grid units.
    variance : float
        The true nominal marginal variance ``1/(4πκ²τ²)``.
    noise : float
        The true noise standard deviation ``σ``.
    observed : float
        The fraction of nodes observed, chosen at random (``1``: every node).
    seed : int
        For the observed nodes, the field and the noise.

    Raises
    ------
    InvalidArgumentError
        ``m < 2``, ``observed`` outside ``(0, 1]``, or a non-positive range, variance or noise.

    Examples
    --------
    >>> import torch
    >>> from tsgu_core.examples.gmrf import MaternGMRF
    >>> model = MaternGMRF(m=8, observed=0.5, seed=0)
    >>> data = model.simulate()
    >>> data.x.shape, data.y.shape
    (torch.Size([64]), torch.Size([32]))
    >>> theta = model.theta_true.clone().requires_grad_()
    >>> model.log_likelihood(theta, data.y).backward()  # exact gradient through slogdet and solve
    >>> theta.grad.shape
    torch.Size([3])
    """

    m: int = 64
    practical_range: float = 20.0
    variance: float = 1.0
    noise: float = 0.5
    observed: float = 0.5
    seed: int = 0
    backend: str | None = None

    def __post_init__(self) -> None:
        if self.m < 2 or not 0 < self.observed <= 1:
            raise InvalidArgumentError(f"need m ≥ 2 and 0 < observed ≤ 1, got m={self.m}, observed={self.observed}")
        if not all(value > 0 for value in (self.practical_range, self.variance, self.noise)):  # NaN too
            raise InvalidArgumentError(
                f"practical_range, variance and noise must be > 0, got {self.practical_range}, {self.variance}, "
                f"{self.noise}"
            )
        n = self.n
        laplacian = grid_laplacian(self.m)
        eye = sp.identity(n, format="csr")
        square = (laplacian @ laplacian).tocsr()
        q_pattern = (abs(square) + abs(laplacian) + eye).tocsr()  # Q = τ²(κ⁴ I + 2κ² Δ + Δ²): Δ²'s pattern
        q_pattern.sort_indices()
        k_pattern = (abs(laplacian) + eye).tocsr()
        k_pattern.sort_indices()
        self.q_indices = _indices(q_pattern)
        """``Q``'s (and ``Q_p``'s) stored positions, ``(2, nnz)``, row-major: the 13-point stencil."""
        self.k_indices = _indices(k_pattern)
        """``K``'s stored positions, ``(2, nnz)``: the 5-point stencil."""
        # Q's values are τ²(κ⁴ q_eye + 2κ² q_laplacian + q_square); K's are κ² k_eye + k_laplacian
        self.q_eye, self.q_laplacian, self.q_square = (_values_on(q_pattern, M) for M in (eye, laplacian, square))
        self.k_eye, self.k_laplacian = (_values_on(k_pattern, M) for M in (eye, laplacian))
        generator = torch.Generator().manual_seed(self.seed)
        count = max(1, round(self.observed * n))
        self.observed_nodes = torch.sort(torch.randperm(n, generator=generator)[:count]).values
        """The nodes with data, ascending (``A`` picks them)."""
        diagonal = torch.zeros(n, dtype=torch.float64)
        diagonal[self.observed_nodes] = 1.0
        self.q_observed = _values_on(q_pattern, sp.diags(diagonal.numpy()))  # AᵀA on Q's pattern
        kappa, tau = kappa_tau(self.practical_range, self.variance)
        self.theta_true = torch.tensor([math.log(kappa), math.log(tau), math.log(self.noise)], dtype=torch.float64)
        """``(log κ, log τ, log σ)`` the data are drawn with."""

    @property
    def n(self) -> int:
        return self.m * self.m

    @property
    def n_obs(self) -> int:
        return int(self.observed_nodes.numel())

    def _coo(self, indices: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        # COO (not CSR): torch's backward of the COO constructor keeps the gradient sparse
        with quiet_sparse_notices():
            return torch.sparse_coo_tensor(indices, values, (self.n, self.n), is_coalesced=True, check_invariants=False)

    def K(self, theta: torch.Tensor) -> torch.Tensor:
        """``K = κ²I + Δ`` as a sparse COO tensor, differentiable in ``θ``."""
        return self._coo(self.k_indices, torch.exp(2 * theta[0]) * self.k_eye + self.k_laplacian)

    def precision_values(self, theta: torch.Tensor) -> torch.Tensor:
        """The stored values of ``Q(θ) = τ² K K`` at :attr:`q_indices`, differentiable in ``θ``."""
        kappa2, tau2 = torch.exp(2 * theta[0]), torch.exp(2 * theta[1])
        return tau2 * (kappa2 * kappa2 * self.q_eye + 2 * kappa2 * self.q_laplacian + self.q_square)

    def precision(self, theta: torch.Tensor) -> torch.Tensor:
        """``Q(θ)`` as a sparse COO tensor, differentiable in ``θ``."""
        return self._coo(self.q_indices, self.precision_values(theta))

    def field(self, theta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``x = τ⁻¹ K⁻¹ z``; for ``z ~ N(0, I)``, ``x ~ N(0, Q⁻¹)`` exactly. ``z``: ``(n,)`` or ``(n, k)``."""
        with torch.no_grad():
            return solve(self.K(theta), z, backend=self.backend) / torch.exp(theta[1])

    def simulate(self) -> Simulation:
        """Draw ``x`` by :meth:`field` and ``y = x[observed] + σ ε`` at :attr:`theta_true` (the same every call)."""
        theta = self.theta_true
        generator = torch.Generator().manual_seed(self.seed)
        torch.randperm(self.n, generator=generator)  # the observed nodes' draw, as in the constructor
        x = self.field(theta, torch.randn(self.n, generator=generator, dtype=torch.float64))
        noise = torch.randn(self.n_obs, generator=generator, dtype=torch.float64)
        return Simulation(x, self.observed_nodes, x[self.observed_nodes] + math.exp(float(theta[2])) * noise)

    def _posterior(
        self, q: torch.Tensor, inverse_noise: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``Q_p = Q + σ⁻² AᵀA`` (COO) from ``Q``'s values ``q``, and ``σ⁻² Aᵀ y``."""
        posterior = self._coo(self.q_indices, q + inverse_noise * self.q_observed)
        b = torch.zeros(self.n, dtype=y.dtype).index_put((self.observed_nodes,), y) * inverse_noise
        return posterior, b

    def log_likelihood(self, theta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        r"""The exact ``log p(y | θ)`` (see the module's docstring), differentiable in ``θ`` and ``y``.

        Costs one factorization of ``Q_p`` (:func:`~tsgu_core.factorize`: its
        :meth:`~tsgu_core.Factorization.slogdet` and :meth:`~tsgu_core.Factorization.solve` share it)
        and one of ``K``; the backward pass adds selected inversions on the same factors and one
        transposed solve.
        """
        row, col = self.q_indices
        nodes = self.observed_nodes
        inverse_noise = torch.exp(-2 * theta[2])  # σ⁻²
        q = self.precision_values(theta)
        posterior, b = self._posterior(q, inverse_noise, y)
        logdet_K = slogdet(self.K(theta), backend=self.backend)[1]
        logdet_Q = 2 * self.n * theta[1] + 2 * logdet_K  # log det τ²KK
        posterior_factors = factorize(posterior, backend=self.backend)  # one factorization of Q_p ...
        logdet_Qp = posterior_factors.slogdet()[1]
        mean = posterior_factors.solve(b)  # ... serves log det Q_p and μ_p, and both gradients
        Q_mean = torch.zeros_like(mean).index_add(0, row, q * mean[col])
        quadratic = mean @ Q_mean + inverse_noise * (y - mean[nodes]).square().sum()
        return 0.5 * (logdet_Q - logdet_Qp - quadratic) - self.n_obs * (theta[2] + 0.5 * math.log(2 * math.pi))

    def posterior_mean(self, theta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``μ_p = E[x | y, θ]``, ``(n,)`` (no gradient)."""
        with torch.no_grad():
            posterior, b = self._posterior(self.precision_values(theta), torch.exp(-2 * theta[2]), y)
            return solve(posterior, b, backend=self.backend)

    def marginal_variance(self, theta: torch.Tensor) -> torch.Tensor:
        """The exact prior marginal variances ``diag(Q⁻¹)``, ``(n,)``, by selected inversion."""
        with torch.no_grad():
            return diagonal_of_inverse(self.precision(theta), backend=self.backend)


@dataclass
class GMRFFit:
    """What :func:`fit` found: the estimate, its standard errors and how the optimiser got there.

    Attributes
    ----------
    theta : Tensor
        The maximum-likelihood ``(log κ, log τ, log σ)``.
    standard_errors : Tensor
        ``√diag(H⁻¹)`` for the observed information ``H`` (:func:`observed_information`).
    information : Tensor
        ``H``, ``(3, 3)``.
    log_likelihood : float
        ``log p(y | θ̂)``.
    trace : list of float
        ``log p(y | θ)`` at every evaluation of the optimiser, in order.
    iterations : int
        L-BFGS iterations.
    seconds : float
        Wall time of the optimisation (the standard errors not included).
    seconds_information : float
        Wall time of :func:`observed_information` and of the gradient at ``θ̂``.
    start : Tensor
        The starting ``θ``.
    converged : bool
        ``H`` is positive definite (a maximum) and Newton's step ``H⁻¹∇ log p`` from ``θ̂`` is under 1% of
        every standard error. When ``H`` is not positive definite, :attr:`standard_errors` are NaN.
    """

    theta: torch.Tensor
    standard_errors: torch.Tensor
    information: torch.Tensor
    log_likelihood: float
    trace: list[float]
    iterations: int
    seconds: float
    seconds_information: float
    start: torch.Tensor
    converged: bool = True


def starting_point(y: torch.Tensor, practical_range: float = 10.0) -> torch.Tensor:
    """A generic start: practical range ``practical_range``; field and noise each half of ``y``'s variance."""
    half = float(y.var()) / 2
    kappa, tau = kappa_tau(practical_range, half)
    return torch.tensor([math.log(kappa), math.log(tau), 0.5 * math.log(half)], dtype=torch.float64)


def _gradient(model: MaternGMRF, theta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    theta = theta.detach().clone().requires_grad_()
    (gradient,) = torch.autograd.grad(model.log_likelihood(theta, y), theta)
    return gradient


def observed_information(model: MaternGMRF, theta: torch.Tensor, y: torch.Tensor, step: float = 1e-3) -> torch.Tensor:
    r"""``H = −∇²_θ log p(y | θ)`` by central differences of the exact gradient, symmetrised, ``(3, 3)``.

    ``H_{:,j} = −(∇ log p(θ + h e_j) − ∇ log p(θ − h e_j)) / 2h``: six gradient evaluations.
    At the maximum-likelihood estimate ``θ̂``, ``H⁻¹`` estimates the covariance of ``θ̂``.
    """
    columns = []
    for j in range(theta.numel()):
        shift = torch.zeros_like(theta)
        shift[j] = step
        columns.append(-(_gradient(model, theta + shift, y) - _gradient(model, theta - shift, y)) / (2 * step))
    H = torch.stack(columns, dim=1)
    return (H + H.T) / 2


def fit(
    model: MaternGMRF,
    y: torch.Tensor,
    *,
    start: torch.Tensor | None = None,
    iterations: int = 50,
    callback: Any = None,
) -> GMRFFit:
    """Maximise :meth:`MaternGMRF.log_likelihood` over ``θ`` with ``torch.optim.LBFGS`` (strong-Wolfe line search).

    The objective is ``−log p(y | θ) / n_obs`` (scaled so its gradient is of order one); every
    evaluation is one forward and one backward pass. ``callback(value)``, if given, is called with
    ``log p(y | θ)`` after each evaluation (e.g. to advance a progress bar).

    Parameters
    ----------
    model : MaternGMRF
        The grid and the observed nodes.
    y : Tensor
        The data, ``(n_obs,)``.
    start : Tensor, optional
        The starting ``θ`` (default: :func:`starting_point`).
    iterations : int
        At most this many L-BFGS iterations.

    Returns
    -------
    GMRFFit
    """
    theta = (starting_point(y) if start is None else start.to(torch.float64)).clone().requires_grad_()
    initial = theta.detach().clone()
    optimiser = torch.optim.LBFGS(
        [theta],
        lr=1.0,
        max_iter=iterations,
        max_eval=iterations * 5 // 4 + 10,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=10,
        line_search_fn="strong_wolfe",
    )
    trace: list[float] = []

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        value = model.log_likelihood(theta, y)
        loss = -value / model.n_obs
        loss.backward()
        trace.append(float(value.detach()))
        if callback is not None:
            callback(trace[-1])
        return loss

    started = time.perf_counter()
    optimiser.step(closure)
    seconds = time.perf_counter() - started
    estimate = theta.detach().clone()
    state = optimiser.state[optimiser.param_groups[0]["params"][0]]
    started = time.perf_counter()
    information = observed_information(model, estimate, y)
    at_estimate = estimate.clone().requires_grad_()
    value = model.log_likelihood(at_estimate, y)
    (gradient,) = torch.autograd.grad(value, at_estimate)
    seconds_information = time.perf_counter() - started
    if bool(torch.linalg.eigvalsh(information).min() > 0):  # a maximum: H⁻¹ is the covariance's estimate
        covariance = torch.linalg.inv(information)
        standard_errors = covariance.diagonal().sqrt()
        newton_step = (covariance @ gradient).abs()  # how far the maximum still is, by Newton's step
        converged = bool((newton_step <= 0.01 * standard_errors).all())
    else:  # not at a maximum: no standard errors, rather than wrong ones
        standard_errors = torch.full_like(estimate, math.nan)
        converged = False
    return GMRFFit(
        theta=estimate,
        standard_errors=standard_errors,
        information=information,
        log_likelihood=float(value.detach()),
        trace=trace,
        iterations=int(state.get("n_iter", 0)),
        seconds=seconds,
        seconds_information=seconds_information,
        start=initial,
        converged=converged,
    )


def summary(model: MaternGMRF, result: GMRFFit) -> list[tuple[str, float, float, float]]:
    """Rows ``(name, truth, estimate, standard error)``: ``θ``'s three entries, then ``ρ``, ``σ_x²`` and ``σ``.

    The derived parameters' standard errors follow from ``H⁻¹`` by the delta method:
    ``SE(ρ) = ρ·SE(log κ)``, ``SE(σ_x²) = 2σ_x²·√Var(log κ + log τ)``, ``SE(σ) = σ·SE(log σ)``.
    """
    covariance = torch.linalg.inv(result.information) if result.converged else torch.full((3, 3), math.nan)
    rows = [
        (name, float(truth), float(estimate), float(error))
        for name, truth, estimate, error in zip(
            PARAMETERS, model.theta_true, result.theta, result.standard_errors, strict=True
        )
    ]
    true_range, true_variance = range_variance(model.theta_true)
    fitted_range, fitted_variance = range_variance(result.theta)
    log_variance_sd = 2 * math.sqrt(max(float(covariance[:2, :2].sum()), 0.0))
    sigma = math.exp(float(result.theta[2]))
    rows += [
        ("range ρ = √8/κ", true_range, fitted_range, fitted_range * float(result.standard_errors[0])),
        ("variance σx² = 1/(4πκ²τ²)", true_variance, fitted_variance, fitted_variance * log_variance_sd),
        ("noise σ", model.noise, sigma, sigma * float(result.standard_errors[2])),
    ]
    return rows


def plot_fit(path: str, model: MaternGMRF, data: Simulation, result: GMRFFit, *, dpi: int = 110) -> None:
    """The figure: true field, data, posterior mean at ``θ̂``, and the log-likelihood per evaluation (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = model.m
    truth = data.x.reshape(m, m).numpy()
    fitted = model.posterior_mean(result.theta, data.y).reshape(m, m).numpy()
    observed = np.full(model.n, np.nan)
    observed[data.observed.numpy()] = data.y.numpy()
    limit = 2.5 * float(truth.std())  # saturates the extremes, for contrast
    shared = {"vmin": -limit, "vmax": limit, "origin": "lower", "cmap": "RdBu_r"}
    figure, axes = plt.subplots(1, 4, figsize=(15, 3.9), layout="constrained")
    panels = [
        (truth, "(a) true field x"),
        (observed.reshape(m, m), f"(b) data y: {model.n_obs} nodes, σ = {model.noise:g}"),
        (fitted, "(c) posterior mean E[x | y, θ̂]"),
    ]
    for axis, (image, title) in zip(axes[:3], panels, strict=True):
        shown = axis.imshow(image, **shared)
        axis.set_title(title, loc="left", fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.colorbar(shown, ax=axes[:3], shrink=0.85)
    axis = axes[3]
    best = max(result.trace)
    points = [(k, best - value) for k, value in enumerate(result.trace, 1) if best - value > 0]
    axis.semilogy([k for k, _ in points], [gap for _, gap in points], marker="o", markersize=3, linewidth=1.2)
    axis.set_title(f"(d) L-BFGS: log p(y|θ̂) − log p(y|θ)\nper evaluation; log p(y|θ̂) = {result.log_likelihood:.1f}",
                   loc="left", fontsize=10)  # fmt: skip
    axis.set_xlabel("likelihood evaluation")
    axis.grid(True, color="0.9", linewidth=0.8)
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)
    figure.suptitle(f"Matérn GMRF on a {m}×{m} grid fitted by exact marginal likelihood (tsgu slogdet + solve)",
                    fontsize=11)  # fmt: skip
    if not path.lower().endswith(".png"):
        figure.savefig(path, dpi=dpi)
        plt.close(figure)
        return
    import io

    from PIL import Image  # matplotlib's own dependency

    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=dpi, format="png")
    plt.close(figure)
    buffer.seek(0)
    with Image.open(buffer) as image:  # 256 colours: the noisy data panel compresses 2-3× smaller
        image.convert("RGB").quantize(colors=256).save(path, optimize=True)
