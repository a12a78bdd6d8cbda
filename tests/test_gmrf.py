"""GaussianMarkovRandomField against torch's dense MultivariateNormal (float64, SPD precisions, COO and CSR)."""

import math
from unittest import mock

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch.distributions import MultivariateNormal

import tsgu_core
from tsgu_backends.scipy_cupy_backend.sampling import factorize_ldlt
from tsgu_backends.scipy_cupy_backend.scipy_backend import ScipyBackend
from tsgu_core import (
    InvalidArgumentError,
    NonFiniteError,
    NotPositiveDefiniteError,
    StaleFactorizationError,
    StructureError,
    UnknownMethodError,
    UnsupportedDeviceError,
)
from tsgu_core.distributions import GaussianMarkovRandomField
from tsgu_core.testing import to_layout

LAYOUTS = ["coo", "csr"]
F64 = torch.float64


def random_spd(n: int, seed: int, density: float = 0.05) -> torch.Tensor:
    """``B Bᵀ + 0.1 I`` for a sparse random ``B`` with a unit diagonal: SPD, sparse, not diagonally dominant."""
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(n, n, generator=g, dtype=F64) * (torch.rand(n, n, generator=g) < density) + torch.eye(n, dtype=F64)
    return B @ B.T + 0.1 * torch.eye(n, dtype=F64)


