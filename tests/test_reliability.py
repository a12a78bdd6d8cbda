"""Never a wrong number (issue 11): scaled problems, numerically singular direct solves, honest JAX iterations.

Every numerical check is against dense ``torch.linalg.solve`` in float64 on the
unscaled problem.
"""

from __future__ import annotations

import os
import re
import subprocess
import warnings
from pathlib import Path

import pytest
import torch

import tsgu_core
from tsgu_core.errors import ConvergenceError, ConvergenceWarning, SingularMatrixError
from tsgu_core.testing import poisson_2d, random_nonsymmetric, random_spd, to_layout

ROOT = Path(__file__).resolve().parents[1]
N = 24

METHODS = [
    ("torch", "cg"),
    ("torch", "gmres"),
    ("torch", "bicgstab"),
    ("torch", "minres"),
    *[("scipy", m) for m in ("splu", "spsolve", "cg", "cgs", "bicgstab", "gmres", "lgmres", "minres", "qmr", "tfqmr")],
    *[("jax", m) for m in ("cg", "bicgstab", "gmres", "spsolve")],
]
SCALES = {torch.float32: (1e-25, 1e21), torch.float64: (1e-300, 1e160)}
CASES = [
    pytest.param(
        backend, method, dtype, scale, layout, k, id=f"{backend}-{method}-{str(dtype)[6:]}-{scale:g}-{layout}-k{k}"
    )
    for backend, method in METHODS
    for dtype, scales in SCALES.items()
    for scale in scales
    for layout, k in (("csr", 3), ("coo", None))
]


def _available(backend: str) -> None:
    availability = tsgu_core.get_backend(backend).is_available("cpu")
    if not availability:
        pytest.skip(f"needs the {backend} backend: {availability.reason}")


