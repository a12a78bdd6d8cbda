"""The ``torch`` backend object."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tsgu_backends.augmented import solve_augmented
from tsgu_backends.torch_native.krylov import krylov_solve
from tsgu_backends.torch_native.operator import CsrOperator
from tsgu_core import Availability, BackendReport, InvalidOptionError, MethodSpec, Option, SolveOptions

__all__ = ["TorchBackend"]

_JACOBI = Option(
    "'jacobi': divide by A's diagonal, which must have no zero (None: no preconditioner)",
    type=str,
    choices=("jacobi",),
)
_RESTART = Option("Krylov dimension before a restart", type=int, default=20, minimum=1)

METHODS: dict[str, MethodSpec] = {
    "gmres": MethodSpec(
        "gmres",
        "iterative",
        "general",
        {"restart": _RESTART, "preconditioner": _JACOBI},
        "restarted GMRES, right-preconditioned; robust for any invertible A",
        batched=True,
    ),
    "bicgstab": MethodSpec(
        "bicgstab",
        "iterative",
        "general",
        {"preconditioner": _JACOBI},
        "BiCGSTAB; cheap per iteration for nonsymmetric A, may break down (restarted automatically)",
        batched=True,
    ),
    "cg": MethodSpec(
        "cg",
        "iterative",
        "spd",
        {"preconditioner": Option(_JACOBI.doc + "; positive for cg", type=str, choices=("jacobi",))},
        "conjugate gradients; A must be symmetric positive definite",
        batched=True,
    ),
    "minres": MethodSpec(
        "minres",
        "iterative",
        "symmetric",
        {
            "preconditioner": Option(
                "'jacobi': divide by |diag A|, which must have no zero", type=str, choices=("jacobi",)
            )
        },
        "MINRES; A must be symmetric (may be indefinite)",
        batched=True,
    ),
    "lsqr": MethodSpec(
        "lsqr",
        "iterative",
        "general",
        {},
        "LSQR on A and Aᵀ (Paige & Saunders), with refinement on the augmented system",
        operation="lstsq",
    ),
    "triangular": MethodSpec(
        "triangular",
        "direct",
        "general",
        {},
        "torch.triangular_solve on CSR (MKL on CPU, cuSPARSE on CUDA)",
        operation="triangular",
        # measured (CPU, one thread, lower triangle of 2-D Poisson, n = 1e5): 2.2 ms against
        # 7.7 ms for scipy.sparse.linalg.spsolve_triangular (k = 1) and 5.9 ms against 41 ms (k = 8)
        priority=150,
    ),
}


def _jacobi(operator: CsrOperator, method: str) -> torch.Tensor:
    diagonal = operator.diagonal()
    if method == "minres":
        diagonal = diagonal.abs()  # MINRES needs an SPD preconditioner
    bad = torch.nonzero(diagonal <= 0 if method in ("cg", "minres") else diagonal == 0)
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


@dataclass
class _Krylov:
    """A Krylov method on ``A`` (and ``Aᵀ`` for the transpose solve), optionally Jacobi-preconditioned."""

    operator: CsrOperator
    method: str
    options: SolveOptions
    inverse_diagonal: torch.Tensor | None  # diag(Aᵀ) = diag(A): valid for both solves

    def solve(self, B: torch.Tensor, transpose: bool, x0: torch.Tensor | None) -> tuple[torch.Tensor, BackendReport]:
        operator, inverse_diagonal = self.operator, self.inverse_diagonal

        def op(X: torch.Tensor) -> torch.Tensor:
            return operator.apply(X, transpose=transpose)

        def precond(R: torch.Tensor) -> torch.Tensor:
            assert inverse_diagonal is not None
            return inverse_diagonal * R

        result = krylov_solve(
            self.method,
            op,
            precond if inverse_diagonal is not None else None,
            B,
            x0=x0,
            rtol=self.options.rtol,
            atol=self.options.atol,
            maxiter=self.options.maxiter,
            restart=self.options.extra.get("restart", 20),
        )
        return result.X, BackendReport(result.iterations, result.converged, result.message)


@dataclass
class _LeastSquares:
    """LSQR on the augmented system ``K = [[I, A], [Aᵀ, 0]]``: symmetric, so ``transpose`` is moot."""

    operator: CsrOperator
    options: SolveOptions

    def solve(self, Z: torch.Tensor, transpose: bool, z0: torch.Tensor | None) -> tuple[torch.Tensor, BackendReport]:
        operator = self.operator
        result = solve_augmented(
            operator.apply,
            lambda U: operator.apply(U, transpose=True),
            Z,
            operator.shape[0],
            rtol=self.options.rtol,
            atol=self.options.atol,
            maxiter=self.options.maxiter,
            z0=z0,
        )
        return result.Z, BackendReport(result.iterations, result.converged, result.message)


_State = _Triangular | _Krylov | _LeastSquares


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
        operator = CsrOperator(A)
        if method == "triangular":
            return _Triangular(operator.matrix, options["upper"], options["unit_diagonal"])
        if method == "lsqr":
            return _LeastSquares(operator, options)
        jacobi = options["preconditioner"] == "jacobi"
        return _Krylov(operator, method, options, _jacobi(operator, method) if jacobi else None)

    def solve(
        self, state: _State, B: torch.Tensor, *, transpose: bool, x0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, BackendReport]:
        return state.solve(B, transpose, x0)
