"""The ``torch`` backend object."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from tsgu_backends.torch_backend.ilu import IncompleteLU
from tsgu_backends.torch_backend.krylov import krylov_solve
from tsgu_backends.torch_backend.operator import CsrOperator
from tsgu_core import Availability, BackendReport, InvalidOptionError, MethodSpec, Option, SolveOptions
from tsgu_core.plugins.kit import merge_reports, solve_augmented

__all__ = ["TorchBackend"]

_JACOBI = Option(
    "'jacobi': divide by A's diagonal, which must have no zero (None: no preconditioner)",
    type=str,
    choices=("jacobi",),
)
_GENERAL_PRECONDITIONERS = {
    "preconditioner": Option(
        "'jacobi': divide by A's diagonal (no zero allowed); 'ilu0': incomplete LU on A's pattern, built and applied "
        "on A's device (needs a stored diagonal); None: no preconditioner",
        type=str,
        choices=("jacobi", "ilu0"),
    ),
    "ilu_sweeps": Option("fixed-point sweeps that compute the ILU(0) factors", type=int, default=5, minimum=1),
}
_RESTART = Option("Krylov dimension before a restart", type=int, default=20, minimum=1)
_BATCH_CHUNK = {
    "batch_chunk": Option(
        "a batched A (b, n, n): how many members iterate together (the chunks are solved one after another); "
        "default on the CPU: as many as keep one chunk's matrix and vectors within ~16 MiB, so its iterations "
        "run from the cache (see benchmarks/batched.py); elsewhere the whole batch; refused for an A that is "
        "not batched and with a callable M",
        type=int,
        minimum=1,
    )
}
_USER_M = {
    "M": Option(
        "your preconditioner M ≈ A⁻¹: a tensor (dense or sparse, applied as M @ R) or a callable R ↦ M⁻¹R on "
        "(..., n, k) tensors; exclusive with preconditioner"
    ),
    "M_transpose": Option(
        "Mᵀ (the plain transpose, also for complex M) for the backward's transpose solve when M is a callable "
        "(a tensor M is transposed by tsgu)"
    ),
}

_FUSED = Option(
    "CPU, float32/float64: each iteration's vector work in fused loops compiled by numba, one pass over memory "
    "per stage (CG: three passes instead of six, BiCGSTAB: five instead of fourteen; n = 1e5, 8 columns: see "
    "benchmarks/block_krylov.py), compiled on first use per dtype (seconds; then loaded from a per-user disk "
    "cache, $TSGU_KERNEL_CACHE, that is refused if others can write it); eager (with a warning) where they "
    "cannot be built or on other devices; complex A: refused",
    type=bool,
    default=False,
)

METHODS: dict[str, MethodSpec] = {
    "gmres": MethodSpec(
        "gmres",
        "iterative",
        "general",
        {"restart": _RESTART, **_GENERAL_PRECONDITIONERS, **_USER_M, **_BATCH_CHUNK},
        "restarted GMRES, right-preconditioned; robust for any invertible A",
        batched=True,
        complex=True,
    ),
    "bicgstab": MethodSpec(
        "bicgstab",
        "iterative",
        "general",
        {**_GENERAL_PRECONDITIONERS, **_USER_M, **_BATCH_CHUNK, "fused": _FUSED},
        "BiCGSTAB; cheap per iteration for nonsymmetric A, may break down (restarted automatically)",
        batched=True,
        complex=True,
    ),
    "cg": MethodSpec(
        "cg",
        "iterative",
        "spd",
        {
            "preconditioner": Option(_JACOBI.doc + "; positive for cg", type=str, choices=("jacobi",)),
            **_USER_M,
            **_BATCH_CHUNK,
            "fused": _FUSED,
        },
        "conjugate gradients; A must be symmetric positive definite (complex: Hermitian positive definite)",
        batched=True,
        complex=True,
    ),
    "minres": MethodSpec(
        "minres",
        "iterative",
        "symmetric",
        {
            "preconditioner": Option(
                "'jacobi': divide by |diag A|, which must have no zero", type=str, choices=("jacobi",)
            ),
            **_USER_M,
            **_BATCH_CHUNK,
        },
        "MINRES; A must be symmetric (complex: Hermitian; may be indefinite)",
        batched=True,
        complex=True,
    ),
    "lsqr": MethodSpec(
        "lsqr",
        "iterative",
        "general",
        {},
        "LSQR on A and Aᵀ (Aᴴ when complex; Paige & Saunders), with refinement on the augmented system",
        operation="lstsq",
        complex=True,
    ),
    "triangular": MethodSpec(
        "triangular",
        "direct",
        "general",
        {},
        "torch.triangular_solve on CSR (MKL on CPU, cuSPARSE on CUDA)",
        operation="triangular",
        complex=True,
        # measured (CPU, one thread, lower triangle of 2-D Poisson, n = 1e5): 2.2 ms against
        # 7.7 ms for scipy.sparse.linalg.spsolve_triangular (k = 1) and 5.9 ms against 41 ms (k = 8)
        priority=150,
    ),
}


_FUSED_METHODS = tuple(name for name, spec in METHODS.items() if "fused" in spec.options)  # those that declare it


def _jacobi(operator: CsrOperator, method: str) -> torch.Tensor:
    diagonal = operator.diagonal()
    if method == "minres":
        diagonal = diagonal.abs()  # MINRES needs an SPD preconditioner
    elif method == "cg" and diagonal.is_complex():
        diagonal = diagonal.real  # Hermitian positive definite A: a real positive diagonal
    bad = torch.nonzero(diagonal.real <= 0 if method in ("cg", "minres") else diagonal == 0)
    if bad.shape[0]:
        rows = [tuple(index) if len(index) > 1 else index[0] for index in bad[:5].tolist()]
        need = "positive" if method == "cg" else "nonzero"
        raise InvalidOptionError(
            f"preconditioner='jacobi' needs a {need} diagonal, but row(s) {rows} "
            f"({bad.shape[0]} in all) have {'a non-positive' if method == 'cg' else 'a zero'} diagonal entry; "
            "use preconditioner=None",
            option="preconditioner",
        )
    return (1.0 / diagonal).unsqueeze(-1)


@dataclass
class _Triangular:
    """A triangular CSR matrix for ``torch.triangular_solve``."""

    matrix: torch.Tensor
    upper: bool
    unit_diagonal: bool

    def solve(self, B: torch.Tensor, transpose: bool, x0: torch.Tensor | None) -> tuple[torch.Tensor, BackendReport]:
        # contiguous: torch 2.13's sparse triangular_solve returns wrong numbers for a strided
        # (n, 1) view of a wider B (seen here; tested in tests/test_triangular.py)
        solution = torch.triangular_solve(
            B.contiguous(), self.matrix, upper=self.upper, transpose=transpose, unitriangular=self.unit_diagonal
        ).solution
        return solution, BackendReport()


Preconditioner = Callable[[torch.Tensor], torch.Tensor]


def _matrix_preconditioner(
    M: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> tuple[Preconditioner, Preconditioner]:
    """``R ↦ M @ R`` and ``R ↦ Mᵀ @ R`` for a (dense or sparse) ``n × n`` tensor ``M``."""
    n = shape[-1]
    if M.dim() != 2 or tuple(M.shape) != (n, n):
        raise InvalidOptionError(f"M must be an ({n}, {n}) matrix approximating A⁻¹, got {tuple(M.shape)}", option="M")
    if M.dtype != dtype or M.device != device:
        raise InvalidOptionError(
            f"the preconditioner M is {M.dtype} on {M.device} but A is {dtype} on {device}; "
            f"pass M.to(dtype={dtype}, device='{device}') — tsgu does not cast silently",
            option="M",
        )
    transposed = M.t()
    if M.layout != torch.strided:
        transposed = transposed.to_sparse_csr() if M.layout == torch.sparse_csr else transposed.coalesce()

    def apply(matrix: torch.Tensor) -> Preconditioner:
        def product(R: torch.Tensor) -> torch.Tensor:
            flat = R.reshape(-1, n, R.shape[-1])
            return torch.stack([matrix @ member for member in flat]).reshape(R.shape)

        return product

    return apply(M), apply(transposed)


def _preconditioners(
    operator: CsrOperator, method: str, options: SolveOptions
) -> tuple[Preconditioner | None, Preconditioner | None]:
    """The forward and transpose preconditioners the options ask for (``None``: none, or not given)."""
    M, M_transpose = options["M"], options["M_transpose"]
    if M is not None and options["preconditioner"] is not None:
        raise InvalidOptionError("pass either M or a named preconditioner, not both", option="M")
    if M_transpose is not None and not callable(M):
        raise InvalidOptionError("M_transpose goes with a callable M", option="M_transpose")
    if options["preconditioner"] == "ilu0":
        factors = IncompleteLU(operator.pattern, operator.values, options["ilu_sweeps"])
        return factors.apply, lambda R: factors.apply(R, transpose=True)
    if options["preconditioner"] == "jacobi":
        inverse_diagonal = _jacobi(operator, method)  # diag(Aᵀ) = diag(A): valid for both solves

        def scale(R: torch.Tensor) -> torch.Tensor:
            return inverse_diagonal * R

        return scale, scale
    if M is None:
        return None, None
    if isinstance(M, torch.Tensor):
        return _matrix_preconditioner(M, (operator.n,), operator.values.dtype, operator.values.device)
    if not callable(M):
        raise InvalidOptionError(f"M must be a tensor or a callable, got {type(M).__name__}", option="M")
    if M_transpose is not None and not callable(M_transpose):
        raise InvalidOptionError(
            f"M_transpose must be a callable, got {type(M_transpose).__name__}", option="M_transpose"
        )
    return _checked(M, "M"), None if M_transpose is None else _checked(M_transpose, "M_transpose")


def _checked(M: Preconditioner, name: str) -> Preconditioner:
    """``M`` checked at each call: it must return a tensor of its input's shape, dtype and device."""

    def apply(R: torch.Tensor) -> torch.Tensor:
        Z = M(R)
        if not isinstance(Z, torch.Tensor) or Z.shape != R.shape or Z.dtype != R.dtype or Z.device != R.device:
            got = (
                f"{tuple(Z.shape)} {Z.dtype} on {Z.device}"
                if isinstance(Z, torch.Tensor)
                else f"{type(Z).__name__} ({Z!r})"[:80]
            )
            raise InvalidOptionError(
                f"the preconditioner {name} (a callable) returned {got} for an input of {tuple(R.shape)} {R.dtype} "
                f"on {R.device}; it must return M⁻¹R as a tensor of its input's shape (..., n, k), dtype and device",
                option=name,
            )
        return Z

    return apply


