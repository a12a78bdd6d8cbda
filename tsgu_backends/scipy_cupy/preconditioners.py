"""Preconditioners for the scipy backend, built once in ``prepare``.

Each one yields a pair of operators: ``M ≈ A⁻¹`` for the forward solve and
``Mᵀ ≈ A⁻ᵀ`` for the backward's transpose solve.

* ``"jacobi"``: ``diag(A)⁻¹`` — its own transpose.
* ``"ilu"``: SciPy's ``spilu``; the transpose applies the same incomplete
  factors with ``trans="T"`` (no second factorisation).
* ``"amg"``: pyamg smoothed aggregation. A hierarchy for ``Aᵀ`` is built
  only when a transpose solve is asked for, and only if ``A`` is not
  symmetric (then the forward hierarchy serves both).
* a user's ``M`` (matrix or LinearOperator): its adjoint serves the transpose.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
        raise ValueError(
            f"preconditioner='jacobi' needs a nonzero diagonal, but row(s) {zero[:5].tolist()} have a zero there"
        )
    M = sp.diags(1.0 / diagonal).tocsr()
    return PreconditionerPair(M, lambda: M)


def _ilu(A: Any, drop_tol: float | None, fill_factor: float | None) -> PreconditionerPair:
    import scipy.sparse.linalg as sla

    try:
        ilu = sla.spilu(A.tocsc(), drop_tol=drop_tol, fill_factor=fill_factor)
    except RuntimeError as error:
        raise ValueError(f"preconditioner='ilu': spilu failed ({error}); try a smaller ilu_drop_tol") from error
    n = A.shape[0]
    forward = sla.LinearOperator((n, n), matvec=ilu.solve, dtype=A.dtype)
    return PreconditionerPair(
        forward, lambda: sla.LinearOperator((n, n), matvec=lambda x: ilu.solve(x, trans="T"), dtype=A.dtype)
    )


def _amg(A: Any) -> PreconditionerPair:
    try:
        import pyamg
    except ImportError as error:
        raise ValueError("preconditioner='amg' needs pyamg: pip install pyamg (or 'tsgu[all]')") from error

    forward = pyamg.smoothed_aggregation_solver(A.tocsr()).aspreconditioner()

    def transpose() -> Any:
        At = A.T.tocsr()
        if (abs(A - At)).max() == 0:
            return forward
        return pyamg.smoothed_aggregation_solver(At).aspreconditioner()

    return PreconditionerPair(forward, transpose)


def _user(M: Any) -> PreconditionerPair:
    import scipy.sparse.linalg as sla

    operator = sla.aslinearoperator(M)
    return PreconditionerPair(M, lambda: operator.adjoint())


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
    ValueError
        Unknown name, both ``M`` and a name, ILU options without ``"ilu"``,
        or a preconditioner that cannot be built for this ``A``.
    """
    if name is not None and M is not None:
        raise ValueError("pass either M (an operator) or preconditioner (a name), not both")
    if (ilu_drop_tol is not None or ilu_fill_factor is not None) and name != "ilu":
        raise ValueError("ilu_drop_tol and ilu_fill_factor only apply with preconditioner='ilu'")
    if M is not None:
        return _user(M)
    if name is None:
        return None
    if name == "jacobi":
        return _jacobi(A)
    if name == "ilu":
        return _ilu(A, ilu_drop_tol, ilu_fill_factor)
    if name == "amg":
        return _amg(A)
    raise ValueError(f"preconditioner must be one of {list(NAMED_PRECONDITIONERS)} or None, got {name!r}")
