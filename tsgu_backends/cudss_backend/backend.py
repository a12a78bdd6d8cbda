"""The ``cudss`` backend: NVIDIA cuDSS (nvmath-python's ``DirectSolver``) for CUDA tensors.

cuDSS is NVIDIA's supernodal/multifrontal sparse direct solver: reordering
and symbolic analysis, then numerical LU/LDLᵀ/Cholesky and the triangular
solves, all on the GPU (unlike CuPy's ``splu``, which factorizes on the host).

**Never run on a GPU by its author.** This backend was written and reviewed
against nvmath-python 1.0's source and documentation on a machine without a
CUDA device; its CPU-side behaviour (availability, options, selection, import
hygiene) is tested here, its numerics only by the CUDA conformance cases,
which skip without a device. Every result still passes the core's
backward-error check (:mod:`tsgu_core.engine.convergence`), so a wrong answer from
cuDSS raises :class:`~tsgu_core.errors.SingularMatrixError` instead of being
returned quietly.

How it drives cuDSS
-------------------
* ``prepare`` converts ``A`` once to a CSR tensor with int32 indices on
  ``A``'s device (nvmath documents torch's int64 indices as unreliable for
  batches), checks for empty rows/columns (a singular ``A`` that cuDSS's
  pivot perturbation would otherwise hide) and chooses cuDSS's matrix type
  from ``assume=`` (SPD/HPD: Cholesky; symmetric/Hermitian: LDLᵀ/LDLᴴ;
  otherwise general LU).
* nvmath's ``DirectSolver`` fixes the right-hand side's shape when it is
  created, so the analysis and factorization run at the **first solve** of
  each orientation, for that solve's number of columns ``k``; later solves
  with ``k`` columns reuse the factors in one call, other widths run in blocks
  of ``k`` columns (the last padded with zeros). The right-hand side is
  copied into a column-major buffer the solver was planned with (cuDSS reads
  column-major only).
* **Transposed solves (the backward pass).** cuDSS 0.8, the version
  nvmath-python 1.0 requires, has no transposed solve on the same factors
  (``CUDSS_CONFIG_SOLVE_MODE`` arrived with cuDSS 1.0). So, unless ``A``
  is symmetric, the first ``transpose=True`` solve builds the CSR of ``Aᵀ``
  on the device and factorizes it — once per prepared state; every later
  backward reuses it. A real symmetric ``A`` (declared by ``assume=`` or
  found equal to its transpose) reuses the forward factors; a Hermitian
  ``A`` uses them as ``Aᵀx = b ⇔ A x̄ = b̄``. This doubles the factor memory
  for a nonsymmetric ``A`` once a backward has run.
* A batch ``(b, n, n)`` sharing one pattern is one implicitly batched cuDSS
  solve per call (``batched=True``).
* The solvers (cuDSS handles, factors) are freed when the prepared state is
  garbage collected (``weakref.finalize``), or by :meth:`CudssState.release`.
* cuDSS does not raise on a singular ``A``: it perturbs tiny pivots. A
  nonzero ``info`` after factorization raises
  :class:`~tsgu_core.errors.SingularMatrixError`; otherwise the core's
  residual check decides (a perturbed factorization of a singular ``A``
  leaves a large residual).

nvmath logs through the logger ``tsgu_backends.cudss`` (a ``NullHandler`` is
attached: nothing is printed unless the application configures logging).
cuDSS's host-side threading layer (``libcudss_mtlayer_gomp``) is used when it
is found (``$CUDSS_THREADING_LIB`` or the ``nvidia-cudss`` wheel).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib
import importlib.util
import logging
import os
import weakref
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from tsgu_core import (
    Availability,
    BackendReport,
    MethodSpec,
    Option,
    SingularMatrixError,
    SolveOptions,
)
from tsgu_core.errors import SolveFailedError
from tsgu_core.plugins.kit import row_indices, transpose_csr

__all__ = ["INSTALL", "METHODS", "REORDERINGS", "CudssBackend", "CudssState", "matrix_type"]

INSTALL = "pip install 'tsgu[cudss]'  (nvmath-python[cu12] with NVIDIA cuDSS; Linux, CUDA 12)"
REORDERINGS = ("default", "amd", "colamd", "btf_colamd", "nested_dissection")
_INT32_MAX = 2**31 - 1

_LOGGER = logging.getLogger("tsgu_backends.cudss")
_LOGGER.addHandler(logging.NullHandler())

METHODS: dict[str, MethodSpec] = {
    "cudss": MethodSpec(
        "cudss",
        "direct",
        "general",
        {
            "reordering": Option(
                "cuDSS fill-reducing ordering; None: cuDSS's default (nested dissection)",
                type=str,
                choices=REORDERINGS,
            ),
            "pivot_eps": Option(
                "pivots smaller than this are perturbed to it (static pivoting); None: cuDSS's default",
                type=float,
                minimum=0.0,
            ),
            "ir_steps": Option("iterative-refinement steps cuDSS runs in each solve", type=int, default=0, minimum=0),
            "hybrid_memory": Option(
                "keep the factors in host memory (cuDSS hybrid memory mode) when they outgrow the GPU",
                type=bool,
                default=False,
            ),
        },
        "NVIDIA cuDSS LU/LDLᵀ/Cholesky on the GPU; the backward factorizes Aᵀ once (reused for every backward)",
        batched=True,
        complex=True,
    ),
}


def matrix_type(assume: str, complex: bool) -> str:
    """The cuDSS matrix type (a ``cudss.MatrixType`` name) for what the user claimed of ``A``.

    A complex ``assume="symmetric"`` (``Aᵀ = A``, not Hermitian) is solved as
    general.

    >>> matrix_type("spd", False), matrix_type("spd", True), matrix_type("symmetric", True)
    ('SPD', 'HPD', 'GENERAL')
    >>> matrix_type("hermitian", False), matrix_type("general", True)
    ('SYMMETRIC', 'GENERAL')
    """
    if assume == "spd":
        return "HPD" if complex else "SPD"
    if assume in ("symmetric", "hermitian") and not complex:
        return "SYMMETRIC"
    if assume == "hermitian":
        return "HERMITIAN"
    return "GENERAL"


@functools.cache
def _threading_lib() -> str | None:
    """cuDSS's GNU OpenMP threading layer: ``$CUDSS_THREADING_LIB`` or the one in the ``nvidia-cudss`` wheel."""
    chosen = os.environ.get("CUDSS_THREADING_LIB")
    if chosen and os.path.isfile(chosen):
        return chosen
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        found = sorted(glob.glob(os.path.join(root, "*", "lib", "libcudss_mtlayer_gomp.so*")))
        if found:
            return found[0]
    return None


