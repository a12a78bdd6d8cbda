"""Never a wrong number, wave 3 (issue 25): hostile indices, extreme batches, threads of JAX, singular FEM matrices.

Every number is checked against dense ``torch.linalg.solve`` in float64; a case that crashed the process runs in a
subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import tsgu_core
from tsgu_core import SparsePattern, solve, solve_values
from tsgu_core.errors import InvalidArgumentError, StructureError

ROOT = Path(__file__).resolve().parents[1]


def _available(backend: str) -> None:
    availability = tsgu_core.get_backend(backend).is_available("cpu")
    if not availability:
        pytest.skip(f"needs the {backend} backend: {availability.reason}")


def _run(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with this checkout first on the path (a crash stays there)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


# --- 1. SparsePattern.of and an uncoalesced COO -----------------------------------------------------------------


def _uncoalesced() -> torch.Tensor:
    """``[[2, .5], [1, 4]]`` stored out of order: COO order is not CSR order."""
    index = torch.tensor([[1, 0, 1, 0], [1, 0, 0, 1]])
    values = torch.tensor([4.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    return torch.sparse_coo_tensor(index, values, (2, 2))


def test_pattern_of_an_uncoalesced_coo_is_refused_like_solve_values():
    A = _uncoalesced()
    b = torch.tensor([1.0, 2.0], dtype=torch.float64)
    with pytest.raises(InvalidArgumentError, match=r"coalesce\(\)"):
        SparsePattern.of(A)
    with pytest.raises(InvalidArgumentError, match=r"coalesce\(\)"):
        solve_values(A, A._values(), b, backend="torch")
    # the remedy the message names gives the dense answer
    C = A.coalesce()
    expected = torch.linalg.solve(A.to_dense(), b)
    torch.testing.assert_close(solve_values(SparsePattern.of(C), C.values(), b, backend="scipy"), expected)
    torch.testing.assert_close(solve(A, b, backend="scipy"), expected)  # solve sums an uncoalesced A itself


def test_coo_flagged_coalesced_but_out_of_order_is_refused():
    index = torch.tensor([[1, 0, 1, 0], [1, 0, 0, 1]])
    A = torch.sparse_coo_tensor(index, torch.tensor([4.0, 2.0, 1.0, 0.5], dtype=torch.float64), (2, 2))
    A = A._coalesced_(True)  # a false claim
    with pytest.raises(StructureError, match="flagged coalesced"):
        solve(A, torch.ones(2, dtype=torch.float64), backend="torch")


# --- 2. a column stored twice in a CSR row ----------------------------------------------------------------------


def _duplicated_diagonal(n: int) -> torch.Tensor:
    """A nonsymmetric ``n × n`` CSR matrix whose row 0 stores its diagonal twice."""
    dense = torch.eye(n, dtype=torch.float64) * 4 + torch.diag(torch.ones(n - 1, dtype=torch.float64), 1)
    dense[1:, 0] = 0.5
    A = dense.to_sparse_csr()
    crow, col, values = A.crow_indices(), A.col_indices(), A.values()
    col = torch.cat([col[:1], col])
    values = torch.cat([values[:1], values])
    crow = torch.cat([crow[:1], crow[1:] + 1])
    return torch.sparse_csr_tensor(crow, col, values, (n, n))


@pytest.mark.parametrize("backend", ["scipy", "pardiso", "torch", "jax"])
def test_duplicate_csr_column_is_a_structure_error_in_every_backend(backend):
    """n = 50 crashed (rc −11) or hung PARDISO; every backend now gets a StructureError before any work."""
    _available(backend)
    result = _run(
        f"""
        import torch, tsgu_core
        from tsgu_core.errors import StructureError
        from tests.test_reliability_wave3 import _duplicated_diagonal
        for n in (5, 50):
            A = _duplicated_diagonal(n)
            for call in (
                lambda: tsgu_core.solve(A, torch.ones(n, dtype=torch.float64), backend={backend!r}),
                lambda: tsgu_core.solve_values(
                    tsgu_core.SparsePattern.of(A), A.values(), torch.ones(n, dtype=torch.float64),
                    backend={backend!r}),
            ):
                try:
                    call()
                except StructureError as error:
                    assert "column 0 of row 0 more than once" in str(error), error
                else:
                    raise SystemExit("no StructureError")
        print("typed")
        """,
        timeout=180,
    )
    assert result.returncode == 0 and "typed" in result.stdout, (result.returncode, result.stderr[-2000:])


def test_duplicate_csr_column_in_a_batch_member_and_unsorted_rows():
    A = _duplicated_diagonal(6)
    good = A.col_indices().clone()
    good[:3] = torch.tensor([0, 1, 2])  # row 0 of member 0 stores columns 0, 1, 2 once each
    batch = torch.sparse_csr_tensor(
        A.crow_indices().expand(2, -1), torch.stack([good, A.col_indices()]), A.values().expand(2, -1), (2, 6, 6)
    )
    with pytest.raises(StructureError, match=r"batch member 1"):
        tsgu_core.solve(batch, torch.ones(2, 6, dtype=torch.float64), backend="scipy")
    # unsorted but distinct columns stay accepted, and are right
    dense = torch.tensor([[4.0, 1.0, 0.0], [0.5, 3.0, 1.0], [0.0, 2.0, 5.0]], dtype=torch.float64)
    crow = torch.tensor([0, 2, 5, 7])
    col = torch.tensor([1, 0, 2, 0, 1, 2, 1])
    values = torch.tensor([1.0, 4.0, 1.0, 0.5, 3.0, 5.0, 2.0], dtype=torch.float64)
    U = torch.sparse_csr_tensor(crow, col, values, (3, 3))
    b = torch.arange(1.0, 4.0, dtype=torch.float64)
    torch.testing.assert_close(tsgu_core.solve(U, b, backend="scipy"), torch.linalg.solve(dense, b))


def test_the_remedy_for_duplicates_sums_them_with_gradients_on_the_stored_entries():
    A = _duplicated_diagonal(5)
    values = A.values().clone().requires_grad_()
    rows = A.to_sparse_coo().indices()
    summed = torch.sparse_coo_tensor(rows, values, A.shape)  # the form the error message names
    b = torch.ones(5, dtype=torch.float64)
    x = tsgu_core.solve(summed, b, backend="scipy")
    dense = A.to_dense().requires_grad_()
    expected = torch.linalg.solve(dense, b)
    torch.testing.assert_close(x, expected)
    (grad,) = torch.autograd.grad(x.square().sum(), values)
    (dense_grad,) = torch.autograd.grad(expected.square().sum(), dense)
    torch.testing.assert_close(grad, dense_grad[rows[0], rows[1]])


# --- 3. a PARDISO batch whose members are 1e-300 and 1e160 apart ------------------------------------------------


@pytest.mark.parametrize(("dtype", "scales"), [(torch.float64, (1e-300, 1e160)), (torch.float32, (1e-25, 1e21))])
def test_pardiso_batch_of_members_far_apart_in_scale(dtype, scales):
    """Each member alone was fine; together the shared analysis overflowed ("produced non-finite values")."""
    _available("pardiso")
    from tsgu_core.testing import random_nonsymmetric

    dense = random_nonsymmetric(16, density=0.3, seed=3, dtype=torch.float64).to_dense()
    B = torch.randn(2, 16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s = torch.tensor(scales, dtype=torch.float64)
    A = (dense * s[:, None, None]).to(dtype).to_sparse_csr().requires_grad_()
    X = tsgu_core.solve(A, (B * s[:, None, None]).to(dtype), backend="pardiso")  # the same X for every member
    tolerance = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-9}
    torch.testing.assert_close(X.double(), torch.linalg.solve(dense, B), **tolerance)
    X.square().sum().backward()
    stored = dense != 0
    for member in range(2):  # dL/d(s·A) = (dL/dA) / s
        grad = A.grad[member].to_dense().double() * scales[member]
        torch.testing.assert_close(grad[stored], _member_grad(dense, B[member])[stored], **tolerance)


def _member_grad(dense: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dL/dA for L = ‖A⁻¹ b‖², by dense autograd."""
    A = dense.detach().clone().requires_grad_()
    (grad,) = torch.autograd.grad(torch.linalg.solve(A, b).square().sum(), A)
    return grad


