"""SuperLU through SciPy, with a singular matrix as a typed error: a direct fallback for any CPU backend."""

from __future__ import annotations

import warnings
from typing import Any

from tsgu_core.errors import SingularMatrixError

__all__ = ["superlu"]


def superlu(matrix: Any, options: dict[str, Any] | None = None, what: str = "A") -> Any:
    """``scipy.sparse.linalg.splu`` of a SciPy sparse matrix (converted to CSC once); singular → typed error.

    SuperLU factors ``P_r A P_c = L U`` with partial (threshold) pivoting;
    the returned object's ``solve(b, trans="N" | "T" | "H")`` solves with
    ``A``, ``Aᵀ`` or ``Aᴴ``. SciPy reports an exactly singular ``U`` as a
    ``RuntimeError`` or a ``MatrixRankWarning``; both become
    :class:`~tsgu_core.errors.SingularMatrixError` naming ``what``. The
    built-in SciPy backend factors with it, and PARDISO falls back to it for
    batch members it cannot trust.

    Parameters
    ----------
    matrix : scipy.sparse matrix or array
        Square, any format.
    options : dict, optional
        Keywords of ``splu`` (``permc_spec``, ``diag_pivot_thresh``, ``options``, …).
    what : str
        How error messages name the matrix (e.g. ``"batch member 3 of A"``).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> lu = superlu(sp.csr_matrix([[2.0, 1.0], [0.0, 4.0]]))
    >>> lu.solve(np.array([3.0, 4.0])).tolist()
    [1.0, 1.0]
    >>> superlu(sp.csr_matrix([[1.0, 1.0], [1.0, 1.0]]), what="the test matrix")
    Traceback (most recent call last):
    ...
    tsgu_core.errors.SingularMatrixError: the test matrix is singular: SuperLU says Factor is exactly singular
    """
    import scipy.sparse.linalg as sla

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", sla.MatrixRankWarning)
            return sla.splu(matrix.tocsc(), **(options or {}))
    except (RuntimeError, sla.MatrixRankWarning) as error:
        if "singular" in str(error).lower():
            raise SingularMatrixError(f"{what} is singular: SuperLU says {error!s}") from error
        raise
