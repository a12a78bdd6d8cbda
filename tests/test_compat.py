"""The drop-in functions with the old signatures: gradcheck on nonsymmetric matrices, the defects fixed."""

import itertools
import typing
import warnings

import numpy as np
import pytest
import scipy.sparse.linalg as sla
import torch

from tsgu_backends import compat
from tsgu_core import errors
from tsgu_core.testing import matrix_for, to_layout

N = 8
ASSUMES = {"cg": "spd", "linear_cg": "spd", "minres": "symmetric"}


def case_matrix(name, layout, seed=0):
    """Nonsymmetric for general methods; symmetric (SPD for cg) where the method requires it."""
    D = matrix_for(ASSUMES.get(name, "general"), N, seed=seed)
    return D, to_layout(D, layout)


def gradcheck_through(function, D, A, k):
    """gradcheck on A's values and B (general methods; symmetric ones are compared with dense below)."""
    values = A.values().clone().requires_grad_()
    B = torch.randn((N,) if k is None else (N, k), dtype=torch.float64, requires_grad=True)

    def solve(vals, rhs):
        if A.layout == torch.sparse_coo:
            matrix = torch.sparse_coo_tensor(A.indices(), vals, A.shape, is_coalesced=True)
        else:
            matrix = torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), vals, A.shape)
        return function(matrix, rhs)

    assert torch.autograd.gradcheck(solve, (values, B))


LAYOUTS_AND_SHAPES = list(itertools.product(["coo", "csr"], [None, 3]))


@pytest.mark.parametrize("name", [None, "cgs", "gmres", "spsolve", "splu"])
@pytest.mark.parametrize(("layout", "k"), LAYOUTS_AND_SHAPES)
def test_c4t_string_solvers_gradcheck(name, layout, k):
    D, A = case_matrix(name, layout)
    options = {"tol": 1e-12} if name in ("cgs", "gmres") else {}
    gradcheck_through(lambda M, R: compat.sparse_solve_c4t(M, R, solve=name, **options), D, A, k)


@pytest.mark.parametrize("name", [None, "bicgstab", "gmres", "spsolve"])
@pytest.mark.parametrize(("layout", "k"), LAYOUTS_AND_SHAPES)
def test_j4t_string_solvers_gradcheck(name, layout, k):
    pytest.importorskip("jax", reason="needs JAX")
    D, A = case_matrix(name, layout)
    options = {} if name == "spsolve" else {"tol": 1e-12}
    gradcheck_through(lambda M, R: compat.sparse_solve_j4t(M, R, solve=name, **options), D, A, k)


@pytest.mark.parametrize("name", [None, "bicgstab", "gmres"])
@pytest.mark.parametrize(("layout", "k"), LAYOUTS_AND_SHAPES)
def test_generic_string_solvers_gradcheck(name, layout, k):
    D, A = case_matrix(name, layout)
    gradcheck_through(lambda M, R: compat.sparse_generic_solve(M, R, solve=name, rtol=1e-12), D, A, k)


@pytest.mark.parametrize(
    ("function", "name", "options"),
    [
        (compat.sparse_solve_c4t, "cg", {"tol": 1e-12}),
        (compat.sparse_solve_c4t, "minres", {"tol": 1e-12}),
        (compat.sparse_generic_solve, "cg", {"rtol": 1e-12}),
        (compat.sparse_generic_solve, "minres", {"rtol": 1e-12}),
        (compat.sparse_solve_j4t, "cg", {"tol": 1e-12}),
    ],
)
@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_symmetric_methods_match_dense_gradients(function, name, options, layout):
    if function is compat.sparse_solve_j4t:
        pytest.importorskip("jax", reason="needs JAX")
    D, A = case_matrix(name, layout)
    A.requires_grad_()
    B = torch.randn(N, 2, dtype=torch.float64, requires_grad=True)
    function(A, B, solve=name, **options).square().sum().backward()
    D_ref = D.clone().requires_grad_()
    B_ref = B.detach().clone().requires_grad_()
    torch.linalg.solve(D_ref, B_ref).square().sum().backward()
    torch.testing.assert_close(B.grad, B_ref.grad)
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (D != 0))


