"""method="stochastic": estimates of diag(A⁻¹), selected entries of A⁻¹ and log det A, with honest standard errors.

References are dense (float64): ``torch.linalg.inv`` entries and ``torch.linalg.slogdet`` + autograd.
Every check of an estimate is against its own reported standard error; every test is seeded.
"""

import copy
import importlib.util
import math
import pickle

import pytest
import torch

import tsgu_core
from tsgu_core import (
    ComplexNotSupportedError,
    ConvergenceError,
    Estimate,
    InvalidArgumentError,
    InvalidOptionError,
    SecondDerivativeError,
    ShapeError,
    SlogdetEstimate,
    StructureError,
    UnknownMethodError,
    UnknownOptionError,
)
from tsgu_core.testing import convection_diffusion_2d, poisson_2d, random_nonsymmetric, random_spd, to_layout

LAYOUTS = ["coo", "csr"]
HAS_JAX = importlib.util.find_spec("jax") is not None


def _nonsymmetric(n: int = 36, seed: int = 0) -> torch.Tensor:
    """A dense, diagonally dominant, nonsymmetric matrix with a nonsymmetric pattern."""
    D = random_nonsymmetric(n, seed=seed)
    return D + torch.diag(torch.full((n,), 2.0, dtype=torch.float64))


def _z(estimate: torch.Tensor, exact: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
    """|estimate − exact| in standard errors."""
    return (estimate - exact).abs() / error


# --- diagonal_of_inverse and selected_inverse --------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    ("backend", "solver"), [("torch", "gmres"), ("torch", "bicgstab"), ("scipy", "gmres"), ("scipy", None)]
)
def test_diagonal_estimate_within_its_standard_error(layout, backend, solver):
    D = _nonsymmetric()
    A = to_layout(D, layout)
    result = tsgu_core.diagonal_of_inverse(A, method="stochastic", backend=backend, solver=solver, probes=64, seed=1)
    assert isinstance(result, Estimate)
    exact = torch.linalg.inv(D).diagonal()
    z = _z(result.value, exact, result.standard_error)
    assert result.value.shape == result.standard_error.shape == (36,)
    assert bool((z < 4.5).all()), z.max()
    assert float((z < 2).double().mean()) >= 0.85  # about 95 % within two standard errors
    assert bool((result.standard_error > 0).all())  # and the error is not trivially right: it is an estimate
    assert float((result.value - exact).abs().max()) > 1e-6


@pytest.mark.parametrize("layout", LAYOUTS)
def test_selected_inverse_estimate_on_its_pattern(layout):
    D = _nonsymmetric(seed=3)
    A = to_layout(D, layout)
    result = tsgu_core.selected_inverse(A, method="stochastic", backend="torch", probes=64, seed=2)
    assert isinstance(result, Estimate)
    assert result.value.layout == result.standard_error.layout == A.layout
    mask = D != 0
    exact = torch.linalg.inv(D)[mask]
    value, error = result.value.to_dense()[mask], result.standard_error.to_dense()[mask]
    assert value.numel() == int(mask.sum())
    assert bool((_z(value, exact, error) < 4.5).all())
    # the same positions as the exact selected inverse, in the same order
    exact_sparse = tsgu_core.selected_inverse(A)
    assert torch.equal(
        (exact_sparse.to_sparse_coo() if layout == "csr" else exact_sparse).coalesce().indices(),
        (result.value.to_sparse_coo() if layout == "csr" else result.value).coalesce().indices(),
    )


def test_selected_inverse_estimate_at_a_given_pattern():
    D = _nonsymmetric(seed=4)
    far = torch.zeros_like(D)
    far[0, 30], far[30, 0], far[5, 5] = 1.0, 1.0, 1.0
    pattern = tsgu_core.SparsePattern.of(far.to_sparse_csr())
    result = tsgu_core.selected_inverse(D.to_sparse_csr(), pattern, method="stochastic", probes=128, seed=5)
    exact = torch.linalg.inv(D)[pattern.row, pattern.col]
    assert bool((_z(result.value.values(), exact, result.standard_error.values()) < 4.5).all())


