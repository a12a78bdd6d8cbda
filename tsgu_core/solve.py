"""The public entry point :func:`solve`."""

from __future__ import annotations

from typing import Any, Literal, overload

import torch

from tsgu_core.autograd import InfoSink, PreparedSolve, SparseSolveFunction, SparseValues
from tsgu_core.batch import MemberGroup, group_by_pattern, run_by_groups
from tsgu_core.info import SolveInfo
from tsgu_core.protocol import SolverBackend
from tsgu_core.select import select
from tsgu_core.validate import (
    check_finite,
    check_matrix,
    check_on_failure,
    check_rhs,
    check_values,
    check_x0,
    resolve_method_options,
)

__all__ = ["solve", "solve_values"]


@overload
def solve(
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
def solve(
    A: torch.Tensor,
    B: torch.Tensor,
    *,
    backend: str | SolverBackend | None = ...,
    method: str | None = ...,
    return_info: Literal[True],
    on_failure: str = ...,
    **options: Any,
) -> tuple[torch.Tensor, SolveInfo]: ...


def solve(
    A: torch.Tensor,
    B: torch.Tensor,
    *,
    backend: str | SolverBackend | None = None,
    method: str | None = None,
    return_info: bool = False,
    on_failure: str = "raise",
    **options: Any,
) -> torch.Tensor | tuple[torch.Tensor, SolveInfo]:
    r"""Solve the sparse system :math:`A X = B`, differentiably in ``A`` and ``B``.

    For an upstream gradient :math:`G = \partial L / \partial X`,

    .. math::

        \frac{\partial L}{\partial B} = A^{-\top} G =: G_B, \qquad
        \frac{\partial L}{\partial A_{ij}} = -\langle (G_B)_{i,:},\, X_{j,:} \rangle
        \quad \text{for every stored } (i, j),

    computed with one transpose solve of the same backend (a direct method
    reuses its factorisation) and returned as a sparse gradient in ``A``'s
    layout: memory :math:`O(\mathrm{nnz} + n k)`, never :math:`O(n^2)`.

    Parameters
    ----------
    A : Tensor
        Sparse COO (coalesced or not) or CSR, shape ``(n, n)``, float32 or
        float64, int32 or int64 indices.
    B : Tensor
        Dense, shape ``(n,)`` or ``(n, k)``, with ``A``'s dtype and device.
    backend : str or backend object, optional
        A registered backend (see :func:`list_backends`), or a backend object
        to use unregistered. Default: the highest-priority available backend
        for ``A``'s device that offers ``method`` (see :func:`explain`).
    method : str, optional
        A method of that backend. Default: the backend's default, which is
        correct for a general nonsymmetric ``A``.
    return_info : bool
        Also return the :class:`SolveInfo` of the forward solve (its
        ``backward`` attribute is filled in when the backward pass runs).
    on_failure : {"raise", "warn", "ignore"}
        What to do when an iterative solve (forward or backward) misses its
        tolerance by the true residual: raise
        :class:`~tsgu_core.errors.ConvergenceError`, warn with
        :class:`~tsgu_core.errors.ConvergenceWarning`, or return silently.
    **options
        Method options. Iterative methods take ``rtol`` (default 1e-5 for
        float32, 1e-8 for float64), ``atol`` (0), ``maxiter`` (10·n) and
        ``x0``, plus what the method declares (``tsgu info`` lists them).
        An option the method does not accept raises
        :class:`~tsgu_core.errors.UnknownOptionError`.

    Returns
    -------
    X : Tensor
        Shaped like ``B``. With ``return_info=True``, ``(X, info)``.

    Raises
    ------
    LayoutError, ShapeError, DtypeMismatchError, DeviceMismatchError, NonFiniteError
        Bad inputs, detected before any backend work.
    UnknownBackendError, UnknownMethodError, UnknownOptionError, BackendUnavailableError
        A backend, method or option that cannot be used; the message lists
        the valid choices or the install command.
    ConvergenceError
        An iterative solve missed its tolerance (``on_failure="raise"``).
    SingularMatrixError
        A direct method found ``A`` singular.

    Examples
    --------
    >>> import torch
    >>> from tsgu_core import solve
    >>> A = torch.tensor([[4.0, 1.0, 0.0], [2.0, 5.0, 1.0], [0.0, 1.0, 3.0]], dtype=torch.float64)
    >>> A = A.to_sparse_csr().requires_grad_()
    >>> b = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    >>> x = solve(A, b, backend="torch", method="gmres", rtol=1e-12)
    >>> torch.allclose(x, torch.linalg.solve(A.detach().to_dense(), b.detach()))
    True
    >>> x.sum().backward()
    >>> A.grad.layout, A.grad.values().shape
    (torch.sparse_csr, torch.Size([7]))
    """
    check_matrix(A, allow_batch=True)
    if A.layout == torch.sparse_coo and not A.is_coalesced():
        A = A.coalesce()  # differentiable; duplicates are summed, as in A's meaning
    values = SparseValues.apply(A) if A.requires_grad else A.detach().values()
    if A.dim() == 3:
        return _solve_batch(A, values, B, backend, method, return_info, on_failure, options)
    return _solve(A.detach(), values, B, backend, method, return_info, on_failure, options)


@overload
def solve_values(
    A: torch.Tensor,
    values: torch.Tensor,
    B: torch.Tensor,
    *,
    backend: str | SolverBackend | None = ...,
    method: str | None = ...,
    return_info: Literal[False] = ...,
    on_failure: str = ...,
    **options: Any,
) -> torch.Tensor: ...


@overload
def solve_values(
    A: torch.Tensor,
    values: torch.Tensor,
    B: torch.Tensor,
    *,
    backend: str | SolverBackend | None = ...,
    method: str | None = ...,
    return_info: Literal[True],
    on_failure: str = ...,
    **options: Any,
) -> tuple[torch.Tensor, SolveInfo]: ...


def solve_values(
    A: torch.Tensor,
    values: torch.Tensor,
    B: torch.Tensor,
    *,
    backend: str | SolverBackend | None = None,
    method: str | None = None,
    return_info: bool = False,
    on_failure: str = "raise",
    **options: Any,
) -> torch.Tensor | tuple[torch.Tensor, SolveInfo]:
    r"""Solve :math:`A X = B` where ``A``'s pattern and its values come separately.

    Same as :func:`solve`, but the values of ``A`` are the dense 1-D tensor
    ``values`` (in the order of ``A.values()``) and ``A`` only supplies the
    sparsity pattern. Gradients flow to ``values`` as a dense tensor, so
    derivatives of any order are exact (torch's sparse constructors lose
    second derivatives; :func:`solve` raises
    :class:`~tsgu_core.errors.SecondDerivativeError` there).

    Parameters
    ----------
    A : Tensor
        Coalesced COO or CSR ``(n, n)``, or a ``(b, n, n)`` batch (members
        may have different patterns); must not require grad (its values are
        not used).
    values : Tensor
        Shaped like ``A.values()`` and in its order — ``(nnz,)``; for a
        batched CSR ``(b, nnz)``; for a batched COO ``(total nnz,)``, or
        ``(b, nnz)`` when all members store ``nnz`` entries — with ``A``'s
        dtype and device.
    B, backend, method, return_info, on_failure, **options
        As for :func:`solve`.

    Examples
    --------
    >>> import torch
    >>> from tsgu_core import solve_values
    >>> A = torch.tensor([[2.0, 1.0], [0.0, 4.0]], dtype=torch.float64).to_sparse_csr()
    >>> v = A.values().clone().requires_grad_()
    >>> b = torch.ones(2, dtype=torch.float64)
    >>> (g,) = torch.autograd.grad(solve_values(A, v, b, backend="torch").sum(), v, create_graph=True)
    >>> g.requires_grad  # differentiable again
    True
    """
    check_matrix(A, allow_batch=True)
    if A.requires_grad:
        raise ValueError("A must not require grad in solve_values: its values are not used; detach it")
    if A.layout == torch.sparse_coo and not A.is_coalesced():
        raise ValueError("solve_values needs a coalesced COO A (values follow its order): use A.coalesce()")
    if A.dim() == 3:
        if A.layout == torch.sparse_coo and values.dim() == 2 and values.numel() == A._nnz():
            values = values.reshape(-1)  # (b, nnz) of a shared pattern, as before, is the same order
        check_values(values, A)
        return _solve_batch(A, values, B, backend, method, return_info, on_failure, options)
    check_values(values, A)
    if A.layout == torch.sparse_coo:
        A = torch.sparse_coo_tensor(A._indices(), values.detach(), A.shape, is_coalesced=True, check_invariants=False)
    else:
        A = torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), values.detach(), A.shape, check_invariants=False)
    return _solve(A, values, B, backend, method, return_info, on_failure, options)


