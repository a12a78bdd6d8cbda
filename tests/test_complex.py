"""Complex A and B: dtype rules, selection, structure claims and the conjugate-Wirtinger gradient rule.

The numerical conformance of every backend that declares complex support runs in
tests/test_conformance.py (the kit's complex cases); this file checks the core's rules around it.
"""

import pytest
import torch

import tsgu_core
from tsgu_core import SparsePattern, errors
from tsgu_core.engine.autograd import adjoint_solve, values_gradient
from tsgu_core.plugins.select import complex_supporters
from tsgu_core.testing import DenseBackend, random_nonsymmetric, to_layout
from tsgu_core.testing.matrices import random_spd, random_symmetric_indefinite

N = 8
C128 = torch.complex128


def _general(seed: int = 0, dtype: torch.dtype = C128) -> torch.Tensor:
    """Dense, neither symmetric nor Hermitian."""
    return random_nonsymmetric(N, seed=seed, dtype=dtype)


def _complex_symmetric(seed: int = 1) -> torch.Tensor:
    """Aᵀ = A with complex values: not Hermitian (a Helmholtz matrix with absorbing layers looks like this)."""
    D = _general(seed)
    return (D + D.T) / 2 + 4 * N * torch.eye(N, dtype=C128)


class RealOnly(DenseBackend):
    """A dense backend that does not declare complex support, with the highest priority."""

    methods = {"lu": tsgu_core.MethodSpec("lu", "direct", "general", {}, "dense LU, real only")}


# --- dtype rules -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a_dtype", "b_dtype"), [(C128, torch.float64), (torch.float64, C128), (C128, torch.complex64)]
)
def test_mixed_real_and_complex_operands_are_refused_with_the_fix(a_dtype, b_dtype):
    A = to_layout(_general(dtype=a_dtype), "csr")
    B = torch.ones(N, dtype=b_dtype)
    with pytest.raises(errors.DtypeMismatchError, match=r"B\.to\(A\.dtype\)"):
        tsgu_core.solve(A, B, backend="torch")


def test_complex_values_for_a_real_pattern_and_x0_of_another_dtype_are_refused():
    A = to_layout(_general(dtype=torch.float64), "csr")
    values = A.values().to(C128)
    with pytest.raises(errors.DtypeMismatchError, match="never promoted silently"):
        tsgu_core.solve_values(A, values, torch.ones(N, dtype=torch.float64), backend="torch")
    Ac = to_layout(_general(), "csr")
    with pytest.raises(errors.DtypeMismatchError, match=r"x0\.to\(torch\.complex128\)"):
        tsgu_core.solve(Ac, torch.ones(N, dtype=C128), backend="torch", x0=torch.zeros(N, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float16, torch.int32])
def test_unsupported_dtypes_are_still_refused(dtype):
    A = torch.eye(N, dtype=dtype).to_sparse_csr()
    with pytest.raises(errors.DtypeMismatchError, match="complex64 or complex128"):
        tsgu_core.solve(A, torch.ones(N, dtype=dtype))


# --- selection ---------------------------------------------------------------------------------------------------


def test_default_selection_skips_backends_without_complex_support(register):
    register(RealOnly(name="realonly", priority=10_000))
    A = to_layout(_general(), "csr")
    assert tsgu_core.explain(to_layout(_general(dtype=torch.float64), "csr")).backend == "realonly"
    selection = tsgu_core.explain(A)
    assert selection.backend != "realonly"
    assert ("realonly", "no method for complex A") in selection.considered
    assert tsgu_core.get_backend(selection.backend).methods[selection.method].complex
    B = torch.randn(N, 2, dtype=C128)
    torch.testing.assert_close(tsgu_core.solve(A, B), torch.linalg.solve(_general(), B))