def _matrix(method: str, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    if method in ("cg", "minres"):  # SPD (CG) / symmetric (MINRES) methods
        return random_spd(N, density=0.3, seed=seed, dtype=torch.float64)
    return random_nonsymmetric(N, density=0.3, seed=seed, dtype=torch.float64)


@pytest.mark.parametrize(("backend", "method", "dtype", "scale", "layout", "k"), CASES)
def test_scaled_problem_gives_the_unscaled_answer(backend, method, dtype, scale, layout, k):
    """A and B scaled together by 1e±25 (float32) / 1e-300, 1e+160 (float64): same X and gradients."""
    _available(backend)
    D = _matrix(method, dtype)
    generator = torch.Generator().manual_seed(1)
    B = torch.randn((N,) if k is None else (N, k), generator=generator, dtype=torch.float64)
    G = torch.randn(B.shape, generator=generator, dtype=torch.float64)
    X_ref = torch.linalg.solve(D, B)
    grad_B_ref = torch.linalg.solve(D.T, G)  # ∂⟨G, X⟩/∂B = A⁻ᵀ G: scaling A and G together leaves it unchanged

    A = to_layout((D * scale).to(dtype), layout).requires_grad_()
    Bs = (B * scale).to(dtype).requires_grad_()
    X = tsgu_core.solve(A, Bs, backend=backend, method=method)
    (X * (G * scale).to(dtype)).sum().backward()

    tol = dict(rtol=1e-3, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(X.detach().double(), X_ref, **tol)
    torch.testing.assert_close(Bs.grad.double(), grad_B_ref, **tol)
    # ∂⟨G·scale, X⟩/∂A = −((A·scale)⁻ᵀ G·scale) Xᵀ = −(A⁻ᵀ G) Xᵀ at the stored entries: unchanged by the scale
    grad_A = A.grad.to_sparse_coo().coalesce()
    rows, cols = grad_A.indices()
    expected = -(grad_B_ref.reshape(N, -1) @ X_ref.reshape(N, -1).T)
    assert rows.numel() == int((D != 0).sum())
    torch.testing.assert_close(grad_A.values().double(), expected[rows, cols], **tol)


def _numerically_singular(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r1 = torch.tensor([0.1, 0.2, 0.3], dtype=dtype)
    r2 = torch.tensor([0.7, 0.5, 0.11], dtype=dtype)
    return torch.stack([r1, r2, r1 + r2])  # cond ≈ 1.7e16 in float64


DIRECT = [("scipy", "splu"), ("scipy", "spsolve"), ("jax", "spsolve")]


@pytest.mark.parametrize(("backend", "method"), DIRECT)
@pytest.mark.parametrize("layout", ["csr", "coo"])
@pytest.mark.parametrize("k", [None, 2])
def test_numerically_singular_direct_solve_raises(backend, method, layout, k):
    _available(backend)
    A = to_layout(_numerically_singular(), layout)
    B = torch.randn((3,) if k is None else (3, k), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(SingularMatrixError, match="singular|not accurate"):
        tsgu_core.solve(A, B, backend=backend, method=method)


@pytest.mark.parametrize(("backend", "method"), DIRECT[:2])  # JAX's spsolve finds A singular already forward
def test_numerically_singular_transpose_solve_raises_in_backward(backend, method):
    """b in A's range: the forward solve is accurate; the backward's transpose solve is not, and raises."""
    _available(backend)
    A = _numerically_singular().to_sparse_csr().requires_grad_()
    b = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)  # b₃ = b₁ + b₂: consistent
    x, info = tsgu_core.solve(A, b, backend=backend, method=method, return_info=True)
    assert info.converged and info.max_residual < 1e-12
    torch.testing.assert_close(_numerically_singular() @ x.detach(), b.detach())
    with pytest.raises(SingularMatrixError):
        (x * torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)).sum().backward()


def test_numerically_singular_through_factorize_and_compat():
    from tsgu_backends.compat import sparse_solve_c4t

    A = _numerically_singular().to_sparse_csr()
    b = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)
    with pytest.raises(SingularMatrixError):
        tsgu_core.factorize(A, backend="scipy", method="splu").solve(b)
    with pytest.raises(SingularMatrixError):
        sparse_solve_c4t(A, b)


def test_on_failure_applies_to_inaccuracy_not_to_exact_singularity():
    A = _numerically_singular().to_sparse_csr()
    b = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)
    with pytest.warns(ConvergenceWarning, match="not accurate"):
        x, info = tsgu_core.solve(A, b, backend="scipy", method="splu", on_failure="warn", return_info=True)
    assert not info.converged and info.max_residual > 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = tsgu_core.solve(A, b, backend="scipy", method="splu", on_failure="ignore", return_info=True)
    assert not info.converged
    exactly_singular = torch.tensor([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    with pytest.raises(SingularMatrixError):
        tsgu_core.solve(exactly_singular.to_sparse_csr(), b, backend="scipy", method="splu", on_failure="ignore")


@pytest.mark.parametrize(("backend", "method"), DIRECT)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_well_conditioned_direct_solves_pass_the_backward_error_check(backend, method, dtype):
    _available(backend)
    for D in (poisson_2d(12, dtype=torch.float64).to_dense(), random_nonsymmetric(60, density=0.1, seed=3)):
        A = D.to(dtype).to_sparse_csr().requires_grad_()
        B = torch.randn(D.shape[0], 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        X, info = tsgu_core.solve(A, B.to(dtype).requires_grad_(), backend=backend, method=method, return_info=True)
        X.sum().backward()
        assert info.converged and info.backward is not None and info.backward.converged
        tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(X.detach().double(), torch.linalg.solve(D, B), **tol)


@pytest.mark.parametrize("layout", ["csr", "coo"])
def test_poisson_direct_solve_passes(layout):
    D = poisson_2d(40)
    B = torch.randn(1600, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    X, info = tsgu_core.solve(to_layout(D.to_dense(), layout), B, backend="scipy", method="splu", return_info=True)
    assert info.converged
    torch.testing.assert_close(X, torch.linalg.solve(D.to_dense(), B))


# --- JAX: iterations counted and charged to maxiter -------------------------------------------------------


def _three_eigenvalues(n: int = 30) -> torch.Tensor:
    """Nonsymmetric (similar to diag(1, 2, 3) repeated) so that exact Krylov methods converge in 3 steps."""
    generator = torch.Generator().manual_seed(5)
    Q = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64)).Q
    S = torch.eye(n, dtype=torch.float64) + 0.3 * torch.triu(torch.randn(n, n, generator=generator), 1).double()
    diagonal = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).repeat(n // 3)
    return Q @ S @ torch.diag(diagonal) @ torch.linalg.inv(S) @ Q.T


def _spd_three_eigenvalues(n: int = 30) -> torch.Tensor:
    Q = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(6), dtype=torch.float64)).Q
    diagonal = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).repeat(n // 3)
    return Q @ torch.diag(diagonal) @ Q.T


@pytest.mark.parametrize(
    ("method", "options", "expected"),
    [
        ("cg", {}, range(3, 5)),
        ("gmres", {"restart": 3, "solve_method": "incremental"}, range(3, 4)),
        ("bicgstab", {}, range(2, 5)),
    ],
)
def test_jax_reports_its_iterations(method, options, expected):
    """A matrix with 3 distinct eigenvalues: CG/GMRES converge in 3 steps (BiCGSTAB: at most 3)."""
    _available("jax")
    D = _spd_three_eigenvalues() if method == "cg" else _three_eigenvalues()
    b = torch.randn(30, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x, info = tsgu_core.solve(
        D.to_sparse_csr(), b, backend="jax", method=method, rtol=1e-10, return_info=True, **options
    )
    torch.testing.assert_close(x, torch.linalg.solve(D, b))
    assert info.iterations in expected, info


@pytest.mark.parametrize("method", ["cg", "bicgstab", "gmres"])
@pytest.mark.parametrize("maxiter", [3, 7])
def test_jax_honours_maxiter_including_refinement(method, maxiter):
    _available("jax")
    D = poisson_2d(20).to_dense() if method == "cg" else random_nonsymmetric(400, density=0.02, seed=1)
    D = D + 0.0 if method == "cg" else D - torch.diag(torch.diagonal(D)) * 0.97  # slow to converge
    b = torch.randn(D.shape[0], 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ConvergenceError) as failure:
        tsgu_core.solve(D.to_sparse_csr(), b, backend="jax", method=method, rtol=1e-14, maxiter=maxiter)
    assert failure.value.iterations is not None and 1 <= failure.value.iterations <= maxiter


# --- the README's set-up covers what its test command runs -------------------------------------------------


def test_readme_setup_installs_every_tested_distribution():
    readme = (ROOT / "README.md").read_text()
    setup, test_command = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)[:2]
    testpaths = re.search(r"testpaths = \[(.*?)\]", (ROOT / "pyproject.toml").read_text()).group(1)
    for path in re.findall(r'"(examples/[^"]+)"', testpaths):
        assert f"-e {path}" in setup, f"pytest runs {path}'s tests but the README's set-up does not install it"
    assert test_command.strip() == ".venv/bin/python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_block 1" in ci and "readme_block 2" in ci and 'eval "$setup"' in ci and 'eval "$tests"' in ci


# --- PETSc (in its own environment): scaled problems and the former gradgradcheck flake ----------------------

PETSC_PYTHON = Path(os.environ.get("TSGU_PETSC_PYTHON", ROOT / ".venv-petsc" / "bin" / "python"))


@pytest.mark.skipif(not PETSC_PYTHON.exists(), reason="needs the PETSc environment: run scripts/setup-petsc-env.sh")
def test_petsc_scaled_problems_and_bcgs_gradgradcheck_under_every_seed():
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [str(PETSC_PYTHON), "tests/mpi/petsc_reliability_check.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=environment,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
