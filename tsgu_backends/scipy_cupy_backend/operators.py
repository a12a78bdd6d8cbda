"""A SciPy or CuPy sparse matrix with its transpose, shared by the scipy and cupy backends' states."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Operators", "TriangularState"]


class Operators:
    """``A`` (CSR) and ``Aᵀ`` (CSR), the transpose built once, on first use (only a backward pass needs it)."""

    def __init__(self, matrix: Any):
        self.matrix = matrix
        self._transposed: Any = None
        self._adjoint: Any = None

    def __call__(self, transpose: bool) -> Any:
        if not transpose:
            return self.matrix
        if self._transposed is None:
            self._transposed = self.matrix.T.tocsr()
        return self._transposed

    def adjoint(self) -> Any:
        """``Aᴴ`` (CSR, built once; ``Aᵀ`` for a real ``A``)."""
        if self.matrix.dtype.kind != "c":
            return self(True)
        if self._adjoint is None:
            self._adjoint = self.matrix.conj().T.tocsr()
        return self._adjoint


@dataclass
class TriangularState:
    """A triangular ``A`` and which triangle it is (for ``spsolve_triangular``)."""

    operators: Operators
    upper: bool
    unit_diagonal: bool

    def system(self, transpose: bool) -> tuple[Any, bool]:
        """The matrix to hand the library and whether it is lower triangular: ``Aᵀ`` swaps the triangle."""
        return self.operators(transpose), self.upper if transpose else not self.upper
