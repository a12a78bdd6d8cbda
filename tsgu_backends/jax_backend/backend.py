"""The ``jax`` backend object and its cache of compiled solves."""

from __future__ import annotations

import importlib.util
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tsgu_backends.jax_backend.convert import from_jax, precision, to_jax
from tsgu_core import Availability, BackendReport, MethodSpec, SingularMatrixError, SolveOptions
from tsgu_core.pattern import SparsePattern

__all__ = ["JaxBackend", "SolveCache"]

INSTALL = "pip install 'tsgu[jax]'"
_JACOBI = {"preconditioner": "None (default) or 'jacobi': divide by A's diagonal, which must have no zero"}
_REFINEMENTS = 3  # extra passes from the last iterate when the true residual misses the tolerance

METHODS: dict[str, MethodSpec] = {
    "gmres": MethodSpec(
        "gmres",
        "iterative",
        "general",
        {
            "restart": "Krylov dimension per cycle (default 20); maxiter counts iterations, JAX gets ⌈maxiter/restart⌉ "
            "cycles",
            "solve_method": "'batched' (default) or 'incremental' (JAX's two GMRES variants)",
            **_JACOBI,
        },
        "jax.scipy.sparse.linalg.gmres, one vmapped solve per column",
    ),
    "bicgstab": MethodSpec(
        "bicgstab", "iterative", "general", dict(_JACOBI), "jax.scipy.sparse.linalg.bicgstab, one per column"
    ),
    "cg": MethodSpec("cg", "iterative", "spd", dict(_JACOBI), "jax.scipy.sparse.linalg.cg, one per column"),
    "spsolve": MethodSpec(
        "spsolve",
        "direct",
        "general",
        {},
        "jax.experimental.sparse.linalg.spsolve (QR: cuSolver on GPU, SciPy on CPU); it keeps no factorisation, "
        "so the transpose solve factorises Aᵀ again",
    ),
}


