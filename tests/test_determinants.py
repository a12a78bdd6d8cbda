"""slogdet, logdet, selected_inverse and diagonal_of_inverse against dense torch (float64, nonsymmetric A)."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as sla
import torch

import tsgu_core
from tsgu_backends.scipy_cupy_backend.selinv import factor_logdet, selected_inverse_of_factors
from tsgu_core import (
    InvalidArgumentError,
    NonFiniteError,
    SecondDerivativeError,
    SingularMatrixError,
    SparsePattern,
    UnknownMethodError,
    UnsupportedDeviceError,
)
from tsgu_core.testing import convection_diffusion_2d, random_nonsymmetric, to_layout

LAYOUTS = ["coo", "csr"]


def _nonsymmetric_pattern(n: int, seed: int) -> torch.Tensor:
    """A nonsymmetric matrix whose *pattern* is nonsymmetric too (A's and Aᵀ's stored entries differ)."""
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n, n, generator=g, dtype=torch.float64) * (torch.rand(n, n, generator=g) < 0.2)
    D = torch.triu(D, 1) * 0.5 + torch.tril(D, -1) * (torch.rand(n, n, generator=g) < 0.3)
    return D + torch.diag(2.0 + torch.rand(n, generator=g, dtype=torch.float64))


def _negative(D: torch.Tensor) -> torch.Tensor:
    """D with its first two rows swapped: the determinant changes sign."""
    order = torch.arange(D.shape[0])
    order[[0, 1]] = order[[1, 0]]
    return D[order]


def _dense_reference(D: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    leaf = D.clone().requires_grad_()
    sign, logabsdet = torch.linalg.slogdet(leaf)
    logabsdet.backward()
    return sign, logabsdet.detach(), leaf.grad * (D != 0)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n", [1, 2, 7, 40])
@pytest.mark.parametrize("make", [random_nonsymmetric, _nonsymmetric_pattern], ids=["values", "pattern"])
@pytest.mark.parametrize("flip", [False, True], ids=["det>0", "det<0"])
def test_slogdet_and_gradient_match_dense(layout, n, make, flip):
    D = make(n, seed=n)
    if flip and n > 1:
        D = _negative(D)
    sign_ref, logabsdet_ref, grad_ref = _dense_reference(D)
    A = to_layout(D, layout).requires_grad_()
    sign, logabsdet = tsgu_core.slogdet(A)
    assert sign.item() == sign_ref.item()
    torch.testing.assert_close(logabsdet, logabsdet_ref, rtol=1e-12, atol=1e-12)
    logabsdet.backward()
    assert A.grad.layout == A.layout
    torch.testing.assert_close(A.grad.to_dense(), grad_ref, rtol=1e-10, atol=1e-12)


def test_a_negative_determinant_is_really_tested():
    D = _negative(random_nonsymmetric(7, seed=7))
    assert torch.linalg.slogdet(D).sign.item() == -1.0
    assert tsgu_core.slogdet(D.to_sparse_csr())[0].item() == -1.0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradcheck(layout):
    D = _negative(_nonsymmetric_pattern(8, seed=3))
    template = to_layout(D, layout)
    if layout == "coo":
        template = template.coalesce()
        values = template.values().clone().requires_grad_()

        def function(v):
            return tsgu_core.slogdet(torch.sparse_coo_tensor(template.indices(), v, template.shape))[1]
    else:
        values = template.values().clone().requires_grad_()

        def function(v):
            matrix = torch.sparse_csr_tensor(template.crow_indices(), template.col_indices(), v, template.shape)
            return tsgu_core.slogdet(matrix)[1]

    assert torch.autograd.gradcheck(function, (values,))


@pytest.mark.slow
def test_n_2025_convection_diffusion_against_dense():
    D = convection_diffusion_2d(45).to_dense()
    sign_ref, logabsdet_ref, grad_ref = _dense_reference(D)
    A = D.to_sparse_csr().requires_grad_()
    sign, logabsdet = tsgu_core.slogdet(A)
    assert sign.item() == sign_ref.item()
    torch.testing.assert_close(logabsdet, logabsdet_ref, rtol=1e-12, atol=0.0)
    logabsdet.backward()
    torch.testing.assert_close(A.grad.to_dense(), grad_ref, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("blocked_from", [0, 10**18], ids=["blocked", "columns"])
@pytest.mark.parametrize("permc_spec", ["NATURAL", "COLAMD", "MMD_ATA", "MMD_AT_PLUS_A"])
def test_selected_inverse_of_factors_at_any_position(permc_spec, blocked_from):
    """The kernel itself, on SciPy factors with every column ordering, at random positions (off the pattern too).

    Both kernels: every supernode by BLAS-3 blocks, and every supernode column by column.
    """
    D = _nonsymmetric_pattern(60, seed=11).numpy()
    lu = sla.splu(sp.csc_matrix(D), permc_spec=permc_spec)
    assert not (np.array_equal(lu.perm_r, np.arange(60)) and permc_spec != "NATURAL")
    inverse = np.linalg.inv(D)
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 60, 300), rng.integers(0, 60, 300)
    got = selected_inverse_of_factors(lu, rows, cols, blocked_from=blocked_from)
    np.testing.assert_allclose(got, inverse[rows, cols], rtol=1e-10, atol=1e-14)
    sign, logabsdet = factor_logdet(lu)
    sign_ref, logabsdet_ref = np.linalg.slogdet(D)
    assert sign == sign_ref
    assert abs(logabsdet - logabsdet_ref) < 1e-12 * abs(logabsdet_ref)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_selected_inverse_on_a_nonsymmetric_pattern(layout):
    D = _nonsymmetric_pattern(50, seed=5)
    assert not torch.equal(D != 0, D.T != 0)
    Z = tsgu_core.selected_inverse(to_layout(D, layout))
    assert Z.layout == to_layout(D, layout).layout
    torch.testing.assert_close(Z.to_dense(), torch.linalg.inv(D) * (D != 0), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_selected_inverse_on_a_given_pattern(layout):
    D = random_nonsymmetric(30, seed=2)
    wanted = torch.zeros(30, 30)
    wanted[torch.randint(0, 30, (80,), generator=torch.Generator().manual_seed(1)), torch.arange(80) % 30] = 1
    pattern = SparsePattern.of(wanted.to_sparse_csr())
    Z = tsgu_core.selected_inverse(to_layout(D, layout), pattern)
    torch.testing.assert_close(Z.to_dense(), torch.linalg.inv(D) * (wanted != 0), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_diagonal_of_inverse(layout):
    D = _nonsymmetric_pattern(40, seed=8)
    torch.testing.assert_close(
        tsgu_core.diagonal_of_inverse(to_layout(D, layout)), torch.linalg.inv(D).diagonal(), rtol=1e-10, atol=1e-14
    )


def test_selected_inverse_refuses_a_gradient_instead_of_dropping_it():
    A = random_nonsymmetric(6, seed=1).to_sparse_csr().requires_grad_()
    diagonal = tsgu_core.diagonal_of_inverse(A)
    with pytest.raises(InvalidArgumentError, match="not differentiable"):
        diagonal.sum().backward()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_logdet_follows_torch(layout):
    positive = random_nonsymmetric(6, seed=4)
    negative = _negative(positive)
    singular = positive.clone()
    singular[2] = singular[1] * 2.0
    for D in (positive, negative, singular):
        expected = torch.logdet(D)
        got = tsgu_core.logdet(to_layout(D, layout))
        if torch.isnan(expected):
            assert torch.isnan(got)
        else:
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    A = to_layout(negative, layout).requires_grad_()
    tsgu_core.logdet(A).backward()  # torch gives a zero gradient where logdet is nan
    assert torch.equal(A.grad.to_dense(), torch.zeros(6, 6, dtype=torch.float64))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_exactly_singular(layout):
    D = random_nonsymmetric(8, seed=3)
    D[:, 5] = 0.0
    D[5, 5] = 0.0
    D = D + 0.0 * torch.eye(8, dtype=torch.float64)  # keep the pattern, lose the rank
    A = to_layout(D, layout).requires_grad_()
    sign, logabsdet = tsgu_core.slogdet(A)
    reference = torch.linalg.slogdet(D)
    assert sign.item() == 0.0 and abs(reference.sign.item()) == 0.0
    assert logabsdet.item() == -np.inf == reference.logabsdet.item()
    with pytest.raises(SingularMatrixError, match="singular"):
        logabsdet.backward()
    with pytest.raises(SingularMatrixError):
        tsgu_core.selected_inverse(A.detach())


def test_near_singular_is_right():
    D = random_nonsymmetric(20, seed=9)
    u, s, vh = torch.linalg.svd(D)
    s[-1] = s[0] * 1e-13
    D = (u * s) @ vh
    D[D.abs() < 1e-3] = 0.0  # sparse again; recompute the reference on what is stored
    sign_ref, logabsdet_ref, grad_ref = _dense_reference(D)
    A = D.to_sparse_csr().requires_grad_()
    sign, logabsdet = tsgu_core.slogdet(A)
    assert sign.item() == sign_ref.item()
    torch.testing.assert_close(logabsdet, logabsdet_ref, rtol=1e-10, atol=1e-10)
    logabsdet.backward()
    scale = grad_ref.abs().max()
    torch.testing.assert_close(A.grad.to_dense() / scale, grad_ref / scale, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_values_are_a_typed_error(layout):
    D = random_nonsymmetric(5, seed=1)
    D[1, 1] = float("nan")
    with pytest.raises(NonFiniteError):
        tsgu_core.slogdet(to_layout(D, layout))
    with pytest.raises(NonFiniteError):
        tsgu_core.selected_inverse(to_layout(D, layout))


@pytest.mark.parametrize("scale", [1e-150, 1e150])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_badly_scaled(scale, layout):
    D = _negative(random_nonsymmetric(30, seed=6))
    sign_ref, logabsdet_ref, grad_ref = _dense_reference(D)
    A = to_layout(D * scale, layout).requires_grad_()
    assert torch.linalg.det(D * scale).item() in (0.0, float("inf"), float("-inf"))  # det itself under/overflows
    sign, logabsdet = tsgu_core.slogdet(A)
    assert sign.item() == sign_ref.item()
    expected = logabsdet_ref + 30 * np.log(scale)
    assert torch.isfinite(logabsdet)
    torch.testing.assert_close(logabsdet, expected, rtol=1e-13, atol=0.0)
    logabsdet.backward()
    torch.testing.assert_close(A.grad.to_dense() * scale, grad_ref, rtol=1e-10, atol=1e-12)


def test_float32():
    D = _negative(random_nonsymmetric(20, seed=2))
    sign_ref, logabsdet_ref, grad_ref = _dense_reference(D)
    A = D.float().to_sparse_csr().requires_grad_()
    sign, logabsdet = tsgu_core.slogdet(A)
    assert sign.dtype == logabsdet.dtype == torch.float32
    assert sign.item() == sign_ref.item()
    torch.testing.assert_close(logabsdet, logabsdet_ref.float(), rtol=1e-5, atol=1e-5)
    logabsdet.backward()
    assert A.grad.dtype == torch.float32
    torch.testing.assert_close(A.grad.to_dense(), grad_ref.float(), rtol=1e-4, atol=1e-5)


def _batch(patterns: str) -> torch.Tensor:
    """Three members (the second with a negative determinant): one shared pattern, or one per member."""
    members = [random_nonsymmetric(9, seed=s) for s in range(3)]
    pattern = members[0] != 0
    members = [torch.where(pattern, m + 0.1 * (s + 1), 0.0) for s, m in enumerate(members)]
    if patterns == "per-member":  # move one entry of member 2: the same nnz (batched CSR allows it), other columns
        row = int(torch.nonzero(~pattern[:, :].all(1))[0])
        stored, empty = torch.nonzero(pattern[row]).flatten(), torch.nonzero(~pattern[row]).flatten()
        moved = int(stored[stored != row][0])
        members[2][row, int(empty[0])], members[2][row, moved] = members[2][row, moved], 0.0
    members[1] = _negative(members[1])
    return torch.stack(members)


@pytest.mark.parametrize("patterns", ["shared", "per-member"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_batched(patterns, layout):
    D = _batch(patterns)
    assert (patterns == "shared") == torch.equal(D[0] != 0, D[2] != 0)
    A = (D.to_sparse() if layout == "coo" else D.to_sparse_csr()).requires_grad_()
    sign, logabsdet = tsgu_core.slogdet(A)
    leaf = D.clone().requires_grad_()
    reference = torch.linalg.slogdet(leaf)
    assert torch.equal(sign, reference.sign)
    torch.testing.assert_close(logabsdet, reference.logabsdet.detach(), rtol=1e-12, atol=1e-12)
    weights = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    (logabsdet * weights).sum().backward()
    (reference.logabsdet * weights).sum().backward()
    torch.testing.assert_close(A.grad.to_dense(), leaf.grad * (D != 0), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        tsgu_core.diagonal_of_inverse(A.detach()), torch.linalg.inv(D).diagonal(dim1=-2, dim2=-1), rtol=1e-10, atol=0
    )
    Z = tsgu_core.selected_inverse(A.detach())
    torch.testing.assert_close(Z.to_dense(), torch.linalg.inv(D) * (D != 0), rtol=1e-10, atol=1e-14)


def test_batched_with_a_singular_member():
    A = _batch("shared").to_sparse_csr()
    values = A.values().clone()
    values[2] = 0.0  # member 2 stores only zeros: singular, with the shared pattern kept
    leaf = values.requires_grad_()
    sign, logabsdet = tsgu_core.slogdet(torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), leaf, A.shape))
    assert sign[2].item() == 0.0 and logabsdet[2].item() == -np.inf
    reference = torch.linalg.slogdet(A.to_dense()[:2])
    assert torch.equal(sign[:2], reference.sign)
    torch.testing.assert_close(logabsdet[:2], reference.logabsdet, rtol=1e-12, atol=1e-12)
    logabsdet[:2].sum().backward()  # the others keep their gradients
    dense_leaf = A.to_dense()[:2].requires_grad_()
    torch.linalg.slogdet(dense_leaf).logabsdet.sum().backward()
    expected = torch.stack([dense_leaf.grad[m][A[m].to_dense() != 0] for m in range(2)])
    torch.testing.assert_close(leaf.grad[:2], expected, rtol=1e-10, atol=1e-12)
    assert torch.equal(leaf.grad[2], torch.zeros_like(leaf.grad[2]))


def test_second_derivatives_are_refused():
    A = random_nonsymmetric(5, seed=1).to_sparse_csr().requires_grad_()
    _, logabsdet = tsgu_core.slogdet(A)
    with pytest.raises(SecondDerivativeError):
        torch.autograd.grad(logabsdet, A, create_graph=True)


def test_a_backend_without_the_capability_is_refused_naming_those_with_it():
    A = random_nonsymmetric(5, seed=1).to_sparse_csr()
    with pytest.raises(UnsupportedDeviceError, match="'scipy'"):
        tsgu_core.slogdet(A, backend="torch")
    with pytest.raises(UnknownMethodError, match="splu"):
        tsgu_core.slogdet(A, backend="scipy", method="gmres")


def test_options_reach_the_factorization():
    D = _nonsymmetric_pattern(30, seed=4)
    for permc_spec in ("NATURAL", "COLAMD"):
        sign, logabsdet = tsgu_core.slogdet(D.to_sparse_csr(), permc_spec=permc_spec)
        torch.testing.assert_close(logabsdet, torch.linalg.slogdet(D).logabsdet, rtol=1e-12, atol=1e-12)


def test_empty_matrix():
    A = torch.zeros(0, 0, dtype=torch.float64).to_sparse_csr()
    sign, logabsdet = tsgu_core.slogdet(A)
    assert sign.item() == 1.0 and logabsdet.item() == 0.0


def test_slogdet_reuses_one_factorization(monkeypatch):
    """Forward and backward: one prepare (one SuperLU factorization), no solve with a dense inverse."""
    from tsgu_backends.scipy_cupy_backend import scipy_backend

    calls = []
    original = scipy_backend.superlu

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(scipy_backend, "superlu", counting)
    D = random_nonsymmetric(12, seed=2)
    A = D.to_sparse_csr().requires_grad_()
    tsgu_core.slogdet(A)[1].backward()
    assert len(calls) == 1


def _complex(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    D = _nonsymmetric_pattern(n, seed)
    return D * torch.exp(1j * torch.randn(n, n, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_complex_slogdet_and_gradient_match_torch(layout):
    """The phase ``sign`` is differentiable for complex A, as in torch: ∂/∂A = (ḡ_l − i·Im(conj(ḡ_s)·sign))·A⁻ᴴ."""
    D = _complex(30, seed=2)
    g = torch.Generator().manual_seed(3)
    weight_sign = torch.randn((), generator=g, dtype=torch.complex128)
    weight_log = torch.randn((), generator=g, dtype=torch.float64)
    leaf = D.clone().requires_grad_()
    sign_ref, logabsdet_ref = torch.linalg.slogdet(leaf)
    ((sign_ref * weight_sign).real + logabsdet_ref * weight_log).backward()
    A = to_layout(D, layout).requires_grad_()
    sign, logabsdet = tsgu_core.slogdet(A)
    assert sign.dtype == torch.complex128 and logabsdet.dtype == torch.float64
    torch.testing.assert_close(sign, sign_ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logabsdet, logabsdet_ref.detach(), rtol=1e-12, atol=1e-12)
    ((sign * weight_sign).real + logabsdet * weight_log).backward()
    torch.testing.assert_close(A.grad.to_dense(), leaf.grad * (D != 0), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(tsgu_core.logdet(A.detach()), torch.logdet(D), rtol=1e-12, atol=1e-12)
    Z = tsgu_core.selected_inverse(to_layout(D, layout))
    torch.testing.assert_close(Z.to_dense(), torch.linalg.inv(D) * (D != 0), rtol=1e-10, atol=1e-14)


def test_complex_gradcheck():
    template = _complex(7, seed=4).to_sparse().coalesce()
    values = template.values().clone().requires_grad_()

    def function(v):
        sign, logabsdet = tsgu_core.slogdet(torch.sparse_coo_tensor(template.indices(), v, template.shape))
        return (sign * (0.3 - 0.8j)).real + logabsdet

    assert torch.autograd.gradcheck(function, (values,))
