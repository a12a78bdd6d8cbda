"""Factorize once, solve many times: :func:`factorize` and its :class:`Factorization` handle."""

from __future__ import annotations

from typing import Any, Literal, overload

import torch

from tsgu_core.api.determinants import inverse_entries, slogdet_prepared
from tsgu_core.base.quiet import quietly
from tsgu_core.base.transforms import outside_graphs
from tsgu_core.engine.pipeline import Plan, as_columns, execute, matrix_values, plan, split_by_pattern
from tsgu_core.engine.prepared import PreparedSolve
from tsgu_core.engine.request import SolveRequest
from tsgu_core.errors import InvalidArgumentError, StaleFactorizationError, UnknownMethodError
from tsgu_core.plugins.info import SolveInfo
from tsgu_core.plugins.protocol import SolverBackend
from tsgu_core.plugins.select import Selection
from tsgu_core.sparse.batch import MemberGroup, run_by_groups
from tsgu_core.sparse.validate import check_rhs

__all__ = ["Factorization", "factorize"]


def _raw_parts(A: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors that define ``A`` exactly as stored (uncoalesced COO included).

    Read from ``A.detach()``: a check that only compares data creates and frees no autograd node on the leaf
    (threads sharing a handle would otherwise all contend for the leaf's gradient accumulator on every solve).
    """
    A = A.detach()
    if A.layout == torch.sparse_coo:
        return A._indices(), A._values()
    return A.crow_indices(), A.col_indices(), A.values()


class Factorization:
    """``A`` prepared once by a backend; each :meth:`solve` reuses it, forward and backward.

    Made by :func:`factorize`. A direct method factorizes once; an iterative
    method converts ``A`` and builds its preconditioner once. Every
    :meth:`solve` is differentiable with respect to ``B`` and to ``A``'s values
    (exactly as :func:`tsgu_core.solve`), and its backward pass reuses the same
    prepared state. Before every solve the handle checks that ``A`` still holds
    the values and pattern it was prepared with, and raises
    :class:`~tsgu_core.errors.StaleFactorizationError` if not.

    **Threads.** One handle may be shared by any number of threads: their
    solves — plain, transposed and backward passes, gradients of ``A``
    accumulating in ``A.grad`` — give the numbers one thread would. Backends
    change their prepared state inside a solve (PETSc scales its matrix,
    PARDISO switches its handle to transposed solves, cuDSS copies ``B`` into
    one buffer, SuperLU may factorize again), so the backend's ``solve`` runs
    under a lock of this handle, unless the backend declares
    ``thread_safe = True``: the backend's work on one handle takes turns,
    while the checks of ``B`` and of the residual and the gradients run in
    parallel. Different handles never wait for each other: for backend work
    in parallel, give each thread its own ``factorize(A)``. On a CUDA device
    the threads sharing a handle should share a CUDA stream (torch's default
    one does): work queued on different streams is not ordered.

    Attributes
    ----------
    prepare_time : float
        Seconds the backend spent in ``prepare``.
    """

    def __init__(
        self,
        A: torch.Tensor,
        the_plan: Plan,
        prepared: PreparedSolve | None,
        groups: list[tuple[MemberGroup, Plan, PreparedSolve]] | None = None,
    ):
        self._source = A
        self._snapshot = tuple(part.detach().clone() for part in _raw_parts(A))
        self._plan = the_plan
        self._prepared = prepared
        self._groups = groups  # a batch whose members have different patterns: a plan and a state per group
        states = [state for _, _, state in groups] if groups is not None else [prepared]
        self.prepare_time = sum(state.prepare_time for state in states if state is not None)

    @property
    def selection(self) -> Selection:
        """The backend and method, and why."""
        return self._plan.selection

    @property
    def backend(self) -> str:
        return self.selection.backend

    @property
    def method(self) -> str:
        return self.selection.method

    def __repr__(self) -> str:
        n = self._source.shape[-1]
        return f"Factorization(n={n}, backend={self.backend!r}, method={self.method!r})"

    def _check_unchanged(self) -> None:
        current = _raw_parts(self._source)
        same = len(current) == len(self._snapshot) and all(
            now.shape == then.shape and torch.equal(now.detach(), then)
            for now, then in zip(current, self._snapshot, strict=True)
        )
        if not same:
            raise StaleFactorizationError(
                "A changed after factorize(A) (its values or pattern differ from when it was prepared); "
                "the handle would solve with the old A. Call tsgu_core.factorize(A) again."
            )

    @overload
    def solve(
        self,
        B: torch.Tensor,
        *,
        transpose: bool = ...,
        x0: torch.Tensor | None = ...,
        return_info: Literal[False] = ...,
    ) -> torch.Tensor: ...

    @overload
    def solve(
        self,
        B: torch.Tensor,
        *,
        transpose: bool = ...,
        x0: torch.Tensor | None = ...,
        return_info: Literal[True],
    ) -> tuple[torch.Tensor, SolveInfo]: ...

    @outside_graphs
    @quietly
    def solve(
        self,
        B: torch.Tensor,
        *,
        transpose: bool = False,
        x0: torch.Tensor | None = None,
        return_info: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, SolveInfo]:
        """Solve ``A X = B`` (or ``Aᵀ X = B``) with the prepared ``A``.

        Parameters
        ----------
        B : Tensor
            ``(n,)`` or ``(n, k)`` (batched: ``(b, n)`` or ``(b, n, k)``), with ``A``'s dtype and device.
        transpose : bool
            Solve with ``Aᵀ`` instead (gradients are exact either way).
        x0 : Tensor, optional
            Initial guess (iterative methods only), shaped like ``B``.
        return_info : bool
            Also return the :class:`SolveInfo`.

        Raises
        ------
        StaleFactorizationError
            If ``A`` changed since :func:`factorize`.
        """
        self._check_unchanged()
        if not isinstance(transpose, bool):
            raise InvalidArgumentError(f"transpose must be a bool, got {transpose!r}")
        if x0 is not None and self._plan.spec.kind == "direct":
            raise InvalidArgumentError(f"x0 is an option of iterative methods; {self.method!r} is direct")
        if self._groups is not None:
            X, info = self._solve_groups(B, transpose, x0)
            return (X, info) if return_info else X
        detached, values = matrix_values(self._source, allow_batch=True)
        check_rhs(B, detached)
        Bk, restore = as_columns(B, detached.dim())
        prepared = self._prepared or (lambda: self._plan.prepare(detached))
        X, info = execute(self._plan, prepared, values, Bk, transpose=transpose, x0=x0)
        return (restore(X), info) if return_info else restore(X)

    def _determinant_states(self) -> list[tuple[PreparedSolve, torch.Tensor, torch.Tensor | None]]:
        """Each prepared state with its members' values (and their batch positions, for several patterns)."""
        self._check_unchanged()
        plans = [self._plan] if self._groups is None else [group_plan for _, group_plan, _ in self._groups]
        for each in plans:
            if not getattr(each.spec, "selected_inversion", False):
                capable = [
                    name for name, spec in each.backend.methods.items() if getattr(spec, "selected_inversion", False)
                ]
                raise UnknownMethodError(
                    f"backend {each.selection.backend!r}, method {each.selection.method!r} gives no log-determinants "
                    f"or selected inverses; factorize with one that does: {capable or 'none on this backend'} "
                    "(e.g. backend='scipy', method='splu', or method='ldlt' for an SPD A)",
                    method=each.selection.method,
                    valid=capable,
                )
        if self._groups is None:
            _, values = matrix_values(self._source, allow_batch=True)
            if self._prepared is None:  # an empty A
                return []
            return [(self._prepared, values, None)]
        grouped = split_by_pattern(self._source)
        assert grouped is not None  # unchanged since factorize(), checked above
        flat = grouped[1]
        states = {id(group): state for group, _, state in self._groups}
        return [(states[id(group)], group.values_of(flat), group.members) for group, _, _ in self._groups]

    @outside_graphs
    @quietly
    def slogdet(self) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`tsgu_core.slogdet` of ``A`` from this factorization: no second factorization.

        Differentiable in ``A``'s values exactly as :func:`tsgu_core.slogdet`
        (its backward reads the selected inverse from the same factors), so a
        likelihood ``log det A`` plus solves with ``A`` factorizes ``A`` once.
        The method must be declared ``selected_inversion`` (e.g. ``scipy``'s
        ``splu`` or ``ldlt``).

        Raises
        ------
        UnknownMethodError
            The handle's method gives no log-determinants (the message names those that do).
        StaleFactorizationError
            ``A`` changed since :func:`factorize`.

        Examples
        --------
        >>> import torch
        >>> from tsgu_core import factorize
        >>> dense = torch.tensor([[4.0, 1.0], [2.0, 5.0]], dtype=torch.float64)
        >>> A = dense.to_sparse().requires_grad_()
        >>> handle = factorize(A, backend="scipy", method="splu")
        >>> sign, logabsdet = handle.slogdet()
        >>> x = handle.solve(torch.ones(2, dtype=torch.float64))
        >>> (logabsdet + x.sum()).backward()  # both gradients reach A; one factorization
        >>> round(logabsdet.exp().item(), 12)
        18.0
        """
        states = self._determinant_states()
        if not states:
            shape = self._source.shape[:-2]
            _, values = matrix_values(self._source, allow_batch=True)
            return values.new_ones(shape), values.new_zeros(shape) + values.sum(-1) * 0
        if self._groups is None:
            prepared, values, _ = states[0]
            return slogdet_prepared(prepared, values)
        pairs = [slogdet_prepared(prepared, values) for prepared, values, _ in states]
        order = torch.cat([members for _, _, members in states if members is not None])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return torch.cat([s for s, _ in pairs])[inverse], torch.cat([v for _, v in pairs])[inverse]

    @outside_graphs
    @quietly
    def diagonal_of_inverse(self) -> torch.Tensor:
        """:func:`tsgu_core.diagonal_of_inverse` of ``A`` from this factorization (not differentiable in ``A``).

        Examples
        --------
        >>> import torch
        >>> from tsgu_core import factorize
        >>> dense = torch.tensor([[4.0, 1.0], [2.0, 5.0]], dtype=torch.float64)
        >>> handle = factorize(dense.to_sparse(), backend="scipy", method="splu")
        >>> torch.allclose(handle.diagonal_of_inverse(), torch.linalg.inv(dense).diagonal())
        True
        """
        states = self._determinant_states()
        n = self._source.shape[-1]
        if not states:
            return torch.zeros(*self._source.shape[:-2], 0, dtype=self._source.dtype, device=self._source.device)
        index = torch.arange(n, device=self._source.device)
        parts = [inverse_entries(prepared, index, index).reshape(-1, n) for prepared, _, _ in states]
        if self._groups is None:
            return parts[0].reshape(*self._source.shape[:-2], n).detach()
        order = torch.cat([members for _, _, members in states if members is not None])
        out = torch.empty(self._source.shape[0], n, dtype=parts[0].dtype, device=parts[0].device)
        out[order] = torch.cat(parts)
        return out

    def _solve_groups(
        self, B: torch.Tensor, transpose: bool, x0: torch.Tensor | None
    ) -> tuple[torch.Tensor, SolveInfo]:
        """A batch with several patterns: each group's prepared state solves its members."""
        assert self._groups is not None
        grouped = split_by_pattern(self._source)
        assert grouped is not None  # unchanged since factorize(), checked above
        check_rhs(B, self._source)
        states = {id(group): (group_plan, state) for group, group_plan, state in self._groups}

        def run(group: MemberGroup, values: torch.Tensor, rhs: torch.Tensor) -> tuple[torch.Tensor, SolveInfo]:
            Bk, restore = as_columns(rhs, 3)
            group_x0 = x0[group.members] if x0 is not None and x0.dim() > 1 and x0.shape[0] == B.shape[0] else x0
            group_plan, state = states[id(group)]
            X, info = execute(group_plan, state, values, Bk, transpose=transpose, x0=group_x0)
            return restore(X), info

        return run_by_groups([group for group, _, _ in self._groups], grouped[1], B, run)


@outside_graphs
@quietly
def factorize(
    A: torch.Tensor,
    *,
    backend: str | SolverBackend | None = None,
    method: str | None = None,
    assume: str = "general",
    on_failure: str = "raise",
    **options: Any,
) -> Factorization:
    r"""Prepare ``A`` once (factorize, convert, precondition) for many differentiable solves.

    ``factorize(A).solve(B)`` equals ``solve(A, B)`` — same selection, options,
    convergence policy and gradients — but the backend's ``prepare`` (a
    factorization for direct methods) runs once for all solves and their
    backward passes.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR, ``(n, n)``, or a batch ``(b, n, n)`` (members that
        share a pattern are prepared together). It may require grad: each
        solve's backward adds to ``A.grad``.
    backend, method, assume, on_failure, **options
        As for :func:`tsgu_core.solve`, except ``x0``, which belongs to
        :meth:`Factorization.solve`.

    Returns
    -------
    Factorization

    Examples
    --------
    >>> import torch
    >>> from tsgu_core import factorize
    >>> from tsgu_core.testing import DenseBackend, random_nonsymmetric
    >>> A = random_nonsymmetric(5, seed=0).to_sparse_csr().requires_grad_()
    >>> handle = factorize(A, backend="torch", method="gmres", rtol=1e-12)
    >>> xs = [handle.solve(torch.eye(5, dtype=torch.float64)[:, j]) for j in range(5)]
    >>> torch.allclose(torch.stack(xs, 1), torch.linalg.inv(A.detach().to_dense()))
    True
    >>> sum(x.sum() for x in xs).backward()  # every solve's gradient reaches A
    >>> A.grad.layout
    torch.sparse_csr
    """
    if "x0" in options:
        raise InvalidArgumentError(
            "x0 is an initial guess for one solve: pass it to handle.solve(B, x0=...), not factorize()"
        )
    if assume in ("lower", "upper"):
        raise InvalidArgumentError("factorize takes assume='general', 'symmetric', 'hermitian' or 'spd'")
    request = SolveRequest.of(backend, method, assume=assume, on_failure=on_failure, options=options)
    grouped = split_by_pattern(A)  # a batch whose members have different patterns: a plan per group
    if grouped is not None:
        plans = [(g, plan(request, g.A)) for g in grouped[0]]
        return Factorization(A, plans[0][1], None, [(g, p, p.prepare(g.A)) for g, p in plans])
    detached, _ = matrix_values(A, allow_batch=True)
    the_plan = plan(request, detached)
    return Factorization(A, the_plan, the_plan.prepare(detached) if A.shape[-1] else None)
