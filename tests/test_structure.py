"""``tsgu_core.sparse.structure.asymmetry`` against dense ``|A − Aᵀ|`` / ``|A − Aᴴ|`` on every kind of pattern."""

from __future__ import annotations

import pytest
import torch

from tsgu_core import SparsePattern
from tsgu_core.sparse.structure import asymmetry


def _matrices() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    dense = torch.randn(12, 12, dtype=torch.float64, generator=generator)
    dense[dense.abs() < 0.8] = 0
    symmetric_pattern = dense + dense.T  # structurally symmetric, numerically symmetric
    skewed = symmetric_pattern + torch.triu(symmetric_pattern, 1) * 0.25  # same pattern, nonsymmetric values
    imaginary = torch.randn(12, 12, dtype=torch.float64, generator=generator) * (symmetric_pattern != 0)
    return {
        "nonsymmetric pattern": dense,
        "symmetric": symmetric_pattern,
        "symmetric pattern, nonsymmetric values": skewed,
        "complex symmetric": torch.complex(symmetric_pattern, imaginary + imaginary.T),
        "hermitian": torch.complex(symmetric_pattern, imaginary - imaginary.T),
        "complex, nonsymmetric pattern": torch.complex(dense, dense.T.clone()),
    }


@pytest.mark.parametrize("name", list(_matrices()))
@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_asymmetry_matches_dense(name: str, layout: str) -> None:
    dense = _matrices()[name]
    A = dense.to_sparse_csr() if layout == "csr" else dense.to_sparse().coalesce()
    pattern = SparsePattern.of(A)
    values = (A.values() if layout == "csr" else A._values()).clone()
    scale = dense.abs().max()
    assert asymmetry(pattern, values) == pytest.approx(float((dense - dense.T).abs().max() / scale), abs=1e-15)
    expected = float((dense - dense.T.conj()).abs().max() / scale)
    assert asymmetry(pattern, values, conjugate=True) == pytest.approx(expected, abs=1e-15)
    # the shared-pattern batch of two members: the worst member counts
    batch = torch.stack([values, values * 2])
    assert asymmetry(pattern, batch) == pytest.approx(float((dense - dense.T).abs().max() / scale), abs=1e-15)


def test_mirror_order_only_for_a_structurally_symmetric_pattern() -> None:
    matrices = _matrices()
    assert SparsePattern.of(matrices["symmetric"].to_sparse_csr()).mirror_order() is not None
    assert SparsePattern.of(matrices["nonsymmetric pattern"].to_sparse_csr()).mirror_order() is None
    rectangular = torch.ones(3, 4, dtype=torch.float64).to_sparse_csr()
    assert SparsePattern.of(rectangular).mirror_order() is None
