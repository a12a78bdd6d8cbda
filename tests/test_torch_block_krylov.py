"""The torch backend's block Krylov fast paths: products into reused buffers, and the opt-in fused CPU loops."""

import sys

import pytest
import torch

import tsgu_core
from tsgu_backends.torch_backend import fused_cpu, krylov
from tsgu_backends.torch_backend.operator import CsrOperator
from tsgu_core.testing import (
    conformance_cases,
    convection_diffusion_2d,
    poisson_2d,
    random_nonsymmetric,
    random_spd,
    run_case,
    to_layout,
)

N = 24


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_apply_into_overwrites_the_buffer_with_the_scaled_product(layout, k, transpose, dtype):
    D = random_nonsymmetric(N, seed=3, dtype=dtype)
    operator = CsrOperator(to_layout(D, layout))  # int64 indices in
    X = torch.randn(N, k, dtype=dtype, generator=torch.Generator().manual_seed(1))
    out = torch.full((N, k), float("nan"), dtype=dtype)  # beta = 0 must ignore what the buffer holds
    returned = operator.apply_into(X, out, 0.25, transpose=transpose)
    expected = 0.25 * ((D.T if transpose else D) @ X)
    assert returned is out
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(operator.apply(X, transpose=transpose), expected / 0.25)


def test_apply_into_serves_a_batch():
    D = random_nonsymmetric(N)
    weights = 1 + torch.rand(N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    members = torch.stack([D, D * weights])  # one pattern, different values
    A = members.to_sparse_csr()  # (2, n, n) CSR
    operator = CsrOperator(A)
    X = torch.randn(2, N, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = torch.empty_like(X)
    operator.apply_into(X, out, 0.5)
    torch.testing.assert_close(out, 0.5 * (members @ X))


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_int64_indices_are_prepared_as_int32(layout):
    A = to_layout(random_nonsymmetric(N), layout, torch.int64)
    matrix = CsrOperator(A).matrix
    assert matrix.crow_indices().dtype == torch.int32 and matrix.col_indices().dtype == torch.int32


def _dense_solve_and_grads(D, B):
    D_ref, B_ref = D.clone().requires_grad_(), B.clone().requires_grad_()
    X = torch.linalg.solve(D_ref, B_ref)
    X.square().sum().backward()
    return X.detach(), D_ref.grad, B_ref.grad


FUSED = {"cg": random_spd, "bicgstab": random_nonsymmetric}  # method → a matrix it solves (bicgstab: nonsymmetric)


@pytest.mark.parametrize("method", sorted(FUSED))
@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("shape", [(N,), (N, 3)])
def test_fused_solves_and_differentiates(method, layout, shape):
    D = FUSED[method](N, seed=5)
    B = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    A = to_layout(D, layout).requires_grad_()
    b = B.clone().requires_grad_()
    x, info = tsgu_core.solve(A, b, backend="torch", method=method, rtol=1e-12, fused=True, return_info=True)
    x.square().sum().backward()
    expected, grad_A, grad_B = _dense_solve_and_grads(D, B)
    torch.testing.assert_close(x.detach(), expected)
    torch.testing.assert_close(b.grad, grad_B)
    torch.testing.assert_close(A.grad.to_dense(), grad_A * (D != 0))
    eager = tsgu_core.solve(A.detach(), B, backend="torch", method=method, rtol=1e-12, return_info=True)[1]
    assert info.iterations == eager.iterations  # the same method, only the vector work is fused
    assert "cpu" not in krylov._compile_failure and torch.float64 in fused_cpu._LOADED  # the fused loops did the work


@pytest.mark.parametrize("shape", [(6,), (6, 2)])
def test_fused_bicgstab_gradcheck(shape):
    """gradcheck through A's values of a nonsymmetric A (CG's symmetric gradcheck runs in the conformance kit)."""
    method = "bicgstab"
    D = random_nonsymmetric(6, seed=11)
    mask = D != 0
    B = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(12))

    def f(values, b):
        A = torch.sparse_coo_tensor(mask.nonzero().T, values, D.shape).coalesce()
        return tsgu_core.solve(A, b, backend="torch", method=method, rtol=1e-13, fused=True)

    values = D[mask].clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (values, B.clone().requires_grad_()))


def _scaled_jacobi(D):
    d = D.diagonal().abs()
    return lambda R: R / d.unsqueeze(-1)


