r"""Log-determinants and selected inverses of sparse matrices, exact and differentiable.

:func:`slogdet` and :func:`logdet` follow :func:`torch.linalg.slogdet` and
:func:`torch.logdet`; :func:`selected_inverse` and :func:`diagonal_of_inverse`
read entries of ``A⁻¹`` without forming it. All four are served by a backend
that declares the capability
(:class:`~tsgu_core.plugins.protocol.SelectedInversionBackend`): the built-in
``scipy`` backend does it from SuperLU's factors. One rule for every backend:

* forward: ``(sign, log|det A|)`` from the backend's factorization;
* backward: ``∂ log|det A| / ∂A_ij = (A⁻ᵀ)_ij`` at ``A``'s stored entries — the
  selected inverse at the transposed positions, computed once, in the
  backward pass, from the same factorization. Never a dense ``A⁻¹``, never an
  estimate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, overload

import torch

from tsgu_core.api.stochastic import (
    STOCHASTIC,
    Estimate,
    batch_members,
    check_single,
    estimate_selected,
    estimate_slogdet,
    selected_settings,
)
from tsgu_core.base.quiet import quietly
from tsgu_core.base.transforms import outside_graphs
from tsgu_core.engine.pipeline import Plan, matrix_values, plan, split_by_pattern
from tsgu_core.engine.prepared import PreparedSolve
from tsgu_core.engine.request import SolveRequest
from tsgu_core.errors import (
    InvalidArgumentError,
    SecondDerivativeError,
    ShapeError,
    SingularMatrixError,
    UnknownMethodError,
)
from tsgu_core.plugins.protocol import SolverBackend
from tsgu_core.plugins.select import select
from tsgu_core.sparse.batch import MemberGroup, group_by_pattern
from tsgu_core.sparse.pattern import SparsePattern
from tsgu_core.sparse.validate import check_finite, check_matrix

__all__ = [
    "capability_plan",
    "diagonal_of_inverse",
    "inverse_entries",
    "logdet",
    "selected_inverse",
    "slogdet",
    "slogdet_prepared",
]

_CAPABILITY = "selected_inversion"


_GIVES = {"selected_inversion": "log-determinants or selected inverses", "sampling": "Gaussian samples"}


def _plan(A: torch.Tensor, backend: str | SolverBackend[Any] | None, method: str | None, options: Any) -> Plan:
    """The backend and method (one declared ``selected_inversion``) for ``A``, with checked options."""
    return capability_plan(A, _CAPABILITY, backend, method, options)


def capability_plan(
    A: torch.Tensor, capability: str, backend: str | SolverBackend[Any] | None, method: str | None, options: Any
) -> Plan:
    """The backend and method for ``A`` that offer ``capability``, with checked options.

    ``capability="selected_inversion"``: a method declared ``selected_inversion``;
    ``"sampling"``: one declared both ``sampling`` and ``selected_inversion``
    (what :class:`tsgu_core.distributions.GaussianMarkovRandomField` needs). Without
    ``method``, the backend's default method if it offers it, else its first one that does.
    """
    selection = select(backend, A.device.type, method, capability=capability, dtype=A.dtype)
    own = selection.entry.backend
    flags = {capability, _CAPABILITY}
    capable = [name for name, spec in own.methods.items() if all(getattr(spec, flag, False) for flag in flags)]
    chosen = selection.method
    if chosen not in capable:
        if method is not None:
            raise UnknownMethodError(
                f"backend {selection.backend!r}, method {method!r} gives no {_GIVES[capability]}; "
                f"its methods that do: {capable}",
                method=method,
                valid=capable,
            )
        chosen = own.default_method if own.default_method in capable else capable[0]
    request = SolveRequest.of(backend if backend is not None else selection.backend, chosen, options=options)
    return plan(request, A, capability=capability)


def _member_order(groups: list[MemberGroup]) -> torch.Tensor:
    """The index that puts results concatenated group by group back in the batch's member order."""
    order = torch.cat([group.members for group in groups])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    return inverse


