"""The public plugin kit (tsgu_core.plugins.kit) against independent references."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import tsgu_core
from tsgu_core import BackendReport, errors
from tsgu_core.plugins import kit
from tsgu_core.plugins.options import resolve_options
from tsgu_core.testing import random_nonsymmetric

# --- scaling -------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [-1074, -1073, -1022, -1000, -1, 0, 1, 52, 1000, 1023])
def test_power_of_two_is_exact_at_and_around_powers_of_two(k):
    p = math.ldexp(1.0, k)  # exactly 2^k
    assert kit.power_of_two(p) == p
    if k > -1074:
        assert kit.power_of_two(math.nextafter(p, 0.0)) == p / 2  # just below 2^k: the power below
    if k < 1023:
        assert kit.power_of_two(math.nextafter(2 * p, 0.0)) == p  # just below 2^(k+1): still 2^k


def test_power_of_two_brackets_its_argument_over_the_whole_range():
    rng = np.random.default_rng(0)
    values = np.concatenate([10.0 ** rng.uniform(-323, 308, 2000), [1e-300, 1e300, 5e-324, 1.7976931348623157e308]])
    tensor = kit.power_of_two(torch.from_numpy(values))
    for x, sigma in zip(values.tolist(), tensor.tolist(), strict=True):
        assert math.frexp(sigma)[0] == 0.5  # a power of two
        assert sigma <= x < 2 * sigma
        assert kit.power_of_two(x) == sigma  # float and tensor agree
        assert (x / sigma) * sigma == x  # division by it is exact


def test_power_of_two_of_nothing_to_scale_is_one():
    for x in (0.0, -3.0, math.inf, -math.inf, math.nan):
        assert kit.power_of_two(x) == 1.0
    t = kit.power_of_two(torch.tensor([0.0, -1.0, math.inf, math.nan, 3.0], dtype=torch.float32))
    assert t.dtype == torch.float32 and t.tolist() == [1.0, 1.0, 1.0, 1.0, 2.0]


def test_power_of_two_in_float32_including_subnormals():
    values = torch.tensor([1e-40, 1e-30, 3.0e38, 0.75], dtype=torch.float32)  # 1e-40 is subnormal in float32
    sigma = kit.power_of_two(values)
    for x, s in zip(values.tolist(), sigma.tolist(), strict=True):
        assert math.frexp(s)[0] == 0.5 and s <= x < 2 * s


@pytest.mark.parametrize("scale", [1e-300, 1.0, 1e300])
def test_largest_power_of_two_scales_exactly(scale):
    D = random_nonsymmetric(7, seed=3) * scale
    sigma = kit.largest_power_of_two(D)
    assert sigma.item() <= D.abs().max().item() < 2 * sigma.item()
    assert torch.equal((D / sigma) * sigma, D)  # exact both ways
    columns = kit.largest_power_of_two(D, dim=0)
    expected = [kit.power_of_two(float(D[:, j].abs().max())) for j in range(7)]
    assert columns.tolist() == expected


@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_scaled_norm_at_extreme_scales_against_hypot(scale):
    x = torch.from_numpy(np.random.default_rng(1).standard_normal(50)) * scale
    assert float(torch.linalg.vector_norm(x)) in (0.0, math.inf)  # the naive norm fails here
    assert float(kit.scaled_norm(x, dim=0)) == pytest.approx(math.hypot(*x.tolist()), rel=1e-14)


@pytest.mark.parametrize("scale", [1e-300, 1e300])
@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("k", [1, 3])
def test_backends_solve_extreme_scales_through_the_kit(scale, layout, k):
    D = random_nonsymmetric(12, seed=4)
    B = torch.from_numpy(np.random.default_rng(2).standard_normal((12, k)))
    A = (D * scale).to_sparse_csr() if layout == "csr" else (D * scale).to_sparse().coalesce()
    expected = torch.linalg.solve(D, B)  # (cA) X = cB has the unscaled solution
    for backend, method in (("torch", "gmres"), ("torch", "bicgstab"), ("scipy", "gmres"), ("scipy", "splu")):
        tolerance = {"rtol": 1e-12} if method != "splu" else {}
        X = tsgu_core.solve(A, B * scale, backend=backend, method=method, **tolerance)
        torch.testing.assert_close(X, expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_lstsq_at_extreme_scales(scale):
    D = torch.from_numpy(np.random.default_rng(5).standard_normal((9, 4)))
    b = torch.from_numpy(np.random.default_rng(6).standard_normal(9))
    x = tsgu_core.lstsq((D * scale).to_sparse_csr(), b * scale, backend="torch", rtol=1e-12)
    torch.testing.assert_close(x, torch.linalg.lstsq(D, b.unsqueeze(1)).solution.squeeze(1), rtol=1e-8, atol=1e-10)


# --- CSR index work ------------------------------------------------------------------------------


def _random_sparse(m, n, seed, density=0.3):
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((m, n)) * (rng.random((m, n)) < density)
    dense[0, :] = 0.0  # an empty row
    dense[:, -1] = 0.0  # an empty column
    return torch.from_numpy(dense)


@pytest.mark.parametrize("kind", ["torch", "numpy"])
@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_row_pointers_count_entries_per_row(kind, dtype):
    row = np.random.default_rng(3).integers(0, 9, size=40).astype(dtype)  # any order
    n_rows = 11  # the last rows are empty
    reference = [sum(int(r) < i for r in row) for i in range(n_rows + 1)]
    given = torch.from_numpy(row) if kind == "torch" else row
    pointers = kit.row_pointers(given, n_rows)
    assert isinstance(pointers, torch.Tensor if kind == "torch" else np.ndarray)
    assert pointers.tolist() == reference


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_row_indices_invert_row_pointers(kind):
    S = _random_sparse(8, 6, seed=1).to_sparse_csr()
    crow = S.crow_indices() if kind == "torch" else S.crow_indices().numpy()
    reference = sp.csr_matrix(S.to_dense().numpy()).tocoo().row  # SciPy's own conversion
    rows = kit.row_indices(crow)
    assert np.asarray(rows).tolist() == reference.tolist()
    assert np.asarray(kit.row_pointers(rows, 8)).tolist() == np.asarray(crow).tolist()


@pytest.mark.parametrize("kind", ["torch", "numpy"])
@pytest.mark.parametrize("shape", [(9, 9), (7, 11), (12, 5)])
@pytest.mark.parametrize("batch", [None, 3])
def test_transpose_csr_against_dense_transposes(kind, shape, batch):
    dense = _random_sparse(*shape, seed=sum(shape))
    S = dense.to_sparse_csr()
    values = S.values() if batch is None else torch.stack([S.values() * (i + 1) for i in range(batch)])
    row, col = kit.row_indices(S.crow_indices()), S.col_indices().to(torch.int32)
    if kind == "numpy":
        row, col, values = row.numpy(), col.numpy(), values.numpy()
    crow_t, col_t, order = kit.transpose_csr(row, col, shape[1])
    crow_t, col_t, order = (torch.as_tensor(a) for a in (crow_t, col_t, order))
    assert crow_t.numel() == shape[1] + 1
    members = [torch.as_tensor(values)[..., order]] if batch is None else list(torch.as_tensor(values)[..., order])
    for i, member in enumerate(members):
        T = torch.sparse_csr_tensor(crow_t, col_t, member, (shape[1], shape[0])).to_dense()
        assert torch.equal(T, dense.T * (i + 1))
    # CSR order with sorted columns, as SciPy's canonical transpose
    canonical = sp.csr_matrix(dense.numpy()).T.tocsr()
    canonical.sort_indices()
    assert crow_t.tolist() == canonical.indptr.tolist() and col_t.tolist() == canonical.indices.tolist()


def test_transpose_csr_with_unsorted_columns_within_rows():
    # row 0 stores columns 2, 0; row 1 stores columns 1, 0: still CSR order by row
    row, col = torch.tensor([0, 0, 1, 1]), torch.tensor([2, 0, 1, 0])
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    crow_t, col_t, order = kit.transpose_csr(row, col, 3)
    T = torch.sparse_csr_tensor(crow_t, col_t, values[order], (3, 2)).to_dense()
    dense = torch.zeros(2, 3).index_put_((row, col), values)
    assert torch.equal(T, dense.T)


def test_pattern_transposed_uses_the_kit_and_matches_dense():
    dense = _random_sparse(10, 10, seed=7)
    pattern = tsgu_core.SparsePattern.of(dense.to_sparse_csr())
    transposed, order = pattern.transposed()
    values = dense.to_sparse_csr().values()
    assert torch.equal(transposed.to_csr(values[order]).to_dense(), dense.T)


# --- reports --------------------------------------------------------------------------------------


def test_merge_reports_fields_and_none_handling():
    merge = kit.merge_reports
    ok = BackendReport(iterations=4, converged=True, message="a", history=(1.0, 0.1))
    failed = BackendReport(iterations=9, converged=False, message="b", history=(1.0, 0.5, 0.2))
    unknown = BackendReport(converged=None, message="a")
    assert merge([ok, ok]).converged is True
    assert merge([ok, unknown]).converged is None  # an unknown is never reported as success
    assert merge([unknown, failed]).converged is False  # a known failure is never hidden
    assert merge([ok, failed]).iterations == 9
    assert merge([unknown, unknown]).iterations is None  # direct parts count nothing
    assert merge([ok, failed, unknown]).message == "a; b"  # distinct, in the order first seen
    assert merge([ok, failed]).history == (1.0, 0.5, 0.2)  # the worst value at each step, a finished part held
    assert merge([unknown]).history is None
    assert merge([]) == BackendReport()


def test_combine_histories_against_a_direct_reference():
    histories = [[1.0, 0.3, 0.01], [2.0, 0.1], None, [], [0.5, 0.6, 0.7, 0.8]]
    kept = [h for h in histories if h]
    reference = tuple(max(h[min(i, len(h) - 1)] for h in kept) for i in range(4))
    assert kit.combine_histories(histories) == reference == (2.0, 0.6, 0.7, 0.8)


# --- SuperLU ---------------------------------------------------------------------------------------


def test_superlu_solves_and_types_singularity():
    D = random_nonsymmetric(8, seed=2)
    lu = kit.superlu(sp.csr_matrix(D.numpy()))
    b = np.arange(8.0)
    np.testing.assert_allclose(lu.solve(b), torch.linalg.solve(D, torch.from_numpy(b)).numpy(), rtol=1e-10)
    np.testing.assert_allclose(lu.solve(b, trans="T"), torch.linalg.solve(D.T, torch.from_numpy(b)).numpy())
    singular = D.clone()
    singular[3] = singular[5]
    with pytest.raises(errors.SingularMatrixError, match="member 2 is singular"):
        kit.superlu(sp.csr_matrix(singular.numpy()), what="member 2")


# --- options: defaults only from the declared Option -------------------------------------------------


@pytest.mark.parametrize("given", [None, 7])
def test_torch_gmres_restart_comes_from_the_declared_option(monkeypatch, given):
    from tsgu_backends.torch_backend import backend as torch_backend

    seen = []
    real = torch_backend.krylov_solve

    def spy(*args, **kwargs):
        seen.append(kwargs["restart"])
        return real(*args, **kwargs)

    monkeypatch.setattr(torch_backend, "krylov_solve", spy)
    D = random_nonsymmetric(10, seed=1)
    options = {} if given is None else {"restart": given}
    X = tsgu_core.solve(D.to_sparse_csr(), torch.ones(10, dtype=D.dtype), backend="torch", method="gmres", **options)
    torch.testing.assert_close(X, torch.linalg.solve(D, torch.ones(10, dtype=D.dtype)))
    declared = torch_backend.METHODS["gmres"].options["restart"].default
    assert seen == [declared if given is None else given]
    filled = resolve_options(torch_backend.METHODS["gmres"], "torch", options, n=10, dtype=D.dtype)
    assert filled["restart"] == seen[0]


def test_krylov_gmres_has_no_hidden_restart_default():
    from tsgu_backends.torch_backend.krylov import krylov_solve

    D = random_nonsymmetric(5, seed=1)
    with pytest.raises(errors.InvalidOptionError, match="restart"):
        krylov_solve("gmres", lambda X: D @ X, None, torch.ones(5, 1, dtype=D.dtype), x0=None, rtol=1e-8, atol=0.0,
                     maxiter=50)  # fmt: skip


@pytest.mark.parametrize("name", ["restarts", "nudge", "augmented"])
def test_the_old_backend_modules_are_gone(name):
    import tsgu_backends

    # the kit is their one home (a file test: an editable install of another checkout may extend the package path)
    assert not (Path(tsgu_backends.__file__).parent / f"{name}.py").exists()
    assert hasattr(importlib.import_module(f"tsgu_core.plugins.kit.{name}"), "__all__")