class SolveCache:
    """Compiled Krylov solves, one per (method, n, nnz, dtype, device, options), counting compilations.

    JAX compiles a jitted function again for new shapes (a new number of
    columns, say); ``compilations`` counts every trace, so a repeated call
    with the same shapes is seen not to recompile.
    """

    def __init__(self) -> None:
        self._functions: dict[tuple[Any, ...], Callable[..., Any]] = {}
        self._lock = threading.Lock()
        self.compilations = 0

    def get(self, key: tuple[Any, ...], build: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
        with self._lock:
            if key not in self._functions:
                self._functions[key] = build()
            return self._functions[key]


@dataclass
class _State:
    method: str
    dtype: torch.dtype
    device: torch.device
    n: int
    options: SolveOptions
    data: Any = None  # JAX arrays: A's values, and the (row, column) pairs of A and of Aᵀ (int32)
    indices: Any = None
    transposed_indices: Any = None
    inverse_diagonal: Any = None
    restart: int = 20
    solve_method: str = "batched"
    csr: dict[bool, tuple[Any, Any, Any]] = field(default_factory=dict)  # spsolve: transpose → (data, indices, indptr)
    source: torch.Tensor | None = None


def _csr_parts(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    csr = A if A.layout == torch.sparse_csr else A.to_sparse_csr()
    return csr.values(), csr.col_indices().to(torch.int32), csr.crow_indices().to(torch.int32)


class JaxBackend:
    """Krylov methods of ``jax.scipy.sparse.linalg`` and JAX's sparse ``spsolve``, on CPU and CUDA.

    * The operator is a BCOO matrix of ``A``'s entries (measured on CPU, 2-D
      Poisson n = 1e5: 0.5 ms per product, against 1.1–2.5 ms for a
      ``segment_sum`` product); the transpose solve swaps the row and column
      indices — ``Aᵀ``, never ``A`` again.
    * Each column of ``B`` is its own Krylov solve (``vmap``; a column that
      has converged stops changing), never one joint iteration.
    * JAX reports neither convergence nor iterations. The backend measures the
      true residual after a solve and runs up to three more passes from the
      last iterate where it misses; the core's residual check then decides.
    * On a GPU shared with torch, set ``XLA_PYTHON_CLIENT_PREALLOCATE=false``
      before JAX is imported, or JAX reserves most of the GPU's memory.
    """

    name = "jax"
    device_types = ("cpu", "cuda")
    methods = METHODS
    default_method = "gmres"
    priority = 20

    def __init__(self) -> None:
        self.cache = SolveCache()

    def is_available(self, device_type: str) -> Availability:
        if importlib.util.find_spec("jax") is None:
            return Availability.no("JAX is not installed", install=INSTALL)
        if device_type == "cpu":
            return Availability.yes()
        if device_type != "cuda":
            return Availability.no(f"does not serve {device_type!r}")
        if not torch.cuda.is_available():
            return Availability.no("no CUDA device")
        try:
            import jax

            jax.devices("gpu")
        except Exception as error:
            return Availability.no(
                f"JAX has no GPU backend here ({type(error).__name__}: {error})", install="pip install 'jax[cuda12]'"
            )
        return Availability.yes()

    # --- prepare --------------------------------------------------------------

    def prepare(self, A: torch.Tensor, method: str, options: SolveOptions) -> _State:
        extra = dict(options.extra)
        state = _State(method, A.dtype, A.device, A.shape[0], options)
        preconditioner = extra.pop("preconditioner", None)
        if preconditioner not in (None, "jacobi"):
            raise ValueError(f"preconditioner must be None or 'jacobi', got {preconditioner!r}")
        state.restart = extra.pop("restart", 20)
        if isinstance(state.restart, bool) or not isinstance(state.restart, int) or state.restart < 1:
            raise ValueError(f"restart must be an int ≥ 1, got {state.restart!r}")
        state.solve_method = extra.pop("solve_method", "batched")
        if state.solve_method not in ("batched", "incremental"):
            raise ValueError(f"solve_method must be 'batched' or 'incremental', got {state.solve_method!r}")
        if extra:
            raise TypeError(f"jax backend: unhandled option(s) {sorted(extra)}")
        if method == "spsolve":
            state.source = A
            return state
        pattern = SparsePattern.of(A)
        rows, cols = pattern.row.to(torch.int32), pattern.col.to(torch.int32)
        values = A._values() if A.layout == torch.sparse_coo else A.values()
        with precision(A.dtype):
            state.data = to_jax(values)
            state.indices = to_jax(torch.stack([rows, cols], dim=1))
            state.transposed_indices = to_jax(torch.stack([cols, rows], dim=1))
            if preconditioner == "jacobi":
                diagonal = torch.zeros(A.shape[0], dtype=A.dtype, device=A.device)
                on_diagonal = rows == cols
                diagonal.index_add_(0, rows[on_diagonal].long(), values[on_diagonal])
                if bool((diagonal == 0).any()):
                    bad = torch.nonzero(diagonal == 0).flatten()[:5].tolist()
                    raise ValueError(f"preconditioner='jacobi' needs a nonzero diagonal; row(s) {bad} have a zero")
                state.inverse_diagonal = to_jax(1.0 / diagonal)
        return state

    # --- solve ----------------------------------------------------------------

    def solve(
        self, state: _State, B: torch.Tensor, *, transpose: bool, x0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, BackendReport]:
        if state.method == "spsolve":
            return self._spsolve(state, B, transpose), BackendReport()
        options = state.options
        assert options.rtol is not None and options.atol is not None and options.maxiter is not None
        restart = min(state.restart, options.maxiter)  # maxiter counts iterations, even below one cycle
        maxiter = -(-options.maxiter // restart) if state.method == "gmres" else options.maxiter
        limits = (options.rtol, options.atol, maxiter)
        function = self.cache.get(
            self._key(state, transpose, restart, limits), lambda: self._build(state, transpose, restart, limits)
        )
        residual_norms = self.cache.get(
            ("residual", state.n, transpose), lambda: self._build_residual(state, transpose)
        )
        indices = state.transposed_indices if transpose else state.indices
        with precision(state.dtype):
            import jax.numpy as jnp

            Bj = to_jax(B.T)  # one row per column of B: vmap maps over rows
            b_norms = jnp.linalg.norm(Bj, axis=1)
            Xj = jnp.zeros_like(Bj) if x0 is None else to_jax(x0.T)
            if x0 is None and state.method == "bicgstab":
                Xj = self._nudge(Xj, b_norms, state, 0)  # a generic shadow residual (see _nudge)
            target = jnp.maximum(options.rtol * b_norms, options.atol)
            inverse_diagonal = state.inverse_diagonal if state.inverse_diagonal is not None else jnp.ones(1, Bj.dtype)
            passes, previous = 0, None
            while True:
                start = Xj
                Xj = function(state.data, indices, inverse_diagonal, Bj, Xj)
                broken = ~jnp.isfinite(Xj).all(axis=1)
                if bool(broken.any()):  # a breakdown: those columns restart from a nudged start
                    Xj = jnp.where(broken[:, None], self._nudge(start, b_norms, state, passes + 1), Xj)
                norms = residual_norms(state.data, indices, Bj, Xj)
                missing = ~(norms <= target)
                if not bool(missing.any()) or passes == _REFINEMENTS:
                    break
                stalled = previous is not None and not bool((norms < previous)[missing].any())
                if stalled and not bool(broken.any()):
                    break
                previous, passes = norms, passes + 1
            X = from_jax(Xj).T.to(B.dtype)
        converged = not bool(missing.any())
        message = f"{passes} refinement pass(es) after JAX's solve" if passes else ""
        return X.contiguous(), BackendReport(iterations=None, converged=converged, message=message)

    @staticmethod
    def _key(state: _State, transpose: bool, restart: int, limits: tuple[float, float, int]) -> tuple[Any, ...]:
        nnz = int(state.data.shape[0])
        preconditioned = state.inverse_diagonal is not None
        return (state.method, state.n, nnz, state.dtype, str(state.device), restart, state.solve_method,
                preconditioned, transpose, limits)  # fmt: skip

    @staticmethod
    def _nudge(X: Any, b_norms: Any, state: _State, seed: int) -> Any:
        """``X`` plus a tiny seeded random vector (``1e-6 ‖b‖ / ‖A‖_F`` per column).

        BiCGSTAB takes its shadow residual from the initial residual; for a
        right-hand side with one non-zero (a one-hot gradient) it can be
        orthogonal to the Krylov vectors, and the method breaks down (JAX's
        then returns NaN). A nudged start makes the shadow residual generic;
        the true-residual check judges the result as always.
        """
        import jax
        import jax.numpy as jnp

        noise = jax.random.normal(jax.random.PRNGKey(seed), X.shape, dtype=X.dtype)
        scale = 1e-6 * b_norms / (jnp.linalg.norm(state.data) * jnp.linalg.norm(noise, axis=1))
        return X + scale[:, None] * noise

    @staticmethod
    def _operator(n: int, transpose: bool) -> Callable[..., Any]:
        from jax.experimental import sparse

        def operator(data: Any, indices: Any) -> Any:
            return sparse.BCOO((data, indices), shape=(n, n), indices_sorted=not transpose)

        return operator

    def _build(
        self, state: _State, transpose: bool, restart: int, limits: tuple[float, float, int]
    ) -> Callable[..., Any]:
        """The jitted solve of every column; tolerances and iteration caps are compile-time constants,
        part of the cache key (method, n, nnz, dtype, device, options), as the indices are arguments."""
        import jax
        import jax.scipy.sparse.linalg as jsla

        operator = self._operator(state.n, transpose)
        method, solve_method = state.method, state.solve_method
        preconditioned = state.inverse_diagonal is not None
        rtol, atol, maxiter = limits
        cache = self.cache

        def solve_all(data, indices, inverse_diagonal, B, X0):  # type: ignore[no-untyped-def]
            cache.compilations += 1  # runs once per trace, i.e. per compilation
            A = operator(data, indices)

            def matvec(v: Any) -> Any:
                return A @ v

            M = (lambda v: inverse_diagonal * v) if preconditioned else None

            def one(b: Any, x0: Any) -> Any:
                if method == "gmres":
                    return jsla.gmres(
                        matvec, b, x0, tol=rtol, atol=atol, restart=restart, maxiter=maxiter, M=M,
                        solve_method=solve_method,
                    )[0]  # fmt: skip
                solver = jsla.cg if method == "cg" else jsla.bicgstab
                return solver(matvec, b, x0, tol=rtol, atol=atol, maxiter=maxiter, M=M)[0]

            if B.shape[0] == 1:  # one column: no vmap (batched sparse products are slower on the CPU)
                return one(B[0], X0[0])[None]
            return jax.vmap(one)(B, X0)

        return jax.jit(solve_all)

    def _build_residual(self, state: _State, transpose: bool) -> Callable[..., Any]:
        import jax
        import jax.numpy as jnp

        operator = self._operator(state.n, transpose)

        def norms(data, indices, B, X):  # type: ignore[no-untyped-def]
            return jnp.linalg.norm(B - (operator(data, indices) @ X.T).T, axis=1)

        return jax.jit(norms)

    def _spsolve(self, state: _State, B: torch.Tensor, transpose: bool) -> torch.Tensor:
        from jax.experimental.sparse.linalg import spsolve

        assert state.source is not None
        if transpose not in state.csr:
            source = state.source
            if transpose:
                source = source.t().to_sparse_csr() if source.layout == torch.sparse_csr else source.t().coalesce()
            with precision(state.dtype):
                state.csr[transpose] = tuple(to_jax(part) for part in _csr_parts(source))  # type: ignore[assignment]
        data, indices, indptr = state.csr[transpose]
        with precision(state.dtype), warnings.catch_warnings():
            # on the CPU JAX hands the solve to SciPy, which warns and returns NaN for a singular A;
            # the core turns the NaN into SingularMatrixError, so the warning says nothing more
            warnings.filterwarnings("ignore", message="Matrix is exactly singular")
            try:
                columns = [from_jax(spsolve(data, indices, indptr, to_jax(B[:, j]))) for j in range(B.shape[1])]
            except Exception as error:  # on the GPU, cuSolver reports a singular A as a runtime error
                if "singular" in str(error).lower():
                    raise SingularMatrixError(f"A is singular: {error}") from error
                raise
        return torch.stack(columns, dim=1).to(B.dtype)
