"""THE differentiable sparse solve: one ``torch.autograd.Function`` for every backend.

For ``op(A) X = B`` with ``op(A) = A`` or ``Aᵀ`` (the plain transpose, also
for complex ``A``) and upstream gradient ``G = ∂L/∂X``:

* ``∂L/∂B = S`` with ``op(A)ᴴ S = G`` — one solve with the *other* transpose
  flag, asked of the same backend state (a direct backend reuses its
  factorization): ``S = conj(op(A)⁻ᵀ conj(G))`` (:func:`adjoint_solve`;
  for real dtypes the conjugations do nothing and ``S = op(A)⁻ᵀ G``);
* ``∂L/∂A`` at a stored entry ``(i, j)`` (:func:`values_gradient`):
  ``−Σ_c S_ic conj(X_jc)`` (``−S Xᴴ``) when ``op(A) = A`` and
  ``−Σ_c conj(X_ic) S_jc`` (``−(S Xᴴ)ᵀ = −conj(X) Sᵀ``) when ``op(A) = Aᵀ``.

Complex dtypes follow PyTorch's convention (the gradient of a real loss is
the conjugate Wirtinger derivative ``∂L/∂conj(z)``, up to the factor 2
torch leaves out), as ``torch.linalg.solve`` does. Derivation: ``X = M⁻¹B``
with ``M = op(A)`` gives ``dX = M⁻¹(dB − dM X)``; for a real ``L``,
``dL = 2 Re⟨G, dX⟩`` with ``⟨U, V⟩ = Σ conj(U) V``, so
``dL = 2 Re(⟨M⁻ᴴ G, dB⟩ − ⟨M⁻ᴴ G Xᴴ, dM⟩)``: the gradients are ``S = M⁻ᴴ G``
for ``B`` and ``−S Xᴴ`` for ``M``, read at ``A``'s stored entries (transposed
when ``M = Aᵀ``).

The Function works on ``A``'s values (a dense 1-D tensor in ``A.values()``
order), so torch turns the values' gradient into a sparse gradient of ``A`` in
its own layout. The backward is written with this same Function and
differentiable index operations, so second derivatives are exact, not
approximated. The backend never sees ``ctx`` or a gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tsgu_core.base.quiet import quietly
from tsgu_core.engine.prepared import PreparedSolve
from tsgu_core.errors import NonFiniteError, SecondDerivativeError
from tsgu_core.plugins.info import SolveInfo
from tsgu_core.sparse.pattern import SparsePattern

__all__ = ["SparseSolveFunction", "SparseValues", "adjoint_solve", "values_gradient"]


def adjoint_solve(solve_transposed: Callable[[torch.Tensor], torch.Tensor], G: torch.Tensor) -> torch.Tensor:
    """``S = op(A)⁻ᴴ G`` from a solve with the plain transpose: ``conj(solve_transposed(conj(G)))``.

    Parameters
    ----------
    solve_transposed : callable
        ``R ↦ op(A)⁻ᵀ R`` (the backend's solve with the other ``transpose``
        flag, on the same prepared state). It receives a tensor without a
        pending conjugation (``resolve_conj``), so it may hand it to NumPy.
    G : Tensor
        The upstream gradient ``∂L/∂X``, ``(..., n, k)``.

    Returns
    -------
    Tensor
        ``S``, the gradient of ``B``. For real dtypes the conjugations are
        no-ops: ``S = op(A)⁻ᵀ G``. Differentiable when ``solve_transposed`` is.

    Examples
    --------
    >>> import torch
    >>> M = torch.tensor([[2.0, 1j], [0.5, 3.0]], dtype=torch.complex128)
    >>> G = torch.tensor([[1.0 + 2j], [-1j]], dtype=torch.complex128)
    >>> S = adjoint_solve(lambda R: torch.linalg.solve(M.T, R), G)
    >>> torch.allclose(S, torch.linalg.solve(M.mH, G))
    True
    """
    if not G.is_complex():
        return solve_transposed(G)
    return solve_transposed(G.conj().resolve_conj()).conj().resolve_conj()


def values_gradient(pattern: SparsePattern, X: torch.Tensor, S: torch.Tensor, transpose: bool) -> torch.Tensor:
    """``∂L/∂A`` at ``A``'s stored entries for ``X = op(A)⁻¹ B`` and ``S = op(A)⁻ᴴ G``, differentiably.

    ``−(S Xᴴ)[row_k, col_k]`` when ``op(A) = A`` and ``−(conj(X) Sᵀ)[row_k, col_k]``
    when ``op(A) = Aᵀ``, shape ``(..., nnz)`` — ``O(nnz·k)``, never ``O(n²)``.
    For real dtypes ``conj`` does nothing: ``−⟨S_i, X_j⟩`` and ``−⟨X_i, S_j⟩``.

    Examples
    --------
    >>> import torch
    >>> A = torch.tensor([[2.0, 1j], [0.0, 3.0]], dtype=torch.complex128)
    >>> X = torch.tensor([[1.0], [1j]], dtype=torch.complex128)
    >>> S = torch.tensor([[1j], [2.0]], dtype=torch.complex128)
    >>> grad = values_gradient(SparsePattern.of(A.to_sparse_csr()), X, S, transpose=False)
    >>> torch.allclose(grad, -(S @ X.mH)[A != 0])
    True
    """
    conjugated = X.conj().resolve_conj() if X.is_complex() else X
    if transpose:
        return -pattern.outer_at_entries(conjugated, S)
    return -pattern.outer_at_entries(S, conjugated)


def _check_upstream(G: torch.Tensor, prepared: PreparedSolve) -> None:
    finite = torch.isfinite(G)
    if not bool(finite.all()):
        raise NonFiniteError(
            f"the upstream gradient ∂L/∂X reaching the solve (backend {prepared.backend.name!r}, method "
            f"{prepared.spec.name!r}) holds {int((~finite).sum())} non-finite value(s): the loss or an operation "
            "after the solve produced NaN/infinity (A is not to blame); check it with torch.autograd.detect_anomaly()"
        )


class SparseSolveFunction(torch.autograd.Function):
    """``X = op(A)⁻¹ B`` on ``A``'s values; see the module docstring for the math.

    ``X, info = apply(values, B, prepared, transpose, x0)`` with ``B`` of shape
    ``(n, k)`` (or ``(b, n, k)`` with ``values`` ``(b, nnz)`` for a batch).
    ``info`` is the :class:`SolveInfo` of the solve; when the backward pass
    runs, the :class:`SolveInfo` of its transpose solve is recorded as
    ``info.backward``. The backward is :func:`adjoint_solve` with this same
    Function and :func:`values_gradient`.
    """

    @staticmethod
    def forward(
        values: torch.Tensor,
        B: torch.Tensor,
        prepared: PreparedSolve,
        transpose: bool,
        x0: torch.Tensor | None,
    ) -> tuple[torch.Tensor, SolveInfo]:
        if B.is_conj():  # a lazily conjugated B (torch's conj view) is materialised before NumPy & co. see it
            B = B.resolve_conj()
        return prepared.run(values.detach().resolve_conj(), B.detach().contiguous(), transpose, x0)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, SolveInfo]) -> None:
        values, _, prepared, transpose, _ = inputs
        X, info = output
        ctx.prepared = prepared
        ctx.transpose = transpose
        ctx.info = info
        ctx.save_for_backward(values, X)

    @staticmethod
    @quietly
    def backward(ctx: Any, G: torch.Tensor, _: Any = None) -> tuple[torch.Tensor | None, ...]:
        values, X = ctx.saved_tensors
        need_values, need_B = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_values or need_B):
            return None, None, None, None, None
        prepared: PreparedSolve = ctx.prepared
        _check_upstream(G, prepared)
        transpose = ctx.transpose

        def solve_transposed(R: torch.Tensor) -> torch.Tensor:
            solution: torch.Tensor
            solution, ctx.info.backward = SparseSolveFunction.apply(values, R, prepared, not transpose, None)
            return solution

        S = adjoint_solve(solve_transposed, G)
        grad_values = values_gradient(prepared.pattern, X, S, transpose) if need_values else None
        return grad_values, (S if need_B else None), None, None, None


class SparseValues(torch.autograd.Function):
    """``A.values()`` whose backward builds ``∂L/∂A`` in ``A``'s layout, differentiably.

    torch's own ``values()`` backward drops the graph under ``create_graph=True``
    (its gradient has no ``grad_fn``), which would make second derivatives
    with respect to ``A`` silently zero. This Function keeps them exact for a
    leaf ``A``. For a non-leaf ``A`` (built by a sparse constructor from
    values), torch's constructor backward loses higher derivatives, so a
    higher-order pass raises :class:`~tsgu_core.errors.SecondDerivativeError`
    instead of returning a wrong number.
    """

    @staticmethod
    def forward(A: torch.Tensor) -> torch.Tensor:
        return A.values() if A.layout == torch.sparse_csr else A._values()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        (A,) = inputs
        ctx.pattern_of = A.detach()
        ctx.is_leaf = A.is_leaf

    @staticmethod
    @quietly
    def backward(ctx: Any, grad_values: torch.Tensor) -> torch.Tensor:
        A = ctx.pattern_of
        if torch.is_grad_enabled() and grad_values.requires_grad and not ctx.is_leaf:
            raise SecondDerivativeError(
                "second derivatives with respect to a sparse A that was built from other tensors are lost by "
                "torch's sparse constructors; pass A's values explicitly with "
                "tsgu_core.solve_values(A_pattern, values, B) (exact to any order), or detach A"
            )
        if A.layout == torch.sparse_csr:
            if torch.is_grad_enabled() and grad_values.requires_grad and grad_values.is_complex():
                raise SecondDerivativeError(
                    "second derivatives with respect to a complex CSR A are lost: torch's CSR constructor has no "
                    "complex autograd; pass A's values with tsgu_core.solve_values(A_pattern, values, B) (exact to "
                    "any order), or use a COO A"
                )
            return torch.sparse_csr_tensor(
                A.crow_indices(), A.col_indices(), grad_values, A.shape, check_invariants=False
            )
        return torch.sparse_coo_tensor(A._indices(), grad_values, A.shape, is_coalesced=True, check_invariants=False)
