"""Factorize once, solve many times: :func:`factorize` and its :class:`Factorization` handle."""

from __future__ import annotations

from typing import Any, Literal, overload

import torch

from tsgu_core.sparse.batch import MemberGroup, run_by_groups
from tsgu_core.errors import InvalidArgumentError, StaleFactorizationError
from tsgu_core.plugins.info import SolveInfo
from tsgu_core.engine.pipeline import Plan, as_columns, execute, matrix_values, plan, split_by_pattern
from tsgu_core.engine.prepared import PreparedSolve
from tsgu_core.engine.request import SolveRequest
from tsgu_core.plugins.protocol import SolverBackend
from tsgu_core.base.quiet import quietly
from tsgu_core.plugins.select import Selection
from tsgu_core.base.transforms import outside_graphs
from tsgu_core.sparse.validate import check_rhs

__all__ = ["Factorization", "factorize"]


def _raw_parts(A: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors that define ``A`` exactly as stored (uncoalesced COO included)."""
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