def test_naming_a_backend_or_method_without_complex_support_raises_a_typed_error(register):
    register(RealOnly(name="realonly"))
    A = to_layout(_general(), "coo")
    B = torch.ones(N, dtype=C128)
    with pytest.raises(errors.ComplexNotSupportedError, match="torch/gmres") as caught:
        tsgu_core.solve(A, B, backend="realonly")
    assert isinstance(caught.value, errors.DtypeMismatchError) and "torch/gmres" in caught.value.supported
    with pytest.raises(errors.ComplexNotSupportedError, match="'minres'.*does not solve complex A"):
        tsgu_core.solve(A, B, backend="scipy", method="minres")  # SciPy's MINRES takes unconjugated products


class MixedSupport(DenseBackend):
    """Default method real-only; a Hermitian-only and a general complex method (declared in that order)."""

    methods = {
        "lu": tsgu_core.MethodSpec("lu", "direct", "general", {}, "real only"),
        "hermitian_lu": tsgu_core.MethodSpec("hermitian_lu", "direct", "spd", {}, "HPD only", complex=True),
        "complex_lu": tsgu_core.MethodSpec("complex_lu", "direct", "general", {}, "any", complex=True),
    }


def test_a_backend_whose_default_is_real_only_stands_in_a_general_complex_method(register):
    register(MixedSupport(name="mixed"))
    A = to_layout(_general(seed=11), "csr")
    selection = tsgu_core.explain(A, backend="mixed")
    assert selection.method == "complex_lu" and "solves complex A" in selection.reason
    assert tsgu_core.explain(A, backend="mixed", assume="spd").method == "complex_lu"  # preferred_methods: none
    B = torch.randn(N, dtype=C128)
    torch.testing.assert_close(tsgu_core.solve(A, B, backend="mixed"), torch.linalg.solve(_general(seed=11), B))
    assert tsgu_core.explain(to_layout(_general(dtype=torch.float64), "csr"), backend="mixed").method == "lu"


def test_complex_supporters_lists_declared_methods():
    supporters = complex_supporters("solve", "cpu")
    assert {"torch/gmres", "torch/cg", "scipy/splu"} <= set(supporters)
    assert "scipy/minres" not in supporters
    assert "torch/lsqr" in complex_supporters("lstsq") and "torch/triangular" in complex_supporters("triangular")


def test_pardiso_and_real_petsc_do_not_declare_complex():
    for name in ("pardiso", "petsc"):
        backend = tsgu_core.get_backend(name)
        if name == "petsc":
            from tsgu_backends.petsc_backend.backend import scalar_type

            if scalar_type() == "complex":
                pytest.skip("this petsc4py has complex scalars")
        assert not any(spec.complex for spec in backend.methods.values()), name
        assert "complex" in backend.complex_note


# --- structure claims --------------------------------------------------------------------------------------------


def test_assume_symmetric_on_a_complex_symmetric_a_never_routes_to_cg_or_minres():
    D = _complex_symmetric()
    A = to_layout(D, "csr")
    selection = tsgu_core.explain(A, backend="torch", assume="symmetric")
    assert selection.method == "gmres"
    B = torch.randn(N, dtype=C128)
    X, info = tsgu_core.solve(A, B, backend="torch", assume="symmetric", rtol=1e-12, return_info=True)
    assert info.method == "gmres"
    torch.testing.assert_close(X, torch.linalg.solve(D, B))


@pytest.mark.parametrize("method", ["cg", "minres"])
def test_hermitian_methods_refuse_a_complex_symmetric_a(method):
    A = to_layout(_complex_symmetric(), "csr")
    with pytest.raises(errors.StructureError, match="Hermitian"):
        tsgu_core.solve(A, torch.ones(N, dtype=C128), backend="torch", method=method)


