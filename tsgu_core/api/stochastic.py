r"""Stochastic estimates of log-determinants and selected inverses, for backends without selected inversion.

Only ever used when asked for by name: ``method="stochastic"`` in
:func:`~tsgu_core.slogdet`, :func:`~tsgu_core.logdet`,
:func:`~tsgu_core.selected_inverse` and :func:`~tsgu_core.diagonal_of_inverse`.
Every such call returns its **standard error** next to the value (an
:class:`Estimate`, or a :class:`SlogdetEstimate` for ``slogdet``); the exact
calls are unchanged. The estimators only multiply by ``A`` and call
:func:`tsgu_core.solve` (one multi-column solve with all probes as ``B``'s
columns, and one with ``Aᵀ`` where needed), so they work on every backend and
device ``solve`` works on — iterative, GPU, JAX, PETSc.

* **Entries of** ``M = A⁻¹`` (Hutchinson with Rademacher probes ``z``, ``E[z zᵀ] = I``):
  ``M_ij = E[(M z)_i z_j]``, estimated by the mean over ``k`` probes, with
  standard error ``s/√k`` from the per-probe samples' standard deviation ``s``.
  With ``sketch=s > 0`` (Hutch++-style deflation): ``Q = orth(M S)`` for ``s``
  random probes ``S``, ``M = Q(QᵀM) + (I − QQᵀ)M``; the first part is computed
  exactly (``QᵀM = (A⁻ᵀQ)ᵀ``, a solve with ``Aᵀ``), the second by Hutchinson.
  Unbiased for every ``Q``, so the standard error of the second part is that
  of the whole. Or, with ``control_variate=True``: ``A⁻¹ = C + (A⁻¹ − C)`` with
  the two-term Neumann series ``C = D⁻¹ + D⁻¹ND⁻¹ + D⁻¹ND⁻¹ND⁻¹``
  (``A = D − N``, ``D`` the diagonal), whose entries are computed exactly from
  sparse products and whose products ``C z`` cost two products with ``A``.
* **log det A** for a symmetric positive definite ``A`` (stochastic Lanczos
  quadrature, matrix products only): ``log det A = tr log A = E[zᵀ log(A) z]``,
  each ``zᵀ log(A) z`` by the Gauss quadrature of ``m`` Lanczos steps started
  at ``z``: ``‖z‖² Σ_l τ_l² log θ_l`` with Ritz values ``θ_l`` and first
  eigenvector components ``τ_l`` of the Lanczos tridiagonal. ``m`` grows
  until the quadrature error is below 1 % of the standard error.
  The gradient ``∂ log det A/∂A_ij = (A⁻ᵀ)_ij`` is the entries estimate above
  at the stored entries (symmetrized: ``½((Mz)_i z_j + (Mz)_j z_i)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from tsgu_core.api.solve import solve
from tsgu_core.base.quiet import quietly
from tsgu_core.engine.pipeline import matrix_values, plan, split_by_pattern
from tsgu_core.engine.request import SolveRequest
from tsgu_core.errors import (
    ComplexNotSupportedError,
    ConvergenceError,
    InvalidOptionError,
    SecondDerivativeError,
    ShapeError,
    StructureError,
    UnknownOptionError,
)
from tsgu_core.plugins.kit.scaling import largest_power_of_two
from tsgu_core.plugins.protocol import SolverBackend
from tsgu_core.sparse.pattern import SparsePattern
from tsgu_core.sparse.structure import SYMMETRY_FACTOR
from tsgu_core.sparse.validate import check_matrix

__all__ = [
    "OPTIONS",
    "STOCHASTIC",
    "Estimate",
    "SlogdetEstimate",
    "batch_members",
    "check_single",
    "estimate_entries",
    "estimate_selected",
    "estimate_slogdet",
    "selected_settings",
]

STOCHASTIC = "stochastic"
"""The ``method`` name the determinant front doors reserve for the estimates of this module."""

DEFAULT_PROBES = 64
DEFAULT_MAX_LANCZOS_STEPS = 1000
_OWN_OPTIONS = ("probes", "seed", "generator", "sketch", "control_variate", "solver", "assume")
_LANCZOS_OPTIONS = ("max_lanczos_steps",)
OPTIONS = _OWN_OPTIONS + _LANCZOS_OPTIONS
"""The options of ``method="stochastic"`` (``max_lanczos_steps`` for slogdet/logdet only); the rest go to the solver."""
_QUADRATURE_SHARE = 0.01  # the quadrature error allowed, as a share of the standard error
_SAMPLES_PER_CHUNK = 1 << 22  # entries × probes held at once when averaging the samples


class Estimate(NamedTuple):
    """A stochastic estimate and its standard error, returned only by ``method="stochastic"``.

    A named tuple ``(value, standard_error)``: ``value`` is the estimate, of
    the type the exact call returns (dense, or sparse in ``A``'s layout);
    ``standard_error`` is the standard error of each entry of ``value`` (same
    type and shape, real), estimated from the per-probe samples: ``s/√k`` for
    ``k`` probes whose samples have standard deviation ``s``. About 95 % of
    estimates lie within 2 standard errors of the exact value (the mean of
    ``k`` independent samples is close to normal).

    Examples
    --------
    >>> import torch, tsgu_core
    >>> A = torch.tensor([[4.0, 1.0], [2.0, 5.0]], dtype=torch.float64).to_sparse_csr()
    >>> value, standard_error = tsgu_core.diagonal_of_inverse(A, method="stochastic", probes=256, seed=0)
    >>> exact = torch.linalg.inv(A.to_dense()).diagonal()
    >>> bool(((value - exact).abs() < 4 * standard_error).all())
    True
    """

    value: torch.Tensor
    standard_error: torch.Tensor


class SlogdetEstimate(tuple[torch.Tensor, torch.Tensor]):
    """``(sign, logabsdet)`` from ``slogdet(A, method="stochastic")``, with the estimate's standard error.

    A 2-tuple, so ``sign, logabsdet = slogdet(A, method="stochastic")`` works as
    for the exact call; the extra facts are attributes.

    Attributes
    ----------
    sign, logabsdet : Tensor
        The tuple's two entries (``sign`` is 1: only SPD matrices are estimated).
    standard_error : Tensor
        The standard error of ``logabsdet`` (a scalar, no gradient).
    probes : int
        The number of Lanczos probes.
    lanczos_steps : int
        The Lanczos steps taken (the longest probe's).

    Examples
    --------
    >>> import torch, tsgu_core
    >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64).to_sparse_csr()
    >>> sign, logabsdet = result = tsgu_core.slogdet(A, method="stochastic", seed=0)
    >>> bool(abs(logabsdet - torch.log(torch.tensor(11.0))) < 4 * result.standard_error + 1e-12)
    True
    """

    standard_error: torch.Tensor
    probes: int
    lanczos_steps: int

    def __new__(
        cls, sign: torch.Tensor, logabsdet: torch.Tensor, standard_error: torch.Tensor, probes: int, steps: int
    ) -> SlogdetEstimate:
        self = super().__new__(cls, (sign, logabsdet))
        self.standard_error = standard_error
        self.probes = probes
        self.lanczos_steps = steps
        return self

    def __getnewargs__(self) -> tuple[Any, ...]:  # copy and pickle rebuild it through __new__
        return (self[0], self[1], self.standard_error, self.probes, self.lanczos_steps)

    @property
    def sign(self) -> torch.Tensor:
        return self[0]

    @property
    def logabsdet(self) -> torch.Tensor:
        return self[1]

    def __repr__(self) -> str:
        return (
            f"SlogdetEstimate(sign={self[0]!r}, logabsdet={self[1]!r}, standard_error={self.standard_error!r}, "
            f"probes={self.probes}, lanczos_steps={self.lanczos_steps})"
        )


@dataclass(frozen=True)
class _Settings:
    """The checked options of one stochastic call."""

    probes: int
    sketch: int
    generator: torch.Generator | None
    backend: str | SolverBackend[Any] | None
    solver: str | None
    assume: str
    solver_options: dict[str, Any]
    max_lanczos_steps: int
    control_variate: bool = False

    def solve(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        """``A⁻¹ B`` through the chosen backend's own solve (no graph: gradients are this module's)."""
        with torch.no_grad():
            X: torch.Tensor = solve(
                A, B, backend=self.backend, method=self.solver, assume=self.assume, **self.solver_options
            )
        return X

    def probe_block(self, n: int, k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``k`` Rademacher probes ``(n, k)`` (±1), drawn on the generator's device (the CPU by default)."""
        where = self.generator.device if self.generator is not None else torch.device("cpu")
        bits = torch.randint(0, 2, (n, k), generator=self.generator, device=where, dtype=torch.int8)
        return (bits.to(dtype) * 2 - 1).to(device)