@dataclass
class _Krylov:
    """A Krylov method on ``A`` (and ``Aᵀ`` for the transpose solve), optionally preconditioned."""

    operator: CsrOperator
    method: str
    options: SolveOptions
    preconditioner: Preconditioner | None
    transpose_preconditioner: Preconditioner | None

    def solve(self, B: torch.Tensor, transpose: bool, x0: torch.Tensor | None) -> tuple[torch.Tensor, BackendReport]:
        operator = self.operator
        precond = self.transpose_preconditioner if transpose else self.preconditioner
        if transpose and self.preconditioner is not None and precond is None:
            raise InvalidOptionError(
                "the backward pass solves with Aᵀ and needs Mᵀ: pass M_transpose= (a callable) with a callable M",
                option="M_transpose",
            )

        def op(X: torch.Tensor) -> torch.Tensor:
            return operator.apply(X, transpose=transpose)

        fused = self.method in _FUSED_METHODS and self.options["fused"]
        # unpreconditioned fused CG/BiCGSTAB multiply by A themselves (one loop for all iterations): A's CSR
        in_loop = fused and precond is None and B.device.type == "cpu"
        result = krylov_solve(
            self.method,
            op,
            precond,
            B,
            x0=x0,
            rtol=self.options.rtol,
            atol=self.options.atol,
            maxiter=self.options.maxiter,
            restart=self.options["restart"] if self.method == "gmres" else None,
            op_into=lambda X, out, alpha: operator.apply_into(X, out, alpha, transpose=transpose),
            fused=fused,
            csr=(operator._transpose() if transpose else operator.matrix) if in_loop else None,
        )
        return result.X, BackendReport(result.iterations, result.converged, result.message, result.history)


