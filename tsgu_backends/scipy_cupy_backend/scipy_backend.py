"""The ``scipy`` backend: ``scipy.sparse.linalg`` on CPU tensors, zero-copy through NumPy."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from tsgu_backends.scipy_cupy_backend.convert import torch_to_scipy
from tsgu_backends.scipy_cupy_backend.iterative import solve_columns
from tsgu_backends.scipy_cupy_backend.methods import SCIPY_METHODS, library_keywords, superlu_keywords
from tsgu_backends.scipy_cupy_backend.operators import Operators, TriangularState
from tsgu_backends.scipy_cupy_backend.preconditioners import PreconditionerPair, build_preconditioner
from tsgu_backends.scipy_cupy_backend.sampling import LdltState, factorize_ldlt
from tsgu_backends.scipy_cupy_backend.selinv import factor_logdet, selected_inverse_of_factors, verified
from tsgu_core import (
    Availability,
    BackendContractError,
    BackendReport,
    InvalidOptionError,
    SingularMatrixError,
    SolveOptions,
)
from tsgu_core.plugins.kit import row_indices, solve_augmented, superlu, transpose_csr

__all__ = ["ScipyBackend"]


def _numpy(X: torch.Tensor) -> Any:
    return X.detach().contiguous().numpy()


def _torch(X: Any, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(X).to(like.dtype).reshape(like.shape)


SYMMETRIC_MODE: dict[str, Any] = {
    "permc_spec": "MMD_AT_PLUS_A",
    "diag_pivot_thresh": 0.01,
    "options": {"SymmetricMode": True},
}
"""SuperLU's options for a structurally symmetric pattern: minimum degree on ``A + Aᵀ``, diagonal pivots preferred.