def test_standard_error_is_honest_over_seeds():
    """The spread of the estimates over independent seeds matches the standard error they report."""
    D = _nonsymmetric(n=16, seed=6)
    A = D.to_sparse_csr()
    runs = [tsgu_core.diagonal_of_inverse(A, method="stochastic", probes=16, seed=seed) for seed in range(60)]
    values = torch.stack([r.value for r in runs])
    reported = torch.stack([r.standard_error for r in runs]).pow(2).mean(0).sqrt()
    ratio = values.std(0) / reported  # per entry; 60 draws each
    assert 0.7 < float(ratio.median()) < 1.4, ratio
    z = _z(values, torch.linalg.inv(D).diagonal(), reported)
    assert float((z < 2.5).double().mean()) >= 0.9


def test_more_probes_give_a_smaller_standard_error():
    A = _nonsymmetric(seed=7).to_sparse_csr()
    few = tsgu_core.diagonal_of_inverse(A, method="stochastic", probes=16, seed=0).standard_error
    many = tsgu_core.diagonal_of_inverse(A, method="stochastic", probes=256, seed=0).standard_error
    ratio = float(few.mean() / many.mean())  # √(256/16) = 4
    assert 3.0 < ratio < 5.3, ratio


def test_sketch_deflation_is_unbiased_and_helps_diffusion():
    """Hutch++-style deflation: right within its standard error; on 2-D Poisson a smaller error at equal solves."""
    A = poisson_2d(12)
    exact = torch.linalg.inv(A.to_dense()).diagonal()
    plain = tsgu_core.diagonal_of_inverse(A, method="stochastic", probes=48, seed=0)
    deflated = tsgu_core.diagonal_of_inverse(A, method="stochastic", probes=32, sketch=8, seed=0)  # 48 solves too
    assert bool((_z(deflated.value, exact, deflated.standard_error) < 4.5).all())
    assert float(deflated.standard_error.mean()) < 0.8 * float(plain.standard_error.mean())


def test_sketch_deflation_standard_error_is_honest_over_seeds():
    D = _nonsymmetric(n=16, seed=8)
    runs = [
        tsgu_core.diagonal_of_inverse(D.to_sparse_csr(), method="stochastic", probes=12, sketch=3, seed=seed)
        for seed in range(60)
    ]
    values = torch.stack([r.value for r in runs])
    reported = torch.stack([r.standard_error for r in runs]).pow(2).mean(0).sqrt()
    assert 0.7 < float((values.std(0) / reported).median()) < 1.4
    assert float((values.mean(0) - torch.linalg.inv(D).diagonal()).abs().max() / reported.max()) < 4 / math.sqrt(60) * 2


def test_complex_diagonal_estimate():
    D = _nonsymmetric(n=20, seed=9).to(torch.complex128)
    D = D + 0.5j * torch.diag(torch.ones(20, dtype=torch.float64))
    result = tsgu_core.diagonal_of_inverse(D.to_sparse_csr(), method="stochastic", backend="torch", seed=1)
    assert result.value.dtype == torch.complex128 and result.standard_error.dtype == torch.float64
    assert bool((_z(result.value, torch.linalg.inv(D).diagonal(), result.standard_error) < 4.5).all())
    controlled = tsgu_core.diagonal_of_inverse(
        D.to_sparse_csr(), method="stochastic", backend="torch", seed=1, control_variate=True
    )
    assert bool((_z(controlled.value, torch.linalg.inv(D).diagonal(), controlled.standard_error) < 4.5).all())
    with pytest.raises(ComplexNotSupportedError):
        tsgu_core.diagonal_of_inverse(D.to_sparse_csr(), method="stochastic", sketch=2)


