"""The worked GMRF example (issue 24, item 5): its likelihood, gradient, simulation, fit and demo.

Every number is checked against dense torch: ``MultivariateNormal`` with the
covariance ``A Q⁻¹ Aᵀ + σ² I`` built from a dense ``Q``, its autograd gradient
and Hessian, and the dense ``Q⁻¹`` for the field's covariance and variances.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tsgu_core.cli import main
from tsgu_core.errors import InvalidArgumentError
from tsgu_core.examples.gmrf import (
    MaternGMRF,
    fit,
    grid_laplacian,
    kappa_tau,
    observed_information,
    range_variance,
    summary,
)


def dense_laplacian(m):
    """The 5-point graph Laplacian built node by node, independently of the example's scipy assembly."""
    n = m * m
    L = torch.zeros(n, n, dtype=torch.float64)
    for i in range(m):
        for j in range(m):
            for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                if 0 <= i + di < m and 0 <= j + dj < m:
                    L[i * m + j, (i + di) * m + j + dj] = -1
                    L[i * m + j, i * m + j] += 1
    return L


def dense_log_likelihood(model, theta, y):
    """``log N(y; 0, A Q⁻¹ Aᵀ + σ² I)`` with ``Q = τ²(κ²I + Δ)²`` formed densely from ``θ``."""
    kappa, tau, sigma = torch.exp(theta)
    K = kappa**2 * torch.eye(model.n, dtype=torch.float64) + dense_laplacian(model.m)
    Q = tau**2 * K @ K
    nodes = model.observed_nodes
    covariance = torch.linalg.inv(Q)[nodes][:, nodes] + sigma**2 * torch.eye(model.n_obs, dtype=torch.float64)
    zero = torch.zeros(model.n_obs, dtype=torch.float64)
    return torch.distributions.MultivariateNormal(zero, covariance_matrix=covariance).log_prob(y)


def test_grid_laplacian_is_the_graph_laplacian():
    assert torch.equal(torch.from_numpy(grid_laplacian(5).toarray()), dense_laplacian(5))


