"""A complete backend in 40 lines: dense LU, for tests and as a worked example.

It densifies ``A`` (so it is only for small matrices), factorizes once in
``prepare`` and reuses the factors for the transpose solve — the shape every
direct backend follows.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from tsgu_core.errors import SingularMatrixError
from tsgu_core.plugins.protocol import Availability, BackendReport, MethodSpec, SolveOptions

__all__ = ["DenseBackend"]


class DenseBackend:
    """Backend with one direct method, ``"lu"``, on every device torch has.

    Parameters
    ----------
    name : str
        The backend's name (tests register several under different names).
    priority : int
        Its priority for ``backend=None`` selection (default 0: never chosen
        over a real backend).
    """

    device_types = ("cpu", "cuda")
    methods: ClassVar[dict[str, MethodSpec]] = {
        "lu": MethodSpec("lu", "direct", "general", {}, "dense LU (torch.linalg.lu_factor)", complex=True)
    }
    default_method = "lu"

    def __init__(self, name: str = "dense", priority: int = 0):
        self.name = name
        self.priority = priority
        self.factorizations = 0

    def is_available(self, device_type: str) -> Availability:
        if device_type == "cuda" and not torch.cuda.is_available():
            return Availability.no("no CUDA device")
        return Availability.yes()

    def prepare(self, A: torch.Tensor, method: str, options: SolveOptions) -> Any:
        LU, pivots, info = torch.linalg.lu_factor_ex(A.to_dense())
        if int(info) != 0:
            raise SingularMatrixError(f"backend {self.name!r}: U[{int(info) - 1}, {int(info) - 1}] is zero")
        self.factorizations += 1
        return LU, pivots

    def solve(
        self, state: Any, B: torch.Tensor, *, transpose: bool, x0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, BackendReport]:
        LU, pivots = state
        if transpose and B.is_complex():  # the contract's transpose is the plain Aᵀ: Aᵀ x = b ⇔ Aᴴ conj(x) = conj(b)
            X = torch.linalg.lu_solve(LU, pivots, B.conj(), adjoint=True).conj().resolve_conj()
            return X, BackendReport()
        return torch.linalg.lu_solve(LU, pivots, B, adjoint=transpose), BackendReport()