def _solve_batch(
    A: torch.Tensor,
    values: torch.Tensor,
    B: torch.Tensor,
    backend: str | SolverBackend | None,
    method: str | None,
    return_info: bool,
    on_failure: str,
    options: dict[str, Any],
) -> torch.Tensor | tuple[torch.Tensor, SolveInfo]:
    """A batch ``(b, n, n)``: members that share a pattern are solved together, groups one after another."""
    check_rhs(B, A)
    groups = group_by_pattern(A)
    x0 = options.get("x0")

    def run(group: MemberGroup, group_values: torch.Tensor, group_B: torch.Tensor) -> tuple[torch.Tensor, SolveInfo]:
        group_options = options
        if len(groups) > 1 and isinstance(x0, torch.Tensor) and x0.dim() > 1 and x0.shape[0] == A.shape[0]:
            group_options = {**options, "x0": x0[group.members]}
        return _solve(
            group.with_values(group_values), group_values, group_B, backend, method, True, on_failure, group_options
        )  # type: ignore[return-value]

    X, info = run_by_groups(groups, values, B, run)
    return (X, info) if return_info else X


def _solve(
    A: torch.Tensor,
    values: torch.Tensor,
    B: torch.Tensor,
    backend: str | SolverBackend | None,
    method: str | None,
    return_info: bool,
    on_failure: str,
    options: dict[str, Any],
) -> torch.Tensor | tuple[torch.Tensor, SolveInfo]:
    """The shared body of :func:`solve` and :func:`solve_values`.

    ``A`` is detached: 2-D COO/CSR, or a shared-pattern batched CSR with
    ``values`` of shape ``(b, nnz)``.
    """
    check_rhs(B, A)
    check_on_failure(on_failure)
    selection = select(backend, A.device.type, method)
    chosen = selection.entry.backend
    spec = chosen.methods[selection.method]
    Bk = B if B.dim() == A.dim() else B.unsqueeze(-1)  # (n, k) or (b, n, k)
    solve_options = resolve_method_options(spec, chosen.name, options, A.shape[-1], A.dtype)
    x0 = None if options.get("x0") is None else check_x0(options["x0"], Bk)
    check_finite(A=values.detach(), B=B.detach())

    if Bk.numel() == 0:
        X = Bk * 0 + values.sum() * 0  # empty, but connected to A and B for autograd
        batch = A.shape[0] if A.dim() == 3 else None
        info = SolveInfo(chosen.name, spec.name, spec.kind, False, None, (), None, True, 0.0, batch=batch)
    else:
        prepared = PreparedSolve.of(chosen, spec, A, solve_options, on_failure)
        sink = InfoSink()
        X = SparseSolveFunction.apply(values, Bk, prepared, False, x0, sink)
        assert sink.info is not None
        info = sink.info
    X = X if B.dim() == A.dim() else X.squeeze(-1)
    return (X, info) if return_info else X