@functools.cache
def _cudss_status() -> Availability:
    """Whether nvmath's direct solver imports and the cuDSS library it needs loads (asked once per process)."""
    try:
        from nvmath.bindings import cudss

        # the module, not the function nvmath.sparse.advanced.direct_solver that its package re-exports
        direct_solver = importlib.import_module("nvmath.sparse.advanced.direct_solver")
        version = f"{cudss.get_property(0)}.{cudss.get_property(1)}.{cudss.get_property(2)}"  # loads libcudss
        check = getattr(direct_solver, "_check_cudss_version", None)  # nvmath's exact-version requirement
        if callable(check):
            check()
    except Exception as error:  # ImportError, a missing libcudss, a version mismatch...
        return Availability.no(f"cuDSS cannot run here: {type(error).__name__}: {error}", install=INSTALL)
    _LOGGER.info("cuDSS %s found", version)
    return Availability.yes()


class _Factors:
    """One nvmath ``DirectSolver``: a CSR matrix analysed and factorized once, solved for blocks of ``width`` columns.

    Freed (``DirectSolver.free``) when garbage collected or by :meth:`release`.
    """

    def __init__(self, matrix: torch.Tensor, width: int, config: _Config, what: str) -> None:
        from nvmath.bindings import cudss
        from nvmath.sparse.advanced import DirectSolver

        shape = (*matrix.shape[:-2], width, matrix.shape[-1])
        # (…, n, width) in column-major order: cuDSS reads each right-hand side contiguously
        self.rhs = torch.zeros(shape, dtype=matrix.dtype, device=matrix.device).transpose(-1, -2)
        self.width = width
        options: dict[str, Any] = {
            "sparse_system_type": getattr(cudss.MatrixType, config.matrix_type),
            "logger": _LOGGER,
            "multithreading_lib": _threading_lib(),
        }
        execution: dict[str, Any] | None = None
        if config.hybrid_memory:
            execution = {"name": "cuda", "hybrid_memory_mode_options": {"hybrid_memory_mode": True}}
        self.solver = DirectSolver(matrix, self.rhs, options=options, execution=execution)
        self.finalizer = weakref.finalize(self, _free, self.solver)
        self.finalizer.atexit = False  # at interpreter exit the CUDA context may be gone first
        if config.reordering is not None:
            self.solver.plan_config.reordering_algorithm = getattr(cudss.ReorderingAlg, config.reordering.upper())
        if config.pivot_eps is not None:
            self.solver.factorization_config.pivot_eps = config.pivot_eps
        if config.ir_steps:
            self.solver.solution_config.ir_num_steps = config.ir_steps
        self.solver.plan()
        self.solver.factorize()
        if matrix.is_cuda:  # the factorization runs asynchronously on torch's current stream
            torch.cuda.current_stream(matrix.device).synchronize()
        info = int(self.solver.factorization_info.info)
        if info != 0:
            self.release()
            spd = " or it is not positive definite (assume='spd')" if config.matrix_type in ("SPD", "HPD") else ""
            raise SingularMatrixError(f"{what} is singular{spd}: cuDSS's factorization reported info = {info}")

    def solve(self, B: torch.Tensor) -> torch.Tensor:
        """``X`` for ``B`` of shape ``(…, n, k)``, in blocks of ``width`` columns."""
        k = B.shape[-1]
        if k == self.width:
            self.rhs.copy_(B)
            solution: torch.Tensor = self.solver.solve()
            return solution.contiguous()
        X = torch.empty_like(B)
        for start in range(0, k, self.width):
            block = B[..., start : start + self.width]
            m = block.shape[-1]
            self.rhs[..., :m].copy_(block)
            if m < self.width:
                self.rhs[..., m:].zero_()
            X[..., start : start + m] = self.solver.solve()[..., :m]
        return X

    def release(self) -> None:
        """Free the cuDSS handle and factors now."""
        self.finalizer()


