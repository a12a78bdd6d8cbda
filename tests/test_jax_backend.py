"""The jax backend beyond the conformance suite: scoped float64, compile cache, per-column Krylov, policy."""

import pytest
import torch

import tsgu_core
from tsgu_core import errors
from tsgu_core.testing import convection_diffusion_2d, random_nonsymmetric, to_layout

jax = pytest.importorskip("jax", reason="needs JAX (pip install 'tsgu[jax]')")


def test_float64_does_not_change_jax_process_settings():
    before = jax.config.jax_enable_x64
    A = to_layout(random_nonsymmetric(8, seed=1), "csr")
    x = tsgu_core.solve(A, torch.ones(8, dtype=torch.float64), backend="jax", rtol=1e-12)
    assert x.dtype == torch.float64
    assert jax.config.jax_enable_x64 == before
    y = tsgu_core.solve(A.to(torch.float32), torch.ones(8), backend="jax", method="bicgstab")
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), x, rtol=1e-4, atol=1e-5)


def test_repeated_shapes_do_not_recompile():
    backend = tsgu_core.get_backend("jax")
    A = to_layout(random_nonsymmetric(9, seed=2), "coo")
    B = torch.randn(9, 2, dtype=torch.float64)
    tsgu_core.solve(A, B, backend="jax", method="bicgstab", rtol=1e-10)
    compiled = backend.cache.compilations
    for scale in (2.0, 3.0):  # new values, same shapes: no new compilation
        tsgu_core.solve(A * scale, B * scale, backend="jax", method="bicgstab", rtol=1e-10)
    assert backend.cache.compilations == compiled
    tsgu_core.solve(A, torch.randn(9, 5, dtype=torch.float64), backend="jax", method="bicgstab", rtol=1e-10)
    assert backend.cache.compilations == compiled + 1  # a new number of columns is a new shape


@pytest.mark.parametrize("method", ["gmres", "bicgstab"])
def test_eight_right_hand_sides_get_their_own_krylov_solves(method):
    """The seed flattened the columns into one iteration: 8-RHS gradients came out 1e7 off."""
    A = convection_diffusion_2d(8, peclet=0.8).requires_grad_()  # nonsymmetric
    D = A.detach().to_dense()
    B = torch.randn(A.shape[0], 8, dtype=torch.float64, requires_grad=True)
    X = tsgu_core.solve(A, B, backend="jax", method=method, rtol=1e-11)
    X.square().sum().backward()
    D_ref = D.clone().requires_grad_()
    B_ref = B.detach().clone().requires_grad_()
    torch.linalg.solve(D_ref, B_ref).square().sum().backward()
    torch.testing.assert_close(B.grad, B_ref.grad, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (D != 0), rtol=1e-7, atol=1e-9)


def test_the_true_residual_guards_forward_and_backward():
    """JAX reports no convergence: the core's residual check must catch both passes."""
    D = random_nonsymmetric(12, seed=3)
    A = to_layout(D, "csr").requires_grad_()
    b = torch.randn(12, dtype=torch.float64)
    with pytest.raises(errors.ConvergenceError, match="'jax'.*the solve did not converge"):
        tsgu_core.solve(A, b, backend="jax", method="gmres", maxiter=1, rtol=1e-14)
    exact = torch.linalg.solve(D, b)
    x = tsgu_core.solve(A, b, backend="jax", method="gmres", maxiter=1, rtol=1e-10, x0=exact)  # converged at start
    with pytest.raises(errors.ConvergenceError, match=r"transpose solve \(backward pass\)"):
        x.sum().backward()