def _prepare(the_plan: Plan, A: torch.Tensor) -> PreparedSolve | None:
    """The prepared state of ``A``, or ``None`` when the backend finds ``A`` singular."""
    try:
        return the_plan.prepare(A)
    except SingularMatrixError:
        return None


def _backend_logdet(prepared: PreparedSolve) -> tuple[torch.Tensor, torch.Tensor]:
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = prepared.capability("logdet()", "logdet")
    if prepared.member_states is None:
        return pairs[0]
    return torch.stack([s for s, _ in pairs]), torch.stack([v for _, v in pairs])


def _backend_entries(prepared: PreparedSolve, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    parts = prepared.capability("selected_inverse()", "selected_inverse", rows, cols)
    return parts[0] if prepared.member_states is None else torch.stack(parts)


def slogdet_prepared(prepared: PreparedSolve, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`slogdet` of the ``A`` that ``prepared`` holds, for a front door that keeps one prepared state.

    ``values`` are ``A``'s stored values in ``prepared.pattern``'s order (e.g.
    from :func:`~tsgu_core.engine.pipeline.matrix_values`); the result is
    differentiable in them exactly as :func:`slogdet` is (the backward reads
    the selected inverse from the same state).
    """
    result: tuple[torch.Tensor, torch.Tensor] = _SlogdetFunction.apply(values, prepared)
    return result


def inverse_entries(prepared: PreparedSolve, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``(A⁻¹)[rows, cols]`` from a prepared state of a method declared ``selected_inversion`` (not differentiable)."""
    return _backend_entries(prepared, rows, cols)


class _SlogdetFunction(torch.autograd.Function):
    """``(sign, log|det A|)`` on ``A``'s values; backward ``g·(A⁻ᴴ)`` at the stored entries (selected inversion).

    ``g`` is the upstream gradient of ``logabsdet``; for a complex ``A`` it is
    ``g = ḡ_logabsdet − i·Im(conj(ḡ_sign)·sign)``, which carries the gradient of
    the phase ``sign`` too (as :func:`torch.linalg.slogdet`); for a real ``A``
    ``sign`` is piecewise constant and ``A⁻ᴴ = A⁻ᵀ``.

    ``prepared`` is ``None`` for a singular ``A``: then ``sign = 0``,
    ``logabsdet = −inf`` and the backward raises
    :class:`~tsgu_core.errors.SingularMatrixError` unless the upstream
    gradient is zero (a loss that does not use it, e.g. another batch member's).
    """

    @staticmethod
    def forward(values: torch.Tensor, prepared: PreparedSolve | None) -> tuple[torch.Tensor, torch.Tensor]:
        real = values.dtype.to_real()
        shape = values.shape[:-1]
        if prepared is None:
            return values.new_zeros(shape), torch.full(shape, -torch.inf, dtype=real, device=values.device)
        sign, logabsdet = _backend_logdet(prepared)
        return sign.to(values.dtype), logabsdet.to(real)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
        values, prepared = inputs
        ctx.prepared = prepared
        ctx.set_materialize_grads(False)
        if not values.is_complex():
            ctx.mark_non_differentiable(output[0])
        ctx.sign = output[0].detach()
        ctx.values_shape = values.shape

    @staticmethod
    @quietly
    def backward(ctx: Any, grad_sign: torch.Tensor | None, grad_logabsdet: torch.Tensor | None) -> tuple[Any, None]:
        sign: torch.Tensor = ctx.sign
        g = None if grad_logabsdet is None else grad_logabsdet.to(sign.dtype)
        if grad_sign is not None and sign.is_complex():
            phase = -1j * (grad_sign.conj() * sign).imag
            g = phase if g is None else g + phase
        if g is None or not ctx.needs_input_grad[0]:
            return None, None
        if torch.is_grad_enabled():
            raise SecondDerivativeError(
                "second derivatives of slogdet are not available (they need entries of A⁻¹ outside A's pattern); "
                "call backward() without create_graph=True"
            )
        prepared: PreparedSolve | None = ctx.prepared
        if prepared is None and not bool((g == 0).all()):  # a loss that ignores it: no gradient
            raise SingularMatrixError(
                "A is singular (log|det A| = -inf): the gradient of slogdet, A⁻ᵀ, does not exist; "
                "regularise A (e.g. add a multiple of the identity) or detach it"
            )
        if prepared is None:
            return g.new_zeros(ctx.values_shape), None
        pattern = prepared.pattern
        inverse_transposed = _backend_entries(prepared, pattern.col, pattern.row).to(g.dtype)  # (A⁻ᵀ)_ij
        if inverse_transposed.is_complex():
            inverse_transposed = inverse_transposed.conj()  # (A⁻ᴴ)_ij
        return g.unsqueeze(-1) * inverse_transposed, None


def _slogdet_one(detached: torch.Tensor, values: torch.Tensor, the_plan: Plan) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sign, logabsdet)`` of a 2-D ``A`` or a shared-pattern batch, singular members included."""
    if detached.shape[-1] == 0:
        shape = values.shape[:-1]
        return values.new_ones(shape), values.new_zeros(shape) + values.sum(-1) * 0
    prepared = _prepare(the_plan, detached)
    if prepared is not None or detached.dim() == 2:
        result: tuple[torch.Tensor, torch.Tensor] = _SlogdetFunction.apply(values, prepared)
        return result
    # a batch with a singular member: member by member, so the others keep their values and gradients
    pattern = SparsePattern.of(detached)
    pairs = [_slogdet_one(pattern.to_csr(member.detach()), member, the_plan) for member in values.unbind(0)]
    return torch.stack([s for s, _ in pairs]), torch.stack([v for _, v in pairs])


@outside_graphs
@quietly
def slogdet(
    A: torch.Tensor,
    *,
    backend: str | SolverBackend[Any] | None = None,
    method: str | None = None,
    **options: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Sign and log-absolute-determinant of a sparse ``A``, exact and differentiable.

    As :func:`torch.linalg.slogdet`: ``det A = sign · exp(logabsdet)``. From
    the backend's factorization ``Pr A Pc = L U``:
    ``logabsdet = Σ_k log|U_kk|`` (summed, so it stays finite and right where
    ``det A`` over- or underflows) and ``sign`` from the permutations' parities
    and the pivots' signs.

    The gradient with respect to ``A``'s stored values is

    .. math:: \frac{\partial \log|\det A|}{\partial A_{ij}} = (A^{-\mathsf T})_{ij}
              \quad\text{at every stored } (i, j),

    computed in the backward pass by selected inversion (Takahashi's
    recurrences) on the same factorization: exact to rounding, ``O(nnz(L))``
    memory, never a dense ``A⁻¹``. It arrives in ``A``'s layout. For a real
    ``A``, ``sign`` has no gradient (it is piecewise constant); for a complex
    ``A`` it is the phase ``det A / |det A|`` and, as in torch, the gradient is
    ``(ḡ_logabsdet − i·Im(conj(ḡ_sign)·sign))·(A⁻ᴴ)_ij``.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR, float32/float64 or complex64/complex128, ``(n, n)``
        or a batch ``(b, n, n)`` (members may have different patterns). May
        require grad.
    backend : str or backend object, optional
        A backend declaring the capability (default: the highest-priority
        available one, e.g. ``"scipy"`` on the CPU).
    method : str, optional
        One of its methods declared ``selected_inversion`` (default: its
        default method if it is one, e.g. ``"splu"``). Or ``"stochastic"``:
        an **estimate**, for a symmetric positive definite ``A`` only, through
        any backend (see below).
    **options
        The method's options (e.g. ``permc_spec="COLAMD"`` for ``splu``).
        With ``method="stochastic"``: ``probes`` (default 64), ``seed`` or
        ``generator`` (a :class:`torch.Generator`), ``max_lanczos_steps``
        (default 1000), ``solver`` (the backend's method for the gradient's
        solves; default: what it chooses for an SPD ``A``), ``sketch`` or
        ``control_variate`` (variance reduction of the gradient, as for
        :func:`selected_inverse`), and the solver's own options (e.g. ``rtol``).

    Returns
    -------
    sign, logabsdet : Tensor
        Shapes ``()`` (``(b,)`` for a batch); ``sign`` in ``A``'s dtype,
        ``logabsdet`` real. A singular ``A`` gives ``sign = 0`` and
        ``logabsdet = -inf``, as torch does. With ``method="stochastic"`` a
        :class:`~tsgu_core.SlogdetEstimate`: the same pair (it unpacks as
        ``sign, logabsdet``) with ``.standard_error`` of ``logabsdet``.

    Notes
    -----
    ``method="stochastic"`` (:mod:`tsgu_core.api.stochastic`) estimates
    ``log det A = E[zᵀ log(A) z]`` over Rademacher probes ``z`` by stochastic
    Lanczos quadrature (products with ``A`` only, on ``A``'s device), and the
    gradient ``(A⁻¹)_ij`` by Hutchinson's estimator with one multi-column
    solve through ``backend`` in the backward pass. Both are unbiased
    estimates, not exact values: the error is random, of the size of
    ``standard_error`` (and ``∝ 1/√probes``). Asked for by name only; every
    other ``method`` is exact.

    Raises
    ------
    NonFiniteError
        ``A`` holds NaN or infinity.
    SingularMatrixError
        In the backward pass, for a singular ``A`` (the gradient ``A⁻ᵀ`` does not exist).
    SecondDerivativeError
        In a backward pass with ``create_graph=True``.
    UnsupportedDeviceError
        The backend named cannot give determinants (the message names those that can).
    StructureError
        ``method="stochastic"`` for an ``A`` that is not symmetric positive definite.
    InvalidOptionError, UnknownOptionError
        A bad or unknown option of ``method="stochastic"`` or of its solver.

    Examples
    --------
    >>> import torch
    >>> from tsgu_core import slogdet
    >>> dense = torch.tensor([[0.0, 2.0, 0.0], [3.0, 1.0, 0.0], [0.0, 1.0, 4.0]], dtype=torch.float64)
    >>> A = dense.to_sparse_csr().requires_grad_()
    >>> sign, logabsdet = slogdet(A)
    >>> sign.item(), round(logabsdet.exp().item(), 10)  # det = -24
    (-1.0, 24.0)
    >>> logabsdet.backward()
    >>> torch.allclose(A.grad.to_dense(), torch.linalg.inv(dense).T * (dense != 0))
    True

    An estimate for an SPD ``A``, with its standard error:

    >>> from tsgu_core.testing import poisson_2d
    >>> P = poisson_2d(10)  # n = 100
    >>> estimate = slogdet(P, method="stochastic", probes=64, seed=0)
    >>> exact = torch.linalg.slogdet(P.to_dense()).logabsdet
    >>> bool(abs(estimate.logabsdet - exact) < 4 * estimate.standard_error)
    True
    """
    if method == STOCHASTIC:
        return estimate_slogdet(A, backend, options)
    grouped = split_by_pattern(A)
    if grouped is not None:
        groups, flat = grouped
        pairs = [
            _slogdet_one(group.with_values(values), values, _plan(group.A, backend, method, options))
            for group in groups
            for values in [group.values_of(flat)]
        ]
        inverse = _member_order(groups)
        return torch.cat([s for s, _ in pairs])[inverse], torch.cat([v for _, v in pairs])[inverse]
    detached, values = matrix_values(A, allow_batch=True)
    return _slogdet_one(detached, values, _plan(detached, backend, method, options))


@overload
def logdet(
    A: torch.Tensor,
    *,
    backend: str | SolverBackend[Any] | None = ...,
    method: Literal["stochastic"],
    **options: Any,
) -> Estimate: ...


@overload
def logdet(
    A: torch.Tensor,
    *,
    backend: str | SolverBackend[Any] | None = ...,
    method: str | None = ...,
    **options: Any,
) -> torch.Tensor: ...


def logdet(
    A: torch.Tensor,
    *,
    backend: str | SolverBackend[Any] | None = None,
    method: str | None = None,
    **options: Any,
) -> torch.Tensor | Estimate:
    """``log det A`` of a sparse ``A``, as :func:`torch.logdet`: ``nan`` for a negative determinant, ``-inf`` for 0.

    Differentiable as :func:`slogdet` (a negative determinant's ``nan`` gets a
    zero gradient, as torch gives it). Parameters as for :func:`slogdet`;
    ``method="stochastic"`` returns an :class:`~tsgu_core.Estimate`
    ``(value, standard_error)`` (``A`` symmetric positive definite).

    Examples
    --------
    >>> import torch
    >>> from tsgu_core import logdet
    >>> A = torch.tensor([[2.0, 1.0], [0.0, 3.0]], dtype=torch.float64).to_sparse()
    >>> round(logdet(A).exp().item(), 12)
    6.0
    """
    if method == STOCHASTIC:
        estimate = estimate_slogdet(A, backend, options)
        return Estimate(estimate.logabsdet, estimate.standard_error)
    sign, logabsdet = slogdet(A, backend=backend, method=method, **options)
    if sign.is_complex():
        return torch.log(sign) + logabsdet
    return torch.where(sign < 0, torch.full_like(logabsdet, torch.nan), logabsdet)


class _NoGradient(torch.autograd.Function):
    """Passes entries of ``A⁻¹`` through; refuses a gradient with respect to ``A`` instead of dropping it."""

    @staticmethod
    def forward(values: torch.Tensor, entries: torch.Tensor) -> torch.Tensor:
        return entries

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None]:
        raise InvalidArgumentError(
            "selected_inverse and diagonal_of_inverse are not differentiable with respect to A (the derivative "
            "needs entries of A⁻¹ outside the pattern); compute them under torch.no_grad() or from A.detach(), "
            "or differentiate slogdet instead"
        )


