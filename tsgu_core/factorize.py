"""Factorise once, solve many times: :func:`factorize` and its :class:`Factorization` handle."""

from __future__ import annotations

from typing import Any, Literal, overload

import torch

from tsgu_core.errors import InvalidArgumentError, StaleFactorizationError
from tsgu_core.info import SolveInfo
from tsgu_core.pipeline import Plan, as_columns, execute, matrix_values, plan
from tsgu_core.prepared import PreparedSolve
from tsgu_core.protocol import SolverBackend
from tsgu_core.select import Selection
from tsgu_core.validate import check_rhs

__all__ = ["Factorization", "factorize"]


def _raw_parts(A: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors that define ``A`` exactly as stored (uncoalesced COO included)."""
    if A.layout == torch.sparse_coo:
        return A._indices(), A._values()
    return A.crow_indices(), A.col_indices(), A.values()


class Factorization:
    """``A`` prepared once by a backend; each :meth:`solve` reuses it, forward and backward.

    Made by :func:`factorize`. A direct method factorises once; an iterative
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

    def __init__(self, A: torch.Tensor, the_plan: Plan, prepared: PreparedSolve | None):
        self._source = A
        self._snapshot = tuple(part.detach().clone() for part in _raw_parts(A))
        self._plan = the_plan
        self._prepared = prepared
        self.prepare_time = prepared.prepare_time if prepared is not None else 0.0

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
        n = self._source.shape[0]
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
            ``(n,)`` or ``(n, k)``, with ``A``'s dtype and device.
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
        detached, values = matrix_values(self._source)
        check_rhs(B, detached)
        Bk, restore = as_columns(B, 2)
        prepared = self._prepared or (lambda: self._plan.prepare(detached))
        X, info = execute(self._plan, prepared, values, Bk, transpose=transpose, x0=x0)
        return (restore(X), info) if return_info else restore(X)


def factorize(
    A: torch.Tensor,
    *,
    backend: str | SolverBackend | None = None,
    method: str | None = None,
    assume: str = "general",
    on_failure: str = "raise",
    **options: Any,
) -> Factorization:
    r"""Prepare ``A`` once (factorise, convert, precondition) for many differentiable solves.

    ``factorize(A).solve(B)`` equals ``solve(A, B)`` — same selection, options,
    convergence policy and gradients — but the backend's ``prepare`` (a
    factorisation for direct methods) runs once for all solves and their
    backward passes.

    Parameters
    ----------
    A : Tensor
        Sparse COO or CSR, ``(n, n)``. It may require grad: each solve's
        backward adds to ``A.grad``.
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
    detached, _ = matrix_values(A)
    if assume in ("lower", "upper"):
        raise InvalidArgumentError("factorize takes assume='general', 'symmetric', 'hermitian' or 'spd'")
    the_plan = plan(backend, method, detached, options, on_failure=on_failure, assume=assume)
    return Factorization(A, the_plan, the_plan.prepare(detached) if A.shape[0] else None)