def test_seed_and_generator_reproduce_and_differ():
    A = _nonsymmetric(n=20).to_sparse_csr()
    first = tsgu_core.diagonal_of_inverse(A, method="stochastic", backend="scipy", probes=8, seed=3)
    again = tsgu_core.diagonal_of_inverse(A, method="stochastic", backend="scipy", probes=8, seed=3)
    other = tsgu_core.diagonal_of_inverse(A, method="stochastic", backend="scipy", probes=8, seed=4)
    from_generator = tsgu_core.diagonal_of_inverse(
        A, method="stochastic", backend="scipy", probes=8, generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(first.value, again.value, rtol=0, atol=0)
    torch.testing.assert_close(first.value, from_generator.value, rtol=0, atol=0)
    assert not torch.equal(first.value, other.value)
    torch.manual_seed(11)  # no seed: torch's global generator
    default = tsgu_core.diagonal_of_inverse(A, method="stochastic", backend="scipy", probes=8)
    torch.manual_seed(11)
    repeated = tsgu_core.diagonal_of_inverse(A, method="stochastic", backend="scipy", probes=8)
    torch.testing.assert_close(default.value, repeated.value, rtol=0, atol=0)


def test_estimates_are_not_differentiable_in_A():
    A = _nonsymmetric(n=10).to_sparse_csr().requires_grad_()
    result = tsgu_core.diagonal_of_inverse(A, method="stochastic", probes=4, seed=0)
    with pytest.raises(InvalidArgumentError, match="not differentiable"):
        result.value.sum().backward()


# --- slogdet and logdet ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_slogdet_estimate_within_its_standard_error(layout):
    D = random_spd(64, seed=1)
    A = to_layout(D, layout)
    result = tsgu_core.slogdet(A, method="stochastic", probes=32, seed=0)
    assert isinstance(result, SlogdetEstimate)
    sign, logabsdet = result  # unpacks like the exact call
    exact = torch.linalg.slogdet(D)
    assert sign.item() == 1.0 and result.sign is sign and result.logabsdet is logabsdet
    assert float(_z(logabsdet, exact.logabsdet, result.standard_error)) < 4
    assert result.probes == 32 and 1 <= result.lanczos_steps <= 64
    assert float(result.standard_error) > 0
    copied = pickle.loads(pickle.dumps(result))  # copies and pickles keep the attributes
    assert isinstance(copied, SlogdetEstimate) and float(copied.standard_error) == float(result.standard_error)
    assert copy.copy(result).lanczos_steps == result.lanczos_steps


def test_slogdet_standard_error_is_honest_over_seeds():
    D = poisson_2d(6).to_dense() + torch.diag(torch.linspace(0, 3, 36, dtype=torch.float64))
    A = D.to_sparse_csr()
    runs = [tsgu_core.slogdet(A, method="stochastic", probes=8, seed=seed) for seed in range(60)]
    values = torch.stack([r.logabsdet for r in runs])
    reported = float(torch.stack([r.standard_error for r in runs]).pow(2).mean().sqrt())
    assert 0.65 < float(values.std()) / reported < 1.5
    assert abs(float(values.mean() - torch.linalg.slogdet(D).logabsdet)) < 4 * reported / math.sqrt(60)


def test_slogdet_more_probes_smaller_error_and_logdet_estimate():
    A = poisson_2d(8)
    few = tsgu_core.slogdet(A, method="stochastic", probes=8, seed=1).standard_error
    many = tsgu_core.slogdet(A, method="stochastic", probes=128, seed=1).standard_error
    assert 2.5 < float(few / many) < 6.5  # √16 = 4
    leaf = A.clone().requires_grad_()
    result = tsgu_core.logdet(leaf, method="stochastic", probes=64, seed=2)
    assert isinstance(result, Estimate)
    assert float(_z(result.value.detach(), torch.logdet(A.to_dense()), result.standard_error)) < 4
    result.value.backward()  # the estimate's value is differentiable, as slogdet's logabsdet
    assert leaf.grad is not None and leaf.grad.layout == torch.sparse_csr


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("backend", "solver"), [("torch", "cg"), ("scipy", "cg")])
def test_slogdet_gradient_estimate_against_the_exact_inverse(layout, backend, solver):
    D = poisson_2d(6).to_dense() + torch.diag(torch.linspace(0, 2, 36, dtype=torch.float64))
    A = to_layout(D, layout).requires_grad_()
    _, logabsdet = tsgu_core.slogdet(A, method="stochastic", backend=backend, solver=solver, probes=200, seed=3)
    logabsdet.backward()
    assert A.grad.layout == A.layout
    mask = D != 0
    exact = torch.linalg.inv(D).T[mask]
    grad = A.grad.to_dense()[mask]
    # the per-entry standard error of the (unsymmetrized) Hutchinson estimate with as many probes bounds it
    bound = tsgu_core.selected_inverse(D.to_sparse_csr(), method="stochastic", probes=200, seed=4).standard_error
    assert bool((_z(grad, exact, bound.to_dense()[mask]) < 4.5).all())
    # symmetrized (A is symmetric): the gradient is symmetric, as the exact one
    dense_grad = A.grad.to_dense()
    torch.testing.assert_close(dense_grad, dense_grad.T)