@pytest.mark.parametrize(("layout", "k"), LAYOUTS_AND_SHAPES)
def test_generic_callable_bicgstab_gradcheck(layout, k):
    D, A = case_matrix("bicgstab", layout)
    gradcheck_through(lambda M, R: compat.sparse_generic_solve(M, R, solve=compat.bicgstab, rtol=1e-13), D, A, k)


def test_default_transpose_solve_gets_A_transposed_and_a_custom_one_gets_A():
    D, A = case_matrix("gmres", "csr", seed=3)
    seen = []

    def dense_solve(M, R, **_):
        seen.append(M.to_dense())
        return torch.linalg.solve(M.to_dense(), R)

    def transpose_solve(M, G, **_):
        seen.append(("custom", M.to_dense()))
        return torch.linalg.solve(M.to_dense().T, G)

    for custom in (None, transpose_solve):
        seen.clear()
        leaf = A.clone().requires_grad_()
        x = compat.sparse_generic_solve(leaf, torch.ones(N, dtype=torch.float64), solve=dense_solve,
                                        transpose_solve=custom)  # fmt: skip
        x.sum().backward()
        D_ref = D.clone().requires_grad_()
        torch.linalg.solve(D_ref, torch.ones(N, dtype=torch.float64)).sum().backward()
        torch.testing.assert_close(leaf.grad.to_dense(), D_ref.grad * (D != 0))
        if custom is None:
            torch.testing.assert_close(seen[1], D.T)  # the old default handed A here
        else:
            assert seen[1][0] == "custom"
            torch.testing.assert_close(seen[1][1], D)  # the promise: the callable gets A and solves Aᵀ


def test_library_callables_are_accepted():
    D, A = case_matrix("gmres", "csr", seed=4)
    b = torch.randn(N, dtype=torch.float64)
    x = compat.sparse_solve_c4t(A, b, solve=sla.gmres, rtol=1e-12)
    torch.testing.assert_close(x, torch.linalg.solve(D, b))
    jax = pytest.importorskip("jax", reason="needs JAX")
    x = compat.sparse_solve_j4t(A, b, solve=jax.scipy.sparse.linalg.gmres, tol=1e-12)
    torch.testing.assert_close(x, torch.linalg.solve(D, b))


def test_old_defects_are_now_errors():
    D, A = case_matrix("gmres", "csr", seed=5)
    b = torch.randn(N, dtype=torch.float64)
    with pytest.raises(errors.UnknownOptionError, match="callback"):  # was dropped silently
        compat.sparse_solve_c4t(A, b, solve="gmres", callback=print)
    with pytest.raises(errors.ConvergenceError):  # was returned as a solution
        compat.sparse_solve_c4t(A, b, solve="gmres", tol=1e-14, maxiter=1)
    with pytest.raises(TypeError, match="either tol or rtol"):
        compat.sparse_solve_c4t(A, b, solve="gmres", tol=1e-8, rtol=1e-8)
    B = torch.randn(N, 3, dtype=torch.float64)  # iterative + many right-hand sides: refused before, fine now
    torch.testing.assert_close(compat.sparse_solve_c4t(A, B, solve="cgs", tol=1e-12), torch.linalg.solve(D, B))