def test_assume_hermitian_is_checked_and_routes_to_minres():
    H = random_symmetric_indefinite(N, seed=2, dtype=C128)
    assert bool((H.imag != 0).any()) and not torch.equal(H, H.T)
    B = torch.randn(N, 2, dtype=C128)
    X, info = tsgu_core.solve(to_layout(H, "coo"), B, backend="torch", assume="hermitian", rtol=1e-12, return_info=True)
    assert info.method == "minres"
    torch.testing.assert_close(X, torch.linalg.solve(H, B))
    with pytest.raises(errors.StructureError, match=r"conj\(a_ji\)"):
        tsgu_core.solve(to_layout(_complex_symmetric(), "csr"), B, backend="torch", assume="hermitian")
    with pytest.raises(errors.StructureError, match="symmetric A"):  # Hermitian is not complex-symmetric
        tsgu_core.solve(to_layout(H, "csr"), B, backend="torch", assume="symmetric")


def test_assume_spd_means_hermitian_positive_definite_for_complex_a():
    P = random_spd(N, seed=4, dtype=C128)
    B = torch.randn(N, dtype=C128)
    X, info = tsgu_core.solve(to_layout(P, "csr"), B, backend="torch", assume="spd", rtol=1e-12, return_info=True)
    assert info.method == "cg"
    torch.testing.assert_close(X, torch.linalg.solve(P, B))
    negative = P - 2 * torch.diag(torch.diagonal(P)).real.to(C128)
    with pytest.raises(errors.StructureError, match="not positive"):
        tsgu_core.solve(to_layout(negative, "csr"), B, backend="torch", assume="spd")


# --- the gradient rule -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, C128])
def test_adjoint_solve_is_the_conjugate_transpose_solve(dtype):
    D = _general(dtype=dtype)
    G = torch.randn(N, 3, dtype=dtype)
    seen = []

    def transposed(R: torch.Tensor) -> torch.Tensor:
        seen.append(R.is_conj())
        return torch.linalg.solve(D.T, R)

    torch.testing.assert_close(adjoint_solve(transposed, G), torch.linalg.solve(D.mH, G))
    assert seen == [False]  # the backend gets a materialised tensor (NumPy refuses lazy conjugates)


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_values_gradient_matches_dense_autograd(transpose, layout):
    D = _general(seed=5)
    A = to_layout(D, layout)
    B = torch.randn(N, 2, dtype=C128)
    G = torch.randn(N, 2, dtype=C128)
    M = D.clone().requires_grad_()
    X = torch.linalg.solve(M.T if transpose else M, B)
    (X * G).sum().real.backward()
    op = D.T if transpose else D
    S = torch.linalg.solve(op.mH, G.conj())  # ∂L/∂X of L = Re Σ X·G is conj(G) in torch's convention
    pattern = SparsePattern.of(A if layout == "csr" else A.coalesce())
    expected = M.grad[pattern.row, pattern.col]
    torch.testing.assert_close(values_gradient(pattern, X.detach(), S, transpose), expected)


def test_values_gradient_is_differentiable_and_its_fast_path_agrees():
    pattern = SparsePattern.of(to_layout(_general(seed=6), "csr"))
    X = torch.randn(N, 2, dtype=C128, requires_grad=True)
    S = torch.randn(N, 2, dtype=C128)
    with torch.no_grad():
        fast = values_gradient(pattern, X, S, False)  # torch.sparse.sampled_addmm
    slow = values_gradient(pattern, X, S, False)  # gather/scatter, recorded
    torch.testing.assert_close(fast, slow.detach())
    assert torch.autograd.gradcheck(lambda x: values_gradient(pattern, x, S, True), (X,))


def test_factorized_transposed_solve_in_complex128_is_with_the_plain_transpose():
    D = _general(seed=7)
    A = to_layout(D, "csr").requires_grad_()
    handle = tsgu_core.factorize(A, backend=DenseBackend(name="dense-complex"))
    B = torch.randn(N, 2, dtype=C128, requires_grad=True)
    X = handle.solve(B, transpose=True)
    G = torch.randn(N, 2, dtype=C128)
    (X * G).sum().real.backward()
    M = D.clone().requires_grad_()
    B_ref = B.detach().clone().requires_grad_()
    X_ref = torch.linalg.solve(M.T, B_ref)
    (X_ref * G).sum().real.backward()
    torch.testing.assert_close(X, X_ref)
    torch.testing.assert_close(B.grad, B_ref.grad)
    torch.testing.assert_close(A.grad.to_dense(), M.grad * (D != 0))
    assert torch.autograd.gradcheck(lambda rhs: handle.solve(rhs, transpose=True), (B.detach().requires_grad_(),))