def test_slogdet_gradient_is_unbiased_over_seeds():
    D = random_spd(12, seed=2)
    mask = D != 0
    grads = []
    for seed in range(40):
        A = D.to_sparse_csr().requires_grad_()
        tsgu_core.slogdet(A, method="stochastic", backend="scipy", probes=4, seed=seed)[1].backward()
        grads.append(A.grad.to_dense()[mask])
    stacked = torch.stack(grads)
    z = _z(stacked.mean(0), torch.linalg.inv(D).T[mask], stacked.std(0) / math.sqrt(40) + 1e-15)
    assert bool((z < 4.5).all())


@pytest.mark.skipif(not HAS_JAX, reason="jax is not installed")
def test_diagonal_and_gradient_through_jax():
    D = poisson_2d(4).to_dense() + torch.eye(16, dtype=torch.float64)
    A = D.to_sparse_csr().requires_grad_()
    result = tsgu_core.diagonal_of_inverse(A.detach(), method="stochastic", backend="jax", probes=32, seed=0)
    assert bool((_z(result.value, torch.linalg.inv(D).diagonal(), result.standard_error) < 4.5).all())
    tsgu_core.slogdet(A, method="stochastic", backend="jax", solver="cg", probes=8, seed=0)[1].backward()
    assert A.grad is not None and bool(torch.isfinite(A.grad.values()).all())


def test_slogdet_estimate_of_badly_scaled_and_trivial_matrices():
    D = random_spd(30, seed=4)
    for scale in (1e-150, 1e150):
        result = tsgu_core.slogdet((D * scale).to_sparse_csr(), method="stochastic", probes=16, seed=0)
        exact = torch.linalg.slogdet(D).logabsdet + 30 * math.log(scale)
        assert math.isfinite(float(result.logabsdet))
        assert float(_z(result.logabsdet, exact, result.standard_error)) < 4
    diagonal = torch.diag(torch.linspace(1, 3, 10, dtype=torch.float64))  # Lanczos stops at once: exact
    result = tsgu_core.slogdet(diagonal.to_sparse_csr(), method="stochastic", probes=4, seed=0)
    assert result.lanczos_steps <= 10
    torch.testing.assert_close(result.logabsdet, torch.logdet(diagonal))  # Rademacher: zᵀ log(D) z = tr log D


# --- typed errors -----------------------------------------------------------------------------------------------