def test_triangular_and_lstsq_wrappers():
    L = torch.tril(matrix_for("general", N, seed=6))
    b = torch.randn(N, dtype=torch.float64)
    x = compat.sparse_triangular_solve(L.to_sparse_csr(), b, upper=False)
    torch.testing.assert_close(x, torch.linalg.solve_triangular(L, b.unsqueeze(1), upper=False).squeeze(1))
    with pytest.raises(errors.StructureError):
        compat.sparse_triangular_solve(L.to_sparse_csr(), b, upper=True)
    tall = torch.cat([matrix_for("general", N, seed=7), torch.eye(N, dtype=torch.float64)])
    y = torch.randn(2 * N, dtype=torch.float64)
    x = compat.sparse_generic_lstsq(tall.to_sparse_csr(), y, lstsq="lsmr", tol=1e-12)
    torch.testing.assert_close(x, torch.linalg.lstsq(tall, y.unsqueeze(1)).solution.squeeze(1))


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_converters_round_trip(layout):
    _, A = case_matrix("gmres", layout, seed=8)
    M = compat.t2c_coo(A) if layout == "coo" else compat.t2c_csr(A)
    np.testing.assert_array_equal(M.toarray(), A.to_dense().numpy())
    back = compat.c2t_coo(M) if layout == "coo" else compat.c2t_csr(M)
    torch.testing.assert_close(back.to_dense(), A.to_dense())
    jax = pytest.importorskip("jax", reason="needs JAX")
    with jax.enable_x64(True):
        J = compat.t2j_coo(A) if layout == "coo" else compat.t2j_csr(A)
        np.testing.assert_array_equal(np.asarray(J.todense()), A.to_dense().numpy())
        back = compat.j2t_coo(J) if layout == "coo" else compat.j2t_csr(J)
    torch.testing.assert_close(back.to_dense(), A.to_dense())


# --- the policy for solver callables (see the compat module docstring) ----------------------------


def off_by(rho, *, declared=None):
    """A callable whose answer has true relative residual ``rho`` in every column (``A x = b + δ``, ‖δ‖ = ρ‖b‖)."""
    generator = torch.Generator().manual_seed(0)

    def solve(M, R):
        noise = torch.randn(R.shape, dtype=R.dtype, generator=generator)
        noise *= rho * torch.linalg.vector_norm(R, dim=0) / torch.linalg.vector_norm(noise, dim=0)
        return torch.linalg.solve(M.to_dense(), R + noise)

    if declared is None:
        return solve

    def with_rtol(M, R, rtol=declared):
        return solve(M, R)

    return with_rtol


def policy_case(layout="csr", k=2):
    D, A = case_matrix("gmres", layout, seed=11)
    return D, A, torch.randn(N, k, dtype=torch.float64, generator=torch.Generator().manual_seed(12))


def convergence_warnings(record):
    return [w for w in record if issubclass(w.category, errors.ConvergenceWarning)]


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_callable_without_tolerance_warns_with_the_measured_residual(layout):
    D, A, B = policy_case(layout)
    with pytest.warns(errors.ConvergenceWarning, match=r"residual 1(\.0+\d*)?e-05.*declares no tolerance"):
        X = compat.sparse_generic_solve(A, B, solve=off_by(1e-5))
    residual = torch.linalg.vector_norm(B - D @ X, dim=0) / torch.linalg.vector_norm(B, dim=0)
    torch.testing.assert_close(residual, torch.full((2,), 1e-5, dtype=torch.float64), rtol=1e-3, atol=0)


def test_callable_without_tolerance_is_silent_when_accurate():
    D, A, B = policy_case()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        X = compat.sparse_generic_solve(A, B, solve=off_by(1e-12))
    assert not convergence_warnings(record)
    torch.testing.assert_close(X, torch.linalg.solve(D, B))


@pytest.mark.parametrize("rho", [2e-2, 0.5])
def test_callable_without_tolerance_raises_on_an_unusable_answer(rho):
    _, A, B = policy_case()
    with pytest.raises(errors.ConvergenceError) as caught:
        compat.sparse_generic_solve(A, B, solve=off_by(rho))
    assert max(caught.value.residuals) == pytest.approx(rho, rel=1e-6)


def test_callable_without_tolerance_raises_on_a_non_finite_answer():
    _, A, B = policy_case()
    with pytest.raises(errors.ConvergenceError):
        compat.sparse_generic_solve(A, B, solve=lambda M, R: torch.full_like(R, float("nan")))


