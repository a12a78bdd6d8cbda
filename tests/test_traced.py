"""tsgu inside torch.compile, torch.func and forward-mode AD (issue 12), against dense torch.linalg.solve.

Every check builds a nonsymmetric matrix, solves it through ``solve_values`` with a
:class:`SparsePattern` (from a COO or a CSR tensor) and compares with the same
transform applied to a dense solve of the same values — never with tsgu itself.
"""

import pytest
import torch
import torch.autograd.forward_ad as forward_ad

import tsgu_core
from tsgu_core import SparsePattern, solve, solve_values
from tsgu_core.engine.request import SolveRequest
from tsgu_core.engine.traced import CACHE, solve_op, traced_solve_values
from tsgu_core.errors import ConvergenceError, InvalidArgumentError, NonFiniteError, ShapeError
from tsgu_core.testing.matrices import to_layout

N = 8
BACKENDS = {"torch": "gmres", "scipy": "splu", "jax": "gmres"}
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _options(backend, dtype):
    if BACKENDS[backend] == "splu":
        return {}
    return {"rtol": 1e-12 if dtype == torch.float64 else 1e-6, "maxiter": 500}


def _tolerance(dtype):
    return {"rtol": 1e-7, "atol": 1e-8} if dtype == torch.float64 else {"rtol": 5e-3, "atol": 5e-3}