def _integer(options: dict[str, Any], name: str, default: int, least: int, why: str) -> int:
    value = options.pop(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidOptionError(f"{name} must be an integer ≥ {least} ({why}), got {value!r}", option=name)
    return value


def _settings(
    A: torch.Tensor, backend: Any, options: dict[str, Any], *, logdet: bool, default_assume: str = "general"
) -> _Settings:
    """Split ``options`` into this module's and the solver's; check both (the solver's by planning a solve)."""
    options = dict(options)
    n = A.shape[-1]
    probes = _integer(options, "probes", DEFAULT_PROBES, 2, "two probes at least, for a standard error")
    sketch = _integer(options, "sketch", 0, 0, "the number of deflation probes; 0 for plain Hutchinson")
    if sketch > n:
        raise InvalidOptionError(f"sketch must be at most n = {n}, got {sketch}", option="sketch")
    control = options.pop("control_variate", False)
    if not isinstance(control, bool):
        raise InvalidOptionError(f"control_variate must be True or False, got {control!r}", option="control_variate")
    if control and sketch:
        raise InvalidOptionError("control_variate=True and sketch= do not combine; choose one", option="sketch")
    steps = DEFAULT_MAX_LANCZOS_STEPS
    if logdet:
        steps = _integer(options, "max_lanczos_steps", DEFAULT_MAX_LANCZOS_STEPS, 1, "Lanczos steps per probe")
    generator = options.pop("generator", None)
    if options.get("seed") is not None and generator is not None:
        raise InvalidOptionError("give seed= or generator=, not both", option="seed")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InvalidOptionError(
            f"generator must be a torch.Generator, got {type(generator).__name__}", option="generator"
        )
    if options.get("seed") is not None:
        generator = torch.Generator().manual_seed(_integer(options, "seed", 0, 0, "the probes' random seed"))
    options.pop("seed", None)
    solver = options.pop("solver", None)
    if solver is not None and not isinstance(solver, str):
        raise InvalidOptionError(f"solver must be a method name of the backend, got {solver!r}", option="solver")
    assume = options.pop("assume", default_assume)
    try:  # the solver's options, checked now (slogdet's forward pass makes no solve)
        plan(SolveRequest.of(backend, solver, assume=assume, options=options), A)
    except UnknownOptionError as error:
        own = _OWN_OPTIONS + (_LANCZOS_OPTIONS if logdet else ())
        raise UnknownOptionError(
            f"{error} (method='stochastic' itself takes {list(own)}; the rest go to the solver)",
            unknown=error.unknown,
            accepted=error.accepted + own,
        ) from None
    return _Settings(probes, sketch, generator, backend, solver, assume, options, steps, control)


def _transposed(pattern: SparsePattern, values: torch.Tensor) -> torch.Tensor:
    """``Aᵀ`` as a CSR tensor."""
    flipped, order = pattern.transposed()
    return flipped.to_csr(values[order])


def _mean_and_error(samples: Any, count: int, probes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error over probes of ``samples(columns) → (count, len(columns))``, in chunks.

    Two passes over the probes (mean, then squared deviations): no ``count × probes`` array at once.
    """
    step = max(1, _SAMPLES_PER_CHUNK // max(count, 1))
    chunks = [slice(start, min(start + step, probes)) for start in range(0, probes, step)]
    mean = sum(samples(c).sum(-1) for c in chunks) / probes
    squares = sum((samples(c) - mean.unsqueeze(-1)).abs().pow(2).sum(-1) for c in chunks)
    variance = squares / (probes - 1)
    return mean, (variance / probes).sqrt()


def _entries_at(M: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``M[rows, cols]`` of a sparse ``M`` (zero where nothing is stored), by a sorted search of its keys."""
    coo = M.to_sparse_coo().coalesce()
    n = M.shape[-1]
    keys = coo.indices()[0] * n + coo.indices()[1]
    keys, order = keys.sort()
    values: torch.Tensor = coo.values()[order]
    wanted = rows * n + cols
    where = torch.searchsorted(keys, wanted).clamp(max=max(keys.numel() - 1, 0))
    if keys.numel() == 0:
        return values.new_zeros(wanted.shape)
    found: torch.Tensor = torch.where(keys[where] == wanted, values[where], values.new_zeros(()))
    return found


def _neumann(
    A: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, Z: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The control variate ``C = D⁻¹ + D⁻¹ND⁻¹ + D⁻¹ND⁻¹ND⁻¹`` (``A = D − N``, ``D`` its diagonal) of ``A⁻¹``.

    Returns ``C[rows, cols]`` (exact, from sparse products) and ``C Z`` (two products with ``A`` per probe):
    ``A⁻¹`` is estimated as ``C + (A⁻¹ − C)``, the second term by Hutchinson.
    """
    pattern = SparsePattern.of(A)
    values = A.values() if A.layout == torch.sparse_csr else A._values()
    diagonal = pattern.diagonal(values)
    if not bool((diagonal != 0).all()):
        raise InvalidOptionError(
            "control_variate=True needs every diagonal entry of A stored and nonzero (it approximates A⁻¹ by a "
            "Neumann series in D⁻¹); use control_variate=False",
            option="control_variate",
        )
    inverse = 1 / diagonal
    off = torch.where(pattern.row == pattern.col, torch.zeros_like(values), -values)  # N's stored values
    N, scaled = pattern.to_csr(off), pattern.to_csr(off * inverse[pattern.row])  # N and D⁻¹N
    Y0 = inverse[:, None] * Z
    Y1 = inverse[:, None] * (N @ Y0)
    Y2 = inverse[:, None] * (N @ Y1)
    both = inverse[rows] * inverse[cols]
    entries = torch.where(rows == cols, inverse[rows], torch.zeros_like(both))
    entries = entries + _entries_at(N, rows, cols) * both + _entries_at(N @ scaled, rows, cols) * both
    return entries, Y0 + Y1 + Y2


def estimate_entries(
    A: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, settings: _Settings, *, symmetrize: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimates of ``(A⁻¹)[rows, cols]`` and their standard errors, both ``(m,)``.

    Hutchinson with ``settings.probes`` Rademacher probes, after ``settings.sketch``
    deflation probes (see the module's notes). ``symmetrize`` averages the samples
    at ``(i, j)`` and ``(j, i)`` (for a symmetric ``A``: the same expectation, less variance).
    ``A`` is detached, ``(n, n)``, and goes to :func:`tsgu_core.solve` as it is.
    """
    n, k, s = A.shape[-1], settings.probes, settings.sketch
    Z = settings.probe_block(n, k, A.dtype, A.device)
    S = settings.probe_block(n, s, A.dtype, A.device) if s else Z[:, :0]
    solved = settings.solve(A, torch.cat([S, Z], dim=1))  # one multi-column solve: sketch and probes
    Y, X = solved[:, :s], solved[:, s:]
    exact = torch.zeros(rows.numel(), dtype=A.dtype, device=A.device)
    if s:
        Q = torch.linalg.qr(Y).Q  # range of A⁻¹ S
        pattern = SparsePattern.of(A)
        QtM = settings.solve(_transposed(pattern, A.values() if A.layout == torch.sparse_csr else A._values()), Q)
        X = X - Q @ (Q.T @ X)  # (I − QQᵀ) A⁻¹ Z
        exact = (Q[rows] * QtM[cols]).sum(-1)  # (Q Qᵀ A⁻¹)_ij = Σ_l Q_il (A⁻ᵀ Q)_jl
        if symmetrize:
            exact = (exact + (Q[cols] * QtM[rows]).sum(-1)) / 2

    if settings.control_variate:
        control, CZ = _neumann(A, rows, cols, Z)
        X = X - CZ  # (A⁻¹ − C) Z
        exact = control  # symmetrize is for a symmetric A, whose C is symmetric too

    def samples(columns: slice) -> torch.Tensor:
        sample = X[rows, columns] * Z[cols, columns]
        return (sample + X[cols, columns] * Z[rows, columns]) / 2 if symmetrize else sample

    mean, error = _mean_and_error(samples, rows.numel(), k)
    return exact + mean, error


def _quadrature(alphas: torch.Tensor, betas: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``Σ_l τ_l² log θ_l`` for each probe's Lanczos tridiagonal (its leading ``length`` steps), ``(k,)``.

    The tridiagonal eigenproblems are solved by LAPACK's ``stemr`` (SciPy): ``O(m²)`` per probe for ``m``
    steps, where a dense ``eigh`` would take ``O(m³)``.
    """
    from scipy.linalg import eigh_tridiagonal

    a_all, b_all = alphas.double().cpu().numpy(), betas.double().cpu().numpy()
    out = []
    for probe, length in enumerate(lengths.tolist()):
        a, b = a_all[:length, probe], b_all[: length - 1, probe]
        theta, U = eigh_tridiagonal(a, b) if length > 1 else (a, np.ones((1, 1)))
        if not theta.min() > 0:
            raise StructureError(
                "method='stochastic' slogdet needs a symmetric positive definite A, but a Lanczos Ritz value "
                f"of A is {float(theta.min()):.3g} ≤ 0, so A is not positive definite; for a symmetric "
                "indefinite or a general A use the exact slogdet (the default, e.g. backend='scipy', method='splu')"
            )
        out.append(float((U[0] ** 2 * np.log(theta)).sum()))
    return torch.tensor(out, dtype=alphas.dtype, device=alphas.device)


def _lanczos_logdet(
    pattern: SparsePattern, values: torch.Tensor, Z: torch.Tensor, max_steps: int
) -> tuple[torch.Tensor, int]:
    """The per-probe SLQ samples ``zᵀ log(A) z`` ``(k,)`` for ``A`` (``pattern``, ``values``), and the steps taken.

    The ``k`` Lanczos recurrences run side by side (one sparse product ``A @ V`` per
    step), without reorthogonalization (the Gauss quadrature converges through
    the loss of orthogonality). A probe whose recurrence breaks down (an invariant
    subspace: its quadrature is exact) stops there. The quadrature is evaluated
    at geometrically spaced steps; it has converged when the change since the
    last evaluation, extrapolated geometrically, is below 1 % of the standard error.
    """
    n, k = Z.shape
    eps = torch.finfo(values.dtype).eps
    norms = Z.pow(2).sum(0)
    V, V_before = Z / norms.sqrt(), torch.zeros_like(Z)
    beta_before = Z.new_zeros(k)
    alphas, betas = Z.new_zeros(0, k), Z.new_zeros(0, k)
    lengths = torch.zeros(k, dtype=torch.int64, device=Z.device)
    active = torch.ones(k, dtype=torch.bool, device=Z.device)
    scale = values.abs().max()
    check, previous, change = 8, None, None
    limit = min(max_steps, n)
    for step in range(1, limit + 1):
        W = pattern.matmul(values, V).addcmul_(V_before, beta_before, value=-1)  # in place: n × k passes count
        alpha = torch.linalg.vecdot(V, W, dim=0)
        W.addcmul_(V, alpha, value=-1)
        beta = torch.linalg.vector_norm(W, dim=0)
        alphas, betas = torch.cat([alphas, alpha[None]]), torch.cat([betas, beta[None]])
        lengths += active
        active &= beta > 100 * eps * scale * math.sqrt(n)
        V_before, V = V, W.mul_(torch.where(active, 1 / torch.where(active, beta, 1.0), 0.0))
        beta_before = torch.where(active, beta, 0.0)
        if step < check and step < limit and bool(active.any()):
            continue
        check = math.ceil(check * 1.25)
        current = norms * _quadrature(alphas, betas, lengths)
        if not bool(active.any()) or step == n:
            return current, step
        if previous is not None:
            moved = float((current - previous).abs().max())
            error = float(current.std() / math.sqrt(k))
            ratio = moved / change if change else 1.0
            allowed = _QUADRATURE_SHARE * error + eps * float(current.abs().max())
            if ratio < 0.9 and moved * ratio / (1 - ratio) <= allowed:
                return current, step
            change = moved
        previous = current
    raise ConvergenceError(
        f"stochastic Lanczos quadrature did not converge in max_lanczos_steps={max_steps} steps (A is "
        "ill-conditioned); raise max_lanczos_steps, or use the exact slogdet (the default method)",
        backend="tsgu_core",
        method=STOCHASTIC,
        transpose=False,
        iterations=max_steps,
        residuals=(),
        thresholds=(),
        failed_columns=tuple(range(k)),
    )


class _StochasticSlogdet(torch.autograd.Function):
    """Passes the SLQ estimate through; backward: ``g·(A⁻ᵀ)_ij`` estimated by Hutchinson through the solver."""

    @staticmethod
    def forward(values: torch.Tensor, logabsdet: torch.Tensor, state: Any) -> torch.Tensor:
        return logabsdet.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.state = inputs[2]
        ctx.set_materialize_grads(False)

    @staticmethod
    @quietly
    def backward(ctx: Any, grad: torch.Tensor | None) -> tuple[Any, None, None]:
        if grad is None or not ctx.needs_input_grad[0]:
            return None, None, None
        if torch.is_grad_enabled():
            raise SecondDerivativeError(
                "second derivatives of a stochastic slogdet are not available; call backward() without "
                "create_graph=True"
            )
        A, settings = ctx.state
        pattern = SparsePattern.of(A)
        estimate, _ = estimate_entries(A, pattern.row, pattern.col, settings, symmetrize=True)
        return grad * estimate, None, None


def check_single(A: torch.Tensor) -> None:
    """A checked sparse ``A`` of one matrix: the estimates take no batch."""
    check_matrix(A, allow_batch=True)
    if A.dim() != 2:
        raise ShapeError(
            f"method='stochastic' takes one matrix (n, n), got {tuple(A.shape)}; estimate each batch member on its own"
        )


def batch_members(A: torch.Tensor) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """Each member of a batch ``(b, n, n)`` as ``(detached 2-D CSR, its values connected to A)``, in order.

    Shared and per-member patterns alike; also the batch's connected values
    (what a refusal of the gradient hangs on).
    """
    grouped = split_by_pattern(A)
    if grouped is None:  # one shared pattern
        detached, values = matrix_values(A, allow_batch=True)
        pattern = SparsePattern.of(detached)
        return [(pattern.to_csr(member.detach()), member) for member in values.unbind(0)], values
    groups, flat = grouped
    members: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for group in groups:
        pattern = SparsePattern.of(group.A)
        for index, member in zip(group.members.tolist(), group.values_of(flat).unbind(0), strict=True):
            members[index] = (pattern.to_csr(member.detach()), member)
    return [members[index] for index in range(A.shape[0])], flat


def _slogdet_member(
    detached: torch.Tensor, values: torch.Tensor, settings: _Settings
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """``(sign, logabsdet, standard error, probes, Lanczos steps)`` of one SPD matrix (2-D, detached, checked)."""
    pattern = SparsePattern.of(detached)
    own = values.detach()
    tolerance = SYMMETRY_FACTOR * torch.finfo(own.dtype).eps
    if pattern.asymmetry(own) > tolerance or pattern.first_bad_diagonal(own) is not None:
        raise StructureError(
            "method='stochastic' slogdet needs a symmetric positive definite A (symmetric values to "
            f"{tolerance:.1e} of max |a_ij|, a positive diagonal); this A is not; use the exact slogdet "
            "(the default, e.g. backend='scipy', method='splu'), which takes any square A"
        )
    n = detached.shape[-1]
    sign = own.new_ones(())
    if n == 0:
        return sign, values.sum() * 0, own.new_zeros(()), settings.probes, 0
    Z = settings.probe_block(n, settings.probes, own.dtype, own.device)
    scale = largest_power_of_two(own)
    samples, steps = _lanczos_logdet(pattern, own / scale, Z, settings.max_lanczos_steps)
    logabsdet = samples.mean() + n * scale.log()
    error = samples.std() / math.sqrt(settings.probes)
    connected = _StochasticSlogdet.apply(values, logabsdet, (detached, settings))
    return sign, connected, error, settings.probes, steps


def estimate_slogdet(A: torch.Tensor, backend: Any, options: dict[str, Any]) -> SlogdetEstimate:
    """``slogdet(A, method="stochastic", ...)``: see :func:`tsgu_core.slogdet`.

    A batch is estimated member by member (each with its own probes, drawn one
    member after another from the same generator).
    """
    check_matrix(A, allow_batch=True)
    if A.dtype.is_complex:
        raise ComplexNotSupportedError(
            "method='stochastic' slogdet estimates real symmetric positive definite matrices only; use the exact "
            "slogdet (the default method) for a complex A"
        )
    members = [matrix_values(A)] if A.dim() == 2 else batch_members(A)[0]
    if not members:
        empty = torch.zeros(0, dtype=A.dtype, device=A.device)
        return SlogdetEstimate(empty, empty, empty, options.get("probes", DEFAULT_PROBES), 0)
    settings = _settings(members[0][0], backend, options, logdet=True, default_assume="spd")  # one generator
    parts = [_slogdet_member(detached, values, settings) for detached, values in members]
    if A.dim() == 2:
        return SlogdetEstimate(*parts[0])
    return SlogdetEstimate(
        torch.stack([p[0] for p in parts]),
        torch.stack([p[1] for p in parts]),
        torch.stack([p[2] for p in parts]),
        parts[0][3],
        max(p[4] for p in parts),
    )


def selected_settings(A: torch.Tensor, backend: Any, options: dict[str, Any]) -> _Settings:
    """The checked options of a stochastic selected inverse or diagonal (``A`` detached, 2-D: a member)."""
    settings = _settings(A, backend, options, logdet=False)
    if settings.sketch and A.dtype.is_complex:
        raise ComplexNotSupportedError("sketch= (deflation) is for real A; use sketch=0 for a complex A")
    return settings


def estimate_selected(
    A: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, settings: _Settings
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A⁻¹)[rows, cols]`` estimates and their standard errors for a detached, checked 2-D ``A``."""
    if A.shape[-1] == 0 or rows.numel() == 0:
        empty = torch.zeros(rows.numel(), dtype=A.dtype, device=A.device)
        return empty, empty.real
    return estimate_entries(A, rows, cols, settings)
