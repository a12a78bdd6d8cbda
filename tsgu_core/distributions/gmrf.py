r"""A Gaussian Markov random field: a Gaussian with a sparse precision matrix, exact and differentiable.

``x ~ N(μ, Q⁻¹)`` with ``Q`` sparse and symmetric positive definite. One
factorization of each precision member, ``Q = Pᵀ L D Lᵀ P`` (fill-reducing
``P``; a backend method declared ``sampling`` and ``selected_inversion``,
e.g. the ``scipy`` backend's ``ldlt``), serves everything:

* ``log p(x) = −½ (n log 2π − log det Q + (x − μ)ᵀ Q (x − μ))``: the
  log-determinant ``Σ log d_k`` once per distribution, its gradient
  ``∂ log det Q / ∂Q_ij = (Q⁻¹)_ji`` by selected inversion on the same
  factor; the quadratic form from the stored values (sparse products, no dense ``Q``);
* ``x = μ + S z``, ``S = Pᵀ L⁻ᵀ D^{-1/2}`` (``S Sᵀ = Q⁻¹``), ``z ~ N(0, I)``;
* ``Var x_i = (Q⁻¹)_ii`` by selected inversion.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch.distributions import Distribution, constraints

from tsgu_core.api.determinants import capability_plan, inverse_entries, slogdet_prepared
from tsgu_core.api.solve import solve
from tsgu_core.engine.pipeline import Plan, matrix_values, split_by_pattern
from tsgu_core.engine.prepared import PreparedSolve
from tsgu_core.errors import (
    BackendContractError,
    DeviceMismatchError,
    DtypeMismatchError,
    InvalidArgumentError,
    NotPositiveDefiniteError,
    ShapeError,
    SingularMatrixError,
    StaleFactorizationError,
    StructureError,
)
from tsgu_core.plugins.protocol import SolverBackend
from tsgu_core.sparse.pattern import SparsePattern
from tsgu_core.sparse.structure import SYMMETRY_FACTOR
from tsgu_core.sparse.validate import FLOAT_DTYPES, check_matrix

__all__ = ["GaussianMarkovRandomField"]

_LOG_2PI = math.log(2 * math.pi)
T = TypeVar("T")


class _Refused(torch.autograd.Function):
    """Passes ``output`` through; a backward pass that reaches it raises (never a silently zero gradient)."""

    @staticmethod
    def forward(anchor: torch.Tensor, output: torch.Tensor, message: str) -> torch.Tensor:
        return output

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.message = inputs[2]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, None]:
        raise InvalidArgumentError(ctx.message)


def _refused(anchors: list[torch.Tensor], output: torch.Tensor, message: str) -> torch.Tensor:
    """``output``, connected to the first of ``anchors`` that requires grad so that a backward pass raises."""
    anchor = next((a for a in anchors if a.requires_grad), None)
    if anchor is None or not torch.is_grad_enabled():
        return output
    result: torch.Tensor = _Refused.apply(anchor, output, message)
    return result


@dataclass
class _Member:
    """One precision matrix of the batch: its pattern and its stored values (connected for autograd)."""

    pattern: SparsePattern
    values: torch.Tensor

    def matrix(self) -> torch.Tensor:
        """The member as a detached CSR tensor."""
        return self.pattern.to_csr(self.values.detach())

    def quadratic(self, r: torch.Tensor) -> torch.Tensor:
        """``rᵀ Q r`` for ``r`` ``(..., n)``, shape ``(...)``: sparse products with the stored entries."""
        n = self.pattern.n
        result: torch.Tensor = _QuadraticForm.apply(self.values, r.reshape(-1, n).T, self.pattern)
        return result.reshape(r.shape[:-1])


class _QuadraticForm(torch.autograd.Function):
    """``r_sᵀ Q r_s`` for each column ``r_s`` of ``R`` ``(n, k)``, from ``Q``'s stored values.

    ``O(nnz + n·k)`` memory (sparse products, never ``k·nnz`` gathers). Backward: ``∂/∂q_ij = Σ_s ḡ_s r_si r_sj``
    at the stored entries (a sampled product) and ``∂/∂R = (Q + Qᵀ) R diag(ḡ)``; both built from differentiable
    operations, so a second derivative (e.g. in ``loc``) is right too.
    """

    @staticmethod
    def forward(values: torch.Tensor, R: torch.Tensor, pattern: SparsePattern) -> torch.Tensor:
        return (R * pattern.matmul(values, R)).sum(0)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        values, R, pattern = inputs
        ctx.save_for_backward(values, R)
        ctx.pattern = pattern

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        values, R = ctx.saved_tensors
        pattern: SparsePattern = ctx.pattern
        weighted = R * grad
        grad_values = pattern.outer_at_entries(weighted, R) if ctx.needs_input_grad[0] else None
        grad_R = None
        if ctx.needs_input_grad[1]:
            grad_R = pattern.matmul(values, weighted) + pattern.matmul(values, weighted, transpose=True)
        return grad_values, grad_R, None


def _members(precision: torch.Tensor) -> list[_Member]:
    """The members of a ``(n, n)`` or ``(b, n, n)`` precision (one pattern per group of members), in batch order."""
    grouped = split_by_pattern(precision)
    if grouped is not None:
        groups, flat = grouped
        found: dict[int, _Member] = {}
        for group in groups:
            pattern = SparsePattern.of(group.A)
            for member, values in zip(group.members.tolist(), group.values_of(flat).unbind(0), strict=True):
                found[member] = _Member(pattern, values)
        return [found[i] for i in range(precision.shape[0])]
    detached, values = matrix_values(precision, allow_batch=True)
    pattern = SparsePattern.of(detached)
    if detached.dim() == 2:
        return [_Member(pattern, values)]
    return [_Member(pattern, member) for member in values.unbind(0)]


@dataclass
class _Precision:
    """A precision's members, the plan that serves them, and what is computed from them once.

    Shared by a distribution and its :meth:`~GaussianMarkovRandomField.expand`-ed copies.
    """

    source: torch.Tensor
    members: list[_Member]
    plan: Plan
    batched: bool
    prepared: list[PreparedSolve | None] = field(default_factory=list)
    logdet: torch.Tensor | None = None
    variance: torch.Tensor | None = None
    graph: bool = False  # the members' values were read with autograd recording
    logdet_graph: bool = False  # and the log-determinant computed so
    version: int = 0  # the precision's version counter when the field was made

    def unchanged(self) -> None:
        """:class:`StaleFactorizationError` if the precision was changed in place since the field was made."""
        if self.source._version != self.version:
            raise StaleFactorizationError(
                "the precision was changed in place (e.g. by an optimizer step) after this "
                "GaussianMarkovRandomField was made, so its factorization and log-determinant describe the old "
                "values; make a new field from the changed precision (a distribution is a snapshot of its parameters)"
            )

    def connected(self) -> list[_Member]:
        """The members, their values connected to the precision whenever autograd needs them to be.

        A field made (or a log-determinant computed) under ``torch.no_grad()`` holds values without a graph;
        used later with grad enabled, they are read again from the precision (``O(nnz)``; the factorizations
        are kept), so its gradient is never silently missing.
        """
        self.unchanged()
        if torch.is_grad_enabled() and self.source.requires_grad and not self.graph:
            self.members, self.graph = _members(self.source), True
        return self.members

    @property
    def n(self) -> int:
        return self.members[0].pattern.n

    def check(self, index: int) -> None:
        """:class:`NotPositiveDefiniteError` unless member ``index`` is symmetric (to ``SYMMETRY_FACTOR·ε``,
        relative) with a positive diagonal: what is visible before a factorization, in ``O(nnz)``."""
        member = self.members[index]
        values = member.values.detach()
        tolerance = SYMMETRY_FACTOR * torch.finfo(values.dtype).eps
        measured = member.pattern.asymmetry(values)
        if measured > tolerance:
            raise NotPositiveDefiniteError(
                f"the precision{self._which(index)} is not symmetric: max |q_ij − q_ji| is {measured:.3g} of "
                f"max |q_ij| (allowed: {tolerance:.3g}); a precision matrix is symmetric positive definite — "
                "build it symmetric, e.g. (Q + Q.T) / 2"
            )
        found = member.pattern.first_bad_diagonal(values)
        if found is not None:
            row, stored = found
            raise NotPositiveDefiniteError(
                f"the precision{self._which(index)} is not positive definite: its diagonal entry ({row}, {row}) "
                f"is {'not stored' if not stored else 'not positive'}, and a positive definite matrix has a "
                "positive diagonal"
            )

    def _which(self, index: int) -> str:
        return f" (batch member {index})" if self.batched else ""

    def state(self, index: int) -> PreparedSolve:
        """Member ``index``'s factorization (made once): refused with a typed error unless positive definite."""
        self.unchanged()
        prepared = self.prepared[index]
        if prepared is None:
            self.check(index)
            prepared = self.prepared[index] = self._not_spd_is_typed(index, lambda: self.plan.prepare(self._csr(index)))
        return prepared

    def _csr(self, index: int) -> torch.Tensor:
        return self.members[index].matrix()

    def _not_spd_is_typed(self, index: int, work: Callable[[], T]) -> T:
        """``work()``, with the core's structure and singularity errors said as :class:`NotPositiveDefiniteError`."""
        try:
            return work()
        except NotPositiveDefiniteError as error:
            if not self.batched:
                raise
            raise NotPositiveDefiniteError(f"batch member {index}: {error}") from error
        except (StructureError, SingularMatrixError) as error:
            raise NotPositiveDefiniteError(
                f"the precision{self._which(index)} is not symmetric positive definite: {error}"
            ) from error

    def log_determinant(self) -> torch.Tensor:
        """``log det Q`` (``()`` or ``(b,)``), once; differentiable in the stored values (selected inversion)."""
        members = self.connected()
        recording = torch.is_grad_enabled() and self.source.requires_grad
        if self.logdet is None or (recording and not self.logdet_graph):  # one made under no_grad has no graph
            parts = [slogdet_prepared(self.state(i), member.values)[1] for i, member in enumerate(members)]
            self.logdet, self.logdet_graph = torch.stack(parts) if self.batched else parts[0], recording
        return self.logdet

    def diagonal_of_inverse(self) -> torch.Tensor:
        """``diag(Q⁻¹)`` (``(n,)`` or ``(b, n)``), once, by selected inversion on the same factors; no gradient."""
        self.unchanged()
        if self.variance is None:
            index = torch.arange(self.n, device=self.members[0].values.device)
            parts = [inverse_entries(self.state(i), index, index) for i in range(len(self.members))]
            dtype = self.members[0].values.dtype
            self.variance = (torch.stack(parts) if self.batched else parts[0]).to(dtype)
        return self.variance

    def sample_columns(self, index: int, Z: torch.Tensor) -> torch.Tensor:
        """``S Z`` for member ``index`` and ``Z`` ``(n, k)``, from the backend's ``precision_sample``."""
        prepared = self.state(index)
        (X,) = prepared.capability("precision_sample()", "precision_sample", Z)
        if not isinstance(X, torch.Tensor) or X.shape != Z.shape or X.dtype != Z.dtype or X.device != Z.device:
            got = f"{tuple(X.shape)} {X.dtype} on {X.device}" if isinstance(X, torch.Tensor) else type(X).__name__
            raise BackendContractError(
                f"backend {prepared.backend.name!r}: precision_sample() returned {got} for Z of "
                f"{tuple(Z.shape)} {Z.dtype} on {Z.device}; it must return S Z shaped like Z"
            )
        return X


