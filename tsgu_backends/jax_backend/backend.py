"""The ``jax`` backend object and its cache of compiled solves."""

from __future__ import annotations

import importlib.util
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from tsgu_backends.jax_backend.convert import from_jax, precision, to_jax
from tsgu_backends.jax_backend.operator import hybrid_matvec, hybrid_parts
from tsgu_core import (
    Availability,
    BackendReport,
    InvalidOptionError,
    MethodSpec,
    Option,
    SingularMatrixError,
    SolveOptions,
    SparsePattern,
)
from tsgu_core.plugins.kit import Restarts, largest_power_of_two, nudge, scaled_norm

__all__ = ["JaxBackend", "SolveCache"]


class _ProductCount:
    """Products with ``A`` per column of one solve, and the number of calls into JAX's solver."""

    def __init__(self, k: int) -> None:
        self.counts = [0] * k
        self.calls = 0


class _CountRegistry:
    """Where the compiled solves report their products: ``token → _ProductCount`` of the running solve.

    ``jax.debug.callback`` runs on a thread of XLA's, so the running solve is
    found by the token passed into the compiled function, not by a thread-local.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[int, _ProductCount] = {}
        self._next = 0

    @contextmanager
    def register(self, count: _ProductCount) -> Iterator[int]:
        with self._lock:
            token, self._next = self._next, self._next + 1
            self._active[token] = count
        count.calls += 1
        try:
            yield token
        finally:
            with self._lock:
                del self._active[token]

    def tally(self, token: Any, columns: Any) -> None:
        import numpy as np

        count = self._active.get(int(token))
        if count is not None:
            for column in np.atleast_1d(np.asarray(columns)):
                count.counts[int(column)] += 1


_COUNTS = _CountRegistry()


def _iterations(method: str, products: list[int], calls: int, restart: int) -> int:
    """Iterations from products with ``A`` (largest over columns), as JAX's solvers spend them.

    Measured on JAX 0.4–0.7 with ``tol=0`` (every iteration runs): CG makes
    one product per iteration plus one per call (the initial residual);
    BiCGSTAB two per iteration plus two per call; GMRES one per Krylov step,
    one per restart cycle and two per call.
    """
    most = max(products, default=0)
    if method == "cg":
        return max(most - calls, 0)
    if method == "bicgstab":
        return max(-(-(most - 2 * calls) // 2), 0)
    spent = max(most - 2 * calls, 0)
    return spent - -(-spent // (restart + 1))


INSTALL = "pip install 'tsgu[jax]'"
_JACOBI = {
    "preconditioner": Option(
        "'jacobi': divide by A's diagonal, which must have no zero (None: no preconditioner)",
        type=str,
        choices=("jacobi",),
    )
}
_REFINEMENTS = 3  # extra passes from the last iterate when the true residual misses the tolerance

METHODS: dict[str, MethodSpec] = {
    "gmres": MethodSpec(
        "gmres",
        "iterative",
        "general",
        {
            "restart": Option(
                "Krylov dimension per cycle; maxiter counts iterations, JAX gets ⌈maxiter/restart⌉ cycles",
                type=int,
                default=20,
                minimum=1,
            ),
            "solve_method": Option(
                "JAX's GMRES variant", type=str, default="batched", choices=("batched", "incremental")
            ),
            **_JACOBI,
        },
        "jax.scipy.sparse.linalg.gmres, one vmapped solve per column",
        complex=True,
    ),
    "bicgstab": MethodSpec(
        "bicgstab",
        "iterative",
        "general",
        dict(_JACOBI),
        "jax.scipy.sparse.linalg.bicgstab, one per column",
        complex=True,
    ),
    "cg": MethodSpec(
        "cg",
        "iterative",
        "spd",
        dict(_JACOBI),
        "jax.scipy.sparse.linalg.cg, one per column (complex: A Hermitian positive definite)",
        complex=True,
    ),
    "spsolve": MethodSpec(
        "spsolve",
        "direct",
        "general",
        {},
        "jax.experimental.sparse.linalg.spsolve (QR: cuSolver on GPU; SciPy's spsolve, called directly, on CPU); "
        "it keeps no factorization, so the transpose solve factorizes Aᵀ again",
        complex=True,
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
    """A Krylov method's state: ``A``'s pattern and values, and the JAX arrays of its products."""

    method: str
    dtype: torch.dtype
    device: torch.device
    n: int
    options: SolveOptions
    pattern: SparsePattern
    values: torch.Tensor
    data: Any = None  # JAX array of A's values
    operands: dict[bool, tuple[Any, ...]] = field(default_factory=dict)  # transpose → the product's JAX arrays
    inverse_diagonal: Any = None

    @property
    def restart(self) -> int:
        """GMRES's cycle length (its declared option); the other methods have no cycles (1: it only keys the cache)."""
        return int(self.options["restart"]) if self.method == "gmres" else 1

    @property
    def solve_method(self) -> str | None:
        """GMRES's variant (its declared option); ``None`` for the other methods."""
        return str(self.options["solve_method"]) if self.method == "gmres" else None