@pytest.mark.parametrize("method", sorted(FUSED))
@pytest.mark.parametrize("k", [1, 3, 8])
@pytest.mark.parametrize("preconditioned", [False, True])
# float32 compiles every per-iteration loop once more (seconds each, cold cache): slow; float64 pins the arithmetic
@pytest.mark.parametrize("dtype", [torch.float64, pytest.param(torch.float32, marks=pytest.mark.slow)])
def test_fused_iterates_match_the_eager_loop(method, k, preconditioned, dtype):
    """The fused loops are the eager method: the same iterate after a few iterations, on more rows than lanes."""
    A = convection_diffusion_2d(12, dtype=dtype) if method == "bicgstab" else poisson_2d(12, dtype=dtype)
    D = A.to_dense()
    operator = CsrOperator(A)
    B = torch.randn(D.shape[0], k, dtype=dtype, generator=torch.Generator().manual_seed(k))
    precond = _scaled_jacobi(D) if preconditioned else None
    results = [
        krylov.krylov_solve(
            method, operator.apply, precond, B, x0=None, rtol=1e-30, atol=0.0, maxiter=6, fused=fused, **extra
        )
        for fused in (False, True)
        for extra in ({}, {"op_into": operator.apply_into})
    ]
    tolerance = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-4, "atol": 1e-5}
    for result in results[1:]:
        assert result.iterations == results[0].iterations == 6
        torch.testing.assert_close(result.X, results[0].X, **tolerance)
    rtol = 1e-10 if dtype == torch.float64 else 1e-5
    converged = krylov.krylov_solve(
        method, operator.apply, precond, B, x0=None, rtol=rtol, atol=0.0, maxiter=2000, fused=True
    )
    assert converged.converged
    residual = torch.linalg.vector_norm(B - D @ converged.X, dim=0) / torch.linalg.vector_norm(B, dim=0)
    assert bool((residual <= 2 * rtol).all())  # the true residual meets rtol


@pytest.mark.parametrize("method", sorted(FUSED))
def test_fused_stopped_columns_stay_put(method):
    """A column that is done from the start (zero) stays exactly zero while the others iterate."""
    D = FUSED[method](N, seed=13)
    B = torch.randn(N, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(14))
    B[:, 1] = 0
    x = tsgu_core.solve(to_layout(D, "csr"), B, backend="torch", method=method, rtol=1e-12, fused=True)
    assert torch.equal(x[:, 1], torch.zeros(N, dtype=torch.float64))
    torch.testing.assert_close(x, torch.linalg.solve(D, B))


@pytest.mark.parametrize("method", sorted(FUSED))
def test_fused_batched_members_solve_their_own_systems(method):
    D = FUSED[method](N, seed=15)
    weights = 1 + torch.rand(N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(16))
    members = torch.stack([D, (D * weights + D.T * weights.T) / 2 if method == "cg" else D * weights])
    B = torch.randn(2, N, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(17))
    x = tsgu_core.solve(members.to_sparse_csr(), B, backend="torch", method=method, rtol=1e-12, fused=True)
    torch.testing.assert_close(x, torch.linalg.solve(members, B))