def _connected(values: torch.Tensor, entries: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and values.requires_grad:
        result: torch.Tensor = _NoGradient.apply(values, entries)
        return result
    return entries


def _entries(
    A: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, backend: Any, method: Any, options: Any
) -> torch.Tensor:
    """``(A⁻¹)[rows, cols]`` for a 2-D ``A`` (``(m,)``) or for every member of a batch (``(b, m)``)."""
    detached, values = matrix_values(A, allow_batch=True)
    if detached.shape[-1] == 0 or rows.numel() == 0:
        return values.new_zeros(*values.shape[:-1], rows.numel())
    prepared = _prepare(_plan(detached, backend, method, options), detached)
    if prepared is None:
        raise SingularMatrixError("A is singular: A⁻¹ does not exist; regularise A (e.g. add a multiple of I)")
    return _connected(values, _backend_entries(prepared, rows, cols).to(values.dtype))


@overload
def selected_inverse(
    A: torch.Tensor,
    pattern: SparsePattern | None = ...,
    *,
    backend: str | SolverBackend[Any] | None = ...,
    method: Literal["stochastic"],
    **options: Any,
) -> Estimate: ...


@overload
def selected_inverse(
    A: torch.Tensor,
    pattern: SparsePattern | None = ...,
    *,
    backend: str | SolverBackend[Any] | None = ...,
    method: str | None = ...,
    **options: Any,
) -> torch.Tensor: ...


@outside_graphs
@quietly
def selected_inverse(
    A: torch.Tensor,
    pattern: SparsePattern | None = None,
    *,
    backend: str | SolverBackend[Any] | None = None,
    method: str | None = None,
    **options: Any,
) -> torch.Tensor | Estimate:
    """Entries of ``A⁻¹`` on ``A``'s own pattern (or on ``pattern``), as a sparse tensor in ``A``'s layout.

    Computed by selected inversion on the backend's factorization (for the
    ``scipy`` backend: Takahashi's recurrences on SuperLU's ``L`` and ``U``):
    every entry returned is exact to rounding, and only the entries of ``A⁻¹``
    on the factor's (symmetrized) pattern, plus those asked for, are ever
    computed — ``O(nnz(L))`` memory, about the work of the factorization,
    never a dense ``A⁻¹``.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR (real or complex), ``(n, n)``; or a batch
        ``(b, n, n)`` when ``pattern`` is not given.
    pattern : SparsePattern, optional
        The positions wanted (default: ``A``'s stored entries).
    backend, method, **options
        As for :func:`slogdet`. ``method="stochastic"`` estimates instead, for
        any square ``A`` (one matrix here; :func:`diagonal_of_inverse` also
        takes a batch) and any backend: ``(A⁻¹)_ij ≈ mean_k
        (A⁻¹z_k)_i (z_k)_j`` over Rademacher probes ``z_k``, all solved in one
        multi-column :func:`~tsgu_core.solve` through ``backend`` (its method
        ``solver=``, default its default; ``assume=`` and the solver's options
        pass on). Also ``probes`` (default 64), ``seed`` or ``generator``, and
        ``sketch`` (Hutch++-style deflation: that many extra probes span
        ``A⁻¹``'s dominant range, which is then computed exactly, at the cost of
        ``sketch`` more solves and ``sketch`` solves with ``Aᵀ``; default 0) or
        ``control_variate=True`` (subtract the two-term Neumann series of
        ``A⁻¹`` in ``A``'s diagonal, known exactly; default False).

    Returns
    -------
    Tensor
        ``A``'s layout, ``(A⁻¹)_ij`` at each position (``A``'s indices, or
        ``pattern``'s). Not differentiable with respect to ``A``: a backward
        pass through it raises :class:`~tsgu_core.errors.InvalidArgumentError`.
        With ``method="stochastic"`` an :class:`~tsgu_core.Estimate`
        ``(value, standard_error)`` of two such tensors, the standard error
        of each entry estimated from the per-probe samples.

    Raises
    ------
    SingularMatrixError
        ``A`` is singular.

    Examples
    --------
    >>> import torch
    >>> from tsgu_core import selected_inverse
    >>> dense = torch.tensor([[4.0, 1.0, 0.0], [2.0, 5.0, 1.0], [0.0, 3.0, 6.0]], dtype=torch.float64)
    >>> Z = selected_inverse(dense.to_sparse_csr())
    >>> torch.allclose(Z.to_dense(), torch.linalg.inv(dense) * (dense != 0))
    True
    """
    check_matrix(A, allow_batch=pattern is None)
    if pattern is not None:
        if not isinstance(pattern, SparsePattern):
            raise InvalidArgumentError(f"pattern must be a tsgu_core.SparsePattern, got {type(pattern).__name__}")
        if pattern.n != A.shape[-1] or pattern.rows != A.shape[-2]:
            raise ShapeError(f"pattern is {pattern.rows} × {pattern.n}, A is {tuple(A.shape)}")
        rows, cols = pattern.row.to(A.device), pattern.col.to(A.device)
        build = _on_pattern(pattern, rows, cols, A)
    elif A.dim() == 3 and method != STOCHASTIC:
        return _batch_selected_inverse(A, backend, method, options)
    else:
        if A.layout == torch.sparse_coo and not A.is_coalesced():
            A = A.coalesce()
        own = SparsePattern.of(A.detach())
        rows, cols = own.row, own.col
        build = _in_layout_of(A)
    if method == STOCHASTIC:
        value, error = _estimated(A, rows, cols, backend, options)
        return Estimate(build(value), build(error))
    return build(_entries(A, rows, cols, backend, method, options))


def _on_pattern(
    pattern: SparsePattern, rows: torch.Tensor, cols: torch.Tensor, A: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A sparse tensor with the entries given at ``pattern``'s positions: CSR for a CSR ``A`` and pattern, else COO."""
    if A.layout == torch.sparse_csr and pattern.crow is not None:
        return lambda entries: pattern.to_csr(entries)
    return lambda entries: torch.sparse_coo_tensor(torch.stack([rows, cols]), entries, A.shape)


def _in_layout_of(A: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A sparse tensor with ``A``'s (coalesced) indices and the given entries."""
    if A.layout == torch.sparse_csr:
        return lambda entries: torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), entries, A.shape)
    return lambda entries: torch.sparse_coo_tensor(A._indices(), entries, A.shape, is_coalesced=True)


def _estimated(
    A: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, backend: Any, options: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``method="stochastic"``: estimates of ``(A⁻¹)[rows, cols]`` (no gradient in ``A``) and standard errors."""
    check_single(A)
    detached, values = matrix_values(A)
    value, error = estimate_selected(detached, rows, cols, selected_settings(detached, backend, options))
    return _connected(values, value), error


def _batch_selected_inverse(A: torch.Tensor, backend: Any, method: Any, options: Any) -> torch.Tensor:
    """:func:`selected_inverse` of a batch: group by pattern, each group's members on their own entries."""
    if A.layout == torch.sparse_coo and not A.is_coalesced():
        A = A.coalesce()
    flat = (A.values() if A.layout == torch.sparse_csr else A._values()).reshape(-1)
    check_finite(A=flat.detach())
    out = flat.detach().new_empty(flat.shape)
    for group in group_by_pattern(A):
        own = SparsePattern.of(group.A)
        out[group.value_index.reshape(-1)] = _entries(group.A, own.row, own.col, backend, method, options).reshape(-1)
    entries = _connected(flat, out)
    if A.layout == torch.sparse_csr:
        return torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), entries.reshape(A.values().shape), A.shape)
    return torch.sparse_coo_tensor(A._indices(), entries, A.shape, is_coalesced=True)