def _matrix(dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    D = torch.randn(N, N, generator=generator, dtype=torch.float64)
    D = D * (torch.rand(N, N, generator=generator) < 0.4) + 4 * torch.eye(N, dtype=torch.float64)
    D[0, N - 1], D[N - 1, 0] = 1.5, -0.5  # visibly nonsymmetric
    return D.to(dtype)


class Problem:
    """A nonsymmetric pattern + values, right-hand sides, and both the tsgu and the dense solve of them."""

    def __init__(self, backend, layout, dtype, rhs, seed=0):
        self.dtype = DTYPES[dtype]
        D = _matrix(self.dtype, seed)
        A = to_layout(D, layout)
        self.pattern = SparsePattern.of(A)
        self.values = (A.values() if layout == "csr" else A.coalesce().values()).clone()
        generator = torch.Generator().manual_seed(seed + 1)
        shape = (N,) if rhs == "vector" else (N, 3)
        self.B = torch.randn(shape, generator=generator, dtype=torch.float64).to(self.dtype)
        self.kwargs = {"backend": backend, "method": BACKENDS[backend], **_options(backend, self.dtype)}
        self.tolerance = _tolerance(self.dtype)

    def tsgu(self, values, B):
        return solve_values(self.pattern, values, B, **self.kwargs)

    def dense(self, values, B):
        matrix = torch.zeros(N, N, dtype=values.dtype).index_put((self.pattern.row, self.pattern.col), values)
        return torch.linalg.solve(matrix, B)

    def assert_same(self, transform):
        actual, expected = transform(self.tsgu), transform(self.dense)
        actual = actual if isinstance(actual, tuple) else (actual,)
        expected = expected if isinstance(expected, tuple) else (expected,)
        for a, e in zip(actual, expected, strict=True):
            torch.testing.assert_close(a, e, **self.tolerance)


def _weights(B):
    return torch.linspace(-1, 2, B.numel(), dtype=B.dtype).reshape(B.shape)


def _loss(solver, B):
    W = _weights(B)
    return lambda values, rhs: (solver(values, rhs) * W).sum()


TRANSFORMS = {
    "grad": lambda p: lambda f: torch.func.grad(_loss(f, p.B), argnums=(0, 1))(p.values, p.B),
    "vjp": lambda p: lambda f: torch.func.vjp(f, p.values, p.B)[1](_weights(p.B)),
    "jacrev": lambda p: lambda f: torch.func.jacrev(f, argnums=(0, 1))(p.values, p.B),
    "jacfwd": lambda p: lambda f: torch.func.jacfwd(f, argnums=(0, 1))(p.values, p.B),
    "jvp": lambda p: lambda f: torch.func.jvp(f, (p.values, p.B), (torch.ones_like(p.values), _weights(p.B))),
    "hessian-values": lambda p: lambda f: torch.func.hessian(lambda v: _loss(f, p.B)(v, p.B))(p.values),
    "hessian-B": lambda p: lambda f: torch.func.hessian(lambda b: f(p.values, b).square().sum())(p.B),
    "hvp": lambda p: (
        lambda f: torch.func.jvp(
            torch.func.grad(lambda v: f(v, p.B).square().sum()), (p.values,), (torch.ones_like(p.values),)
        )[1]
    ),
    "vmap-B": lambda p: lambda f: torch.func.vmap(lambda b: f(p.values, b))(torch.stack([p.B, 2 * p.B - 1, -p.B])),
    "vmap-values": lambda p: lambda f: torch.func.vmap(lambda v: f(v, p.B))(torch.stack([p.values, 1.1 * p.values])),
    "vmap-both": lambda p: (
        lambda f: torch.func.vmap(f)(torch.stack([p.values, 0.9 * p.values]), torch.stack([p.B, -p.B]))
    ),
    "vmap-grad": lambda p: (
        lambda f: torch.func.vmap(torch.func.grad(lambda b: f(p.values, b).square().sum()))(torch.stack([p.B, p.B + 1]))
    ),
    "per-sample-grad-values": lambda p: (
        lambda f: torch.func.vmap(torch.func.grad(lambda v: f(v, p.B).square().sum()))(
            torch.stack([p.values, 1.2 * p.values])
        )
    ),
}


# JAX compiles each new shape (~1 s): its COO patterns are covered by the conformance kit's "transforms" check
COMBINATIONS = [
    (backend, layout, rhs)
    for backend in sorted(BACKENDS)
    for layout in ("coo", "csr")
    for rhs in ("vector", "matrix")
    if backend != "jax" or layout == "csr"
]


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
@pytest.mark.parametrize(("backend", "layout", "rhs"), COMBINATIONS)
def test_torch_func_transforms_match_dense(backend, layout, rhs, transform):
    problem = Problem(backend, layout, "float64", rhs)
    problem.assert_same(TRANSFORMS[transform](problem))


@pytest.mark.parametrize("transform", ["grad", "jvp", "vmap-B", "vmap-values", "hvp"])
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_torch_func_in_float32(backend, transform):
    problem = Problem(backend, "csr", "float32", "matrix")
    problem.assert_same(TRANSFORMS[transform](problem))


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_forward_mode_ad_matches_dense(backend, layout):
    problem = Problem(backend, layout, "float64", "matrix")
    d_values, d_B = torch.ones_like(problem.values), _weights(problem.B)
    with forward_ad.dual_level():
        X = problem.tsgu(forward_ad.make_dual(problem.values, d_values), forward_ad.make_dual(problem.B, d_B))
        primal, tangent = forward_ad.unpack_dual(X)
    expected, expected_tangent = torch.func.jvp(problem.dense, (problem.values, problem.B), (d_values, d_B))
    torch.testing.assert_close(primal, expected, **problem.tolerance)
    torch.testing.assert_close(tangent, expected_tangent, **problem.tolerance)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_gradcheck_with_forward_ad(backend):
    problem = Problem(backend, "csr", "float64", "matrix")
    values, B = problem.values.clone().requires_grad_(), problem.B.clone().requires_grad_()
    atol = 1e-6 if backend == "scipy" else 1e-5
    assert torch.autograd.gradcheck(problem.tsgu, (values, B), atol=atol, check_forward_ad=True)


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_second_derivatives_through_the_operator_are_exact(backend, layout):
    """gradgradcheck of the traced operator itself (its backward is the same operator, transposed)."""
    problem = Problem(backend, layout, "float64", "matrix")

    def through_operator(values, B):
        request = SolveRequest.of(
            problem.kwargs["backend"], problem.kwargs["method"], options=_options(backend, torch.float64)
        )
        return traced_solve_values(problem.pattern, values, B, request, return_info=False)

    values, B = problem.values.clone().requires_grad_(), problem.B.clone().requires_grad_()
    atol = 1e-6 if backend == "scipy" else 1e-5
    assert torch.autograd.gradcheck(through_operator, (values, B), atol=atol)
    assert torch.autograd.gradgradcheck(through_operator, (values, B), atol=atol)


def _compiled_step(problem, compile_backend):
    torch.compiler.reset()

    def step(values, B):
        return problem.tsgu(values, B).square().sum()

    values, B = problem.values.clone().requires_grad_(), problem.B.clone().requires_grad_()
    loss = torch.compile(step, fullgraph=True, backend=compile_backend)(values, B)
    loss.backward()
    ref_values, ref_B = problem.values.clone().requires_grad_(), problem.B.clone().requires_grad_()
    expected = problem.dense(ref_values, ref_B).square().sum()
    expected.backward()
    torch.testing.assert_close(loss, expected, **problem.tolerance)
    torch.testing.assert_close(values.grad, ref_values.grad, **problem.tolerance)
    torch.testing.assert_close(B.grad, ref_B.grad, **problem.tolerance)


@pytest.mark.parametrize(
    ("layout", "dtype", "compile_backend"),
    [("coo", "float64", "eager"), ("csr", "float64", "aot_eager"), ("coo", "float32", "aot_eager")],
)
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_compile_fullgraph_forward_and_backward(backend, layout, dtype, compile_backend):
    _compiled_step(Problem(backend, layout, dtype, "matrix"), compile_backend)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_compile_fullgraph_with_inductor(backend):
    _compiled_step(Problem(backend, "csr", "float64", "vector"), "inductor")


def test_compiled_graph_is_reused_and_follows_new_values():
    """A second call with other values runs the same graph (no recompile) and solves the new matrix."""
    problem = Problem("scipy", "csr", "float64", "matrix")
    torch.compiler.reset()
    compiled = torch.compile(problem.tsgu, fullgraph=True, backend="aot_eager")
    for scale in (1.0, 1.5, 0.7):
        torch.testing.assert_close(
            compiled(scale * problem.values, problem.B), problem.dense(scale * problem.values, problem.B)
        )


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_solve_with_sparse_A_under_compile_matches_eager(backend):
    """solve(A, B) with a sparse A built inside a compiled function: a graph break, the same numbers."""
    problem = Problem(backend, "csr", "float64", "matrix")
    crow, col = problem.pattern.csr_indices()

    def step(values, B):
        A = torch.sparse_csr_tensor(crow, col, values, (N, N))
        return solve(A, B, **problem.kwargs).square().sum()

    torch.compiler.reset()
    values = problem.values.clone().requires_grad_()
    loss = torch.compile(step)(values, problem.B)
    loss.backward()
    ref = problem.values.clone().requires_grad_()
    expected = problem.dense(ref, problem.B).square().sum()
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(values.grad, ref.grad)


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("transform", ["grad", "jvp", "vmap"])
def test_solve_with_sparse_A_under_torch_func_transforms_B(layout, transform):
    problem = Problem("scipy", layout, "float64", "matrix")
    A = to_layout(_matrix(torch.float64), layout)

    def with_A(B):
        return solve(A, B, backend="scipy")

    def dense(B):
        return problem.dense(problem.values, B)

    runs = {
        "grad": lambda f: torch.func.grad(lambda B: f(B).square().sum())(problem.B),
        "jvp": lambda f: torch.func.jvp(f, (problem.B,), (_weights(problem.B),)),
        "vmap": lambda f: torch.func.vmap(f)(torch.stack([problem.B, -2 * problem.B])),
    }
    actual, expected = runs[transform](with_A), runs[transform](dense)
    for a, e in zip(
        actual if isinstance(actual, tuple) else (actual,),
        expected if isinstance(expected, tuple) else (expected,),
        strict=True,
    ):
        torch.testing.assert_close(a, e)


def test_transforming_a_sparse_A_names_the_way_out():
    A = to_layout(_matrix(torch.float64), "coo")
    b = torch.ones(N, dtype=torch.float64)
    with pytest.raises(InvalidArgumentError, match=r"solve_values\(SparsePattern.of\(A\)"):
        torch.func.grad(lambda A: solve(A, b, backend="scipy").sum())(A)


def test_a_sparse_tensor_as_the_pattern_works_under_torch_func():
    problem = Problem("scipy", "csr", "float64", "matrix")
    A = to_layout(_matrix(torch.float64), "csr")
    grad = torch.func.grad(lambda v: solve_values(A, v, problem.B, backend="scipy").square().sum())(problem.values)
    expected = torch.func.grad(lambda v: problem.dense(v, problem.B).square().sum())(problem.values)
    torch.testing.assert_close(grad, expected)


class _Counting:
    """A backend seen through a proxy that counts ``prepare`` and ``solve`` calls."""

    def __init__(self, backend):
        self._backend = backend
        self.prepares = 0
        self.solves = []

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def prepare(self, A, method, options):
        self.prepares += 1
        return self._backend.prepare(A, method, options)

    def solve(self, state, B, transpose=False, x0=None):
        self.solves.append((tuple(B.shape), transpose))
        return self._backend.solve(state, B, transpose=transpose, x0=x0)


def test_jvp_and_backward_reuse_the_forward_factorization():
    problem = Problem("scipy", "csr", "float64", "matrix")
    counting = _Counting(tsgu_core.get_backend("scipy"))
    CACHE.clear()

    def f(values, B):
        return solve_values(problem.pattern, values, B, backend=counting, method="splu")

    (primal, tangent) = torch.func.jvp(f, (problem.values, problem.B), (torch.ones_like(problem.values), problem.B))
    grad = torch.func.grad(lambda v: f(v, problem.B).square().sum())(problem.values)
    assert counting.prepares == 1, f"prepared {counting.prepares} times for one matrix"
    assert [t for _, t in counting.solves] == [False, False, False, True]
    expected = torch.func.jvp(problem.dense, (problem.values, problem.B), (torch.ones_like(problem.values), problem.B))
    torch.testing.assert_close((primal, tangent), expected)
    torch.testing.assert_close(
        grad, torch.func.grad(lambda v: problem.dense(v, problem.B).square().sum())(problem.values)
    )


def test_changed_values_are_a_new_matrix_never_a_stale_factorization():
    problem = Problem("scipy", "csr", "float64", "matrix")
    counting = _Counting(tsgu_core.get_backend("scipy"))
    values = problem.values.clone()

    def f(B):
        return solve_values(problem.pattern, values, B, backend=counting, method="splu")

    first = torch.func.vmap(f)(problem.B.unsqueeze(0))
    values[0] += 1.0  # in place: same tensor, new matrix
    second = torch.func.vmap(f)(problem.B.unsqueeze(0))
    torch.testing.assert_close(first[0], problem.dense(problem.values, problem.B))
    torch.testing.assert_close(second[0], problem.dense(values, problem.B))
    assert counting.prepares == 2


def test_vmap_over_B_is_one_multi_column_solve():
    problem = Problem("scipy", "csr", "float64", "matrix")
    counting = _Counting(tsgu_core.get_backend("scipy"))
    samples = torch.stack([problem.B * (i + 1) for i in range(8)])
    X = torch.func.vmap(lambda B: solve_values(problem.pattern, problem.values, B, backend=counting))(samples)
    assert counting.solves == [((N, 3 * 8), False)], counting.solves
    torch.testing.assert_close(X, torch.stack([problem.dense(problem.values, B) for B in samples]))


def test_the_operator_passes_torch_library_opcheck():
    from tsgu_core.engine.traced import request_token

    problem = Problem("scipy", "csr", "float64", "matrix")
    request = request_token(SolveRequest.of("scipy", "splu"))
    crow, col = problem.pattern.csr_indices()
    torch.library.opcheck(solve_op, (crow, col, problem.values, problem.B, None, request, False))
    torch.library.opcheck(solve_op, (crow, col, problem.values, problem.B, None, request, True))


def test_return_info_is_refused_under_a_transform():
    problem = Problem("scipy", "csr", "float64", "vector")
    with pytest.raises(InvalidArgumentError, match="return_info"):
        torch.func.grad(lambda v: solve_values(problem.pattern, v, problem.B, return_info=True)[0].sum())(
            problem.values
        )


def test_non_finite_values_under_vmap_are_a_typed_error():
    problem = Problem("scipy", "csr", "float64", "vector")
    bad = problem.values.clone()
    bad[2] = float("nan")
    with pytest.raises(NonFiniteError):
        torch.func.vmap(lambda v: solve_values(problem.pattern, v, problem.B))(torch.stack([problem.values, bad]))


def test_non_convergence_under_a_transform_raises():
    problem = Problem("torch", "csr", "float64", "vector")
    with pytest.raises(ConvergenceError):
        torch.func.grad(
            lambda v: (
                solve_values(problem.pattern, v, problem.B, backend="torch", method="gmres", maxiter=1, restart=1)
                .square()
                .sum()
            )
        )(problem.values)


def test_wrong_shapes_under_a_transform_are_typed_errors():
    problem = Problem("scipy", "csr", "float64", "vector")
    with pytest.raises(ShapeError, match="values must have shape"):
        torch.func.grad(lambda v: solve_values(problem.pattern, v[:-1], problem.B).sum())(problem.values)
    with pytest.raises(ShapeError, match="B must have shape"):
        torch.func.vmap(lambda b: solve_values(problem.pattern, problem.values, b[:-1]))(problem.B.unsqueeze(0))


def _entry_points():
    lower = torch.tril(_matrix(torch.float64))
    tall = torch.cat([_matrix(torch.float64), torch.eye(N, dtype=torch.float64)[:3]])
    pattern = SparsePattern.of(_matrix(torch.float64).to_sparse_csr())
    return {
        "solve": (_matrix(torch.float64), lambda A, values, B: solve(A, B, backend="scipy")),
        "triangular_solve": (lower, lambda A, values, B: tsgu_core.triangular_solve(A, B, upper=False)),
        "lstsq": (tall, lambda A, values, B: tsgu_core.lstsq(A, B, backend="scipy")),
        "factorize": (_matrix(torch.float64), lambda A, values, B: tsgu_core.factorize(A, backend="scipy").solve(B)),
        "solve_values with a sparse A": (
            _matrix(torch.float64),
            lambda A, values, B: solve_values(A.detach(), values, B, backend="scipy"),
        ),
        "solve_values with a pattern": (
            _matrix(torch.float64),
            lambda A, values, B: solve_values(pattern, values, B, backend="scipy"),
        ),
    }


@pytest.mark.parametrize("entry", sorted(_entry_points()))
def test_every_entry_point_with_a_sparse_A_runs_eagerly_under_compile(entry):
    """Each public function that takes a sparse A is one graph break under torch.compile, with eager's numbers."""
    dense, function = _entry_points()[entry]
    crow, col = (lambda A: (A.crow_indices(), A.col_indices()))(dense.to_sparse_csr())
    B = torch.linspace(-1, 1, dense.shape[0] * 2, dtype=torch.float64).reshape(-1, 2)

    def step(values):
        A = torch.sparse_csr_tensor(crow, col, values, dense.shape)
        return function(A, values, B).square().sum()

    torch.compiler.reset()
    values = dense.to_sparse_csr().values().clone().requires_grad_()
    loss = torch.compile(step)(values)
    loss.backward()
    ref = dense.clone().requires_grad_()
    solution = torch.linalg.lstsq(ref, B).solution if entry == "lstsq" else torch.linalg.solve(ref, B)
    solution.square().sum().backward()
    torch.testing.assert_close(loss, solution.square().sum().detach())
    torch.testing.assert_close(values.grad, ref.grad[dense != 0])


@pytest.mark.parametrize(
    "transform",
    [
        lambda f, v, b: torch.func.jvp(lambda v: f(v, b), (v,), (torch.ones_like(v),))[1],
        lambda f, v, b: torch.func.grad(lambda v: f(v, b).sum())(v),
        lambda f, v, b: torch.func.vmap(lambda b: f(v, b))(b.unsqueeze(0)),
    ],
    ids=["jvp", "grad", "vmap"],
)
def test_a_transform_inside_compile_is_right_or_raises(transform):
    """Never a silently dropped tangent: torch.func inside torch.compile either matches dense or raises.

    (Measured on torch 2.13: jvp and vmap match; grad stops in Dynamo's own
    AssertionError while it traces the backward — loud, documented.)
    """
    problem = Problem("scipy", "csr", "float64", "vector")
    torch.compiler.reset()
    compiled = torch.compile(lambda v, b: transform(problem.tsgu, v, b), backend="eager")
    try:
        actual = compiled(problem.values, problem.B)
    except Exception as error:  # any loud failure is acceptable here, a wrong number is not
        assert not isinstance(error, tsgu_core.TransformError) or "Put torch.compile inside" in str(error)
        return
    torch.testing.assert_close(actual, transform(problem.dense, problem.values, problem.B))


def test_options_that_print_alike_are_different_requests():
    """Two SciPy preconditioners with the same repr must not share a request (nor a prepared state)."""
    from scipy.sparse.linalg import LinearOperator

    problem = Problem("scipy", "csr", "float64", "vector")
    calls = {"first": 0, "second": 0}

    def preconditioner(name, scale):
        def apply(x):
            calls[name] += 1
            return scale * x

        return LinearOperator((N, N), matvec=apply, dtype="float64")

    first, second = preconditioner("first", 1.0), preconditioner("second", 0.5)
    assert repr(first) == repr(second)
    for M in (first, second):
        X = torch.func.vmap(
            lambda b, M=M: solve_values(
                problem.pattern, problem.values, b, backend="scipy", method="gmres", M=M, rtol=1e-12
            )
        )(problem.B.unsqueeze(0))
        torch.testing.assert_close(X[0], problem.dense(problem.values, problem.B))
    assert calls["first"] > 0 and calls["second"] > 0, calls


def _complex_problem(backend, layout):
    """A complex, non-Hermitian, non-symmetric matrix: the real one plus an imaginary part on its pattern."""
    problem = Problem(backend, layout, "float64", "matrix")
    generator = torch.Generator().manual_seed(5)
    real = problem.values
    problem.values = torch.complex(real, torch.randn(real.shape, generator=generator, dtype=torch.float64))
    problem.B = torch.complex(problem.B, torch.randn(problem.B.shape, generator=generator, dtype=torch.float64))
    problem.dtype = torch.complex128
    return problem


def _real_loss(solver):
    return lambda values, B: (solver(values, B).abs().square() * torch.linspace(0.5, 2, B.shape[-1])).sum()


COMPLEX_TRANSFORMS = {
    "grad": lambda p: lambda f: torch.func.grad(_real_loss(f), argnums=(0, 1))(p.values, p.B),
    "jvp": lambda p: lambda f: torch.func.jvp(f, (p.values, p.B), (0.5j * p.values, p.B.conj())),
    "hvp": lambda p: (
        lambda f: torch.func.jvp(torch.func.grad(lambda v: _real_loss(f)(v, p.B)), (p.values,), (1j * p.values,))[1]
    ),
    "vmap-B": lambda p: lambda f: torch.func.vmap(lambda b: f(p.values, b))(torch.stack([p.B, 1j * p.B])),
    "vmap-values": lambda p: lambda f: torch.func.vmap(lambda v: f(v, p.B))(torch.stack([p.values, 1j * p.values])),
}


@pytest.mark.parametrize("transform", sorted(COMPLEX_TRANSFORMS))
@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_complex_transforms_follow_the_wirtinger_convention(backend, layout, transform):
    """Complex values and B under torch.func: the same numbers as torch's own complex autograd of a dense solve."""
    problem = _complex_problem(backend, layout)
    problem.assert_same(COMPLEX_TRANSFORMS[transform](problem))


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_complex_compile_fullgraph_and_second_derivatives(backend):
    """Compiled (aot_eager: its kernels run without lazy-conjugation dispatch) and gradgradcheck, complex128."""
    problem = _complex_problem(backend, "csr")
    torch.compiler.reset()
    loss = _real_loss(problem.tsgu)
    values, B = problem.values.clone().requires_grad_(), problem.B.clone().requires_grad_()
    torch.compile(loss, fullgraph=True, backend="aot_eager")(values, B).backward()
    ref_values, ref_B = problem.values.clone().requires_grad_(), problem.B.clone().requires_grad_()
    _real_loss(problem.dense)(ref_values, ref_B).backward()
    torch.testing.assert_close(values.grad, ref_values.grad)
    torch.testing.assert_close(B.grad, ref_B.grad)

    def through_operator(v, b):
        request = SolveRequest.of(
            problem.kwargs["backend"], problem.kwargs["method"], options=_options(backend, torch.float64)
        )
        return traced_solve_values(problem.pattern, v, b, request, return_info=False)

    atol = 1e-6 if backend == "scipy" else 1e-5
    values, B = problem.values.clone().requires_grad_(), problem.B[:, :1].clone().requires_grad_()
    assert torch.autograd.gradgradcheck(through_operator, (values, B), atol=atol)


def test_unknown_options_and_a_singular_matrix_raise_under_a_transform():
    """The operator resolves options and runs the backend when it runs: the same typed errors as eager."""
    problem = Problem("scipy", "csr", "float64", "vector")
    with pytest.raises(tsgu_core.UnknownOptionError):
        torch.func.vmap(lambda b: solve_values(problem.pattern, problem.values, b, backend="scipy", tol=1e-3))(
            problem.B.unsqueeze(0)
        )
    singular = problem.values.clone()
    singular[problem.pattern.row == 2] = 0.0  # row 2 of A is zero
    with pytest.raises(tsgu_core.SingularMatrixError):
        torch.func.grad(lambda v: solve_values(problem.pattern, v, problem.B, backend="scipy").sum())(singular)
