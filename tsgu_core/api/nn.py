"""``torch.nn`` building blocks: :class:`SparseSolve`, a sparse linear solve as a layer."""

from __future__ import annotations

from typing import Any

import torch

from tsgu_core.api.solve import solve_values
from tsgu_core.base.quiet import quietly
from tsgu_core.errors import InvalidArgumentError, ShapeError
from tsgu_core.sparse.pattern import SparsePattern

__all__ = ["SparseSolve"]


class SparseSolve(torch.nn.Module):
    r"""``X = A(θ)⁻¹ B`` as a module: a fixed sparsity pattern with learnable (or given) values.

    The values are a dense ``nn.Parameter`` (or a buffer with
    ``learnable=False``), solved through :func:`tsgu_core.solve_values`, so
    their gradients — of any order — are exact, optimisers update them like
    any weight, and ``module.to(device)`` moves pattern and values together.

    Following PyTorch's convention for mini-batches, input and output are
    batch-first: ``forward(B)`` takes ``(batch, n)`` (or ``(n,)``) and returns
    ``X`` of the same shape with ``A X[i] = B[i]`` for every row ``i``; all
    rows are solved together as the columns of one multi-right-hand-side
    solve. With ``batch_first=False`` it takes ``(n,)`` or ``(n, k)`` as
    :func:`tsgu_core.solve` does.

    Parameters
    ----------
    A : Tensor or SparsePattern
        A sparse COO/CSR ``(n, n)`` tensor (its pattern, and its values unless
        ``values`` is given) or a :class:`~tsgu_core.SparsePattern`.
    values : Tensor, optional
        Initial values in the pattern's (CSR) order; required with a pattern.
    learnable : bool
        Register the values as an ``nn.Parameter`` (default) or a buffer.
    backend, method, assume, on_failure, **options
        As for :func:`tsgu_core.solve`, used for every forward.
    batch_first : bool
        See above.

    Examples
    --------
    >>> import torch
    >>> from tsgu_core.api.nn import SparseSolve
    >>> A = torch.tensor([[4.0, 1.0], [2.0, 5.0]], dtype=torch.float64).to_sparse_csr()
    >>> layer = SparseSolve(A, backend="scipy")
    >>> B = torch.tensor([[5.0, 7.0], [4.0, 2.0]], dtype=torch.float64)  # two samples, batch first
    >>> X = layer(B)
    >>> torch.allclose(X @ A.to_dense().T, B)
    True
    >>> X.sum().backward()
    >>> layer.values.grad.shape  # one gradient per stored entry
    torch.Size([4])
    """

    def __init__(
        self,
        A: torch.Tensor | SparsePattern,
        values: torch.Tensor | None = None,
        *,
        learnable: bool = True,
        backend: str | None = None,
        method: str | None = None,
        assume: str = "general",
        on_failure: str = "raise",
        batch_first: bool = True,
        **options: Any,
    ):
        super().__init__()
        if isinstance(A, SparsePattern):
            pattern = A
            if values is None:
                raise InvalidArgumentError("SparseSolve(pattern) needs values= (the pattern holds no values)")
        else:
            if A.layout == torch.sparse_coo:
                A = A.coalesce()
            pattern = SparsePattern.of(A)
            if values is None:
                values = A.detach().values()
        if tuple(values.shape) != (pattern.nnz,):
            raise ShapeError(f"values must have shape ({pattern.nnz},) for this pattern, got {tuple(values.shape)}")
        crow, col = pattern.csr_indices()
        self.register_buffer("crow_indices", crow)
        self.register_buffer("col_indices", col)
        self.n = pattern.n
        initial = values.detach().clone()
        if learnable:
            self.values = torch.nn.Parameter(initial)
        else:
            self.register_buffer("values", initial)
        self.batch_first = batch_first
        self.solve_arguments: dict[str, Any] = dict(
            backend=backend, method=method, assume=assume, on_failure=on_failure, **options
        )

    @property
    def pattern(self) -> SparsePattern:
        """The sparsity pattern, on the module's device."""
        crow, col = self.get_buffer("crow_indices"), self.get_buffer("col_indices")
        return SparsePattern.from_csr(crow, col, self.n)

    def matrix(self) -> torch.Tensor:
        """``A`` as a (detached) sparse CSR tensor with the current values."""
        return self.pattern.to_csr(self.values.detach())

    @quietly
    def forward(self, B: torch.Tensor) -> torch.Tensor:
        if self.batch_first and B.dim() == 2:
            X: torch.Tensor = solve_values(self.pattern, self.values, B.T, **self.solve_arguments)
            return X.T
        solution: torch.Tensor = solve_values(self.pattern, self.values, B, **self.solve_arguments)
        return solution

    def extra_repr(self) -> str:
        chosen = {key: value for key, value in self.solve_arguments.items() if value not in (None, "general", "raise")}
        return f"n={self.n}, nnz={self.values.numel()}, batch_first={self.batch_first}" + "".join(
            f", {key}={value!r}" for key, value in chosen.items()
        )