@dataclass
class _SpSolve:
    """JAX's ``spsolve``: no factorization is kept, so ``Aᵀ``'s CSR arrays are made for the transpose solve.

    On the CPU, JAX's ``spsolve`` is SciPy's ``spsolve`` run in a host
    callback, and JAX converts the callback's result to the dtype that the
    *callback's thread* allows: ``jax.enable_x64`` is a per-thread setting, and
    XLA runs the callback on a thread of its own when it dispatches the
    computation asynchronously, so a float64 result came back as float32 and
    JAX raised "Incorrect output dtype" (3 of 40 solves after a Krylov solve had
    run, measured). On the CPU the same SciPy routine is therefore called here
    directly, in the calling thread: the same numbers, deterministically. On a
    GPU the solve is cuSolver's, with no callback.
    """

    dtype: torch.dtype
    pattern: SparsePattern
    values: torch.Tensor
    csr: dict[bool, tuple[Any, Any, Any]] = field(default_factory=dict)  # transpose → (data, indices, indptr)

    def _arrays(self, transpose: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(values, col, crow)`` of ``A`` (or ``Aᵀ``) in CSR order, int32 indices."""
        pattern, values = self.pattern, self.values
        if transpose:
            pattern, order = pattern.transposed()
            values = values[order]
        crow, col = pattern.csr_indices(torch.int32)
        return values, col, crow

    def solve(self, B: torch.Tensor, transpose: bool) -> torch.Tensor:
        # scaled as the Krylov solves are: (A/σ) Y = B/s, X = Y·s/σ, powers of two (exact)
        values = self.values
        sigma = float(largest_power_of_two(values))
        scales = largest_power_of_two(B, dim=0)
        B = B / scales
        with warnings.catch_warnings():
            # SciPy warns and returns NaN for a singular A; the core turns the NaN into SingularMatrixError, so
            # the warning says nothing more
            warnings.filterwarnings("ignore", message="Matrix is exactly singular")
            Y = self._host(B, transpose, sigma) if values.device.type == "cpu" else self._device(B, transpose, sigma)
        return (Y.to(B.dtype) * (scales / sigma)).contiguous()

    def _host(self, B: torch.Tensor, transpose: bool, sigma: float) -> torch.Tensor:
        """SciPy's ``spsolve``, the routine JAX's CPU ``spsolve`` calls back into, in this thread."""
        import scipy.sparse
        import scipy.sparse.linalg

        if transpose not in self.csr:
            data, indices, indptr = self._arrays(transpose)
            self.csr[transpose] = (data.numpy(), indices.numpy(), indptr.numpy())
        data, indices, indptr = self.csr[transpose]
        n = B.shape[0]
        matrix = scipy.sparse.csr_matrix((data / sigma, indices, indptr), shape=(n, n))
        X = scipy.sparse.linalg.spsolve(matrix, B.numpy())
        return torch.from_numpy(np.asarray(X, dtype=data.dtype).reshape(B.shape))

    def _device(self, B: torch.Tensor, transpose: bool, sigma: float) -> torch.Tensor:
        """JAX's ``spsolve`` (cuSolver's QR), one column at a time."""
        from jax.experimental.sparse.linalg import spsolve

        if transpose not in self.csr:
            with precision(self.dtype):
                data, indices, indptr = self._arrays(transpose)
                self.csr[transpose] = (to_jax(data), to_jax(indices), to_jax(indptr))
        data, indices, indptr = self.csr[transpose]
        with precision(self.dtype):
            data = data / sigma
            try:
                columns = [from_jax(spsolve(data, indices, indptr, to_jax(B[:, j]))) for j in range(B.shape[1])]
            except Exception as error:  # cuSolver reports a singular A as a runtime error
                if "singular" in str(error).lower():
                    raise SingularMatrixError(f"A is singular: {error}") from error
                raise
        return torch.stack(columns, dim=1)


class JaxBackend:
    """Krylov methods of ``jax.scipy.sparse.linalg`` and JAX's sparse ``spsolve``, on CPU and CUDA.

    * On the CPU the product is a hybrid ELL + COO product
      (:mod:`~tsgu_backends.jax_backend.operator`: 0.27 ms per product on
      2-D Poisson n = 1e5, one thread, against 1.3 ms for ``BCOO``); on a GPU
      it is a ``BCOO`` matrix. The transpose solve builds the same layout
      from ``Aᵀ``'s entries — ``Aᵀ``, never ``A`` again.
    * Each column of ``B`` is its own Krylov solve, never one joint
      iteration: one after the other on the CPU (``lax.map``, so a column
      runs only its own iterations), together on a GPU (``vmap``; a column
      that has converged stops changing).
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
    preferred_methods: ClassVar[dict[str, str]] = {"spd": "cg"}
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

    def prepare(self, A: torch.Tensor, method: str, options: SolveOptions) -> _State | _SpSolve:
        pattern = SparsePattern.of(A)
        values = A._values() if A.layout == torch.sparse_coo else A.values()
        if method == "spsolve":
            return _SpSolve(A.dtype, pattern, values)
        if values.numel() == 0 and A.shape[0] > 0:  # the zero matrix: the Krylov scaling below has nothing to scale by
            raise SingularMatrixError(f"A ({A.shape[0]}×{A.shape[1]}) has no stored entries: it is the zero matrix")
        state = _State(method, A.dtype, A.device, A.shape[0], options, pattern, values)
        with precision(A.dtype):
            state.data = to_jax(values)
            self._operands(state, transpose=False)  # A is converted here; Aᵀ on the first transpose solve
            if options["preconditioner"] == "jacobi":
                diagonal = pattern.diagonal(values)
                if bool((diagonal == 0).any()):
                    bad = torch.nonzero(diagonal == 0).flatten()[:5].tolist()
                    raise InvalidOptionError(
                        f"preconditioner='jacobi' needs a nonzero diagonal; row(s) {bad} have a zero",
                        option="preconditioner",
                    )
                state.inverse_diagonal = to_jax(1.0 / diagonal)
        return state

    # --- solve ----------------------------------------------------------------

    def solve(
        self, state: _State | _SpSolve, B: torch.Tensor, *, transpose: bool, x0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, BackendReport]:
        """Solve in scaled form, counting JAX's products with ``A`` to report (and bound) iterations.

        Scaling: ``(A/σ) Y = B/s`` with ``σ`` the largest magnitude of ``A``'s
        values and ``s`` that of each column of ``B``, powers of two (exact);
        ``X = Y·s/σ``. JAX's solvers take unscaled norms, which underflow or
        overflow for problems scaled by ``1e±160``; scaled, they run as the
        unscaled problem does.

        Iterations: JAX reports none, so every product with ``A`` inside the
        compiled solve reports its column to the host (``jax.debug.callback``)
        and the count is turned into the method's iterations (CG: products − 1
        per call; BiCGSTAB: (products − 2)/2; GMRES: products less one per call
        and one per restart cycle, see :func:`_iterations`). Every pass —
        JAX's solve and each refinement pass — is charged to ``maxiter``: a
        pass gets only the iterations left (GMRES: whole cycles only), so the
        count never exceeds ``maxiter``. The reported count is the largest
        over the columns.
        """
        if isinstance(state, _SpSolve):
            return state.solve(B, transpose), BackendReport()
        options = state.options
        restart = min(state.restart, options.maxiter)  # maxiter counts iterations, even below one cycle
        sigma = float(largest_power_of_two(state.values.detach()))
        a_norm = float(scaled_norm(state.values.detach() / sigma, dim=0))  # ‖A/σ‖_F, for the nudge
        column_scales = largest_power_of_two(B, dim=0)  # s, (k,)
        k = B.shape[1]
        with precision(state.dtype):
            import jax.numpy as jnp

            operands = self._operands(state, transpose)
            layout = self._layout(state, transpose)
            function = self.cache.get(self._key(state, layout, restart), lambda: self._build(state, layout, restart))
            residual_norms = self.cache.get(
                ("residual", state.n, layout, str(state.device)), lambda: self._build_residual(state, layout)
            )
            Bj = to_jax((B / column_scales).T)  # one row per (scaled) column of B: the solve maps over rows
            b_norms = jnp.linalg.norm(Bj, axis=1)
            Xj = jnp.zeros_like(Bj) if x0 is None else to_jax((x0 * (sigma / column_scales)).T)
            if x0 is None and state.method == "bicgstab":
                Xj = self._nudge(Xj, b_norms, a_norm, 0)  # a generic shadow residual (see _nudge)
            atols = to_jax(options.atol / column_scales)
            target = jnp.maximum(options.rtol * b_norms, atols)
            inverse_diagonal = state.inverse_diagonal if state.inverse_diagonal is not None else jnp.ones(1, Bj.dtype)
            columns = jnp.arange(k)
            products = _ProductCount(k)
            rules = Restarts(
                options.maxiter, max_attempts=_REFINEMENTS + 1, reference=np.asarray(b_norms)
            )  # JAX's solve and refinement passes
            norms = residual_norms(operands, Bj, Xj, sigma)
            while rules.review(np.asarray(norms), np.asarray(norms <= target)) == "attempt":
                allowed = rules.left // restart if state.method == "gmres" else rules.left  # GMRES: whole cycles
                if allowed <= 0:
                    break
                start = Xj
                with _COUNTS.register(products) as token:
                    Xj = function(
                        operands, inverse_diagonal, Bj, Xj, options.rtol, atols, allowed, sigma, token, columns
                    )
                    Xj.block_until_ready()
                rules.charge(_iterations(state.method, products.counts, products.calls, restart) - rules.used)
                broken = ~jnp.isfinite(Xj).all(axis=1)
                if bool(broken.any()):  # a breakdown: those columns restart from a nudged start
                    Xj = jnp.where(broken[:, None], self._nudge(start, b_norms, a_norm, rules.attempts), Xj)
                    rules.forget()  # judge the restarted columns afresh
                norms = residual_norms(operands, Bj, Xj, sigma)
            used, passes = rules.used, max(rules.attempts - 1, 0)
            X = (from_jax(Xj).T.to(B.dtype) * (column_scales / sigma)).contiguous()
            norms = residual_norms(operands, Bj, Xj, sigma)
            missing = ~(norms <= target)
        converged = not bool(missing.any())
        message = f"{passes} refinement pass(es) after JAX's solve" if passes else ""
        if not converged and used >= options.maxiter:
            message = "; ".join(filter(None, [message, f"reached maxiter={options.maxiter}"]))
        return X, BackendReport(iterations=used, converged=converged, message=message, history=tuple(rules.history))

    @staticmethod
    def _key(state: _State, layout: tuple[Any, ...], restart: int) -> tuple[Any, ...]:
        preconditioned = state.inverse_diagonal is not None
        return (state.method, state.n, layout, state.dtype, str(state.device), restart, state.solve_method,
                preconditioned)  # fmt: skip

    @staticmethod
    def _hybrid(state: _State) -> bool:
        """Whether the product is the hybrid ELL + COO one (CPU) rather than ``BCOO`` (GPU)."""
        return state.device.type == "cpu"

    def _operands(self, state: _State, transpose: bool) -> tuple[Any, ...]:
        """The JAX arrays of ``A``'s (or ``Aᵀ``'s) product, built once per state and flag; call under precision."""
        if transpose not in state.operands:
            pattern, values = state.pattern, state.values
            if transpose:  # Aᵀ's entries, sorted by their row (A's column)
                pattern, order = pattern.transposed()
                values = values[order]
            row, col = pattern.row, pattern.col
            parts: tuple[torch.Tensor, ...]
            if self._hybrid(state):
                parts = hybrid_parts(row, col, values, state.n)
            else:
                parts = (values, row.to(torch.int32), col.to(torch.int32))
            state.operands[transpose] = tuple(to_jax(part) for part in parts)
        return state.operands[transpose]

    def _layout(self, state: _State, transpose: bool) -> tuple[Any, ...]:
        """The static shape of the product, part of the compiled solve's cache key."""
        operands = state.operands[transpose]
        if self._hybrid(state):
            return ("hybrid", int(operands[0].shape[0]), int(operands[2].shape[0]))
        return ("bcoo", int(operands[0].shape[0]))

    def _matvec(self, state: _State, layout: tuple[Any, ...]) -> Callable[..., Any]:
        """``matvec(operands, x)`` for a 1-D ``x``."""
        n = state.n
        if layout[0] == "hybrid":
            product = hybrid_matvec(n, layout[1], layout[2] > 0)
            return lambda operands, x: product(*operands, x)
        from jax.experimental import sparse

        def bcoo_matvec(operands: tuple[Any, ...], x: Any) -> Any:
            import jax.numpy as jnp

            data, rows, cols = operands
            matrix = sparse.BCOO((data, jnp.stack([rows, cols], axis=1)), shape=(n, n), indices_sorted=True)
            return matrix @ x

        return bcoo_matvec

    @staticmethod
    def _nudge(X: Any, b_norms: Any, a_norm: float, seed: int) -> Any:
        """``X`` (one row per column of ``B``) plus :func:`tsgu_core.plugins.kit.nudge` per row, in scaled units."""
        import jax.numpy as jnp
        import numpy as np

        rows = [nudge(X.shape[1], 1000 * seed + j, float(b), a_norm) for j, b in enumerate(np.asarray(b_norms))]
        return X + jnp.asarray(np.stack(rows) if rows else np.zeros(X.shape), dtype=X.dtype)

    def _build(self, state: _State, layout: tuple[Any, ...], restart: int) -> Callable[..., Any]:
        import jax
        import jax.scipy.sparse.linalg as jsla

        product = self._matvec(state, layout)
        method, solve_method = state.method, state.solve_method
        preconditioned = state.inverse_diagonal is not None
        one_by_one = self._hybrid(state)
        cache = self.cache

        def solve_all(operands, inverse_diagonal, B, X0, rtol, atols, maxiter, sigma, token, columns):  # type: ignore[no-untyped-def]
            cache.compilations += 1  # runs once per trace, i.e. per compilation

            def one(args: tuple[Any, Any, Any, Any]) -> Any:
                b, x0, atol, column = args

                def matvec(v: Any) -> Any:  # (A/σ) v, and one product of this column reported to the host
                    jax.debug.callback(_COUNTS.tally, token, column)
                    return product(operands, v) / sigma

                M = (lambda v: inverse_diagonal * v * sigma) if preconditioned else None
                if method == "gmres":
                    return jsla.gmres(
                        matvec, b, x0, tol=rtol, atol=atol, restart=restart, maxiter=maxiter, M=M,
                        solve_method=solve_method,
                    )[0]  # fmt: skip
                solver = jsla.cg if method == "cg" else jsla.bicgstab
                return solver(matvec, b, x0, tol=rtol, atol=atol, maxiter=maxiter, M=M)[0]

            if one_by_one:  # each column runs its own loop, for its own number of iterations
                return jax.lax.map(one, (B, X0, atols, columns))
            return jax.vmap(one)((B, X0, atols, columns))

        return jax.jit(solve_all)

    def _build_residual(self, state: _State, layout: tuple[Any, ...]) -> Callable[..., Any]:
        import jax
        import jax.numpy as jnp

        product = self._matvec(state, layout)

        def norms(operands, B, X, sigma):  # type: ignore[no-untyped-def]
            AX = jax.vmap(lambda x: product(operands, x) / sigma)(X)
            return jnp.linalg.norm(B - AX, axis=1)

        return jax.jit(norms)