def test_policy_applies_to_the_backward_transpose_solve():
    D, A, B = policy_case("coo")

    def transpose_off_by(rho):
        inner = off_by(rho)
        return lambda M, G: inner(M.t(), G)  # the promise: given A, solve Aᵀ Y = G

    leaf = A.clone().requires_grad_()
    X = compat.sparse_generic_solve(leaf, B, solve=off_by(0.0), transpose_solve=transpose_off_by(1e-6))
    with pytest.warns(errors.ConvergenceWarning, match="transpose solve"):
        X.sum().backward()
    D_ref = D.clone().requires_grad_()
    torch.linalg.solve(D_ref, B).sum().backward()
    torch.testing.assert_close(leaf.grad.to_dense(), D_ref.grad * (D != 0), rtol=1e-4, atol=1e-6)
    leaf = A.clone().requires_grad_()
    X = compat.sparse_generic_solve(leaf, B, solve=off_by(0.0), transpose_solve=transpose_off_by(0.1))
    with pytest.raises(errors.ConvergenceError, match="transpose solve"):
        X.sum().backward()


def test_a_declared_tolerance_is_the_check():
    D, A, B = policy_case()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        X = compat.sparse_generic_solve(A, B, solve=off_by(1e-5, declared=1e-4))  # within its own rtol: silent
    assert not convergence_warnings(record)
    with pytest.raises(errors.ConvergenceError, match=r"1e-05 > 1e-06"):
        compat.sparse_generic_solve(A, B, solve=off_by(1e-5, declared=1e-6))  # missed its own rtol: loud
    with pytest.raises(errors.ConvergenceError):  # a declared tolerance given in the call
        compat.sparse_generic_solve(A, B, solve=off_by(1e-5, declared=1.0), rtol=1e-7)
    torch.testing.assert_close(X, torch.linalg.solve(D, B), rtol=1e-3, atol=1e-4)


def test_on_failure_overrides_the_policy_and_is_not_passed_to_the_callable():
    D, A, B = policy_case()
    with pytest.raises(errors.ConvergenceError, match=r"> 1e-08"):  # tsgu's default rtol, strictly
        compat.sparse_generic_solve(A, B, solve=off_by(1e-5), on_failure="raise")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        X = compat.sparse_generic_solve(A, B, solve=off_by(0.5), on_failure="ignore")
    assert not convergence_warnings(record)
    residual = torch.linalg.vector_norm(B - D @ X, dim=0) / torch.linalg.vector_norm(B, dim=0)
    torch.testing.assert_close(residual, torch.full((2,), 0.5, dtype=torch.float64), rtol=1e-6, atol=0)
    with pytest.warns(errors.ConvergenceWarning, match="did not converge"):
        compat.sparse_generic_solve(A, B, solve=off_by(0.5, declared=1e-3), on_failure="warn")


def test_policy_for_scipy_and_jax_callables():
    D, A, B = policy_case()
    b = B[:, 0]
    with pytest.raises(errors.ConvergenceError, match="callable:gmres"):  # SciPy's gmres declares rtol=1e-5
        compat.sparse_solve_c4t(A, b, solve=sla.gmres, rtol=1e-3, maxiter=1, restart=1)
    x, expected = compat.sparse_solve_c4t(A, b, solve=sla.gmres), torch.linalg.solve(D, b)
    # what SciPy's gmres promises at its declared rtol = 1e-5: the residual, and so a forward error ≤ cond(D)·1e-5
    # (an entrywise check was too strict: 1 right-hand side in 200 has a small entry off by 4e-5 relative to ‖x‖)
    residual = torch.linalg.vector_norm(b - D @ x) / torch.linalg.vector_norm(b)
    assert float(residual) <= 1e-5
    error = torch.linalg.vector_norm(x - expected) / torch.linalg.vector_norm(expected)
    assert float(error) <= float(torch.linalg.cond(D)) * 1e-5
    jax = pytest.importorskip("jax", reason="needs JAX")
    with pytest.raises(errors.ConvergenceError, match="callable:gmres"):  # the name of the callable, not a wrapper
        compat.sparse_solve_j4t(A, b, solve=jax.scipy.sparse.linalg.gmres, maxiter=1, restart=1)