def test_stochastic_slogdet_refuses_nonsymmetric_indefinite_complex_and_batches():
    with pytest.raises(StructureError, match="exact slogdet"):
        tsgu_core.slogdet(convection_diffusion_2d(4), method="stochastic")
    indefinite = torch.diag(torch.tensor([2.0, -1.0, 3.0], dtype=torch.float64))
    with pytest.raises(StructureError):
        tsgu_core.slogdet(indefinite.to_sparse_csr(), method="stochastic")
    indefinite = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)  # positive diagonal, an eigenvalue −1
    with pytest.raises(StructureError, match="not positive definite"):
        tsgu_core.slogdet(indefinite.to_sparse_csr(), method="stochastic", seed=0)
    with pytest.raises(ComplexNotSupportedError):
        tsgu_core.slogdet(torch.eye(3, dtype=torch.complex128).to_sparse_csr(), method="stochastic")
    batch = torch.stack([torch.eye(3, dtype=torch.float64)] * 2).to_sparse_csr()
    with pytest.raises(ShapeError, match="each batch member"):
        tsgu_core.selected_inverse(batch, method="stochastic")
    with pytest.raises(StructureError):
        tsgu_core.slogdet(
            torch.stack([torch.eye(9, dtype=torch.float64), convection_diffusion_2d(3).to_dense()]).to_sparse(),
            method="stochastic",
        )


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"probes": 1}, InvalidOptionError, "probes"),
        ({"probes": True}, InvalidOptionError, "probes"),
        ({"probes": "64"}, InvalidOptionError, "probes"),
        ({"sketch": -1}, InvalidOptionError, "sketch"),
        ({"sketch": 100}, InvalidOptionError, "sketch"),
        ({"seed": 1, "generator": torch.Generator()}, InvalidOptionError, "not both"),
        ({"seed": 1.5}, InvalidOptionError, "seed"),
        ({"seed": -1}, InvalidOptionError, "seed"),
        ({"generator": 3}, InvalidOptionError, "generator"),
        ({"solver": "nope", "backend": "torch"}, UnknownMethodError, "nope"),
        ({"solver": 3}, InvalidOptionError, "solver"),
        ({"probs": 8}, UnknownOptionError, "probes"),
        ({"max_lanczos_steps": 5}, UnknownOptionError, "max_lanczos_steps"),
    ],
)
def test_bad_options_are_typed_errors(options, error, match):
    A = _nonsymmetric(n=10).to_sparse_csr()
    options = dict(options)
    backend = options.pop("backend", None)
    with pytest.raises(error, match=match):
        tsgu_core.diagonal_of_inverse(A, method="stochastic", backend=backend, **options)


def test_unknown_option_lists_the_solver_and_stochastic_options():
    A = random_spd(10, seed=0).to_sparse_csr()
    with pytest.raises(UnknownOptionError) as caught:
        tsgu_core.slogdet(A, method="stochastic", backend="torch", solver="cg", restrat=5)
    assert "probes" in caught.value.accepted and "max_lanczos_steps" in caught.value.accepted
    assert "rtol" in caught.value.accepted
    with pytest.raises(InvalidOptionError, match="max_lanczos_steps"):
        tsgu_core.slogdet(A, method="stochastic", max_lanczos_steps=0)


def test_lanczos_that_does_not_converge_raises():
    A = poisson_2d(16)
    with pytest.raises(ConvergenceError, match="max_lanczos_steps"):
        tsgu_core.slogdet(A, method="stochastic", probes=4, max_lanczos_steps=5, seed=0)


def test_second_derivative_of_the_estimate_is_refused():
    A = random_spd(8, seed=1).to_sparse_csr().requires_grad_()
    _, logabsdet = tsgu_core.slogdet(A, method="stochastic", probes=4, seed=0)
    with pytest.raises(SecondDerivativeError):
        torch.autograd.grad(logabsdet, A, create_graph=True)


def test_probe_options_without_method_stochastic_are_refused():
    """``probes=`` with an exact method is an unknown option of that method, never a silent estimate."""
    with pytest.raises(UnknownOptionError):
        tsgu_core.diagonal_of_inverse(_nonsymmetric(n=6).to_sparse_csr(), probes=8)


def test_lanczos_quadrature_error_is_far_below_the_standard_error():
    """Each probe's Gauss quadrature against the exact zᵀ log(A) z: the steps stop once it is negligible."""
    from tsgu_core.api.stochastic import _lanczos_logdet

    A = poisson_2d(20)  # n = 400, condition number ≈ 180: the steps stop well before n
    eigenvalues, vectors = torch.linalg.eigh(A.to_dense())
    log_A = vectors @ torch.diag(eigenvalues.log()) @ vectors.T
    Z = torch.randint(0, 2, (400, 16), generator=torch.Generator().manual_seed(0)).double() * 2 - 1
    samples, steps = _lanczos_logdet(tsgu_core.SparsePattern.of(A), A.values(), Z, 1000)
    assert steps < 100
    error = float(samples.std() / 4)
    assert float((samples - (Z * (log_A @ Z)).sum(0)).abs().max()) < 0.02 * error