def _dense_log_prob(loc: torch.Tensor, D: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``−½(n log 2π − log det D + rᵀ D r)`` with D as an unsymmetrised dense matrix (each entry its own variable)."""
    r = x - loc
    n = D.shape[-1]
    quadratic = torch.einsum("...i,...ij,...j->...", r, D, r)
    return -0.5 * (n * math.log(2 * math.pi) - torch.linalg.slogdet(D).logabsdet + quadratic)


def _sym(G: torch.Tensor) -> torch.Tensor:
    """``G + Gᵀ`` off the diagonal, ``G`` on it: what a symmetric perturbation of a pair of entries sees."""
    return G + G.mT - torch.diag_embed(torch.diagonal(G, dim1=-2, dim2=-1))


# --- the backend's factor -----------------------------------------------------------------------------


def test_superlu_in_symmetric_mode_without_pivoting_is_an_ldlt_factor():
    """The idea the ldlt method rests on: perm_r == perm_c, L U = P Q Pᵀ and U = D Lᵀ on a random sparse SPD Q."""
    Q = sp.csc_matrix(random_spd(120, seed=3).numpy())
    state = factorize_ldlt(Q, {})
    lu = state.lu
    assert np.array_equal(lu.perm_r, lu.perm_c)
    p = lu.perm_c
    P = sp.csc_matrix((np.ones(120), (p, np.arange(120))), shape=(120, 120))  # (P x)[p[i]] = x[i]
    np.testing.assert_allclose((lu.L @ lu.U).toarray(), (P @ Q @ P.T).toarray(), atol=1e-12)
    d = lu.U.diagonal()
    np.testing.assert_allclose(lu.U.toarray(), np.diag(d) @ lu.L.T.toarray(), atol=1e-12)
    assert (d > 0).all()
    S = state.precision_sample(torch.eye(120, dtype=F64)).numpy()  # S itself
    np.testing.assert_allclose(S @ S.T, np.linalg.inv(Q.toarray()), atol=1e-10)


def test_the_factor_refuses_an_indefinite_matrix_and_a_zero_pivot():
    with pytest.raises(NotPositiveDefiniteError, match="pivot"):
        factorize_ldlt(sp.csc_matrix(np.diag([1.0, -2.0, 3.0])), {})
    with pytest.raises(NotPositiveDefiniteError, match="zero pivot"):
        factorize_ldlt(sp.csc_matrix(np.array([[0.0, 1.0], [1.0, 0.0]])), {})


# --- log_prob -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n", [50, 300])
def test_log_prob_and_gradients_match_dense(layout, n):
    D = random_spd(n, seed=n, density=0.05 if n == 50 else 0.006)
    g = torch.Generator().manual_seed(1)
    loc = torch.randn(n, generator=g, dtype=F64).requires_grad_()
    x = torch.randn(3, n, generator=g, dtype=F64).requires_grad_()
    Q = to_layout(D, layout).requires_grad_()
    field = GaussianMarkovRandomField(loc, Q)
    log_prob = field.log_prob(x)
    weights = torch.tensor([1.0, -0.5, 2.0], dtype=F64)
    (log_prob * weights).sum().backward()

    loc_ref, x_ref = loc.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    D_ref = D.clone().requires_grad_()
    reference = MultivariateNormal(loc_ref, precision_matrix=D)
    torch.testing.assert_close(log_prob, reference.log_prob(x_ref), rtol=1e-10, atol=1e-9)
    (reference.log_prob(x_ref) * weights).sum().backward()
    torch.testing.assert_close(loc.grad, loc_ref.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-9, atol=1e-9)

    (_dense_log_prob(loc.detach(), D_ref, x.detach()) * weights).sum().backward()
    assert Q.grad is not None and Q.grad.layout == Q.layout
    stored = D != 0
    torch.testing.assert_close(Q.grad.to_dense(), D_ref.grad * stored, rtol=1e-8, atol=1e-9)

    # torch's MultivariateNormal differentiates through a Cholesky factor (one triangle): compare what a
    # symmetric perturbation sees, G_ij + G_ji
    D_mvn = D.clone().requires_grad_()
    (MultivariateNormal(loc.detach(), precision_matrix=D_mvn).log_prob(x.detach()) * weights).sum().backward()
    torch.testing.assert_close(_sym(Q.grad.to_dense()), _sym(D_mvn.grad) * stored, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradcheck_log_prob(layout):
    n = 7
    D = random_spd(n, seed=11, density=0.3)
    template = to_layout(D, layout)
    coo = template.to_sparse_coo().coalesce() if layout == "csr" else template
    rows, cols = coo.indices()
    key = torch.minimum(rows, cols) * n + torch.maximum(rows, cols)
    unique, index = torch.unique(key, return_inverse=True)
    first = torch.full((unique.numel(),), -1, dtype=torch.int64).scatter_(0, index, torch.arange(index.numel()))
    p = coo.values()[first].clone().requires_grad_()  # one parameter per symmetric pair: Q stays symmetric

    def build(params):
        values = params[index]
        if layout == "coo":
            return torch.sparse_coo_tensor(coo.indices(), values, (n, n), is_coalesced=True)
        return torch.sparse_csr_tensor(template.crow_indices(), template.col_indices(), values, (n, n))

    g = torch.Generator().manual_seed(2)
    loc = torch.randn(n, generator=g, dtype=F64).requires_grad_()
    x = torch.randn(2, n, generator=g, dtype=F64).requires_grad_()

    def log_prob(params, loc, x):
        return GaussianMarkovRandomField(loc, build(params)).log_prob(x)

    assert torch.autograd.gradcheck(log_prob, (p, loc, x))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_second_derivatives_in_loc_and_value(layout):
    """The Hessian of log_prob in loc is −Q (for a fixed precision), and gradgradcheck passes in loc and value."""
    D = random_spd(6, seed=12, density=0.3)
    Q = to_layout(D, layout)
    x = torch.randn(2, 6, dtype=F64)
    hessian = torch.autograd.functional.hessian(
        lambda loc: GaussianMarkovRandomField(loc, Q).log_prob(x).sum(), torch.zeros(6, dtype=F64)
    )
    torch.testing.assert_close(hessian, -2 * D)
    loc = torch.randn(6, dtype=F64, requires_grad=True)
    value = x.clone().requires_grad_()
    assert torch.autograd.gradgradcheck(lambda m, v: GaussianMarkovRandomField(m, Q).log_prob(v), (loc, value))


def test_log_determinant_is_computed_once_and_one_factorization_serves_everything():
    D = random_spd(40, seed=5)
    field = GaussianMarkovRandomField(torch.zeros(40, dtype=F64), D.to_sparse_csr(), validate_args=False)
    with mock.patch.object(ScipyBackend, "prepare", autospec=True, side_effect=ScipyBackend.prepare) as prepare:
        field.log_prob(torch.zeros(40, dtype=F64))
        field.log_prob(torch.ones(2, 40, dtype=F64))
        assert field.log_determinant() is field.log_determinant()
        assert field.variance.shape == (40,)
        field.rsample((3,))
        field.entropy()
    assert prepare.call_count == 1


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_field_made_under_no_grad_still_gives_the_precision_its_gradient(layout):
    """Made, and its log-density computed, under no_grad; then log_prob with grad: the full gradient, not none."""
    D = random_spd(10, seed=6)
    x = torch.randn(10, dtype=F64)
    Q = to_layout(D, layout).requires_grad_()
    with torch.no_grad():
        field = GaussianMarkovRandomField(torch.zeros(10, dtype=F64), Q)
        field.log_prob(x)
    field.log_prob(x).backward()
    D_ref = D.clone().requires_grad_()
    _dense_log_prob(torch.zeros(10, dtype=F64), D_ref, x).backward()
    assert Q.grad is not None
    torch.testing.assert_close(Q.grad.to_dense(), D_ref.grad * (D != 0), rtol=1e-9, atol=1e-10)
    field.log_prob(x).backward()  # the kept graph serves a second backward pass, accumulating
    torch.testing.assert_close(Q.grad.to_dense(), 2 * D_ref.grad * (D != 0), rtol=1e-9, atol=1e-10)
    Q.grad = None
    made_with_grad = GaussianMarkovRandomField(torch.zeros(10, dtype=F64), Q)
    with torch.no_grad():
        made_with_grad.entropy()  # a log-determinant without a graph, kept
    made_with_grad.log_prob(x).backward()
    torch.testing.assert_close(Q.grad.to_dense(), D_ref.grad * (D != 0), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_precision_changed_in_place_is_refused_not_read_stale(layout):
    Q = to_layout(random_spd(8, seed=18), layout).requires_grad_()
    field = GaussianMarkovRandomField(torch.zeros(8, dtype=F64), Q)
    field.log_prob(torch.zeros(8, dtype=F64)).backward()
    torch.optim.SGD([Q], lr=1e-3).step()  # changes Q's values in place
    for use in (lambda: field.log_prob(torch.zeros(8, dtype=F64)), field.entropy, field.sample, lambda: field.variance):
        with pytest.raises(StaleFactorizationError, match="changed in place"):
            use()


@pytest.mark.parametrize("scale", [1e-150, 1e150])
def test_a_badly_scaled_precision_gives_finite_right_numbers(scale):
    """det Q under- or overflows float64 (1e∓3000); log det, log_prob, variance and samples stay right."""
    D = random_spd(20, seed=19) * scale
    x = torch.randn(3, 20, dtype=F64) / math.sqrt(scale)
    field = GaussianMarkovRandomField(torch.zeros(20, dtype=F64), D.to_sparse_csr())
    torch.testing.assert_close(field.log_prob(x), _dense_log_prob(torch.zeros(20, dtype=F64), D, x), rtol=1e-12, atol=0)
    torch.testing.assert_close(field.variance, torch.linalg.inv(D).diagonal(), rtol=1e-10, atol=0)
    S = field._precision.sample_columns(0, torch.eye(20, dtype=F64))
    torch.testing.assert_close(S.T @ D @ S, torch.eye(20, dtype=F64), rtol=0, atol=1e-10)


# --- entropy, variance, batches ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_entropy_variance_and_stddev_match_dense(layout):
    D = random_spd(60, seed=7)
    field = GaussianMarkovRandomField(torch.zeros(60, dtype=F64), to_layout(D, layout))
    reference = MultivariateNormal(torch.zeros(60, dtype=F64), precision_matrix=D)
    torch.testing.assert_close(field.entropy(), reference.entropy(), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(field.variance, reference.variance, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(field.stddev, reference.stddev, rtol=1e-10, atol=1e-12)
    assert torch.equal(field.mean, torch.zeros(60, dtype=F64))
    assert field.batch_shape == () and field.event_shape == (60,)


def _batch(layout: str, shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A (3, n, n) precision batch, dense and sparse: one shared pattern, or one pattern per member (COO)."""
    n = 20
    if shared:
        base = random_spd(n, seed=1, density=0.1) != 0
        members = [random_spd(n, seed=1, density=0.1) * (1.0 + 0.1 * k) + k * torch.eye(n, dtype=F64) for k in range(3)]
        dense = torch.stack(members) * base
    else:
        dense = torch.stack([random_spd(n, seed=s, density=0.1) for s in (1, 2, 3)])
    if layout == "coo":
        return dense, dense.to_sparse()
    return dense, dense.to_sparse_csr()


@pytest.mark.parametrize(
    ("layout", "shared"), [("coo", True), ("csr", True), ("coo", False)], ids=["coo", "csr", "coo-patterns"]
)
def test_batched_precision_matches_dense_batch(layout, shared):
    dense, Q = _batch(layout, shared)
    Q = Q.requires_grad_()
    n = dense.shape[-1]
    g = torch.Generator().manual_seed(4)
    loc = torch.randn(n, generator=g, dtype=F64)  # broadcast over the batch
    x = torch.randn(5, 1, n, generator=g, dtype=F64)
    field = GaussianMarkovRandomField(loc, Q)
    assert field.batch_shape == (3,) and field.event_shape == (n,)
    reference = MultivariateNormal(loc, precision_matrix=dense)
    log_prob = field.log_prob(x)
    assert log_prob.shape == (5, 3)
    torch.testing.assert_close(log_prob, reference.log_prob(x), rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(field.entropy(), reference.entropy(), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(field.variance, reference.variance, rtol=1e-10, atol=1e-12)
    assert field.rsample((4,)).shape == (4, 3, n)
    log_prob.sum().backward()
    D_ref = dense.clone().requires_grad_()
    _dense_log_prob(loc, D_ref, x).sum().backward()
    torch.testing.assert_close(Q.grad.to_dense(), D_ref.grad * (dense != 0), rtol=1e-8, atol=1e-9)


def test_expand_shares_the_factor_and_broadcasts():
    D = random_spd(10, seed=8)
    field = GaussianMarkovRandomField(torch.zeros(10, dtype=F64), D.to_sparse())
    wide = field.expand((4,))
    assert wide.batch_shape == (4,) and wide.loc.shape == (4, 10)
    assert wide.log_determinant() is field.log_determinant()
    reference = MultivariateNormal(torch.zeros(4, 10, dtype=F64), precision_matrix=D)
    x = torch.randn(4, 10, dtype=F64)
    torch.testing.assert_close(wide.log_prob(x), reference.log_prob(x), rtol=1e-10, atol=1e-10)
    assert wide.entropy().shape == (4,) and wide.variance.shape == (4, 10) and wide.rsample((2,)).shape == (2, 4, 10)


# --- sampling -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sample_moments_match_the_field(layout):
    """Mean and covariance of 40 000 draws within 5 standard errors (fixed seed) of μ and Q⁻¹."""
    D = torch.tensor(
        [[2.0, -0.8, 0.0, 0.3], [-0.8, 1.5, 0.4, 0.0], [0.0, 0.4, 1.0, -0.2], [0.3, 0.0, -0.2, 0.7]], dtype=F64
    )
    loc = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)
    field = GaussianMarkovRandomField(loc, to_layout(D, layout))
    torch.manual_seed(0)
    N = 40_000
    samples = field.sample((N,))
    assert samples.shape == (N, 4) and not samples.requires_grad
    covariance = torch.linalg.inv(D)
    mean_error = (samples.mean(0) - loc).abs() / (covariance.diagonal() / N).sqrt()
    assert float(mean_error.max()) < 5.0
    centred = samples - samples.mean(0)
    empirical = centred.T @ centred / (N - 1)
    standard_error = ((covariance.diagonal()[:, None] * covariance.diagonal()[None, :] + covariance**2) / N).sqrt()
    assert float(((empirical - covariance).abs() / standard_error).max()) < 5.0


def test_samples_are_the_factor_applied_to_standard_normals():
    """x = μ + S z with S Sᵀ = Q⁻¹, exactly: the same seed gives the same z, and Sᵀ Q S = I."""
    D = random_spd(30, seed=9)
    loc = torch.randn(30, dtype=F64)
    field = GaussianMarkovRandomField(loc, D.to_sparse_csr())
    torch.manual_seed(3)
    x = field.sample((500,))
    torch.manual_seed(3)
    z = torch.randn(500, 30, dtype=F64)
    S = field._precision.sample_columns(0, torch.eye(30, dtype=F64))
    torch.testing.assert_close(S.T @ D @ S, torch.eye(30, dtype=F64), rtol=0, atol=1e-10)
    torch.testing.assert_close(x, loc + z @ S.T, rtol=1e-12, atol=1e-12)


def test_rsample_is_reparameterised_in_loc():
    D = random_spd(12, seed=10)
    loc = torch.randn(12, dtype=F64).requires_grad_()
    field = GaussianMarkovRandomField(loc, D.to_sparse())
    x = field.rsample((6,))
    weights = torch.randn(6, 12, dtype=F64)
    (x * weights).sum().backward()
    torch.testing.assert_close(loc.grad, weights.sum(0))


def test_a_precision_gradient_through_rsample_or_variance_is_refused_not_zero():
    D = random_spd(12, seed=10)
    Q = D.to_sparse_csr().requires_grad_()
    loc = torch.zeros(12, dtype=F64, requires_grad=True)
    field = GaussianMarkovRandomField(loc, Q)
    with pytest.raises(InvalidArgumentError, match="reparameterised in loc only"):
        field.rsample((2,)).sum().backward()
    with pytest.raises(InvalidArgumentError, match="not differentiable with respect to the precision"):
        field.variance.sum().backward()
    assert Q.grad is None
    with torch.no_grad():
        made_without_grad = GaussianMarkovRandomField(loc, Q)
    with pytest.raises(InvalidArgumentError, match="not differentiable with respect to the precision"):
        made_without_grad.variance.sum().backward()
    with pytest.raises(InvalidArgumentError, match="reparameterised in loc only"):
        made_without_grad.rsample().sum().backward()
    detached = GaussianMarkovRandomField(loc, Q.detach())  # the documented way: loc's gradient stays
    detached.rsample((2,)).sum().backward()
    torch.testing.assert_close(loc.grad, torch.full((12,), 2.0, dtype=F64))


# --- refusals -----------------------------------------------------------------------------------------


def _indefinite_with_positive_determinant(n: int = 8) -> torch.Tensor:
    """Symmetric with a positive diagonal and two negative eigenvalues: det > 0, so only a factorization exposes it."""
    dense = random_spd(n, seed=12, density=0.2)
    block = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=F64)  # eigenvalues 3 and −1
    dense[:4, :] = 0.0
    dense[:, :4] = 0.0
    dense[:2, :2], dense[2:4, 2:4] = block, block
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    dense = dense[order][:, order]
    assert torch.linalg.slogdet(dense).sign == 1 and bool((dense.diagonal() > 0).all())
    assert int((torch.linalg.eigvalsh(dense) < 0).sum()) == 2
    return dense


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_precision_that_is_not_positive_definite_is_refused(layout):
    bad = to_layout(_indefinite_with_positive_determinant(), layout)
    with pytest.raises(NotPositiveDefiniteError, match="not positive definite"):
        GaussianMarkovRandomField(torch.zeros(8, dtype=F64), bad, validate_args=True)
    # unvalidated: nothing is factorized at construction, and the first number asked for is refused instead
    field = GaussianMarkovRandomField(torch.zeros(8, dtype=F64), bad, validate_args=False)
    for use in (lambda: field.log_prob(torch.zeros(8, dtype=F64)), lambda: field.entropy(), lambda: field.sample()):
        with pytest.raises(NotPositiveDefiniteError):
            use()
    laplacian = to_layout(torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=F64), layout)  # singular PSD
    with pytest.raises(NotPositiveDefiniteError):
        GaussianMarkovRandomField(torch.zeros(2, dtype=F64), laplacian, validate_args=True)
    negative_diagonal = to_layout(-torch.eye(3, dtype=F64), layout)
    with pytest.raises(NotPositiveDefiniteError):
        GaussianMarkovRandomField(torch.zeros(3, dtype=F64), negative_diagonal, validate_args=False).entropy()