# --- 4. JAX's spsolve and the per-thread float64 setting --------------------------------------------------------


def test_jax_spsolve_after_krylov_solves_never_loses_float64():
    """After gmres/bicgstab ran, ~3 in 40 spsolve solve+backward calls failed: "Incorrect output dtype … float32"."""
    _available("jax")
    result = _run(
        """
        import torch, tsgu_core
        from tsgu_core.testing import poisson_2d
        A = poisson_2d(30, dtype=torch.float64).to_sparse_csr()
        b = torch.randn(A.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        for method in ("gmres", "bicgstab"):
            tsgu_core.solve(A, b, backend="jax", method=method, on_failure="ignore")
        dense = A.to_dense().requires_grad_()
        expected = torch.linalg.solve(dense, b)
        (expected_grad,) = torch.autograd.grad(expected.square().sum(), dense)
        failures = []
        for _ in range(40):
            Ai = A.detach().clone().requires_grad_()
            try:
                x = tsgu_core.solve(Ai, b, backend="jax", method="spsolve")
                x.square().sum().backward()
            except Exception as error:
                failures.append(repr(error))
                continue
            torch.testing.assert_close(x, expected)
            torch.testing.assert_close(Ai.grad.to_dense(), expected_grad * (A.to_dense() != 0))
        print("failures", len(failures), failures[:1])
        """,
        timeout=300,
    )
    assert result.returncode == 0 and "failures 0 " in result.stdout, (result.stdout, result.stderr[-2000:])