@dataclass
class _LeastSquares:
    """LSQR on the augmented system ``K = [[I, A], [Aᴴ, 0]]``: Hermitian, so ``Kᵀ = conj(K)`` (``K`` for real A)."""

    operator: CsrOperator
    options: SolveOptions

    def solve(self, Z: torch.Tensor, transpose: bool, z0: torch.Tensor | None) -> tuple[torch.Tensor, BackendReport]:
        operator = self.operator
        result = solve_augmented(
            operator.apply,
            lambda U: operator.apply(U, transpose=True, conjugate=True),
            Z,
            operator.shape[0],
            rtol=self.options.rtol,
            atol=self.options.atol,
            maxiter=self.options.maxiter,
            z0=z0,
            transpose=transpose,
        )
        return result.Z, BackendReport(result.iterations, result.converged, result.message, result.history)


@dataclass
class _Chunks:
    """A batched Krylov solve split into chunks of members, each solved as one batch in turn.

    Measured (CPU, one thread, b = 32 convection–diffusion members of n = 1e4, ms per member and
    iteration): BiCGSTAB 0.15 with all 32 members together (a 40 MB working set, beyond the last-level
    cache), 0.08–0.10 in chunks of 4–12, 0.15–0.2 member by member (one solve's per-call overhead);
    GMRES(20) 0.29, 0.10–0.18 and 0.37. Whole solves (rtol 1e-8, medians, a loaded machine): BiCGSTAB
    1.44 s for 32 together, 0.91–0.94 s in chunks of 8–11, 1.10 s of 4, 1.38 s of 2; GMRES 5.4 s, 3.6 s in
    chunks of 8–11, 3.9 s of 5, 4.6 s of 3. The default chunk (``_members_per_chunk``) is 11 and 8 there.
    """

    parts: list[tuple[slice, _Krylov]]

    def solve(self, B: torch.Tensor, transpose: bool, x0: torch.Tensor | None) -> tuple[torch.Tensor, BackendReport]:
        results = [state.solve(B[rows], transpose, None if x0 is None else x0[rows]) for rows, state in self.parts]
        return torch.cat([X for X, _ in results]), merge_reports(report for _, report in results)