_RSAMPLE_REFUSED = (
    "GaussianMarkovRandomField.rsample is reparameterised in loc only: its gradient with respect to the "
    "precision's values would need the derivative of the sparse factor (dense products), and is not computed "
    "rather than given wrong; sample from a field built on precision.detach() (the gradient in loc stays), or "
    "train the precision through log_prob, whose gradient is exact"
)
_VARIANCE_REFUSED = (
    "GaussianMarkovRandomField.variance is not differentiable with respect to the precision (the derivative "
    "needs entries of Q⁻¹ outside its pattern); compute it from a field built on precision.detach(), or under "
    "torch.no_grad()"
)


class GaussianMarkovRandomField(Distribution):
    r"""A Gaussian with mean ``loc`` and a sparse precision (inverse covariance) matrix: ``x ~ N(μ, Q⁻¹)``.

    Everything is computed from one sparse factorization of each precision
    member, ``Q = Pᵀ L D Lᵀ P`` with a fill-reducing permutation ``P``, made on
    first use (or at construction, when validating) and kept:

    .. math::

        \log p(x) = -\tfrac12\bigl(n\log 2\pi - \log\det Q + (x-\mu)^{\mathsf T} Q\,(x-\mu)\bigr),
        \qquad \log\det Q = \sum_k \log d_k .

    ``log_prob`` is exact and differentiable in ``loc``, ``value`` and the
    precision's stored values: ``∂ log det Q / ∂Q_ij = (Q⁻¹)_ji`` at the
    stored entries comes from selected inversion on the same factor (as
    :func:`tsgu_core.slogdet`), and the quadratic form is a sparse product
    with the stored entries — never a dense ``Q`` or ``Q⁻¹``. The gradient is with
    respect to each stored value on its own (``Q_ij`` and ``Q_ji`` apart),
    as for :func:`tsgu_core.slogdet`.

    ``rsample`` draws ``x = μ + S z`` with ``S = Pᵀ L⁻ᵀ D^{-1/2}``
    (``S Sᵀ = Q⁻¹``, one sparse triangular solve per call); it is
    reparameterised in ``loc``. Its gradient with respect to the precision
    would need the derivative of the factor: a backward pass that reaches
    it raises :class:`~tsgu_core.errors.InvalidArgumentError` (never a
    silently zero gradient). ``variance`` is ``diag(Q⁻¹)`` by selected
    inversion (a backward pass through it raises likewise).

    Parameters
    ----------
    loc : Tensor
        The mean, ``(..., n)``, broadcastable with the precision's batch.
        Real, of the precision's dtype and device.
    precision : Tensor
        Sparse COO or CSR, float32 or float64, symmetric positive definite,
        ``(n, n)`` or a batch ``(b, n, n)`` (members may have different
        patterns); then ``batch_shape`` ends in ``b``. May require grad.
    validate_args : bool, optional
        As in ``torch.distributions`` (default: torch's global setting, on
        unless Python runs with ``-O`` — and off once ``torch.compile`` has
        been used in the process, which sets it so). When on, the precision is checked
        at construction: symmetric (to ``1000 ε``, relative) and positive
        definite (by its factorization, which is then reused), and values
        passed to ``log_prob`` are checked. When off, nothing is factorized
        until first use — and a precision that is not symmetric positive
        definite is refused then, with the same error: every number comes
        from the factorization that checks it, so a log-density is never
        computed from a non-SPD precision.
    backend, method : optional
        A backend and one of its methods declared ``sampling`` and
        ``selected_inversion`` (default: the highest-priority one; on the
        CPU the ``scipy`` backend's ``ldlt``).
    **options
        The method's options (e.g. ``permc_spec="NATURAL"`` for ``ldlt``).

    Raises
    ------
    NotPositiveDefiniteError
        The precision is not symmetric, or not positive definite (at
        construction when validating, else at first use).
    NonFiniteError
        The precision holds NaN or infinity.
    StaleFactorizationError
        The precision was changed in place after the field was made (a
        field is a snapshot: make a new one, e.g. after each optimizer step).
    UnsupportedDeviceError, UnknownMethodError
        The backend or method named cannot sample (the message names those that can).
    ShapeError, LayoutError, DtypeMismatchError, DeviceMismatchError
        Inconsistent shapes, layouts, dtypes or devices.

    Examples
    --------
    >>> import torch
    >>> from tsgu_core.distributions import GaussianMarkovRandomField
    >>> n = 5
    >>> Q = (2.0 * torch.eye(n, dtype=torch.float64) - torch.diag(torch.ones(n - 1, dtype=torch.float64), 1)
    ...      - torch.diag(torch.ones(n - 1, dtype=torch.float64), -1) + 0.1 * torch.eye(n, dtype=torch.float64))
    >>> precision = Q.to_sparse_csr().requires_grad_()
    >>> field = GaussianMarkovRandomField(torch.zeros(n, dtype=torch.float64), precision)
    >>> x = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    >>> reference = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=torch.float64), precision_matrix=Q)
    >>> torch.allclose(field.log_prob(x), reference.log_prob(x))
    True
    >>> field.log_prob(x).backward()  # precision.grad: CSR, at the stored entries
    >>> torch.allclose(field.variance, torch.linalg.inv(Q).diagonal())
    True
    >>> field.rsample((1000,)).shape
    torch.Size([1000, 5])
    """

    arg_constraints = {"loc": constraints.real_vector}  # noqa: RUF012 - torch's class attribute
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        loc: torch.Tensor,
        precision: torch.Tensor,
        validate_args: bool | None = None,
        *,
        backend: str | SolverBackend[Any] | None = None,
        method: str | None = None,
        **options: Any,
    ) -> None:
        check_matrix(precision, "precision", allow_batch=True)
        if precision.dtype not in FLOAT_DTYPES:
            raise DtypeMismatchError(f"precision must be float32 or float64, got {precision.dtype}")
        n = precision.shape[-1]
        if n == 0:
            raise ShapeError("precision is 0 × 0: a Gaussian needs at least one dimension")
        loc = self._checked_loc(loc, precision)
        members = _members(precision)  # NaN or infinity: NonFiniteError
        batched = precision.dim() == 3
        try:
            batch_shape = torch.broadcast_shapes(loc.shape[:-1], precision.shape[:-2])
        except RuntimeError as error:
            raise ShapeError(
                f"loc {tuple(loc.shape)} does not broadcast with the precision's batch {tuple(precision.shape[:-2])}"
            ) from error
        if loc.shape[-1] != n:
            raise ShapeError(f"loc has {loc.shape[-1]} entries in its last dimension; the precision is {n} × {n}")
        the_plan = capability_plan(members[0].matrix(), "sampling", backend, method, options)
        self._precision = _Precision(precision, members, the_plan, batched, [None] * len(members))
        self._precision.graph, self._precision.version = torch.is_grad_enabled(), precision._version
        self.precision = precision
        self.loc = loc.expand((*batch_shape, n))
        super().__init__(batch_shape, torch.Size([n]), validate_args=validate_args)
        if self._validate_args:
            for index in range(len(members)):
                self._precision.state(index)  # positive definite, or NotPositiveDefiniteError now

    @staticmethod
    def _checked_loc(given: Any, precision: torch.Tensor) -> torch.Tensor:
        loc: torch.Tensor = (
            given
            if isinstance(given, torch.Tensor)
            else torch.as_tensor(given, dtype=precision.dtype, device=precision.device)
        )
        if loc.device != precision.device:
            raise DeviceMismatchError(f"loc is on {loc.device}, the precision on {precision.device}")
        if loc.is_complex():
            raise DtypeMismatchError(f"loc must be real, got {loc.dtype}")
        if not loc.is_floating_point():
            loc = loc.to(precision.dtype)
        if loc.dtype != precision.dtype:
            raise DtypeMismatchError(
                f"loc is {loc.dtype} and the precision {precision.dtype}; convert one (e.g. loc.to(precision.dtype))"
            )
        if loc.dim() == 0:
            raise ShapeError("loc must have at least one dimension (the event dimension n)")
        return loc

    @classmethod
    def from_canonical(
        cls,
        information: torch.Tensor,
        precision: torch.Tensor,
        validate_args: bool | None = None,
        *,
        backend: str | SolverBackend[Any] | None = None,
        method: str | None = None,
        **options: Any,
    ) -> GaussianMarkovRandomField:
        r"""The field in canonical (information) form: ``p(x) ∝ exp(−½ xᵀQx + hᵀx)``, i.e. ``μ = Q⁻¹ h``.

        ``loc`` is solved by :func:`tsgu_core.solve` with the same backend and
        method (differentiable in ``h`` and in the precision's values; one
        more factorization). Parameters as for the constructor, with the
        information vector ``h`` ``(..., n)`` in place of ``loc``.

        Examples
        --------
        >>> import torch
        >>> from tsgu_core.distributions import GaussianMarkovRandomField
        >>> Q = torch.tensor([[2.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)
        >>> h = torch.tensor([1.0, 0.0], dtype=torch.float64)
        >>> field = GaussianMarkovRandomField.from_canonical(h, Q.to_sparse())
        >>> torch.allclose(field.mean, torch.linalg.solve(Q, h))
        True
        """
        check_matrix(precision, "precision", allow_batch=True)
        h = cls._checked_loc(information, precision)
        n = precision.shape[-1]
        if h.shape[-1] != n:
            raise ShapeError(f"h has {h.shape[-1]} entries in its last dimension; the precision is {n} × {n}")
        selection = capability_plan(_members(precision)[0].matrix(), "sampling", backend, method, options).selection
        chosen = backend if backend is not None else selection.backend

        def solved(columns: torch.Tensor) -> torch.Tensor:
            solution: torch.Tensor = solve(precision, columns, backend=chosen, method=selection.method, **options)
            return solution

        if precision.dim() == 2:
            loc = solved(h.reshape(-1, n).T).T.reshape(h.shape)
        else:
            b = precision.shape[0]
            h = h.expand((*torch.broadcast_shapes(h.shape[:-1], (b,)), n))
            columns = h.reshape(-1, b, n).permute(1, 2, 0)  # (b, n, k)
            loc = solved(columns).permute(2, 0, 1).reshape(h.shape)
        return cls(loc, precision, validate_args, backend=backend, method=method, **options)

    def expand(self, batch_shape: Any, _instance: Any = None) -> GaussianMarkovRandomField:
        """The same field over a larger ``batch_shape`` (the factorizations are shared, nothing is recomputed)."""
        new: GaussianMarkovRandomField = self._get_checked_instance(GaussianMarkovRandomField, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new.precision = self.precision
        new._precision = self._precision
        super(GaussianMarkovRandomField, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def mode(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        """``diag(Q⁻¹)`` broadcast to ``batch_shape + (n,)``: exact, by selected inversion on the kept factor."""
        variance = self._precision.diagonal_of_inverse().expand(self.batch_shape + self.event_shape)
        return _refused([m.values for m in self._precision.connected()], variance, _VARIANCE_REFUSED)

    def log_determinant(self) -> torch.Tensor:
        """``log det Q`` of the precision (``()``, or ``(b,)`` for a batch), differentiable in its stored values."""
        return self._precision.log_determinant()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        n = self.event_shape[0]
        r = value - self.loc
        quadratic = self._quadratic(r.expand(torch.broadcast_shapes(r.shape, self.batch_shape + self.event_shape)))
        return -0.5 * (n * _LOG_2PI - self._precision.log_determinant() + quadratic)

    def _quadratic(self, r: torch.Tensor) -> torch.Tensor:
        members = self._precision.connected()
        if not self._precision.batched:
            return members[0].quadratic(r)
        return torch.stack([member.quadratic(r[..., i, :]) for i, member in enumerate(members)], dim=-1)

    def entropy(self) -> torch.Tensor:
        n = self.event_shape[0]
        entropy = 0.5 * (n * (1.0 + _LOG_2PI) - self._precision.log_determinant())
        return entropy.expand(self.batch_shape)

    def rsample(self, sample_shape: Any = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        n = self.event_shape[0]
        Z = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        with torch.no_grad():
            if not self._precision.batched:
                noise = self._precision.sample_columns(0, Z.reshape(-1, n).T.contiguous()).T.reshape(shape)
            else:
                b = len(self._precision.members)
                blocks = Z.reshape(-1, b, n)
                noise = torch.stack(
                    [self._precision.sample_columns(i, blocks[:, i, :].T.contiguous()).T for i in range(b)], dim=1
                ).reshape(shape)
        noise = _refused([m.values for m in self._precision.connected()], noise, _RSAMPLE_REFUSED)
        return self.loc.expand(shape) + noise