def test_a_nonsymmetric_precision_is_refused():
    D = random_spd(10, seed=13)
    D[0, 1] += 0.5
    with pytest.raises(NotPositiveDefiniteError, match="not symmetric"):
        GaussianMarkovRandomField(torch.zeros(10, dtype=F64), D.to_sparse_csr(), validate_args=True)
    field = GaussianMarkovRandomField(torch.zeros(10, dtype=F64), D.to_sparse(), validate_args=False)
    with pytest.raises(StructureError):  # NotPositiveDefiniteError is one
        field.log_prob(torch.zeros(10, dtype=F64))


def test_nan_in_the_precision_is_refused():
    D = random_spd(6, seed=14)
    D[2, 2] = float("nan")
    with pytest.raises(NonFiniteError):
        GaussianMarkovRandomField(torch.zeros(6, dtype=F64), D.to_sparse(), validate_args=False)


def test_a_backend_or_method_without_the_capability_is_refused_with_the_ones_that_have_it():
    Q = random_spd(6, seed=15).to_sparse_csr()
    with pytest.raises(UnsupportedDeviceError, match="scipy"):
        GaussianMarkovRandomField(torch.zeros(6, dtype=F64), Q, backend="torch")
    with pytest.raises(UnknownMethodError, match="ldlt"):
        GaussianMarkovRandomField(torch.zeros(6, dtype=F64), Q, backend="scipy", method="splu")
    from tsgu_core.testing import DenseBackend

    with pytest.raises(UnsupportedDeviceError, match="Gaussian sampling"):  # a backend object, unregistered
        GaussianMarkovRandomField(torch.zeros(6, dtype=F64), Q, backend=DenseBackend())


