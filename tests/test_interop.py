"""Public converters: tsgu_core.sparse.interop.from_scipy/to_scipy, from_jax/to_jax (from_cupy/to_cupy need CUDA)."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import tsgu_core
from tsgu_core import errors
from tsgu_core.sparse.interop import from_cupy, from_jax, from_scipy, to_cupy, to_jax, to_scipy
from tsgu_core.testing import random_nonsymmetric

N = 9


def dense(dtype=torch.float64, seed=0):
    return random_nonsymmetric(N, seed=seed).to(dtype)


@pytest.mark.parametrize("layout", ["csr", "coo", torch.sparse_csr, torch.sparse_coo])
@pytest.mark.parametrize("scipy_format", ["csr", "csc", "coo", "bsr"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_from_scipy_any_format_to_both_layouts(layout, scipy_format, dtype):
    D = dense(dtype)
    M = sp.csr_array(D.numpy()).asformat(scipy_format)
    A = from_scipy(M, layout=layout)
    expected = {"csr": torch.sparse_csr, "coo": torch.sparse_coo}.get(layout, layout)
    assert A.layout == expected and A.dtype == dtype and A.shape == (N, N)
    torch.testing.assert_close(A.to_dense(), D, rtol=0, atol=0)
    if A.layout == torch.sparse_coo:
        assert A.is_coalesced()


def test_from_scipy_sums_duplicates_and_keeps_int32_csr_indices():
    M = sp.coo_matrix((np.array([1.0, 2.0, 5.0]), (np.array([0, 0, 1]), np.array([1, 1, 0]))), shape=(2, 2))
    for layout in ("csr", "coo"):
        torch.testing.assert_close(from_scipy(M, layout).to_dense(), torch.tensor([[0.0, 3.0], [5.0, 0.0]]).double())
    A = from_scipy(sp.csr_matrix(dense().numpy()))
    assert A.crow_indices().dtype == torch.int32 and A.col_indices().dtype == torch.int32


def test_from_scipy_csr_shares_memory_like_from_numpy():
    M = sp.csr_array(dense().numpy())
    A = from_scipy(M)
    M.data[0] = 123.0
    assert float(A.values()[0]) == 123.0


@pytest.mark.parametrize("layout", ["csr", "coo"])
@pytest.mark.parametrize("matrix", [False, True])
def test_to_scipy_round_trip(layout, matrix):
    D = dense()
    A = D.to_sparse_csr() if layout == "csr" else D.to_sparse_coo()
    M = to_scipy(A, matrix=matrix)
    assert sp.issparse(M) and M.format == layout and sp.isspmatrix(M) == matrix
    np.testing.assert_array_equal(M.toarray(), D.numpy())
    torch.testing.assert_close(from_scipy(M, layout).to_dense(), D, rtol=0, atol=0)


def test_to_scipy_of_an_uncoalesced_coo_sums_duplicates():
    A = torch.sparse_coo_tensor(torch.tensor([[0, 0, 1], [1, 1, 0]]), torch.tensor([1.0, 2.0, 5.0]), (2, 2))
    np.testing.assert_array_equal(to_scipy(A).toarray(), [[0.0, 3.0], [5.0, 0.0]])


def test_converters_refuse_what_they_cannot_convert():
    with pytest.raises(errors.LayoutError, match="torch.from_numpy"):
        from_scipy(np.eye(2))
    with pytest.raises(errors.LayoutError, match="'csr' or 'coo'"):
        from_scipy(sp.eye(2, format="csr"), layout="csc")
    with pytest.raises(errors.LayoutError, match="COO or CSR"):
        to_scipy(torch.eye(2))
    with pytest.raises(errors.DeviceMismatchError, match="to_scipy"):
        to_cupy(torch.eye(2).to_sparse_csr())


def test_solve_names_the_converter_for_foreign_matrices():
    b = torch.ones(N, dtype=torch.float64)
    with pytest.raises(errors.LayoutError, match=r"tsgu_core\.from_scipy\(A, layout='csr'\)"):
        tsgu_core.solve(sp.csr_array(dense().numpy()), b)
    with pytest.raises(errors.LayoutError, match=r"torch\.from_numpy\(A\)\.to_sparse_csr\(\).*from_scipy"):
        tsgu_core.solve(dense().numpy(), b)


def test_a_converted_scipy_matrix_solves_like_dense():
    D = dense(seed=3)
    b = torch.randn(N, dtype=torch.float64)
    x = tsgu_core.solve(from_scipy(sp.csc_matrix(D.numpy())), b)
    torch.testing.assert_close(x, torch.linalg.solve(D, b))


@pytest.mark.parametrize("layout", ["csr", "coo"])
@pytest.mark.parametrize("fmt", ["bcoo", "bcsr"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_jax_round_trip(layout, fmt, dtype):
    jax = pytest.importorskip("jax", reason="needs JAX")
    D = dense(dtype, seed=4)
    A = D.to_sparse_csr() if layout == "csr" else D.to_sparse_coo()
    M = to_jax(A, format=fmt)
    assert type(M).__name__ == fmt.upper()
    with jax.enable_x64(True):
        assert str(M.data.dtype) == str(D.numpy().dtype)
        np.testing.assert_array_equal(np.asarray(M.todense()), D.numpy())
    for back_layout in ("csr", "coo"):
        torch.testing.assert_close(from_jax(M, back_layout).to_dense(), D, rtol=0, atol=0)


def test_from_jax_sums_duplicates():
    pytest.importorskip("jax", reason="needs JAX")
    import jax.numpy as jnp
    from jax.experimental import sparse

    M = sparse.BCOO((jnp.array([1.0, 2.0, 5.0]), jnp.array([[0, 1], [0, 1], [1, 0]])), shape=(2, 2))
    for layout in ("csr", "coo"):
        torch.testing.assert_close(from_jax(M, layout).to_dense(), torch.tensor([[0.0, 3.0], [5.0, 0.0]]))


@pytest.mark.cuda
def test_cupy_round_trip():
    pytest.importorskip("cupyx.scipy.sparse", reason="needs CuPy with its CUDA libraries")
    D = dense().cuda()
    for layout in ("csr", "coo"):
        A = D.to_sparse_csr() if layout == "csr" else D.to_sparse_coo()
        M = to_cupy(A)
        assert M.format == layout
        torch.testing.assert_close(from_cupy(M, layout).to_dense(), D, rtol=0, atol=0)


def test_importing_tsgu_core_imports_no_converter_library():
    code = (
        "import sys, tsgu_core, tsgu_core.sparse.interop; "
        "print(sorted(m for m in ('scipy', 'cupy', 'cupyx', 'jax') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
