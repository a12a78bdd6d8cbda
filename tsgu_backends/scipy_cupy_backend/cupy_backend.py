"""The ``cupy`` backend: ``cupyx.scipy.sparse.linalg`` on CUDA tensors, zero-copy through DLPack.

Available only where CuPy imports, a CUDA device exists and CuPy's sparse
linear algebra loads (it needs the CUDA libraries, e.g. cuBLAS and cuSPARSE:
``pip install 'cupy-cuda12x[ctk]'`` on a machine without a CUDA toolkit).
The availability check asks torch for a device first, so on a CPU-only
machine CuPy is never imported.

CuPy runs its kernels on torch's current CUDA stream, so no extra
synchronisation is needed between the frameworks.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from tsgu_backends.scipy_cupy_backend.convert import torch_to_cupy
from tsgu_backends.scipy_cupy_backend.iterative import solve_columns
from tsgu_backends.scipy_cupy_backend.methods import CUPY_METHODS, library_keywords, superlu_keywords
from tsgu_backends.scipy_cupy_backend.operators import Operators, TriangularState
from tsgu_core import Availability, BackendReport, SingularMatrixError, SolveOptions

__all__ = ["CupyBackend"]

INSTALL = "pip install 'tsgu[cupy]'"


@functools.cache
def _cupy_status() -> Availability:
    """Whether CuPy and its sparse solvers import and see a device (asked once per process)."""
    try:
        import cupy
        import cupyx.scipy.sparse.linalg  # noqa: F401  (needs cuBLAS/cuSPARSE)

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return Availability.no("CuPy sees no CUDA device")
    except Exception as error:  # ImportError, CUDARuntimeError, missing libraries...
        return Availability.no(
            f"CuPy cannot run here: {type(error).__name__}: {error}",
            install="pip install 'cupy-cuda12x[ctk]' (CuPy with the CUDA libraries)",
        )
    return Availability.yes()


@contextlib.contextmanager
def _on_torch_stream(device: torch.device) -> Iterator[None]:
    import cupy

    stream = torch.cuda.current_stream(device)
    from_external = getattr(cupy.cuda.Stream, "from_external", None)  # CuPy ≥ 14; ExternalStream before
    external = from_external(stream) if from_external is not None else cupy.cuda.ExternalStream(stream.cuda_stream)
    with cupy.cuda.Device(device.index or 0), external:
        yield


def _cupy(X: torch.Tensor) -> Any:
    import cupy

    return cupy.from_dlpack(X.detach().contiguous())


def _torch(X: Any, like: torch.Tensor) -> torch.Tensor:
    return torch.from_dlpack(X).to(like.dtype).reshape(like.shape)


def _singular(error: Exception) -> SingularMatrixError:
    return SingularMatrixError(f"A is singular: {error}")


def _minres(A: Any, b: Any, *, rtol: float, **keywords: Any) -> tuple[Any, int]:
    import cupyx.scipy.sparse.linalg as csla

    result: tuple[Any, int] = csla.minres(A, b, tol=rtol, **keywords)  # CuPy's minres names its tolerance ``tol``
    return result


@dataclass
class _Factors:
    """SuperLU factors (cupyx's splu); the transpose solve reuses them."""

    factors: Any

    def solve(self, B: torch.Tensor, transpose: bool, x0: torch.Tensor | None) -> tuple[torch.Tensor, BackendReport]:
        return _torch(self.factors.solve(_cupy(B), trans="T" if transpose else "N"), B), BackendReport()


class _Triangular(TriangularState):
    """cupyx's ``spsolve_triangular`` on ``A`` or ``Aᵀ``."""

    def solve(self, B: torch.Tensor, transpose: bool, x0: torch.Tensor | None) -> tuple[torch.Tensor, BackendReport]:
        import cupyx.scipy.sparse.linalg as csla

        matrix, lower = self.system(transpose)
        X = csla.spsolve_triangular(matrix, _cupy(B), lower=lower, unit_diagonal=self.unit_diagonal)
        return _torch(X, B), BackendReport()


@dataclass
class _Iterative:
    """One of cupyx's Krylov methods, column by column, with ``Aᵀ`` and ``Mᵀ`` for the transpose solve."""

    operators: Operators
    method: str
    options: SolveOptions
    keywords: dict[str, Any]
    M: Any

    def solve(self, B: torch.Tensor, transpose: bool, x0: torch.Tensor | None) -> tuple[torch.Tensor, BackendReport]:
        import cupy
        import cupyx.scipy.sparse.linalg as csla

        keywords = dict(self.keywords)
        if self.M is not None:
            operator = csla.aslinearoperator(self.M)
            # Mᵀ, the plain transpose (= Mᴴ for a real M): the transpose solve is with the plain Aᵀ
            keywords["M"] = operator.T if transpose else operator
        options = self.options
        restart = keywords.pop("restart", None) if self.method == "gmres" else None
        solver = _minres if self.method == "minres" else getattr(csla, self.method)
        result = solve_columns(
            cupy,
            solver,
            self.operators(transpose),
            _cupy(B),
            x0=None if x0 is None else _cupy(x0),
            rtol=options.rtol,
            atol=options.atol,
            maxiter=options.maxiter,
            keywords=keywords,
            has_atol=self.method != "minres",
            restart=restart,
            shadow_from_start=self.method == "cgs",
        )
        return _torch(result.X, B), BackendReport(result.iterations, result.converged, result.message, result.history)


_State = _Factors | _Triangular | _Iterative


class CupyBackend:
    """``cupyx.scipy.sparse.linalg`` for CUDA tensors, with SciPy's method and option names.

    ``splu``/``spsolve`` factorize once (SuperLU on the CPU, as cupyx does;
    triangular solves on the GPU) and reuse the factors for the transpose
    solve. Iterative methods solve each column in turn; the transpose solve
    uses ``Aᵀ``.
    """

    name = "cupy"
    device_types = ("cuda",)
    methods = CUPY_METHODS
    default_method = "splu"
    preferred_methods: ClassVar[dict[str, str]] = {"spd": "cg", "symmetric": "minres", "hermitian": "minres"}
    priority = 100

    def is_available(self, device_type: str) -> Availability:
        if device_type != "cuda":
            return Availability.no(f"serves only CUDA, not {device_type!r}")
        if importlib.util.find_spec("cupy") is None:
            return Availability.no("CuPy is not installed", install=INSTALL)
        if not torch.cuda.is_available():
            return Availability.no("no CUDA device")
        return _cupy_status()

    def prepare(self, A: torch.Tensor, method: str, options: SolveOptions) -> _State:
        import cupyx.scipy.sparse.linalg as csla

        spec = self.methods[method]
        extra = dict(options.extra)
        with _on_torch_stream(A.device):
            matrix = torch_to_cupy(A).tocsr()
            if spec.operation == "triangular":
                return _Triangular(Operators(matrix), extra["upper"], extra["unit_diagonal"])
            if spec.kind == "direct":
                try:
                    return _Factors(csla.splu(matrix.tocsc(), **superlu_keywords(extra)))
                except RuntimeError as error:
                    if "singular" in str(error).lower():
                        raise _singular(error) from error
                    raise
            return _Iterative(Operators(matrix), method, options, library_keywords(extra), extra.get("M"))

    def solve(
        self, state: _State, B: torch.Tensor, *, transpose: bool, x0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, BackendReport]:
        with _on_torch_stream(B.device):
            return state.solve(B, transpose, x0)