def test_slogdet_gradient_with_deflation_is_unbiased_and_less_noisy():
    """sketch= applies to the gradient's solves: still right within its error, and closer on 2-D Poisson."""
    D = poisson_2d(8).to_dense()
    mask = D != 0
    exact = torch.linalg.inv(D).T[mask]

    def gradient_error(**options) -> float:
        A = D.to_sparse_csr().requires_grad_()
        tsgu_core.slogdet(A, method="stochastic", backend="scipy", seed=5, **options)[1].backward()
        return float((A.grad.to_dense()[mask] - exact).norm() / exact.norm())

    plain, deflated = gradient_error(probes=48), gradient_error(probes=32, sketch=8)  # 48 solves each
    assert deflated < 0.8 * plain, (deflated, plain)


def test_float32_estimates_keep_the_dtype_and_are_right_within_their_error():
    A = convection_diffusion_2d(6, dtype=torch.float32)
    value, error = tsgu_core.diagonal_of_inverse(A, method="stochastic", backend="torch", seed=0)
    assert value.dtype == error.dtype == torch.float32
    exact = torch.linalg.inv(A.to_dense().double()).diagonal()
    assert bool((_z(value.double(), exact, error.double()) < 4.5).all())
    P = poisson_2d(6, dtype=torch.float32).requires_grad_()
    result = tsgu_core.slogdet(P, method="stochastic", backend="torch", solver="cg", seed=0)
    assert result.logabsdet.dtype == torch.float32
    exact_logdet = torch.linalg.slogdet(P.detach().to_dense().double()).logabsdet
    assert float(_z(result.logabsdet.detach().double(), exact_logdet, result.standard_error.double())) < 4
    result.logabsdet.backward()
    assert P.grad.dtype == torch.float32


@pytest.mark.parametrize("layout", LAYOUTS)
def test_control_variate_is_unbiased_and_helps_a_mass_term(layout):
    """control_variate=True: A⁻¹ = C + (A⁻¹ − C) with C the two-term Neumann series; exact part from C's entries."""
    D = poisson_2d(8).to_dense() + 2 * torch.eye(64, dtype=torch.float64)
    D[0, 9] = -0.7  # nonsymmetric, and an entry off the 5-point stencil
    A = to_layout(D, layout)
    plain = tsgu_core.selected_inverse(A, method="stochastic", backend="scipy", probes=64, seed=0)
    controlled = tsgu_core.selected_inverse(
        A, method="stochastic", backend="scipy", probes=64, seed=0, control_variate=True
    )
    mask = D != 0
    exact = torch.linalg.inv(D)[mask]
    value, error = controlled.value.to_dense()[mask], controlled.standard_error.to_dense()[mask]
    assert bool((_z(value, exact, error) < 4.5).all())
    assert float(error.mean()) < 0.6 * float(plain.standard_error.to_dense()[mask].mean())
    # at positions outside A's pattern (two steps away: only the third Neumann term reaches them)
    far = torch.zeros_like(D)
    far[0, 2], far[10, 30], far[5, 5] = 1.0, 1.0, 1.0
    pattern = tsgu_core.SparsePattern.of(far.to_sparse_csr())
    at = tsgu_core.selected_inverse(A, pattern, method="stochastic", probes=64, seed=1, control_variate=True)
    exact_far = torch.linalg.inv(D)[pattern.row, pattern.col]
    assert bool((_z(at.value.to_dense()[far != 0], exact_far, at.standard_error.to_dense()[far != 0]) < 4.5).all())


def test_control_variate_standard_error_is_honest_over_seeds():
    D = _nonsymmetric(n=16, seed=10)
    runs = [
        tsgu_core.diagonal_of_inverse(D.to_sparse_csr(), method="stochastic", probes=12, seed=s, control_variate=True)
        for s in range(60)
    ]
    values = torch.stack([r.value for r in runs])
    reported = torch.stack([r.standard_error for r in runs]).pow(2).mean(0).sqrt()
    assert 0.7 < float((values.std(0) / reported).median()) < 1.4
    assert float((values.mean(0) - torch.linalg.inv(D).diagonal()).abs().max() / reported.max()) < 1


