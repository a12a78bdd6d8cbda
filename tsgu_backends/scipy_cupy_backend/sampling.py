r"""The ``scipy`` backend's ``ldlt`` method: ``A = Pᵀ L D Lᵀ P`` of an SPD ``A`` from SuperLU, and Gaussian sampling.

SuperLU factorizes ``Pr A Pc = L U``. Asked for a symmetric fill-reducing
ordering (``permc_spec="MMD_AT_PLUS_A"``: minimum degree on ``A + Aᵀ``),
``SymmetricMode`` and ``diag_pivot_thresh=0``, it takes the diagonal entry
as the pivot of every column whenever that entry is nonzero — no pivoting
at all — and falls back to an off-diagonal pivot only for a zero one. On a
symmetric ``A`` with ``perm_r == perm_c = p`` (``P`` the permutation
``(P x)[p[i]] = x[i]``), ``P A Pᵀ = L U`` is then the unpivoted LU of a
symmetric matrix, whose upper factor is ``U = D Lᵀ`` with ``D = diag(U)``:

.. math:: A = P^{\mathsf T} L D L^{\mathsf T} P .

By Sylvester's criterion (the leading principal minors of ``P A Pᵀ`` are
the products ``d_1 ⋯ d_k``), ``A`` is positive definite exactly when every
pivot ``d_k > 0``. :func:`factorize_ldlt` checks ``perm_r == perm_c`` and
``d > 0`` and raises :class:`~tsgu_core.errors.NotPositiveDefiniteError`
otherwise (an exactly singular ``A``: :class:`~tsgu_core.errors.SingularMatrixError`).
Verified on random sparse SPD matrices: ``L U = P A Pᵀ`` and ``U = D Lᵀ`` to
rounding (``tests/test_gmrf.py``).

The same factor gives

* ``log det A = Σ_k log d_k`` (a sum: no over- or underflow);
* entries of ``A⁻¹`` by selected inversion (:mod:`.selinv`, unchanged: it
  reads any SuperLU object);
* samples: ``S = Pᵀ L⁻ᵀ D^{-1/2} = Pᵀ U⁻¹ D^{1/2}`` satisfies
  ``S Sᵀ = Pᵀ L⁻ᵀ D⁻¹ L⁻¹ P = A⁻¹``, so for ``z ~ N(0, I)`` the vector
  ``S z ~ N(0, A⁻¹)``: one sparse upper-triangular solve with ``U`` per
  block of samples (a numba kernel over all the samples' columns at once).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tsgu_backends.scipy_cupy_backend.selinv import selected_inverse_of_factors
from tsgu_core import BackendReport, NotPositiveDefiniteError
from tsgu_core.plugins.kit import superlu

__all__ = ["LdltState", "factorize_ldlt"]


def _numpy(X: torch.Tensor) -> Any:
    return X.detach().contiguous().numpy()


@dataclass
class LdltState:
    """``A = Pᵀ L D Lᵀ P`` held as SuperLU's factors (``perm_r == perm_c == p``, ``U = D Lᵀ``, ``D > 0``)."""

    lu: Any
    _upper: Any = field(default=None, repr=False)  # U's CSC arrays and diagonal, read on the first sample

    def solve(self, B: torch.Tensor, transpose: bool, x0: torch.Tensor | None) -> tuple[torch.Tensor, BackendReport]:
        """``A X = B`` (``Aᵀ X = B``): SuperLU's solve with the factors (``A`` is symmetric to rounding)."""
        X = self.lu.solve(_numpy(B), trans="T" if transpose else "N")
        return torch.from_numpy(np.ascontiguousarray(X)).to(B.dtype).reshape(B.shape), BackendReport()

    def logdet(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1, Σ log d_k)``: every pivot is positive (checked when factorized)."""
        pivots = self.lu.U.diagonal()
        dtype = torch.from_numpy(pivots[:0]).dtype
        logabsdet = float(np.sum(np.log(pivots.astype(np.float64))))
        return torch.ones((), dtype=dtype), torch.tensor(logabsdet, dtype=torch.float64).to(dtype)

    def selected_inverse(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """``(A⁻¹)[rows, cols]`` by selected inversion on the same factors (:mod:`.selinv`)."""
        return torch.from_numpy(selected_inverse_of_factors(self.lu, rows.numpy(), cols.numpy()))

    def precision_sample(self, Z: torch.Tensor) -> torch.Tensor:
        """``S Z = Pᵀ U⁻¹ D^{1/2} Z``: for standard normal ``Z``, columns drawn from ``N(0, A⁻¹)``.

        One back substitution with ``U`` (a numba kernel, :mod:`.sampling_kernels`) over all columns at once,
        in double precision whatever the factor's dtype (one compiled kernel), returned in ``Z``'s dtype.
        """
        from tsgu_backends.scipy_cupy_backend.sampling_kernels import upper_solve

        if self._upper is None:
            U = self.lu.U.tocsc()
            wide = np.result_type(U.dtype, np.float64)  # the kernel runs in double precision only: one compile
            self._upper = (
                U.indptr.astype(np.int64),
                U.indices.astype(np.int64),
                U.data.astype(wide),
                U.diagonal().astype(wide),
            )
        ptr, rows, values, pivots = self._upper
        right = np.ascontiguousarray(np.sqrt(pivots)[:, None] * _numpy(Z), dtype=values.dtype)
        Y = upper_solve(ptr, rows, values, pivots, right)
        return torch.from_numpy(np.ascontiguousarray(Y[np.asarray(self.lu.perm_c)])).to(Z.dtype)


def factorize_ldlt(matrix: Any, options: dict[str, Any], what: str = "A") -> LdltState:
    """SuperLU of an SPD ``matrix`` with a symmetric ordering and no pivoting, checked to be ``Pᵀ L D Lᵀ P``.

    Parameters
    ----------
    matrix : scipy.sparse matrix
        Square, symmetric (the core checked it to ``1000 ε``).
    options : dict
        The ``ldlt`` method's options (``permc_spec``, ``relax``, ``panel_size``).
    what : str
        How messages name the matrix.

    Raises
    ------
    NotPositiveDefiniteError
        A pivot is not positive, or SuperLU had to pivot off the diagonal
        (a zero pivot): ``matrix`` is not positive definite.
    SingularMatrixError
        SuperLU finds ``matrix`` exactly singular.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> state = factorize_ldlt(sp.csc_matrix([[4.0, 1.0], [1.0, 3.0]]), {})
    >>> round(float(state.logdet()[1].exp()), 12)
    11.0
    >>> factorize_ldlt(sp.csc_matrix([[1.0, 2.0], [2.0, 1.0]]), {})
    Traceback (most recent call last):
    ...
    tsgu_core.errors.NotPositiveDefiniteError: A is not positive definite: ...
    """
    keywords: dict[str, Any] = {
        "permc_spec": options.get("permc_spec") or "MMD_AT_PLUS_A",
        "diag_pivot_thresh": 0.0,
        "options": {"SymmetricMode": True},
    }
    keywords.update({name: options[name] for name in ("relax", "panel_size") if options.get(name) is not None})
    lu = superlu(matrix, keywords, what)
    perm_r, perm_c = np.asarray(lu.perm_r), np.asarray(lu.perm_c)
    if not np.array_equal(perm_r, perm_c):
        raise NotPositiveDefiniteError(
            f"{what} is not positive definite: its symmetric factorization met a zero pivot (SuperLU had to pivot "
            "off the diagonal); a precision or covariance must be symmetric positive definite — add a multiple of "
            "the identity, or check how it is assembled"
        )
    pivots = lu.U.diagonal()
    bad = np.flatnonzero(~(pivots > 0))
    if bad.size:
        k = int(bad[0])
        row = int(np.flatnonzero(perm_c == k)[0])
        raise NotPositiveDefiniteError(
            f"{what} is not positive definite: pivot {k} of its factorization Pᵀ L D Lᵀ P (at row {row} of A) is "
            f"{float(pivots[k]):.3g}, not positive ({bad.size} of {pivots.size} pivots are ≤ 0: A is indefinite, "
            "or singular to working precision); add a multiple of the identity, or check how it is assembled"
        )
    return LdltState(lu)