_CHUNK_BYTES = 16 * 2**20


def _members_per_chunk(A: torch.Tensor, method: str, options: SolveOptions) -> int:
    """How many members of a batched CPU ``A`` iterate together (``batch_chunk``, or the working-set rule)."""
    if options["batch_chunk"] is not None:
        return int(options["batch_chunk"])
    n, nnz, item = A.shape[-1], A.col_indices().shape[-1], A.values().element_size()
    # vectors of one column each; GMRES's Gram–Schmidt reads half its basis on average over a cycle
    vectors = options["restart"] // 2 + 8 if method == "gmres" else 10
    member = nnz * (item + 4) + (n + 1) * 4 + n * item * vectors  # int32 indices
    return max(1, _CHUNK_BYTES // member)


def _krylov(A: torch.Tensor, method: str, options: SolveOptions) -> _Krylov:
    operator = CsrOperator(A)
    return _Krylov(operator, method, options, *_preconditioners(operator, method, options))


_BATCHED_KRYLOV = ("gmres", "bicgstab", "cg", "minres")
_State = _Triangular | _Krylov | _LeastSquares | _Chunks


class TorchBackend:
    """Krylov solvers in pure torch (CPU and CUDA); see the package docstring.

    Examples
    --------
    >>> import torch
    >>> from tsgu_core import solve
    >>> A = torch.tensor([[3.0, 1.0], [-1.0, 2.0]], dtype=torch.float64).to_sparse()
    >>> B = torch.eye(2, dtype=torch.float64)
    >>> X = solve(A, B, backend="torch", method="bicgstab", rtol=1e-12)
    >>> torch.allclose(A.to_dense() @ X, B)
    True
    """

    name = "torch"
    device_types = ("cpu", "cuda")
    methods = METHODS
    default_method = "gmres"
    preferred_methods: ClassVar[dict[str, str]] = {"spd": "cg", "symmetric": "minres", "hermitian": "minres"}
    priority = 50

    def is_available(self, device_type: str) -> Availability:
        if device_type == "cpu":
            return Availability.yes()
        if device_type == "cuda":
            if torch.cuda.is_available():
                return Availability.yes()
            return Availability.no("no CUDA device visible to torch")
        return Availability.no(f"does not serve {device_type!r}")

    def prepare(self, A: torch.Tensor, method: str, options: SolveOptions) -> _State:
        if method in _FUSED_METHODS and options["fused"] and A.is_complex():
            raise InvalidOptionError(
                f"fused=True fuses {method}'s vector work for real dtypes only; drop it for a complex A "
                f"(the default {method} path solves complex A)",
                option="fused",
            )
        if method in _BATCHED_KRYLOV and (chunks := self._prepare_chunks(A, method, options)) is not None:
            return chunks
        operator = CsrOperator(A)
        if method == "triangular":
            return _Triangular(operator.matrix, options["upper"], options["unit_diagonal"])
        if method == "lsqr":
            return _LeastSquares(operator, options)
        return _Krylov(operator, method, options, *_preconditioners(operator, method, options))

    def _prepare_chunks(self, A: torch.Tensor, method: str, options: SolveOptions) -> _State | None:
        """A batched CPU ``A`` split into cache-sized chunks of members (``None``: solve it whole).

        A callable ``M`` sees the whole batch's shapes, so it keeps the batch whole; so does CUDA,
        where one wide batch fills the device, unless ``batch_chunk`` is given.
        """
        explicit = options["batch_chunk"] is not None
        if A.dim() != 3 or callable(options["M"]):
            if explicit:
                why = "a callable M, which is applied to the whole batch" if A.dim() == 3 else f"A of {tuple(A.shape)}"
                raise InvalidOptionError(
                    f"batch_chunk= splits a batched A (b, n, n) into groups of members; it cannot apply to {why}: "
                    "drop batch_chunk",
                    option="batch_chunk",
                )
            return None
        if A.device.type != "cpu" and not explicit:
            return None
        batch = A.shape[0]
        size = _members_per_chunk(A, method, options)
        if size >= batch:
            return None
        crow, col, values = A.crow_indices(), A.col_indices(), A.values()
        parts = []
        for start in range(0, batch, size):
            rows = slice(start, min(start + size, batch))
            chunk = torch.sparse_csr_tensor(
                crow[rows], col[rows], values[rows], (rows.stop - start, *A.shape[1:]), check_invariants=False
            )
            parts.append((rows, _krylov(chunk, method, options)))
        return _Chunks(parts)

    def solve(
        self, state: _State, B: torch.Tensor, *, transpose: bool, x0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, BackendReport]:
        return state.solve(B, transpose, x0)