def test_float32():
    D = random_spd(40, seed=16)
    loc, x = torch.randn(40, dtype=F64), torch.randn(3, 40, dtype=F64)
    field = GaussianMarkovRandomField(loc.float(), D.float().to_sparse_csr())
    log_prob = field.log_prob(x.float())
    assert log_prob.dtype == torch.float32
    reference = MultivariateNormal(loc, precision_matrix=D).log_prob(x)
    torch.testing.assert_close(log_prob.double(), reference, rtol=1e-4, atol=1e-3)
    assert field.rsample((2,)).dtype == torch.float32 and field.variance.dtype == torch.float32


# --- canonical form ---------------------------------------------------------------------------------------


def test_from_canonical_solves_for_the_mean_differentiably():
    D = random_spd(15, seed=17)
    h = torch.randn(2, 15, dtype=F64).requires_grad_()
    x = torch.randn(15, dtype=F64)
    field = GaussianMarkovRandomField.from_canonical(h, D.to_sparse())
    torch.testing.assert_close(field.mean, torch.linalg.solve(D, h.detach().T).T)
    field.log_prob(x).sum().backward()
    h_ref = h.detach().clone().requires_grad_()
    MultivariateNormal(torch.linalg.solve(D, h_ref.T).T, precision_matrix=D).log_prob(x).sum().backward()
    torch.testing.assert_close(h.grad, h_ref.grad)