class CGSettings(typing.NamedTuple):
    cg_tolerance: float = 1e-5
    minres_tolerance: float = 1e-4


class UpdateSettings(typing.NamedTuple):
    minres_tolerance: float = 1e-4


CG_SETTINGS, UPDATE_SETTINGS = CGSettings(), UpdateSettings()


def test_declared_tolerance_lookup():
    def keyword_only(A, b, *, tol=1e-5, atol=0.0):
        return b

    def with_settings(A, b, settings=CG_SETTINGS):
        return b

    def update_criterion(A, b, settings=UPDATE_SETTINGS):
        return b

    declared = compat.declared_tolerance
    assert declared(keyword_only, {}) == compat.DeclaredTolerance(1e-5, 0.0, "default tol and default atol")
    assert declared(keyword_only, {"tol": 1e-7}) == compat.DeclaredTolerance(1e-7, 0.0, "tol and default atol")
    assert declared(with_settings, {}).rtol == 1e-5
    assert declared(with_settings, {"settings": CGSettings(cg_tolerance=0.1)}).source == "settings.cg_tolerance"
    assert declared(update_criterion, {}) is None  # MINRES's update criterion is not a residual tolerance
    assert declared(print, {}) is None  # no signature
    assert declared(keyword_only, {"tol": float("nan")}).source == "default tol and default atol"


# --- complex A and B ---------------------------------------------------------------------------------------------


def _complex_case(layout, seed=5):
    D = matrix_for("general", N, seed=seed, dtype=torch.complex128)  # neither symmetric nor Hermitian
    return D, to_layout(D, layout)


def _dense_gradients(D, B, G):
    D_ref, B_ref = D.clone().requires_grad_(), B.detach().clone().requires_grad_()
    (torch.linalg.solve(D_ref, B_ref) * G).sum().real.backward()
    return D_ref.grad * (D != 0), B_ref.grad


COMPLEX_DROP_INS = [
    ("generic-gmres", lambda M, R: compat.sparse_generic_solve(M, R, solve="gmres", rtol=1e-12)),
    ("generic-callable", lambda M, R: compat.sparse_generic_solve(M, R, solve=compat.bicgstab, rtol=1e-13)),
    ("c4t-default", lambda M, R: compat.sparse_solve_c4t(M, R)),
    ("c4t-gmres", lambda M, R: compat.sparse_solve_c4t(M, R, solve="gmres", tol=1e-12)),
    ("c4t-callable", lambda M, R: compat.sparse_solve_c4t(M, R, solve=sla.spsolve)),
    ("j4t-gmres", lambda M, R: compat.sparse_solve_j4t(M, R, solve="gmres", tol=1e-12)),
]


@pytest.mark.parametrize(("label", "function"), COMPLEX_DROP_INS, ids=[label for label, _ in COMPLEX_DROP_INS])
@pytest.mark.parametrize(("layout", "k"), [("coo", None), ("csr", 3)])
def test_drop_ins_accept_complex_with_conjugate_wirtinger_gradients(label, function, layout, k):
    if label.startswith("j4t"):
        pytest.importorskip("jax", reason="needs JAX")
    D, A = _complex_case(layout)
    A.requires_grad_()
    B = torch.randn((N,) if k is None else (N, k), dtype=torch.complex128, requires_grad=True)
    G = torch.randn(B.shape, dtype=torch.complex128)
    X = function(A, B)
    (X * G).sum().real.backward()
    grad_A, grad_B = _dense_gradients(D, B, G)
    torch.testing.assert_close(X, torch.linalg.solve(D, B.detach()))
    torch.testing.assert_close(B.grad, grad_B)
    torch.testing.assert_close(A.grad.to_dense(), grad_A)


def test_drop_ins_refuse_a_complex_a_with_a_real_b():
    _, A = _complex_case("csr")
    with pytest.raises(errors.DtypeMismatchError, match=r"B\.to\(A\.dtype\)"):
        compat.sparse_solve_c4t(A, torch.ones(N, dtype=torch.float64))