def test_leaf_complex_csr_gets_a_sparse_gradient_in_its_layout():
    D = _general(seed=8)
    A = to_layout(D, "csr").requires_grad_()
    B = torch.randn(N, dtype=C128, requires_grad=True)
    X = tsgu_core.solve(A, B, backend="scipy")
    G = torch.randn(N, dtype=C128)
    (X * G).sum().real.backward()
    M = D.clone().requires_grad_()
    (torch.linalg.solve(M, B.detach()) * G).sum().real.backward()
    assert A.grad.layout == torch.sparse_csr and A.grad.dtype == C128
    torch.testing.assert_close(A.grad.to_dense(), M.grad * (D != 0))


# --- preconditioners with complex A ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "method", "options", "kind"),
    [
        ("torch", "gmres", {"preconditioner": "ilu0"}, "general"),
        ("torch", "bicgstab", {"preconditioner": "jacobi"}, "general"),
        ("torch", "gmres", {"M": "dense-inverse-diagonal"}, "general"),
        ("torch", "cg", {"preconditioner": "jacobi"}, "spd"),
        ("torch", "minres", {"preconditioner": "jacobi"}, "symmetric"),
        ("scipy", "gmres", {"preconditioner": "ilu"}, "general"),
        ("scipy", "bicgstab", {"preconditioner": "jacobi"}, "general"),
        ("scipy", "cg", {"preconditioner": "jacobi"}, "spd"),
    ],
)
def test_preconditioned_complex_solves_and_gradients(backend, method, options, kind):
    from tsgu_core.testing import matrix_for

    D = matrix_for(kind, N, seed=9, dtype=C128)
    options = dict(options)
    if options.get("M") == "dense-inverse-diagonal":
        options["M"] = torch.diag(1 / torch.diagonal(D))
    A = to_layout(D, "csr").requires_grad_()
    B = torch.randn(N, 2, dtype=C128, requires_grad=True)
    X = tsgu_core.solve(A, B, backend=backend, method=method, rtol=1e-12, **options)
    G = torch.randn(N, 2, dtype=C128)
    (X * G).sum().real.backward()
    M = D.clone().requires_grad_()
    B_ref = B.detach().clone().requires_grad_()
    (torch.linalg.solve(M, B_ref) * G).sum().real.backward()
    torch.testing.assert_close(X, torch.linalg.solve(D, B.detach()))
    torch.testing.assert_close(B.grad, B_ref.grad)
    torch.testing.assert_close(A.grad.to_dense(), M.grad * (D != 0))


def test_second_derivatives_through_a_leaf_complex_a():
    """COO: exact (against dense double backward); CSR: torch's CSR constructor has no complex autograd → typed."""
    D = _general(seed=12)
    B = torch.randn(N, dtype=C128)

    def second(function, A):
        (g,) = torch.autograd.grad(function(A).abs().square().sum(), A, create_graph=True)
        dense_g = g.to_dense() if g.is_sparse else g * (D != 0)  # the loss sees the stored entries only
        (h,) = torch.autograd.grad((dense_g.abs() ** 2).sum(), A)
        return h.to_dense() if h.is_sparse else h

    coo = to_layout(D, "coo").requires_grad_()
    h = second(lambda A: tsgu_core.solve(A, B, backend="scipy"), coo)
    h_dense = second(lambda M: torch.linalg.solve(M, B), D.clone().requires_grad_())
    torch.testing.assert_close(h, h_dense * (D != 0))
    csr = to_layout(D, "csr").requires_grad_()
    with pytest.raises(errors.SecondDerivativeError, match="solve_values"):
        second(lambda A: tsgu_core.solve(A, B, backend="scipy"), csr)
