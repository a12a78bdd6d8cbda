"""Test and benchmark matrices, built with torch alone.

Every generator is deterministic for a given ``seed`` and returns a dense
``(n, n)`` tensor (small test problems) or a sparse CSR tensor (the
structured PDE problems, which scale to n ≈ 1e6). Use :func:`to_layout` to
get COO or CSR.
"""

from __future__ import annotations

import torch

from tsgu_core.base.quiet import quietly
from tsgu_core.errors import InvalidArgumentError

__all__ = [
    "convection_diffusion_2d",
    "matrix_for",
    "poisson_2d",
    "random_nonsymmetric",
    "random_spd",
    "random_symmetric_indefinite",
    "to_layout",
    "triangular_pair",
]


def _sparse_random(n: int, density: float, seed: int, dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, n, generator=generator) < density
    mask.fill_diagonal_(False)
    return torch.randn(n, n, generator=generator, dtype=dtype) * mask


def random_nonsymmetric(
    n: int, *, density: float = 0.25, seed: int = 0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """A well-conditioned, clearly nonsymmetric matrix with a stored diagonal.

    Off-diagonal entries are independent normals (so ``‖A − Aᵀ‖ ≈ ‖A‖``; for a
    complex dtype, complex normals, so ``A`` is neither symmetric nor
    Hermitian); the diagonal is each row's absolute sum plus one, making ``A``
    strictly diagonally dominant and every general method convergent.

    >>> A = random_nonsymmetric(6, seed=1)
    >>> bool((A - A.T).abs().max() > 0.1)
    True
    """
    S = _sparse_random(n, density, seed, dtype)
    return S + torch.diag(S.abs().sum(1) + 1).to(dtype)


def random_spd(n: int, *, density: float = 0.25, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A sparse symmetric positive definite, diagonally dominant matrix (complex dtype: Hermitian positive definite)."""
    S = _sparse_random(n, density / 2, seed, dtype)
    S = S + S.mH
    return S + torch.diag(S.abs().sum(1) + 1).to(dtype)


def random_symmetric_indefinite(
    n: int, *, density: float = 0.25, seed: int = 0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """A sparse symmetric indefinite matrix (diagonal of alternating sign; complex dtype: Hermitian indefinite)."""
    S = _sparse_random(n, density / 2, seed, dtype)
    S = S + S.mH
    sign = torch.ones(n, dtype=dtype.to_real())
    sign[1::2] = -1
    return S + torch.diag(sign * (S.abs().sum(1) + 1)).to(dtype)


def triangular_pair(
    n: int, *, upper: bool, unit_diagonal: bool = False, seed: int = 0, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """A nonsymmetric triangular test matrix: ``(stored, meaning)``, both dense ``(n, n)``.

    ``stored`` holds the entries to store; ``meaning`` is the matrix they
    stand for (with ``unit_diagonal`` the diagonal is not stored and means ones).

    >>> stored, meaning = triangular_pair(3, upper=True, unit_diagonal=True)
    >>> bool((stored.diagonal() == 0).all()), bool((meaning.diagonal() == 1).all())
    (True, True)
    """
    D = random_nonsymmetric(n, seed=seed, dtype=dtype)
    T = torch.triu(D) if upper else torch.tril(D)
    if unit_diagonal:
        T = T - torch.diag(torch.diagonal(T))
        return T, T + torch.eye(n, dtype=dtype)
    return T, T


def matrix_for(assumes: str, n: int, *, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The random test matrix for a method that assumes ``"general"``, ``"symmetric"`` or ``"spd"``.

    For a complex ``dtype`` "symmetric" and "spd" give Hermitian matrices: what such methods need then.
    """
    makers = {"general": random_nonsymmetric, "symmetric": random_symmetric_indefinite, "spd": random_spd}
    return makers[assumes](n, seed=seed, dtype=dtype)


@quietly  # torch's notices about CSR tensors are tsgu's to hide here (see tsgu_core.base.quiet)
def to_layout(D: torch.Tensor, layout: str, index_dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """The nonzeros of dense ``D`` as a ``"coo"`` (coalesced) or ``"csr"`` tensor."""
    if layout == "coo":
        A = D.to_sparse().coalesce()
        return torch.sparse_coo_tensor(
            A.indices().to(index_dtype), A.values(), A.shape, check_invariants=False
        ).coalesce()
    if layout == "csr":
        A = D.to_sparse_csr()
        return torch.sparse_csr_tensor(
            A.crow_indices().to(index_dtype),
            A.col_indices().to(index_dtype),
            A.values(),
            A.shape,
            check_invariants=False,
        )
    raise InvalidArgumentError(f"layout must be 'coo' or 'csr', got {layout!r}")


@quietly
def _grid_csr(m: int, stencil: dict[tuple[int, int], float], dtype: torch.dtype) -> torch.Tensor:
    """A 5-point stencil on an ``m × m`` grid with Dirichlet boundaries, as CSR."""
    n = m * m
    idx = torch.arange(n)
    i, j = idx // m, idx % m
    rows, cols, vals = [], [], []
    for (di, dj), value in stencil.items():
        ii, jj = i + di, j + dj
        keep = (ii >= 0) & (ii < m) & (jj >= 0) & (jj < m)
        rows.append(idx[keep])
        cols.append((ii * m + jj)[keep])
        vals.append(torch.full((int(keep.sum()),), value, dtype=dtype))
    A = torch.sparse_coo_tensor(
        torch.stack([torch.cat(rows), torch.cat(cols)]), torch.cat(vals), (n, n), check_invariants=False
    )
    return A.coalesce().to_sparse_csr()


def poisson_2d(m: int, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The 5-point Laplacian on an ``m × m`` grid (n = m², SPD), as CSR.

    >>> poisson_2d(3).shape
    torch.Size([9, 9])
    """
    return _grid_csr(m, {(0, 0): 4.0, (-1, 0): -1.0, (1, 0): -1.0, (0, -1): -1.0, (0, 1): -1.0}, dtype)


def convection_diffusion_2d(m: int, *, peclet: float = 0.5, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Central-difference convection–diffusion on an ``m × m`` grid: nonsymmetric, as CSR.

    Diffusion ``−Δu`` plus convection ``peclet·(∂x u + ∂y u)`` (grid Péclet
    number ``peclet``; below 1 the matrix stays an M-matrix).
    """
    p = peclet
    return _grid_csr(m, {(0, 0): 4.0, (-1, 0): -1.0 - p, (1, 0): -1.0 + p, (0, -1): -1.0 - p, (0, 1): -1.0 + p}, dtype)