def test_from_canonical_with_a_batched_precision():
    dense, Q = _batch("csr", shared=True)
    h = torch.randn(3, dense.shape[-1], dtype=F64)
    field = GaussianMarkovRandomField.from_canonical(h, Q)
    assert field.batch_shape == (3,)
    torch.testing.assert_close(field.mean, torch.linalg.solve(dense, h.unsqueeze(-1)).squeeze(-1))


def test_public_names():
    assert tsgu_core.GaussianMarkovRandomField is GaussianMarkovRandomField
    assert issubclass(NotPositiveDefiniteError, StructureError)
    assert isinstance(tsgu_core.get_backend("scipy"), tsgu_core.SamplingBackend)


def test_tsgu_info_lists_the_capability(capsys):
    from tsgu_core.cli import main

    try:
        main(["info", "scipy"])
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    ldlt = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("- ldlt"))
    assert "[slogdet, selected inverse]" in ldlt and "[Gaussian sampling]" in ldlt and "assumes spd" in ldlt


def test_validation_follows_torch_default_and_is_never_skipped_silently():
    """torch.compile turns torch.distributions' default validation off process-wide
    (``Distribution.set_default_validate_args(False)`` in torch._dynamo); a non-SPD precision is then refused at
    first use instead of at construction — never a number."""
    bad = _indefinite_with_positive_determinant().to_sparse()
    default = torch.distributions.Distribution._validate_args
    try:
        torch.distributions.Distribution.set_default_validate_args(False)
        field = GaussianMarkovRandomField(torch.zeros(8, dtype=F64), bad)  # not validated now
        with pytest.raises(NotPositiveDefiniteError):
            field.log_prob(torch.zeros(8, dtype=F64))
        torch.distributions.Distribution.set_default_validate_args(True)
        with pytest.raises(NotPositiveDefiniteError):
            GaussianMarkovRandomField(torch.zeros(8, dtype=F64), bad)
    finally:
        torch.distributions.Distribution.set_default_validate_args(default)