@pytest.mark.parametrize("method", sorted(FUSED))
def test_fused_falls_back_to_eager_with_a_warning_when_the_build_fails(method, monkeypatch):
    monkeypatch.setitem(sys.modules, "tsgu_backends.torch_backend._fused_loops", None)  # numba cannot load here
    monkeypatch.setattr(fused_cpu, "_LOADED", {})
    monkeypatch.setattr(krylov, "_compile_failure", {})
    D = FUSED[method](N, seed=6)
    B = torch.randn(N, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    with pytest.warns(RuntimeWarning, match="could not be built.*_fused_loops.*for the rest of this process"):
        x = tsgu_core.solve(to_layout(D, "csr"), B, backend="torch", method=method, rtol=1e-12, fused=True)
    torch.testing.assert_close(x, torch.linalg.solve(D, B))
    assert "cpu" in krylov._compile_failure  # remembered: later CPU solves take the eager loops, no retry


def test_fused_runs_eagerly_with_a_warning_where_no_loops_are_built(monkeypatch):
    """The loops are built for float32/float64 on the CPU; another dtype (here float16) warns and runs eagerly."""
    monkeypatch.setattr(krylov, "_fallback_warned", set())
    D = poisson_2d(4).to_dense().to(torch.float16)  # torch's sparse kernels have no float16: a dense product

    def op(X):
        return D @ X

    B = torch.ones(16, 2, dtype=torch.float16)
    with pytest.warns(RuntimeWarning, match="cpu/torch.float16 runs eagerly"):
        fused = krylov.krylov_solve("cg", op, None, B, x0=None, rtol=1e-2, atol=0.0, maxiter=3, fused=True)
    eager = krylov.krylov_solve("cg", op, None, B, x0=None, rtol=1e-2, atol=0.0, maxiter=3)
    assert torch.equal(fused.X, eager.X)


@pytest.mark.parametrize("method", sorted(FUSED))
def test_fused_refuses_complex_dtypes(method):
    """fused=True is real-only: a complex A is a typed error, not an option quietly ignored."""
    D = FUSED[method](N, seed=8, dtype=torch.complex128)
    B = torch.randn(N, 2, dtype=torch.complex128, generator=torch.Generator().manual_seed(9))
    with pytest.raises(tsgu_core.InvalidOptionError, match="real dtypes only"):
        tsgu_core.solve(to_layout(D, "coo"), B, backend="torch", method=method, rtol=1e-12, fused=True)


@pytest.mark.parametrize(
    "case",
    conformance_cases("torch", methods=sorted(FUSED), options={m: {"fused": True} for m in FUSED}),
    ids=lambda c: f"fused-{c}",
)
def test_fused_passes_the_conformance_kit(case):
    if case.device != "cpu":
        pytest.skip("fused=True runs its loops on the CPU (elsewhere: eager, with a warning)")
    if case.dtype.startswith("complex"):
        pytest.skip("fused=True refuses a complex A (test_fused_refuses_complex_dtypes)")
    run_case(case)


# -- unpreconditioned fused CG in one loop, the products computed inside it --------------------------------------


def _count_loop_calls(monkeypatch):
    """Record ``(name, (batch, n, k))`` of each call of the whole-solve loops (``FusedKernels.loop``), which run."""
    calls = []
    original = fused_cpu.FusedKernels.loop

    def counted(self, name, matrix, scale, sizes, *rest):
        calls.append((name, sizes))
        return original(self, name, matrix, scale, sizes, *rest)

    monkeypatch.setattr(fused_cpu.FusedKernels, "loop", counted)
    return calls


@pytest.mark.parametrize("method", sorted(FUSED))
@pytest.mark.parametrize("k", [1, 3])
# float32: a compile of each loop for one more dtype (seconds each): slow; the default run compares in float64
@pytest.mark.parametrize("dtype", [torch.float64, pytest.param(torch.float32, marks=pytest.mark.slow)])
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("maxiter", [6, 2000])
def test_the_whole_solve_loop_is_the_per_iteration_loop(method, k, dtype, batched, maxiter, monkeypatch):
    """``csr=`` runs every iteration in one numba call that multiplies by A itself (k ≥ 2): the same iterates (after 6
    iterations, and converged) and iteration counts as the per-iteration loops after torch's products, on more
    rows than a pass's chunk, batch members of different values included."""
    A = convection_diffusion_2d(12, dtype=dtype) if method == "bicgstab" else poisson_2d(12, dtype=dtype)
    if batched:
        D = A.to_dense()
        A = torch.stack([D, D * 1.5 + torch.eye(D.shape[0], dtype=dtype) * 0.25]).to_sparse_csr()
    operator = CsrOperator(A)
    B = torch.randn(*A.shape[:-1], k, dtype=dtype, generator=torch.Generator().manual_seed(k))
    calls = _count_loop_calls(monkeypatch)
    rtol = 1e-30 if maxiter == 6 else (1e-10 if dtype == torch.float64 else 1e-5)
    common = {"x0": None, "rtol": rtol, "atol": 0.0, "maxiter": maxiter, "fused": True}
    results = [
        krylov.krylov_solve(method, operator.apply, None, B, op_into=operator.apply_into, **common, **extra)
        for extra in ({}, {"csr": operator.matrix})
    ]
    if k == 1:  # one column keeps torch's product: no loop
        assert calls == []
    else:
        assert calls and set(calls) == {(f"{method}_loop", (2 if batched else 1, 144, k))}  # the 2nd solve: the loop
    # float64 pins the arithmetic; in float32 the sums' other lane split (512-byte chunks in the product passes)
    # moves BiCGSTAB's iterates by up to ~4e-3 after 6 iterations (the converged solves are checked below)
    tolerance = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-2, "atol": 1e-2}
    assert results[1].iterations == results[0].iterations
    assert results[1].converged == results[0].converged == (maxiter > 6)
    torch.testing.assert_close(results[1].X, results[0].X, **tolerance)
    if maxiter > 6:
        residual = torch.linalg.vector_norm(B - A.to_dense() @ results[1].X, dim=-2)
        assert bool((residual <= 2 * rtol * torch.linalg.vector_norm(B, dim=-2)).all())  # the true residual