def test_control_variate_in_the_slogdet_gradient():
    D = poisson_2d(6).to_dense() + torch.eye(36, dtype=torch.float64)
    A = D.to_sparse_csr().requires_grad_()
    tsgu_core.slogdet(A, method="stochastic", backend="scipy", probes=64, seed=0, control_variate=True)[1].backward()
    mask = D != 0
    bound = tsgu_core.selected_inverse(
        D.to_sparse_csr(), method="stochastic", probes=64, seed=1, control_variate=True
    ).standard_error
    assert bool((_z(A.grad.to_dense()[mask], torch.linalg.inv(D)[mask], bound.to_dense()[mask]) < 4.5).all())


def test_control_variate_refusals():
    A = _nonsymmetric(n=6).to_sparse_csr()
    with pytest.raises(InvalidOptionError, match="do not combine"):
        tsgu_core.diagonal_of_inverse(A, method="stochastic", control_variate=True, sketch=2)
    with pytest.raises(InvalidOptionError, match="True or False"):
        tsgu_core.diagonal_of_inverse(A, method="stochastic", control_variate="yes")
    no_diagonal = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64).to_sparse_csr()
    with pytest.raises(InvalidOptionError, match="diagonal"):
        tsgu_core.diagonal_of_inverse(no_diagonal, method="stochastic", control_variate=True)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_batches_member_by_member(layout):
    """A batch (COO: per-member patterns; CSR: one shared pattern): each member within its own error."""
    if layout == "coo":
        dense = torch.stack([random_spd(20, seed=1), random_spd(20, seed=2)])  # two patterns
    else:
        P = poisson_2d(4).to_dense()
        dense = torch.stack([P + torch.eye(16, dtype=torch.float64), P + 3 * torch.eye(16, dtype=torch.float64)])
    A = to_layout(dense, layout).requires_grad_()
    result = tsgu_core.slogdet(A, method="stochastic", backend="scipy", probes=48, seed=0)
    assert result.logabsdet.shape == result.standard_error.shape == result.sign.shape == (2,)
    assert bool((_z(result.logabsdet.detach(), torch.linalg.slogdet(dense).logabsdet, result.standard_error) < 4).all())
    result.logabsdet.sum().backward()
    assert A.grad.layout == A.layout
    for member in range(2):
        D = dense[member]
        mask = D != 0
        bound = tsgu_core.selected_inverse(D.to_sparse_csr(), method="stochastic", probes=48, seed=9).standard_error
        grad = A.grad.to_dense()[member][mask]
        # + the gradient solves' own error (CG at rtol=1e-8), where an entry's estimate is exact (SE 0)
        assert bool(((grad - torch.linalg.inv(D)[mask]).abs() <= 4.5 * bound.to_dense()[mask] + 1e-6).all())
    value, error = tsgu_core.diagonal_of_inverse(A.detach(), method="stochastic", backend="scipy", seed=1)
    assert value.shape == error.shape == (2, dense.shape[-1])
    exact = torch.linalg.inv(dense).diagonal(dim1=-2, dim2=-1)
    assert bool(((value - exact).abs() <= 4.5 * error + 1e-6).all())


def test_batch_members_get_independent_probes():
    """One generator for the whole batch: two equal members get different probes, so different estimates."""
    D = random_spd(12, seed=3)
    A = torch.stack([D, D]).to_sparse_csr()
    logabsdet = tsgu_core.slogdet(A, method="stochastic", backend="scipy", probes=8, seed=0).logabsdet
    assert float(logabsdet[0]) != float(logabsdet[1])
    value = tsgu_core.diagonal_of_inverse(A, method="stochastic", backend="scipy", probes=8, seed=0).value
    assert not torch.equal(value[0], value[1])
    single = tsgu_core.slogdet(D.to_sparse_csr(), method="stochastic", backend="scipy", probes=8, seed=0).logabsdet
    torch.testing.assert_close(logabsdet[0], single)  # the first member draws first