def _free(solver: Any) -> None:
    try:
        solver.free()
    except Exception as error:  # never let a finalizer raise
        _LOGGER.warning("freeing a cuDSS solver failed: %s", error)


@dataclass(frozen=True)
class _Config:
    matrix_type: str
    reordering: str | None
    pivot_eps: float | None
    ir_steps: int
    hybrid_memory: bool


@dataclass
class CudssState:
    """The prepared state: ``A`` as an int32 CSR tensor on its device, and its cuDSS factors once made.

    ``forward`` factors ``A``; ``transposed`` factors ``Aᵀ`` (made at the first
    transposed solve, unless ``A`` is symmetric and ``forward`` serves).
    """

    matrix: torch.Tensor
    config: _Config
    batched: bool
    forward: _Factors | None = None
    transposed: _Factors | None = None
    transpose_mode: str = "unknown"  # "same" (Aᵀ = A), "conjugate" (Aᵀ = Ā) or "factors of Aᵀ"
    notes: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        kind = {"GENERAL": "LU", "SYMMETRIC": "LDLᵀ", "HERMITIAN": "LDLᴴ", "SPD": "Cholesky", "HPD": "Cholesky"}
        parts = [f"cuDSS {kind[self.config.matrix_type]} ({self.config.matrix_type.lower()})", *self.notes]
        return "; ".join(parts)

    def release(self) -> None:
        """Free every cuDSS solver of this state now."""
        for factors in (self.forward, self.transposed):
            if factors is not None:
                factors.release()


def _int32_csr(A: torch.Tensor) -> torch.Tensor:
    """``A`` (coalesced COO or CSR, 2-D or a shared-pattern CSR batch) as a CSR tensor with int32 indices.

    The values are copied: the factorization happens later (at the first
    solve) and must not see later in-place changes of the caller's tensor.
    """
    csr = A.to_sparse_csr() if A.layout == torch.sparse_coo else A
    crow, col = csr.crow_indices(), csr.col_indices()
    if max(A.shape[-1], col.shape[-1]) > _INT32_MAX:
        raise SolveFailedError(
            f"A has {col.shape[-1]} stored entries and n = {A.shape[-1]}: beyond the 32-bit indices this backend "
            "hands cuDSS"
        )
    return torch.sparse_csr_tensor(
        crow.to(torch.int32), col.to(torch.int32), csr.values().clone(), tuple(A.shape), device=A.device
    )