@pytest.mark.parametrize("batched", [False, True])
def test_the_whole_bicgstab_loop_stops_at_the_half_step(batched, monkeypatch):
    """A = 2·I: every column's S = R − α·V is zero at the first half step, so the loop stops there with
    X += α·P alone (its second product unused), as the per-iteration loop does; batched, the second member
    (eigenvalues 1 and 3) goes on after the first member's columns stopped at their half step."""
    n = 144
    D = 2 * torch.eye(n, dtype=torch.float64)
    if batched:
        D = torch.stack([D, torch.diag(torch.tensor([1.0, 3.0] * (n // 2), dtype=torch.float64))])
    operator = CsrOperator(D.to_sparse_csr())
    B = torch.randn(*D.shape[:-1], 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    calls = _count_loop_calls(monkeypatch)
    common = {"x0": None, "rtol": 1e-10, "atol": 0.0, "maxiter": 50, "fused": True, "op_into": operator.apply_into}
    results = [
        krylov.krylov_solve("bicgstab", operator.apply, None, B, **common, **extra)
        for extra in ({}, {"csr": operator.matrix})
    ]
    assert len(calls) == 1  # the second solve ran in the loop
    assert results[0].converged and results[1].converged
    assert results[1].iterations == results[0].iterations == (2 if batched else 1)
    torch.testing.assert_close(results[1].X, results[0].X, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(results[1].X, torch.linalg.solve(D, B))


@pytest.mark.parametrize("method", sorted(FUSED))
@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("shape", [(N,), (N, 3)])
def test_public_fused_solves_run_in_one_loop_forward_and_backward(method, layout, shape, monkeypatch):
    """The backend passes A's CSR (Aᵀ's for the backward solve): both solves run in the loop (several columns),
    right values and gradients against the dense reference (BiCGSTAB on a nonsymmetric A)."""
    calls = _count_loop_calls(monkeypatch)
    D = FUSED[method](N, seed=21)
    B = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(22))
    A = to_layout(D, layout).requires_grad_()
    b = B.clone().requires_grad_()
    x = tsgu_core.solve(A, b, backend="torch", method=method, rtol=1e-12, fused=True)
    x.square().sum().backward()
    expected, grad_A, grad_B = _dense_solve_and_grads(D, B)
    if len(shape) == 1:  # one column keeps torch's product
        assert calls == []
    else:
        assert len(calls) >= 2 and {name for name, _ in calls} == {f"{method}_loop"}  # forward and backward
    torch.testing.assert_close(x.detach(), expected)
    torch.testing.assert_close(b.grad, grad_B)
    torch.testing.assert_close(A.grad.to_dense(), grad_A * (D != 0))


@pytest.mark.parametrize("method", sorted(FUSED))
def test_beyond_the_loops_column_limit_or_preconditioned_runs_per_iteration(method, monkeypatch):
    """More than ``LOOP_MAX_K`` columns (or a preconditioner): the per-iteration loops, still right."""
    calls = _count_loop_calls(monkeypatch)
    A = poisson_2d(4)
    operator = CsrOperator(A)
    k = fused_cpu.LOOP_MAX_K + 1
    B = torch.randn(16, k, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    common = {"x0": None, "rtol": 1e-12, "atol": 0.0, "maxiter": 500, "fused": True, "op_into": operator.apply_into}
    wide = krylov.krylov_solve(method, operator.apply, None, B, csr=operator.matrix, **common)
    jacobi = krylov.krylov_solve(
        method, operator.apply, _scaled_jacobi(A.to_dense()), B[:, :2], csr=operator.matrix, **common
    )
    assert calls == []
    torch.testing.assert_close(wide.X, torch.linalg.solve(A.to_dense(), B))
    torch.testing.assert_close(jacobi.X, torch.linalg.solve(A.to_dense(), B[:, :2]))
