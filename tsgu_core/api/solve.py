"""The public entry point :func:`solve`."""

from __future__ import annotations

from typing import Any, Literal, overload

import torch

from tsgu_core.base.quiet import quietly
from tsgu_core.base.transforms import is_wrapped, outside_graphs, transformed
from tsgu_core.engine.pipeline import (
    as_columns,
    check_pattern_source,
    execute,
    matrix_values,
    pattern_matrix,
    plan,
    split_by_pattern,
)
from tsgu_core.engine.request import SolveRequest
from tsgu_core.errors import TransformError
from tsgu_core.plugins.info import SolveInfo
from tsgu_core.plugins.protocol import SolverBackend
from tsgu_core.sparse.batch import MemberGroup, run_by_groups
from tsgu_core.sparse.pattern import SparsePattern
from tsgu_core.sparse.validate import check_finite, check_rhs

__all__ = ["solve", "solve_values"]


@overload
def solve(
    A: torch.Tensor,
    B: torch.Tensor,
    *,
    backend: str | SolverBackend | None = ...,
    method: str | None = ...,
    assume: str = ...,
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
    assume: str = ...,
    return_info: Literal[True],
    on_failure: str = ...,
    **options: Any,
) -> tuple[torch.Tensor, SolveInfo]: ...


@outside_graphs
@quietly
def solve(
    A: torch.Tensor,
    B: torch.Tensor,
    *,
    backend: str | SolverBackend | None = None,
    method: str | None = None,
    assume: str = "general",
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
    reuses its factorization) and returned as a sparse gradient in ``A``'s
    layout: memory :math:`O(\mathrm{nnz} + n k)`, never :math:`O(n^2)`.
    For complex dtypes the gradients follow PyTorch's conjugate-Wirtinger
    convention: :math:`G_B = A^{-H} G` and :math:`-\langle (G_B)_{i,:},
    \overline{X_{j,:}} \rangle` (see :mod:`tsgu_core.engine.autograd`).

    Parameters
    ----------
    A : Tensor
        Sparse COO (coalesced or not) or CSR, shape ``(n, n)``, float32,
        float64, complex64 or complex128 (complex only with methods that
        declare it; see :attr:`MethodSpec.complex <tsgu_core.MethodSpec>`),
        int32 or int64 indices.
    B : Tensor
        Dense, shape ``(n,)`` or ``(n, k)``, with ``A``'s dtype and device.
    backend : str or backend object, optional
        A registered backend (see :func:`list_backends`), or a backend object
        to use unregistered. Default: the highest-priority available backend
        for ``A``'s device that offers ``method`` (see :func:`explain`).
    method : str, optional
        A method of that backend. Default: the backend's default, which
        applies to a general nonsymmetric ``A`` — or, with ``assume``, the
        method the backend prefers for that structure.
    assume : {"general", "symmetric", "hermitian", "spd", "lower", "upper"}
        What you know of ``A``. ``"spd"`` (symmetric positive definite) and
        ``"symmetric"`` let the backend choose a method that exploits it
        (e.g. CG or MINRES: ``tsgu explain`` shows the choice); the core
        checks the cheap, exact part of the claim (values symmetric to
        1000·ε, a positive diagonal for ``"spd"``) and raises
        :class:`~tsgu_core.errors.StructureError` for a false one. For a
        complex ``A``, ``"hermitian"`` is ``A = Aᴴ``, ``"spd"`` Hermitian
        positive definite, and ``"symmetric"`` the complex-symmetric
        ``Aᵀ = A`` (never routed to CG or MINRES).
        ``"lower"``/``"upper"`` solve with :func:`~tsgu_core.triangular_solve`.
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
    if isinstance(A, torch.Tensor) and is_wrapped(A):
        raise TransformError(
            "torch.func cannot transform through a sparse A; pass its pattern and values instead: "
            "solve_values(SparsePattern.of(A), values, B) works under torch.func, forward-mode AD and torch.compile"
        )
    request = SolveRequest.of(backend, method, assume=assume, on_failure=on_failure, options=options)
    if isinstance(B, torch.Tensor) and is_wrapped(B) and assume not in ("lower", "upper"):
        return _solve_transformed(A, B, request, return_info)
    if assume in ("lower", "upper"):  # a triangular A: a triangular solve (its structure is checked there)
        from tsgu_core.api.triangular import triangular_solve

        upper = assume == "upper"
        if return_info:
            pair: tuple[torch.Tensor, SolveInfo] = triangular_solve(
                A, B, upper=upper, backend=backend, method=method, return_info=True, **options
            )
            return pair
        X: torch.Tensor = triangular_solve(A, B, upper=upper, backend=backend, method=method, **options)
        return X
    grouped = split_by_pattern(A)  # a batch whose members have different patterns
    if grouped is not None:
        return _solve_groups(A, *grouped, B, request, return_info)
    detached, values = matrix_values(A, allow_batch=True)
    return _solve(detached, values, B, request, return_info)