def test_jax_spsolve_on_the_cpu_runs_in_the_calling_thread(monkeypatch):
    """No JAX host callback (whose thread decides the result's dtype) on the CPU: SciPy's spsolve, called directly."""
    _available("jax")
    import jax.experimental.sparse.linalg as jax_linalg

    def callback_solve(*args, **kwargs):
        raise AssertionError("JAX's CPU spsolve converts its host callback's result under another thread's x64 flag")

    monkeypatch.setattr(jax_linalg, "spsolve", callback_solve)
    from tsgu_core.testing import random_nonsymmetric

    for dtype in (torch.float64, torch.complex128, torch.float32):
        A = random_nonsymmetric(12, density=0.3, seed=1, dtype=torch.float64).to(dtype).to_sparse_csr()
        B = torch.randn(12, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(dtype)
        X = tsgu_core.solve(A, B, backend="jax", method="spsolve")
        assert X.dtype == dtype
        tolerance = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {}
        torch.testing.assert_close(X, torch.linalg.solve(A.to_dense(), B), **tolerance)


# --- 5. a singular FEM matrix that PARDISO solved silently --------------------------------------------------------


def _neumann() -> tuple[torch.Tensor, object]:
    """pyamg's ``unit_square`` stiffness matrix: pure Neumann, singular (its null space is the constants)."""
    pyamg = pytest.importorskip("pyamg", reason="needs pyamg for its unit_square FEM example")
    matrix = pyamg.gallery.load_example("unit_square")["A"].tocsr()
    return tsgu_core.from_scipy(matrix), matrix


def test_pardiso_singular_neumann_matrix_warns_when_consistent_and_raises_when_not():
    _available("pardiso")
    from tsgu_core.errors import SingularMatrixError, SingularMatrixWarning

    A, matrix = _neumann()
    n = A.shape[0]
    x_true = torch.rand(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    b = A @ x_true  # consistent: in the range of A
    with pytest.warns(SingularMatrixWarning, match="perturbed a pivot"):
        X = tsgu_core.solve(A, b, backend="pardiso")
    # X solves the system (one of many solutions: x_true plus a constant)
    residual = (A @ X - b).norm() / b.norm()
    assert residual < 1e-10
    difference = X - x_true
    torch.testing.assert_close(difference, difference.mean().expand(n), rtol=0, atol=1e-6)
    # an inconsistent right-hand side fails in the forward, naming what the factorization saw
    b_bad = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with pytest.raises(SingularMatrixError, match="perturbed a pivot"):
        tsgu_core.solve(A, b_bad, backend="pardiso")


def test_pardiso_regular_matrices_do_not_warn():
    _available("pardiso")
    import warnings

    from tsgu_core.errors import SingularMatrixWarning
    from tsgu_core.testing import poisson_2d, random_nonsymmetric

    with warnings.catch_warnings():
        warnings.simplefilter("error", SingularMatrixWarning)
        for A in (poisson_2d(14, dtype=torch.float64), random_nonsymmetric(40, density=0.2, seed=2)):
            A = A.to(torch.float64).to_sparse_csr()
            b = torch.ones(A.shape[0], dtype=torch.float64)
            torch.testing.assert_close(tsgu_core.solve(A, b, backend="pardiso"), torch.linalg.solve(A.to_dense(), b))


# --- 11. SPD to a few ulps gets Cholesky ------------------------------------------------------------------------


def _nearly_spd(ulps: float, m: int = 12) -> torch.Tensor:
    """2-D Poisson with its upper-triangle entries off by up to ``ulps``·ε relative: SPD, not exactly symmetric."""
    from tsgu_core.testing import poisson_2d

    P = poisson_2d(m, dtype=torch.float64).to_sparse_coo().coalesce()
    row, col = P.indices()
    noise = torch.rand(P._nnz(), dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    values = P.values() * (1 + ulps * torch.finfo(torch.float64).eps * noise * (col > row))
    return torch.sparse_coo_tensor(P.indices(), values, P.shape).coalesce().to_sparse_csr()


def _check_against_dense(A: torch.Tensor, **options: object) -> tsgu_core.SolveInfo:
    """Solve ``A X = B`` and its backward on PARDISO; compare with dense autograd; return the forward's info."""
    A = A.detach().requires_grad_()
    B = torch.randn(A.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    X, info = tsgu_core.solve(A, B, backend="pardiso", return_info=True, **options)
    X.square().sum().backward()
    dense = A.detach().to_dense().requires_grad_()
    expected = torch.linalg.solve(dense, B)
    (dense_grad,) = torch.autograd.grad(expected.square().sum(), dense)
    torch.testing.assert_close(X, expected, rtol=1e-10, atol=1e-12)
    stored = A.detach().to_dense() != 0
    torch.testing.assert_close(A.grad.to_dense()[stored], dense_grad[stored], rtol=1e-9, atol=1e-12)
    return info


def test_pardiso_uses_cholesky_of_the_symmetric_part_for_nearly_symmetric_spd():
    """|K − Kᵀ| of a few ulps (FEM assembly) got LU even with assume='spd'; mtype=2 was refused."""
    _available("pardiso")
    A = _nearly_spd(2.0)
    for options in ({}, {"assume": "spd"}, {"mtype": 2}):
        message = _check_against_dense(A, **options).message
        assert "mtype 2" in message and "symmetric part" in message, (options, message)
    assert "mtype 11" in _check_against_dense(A, mtype=11).message


def test_pardiso_cholesky_of_the_symmetric_part_is_refined_to_the_answer_for_a():
    """At 500ε asymmetry (within assume='spd''s 1000ε) Cholesky of (A + Aᵀ)/2 alone would be off; refined, it is A's."""
    _available("pardiso")
    A = _nearly_spd(500.0, m=40)
    info = _check_against_dense(A, assume="spd")
    assert "symmetric part" in info.message
    # unrefined, the relative residual is ~1e-13 here (measured); refined against A, a few ε
    assert max(info.residuals) < 2e-14, info.residuals
    assert "mtype 11" in _check_against_dense(A).message  # unasked, 500ε is not "a few ulps": LU
    with pytest.raises(tsgu_core.InvalidOptionError, match="1000ε"):
        tsgu_core.solve(_nearly_spd(1e5), torch.ones(144, dtype=torch.float64), backend="pardiso", mtype=2)


# --- 13. the default CPU direct solver by size and structure ---------------------------------------------------


def _poisson_3d(m: int) -> torch.Tensor:
    """The 7-point Laplacian on an ``m³`` grid, CSR float64 (built with torch only)."""
    dense_1d = torch.diag(torch.full((m,), 2.0)) - torch.diag(torch.ones(m - 1), 1) - torch.diag(torch.ones(m - 1), -1)
    T = dense_1d.to_sparse_coo()
    identity = torch.eye(m).to_sparse_coo()

    def kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ai, bi = a.indices(), b.indices()
        rows = (ai[0][:, None] * b.shape[0] + bi[0][None, :]).reshape(-1)
        cols = (ai[1][:, None] * b.shape[1] + bi[1][None, :]).reshape(-1)
        values = (a.values()[:, None] * b.values()[None, :]).reshape(-1)
        return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (a.shape[0] * b.shape[0],) * 2).coalesce()

    L = kron(kron(T, identity), identity) + kron(kron(identity, T), identity) + kron(kron(identity, identity), T)
    return L.coalesce().to(torch.float64).to_sparse_csr()


def test_mesh_dimension_tells_2d_from_3d_patterns():
    pytest.importorskip("scipy", reason="mesh_dimension uses SciPy's breadth-first search")
    from tsgu_backends.pardiso_backend.backend import PLANAR_BELOW, mesh_dimension
    from tsgu_core.testing import poisson_2d, random_nonsymmetric

    def dimension(A: torch.Tensor) -> float:
        return mesh_dimension(A.crow_indices().numpy(), A.col_indices().numpy())[0]

    two = dimension(poisson_2d(120, dtype=torch.float64).to_sparse_csr())
    three = dimension(_poisson_3d(24))
    assert abs(two - 2) < 0.1 and two < PLANAR_BELOW < three, (two, three)
    assert dimension(random_nonsymmetric(400, density=0.02, seed=0).to_sparse_csr()) > PLANAR_BELOW


def test_default_cpu_direct_solver_follows_the_measured_rule():
    """PARDISO's first call (MKL load, 1–2 s) made a one-shot solve at n = 1000 10× slower than SuperLU."""
    _available("pardiso")
    _available("scipy")
    from tsgu_backends.pardiso_backend.backend import DEFAULT_FROM
    from tsgu_core.testing import poisson_2d

    small = poisson_2d(32, dtype=torch.float64).to_sparse_csr()  # n = 1024
    selection = tsgu_core.explain(small)
    assert selection.backend == "scipy", str(selection)
    assert any(name == "pardiso" and "SuperLU is faster" in verdict for name, verdict in selection.considered)
    x, info = tsgu_core.solve(small, torch.ones(1024, dtype=torch.float64), return_info=True)
    assert info.backend == "scipy"
    torch.testing.assert_close(x, torch.linalg.solve(small.to_dense(), torch.ones(1024, dtype=torch.float64)))
    threshold = DEFAULT_FROM["3-D-like"]
    if threshold is not None:  # a 3-D pattern from the measured size on gets PARDISO
        m = next(m for m in range(4, 200) if m**3 >= threshold)
        selection = tsgu_core.explain(_poisson_3d(m))
        assert selection.backend == "pardiso" and "3-D-like" in selection.reason, str(selection)
    # an explicit choice is never overridden
    assert tsgu_core.explain(small, backend="pardiso").backend == "pardiso"


def test_default_solver_rule_measures_a_pattern_once_and_reads_coo_and_csr_alike(monkeypatch):
    """Between the two classes' thresholds the rule looks at the pattern: once per A, for COO as for CSR."""
    _available("pardiso")
    _available("scipy")
    from tsgu_backends.pardiso_backend import backend as pardiso
    from tsgu_core.testing import poisson_2d

    threshold = pardiso.DEFAULT_FROM["3-D-like"]
    if (
        threshold is None
        or pardiso.DEFAULT_FROM["2-D-like"] in (None,)
        or threshold >= pardiso.DEFAULT_FROM["2-D-like"]
    ):
        pytest.skip("needs a measured 3-D threshold below the 2-D one (benchmarks/results/default_direct.md)")
    calls = []
    measure = pardiso.mesh_dimension
    monkeypatch.setattr(pardiso, "mesh_dimension", lambda crow, col: calls.append(1) or measure(crow, col))
    m2 = next(m for m in range(4, 2000) if m * m >= threshold)  # a 2-D grid above the 3-D threshold: SuperLU
    m3 = next(m for m in range(4, 200) if m**3 >= threshold)  # a 3-D grid at it: PARDISO
    for layout in ("csr", "coo"):
        flat = poisson_2d(m2, dtype=torch.float64)
        flat = flat.to_sparse_csr() if layout == "csr" else flat.to_sparse_coo().coalesce()
        cube = _poisson_3d(m3)
        cube = cube if layout == "csr" else cube.to_sparse_coo().coalesce()
        calls.clear()
        for _ in range(3):
            assert tsgu_core.explain(flat).backend == "scipy"
            assert tsgu_core.explain(cube).backend == "pardiso"
        assert len(calls) == 2, f"{layout}: the pattern was measured {len(calls)} times for 6 selections"


def test_default_solver_rule_cache_keeps_its_patterns_alive():
    """A cached measurement holds its index tensors: a freed pattern's memory cannot be reused by another
    pattern that would then match its key (seen in a full run: the rule chose SuperLU for a 3-D matrix)."""
    _available("pardiso")
    _available("scipy")
    import gc

    from tsgu_backends.pardiso_backend import backend as pardiso
    from tsgu_core.testing import poisson_2d

    threshold = pardiso.DEFAULT_FROM["3-D-like"]
    if threshold is None:
        pytest.skip("needs a measured 3-D threshold (benchmarks/results/default_direct.md)")
    m2 = next(m for m in range(4, 2000) if m * m >= threshold)
    flat = poisson_2d(m2, dtype=torch.float64).to_sparse_csr()
    pointers = (flat.crow_indices().data_ptr(), flat.col_indices().data_ptr())
    pardiso._cached_dimension(flat)
    del flat
    gc.collect()
    kept = [tuple(i.data_ptr() for i in tensors) for tensors, _ in pardiso._DIMENSIONS.values()]
    assert pointers in kept  # still allocated: no new tensor can take these addresses while the entry lives
