"""Preconditioners for the scipy backend, built once in ``prepare``.

Each one yields a pair of operators: ``M ≈ A⁻¹`` for the forward solve and
``Mᵀ ≈ A⁻ᵀ`` for the backward's transpose solve.

* ``"jacobi"``: ``diag(A)⁻¹`` — its own transpose.
* ``"ilu"``: SciPy's ``spilu``; the transpose applies the same incomplete
  factors with ``trans="T"`` (no second factorization).
* ``"amg"``: pyamg smoothed aggregation. A hierarchy for ``Aᵀ`` is built
  only when a transpose solve is asked for, and only if ``A`` is not
  symmetric (then the forward hierarchy serves both).
* a user's ``M`` (matrix or LinearOperator): its transpose ``Mᵀ`` (its adjoint for a
  real ``M``) serves the transpose solve — never ``Mᴴ``, since the solve is with the plain ``Aᵀ``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tsgu_core import InvalidOptionError

__all__ = ["NAMED_PRECONDITIONERS", "PreconditionerPair", "build_preconditioner"]

NAMED_PRECONDITIONERS = ("jacobi", "ilu", "amg")


class PreconditionerPair:
    """``forward`` (``M``) now, ``transpose`` (``Mᵀ``) on first use."""

    def __init__(self, forward: Any, make_transpose: Callable[[], Any]):
        self.forward = forward
        self._make_transpose = make_transpose
        self._transpose: Any = None

    @property
    def transpose(self) -> Any:
        if self._transpose is None:
            self._transpose = self._make_transpose()
        return self._transpose


def _jacobi(A: Any) -> PreconditionerPair:
    import numpy as np
    import scipy.sparse as sp

    diagonal = A.diagonal()
    zero = np.flatnonzero(diagonal == 0)
    if zero.size:
        raise InvalidOptionError(
            f"preconditioner='jacobi' needs a nonzero diagonal, but row(s) {zero[:5].tolist()} have a zero there",
            option="preconditioner",
        )
    M = sp.diags(1.0 / diagonal).tocsr()
    return PreconditionerPair(M, lambda: M)


def _ilu(A: Any, drop_tol: float | None, fill_factor: float | None) -> PreconditionerPair:
    import scipy.sparse.linalg as sla

    try:
        ilu = sla.spilu(A.tocsc(), drop_tol=drop_tol, fill_factor=fill_factor)
    except RuntimeError as error:
        raise InvalidOptionError(
            f"preconditioner='ilu': spilu failed ({error}); try a smaller ilu_drop_tol", option="preconditioner"
        ) from error
    n = A.shape[0]
    forward = sla.LinearOperator((n, n), matvec=ilu.solve, dtype=A.dtype)
    return PreconditionerPair(
        forward, lambda: sla.LinearOperator((n, n), matvec=lambda x: ilu.solve(x, trans="T"), dtype=A.dtype)
    )


def _amg(A: Any) -> PreconditionerPair:
    try:
        import pyamg
    except ImportError as error:
        raise InvalidOptionError(
            "preconditioner='amg' needs pyamg: pip install pyamg (or 'tsgu[all]')", option="preconditioner"
        ) from error

    forward = pyamg.smoothed_aggregation_solver(A.tocsr()).aspreconditioner()

    def transpose() -> Any:
        At = A.T.tocsr()
        if (abs(A - At)).max() == 0:
            return forward
        return pyamg.smoothed_aggregation_solver(At).aspreconditioner()

    return PreconditionerPair(forward, transpose)


def _user(M: Any, shape: tuple[int, int]) -> PreconditionerPair:
    import scipy.sparse.linalg as sla

    try:
        operator = sla.aslinearoperator(M)
    except TypeError as error:
        raise InvalidOptionError(
            f"M must be a matrix or LinearOperator approximating A⁻¹, got {type(M).__name__}", option="M"
        ) from error
    if tuple(operator.shape) != tuple(shape):
        raise InvalidOptionError(f"M has shape {tuple(operator.shape)} but A has {tuple(shape)}", option="M")
    return PreconditionerPair(M, lambda: operator.transpose())


def build_preconditioner(
    A: Any,
    *,
    name: str | None,
    M: Any,
    ilu_drop_tol: float | None = None,
    ilu_fill_factor: float | None = None,
) -> PreconditionerPair | None:
    """The preconditioner pair for ``A`` (a SciPy CSR matrix), or None.

    Raises
    ------
    InvalidOptionError
        Both ``M`` and a name, ILU options without ``"ilu"``, a user ``M``
        of the wrong shape, or a preconditioner that cannot be built for this ``A``.
    """
    if name is not None and M is not None:
        raise InvalidOptionError("pass either M (an operator) or preconditioner (a name), not both", option="M")
    if (ilu_drop_tol is not None or ilu_fill_factor is not None) and name != "ilu":
        raise InvalidOptionError(
            "ilu_drop_tol and ilu_fill_factor only apply with preconditioner='ilu'", option="ilu_drop_tol"
        )
    if M is not None:
        return _user(M, A.shape)
    if name is None:
        return None
    if name == "jacobi":
        return _jacobi(A)
    if name == "ilu":
        return _ilu(A, ilu_drop_tol, ilu_fill_factor)
    return _amg(A)  # the declaration admits only the named preconditioners