@overload
def solve_values(
    A: torch.Tensor | SparsePattern,
    values: torch.Tensor,
    B: torch.Tensor,
    *,
    backend: str | SolverBackend | None = ...,
    method: str | None = ...,
    assume: str = ...,
    return_info: Literal[False] = ...,
    on_failure: str = ...,
    **options: Any,
) -> torch.Tensor: ...


@overload
def solve_values(
    A: torch.Tensor | SparsePattern,
    values: torch.Tensor,
    B: torch.Tensor,
    *,
    backend: str | SolverBackend | None = ...,
    method: str | None = ...,
    assume: str = ...,
    return_info: Literal[True],
    on_failure: str = ...,
    **options: Any,
) -> tuple[torch.Tensor, SolveInfo]: ...


@quietly
def solve_values(
    A: torch.Tensor | SparsePattern,
    values: torch.Tensor,
    B: torch.Tensor,
    *,
    backend: str | SolverBackend | None = None,
    method: str | None = None,
    assume: str = "general",
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
    A : SparsePattern or Tensor
        The pattern: a :class:`~tsgu_core.sparse.pattern.SparsePattern`
        (``SparsePattern.of(A)``), or a coalesced COO or CSR ``(n, n)`` tensor
        — or a ``(b, n, n)`` batch sharing one pattern — that must not require
        grad (its values are not used).
    values : Tensor
        Shape ``(nnz,)`` — for a batch ``(b, nnz)`` with ``nnz`` per member, in
        row-major order — with ``A``'s dtype and device.
    B, backend, method, assume, return_info, on_failure, **options
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
    request = SolveRequest.of(backend, method, assume=assume, on_failure=on_failure, options=options)
    if not isinstance(A, SparsePattern):  # the preconditions on A, checked once for every path
        with torch._C._DisableFuncTorch():  # a captured sparse A is read as the plain tensor it is
            check_pattern_source(A)
    if transformed(values, B):  # torch.compile, torch.func, forward mode: the solve as one operator
        from tsgu_core.engine.traced import traced_solve_values  # loads Dynamo's helpers: only when needed

        return traced_solve_values(A, values, B, request, return_info=return_info)
    return _solve_values_eagerly(A, values, B, request, return_info)


@outside_graphs  # reached under torch.compile only with a sparse A, which Dynamo cannot hold
def _solve_values_eagerly(
    A: torch.Tensor | SparsePattern, values: torch.Tensor, B: torch.Tensor, request: SolveRequest, return_info: bool
) -> torch.Tensor | tuple[torch.Tensor, SolveInfo]:
    grouped = split_by_pattern(A, values)  # a batch whose members have different patterns
    if grouped is not None and isinstance(A, torch.Tensor):
        return _solve_groups(A, *grouped, B, request, return_info)
    matrix = pattern_matrix(A, values)
    check_finite(A=values.detach())
    return _solve(matrix, values, B, request, return_info)


def _solve_transformed(A: torch.Tensor, B: torch.Tensor, request: SolveRequest, return_info: bool) -> torch.Tensor:
    """:func:`solve` of a plain sparse ``A`` with a ``B`` seen through ``torch.func``: via the traced operator."""
    from tsgu_core.engine.traced import traced_solve_values

    with torch._C._DisableFuncTorch():  # A is captured, not transformed: read it as the plain tensor it is
        detached, values = matrix_values(A, allow_batch=True)
        pattern = SparsePattern.of(detached)
    return traced_solve_values(pattern, values, B, request, return_info=return_info)


def _solve_groups(
    A: torch.Tensor,
    groups: list[MemberGroup],
    values: torch.Tensor,
    B: torch.Tensor,
    request: SolveRequest,
    return_info: bool,
) -> torch.Tensor | tuple[torch.Tensor, SolveInfo]:
    """A batch ``(b, n, n)`` with several patterns: each group of members sharing one is solved together."""
    check_rhs(B, A)
    x0 = request.x0

    def run(group: MemberGroup, group_values: torch.Tensor, group_B: torch.Tensor) -> tuple[torch.Tensor, SolveInfo]:
        group_request = request
        if isinstance(x0, torch.Tensor) and x0.dim() > 1 and x0.shape[0] == A.shape[0]:
            group_request = request.with_options(x0=x0[group.members])
        matrix = group.with_values(group_values)
        solved = _solve(matrix, group_values, group_B, group_request, True)
        return solved  # type: ignore[return-value]

    X, info = run_by_groups(groups, values, B, run)
    return (X, info) if return_info else X


def _solve(
    A: torch.Tensor, values: torch.Tensor, B: torch.Tensor, request: SolveRequest, return_info: bool
) -> torch.Tensor | tuple[torch.Tensor, SolveInfo]:
    """The shared body of :func:`solve` and :func:`solve_values`.

    ``A`` is detached: 2-D COO/CSR, or a shared-pattern batched CSR with
    ``values`` of shape ``(b, nnz)``.
    """
    check_rhs(B, A)
    the_plan = plan(request, A)
    Bk, restore = as_columns(B, A.dim())
    X, info = execute(the_plan, lambda: the_plan.prepare(A), values, Bk, x0=request.x0)
    return (restore(X), info) if return_info else restore(X)