@overload
def diagonal_of_inverse(
    A: torch.Tensor,
    *,
    backend: str | SolverBackend[Any] | None = ...,
    method: Literal["stochastic"],
    **options: Any,
) -> Estimate: ...


@overload
def diagonal_of_inverse(
    A: torch.Tensor,
    *,
    backend: str | SolverBackend[Any] | None = ...,
    method: str | None = ...,
    **options: Any,
) -> torch.Tensor: ...


@outside_graphs
@quietly
def diagonal_of_inverse(
    A: torch.Tensor,
    *,
    backend: str | SolverBackend[Any] | None = None,
    method: str | None = None,
    **options: Any,
) -> torch.Tensor | Estimate:
    """The diagonal of ``A⁻¹``, dense ``(n,)`` (``(b, n)`` for a batch), by selected inversion.

    E.g. the marginal variances of a Gaussian with sparse precision ``A``.
    Exact to rounding; costs about one factorization (see :func:`selected_inverse`).
    Not differentiable with respect to ``A`` (a backward pass raises
    :class:`~tsgu_core.errors.InvalidArgumentError`).

    ``method="stochastic"`` (options as for :func:`selected_inverse`) returns
    an :class:`~tsgu_core.Estimate` ``(value, standard_error)``, both ``(n,)``:
    Hutchinson's ``diag(A⁻¹) ≈ mean_k z_k ⊙ (A⁻¹z_k)`` through any backend's
    solves — an unbiased estimate, never exact.

    Examples
    --------
    >>> import torch
    >>> from tsgu_core import diagonal_of_inverse
    >>> dense = torch.tensor([[4.0, 1.0], [2.0, 5.0]], dtype=torch.float64)
    >>> torch.allclose(diagonal_of_inverse(dense.to_sparse()), torch.linalg.inv(dense).diagonal())
    True
    >>> value, error = diagonal_of_inverse(dense.to_sparse(), method="stochastic", backend="torch", seed=0)
    >>> bool(((value - torch.linalg.inv(dense).diagonal()).abs() < 4 * error).all())
    True
    """
    check_matrix(A, allow_batch=True)
    n = A.shape[-1]
    index = torch.arange(n, device=A.device)
    if method == STOCHASTIC and A.dim() == 3:  # member by member
        members, connected = batch_members(A)
        settings = selected_settings(members[0][0], backend, options) if members else None  # one generator
        estimates = [estimate_selected(member, index, index, settings) for member, _ in members if settings]
        value = torch.stack([v for v, _ in estimates]) if estimates else connected.detach().new_zeros(0, n)
        error = torch.stack([e for _, e in estimates]) if estimates else value.real
        return Estimate(_connected(connected, value), error)
    if method == STOCHASTIC:
        return Estimate(*_estimated(A, index, index, backend, options))
    if A.dim() == 2:
        return _entries(A, index, index, backend, method, options)
    grouped = split_by_pattern(A)
    if grouped is None:
        return _entries(A, index, index, backend, method, options)
    groups, flat = grouped
    parts = [_entries(group.A, index, index, backend, method, options) for group in groups]
    return _connected(flat, torch.cat(parts)[_member_order(groups)].detach())