@pytest.mark.parametrize("observed", [1.0, 0.45])
@pytest.mark.parametrize("theta", [[-0.5, 0.3, -0.4], [0.7, -1.2, 0.9], [-2.0, 1.5, -1.5]])
def test_log_likelihood_and_gradient_match_the_dense_gaussian(observed, theta):
    model = MaternGMRF(m=6, practical_range=4.0, observed=observed, seed=3)
    y = model.simulate().y.clone().requires_grad_()
    theta = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    value = model.log_likelihood(theta, y)
    gradient = torch.autograd.grad(value, (theta, y))
    reference_theta = theta.detach().clone().requires_grad_()
    reference_y = y.detach().clone().requires_grad_()
    reference = dense_log_likelihood(model, reference_theta, reference_y)
    expected = torch.autograd.grad(reference, (reference_theta, reference_y))
    torch.testing.assert_close(value, reference, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gradient[0], expected[0], rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(gradient[1], expected[1], rtol=1e-8, atol=1e-9)


def test_precision_and_K_are_the_dense_matrices():
    model = MaternGMRF(m=5, practical_range=3.0)
    theta = torch.tensor([0.2, -0.3, 0.0], dtype=torch.float64)
    kappa, tau = math.exp(0.2), math.exp(-0.3)
    K = kappa**2 * torch.eye(25, dtype=torch.float64) + dense_laplacian(5)
    torch.testing.assert_close(model.K(theta).to_dense(), K)
    torch.testing.assert_close(model.precision(theta).to_dense(), tau**2 * K @ K)


def test_the_observed_information_is_the_dense_hessian():
    model = MaternGMRF(m=5, practical_range=3.0, observed=0.6, seed=1)
    y = model.simulate().y
    theta = torch.tensor([-0.3, 0.4, -0.6], dtype=torch.float64)
    hessian = torch.autograd.functional.hessian(lambda t: dense_log_likelihood(model, t, y), theta)
    torch.testing.assert_close(observed_information(model, theta, y), -hessian, rtol=1e-5, atol=1e-6)


def test_the_simulated_field_has_covariance_Q_inverse():
    """``x = τ⁻¹ K⁻¹ z`` for 40 000 draws of ``z``: the empirical covariance is ``Q⁻¹`` within sampling error."""
    model = MaternGMRF(m=4, practical_range=3.0, variance=2.0)
    theta = model.theta_true
    z = torch.randn(model.n, 40_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = model.field(theta, z)
    empirical = x @ x.T / z.shape[1]
    exact = torch.linalg.inv(model.precision(theta).to_dense())
    # sampling error of a covariance entry: √((Σ_ii Σ_jj + Σ_ij²)/N) ≤ √(2/N)·max Σ_ii; 5 of those
    scale = exact.diagonal().max() * math.sqrt(2 / z.shape[1])
    assert (empirical - exact).abs().max() < 5 * scale
    assert (empirical - exact).abs().max() > 0  # a draw, not the exact matrix


def test_simulate_is_reproducible_and_observes_the_requested_fraction():
    model = MaternGMRF(m=10, observed=0.3, seed=5)
    first, second = model.simulate(), model.simulate()
    assert torch.equal(first.y, second.y) and torch.equal(first.x, second.x)
    assert model.n_obs == 30 and torch.equal(first.observed, torch.unique(first.observed))
    assert not torch.equal(first.y, first.x[first.observed])  # noise was added
    assert not torch.equal(MaternGMRF(m=10, observed=0.3, seed=6).simulate().x, first.x)


def test_marginal_variance_is_exact_and_near_the_formula_inside():
    model = MaternGMRF(m=6, practical_range=3.0)
    theta = model.theta_true
    dense = torch.linalg.inv(model.precision(theta).to_dense()).diagonal()
    torch.testing.assert_close(model.marginal_variance(theta), dense)
    # far from the boundary and with a range of many grid units, 1/(4πκ²τ²) is close (1.3% at range 20, m = 121)
    wide = MaternGMRF(m=41, practical_range=8.0, variance=1.0)
    variance = wide.marginal_variance(wide.theta_true).reshape(41, 41)
    assert abs(float(variance[20, 20]) - 1.0) < 0.08
    assert 1.7 < float(variance[0, 20]) < 2.2  # zero-flux boundary: about twice the variance along an edge


@pytest.mark.parametrize(
    "arguments",
    [{"m": 1}, {"observed": 0.0}, {"observed": 1.5}, {"noise": 0.0}, {"practical_range": -1.0},
     {"variance": float("nan")}],
)  # fmt: skip
def test_bad_model_arguments_are_typed_errors(arguments):
    with pytest.raises(InvalidArgumentError, match="must be > 0|need m ≥ 2"):
        MaternGMRF(**arguments)


def test_the_parameterisation_round_trips():
    kappa, tau = kappa_tau(12.0, 0.7)
    theta = torch.tensor([math.log(kappa), math.log(tau), 0.0], dtype=torch.float64)
    rho, variance = range_variance(theta)
    assert math.isclose(rho, 12.0) and math.isclose(variance, 0.7)
    assert math.isclose(kappa * rho, math.sqrt(8))


def _check_recovery(model, result):
    z = (result.theta - model.theta_true) / result.standard_errors
    assert (z.abs() < 3).all(), z
    assert torch.linalg.eigvalsh(result.information).min() > 0  # a maximum
    theta = result.theta.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(model.log_likelihood(theta, model.simulate().y), theta)
    assert gradient.abs().max() < 1e-2 * result.information.diagonal().sqrt().min()  # stationary on the SE scale
    assert result.log_likelihood >= max(result.trace) - 1e-8 and result.log_likelihood > result.trace[0]


def test_fit_recovers_the_parameters_on_a_small_grid():
    model = MaternGMRF(m=16, practical_range=4.0, seed=0)
    result = fit(model, model.simulate().y)
    assert result.converged
    _check_recovery(model, result)


def test_a_fit_stopped_early_says_it_has_not_converged(capsys):
    model = MaternGMRF(m=10, practical_range=4.0, seed=0)
    result = fit(model, model.simulate().y, iterations=1)
    assert not result.converged and result.iterations == 1
    assert main(["demo", "--problem", "gmrf", "--size", "10", "--range", "4", "--iterations", "1", "-q"]) == 1
    assert "did not reach the maximum within 1 iterations" in capsys.readouterr().err


def test_the_posterior_mean_is_the_dense_one():
    model = MaternGMRF(m=6, practical_range=3.0, observed=0.5, seed=2)
    y = model.simulate().y
    theta = torch.tensor([0.1, -0.2, -0.5], dtype=torch.float64)
    A = torch.eye(model.n, dtype=torch.float64)[model.observed_nodes]
    noise = math.exp(-2 * -0.5)
    posterior = model.precision(theta).to_dense() + noise * A.T @ A
    torch.testing.assert_close(model.posterior_mean(theta, y), torch.linalg.solve(posterior, noise * A.T @ y))


@pytest.mark.slow
def test_fit_recovers_the_parameters_on_a_40_by_40_grid():
    model = MaternGMRF(m=40, practical_range=8.0, seed=0)
    result = fit(model, model.simulate().y)
    _check_recovery(model, result)
    rows = {name: (truth, estimate, error) for name, truth, estimate, error in summary(model, result)}
    truth, estimate, error = rows["range ρ = √8/κ"]
    assert truth == pytest.approx(8.0) and abs(estimate - truth) < 3 * error


def tsgu(*args):
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "tsgu_core.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=environment, check=False)


def test_the_demo_fits_a_gmrf(capsys):
    """In-process (a subprocess's imports cost more than the fit): the figure's run below is a subprocess."""
    assert main(["demo", "--problem", "gmrf", "--size", "12", "--range", "4", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tsgu demo: fit a Matérn GMRF on a 12×12 grid (n = 144) to 72 noisy")
    rows = {line[:28].strip(): line[28:].split() for line in lines[2:8]}
    assert set(rows) == {"log κ", "log τ", "log σ", "range ρ = √8/κ", "variance σx² = 1/(4πκ²τ²)", "noise σ"}
    assert float(rows["log σ"][0]) == pytest.approx(math.log(0.5), abs=1e-4)
    assert float(rows["range ρ = √8/κ"][0]) == pytest.approx(4.0, abs=1e-4)
    assert "L-BFGS iterations" in lines[8] and "standard errors" in lines[9]
    assert "of the truth (largest |error|/SE" in lines[-1]


@pytest.mark.slow
def test_the_demo_draws_the_figure(tmp_path):
    result = tsgu("demo", "--problem", "gmrf", "--size", "16", "--range", "4", "--quiet", "--plot",
                  str(tmp_path / "g.png"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("parameter") and (tmp_path / "g.png").stat().st_size > 10_000


def test_the_demo_refuses_options_of_the_other_problem():
    result = tsgu("demo", "--problem", "gmrf", "--sources", "3")
    assert result.returncode == 2 and "--sources applies to --problem diffusion only" in result.stderr
    result = tsgu("demo", "--observed", "0.5")
    assert result.returncode == 2 and "--observed applies to --problem gmrf only" in result.stderr
    for option, value in (("--observed", "1.5"), ("--noise", "nan"), ("--range", "0")):
        result = tsgu("demo", "--problem", "gmrf", option, value)
        assert result.returncode == 2 and "--observed in (0, 1]" in result.stderr, (option, result.stderr)


@pytest.mark.slow
def test_the_docs_figure_script_runs(tmp_path):
    script = Path(__file__).resolve().parent.parent / "docs" / "figures" / "gmrf_figure.py"
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, str(script), "--size", "16", "--out", str(tmp_path / "f.png")]
    result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    assert result.returncode == 0, result.stderr
    assert "| log κ |" in result.stdout and (tmp_path / "f.png").stat().st_size > 10_000


def test_the_likelihood_is_bayes_rule_with_the_gmrf_distribution():
    """``log p(y) = log p(x) + log p(y | x) − log p(x | y)`` at ``x = μ_p``, each term a GaussianMarkovRandomField
    (or Normal) ``log_prob`` — the distribution and the example's closed form, gradients included."""
    from tsgu_core.distributions import GaussianMarkovRandomField

    model = MaternGMRF(m=7, practical_range=3.0, observed=0.6, seed=5)
    y = model.simulate().y
    theta = torch.tensor([-0.3, 0.2, -0.6], dtype=torch.float64, requires_grad=True)
    value = model.log_likelihood(theta, y)
    (gradient,) = torch.autograd.grad(value, theta)

    reference_theta = theta.detach().clone().requires_grad_()
    sigma = torch.exp(reference_theta[2])
    Q = model.precision(reference_theta)
    nodes = model.observed_nodes
    selector = torch.zeros(model.n, dtype=torch.float64).index_fill(0, nodes, 1.0)
    posterior = (
        Q + torch.sparse_coo_tensor(torch.arange(model.n).repeat(2, 1), selector / sigma**2, Q.shape)
    ).coalesce()
    b = torch.zeros(model.n, dtype=torch.float64).index_put((nodes,), y) / sigma**2
    field_given_y = GaussianMarkovRandomField.from_canonical(b, posterior)
    mean = field_given_y.mean
    prior = GaussianMarkovRandomField(torch.zeros(model.n, dtype=torch.float64), Q)
    likelihood = torch.distributions.Normal(mean[nodes], sigma).log_prob(y).sum()
    reference = prior.log_prob(mean) + likelihood - field_given_y.log_prob(mean)
    (expected,) = torch.autograd.grad(reference, reference_theta)
    torch.testing.assert_close(value, reference, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gradient, expected, rtol=1e-8, atol=1e-9)