Measured (``benchmarks/superlu_ordering.py``, one thread, a loaded 2-core
machine): on 2-D Poisson (n = 99 856) half the fill of the default COLAMD
ordering and 0.84–0.97× its time; 0.78–0.85× on 2-D convection–diffusion;
0.34–0.41× on 3-D Poisson (n = 27 000); backward errors 1–2 ε as with COLAMD.
"""
_ORDERING_OPTIONS = ("permc_spec", "diag_pivot_thresh")
# × the dtype's ε: above it a symmetric-mode factorization is redone with the defaults. Measured at n = 99 856:
# Poisson 1.2 ε, convection–diffusion 2.2 ε; partial pivoting gets < 1 ε where diagonal pivoting gets 10–40 ε.
_BACKWARD_ERROR_LIMIT = 10


@dataclass(frozen=True)
class PatternFacts:
    """What :func:`pattern_facts` learns about a CSR matrix: symmetry of its pattern and of its values."""

    symmetric_pattern: bool
    symmetric_values: bool


def pattern_facts(matrix: Any) -> PatternFacts:
    """Whether a CSR matrix's pattern, and its values, are symmetric (one O(nnz) transposition).

    >>> import scipy.sparse as sp
    >>> pattern_facts(sp.csr_matrix([[2.0, 1.0], [1.0, 3.0]]))
    PatternFacts(symmetric_pattern=True, symmetric_values=True)
    >>> pattern_facts(sp.csr_matrix([[2.0, 1.0], [-1.0, 3.0]]))
    PatternFacts(symmetric_pattern=True, symmetric_values=False)
    """
    import numpy as np

    crow, col, order = transpose_csr(row_indices(matrix.indptr), matrix.indices, matrix.shape[1])
    if not (np.array_equal(crow, matrix.indptr) and np.array_equal(col, matrix.indices)):
        return PatternFacts(False, False)
    return PatternFacts(True, bool(np.array_equal(matrix.data[order], matrix.data)))


def ordering_options(options: dict[str, Any], facts: PatternFacts) -> dict[str, Any] | None:
    """SuperLU options with the ordering chosen from the pattern, or ``None`` to keep ``options`` as they are.

    On a structurally symmetric pattern, and unless the user set
    ``permc_spec``, ``diag_pivot_thresh`` or ``options['SymmetricMode']``
    (the user's choice wins), :data:`SYMMETRIC_MODE` merged into ``options``.

    >>> ordering_options({"relax": 2}, PatternFacts(True, False))["permc_spec"]
    'MMD_AT_PLUS_A'
    >>> ordering_options({"permc_spec": "COLAMD"}, PatternFacts(True, True)) is None
    True
    """
    chosen_by_user = any(name in options for name in _ORDERING_OPTIONS) or "SymmetricMode" in (
        options.get("options") or {}
    )
    if chosen_by_user or not facts.symmetric_pattern:
        return None
    return {**options, **SYMMETRIC_MODE, "options": {**(options.get("options") or {}), **SYMMETRIC_MODE["options"]}}


def backward_error(matrix: Any, X: Any, B: Any) -> float:
    """The largest normwise backward error ‖b − A x‖∞ / (‖A‖∞‖x‖∞ + ‖b‖∞) over the columns (scale-free)."""
    import numpy as np

    X2, B2 = X.reshape(X.shape[0], -1), B.reshape(B.shape[0], -1)
    norm_a = float(abs(matrix).sum(axis=1).max())
    if not np.isfinite(X2).all():
        return float("inf")
    if norm_a == 0.0:
        return 0.0
    residual = np.abs(B2 - matrix @ X2).max(axis=0) / norm_a
    scale = np.abs(X2).max(axis=0) + np.abs(B2).max(axis=0) / norm_a
    return float(np.max(np.where(scale > 0, residual / np.where(scale > 0, scale, 1.0), 0.0), initial=0.0))


@dataclass
class _Member:
    """One SuperLU factorization (of ``A`` or a batch member) and what the solve needs to know about it."""

    lu: Any
    symmetric: bool  # A = Aᵀ: the transpose solve is a plain solve
    options: dict[str, Any]  # the SuperLU options used
    unverified: tuple[Any, dict[str, Any], str] | None = None  # (A, fallback options, name) until the first solve

    def solve(self, b: Any, transpose: bool) -> Any:
        """Solve with ``A`` or ``Aᵀ``; the first solve checks symmetric-mode factors by its backward error.

        SuperLU's transposed solve goes column by column (BLAS-2); for a
        symmetric ``A`` the plain solve (BLAS-3 over all columns) is used.
        Diagonal pivoting can lose digits on nonsymmetric values: when the
        first solve's backward error exceeds 10·ε, ``A`` is factorized
        again with the fallback (the user's or SciPy's default) options.
        """
        import numpy as np

        trans = "T" if transpose and not self.symmetric else "N"
        x = self.lu.solve(b, trans=trans)
        if self.unverified is not None:
            matrix, fallback, what = self.unverified
            self.unverified = None
            limit = _BACKWARD_ERROR_LIMIT * float(np.finfo(x.dtype).eps)
            if backward_error(matrix.T if trans == "T" else matrix, x, b) > limit:
                self.lu, self.options = superlu(matrix, fallback, what), fallback
                x = self.lu.solve(b, trans=trans)
        return x


def factorize_member(matrix: Any, options: dict[str, Any], what: str = "A") -> _Member:
    """SuperLU of a CSR/CSC matrix with the ordering chosen from its pattern (:func:`ordering_options`)."""
    facts = pattern_facts(matrix.tocsr())
    chosen = ordering_options(options, facts)
    if chosen is not None:
        try:
            return _Member(superlu(matrix, chosen, what), facts.symmetric_values, chosen, (matrix, options, what))
        except SingularMatrixError:  # let SuperLU's default (partial pivoting) have the last word
            pass
    return _Member(superlu(matrix, options, what), facts.symmetric_values, options)


@dataclass
class _Direct:
    """SuperLU factorizations, one per batch member (one for a single ``A``); the transpose solve reuses them."""

    members: list[_Member]
    batched: bool

    def solve(self, B: torch.Tensor, transpose: bool, x0: torch.Tensor | None) -> tuple[torch.Tensor, BackendReport]:
        if not self.batched:
            return _torch(self.members[0].solve(_numpy(B), transpose), B), BackendReport()
        solutions = [_torch(member.solve(_numpy(B[i]), transpose), B[i]) for i, member in enumerate(self.members)]
        return torch.stack(solutions), BackendReport()


@dataclass
class _Iterative:
    """One of SciPy's Krylov methods, column by column, with ``Aᵀ`` and the preconditioner's transpose."""

    operators: Operators
    method: str
    options: SolveOptions
    keywords: dict[str, Any]
    preconditioner: PreconditionerPair | None

    def solve(self, B: torch.Tensor, transpose: bool, x0: torch.Tensor | None) -> tuple[torch.Tensor, BackendReport]:
        import numpy as np
        import scipy.sparse.linalg as sla

        keywords = dict(self.keywords)
        if self.method == "qmr" and transpose:  # (M1 A M2)ᵀ = M2ᵀ Aᵀ M1ᵀ
            M1, M2 = keywords.pop("M1", None), keywords.pop("M2", None)
            if M2 is not None:
                keywords["M1"] = sla.aslinearoperator(M2).transpose()
            if M1 is not None:
                keywords["M2"] = sla.aslinearoperator(M1).transpose()
        if self.preconditioner is not None:
            keywords["M"] = self.preconditioner.transpose if transpose else self.preconditioner.forward
        options = self.options
        result = solve_columns(
            np,
            getattr(sla, self.method),
            self.operators(transpose),
            _numpy(B),
            x0=None if x0 is None else _numpy(x0),
            rtol=options.rtol,
            atol=options.atol,
            maxiter=options.maxiter,
            keywords={k: v for k, v in keywords.items() if k not in ("restart", "inner_m")},
            has_atol=self.method != "minres",
            restart=keywords.get("restart") if self.method == "gmres" else None,
            inner_m=options["inner_m"] if self.method == "lgmres" else None,
            shadow_from_start=self.method in ("bicgstab", "cgs", "tfqmr"),
        )
        return _torch(result.X, B), BackendReport(result.iterations, result.converged, result.message, result.history)


class _Triangular(TriangularState):
    """``spsolve_triangular`` on ``A`` or ``Aᵀ`` (which swaps the triangle)."""

    def solve(self, B: torch.Tensor, transpose: bool, x0: torch.Tensor | None) -> tuple[torch.Tensor, BackendReport]:
        import numpy as np
        import scipy.sparse.linalg as sla

        matrix, lower = self.system(transpose)
        try:
            X = sla.spsolve_triangular(matrix, np.array(_numpy(B)), lower=lower, unit_diagonal=self.unit_diagonal)
        except np.linalg.LinAlgError as error:
            raise SingularMatrixError(f"A is singular: {error}") from error
        return _torch(X, B), BackendReport()


@dataclass
class _LeastSquares:
    """Least squares on ``K = [[I, A], [Aᴴ, 0]]``: SciPy's LSMR/LSQR with refinement, or SuperLU of ``K``."""

    operators: Operators
    method: str
    options: SolveOptions
    factors: Any = None  # augmented_splu

    def solve(self, Z: torch.Tensor, transpose: bool, z0: torch.Tensor | None) -> tuple[torch.Tensor, BackendReport]:
        if self.factors is not None:  # K = Kᴴ: Kᵀ = conj(K), and Kᵀ = K for a real A
            trans = "T" if transpose and Z.is_complex() else "N"
            return _torch(self.factors.solve(_numpy(Z), trans=trans), Z), BackendReport()
        matrix, transposed = self.operators(False), self.operators.adjoint()

        def matvec(X: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(matrix @ _numpy(X)).to(X.dtype)

        def rmatvec(U: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(transposed @ _numpy(U)).to(U.dtype)

        options = self.options
        result = solve_augmented(
            matvec,
            rmatvec,
            Z,
            matrix.shape[0],
            rtol=options.rtol,
            atol=options.atol,
            maxiter=options.maxiter,
            z0=z0,
            least_squares=_scipy_least_squares(self.method, options["conlim"]),
            transpose=transpose,
        )
        return result.Z.to(Z.dtype), BackendReport(result.iterations, result.converged, result.message, result.history)


_State = _Direct | _Iterative | _Triangular | _LeastSquares | LdltState


def _scipy_least_squares(method: str, conlim: float | None) -> Any:
    """A ``least_squares`` routine for :func:`solve_augmented` built on SciPy's LSMR or LSQR."""
    import numpy as np
    import scipy.sparse.linalg as sla

    def run(
        matvec: Any, rmatvec: Any, C: torch.Tensor, q: int, tol: torch.Tensor, maxiter: int, *, consistent: bool
    ) -> tuple[torch.Tensor, int]:
        p = C.shape[0]
        operator = sla.LinearOperator(
            (p, q),
            matvec=lambda v: _numpy(matvec(torch.from_numpy(np.ascontiguousarray(v)).reshape(q, 1))).ravel(),
            rmatvec=lambda u: _numpy(rmatvec(torch.from_numpy(np.ascontiguousarray(u)).reshape(p, 1))).ravel(),
            dtype=_numpy(C).dtype,
        )
        Y = np.zeros((q, C.shape[1]), dtype=_numpy(C).dtype)
        used = 0
        for j in range(C.shape[1]):
            c = _numpy(C[:, j])
            largest = float(np.abs(c).max()) if c.size else 0.0
            if largest == 0.0 or not np.isfinite(largest) or maxiter <= 0:
                continue
            s = 2.0 ** round(np.log2(largest))  # solve for c/s (exact): LSMR/LSQR's own norms are not scale-safe
            c = c / c.dtype.type(s)
            c_norm = float(np.linalg.norm(c))
            relative = min(max(float(tol[j]) / s / c_norm, np.finfo(c.dtype).eps), 1e-2)
            limits = {"atol": relative, "btol": relative}
            if conlim is not None:
                limits["conlim"] = conlim
            with np.errstate(over="ignore"):  # LSMR's float32 bookkeeping starts from 1e300
                if method == "lsmr":
                    result = sla.lsmr(operator, c, maxiter=maxiter, **limits)
                else:
                    result = sla.lsqr(operator, c, iter_lim=maxiter, **limits)
            Y[:, j] = result[0] * s
            used = max(used, int(result[2]))
        return torch.from_numpy(Y), used

    return run


class ScipyBackend:
    """``scipy.sparse.linalg`` for CPU tensors: SuperLU (default), Krylov methods, triangular, least squares.

    * ``splu`` / ``spsolve`` factorize once in ``prepare`` (CSC conversion
      done once, no efficiency warning) and the backward's transpose solve
      reuses the factors (``trans="T"``). A batch sharing one pattern is
      factorized member by member.
    * Iterative methods solve each column of ``B`` in turn with SciPy's
      solver and SciPy's options; the transpose solve uses ``Aᵀ`` (built
      once, on first use) and the preconditioner's transpose.
    * Singular matrices raise :class:`~tsgu_core.errors.SingularMatrixError`.
    * ``splu`` states give log-determinants and selected inverses
      (:class:`~tsgu_core.plugins.protocol.SelectedInversionBackend`), from
      the SuperLU factors (:mod:`tsgu_backends.scipy_cupy_backend.selinv`).
    * ``ldlt`` (SPD ``A`` only) factorizes ``A = Pᵀ L D Lᵀ P`` with SuperLU
      and refuses an ``A`` that is not positive definite; its states also
      draw Gaussian samples (:class:`~tsgu_core.plugins.protocol.SamplingBackend`,
      :mod:`tsgu_backends.scipy_cupy_backend.sampling`).

    Examples
    --------
    >>> import torch
    >>> from tsgu_core import solve
    >>> A = torch.tensor([[3.0, 1.0], [-1.0, 2.0]], dtype=torch.float64).to_sparse_csr()
    >>> solve(A, torch.tensor([4.0, 1.0], dtype=torch.float64), backend="scipy").round(decimals=12)
    tensor([1., 1.], dtype=torch.float64)
    """

    name = "scipy"
    device_types = ("cpu",)
    methods = SCIPY_METHODS
    default_method = "splu"
    preferred_methods: ClassVar[dict[str, str]] = {"spd": "cg", "symmetric": "minres", "hermitian": "minres"}
    priority = 100

    def is_available(self, device_type: str) -> Availability:
        if device_type != "cpu":
            return Availability.no(f"serves only the CPU, not {device_type!r}")
        if importlib.util.find_spec("scipy") is None:
            return Availability.no("SciPy is not installed", install="pip install scipy")
        return Availability.yes()

    def prepare(self, A: torch.Tensor, method: str, options: SolveOptions) -> _State:
        spec = self.methods[method]
        extra = dict(options.extra)
        if spec.operation == "triangular":
            return _Triangular(Operators(torch_to_scipy(A).tocsr()), extra["upper"], extra["unit_diagonal"])
        if A.dim() == 3:
            return self._prepare_batch(A, superlu_keywords(extra))
        matrix = torch_to_scipy(A).tocsr()
        if spec.operation == "lstsq":
            state = _LeastSquares(Operators(matrix), method, options)
            if method == "augmented_splu":
                state.factors = self._factorize_augmented(matrix, superlu_keywords(extra))
            return state
        if spec.sampling:  # ldlt: A = Pᵀ L D Lᵀ P, refused unless positive definite
            return factorize_ldlt(matrix, extra)
        if spec.kind == "direct":
            return _Direct([factorize_member(matrix, superlu_keywords(extra))], batched=False)
        if extra.get("preconditioner") == "ilu" and spec.assumes != "general":
            raise InvalidOptionError(
                f"preconditioner='ilu' is not symmetric, and {method!r} needs a symmetric positive definite "
                "preconditioner: use 'jacobi' or 'amg', or a general method such as 'gmres'",
                option="preconditioner",
            )
        preconditioner = build_preconditioner(
            matrix,
            name=extra.get("preconditioner"),
            M=extra.get("M"),
            ilu_drop_tol=extra.get("ilu_drop_tol"),
            ilu_fill_factor=extra.get("ilu_fill_factor"),
        )
        return _Iterative(Operators(matrix), method, options, library_keywords(extra), preconditioner)

    def _prepare_batch(self, A: torch.Tensor, superlu: dict[str, Any]) -> _Direct:
        """A shared-pattern batch: the CSR→CSC permutation is computed once, each member factorized."""
        import scipy.sparse as sp

        n = A.shape[-1]
        crow, col = A.crow_indices()[0].numpy(), A.col_indices()[0].numpy()
        # A's CSC arrays are Aᵀ's CSR arrays
        indptr, indices, permutation = transpose_csr(row_indices(crow), col, n)
        members = []
        for member, values in enumerate(A.values().numpy()):
            csc = sp.csc_matrix((values[permutation], indices, indptr), shape=(n, n))
            members.append(factorize_member(csc, dict(superlu), what=f"batch member {member} of A"))
        return _Direct(members, batched=True)

    @staticmethod
    def _factorize_augmented(matrix: Any, superlu_options: dict[str, Any]) -> Any:
        import scipy.sparse as sp

        identity = sp.identity(matrix.shape[0], dtype=matrix.dtype, format="csr")
        K = sp.bmat([[identity, matrix], [matrix.conj().T, None]], format="csc")  # Aᴴ (Aᵀ when real)
        return superlu(K, superlu_options, what="the augmented system of A (A is rank deficient)")

    def solve(
        self, state: _State, B: torch.Tensor, *, transpose: bool, x0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, BackendReport]:
        return state.solve(B, transpose, x0)

    @staticmethod
    def _direct(state: _State) -> _Direct:
        if not isinstance(state, _Direct):
            raise BackendContractError(f"only splu states give log-determinants, got {type(state).__name__}")
        return state

    def logdet(self, state: _State) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sign, log|det A|)`` from the SuperLU factors: ``Σ log|U_kk|`` and the permutations' parities."""
        if isinstance(state, LdltState):
            return state.logdet()
        direct = self._direct(state)
        factors = [verified(member) for member in direct.members]
        dtype = torch.from_numpy(factors[0].U.data[:0]).dtype
        pairs = [factor_logdet(lu) for lu in factors]
        sign = torch.tensor([s for s, _ in pairs], dtype=dtype)
        logabsdet = torch.tensor([v for _, v in pairs], dtype=torch.float64).to(dtype.to_real())
        return (sign, logabsdet) if direct.batched else (sign[0], logabsdet[0])

    def selected_inverse(self, state: _State, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Entries of ``A⁻¹`` by the Takahashi recurrences on the SuperLU factors (:mod:`.selinv`)."""
        if isinstance(state, LdltState):
            return state.selected_inverse(rows, cols)
        direct = self._direct(state)
        r, c = rows.numpy(), cols.numpy()
        values = [
            torch.from_numpy(selected_inverse_of_factors(verified(m), r, c, symmetric=m.symmetric))
            for m in direct.members
        ]
        return torch.stack(values) if direct.batched else values[0]

    def precision_sample(self, state: _State, Z: torch.Tensor) -> torch.Tensor:
        """``S Z`` with ``S Sᵀ = A⁻¹`` from an ``ldlt`` factor (:mod:`.sampling`)."""
        if not isinstance(state, LdltState):
            raise BackendContractError(f"only ldlt states draw samples, got {type(state).__name__}")
        return state.precision_sample(Z)