def _on(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Make ``device`` current for the calls into nvmath (a no-op off CUDA, where only the tests' stand-in runs)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _check_structure(matrix: torch.Tensor) -> None:
    crow = matrix.crow_indices()[0] if matrix.dim() == 3 else matrix.crow_indices()
    col = matrix.col_indices()[0] if matrix.dim() == 3 else matrix.col_indices()
    n = matrix.shape[-1]
    empty_row = bool((crow.diff() == 0).any())
    empty_col = bool((torch.bincount(col.long(), minlength=n) == 0).any()) if n else False
    if empty_row or empty_col:
        raise SingularMatrixError("A is singular: it has an empty row or column (no stored entry)")


class CudssBackend:
    """NVIDIA cuDSS for CUDA tensors (see the module docstring).

    Examples
    --------
    >>> backend = CudssBackend()
    >>> backend.default_method, backend.priority > 100, backend.is_available("cpu").reason
    ('cudss', True, "serves only CUDA, not 'cpu'")

    With ``pip install 'tsgu[cudss]'`` and a CUDA device, ``tsgu_core.solve(A, B)``
    on CUDA tensors uses it; ``tsgu_core.solve(A, B, backend="cudss", ir_steps=2)``
    adds iterative refinement.
    """

    name = "cudss"
    device_types = ("cuda",)
    methods = METHODS
    default_method = "cudss"
    preferred_methods: ClassVar[dict[str, str]] = {"spd": "cudss", "symmetric": "cudss", "hermitian": "cudss"}
    priority = 120  # above cupy (100, SuperLU on the host) and torch (50) on CUDA when installed
    complex_note = "complex64/complex128 through cuDSS's complex LU (general) and LDLᴴ/Cholesky (assume=)"

    def is_available(self, device_type: str) -> Availability:
        if device_type != "cuda":
            return Availability.no(f"serves only CUDA, not {device_type!r}")
        if importlib.util.find_spec("nvmath") is None:
            return Availability.no("nvmath-python (NVIDIA cuDSS) is not installed", install=INSTALL)
        if not torch.cuda.is_available():
            return Availability.no("no CUDA device")
        return _cudss_status()

    def prepare(self, A: torch.Tensor, method: str, options: SolveOptions) -> CudssState:
        config = _Config(
            matrix_type(options.assume, A.dtype.is_complex),
            options["reordering"],
            options["pivot_eps"],
            options["ir_steps"],
            options["hybrid_memory"],
        )
        with _on(A.device):
            matrix = _int32_csr(A.detach())
            _check_structure(matrix)
        state = CudssState(matrix, config, A.dim() == 3)
        if config.matrix_type != "GENERAL":
            state.transpose_mode = "conjugate" if A.dtype.is_complex else "same"
        return state

    def solve(
        self, state: CudssState, B: torch.Tensor, *, transpose: bool, x0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, BackendReport]:
        with _on(B.device):
            if transpose and state.transpose_mode == "unknown":
                self._prepare_transpose(state, B.shape[-1])
            if transpose and state.transposed is not None:
                return state.transposed.solve(B), BackendReport(message=state.message)
            if state.forward is None:
                state.forward = _Factors(state.matrix, B.shape[-1], state.config, "A")
            conjugate = transpose and state.transpose_mode == "conjugate"
            X = state.forward.solve(B.conj() if conjugate else B)
            X = X.conj().resolve_conj() if conjugate else X
        return X, BackendReport(message=state.message)

    @staticmethod
    def _transpose(state: CudssState) -> torch.Tensor:
        matrix = state.matrix
        n = matrix.shape[-1]
        batched = matrix.dim() == 3
        crow = matrix.crow_indices()[0] if batched else matrix.crow_indices()
        col = matrix.col_indices()[0] if batched else matrix.col_indices()
        t_crow, t_col, order = transpose_csr(row_indices(crow), col, n)
        t_crow, t_col, t_values = t_crow.to(crow.dtype), t_col.to(col.dtype), matrix.values()[..., order]
        if batched:
            b = matrix.shape[0]
            t_crow, t_col = t_crow.expand(b, -1).contiguous(), t_col.expand(b, -1).contiguous()
        return torch.sparse_csr_tensor(t_crow, t_col, t_values, tuple(matrix.shape), device=matrix.device)

    def _prepare_transpose(self, state: CudssState, width: int) -> None:
        """Decide how ``Aᵀ`` is solved: with the forward factors when ``Aᵀ = A`` exactly, else factorize ``Aᵀ``."""
        transposed = self._transpose(state)
        matrix = state.matrix
        same = (
            torch.equal(transposed.crow_indices(), matrix.crow_indices())
            and torch.equal(transposed.col_indices(), matrix.col_indices())
            and torch.equal(transposed.values(), matrix.values())
        )
        if same:
            state.transpose_mode = "same"
            return
        state.transposed = _Factors(transposed, width, state.config, "Aᵀ")
        state.transpose_mode = "factors of Aᵀ"
        state.notes.append("backward: Aᵀ factorized once (cuDSS 0.8 has no transposed solve)")
