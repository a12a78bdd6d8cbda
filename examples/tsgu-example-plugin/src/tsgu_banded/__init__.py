"""tsgu-banded: an example tsgu plugin — banded LU factorization through LAPACK.

A sparse matrix whose entries lie within ``kl`` diagonals below and ``ku``
above the main one (1-D discretisations, tridiagonal systems, ...) is
factorized by LAPACK's banded LU (``?gbtrf``) in ``O(n·kl·(kl+ku))`` and
solved by ``?gbtrs`` in ``O(n·(2kl+ku))`` per column — with ``trans=1`` for
the transpose solve of the backward pass, reusing the same factors.

The whole plugin is this module: a backend class (the contract of
``tsgu_core.plugins.protocol.SolverBackend``) and one hook implementation.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from tsgu_core import (
    Availability,
    BackendReport,
    InvalidOptionError,
    MethodSpec,
    Option,
    SingularMatrixError,
    SolveOptions,
    hookimpl,
)

__all__ = ["BandedBackend", "tsgu_register_backends"]

MAX_BAND_STORAGE = 50_000_000  # entries of LAPACK band storage we accept before pointing elsewhere


@dataclass
class _Factors:
    lu: Any  # LAPACK band storage of L and U
    pivots: Any
    lower: int  # kl
    upper: int  # ku
    solve: Callable[..., Any]  # ?gbtrs for A's dtype


class BandedBackend:
    """Banded LU on the CPU. One direct method, ``"gbtrf"``, correct for any invertible banded ``A``.

    Examples
    --------
    >>> import torch, tsgu_core
    >>> from tsgu_banded import BandedBackend
    >>> A = (2 * torch.eye(4) - torch.diag(torch.ones(3), 1)).double().to_sparse_csr()
    >>> state = BandedBackend().prepare(A, "gbtrf", tsgu_core.SolveOptions(extra={"max_storage": 10**6}))
    >>> X, _ = BandedBackend().solve(state, torch.ones(4, 1, dtype=torch.float64), transpose=False)
    >>> torch.allclose(A.to_dense() @ X, torch.ones(4, 1, dtype=torch.float64))
    True
    """

    name = "banded"
    device_types = ("cpu",)
    methods: ClassVar[dict[str, MethodSpec]] = {
        "gbtrf": MethodSpec(
            "gbtrf",
            "direct",
            "general",
            {
                "max_storage": Option(
                    "the most band-storage entries ((2·kl + ku + 1)·n) to allocate",
                    type=int,
                    default=MAX_BAND_STORAGE,
                    minimum=1,
                )
            },
            "LAPACK banded LU, reused for the transpose solve",
        )
    }
    default_method = "gbtrf"
    priority = 10  # below the built-in CPU default: chosen only by name

    def is_available(self, device_type: str) -> Availability:
        if device_type != "cpu":
            return Availability.no(f"serves only the CPU, not {device_type!r}")
        if importlib.util.find_spec("scipy") is None:
            return Availability.no("SciPy is not installed", install="pip install scipy")
        return Availability.yes()

    def prepare(self, A: torch.Tensor, method: str, options: SolveOptions) -> _Factors:
        import numpy as np
        from scipy.linalg import lapack

        n = A.shape[0]
        coo = A.to_sparse_coo().coalesce() if A.layout == torch.sparse_csr else A
        rows, cols = coo.indices().numpy()
        values = coo.values().numpy()
        lower = int(np.max(rows - cols, initial=0))
        upper = int(np.max(cols - rows, initial=0))
        if (2 * lower + upper + 1) * n > options["max_storage"]:  # declared, checked and filled by tsgu
            raise InvalidOptionError(
                f"A's band (kl={lower}, ku={upper}) needs {(2 * lower + upper + 1) * n} entries of band storage, "
                f"more than max_storage={options['max_storage']}; raise it, or use backend='scipy' for wide bands",
                option="max_storage",
            )
        # LAPACK band storage with room for the pivoting fill: ab[kl + ku + i - j, j] = A[i, j]
        band = np.zeros((2 * lower + upper + 1, n), dtype=values.dtype)
        band[lower + upper + rows - cols, cols] = values
        factorize, solve = (
            (lapack.sgbtrf, lapack.sgbtrs) if values.dtype == np.float32 else (lapack.dgbtrf, lapack.dgbtrs)
        )
        lu, pivots, info = factorize(band, lower, upper)
        if info > 0:
            raise SingularMatrixError(f"A is singular: U[{info - 1}, {info - 1}] is exactly zero (LAPACK ?gbtrf)")
        if info < 0:
            raise RuntimeError(f"LAPACK ?gbtrf rejected argument {-info}")  # a bug: tsgu reports it as BackendError
        return _Factors(lu, pivots, lower, upper, solve)

    def solve(
        self, state: _Factors, B: torch.Tensor, *, transpose: bool, x0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, BackendReport]:
        X, info = state.solve(state.lu, state.lower, state.upper, B.numpy(), state.pivots, trans=int(transpose))
        if info != 0:
            raise RuntimeError(f"LAPACK ?gbtrs rejected argument {-info}")
        return torch.from_numpy(X), BackendReport()


@hookimpl
def tsgu_register_backends(register: Callable[[Any], None]) -> None:
    """Give tsgu this plugin's backend."""
    register(BandedBackend())
