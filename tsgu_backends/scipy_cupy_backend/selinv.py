"""Log-determinants and selected inverses from SciPy's SuperLU factors (numba kernels).

SuperLU factorizes ``Pr A Pc = L U`` (``L`` unit lower triangular, ``U``
upper triangular; ``(Pr A Pc)[perm_r[i], perm_c[j]] = A[i, j]``). Then

* ``det A = det(Pr)·det(Pc)·Π U_kk``, so ``log|det A| = Σ log|U_kk|`` (a sum of
  logarithms: no product that over- or underflows) and the sign is the two
  permutations' parities times the signs (phases, for complex) of ``U_kk``;
* ``(A⁻¹)_ij = Z[perm_c[i], perm_r[j]]`` with ``Z = (L U)⁻¹``.

Selected inversion (Takahashi, Fagan and Chen 1973; Erisman and Tinney 1975).
With ``U = D Ũ`` (``D`` its diagonal, ``Ũ`` unit upper triangular),
``Z = D⁻¹L⁻¹ + (I − Ũ) Z`` and ``Z = Ũ⁻¹D⁻¹ + Z (I − L)`` give, column ``j``
from the last to the first,

* ``Z_ij = −Σ_{k>j} Z_ik L_kj`` for ``i > j``,
* ``Z_ji = −Σ_{k>j} Ũ_jk Z_ki`` for ``i > j``,
* ``Z_jj = 1/U_jj − Σ_{k>j} Ũ_jk Z_kj``.

Every ``Z`` entry these sums read lies in a pattern ``C`` closed under them:
the symbolic Cholesky factor (no reordering) of the symmetric pattern
``L + Uᵀ + (L + Uᵀ)ᵀ`` plus the positions asked for. The nonzeros below the
diagonal in column ``j`` of ``C`` form a clique in ``C``, so each ``Z_ik`` read
for column ``j`` was computed for an earlier (higher) column. ``Z`` is computed
only on ``C`` — ``O(nnz(C))`` memory, ``O(Σ_j |C_j|²)`` work, like the
factorization — and the entries asked for are read off it: exact to rounding,
never a dense ``A⁻¹``.

When the factors' own pattern is closed already (a symmetric ordering with
diagonal pivots gives the Cholesky pattern of ``A + Aᵀ``: the ``scipy``
backend's default for a structurally symmetric ``A``), ``C`` is that pattern,
found by a transposition and a check, without the elimination tree.

A symmetric ``A`` (``A = Aᵀ``) factorized with ``perm_r = perm_c`` has
``U = D Lᵀ``: then ``Z`` is symmetric, only ``L`` and ``D`` are read and only
``Z``'s lower half is computed — ``Z_ij = −Σ_{k>j} Z_ik L_kj`` alone, half the
work and memory of the general recurrences.

The inner loops are numba kernels (:mod:`.selinv_kernels`: compiled on first use, cached on disk). They run
in double precision only (float64, complex128): single-precision factors are widened on entry and the entries
narrowed on return — as accurate as the factors allow, and one compiled kernel set per kind (real, complex)
instead of two (each set takes 10–14 s to compile on a cold cache).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["factor_logdet", "permutation_parity", "selected_inverse_of_factors", "verified"]

_JIT: dict[str, Any] = {}


def _kernels() -> dict[str, Any]:
    """The numba kernels (:mod:`.selinv_kernels`), imported on first use: importing this module imports no numba."""
    if not _JIT:
        from tsgu_backends.scipy_cupy_backend import selinv_kernels as kernels

        _JIT.update(
            {
                name: getattr(kernels, name)
                for name in (
                    "parity",
                    "lower_rows",
                    "etree",
                    "distinct_columns",
                    "closed",
                    "chained",
                    "symbolic",
                    "scatter",
                    "gather_block",
                    "blocked",
                    "unit_lower_inverse",
                    "selinv",
                    "gather",
                )
            }
        )
    return _JIT


def permutation_parity(perm: np.ndarray) -> int:
    """``+1`` for an even permutation, ``−1`` for an odd one (``O(n)``, by its cycles).

    >>> permutation_parity(np.array([1, 0, 2])), permutation_parity(np.array([1, 2, 0]))
    (-1, 1)
    """
    return int(_kernels()["parity"](np.ascontiguousarray(perm, dtype=np.int64)))


def factor_logdet(lu: Any) -> tuple[complex | float, float]:
    """``(sign, log|det A|)`` from a SciPy ``SuperLU`` object; ``sign`` has modulus one (or is 0).

    Scale-safe: ``log|det A| = Σ log|U_kk|`` is summed in float64, so a matrix
    whose determinant over- or underflows (entries of 1e+150 or 1e-150) still
    gets a finite, right value.

    >>> import scipy.sparse as sp, scipy.sparse.linalg as sla
    >>> sign, logabsdet = factor_logdet(sla.splu(sp.csc_matrix([[0.0, 2.0], [3.0, 1.0]])))
    >>> sign, round(math.exp(logabsdet), 12)
    (-1.0, 6.0)
    """
    diagonal = lu.U.diagonal()
    parity = permutation_parity(lu.perm_r) * permutation_parity(lu.perm_c)
    magnitude = np.abs(diagonal)
    if not bool((magnitude > 0).all()):
        return 0.0, -math.inf
    logabsdet = float(np.sum(np.log(magnitude.astype(np.float64))))
    if np.iscomplexobj(diagonal):
        phases = diagonal.astype(np.complex128) / magnitude
        phase = complex(np.prod(phases)) * parity
        return phase / abs(phase), logabsdet
    negative = int(np.count_nonzero(diagonal < 0))
    return float(parity * (1 - 2 * (negative % 2))), logabsdet


BLOCKED_FROM = 4_096
"""A supernode of ``w`` columns above ``|S|`` rows goes to BLAS-3 products when ``w·(w + |S|)²`` reaches this."""


def _pattern(kernels: dict[str, Any], pointers: np.ndarray, lower_cols: np.ndarray, n: int) -> Any:
    """The pattern ``C`` (strictly lower, by columns, rows sorted) of the rows ``lower_cols``: its symbolic factor.

    The factors' pattern is often closed already (a symmetric ordering and
    diagonal pivots give the Cholesky pattern of ``A + Aᵀ``): then ``C`` is that
    pattern, found by one transposition and one check, without the elimination
    tree and the two passes over it of the general symbolic factorization.
    """
    cptr, crows = kernels["distinct_columns"](pointers, lower_cols, n)
    if kernels["closed"](cptr, crows):
        return cptr, crows
    del cptr, crows
    parent = kernels["etree"](pointers, lower_cols, n)
    return kernels["symbolic"](pointers, lower_cols, parent, n)


def selected_inverse_of_factors(
    lu: Any, rows: np.ndarray, cols: np.ndarray, *, symmetric: bool = False, blocked_from: int = BLOCKED_FROM
) -> np.ndarray:
    """``(A⁻¹)[rows[t], cols[t]]`` for each ``t``, from the SuperLU factors of ``A`` (see the module docstring).

    Parameters
    ----------
    lu : scipy.sparse.linalg.SuperLU
        The factorization of ``A``, ``n × n``, nonsingular.
    rows, cols : ndarray of int
        The positions wanted (any, repeats allowed).
    symmetric : bool
        ``A = Aᵀ`` exactly (a transpose, not a conjugate transpose, for complex
        ``A``). When SuperLU also pivoted symmetrically (``perm_r = perm_c``,
        as its symmetric mode does unless a diagonal pivot is too small),
        ``U = D Lᵀ`` and ``Z = (L D Lᵀ)⁻¹`` is symmetric: only ``L`` and ``D``
        are read, the pattern ``C`` is that of ``L + Lᵀ`` and only its lower
        half is computed — half the work and memory. Otherwise ignored.
    blocked_from : int
        Supernodes with at least this much work use BLAS-3 products (0: all
        of them; a huge value: none). The answer is the same either way.

    Returns
    -------
    ndarray
        The entries, in the factors' dtype (computed in double precision).

    Examples
    --------
    >>> import scipy.sparse as sp, scipy.sparse.linalg as sla
    >>> A = np.array([[4.0, 1.0, 0.0], [2.0, 5.0, 1.0], [0.0, 3.0, 6.0]])
    >>> lu = sla.splu(sp.csc_matrix(A))
    >>> rows, cols = np.nonzero(A)
    >>> np.allclose(selected_inverse_of_factors(lu, rows, cols), np.linalg.inv(A)[rows, cols])
    True
    >>> S = A + A.T
    >>> lu = sla.splu(sp.csc_matrix(S), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0)
    >>> got = selected_inverse_of_factors(lu, rows, cols, symmetric=True)
    >>> np.allclose(got, np.linalg.inv(S)[rows, cols])
    True
    """
    kernels = _kernels()
    perm_r, perm_c = np.asarray(lu.perm_r), np.asarray(lu.perm_c)
    symmetric = symmetric and np.array_equal(perm_r, perm_c)
    L, U = lu.L.tocsc(), lu.U.tocsc()
    n = L.shape[0]
    a = perm_c[np.asarray(rows, dtype=np.int64)].astype(np.int64)  # (A⁻¹)_ij = Z[perm_c[i], perm_r[j]]
    b = perm_r[np.asarray(cols, dtype=np.int64)].astype(np.int64)
    factor_dtype = np.result_type(L.dtype, U.dtype)
    dtype = np.result_type(factor_dtype, np.float64)  # float64 or complex128: the kernels' only dtypes
    diagonal = U.diagonal().astype(dtype)
    if symmetric:  # U = D Lᵀ: U is not read beyond its diagonal
        U_ptr, U_rows = np.zeros(n + 1, dtype=L.indptr.dtype), L.indices[:0]
    else:
        Ut = U.T.tocsc()  # column j: U_jk for k ≥ j
        U_ptr, U_rows = Ut.indptr, Ut.indices
    pointers, lower_cols = kernels["lower_rows"](n, L.indptr, L.indices, U_ptr, U_rows, a, b)
    cptr, crows = _pattern(kernels, pointers, lower_cols, n)
    del pointers, lower_cols
    lower = np.zeros(crows.shape[0], dtype=dtype)
    kernels["scatter"](cptr, crows, L.indptr, L.indices, L.data.astype(dtype, copy=False), np.ones(n, dtype), lower)
    upper = lower
    if not symmetric:
        upper = np.zeros(crows.shape[0], dtype=dtype)
        kernels["scatter"](cptr, crows, U_ptr, U_rows, Ut.data.astype(dtype, copy=False), diagonal, upper)
    z_low, z_up, z_diag = kernels["selinv"](cptr, crows, lower, upper, diagonal, blocked_from, symmetric)
    del lower, upper
    return np.asarray(kernels["gather"](cptr, crows, z_low, z_up, z_diag, a, b)).astype(factor_dtype, copy=False)


def verified(member: Any) -> Any:
    """The SuperLU object of a backend's factorization, after its first-solve accuracy check (see ``_Member``).

    Symmetric-mode factors (diagonal pivoting) are checked by the backward
    error of their first solve and redone with partial pivoting when it is
    poor; a log-determinant or selected inverse read off them before any
    solve makes that solve (with ``b = A·1``) first.
    """
    if member.unverified is not None:
        matrix = member.unverified[0]
        member.solve(matrix @ np.ones(matrix.shape[1], dtype=matrix.dtype), False)
    return member.lu