def test_spsolve_and_options():
    D = random_nonsymmetric(10, seed=4)
    A = to_layout(D, "csr")
    b = torch.randn(10, dtype=torch.float64)
    torch.testing.assert_close(tsgu_core.solve(A, b, backend="jax", method="spsolve"), torch.linalg.solve(D, b))
    x = tsgu_core.solve(A, b, backend="jax", method="gmres", restart=5, solve_method="incremental", rtol=1e-12)
    torch.testing.assert_close(x, torch.linalg.solve(D, b))
    x = tsgu_core.solve(A, b, backend="jax", method="bicgstab", preconditioner="jacobi", rtol=1e-12)
    torch.testing.assert_close(x, torch.linalg.solve(D, b))
    with pytest.raises(ValueError, match="solve_method"):
        tsgu_core.solve(A, b, backend="jax", method="gmres", solve_method="fast")
    with pytest.raises(errors.UnknownOptionError):
        tsgu_core.solve(A, b, backend="jax", method="cg", restart=3)


@pytest.mark.cuda
def test_cuda_tensors_stay_on_the_gpu():
    if not tsgu_core.get_entry("jax").availability("cuda"):
        pytest.skip(f"needs JAX with a GPU: {tsgu_core.get_entry('jax').availability('cuda').reason}")
    D = random_nonsymmetric(10, seed=5).cuda()
    A = D.to_sparse_csr().requires_grad_()
    b = torch.randn(10, dtype=torch.float64, device="cuda")
    x = tsgu_core.solve(A, b, backend="jax", rtol=1e-12)
    assert x.device.type == "cuda"
    torch.testing.assert_close(x, torch.linalg.solve(D, b))
    x.sum().backward()
    assert A.grad.device.type == "cuda"


def test_hybrid_product_matches_dense_with_long_rows():
    """A few long rows go to the COO part of the CPU product; every entry still counts, duplicates summed."""
    from tsgu_backends.jax_backend.convert import precision, to_jax
    from tsgu_backends.jax_backend.operator import hybrid_matvec, hybrid_parts

    generator = torch.Generator().manual_seed(6)
    n = 60
    D = random_nonsymmetric(n, density=0.05, seed=6)
    D[7] = torch.randn(n, generator=generator, dtype=torch.float64)  # two long rows
    D[40, ::2] = 1.5
    row, col = D.nonzero().T
    values = D[row, col]
    row, col, values = torch.cat([row, row[:3]]), torch.cat([col, col[:3]]), torch.cat([values, values[:3]])
    order = torch.sort(row, stable=True).indices  # a duplicated entry is added twice, as in an uncoalesced COO
    expected_matrix = D.clone().index_put_((row[:3], col[:3]), values[:3], accumulate=True)
    parts = hybrid_parts(row[order], col[order], values[order], n)
    assert parts[2].numel() > 0, "the long rows should not widen the ELL part"
    assert parts[0].shape[0] < int(torch.bincount(row).max())
    x = torch.randn(n, generator=generator, dtype=torch.float64)
    with precision(torch.float64):
        product = jax.jit(hybrid_matvec(n, parts[0].shape[0], True))
        y = torch.from_dlpack(product(*(to_jax(part) for part in parts), to_jax(x)))
    torch.testing.assert_close(y, expected_matrix @ x)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_long_rows_solve_and_gradient(layout):
    """Forward and transpose solves through the hybrid product on a matrix whose rows differ widely in length."""
    n = 40
    D = random_nonsymmetric(n, density=0.05, seed=7)
    D[3, :] += torch.linspace(-0.2, 0.2, n, dtype=torch.float64)  # one dense row, one dense column
    D[:, 11] += torch.linspace(0.1, 0.3, n, dtype=torch.float64)
    D += torch.diag(D.abs().sum(1))
    A = to_layout(D, layout).requires_grad_()
    B = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(8), requires_grad=True)
    X = tsgu_core.solve(A, B, backend="jax", method="bicgstab", rtol=1e-12)
    X.square().sum().backward()
    D_ref = D.clone().requires_grad_()
    B_ref = B.detach().clone().requires_grad_()
    torch.linalg.solve(D_ref, B_ref).square().sum().backward()
    torch.testing.assert_close(X, torch.linalg.solve(D, B.detach()))
    torch.testing.assert_close(B.grad, B_ref.grad)
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (D != 0))
