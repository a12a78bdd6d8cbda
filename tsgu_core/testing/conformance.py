"""The conformance suite every backend must pass — ours and third parties'.

Use it from pytest in three lines::

    import pytest
    from tsgu_core.testing import conformance_cases, run_case

    @pytest.mark.parametrize("case", conformance_cases("mybackend"), ids=str)
    def test_conformance(case):
        run_case(case)

The cases are derived from what the backend declares: every method × device
type × check, and for the checks that vary them, layout (COO, CSR) ×
right-hand side (``(n,)``, ``(n, 1)``, ``(n, k)``) × dtype (float32,
float64; and complex64, complex128 for a method declared ``complex``). A
case that cannot run here (the backend or its device is unavailable) is a
skip whose reason says what is missing.

Complex cases (methods declared ``complex=True``): ``reference``,
``triangular`` and ``lstsq`` in complex64 and complex128; ``transpose``,
``gradcheck``, ``gradgradcheck`` (vector ``B``, COO and CSR), ``batched``, ``batched-patterns``,
``factorize``, ``transforms`` and the triangular/least-squares gradchecks in complex128 — on
matrices that are neither symmetric nor Hermitian (Hermitian
for methods that assume ``"symmetric"``/``"spd"``), with real losses
``Re Σ X·G`` so that gradients follow PyTorch's conjugate-Wirtinger
convention. A method *not* declared complex gets the ``complex-refused``
check: naming it for a complex ``A`` raises
:class:`~tsgu_core.errors.ComplexNotSupportedError`.

The checks, each against an independent reference:

``reference``
    ``X``, ``∂L/∂B`` and ``∂L/∂A`` (at the stored entries, in ``A``'s layout)
    against dense ``torch.linalg.solve`` autograd.
``int32``
    the same with int32 index tensors.
``batched``
    a ``(b, n, n)`` batch sharing one pattern (COO and CSR; given whole to a
    method declared ``batched``, member by member otherwise): solutions and
    per-member gradients against dense batched solves.
``batched-patterns``
    methods declared ``batched`` only: a ``(b, n, n)`` batch whose members
    have different patterns (COO, and CSR with equal nnz but other columns),
    grouped by the core; solutions and gradients in each member's own
    pattern against dense batched solves.
``factorize``
    :func:`tsgu_core.factorize`: one ``prepare`` serves two solves, a
    transposed one and every backward pass, with the right answers.
``transpose``
    the backend's ``solve(state, B, transpose=True)`` against dense ``Aᵀ``
    (the plain transpose, for complex ``A`` too), and the core's
    :func:`~tsgu_core.engine.autograd.adjoint_solve` on it against dense ``Aᴴ``.
``gradcheck`` / ``gradgradcheck``
    ``torch.autograd.gradcheck`` / ``gradgradcheck`` in float64 on the values
    of ``A`` and on ``B``. General methods get a nonsymmetric ``A``; symmetric
    and SPD methods get a symmetric ``A`` perturbed symmetrically.
``policy``
    iterative: one iteration at an unreachable tolerance raises
    ``ConvergenceError``, warns with ``on_failure="warn"``, returns with
    ``"ignore"``; direct: a singular ``A`` raises ``SingularMatrixError``.
``options``
    an unknown option raises ``UnknownOptionError``.
``unmodified``
    ``A`` and ``B`` are unchanged by a forward and backward pass.
``x0``
    iterative: an initial guess is accepted and the answer is still right.
``selected-inversion``
    methods declared ``selected_inversion`` (the backend implements
    :class:`~tsgu_core.plugins.protocol.SelectedInversionBackend`): the
    backend's ``logdet`` and ``selected_inverse`` on its prepared state, and
    :func:`tsgu_core.slogdet` with its gradient, on nonsymmetric matrices with
    a positive and a negative determinant (float32, float64; complex128 for a
    method declared ``complex``), against dense ``torch.linalg.slogdet``
    autograd and ``torch.linalg.inv`` (an SPD matrix, positive determinant
    only, for a method that assumes ``"spd"``).
``sampling``
    methods declared ``sampling`` (the backend implements
    :class:`~tsgu_core.plugins.protocol.SamplingBackend`): the backend's
    ``precision_sample`` on its prepared state gives ``S`` with
    ``Sᵀ A S = I`` (so ``S Sᵀ = A⁻¹``) in ``Z``'s shape and dtype; its
    ``prepare`` refuses a symmetric indefinite ``A``
    (:class:`~tsgu_core.errors.NotPositiveDefiniteError`); and
    :class:`~tsgu_core.distributions.GaussianMarkovRandomField` with the
    method gives ``log_prob``, its gradient in the precision's values and
    ``variance`` as dense torch does (float32, float64; COO and CSR).

Matrices are small (n = 24; n = 6 for the finite-difference checks, whose cost grows with the
number of entries while what they verify does not), so the whole suite of one method runs in seconds.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from tsgu_core.api.determinants import slogdet
from tsgu_core.api.factorize import factorize
from tsgu_core.api.lstsq import lstsq
from tsgu_core.api.solve import solve, solve_values
from tsgu_core.api.triangular import triangular_solve
from tsgu_core.base.quiet import quietly
from tsgu_core.distributions.gmrf import GaussianMarkovRandomField
from tsgu_core.engine.autograd import adjoint_solve
from tsgu_core.errors import (
    ComplexNotSupportedError,
    ConvergenceError,
    ConvergenceWarning,
    NotPositiveDefiniteError,
    SingularMatrixError,
    UnknownOptionError,
)
from tsgu_core.plugins.kit.csr import row_indices
from tsgu_core.plugins.options import resolve_options
from tsgu_core.plugins.protocol import SamplingBackend, SelectedInversionBackend
from tsgu_core.plugins.registry import get_entry, list_backends
from tsgu_core.testing.matrices import matrix_for, random_symmetric_indefinite, to_layout, triangular_pair

__all__ = ["CHECKS", "LSTSQ_CHECKS", "SOLVE_CHECKS", "TRIANGULAR_CHECKS", "Case", "conformance_cases", "run_case"]

N_REFERENCE = 24
N_GRADCHECK = 6
"""The size of the finite-difference checks: their cost grows with the entries they perturb, their point does not."""
K_MATRIX = 3
RHS_SHAPES = {"vector": None, "column": 1, "matrix": K_MATRIX}
DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "complex64": torch.complex64,
    "complex128": torch.complex128,
}
REAL_DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Case:
    """One conformance check of one backend method in one configuration."""

    backend: str
    method: str
    check: str
    device: str
    layout: str = "csr"
    rhs: str = "matrix"
    dtype: str = "float64"
    options: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    nondet_tol: float | None = field(default=None, compare=False, hash=False)

    def __str__(self) -> str:
        return "-".join((self.backend, self.method, self.check, self.device, self.layout, self.rhs, self.dtype))


def _variants(check: str, kind: str, complex: bool = False) -> Iterable[tuple[str, str, str]]:
    real = list(_real_variants(check, kind))
    if not complex:
        return real
    if check in ("triangular", "lstsq"):
        extra: Iterable[tuple[str, str, str]] = itertools.product(
            ("coo", "csr"), ("vector", "matrix"), ("complex64", "complex128")
        )
    elif check == "reference":
        extra = itertools.product(("coo", "csr"), ("vector", "matrix"), ("complex64", "complex128"))
    elif check in ("transpose", "gradcheck", "triangular-gradcheck", "lstsq-gradcheck"):
        extra = [(layout, rhs, "complex128") for layout, rhs, _ in real]
    elif check == "gradgradcheck":  # both layouts; matrix B is in complex gradcheck (a 3-column one costs 3×)
        extra = [("coo", "vector", "complex128"), ("csr", "vector", "complex128")]
    elif check in ("batched", "batched-patterns"):
        extra = [("coo", "matrix", "complex128"), ("csr", "matrix", "complex128")]
    elif check in ("factorize", "transforms"):
        extra = [("csr", "matrix", "complex128")]
    elif check == "selected-inversion":
        extra = [("coo", "matrix", "complex128"), ("csr", "matrix", "complex128")]
    else:
        extra = []
    return real + list(extra)


def _real_variants(check: str, kind: str) -> Iterable[tuple[str, str, str]]:
    if check in ("triangular", "lstsq"):
        return itertools.product(("coo", "csr"), ("vector", "matrix"), REAL_DTYPES)
    if check in ("triangular-gradcheck", "lstsq-gradcheck"):
        return itertools.product(("coo", "csr"), ("vector", "matrix"), ("float64",))
    if check == "lstsq-policy" and kind == "direct":
        return ()
    if check == "reference":
        return itertools.product(("coo", "csr"), RHS_SHAPES, REAL_DTYPES)
    if check == "transpose":
        return itertools.product(("coo", "csr"), ("column", "matrix"), ("float64",))
    if check == "gradcheck":
        return itertools.product(("coo", "csr"), ("vector", "matrix"), ("float64",))
    if check == "x0" and kind == "direct":
        return ()
    if check in ("int32", "batched", "batched-patterns"):
        return itertools.product(("coo", "csr"), ("matrix",), ("float64",))
    if check == "transforms":
        return [("coo", "matrix", "float64"), ("csr", "vector", "float64")]
    if check in ("selected-inversion", "sampling"):
        return itertools.product(("coo", "csr"), ("matrix",), REAL_DTYPES)
    return [("csr", "matrix", "float64")]


SOLVE_CHECKS = (
    "reference",
    "int32",
    "transpose",
    "gradcheck",
    "gradgradcheck",
    "batched",
    "batched-patterns",
    "factorize",
    "policy",
    "options",
    "unmodified",
    "x0",
    "transforms",
    "complex-refused",
    "selected-inversion",
    "sampling",
)
TRIANGULAR_CHECKS = ("triangular", "triangular-gradcheck", "complex-refused")
LSTSQ_CHECKS = ("lstsq", "lstsq-gradcheck", "lstsq-policy", "complex-refused")
CHECKS = tuple(dict.fromkeys(SOLVE_CHECKS + TRIANGULAR_CHECKS + LSTSQ_CHECKS))
_CHECKS_OF = {"solve": SOLVE_CHECKS, "triangular": TRIANGULAR_CHECKS, "lstsq": LSTSQ_CHECKS}


def conformance_cases(
    backend: str | None = None,
    *,
    methods: Iterable[str] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    checks: Iterable[str] = CHECKS,
    nondet_tol: float | None = None,
) -> list[Any]:
    """The conformance cases as ``pytest.param`` objects, skips included.

    Parameters
    ----------
    backend : str, optional
        A registered backend name; default: every registered backend.
    methods : iterable of str, optional
        Restrict to these methods (default: all the backend declares).
    options : mapping of method name to options, optional
        Extra options for a method's solves (e.g. a preconditioner). The
        suite chooses ``rtol``/``maxiter`` itself.
    checks : iterable of str
        A subset of :data:`CHECKS`; each method gets the checks of its
        operation (:data:`SOLVE_CHECKS`, :data:`TRIANGULAR_CHECKS` or
        :data:`LSTSQ_CHECKS`).
    nondet_tol : float, optional
        How far two backward passes over the same graph may differ in
        ``gradcheck``'s reentrancy test (default: 0 on the CPU, 1e-10 on CUDA,
        whose libraries promise no bitwise-reproducible solves). A library
        with state across solves (PETSc) needs a small value on the CPU too.
    """
    import pytest

    names = [backend] if backend is not None else [entry.name for entry in list_backends()]
    params = []
    for name in names:
        entry = get_entry(name)
        chosen = list(methods) if methods is not None else sorted(entry.backend.methods)
        for method, device in itertools.product(chosen, entry.backend.device_types):
            spec = entry.backend.methods[method]
            availability = entry.availability(device)
            marks = [pytest.mark.cuda] if device == "cuda" else []
            if not availability:
                needs = "needs a CUDA device" if device == "cuda" else f"needs backend {name!r} on {device}"
                marks.append(pytest.mark.skip(reason=f"{needs}: {availability.reason}"))
            method_options = dict((options or {}).get(method, {}))
            for check in (c for c in checks if c in _CHECKS_OF[spec.operation]):
                if check == "batched-patterns" and not spec.batched:
                    continue
                if check == "complex-refused" and spec.complex:
                    continue
                if check == "selected-inversion" and not getattr(spec, "selected_inversion", False):
                    continue
                if check == "sampling" and not getattr(spec, "sampling", False):
                    continue
                for layout, rhs, dtype in _variants(check, spec.kind, spec.complex):
                    case = Case(name, method, check, device, layout, rhs, dtype, method_options, nondet_tol)
                    params.append(pytest.param(case, marks=marks, id=str(case)))
    return params


# --- helpers ---------------------------------------------------------------


def _double(dtype: torch.dtype) -> bool:
    return dtype in (torch.float64, torch.complex128)


def _loss(X: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """``Re Σ X·G``: a real loss (torch differentiates only real scalars), the identity for real dtypes."""
    total = (X * G).sum()
    return total.real if total.is_complex() else total


def _solve_options(spec_kind: str, dtype: torch.dtype, case: Case) -> dict[str, Any]:
    options = dict(case.options)
    if spec_kind == "iterative":
        options.setdefault("rtol", 1e-12 if _double(dtype) else 1e-4)
        options.setdefault("maxiter", 2000)
    return options


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-7, "atol": 1e-8} if _double(dtype) else {"rtol": 2e-3, "atol": 2e-3}


def _seed(case: Case) -> int:
    return sum(map(ord, str(case))) % 10_000


def _matrix(case: Case, assumes: str, n: int, dtype: torch.dtype) -> torch.Tensor:
    """The method's test matrix: one pattern per backend method and size, whatever the check, layout or dtype.

    Every check of a method then meets the same shapes, so a backend that compiles per shape
    (JAX: per ``nnz`` and product layout) compiles once per right-hand side and dtype, not once per
    case. The pattern has at least ``n`` off-diagonal entries (a small random one may have none), so
    every solve couples its unknowns.
    """
    seed = sum(map(ord, f"{case.backend}-{case.method}")) % 10_000
    while True:
        D = matrix_for(assumes, n, seed=seed, dtype=dtype)
        if int(torch.count_nonzero(D)) - int(torch.count_nonzero(torch.diagonal(D))) >= n:
            return D
        seed += 1


def _problem(case: Case, n: int) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    entry = get_entry(case.backend)
    spec = entry.backend.methods[case.method]
    dtype = DTYPES[case.dtype]
    seed = _seed(case)
    D = _matrix(case, spec.assumes, n, dtype).to(case.device)
    k = RHS_SHAPES[case.rhs]
    generator = torch.Generator().manual_seed(seed + 1)
    B = torch.randn((n,) if k is None else (n, k), generator=generator, dtype=dtype).to(case.device)
    return spec, D, to_layout(D.cpu(), case.layout).to(case.device), B


def _assert_close(actual: torch.Tensor | None, expected: torch.Tensor | None, what: str, case: Case) -> None:
    assert actual is not None and expected is not None, f"{case}: {what}: a gradient is missing"
    tolerance = _tolerance(actual.dtype)
    torch.testing.assert_close(
        actual, expected, rtol=tolerance["rtol"], atol=tolerance["atol"], msg=lambda m: f"{case}: {what}: {m}"
    )


def _sparse_from_values(template: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    if template.layout == torch.sparse_coo:
        return torch.sparse_coo_tensor(
            template.indices(), values, template.shape, is_coalesced=True, check_invariants=False
        )
    return torch.sparse_csr_tensor(
        template.crow_indices(), template.col_indices(), values, template.shape, check_invariants=False
    )


def _symmetric_parameterisation(A: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Parameters ``p`` of the upper triangle and ``values = p[index]`` keeping ``A`` symmetric.

    For a complex ``A``, Hermitian: the lower triangle is ``conj(p[index])`` and the diagonal ``Re p``.
    """
    if A.layout == torch.sparse_coo:
        row, col = A.indices()
    else:
        row = row_indices(A.crow_indices())
        col = A.col_indices()
    key = torch.minimum(row, col) * A.shape[0] + torch.maximum(row, col)
    unique, index = torch.unique(key, return_inverse=True)
    first = torch.full((unique.numel(),), -1, dtype=torch.int64, device=A.device)
    first.scatter_(0, index, torch.arange(index.numel(), device=A.device))
    if not A.is_complex():
        return A.values()[first].clone(), lambda p: p[index]
    lower, diagonal = row > col, row == col

    def hermitian(p: torch.Tensor) -> torch.Tensor:
        values = p[index]
        values = torch.where(lower, values.conj(), values)
        return torch.where(diagonal, torch.complex(values.real, torch.zeros_like(values.real)), values)

    chosen = A.values()[first]  # p holds each pair's upper-triangle value
    return torch.where(lower[first], chosen.conj(), chosen).clone(), hermitian


# --- the checks --------------------------------------------------------------


def _check_reference(case: Case, index_dtype: torch.dtype = torch.int64) -> None:
    spec, D, A, B = _problem(case, N_REFERENCE)
    A = to_layout(D.cpu(), case.layout, index_dtype).to(case.device).requires_grad_()
    B = B.clone().requires_grad_()
    X = solve(A, B, backend=case.backend, method=case.method, **_solve_options(spec.kind, D.dtype, case))
    assert X.shape == B.shape and X.dtype == B.dtype and X.device == B.device, f"{case}: X is {X.shape} {X.dtype}"
    G = torch.randn(X.shape, generator=torch.Generator().manual_seed(7), dtype=X.dtype).to(X.device)
    _loss(X, G).backward()
    D_ref = D.clone().requires_grad_()
    B_ref = B.detach().clone().requires_grad_()
    X_ref = torch.linalg.solve(D_ref, B_ref)
    _loss(X_ref, G).backward()
    _assert_close(X, X_ref, "solution", case)
    _assert_close(B.grad, B_ref.grad, "gradient of B", case)
    assert A.grad is not None and A.grad.layout == A.layout, (
        f"{case}: A.grad has layout {getattr(A.grad, 'layout', None)}"
    )
    grad_dense = A.grad.to_dense()
    pattern = A.detach().to_dense() != 0
    assert D_ref.grad is not None
    _assert_close(grad_dense, D_ref.grad * pattern, "gradient of A at the stored entries", case)


def _check_transpose(case: Case) -> None:
    spec, D, A, B = _problem(case, N_REFERENCE)
    backend = get_entry(case.backend).backend
    options = resolve_options(spec, case.backend, _solve_options(spec.kind, D.dtype, case), B.shape[0], B.dtype)
    state = backend.prepare(A, case.method, options)
    X_t, _ = backend.solve(state, B, transpose=True)
    X_n, _ = backend.solve(state, B, transpose=False)
    _assert_close(X_t, torch.linalg.solve(D.T, B), "transpose solve against dense Aᵀ", case)
    _assert_close(X_n, torch.linalg.solve(D, B), "plain solve after a transpose solve on the same state", case)
    if B.is_complex():  # the backward's conjugate-transpose solve, built by the core on the plain transpose
        X_h = adjoint_solve(lambda R: backend.solve(state, R, transpose=True)[0], B)
        _assert_close(X_h, torch.linalg.solve(D.mH, B), "the core's Aᴴ solve (adjoint_solve) against dense Aᴴ", case)


def _gradcheck_function(
    case: Case, spec: Any, A: torch.Tensor, through_values: bool
) -> tuple[torch.Tensor, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """``f(p, B)``: a solve whose A is built from parameters ``p`` (symmetric methods: symmetrically).

    With ``through_values`` the values go to :func:`solve_values` (dense, exact to any
    order: what ``gradgradcheck`` needs); otherwise into a sparse tensor given to :func:`solve`.
    """
    options = _solve_options(spec.kind, A.dtype, case)
    to_values: Callable[[torch.Tensor], torch.Tensor]
    if A.is_complex() and A.layout == torch.sparse_csr:
        through_values = True  # torch's CSR constructor has no complex autograd; a leaf CSR A does (``reference``)
    if spec.assumes == "general":
        params = A.values().clone()

        def to_values(p: torch.Tensor) -> torch.Tensor:
            return p
    else:
        params, to_values = _symmetric_parameterisation(A)

    def function(p: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        X: torch.Tensor
        if through_values:
            X = solve_values(A, to_values(p), B, backend=case.backend, method=case.method, **options)
        else:
            X = solve(_sparse_from_values(A, to_values(p)), B, backend=case.backend, method=case.method, **options)
        return X

    return params.requires_grad_(), function


GRADCHECK_EPS = 1e-6
"""``torch.autograd.gradcheck``'s default finite-difference step."""


def _finite_difference_atol(kind: str) -> float:
    """``gradcheck``'s ``atol``: 1e-6 for direct methods; for iterative ones the solves' own noise allows.

    A central difference ``(x(p + ε) − x(p − ε)) / 2ε`` of an iterative solve
    stopped at ``rtol = 1e-12`` carries an error up to about
    ``rtol·κ·‖x‖ / ε`` — with ``ε = 1e-6`` and the suite's well-conditioned
    matrices (κ ≲ 10), ``1e-5`` — however right the gradient is (measured:
    JAX BiCGSTAB's numerical Jacobian is off by 1.03e-6 where its analytical
    one agrees with dense autograd to 1e-13). A wrong gradient (``A`` for
    ``Aᵀ``, a missed term) is off by O(1); the ``reference`` check holds the
    analytical gradients to 1e-7 against dense autograd.
    """
    return 1e-6 if kind == "direct" else 1e-12 * 10 / GRADCHECK_EPS


def _check_gradcheck(case: Case, second_order: bool = False) -> None:
    """``gradcheck``/``gradgradcheck`` on the values and on ``B``; complex128 checks the Wirtinger derivatives too."""
    spec, _, A, B = _problem(case, N_GRADCHECK)
    params, function = _gradcheck_function(case, spec, A, through_values=second_order)
    B = B.requires_grad_()
    check = torch.autograd.gradgradcheck if second_order else torch.autograd.gradcheck
    # GPU libraries do not promise bitwise-reproducible solves (cuSPARSE's triangular solves in CuPy's
    # SuperLU path vary in the last bits): allow that much nondeterminism on CUDA, none on the CPU.
    nondet_tol = case.nondet_tol if case.nondet_tol is not None else (1e-10 if case.device == "cuda" else 0.0)
    atol = _finite_difference_atol(spec.kind)
    assert check(function, (params, B), atol=atol, rtol=1e-4, nondet_tol=nondet_tol), f"{case}: {check.__name__} failed"


def _check_policy(case: Case) -> None:
    spec, _, A, B = _problem(case, N_REFERENCE)
    if spec.kind == "direct":
        singular = A.to_dense()
        refusals: tuple[type[Exception], ...] = (SingularMatrixError,)
        if spec.assumes == "general":
            singular[:, 3] = 0
            singular[5, :] = 0
        else:  # rows and columns 3 and 4 alike: symmetric, positive diagonal, singular
            singular[3, :], singular[:, 3] = singular[4, :], singular[:, 4]
            refusals += (NotPositiveDefiniteError,)  # an SPD method may say "not positive definite"
        S = to_layout(singular.cpu(), case.layout).to(case.device)
        try:
            solve(S, B, backend=case.backend, method=case.method)
        except refusals:
            return
        raise AssertionError(f"{case}: a singular A did not raise {' or '.join(e.__name__ for e in refusals)}")
    options = dict(case.options, rtol=1e-14, maxiter=1)
    try:
        solve(A, B, backend=case.backend, method=case.method, **options)
    except ConvergenceError as error:
        assert error.failed_columns and error.residuals, f"{case}: ConvergenceError without residuals"
    else:
        raise AssertionError(f"{case}: one iteration at rtol=1e-14 did not raise ConvergenceError")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        X = solve(A, B, backend=case.backend, method=case.method, on_failure="warn", **options)
    assert any(issubclass(w.category, ConvergenceWarning) for w in caught), f"{case}: no ConvergenceWarning"
    assert X.shape == B.shape
    X, info = solve(A, B, backend=case.backend, method=case.method, on_failure="ignore", return_info=True, **options)
    assert not info.converged and X.shape == B.shape, f"{case}: on_failure='ignore' misreported"


def _check_options(case: Case) -> None:
    _, _, A, B = _problem(case, N_REFERENCE)
    try:
        solve(A, B, backend=case.backend, method=case.method, no_such_option_xyz=1)
    except UnknownOptionError as error:
        assert "no_such_option_xyz" in str(error)
    else:
        raise AssertionError(f"{case}: an unknown option was accepted silently")


def _check_unmodified(case: Case) -> None:
    spec, D, A, B = _problem(case, N_REFERENCE)
    A = A.requires_grad_()
    B = B.requires_grad_()
    A_before, B_before = A.detach().to_dense().clone(), B.detach().clone()
    X = solve(A, B, backend=case.backend, method=case.method, **_solve_options(spec.kind, D.dtype, case))
    X.square().sum().backward()
    assert torch.equal(A.detach().to_dense(), A_before), f"{case}: A was modified"
    assert torch.equal(B.detach(), B_before), f"{case}: B was modified"


def _check_x0(case: Case) -> None:
    spec, D, A, B = _problem(case, N_REFERENCE)
    x0 = torch.linalg.solve(D, B) + 1e-3
    X = solve(A, B, backend=case.backend, method=case.method, x0=x0, **_solve_options(spec.kind, D.dtype, case))
    _assert_close(X, torch.linalg.solve(D, B), "solution from an initial guess", case)


def _check_transforms(case: Case) -> None:
    """``solve_values`` under ``torch.func`` (grad, jvp, vmap) and ``torch.compile(fullgraph=True)``, against dense."""
    from tsgu_core.sparse.pattern import SparsePattern

    spec, D, A, B = _problem(case, N_GRADCHECK)
    to_values: Callable[[torch.Tensor], torch.Tensor] = lambda p: p  # noqa: E731
    params = A.values().clone()
    if spec.assumes != "general":
        params, to_values = _symmetric_parameterisation(A)
    pattern = SparsePattern.of(A.detach())
    options = _solve_options(spec.kind, D.dtype, case)
    G = torch.randn(B.shape, generator=torch.Generator().manual_seed(_seed(case) + 3), dtype=B.dtype).to(B.device)

    def tsgu(p: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        X: torch.Tensor = solve_values(pattern, to_values(p), rhs, backend=case.backend, method=case.method, **options)
        return X

    def dense(p: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        matrix = torch.zeros(D.shape, dtype=D.dtype, device=D.device)
        X: torch.Tensor = torch.linalg.solve(matrix.index_put((pattern.row, pattern.col), to_values(p)), rhs)
        return X

    def loss(solver: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
        return lambda p, rhs: torch.real((solver(p, rhs) * G).sum())  # a real loss (complex: Wirtinger gradients)

    for name, transform in (
        ("torch.func.grad", lambda f: torch.func.grad(loss(f), argnums=(0, 1))(params, B)),
        ("torch.func.jvp", lambda f: torch.func.jvp(f, (params, B), (torch.ones_like(params), G))[1]),
        ("torch.func.vmap over B", lambda f: torch.func.vmap(lambda rhs: f(params, rhs))(torch.stack([B, 2 * B]))),
    ):
        actual, expected = transform(tsgu), transform(dense)
        pairs = zip(*(t if isinstance(t, tuple) else (t,) for t in (actual, expected)), strict=True)
        for index, (a, e) in enumerate(pairs):
            _assert_close(a, e, f"{name} (output {index})", case)
    torch.compiler.reset()  # every case compiles the same code object anew: stay below Dynamo's recompile limit
    compiled = torch.compile(loss(tsgu), fullgraph=True, backend="aot_eager")
    p, rhs = params.clone().requires_grad_(), B.clone().requires_grad_()
    p_ref, rhs_ref = params.clone().requires_grad_(), B.clone().requires_grad_()
    value = compiled(p, rhs)
    value.backward()
    reference = loss(dense)(p_ref, rhs_ref)
    reference.backward()
    _assert_close(value, reference, "torch.compile(fullgraph=True) forward", case)
    _assert_close(p.grad, p_ref.grad, "torch.compile(fullgraph=True) gradient of the values", case)
    _assert_close(rhs.grad, rhs_ref.grad, "torch.compile(fullgraph=True) gradient of B", case)


class _CountingBackend:
    """``backend`` seen through a proxy that counts its ``prepare`` calls (for the factorize check)."""

    def __init__(self, backend: Any):
        self._backend = backend
        self.prepares = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def prepare(self, A: torch.Tensor, method: str, options: Any) -> Any:
        self.prepares += 1
        return self._backend.prepare(A, method, options)


def _check_factorize(case: Case) -> None:
    """One ``prepare`` serves several solves, a transposed solve and all their backward passes."""
    spec, D, A, B = _problem(case, N_REFERENCE)
    counting = _CountingBackend(get_entry(case.backend).backend)
    A = A.requires_grad_()
    handle = factorize(A, backend=counting, method=case.method, **_solve_options(spec.kind, D.dtype, case))
    B1, B2 = B.clone().requires_grad_(), (2 * B + 1).requires_grad_()
    X1 = handle.solve(B1)
    X2 = handle.solve(B2, transpose=True)
    _loss(X1.sum() + X2.square().sum(), torch.ones((), dtype=X1.dtype)).backward()
    assert counting.prepares == 1, f"{case}: factorize's handle prepared {counting.prepares} times, not once"
    D_ref = D.clone().requires_grad_()
    B1_ref, B2_ref = B1.detach().clone().requires_grad_(), B2.detach().clone().requires_grad_()
    X1_ref, X2_ref = torch.linalg.solve(D_ref, B1_ref), torch.linalg.solve(D_ref.T, B2_ref)
    _loss(X1_ref.sum() + X2_ref.square().sum(), torch.ones((), dtype=X1.dtype)).backward()
    _assert_close(X1, X1_ref, "solution through the handle", case)
    _assert_close(X2, X2_ref, "transposed solution through the handle", case)
    _assert_close(B2.grad, B2_ref.grad, "gradient of the transposed solve's B", case)
    assert A.grad is not None and D_ref.grad is not None
    _assert_close(A.grad.to_dense(), D_ref.grad * (D != 0), "accumulated gradient of A", case)


BATCH = 3


def _check_batched(case: Case) -> None:
    """A ``(b, n, n)`` batch sharing one pattern against dense per-member solves, gradients included."""
    spec, D, _, _ = _problem(case, N_REFERENCE)
    dtype = DTYPES[case.dtype]
    generator = torch.Generator().manual_seed(_seed(case) + 2)
    scale = 1 + 0.1 * torch.rand(BATCH, N_REFERENCE, N_REFERENCE, generator=generator, dtype=dtype.to_real())
    if spec.assumes != "general":
        scale = (scale + scale.transpose(1, 2)) / 2  # keep each member symmetric (and SPD: diagonally dominant)
    members = (D.cpu() * scale).to(case.device)  # same pattern, different values (Hermitian kept: scale is real)
    B = torch.randn(BATCH, N_REFERENCE, K_MATRIX, generator=generator, dtype=dtype).to(case.device)
    if case.layout == "coo":
        A = members.cpu().to_sparse(sparse_dim=3).coalesce().to(case.device)
    else:
        A = members.cpu().to_sparse_csr().to(case.device)
    values = A.values().detach().reshape(BATCH, -1).clone().requires_grad_()
    B = B.requires_grad_()
    pattern = A.detach() if case.layout == "csr" else A.detach().coalesce()
    X = solve_values(
        pattern, values, B, backend=case.backend, method=case.method, **_solve_options(spec.kind, dtype, case)
    )
    G = torch.randn(X.shape, generator=torch.Generator().manual_seed(9), dtype=dtype).to(X.device)
    _loss(X, G).backward()
    D_ref = members.clone().requires_grad_()
    B_ref = B.detach().clone().requires_grad_()
    _loss(torch.linalg.solve(D_ref, B_ref), G).backward()
    _assert_close(X, torch.linalg.solve(members, B.detach()), "batched solution", case)
    _assert_close(B.grad, B_ref.grad, "gradient of the batched B", case)
    assert values.grad is not None and D_ref.grad is not None
    expected = D_ref.grad[members != 0].reshape(BATCH, -1)  # row-major: the values' order
    _assert_close(values.grad, expected, "gradient of each member's values", case)


def _check_batched_patterns(case: Case) -> None:
    """Members with different patterns: two share one, two are permuted (P D Pᵀ keeps nnz, symmetry and SPD)."""
    spec, D, _, _ = _problem(case, N_REFERENCE)
    dtype = DTYPES[case.dtype]
    generator = torch.Generator().manual_seed(_seed(case) + 3)
    base = D.cpu()
    permuted = [base[p][:, p] for p in (torch.randperm(N_REFERENCE, generator=generator) for _ in range(2))]
    members = torch.stack([base, permuted[0], 1.1 * base, permuted[1]]).to(case.device)
    A = members.cpu().to_sparse(sparse_dim=3).coalesce() if case.layout == "coo" else members.cpu().to_sparse_csr()
    A = A.to(case.device).requires_grad_()
    B = torch.randn(4, N_REFERENCE, K_MATRIX, generator=generator, dtype=dtype).to(case.device).requires_grad_()
    X = solve(A, B, backend=case.backend, method=case.method, **_solve_options(spec.kind, dtype, case))
    G = torch.randn(X.shape, generator=torch.Generator().manual_seed(11), dtype=dtype).to(X.device)
    _loss(X, G).backward()
    D_ref, B_ref = members.clone().requires_grad_(), B.detach().clone().requires_grad_()
    _loss(torch.linalg.solve(D_ref, B_ref), G).backward()
    _assert_close(X, torch.linalg.solve(members, B.detach()), "solution of a batch with different patterns", case)
    _assert_close(B.grad, B_ref.grad, "gradient of B", case)
    assert A.grad is not None and A.grad.layout == A.layout and D_ref.grad is not None
    _assert_close(A.grad.to_dense(), D_ref.grad * (members != 0), "gradient of each member in its pattern", case)


# --- triangular and least-squares methods --------------------------------------


def _triangle(case: Case, n: int, upper: bool, unit: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Stored entries (dense) of a nonsymmetric triangular matrix, and the matrix they mean.

    At least ``n - 1`` entries off the diagonal (a small random triangle may have none).
    """
    seed = _seed(case)
    while True:
        stored, meaning = triangular_pair(n, upper=upper, unit_diagonal=unit, seed=seed, dtype=DTYPES[case.dtype])
        if int(torch.count_nonzero(stored)) - int(torch.count_nonzero(torch.diagonal(stored))) >= n - 1:
            return stored, meaning
        seed += 1


def _rhs(case: Case, rows: int) -> torch.Tensor:
    k = RHS_SHAPES[case.rhs]
    generator = torch.Generator().manual_seed(_seed(case) + 1)
    shape = (rows,) if k is None else (rows, k)
    return torch.randn(shape, generator=generator, dtype=DTYPES[case.dtype]).to(case.device)


def _check_triangular(case: Case) -> None:
    for upper, unit, transpose in itertools.product((True, False), repeat=3):
        stored, meaning = _triangle(case, N_REFERENCE, upper, unit)
        A = to_layout(stored, case.layout).to(case.device).requires_grad_()
        B = _rhs(case, N_REFERENCE).requires_grad_()
        X = triangular_solve(
            A, B, upper=upper, unit_diagonal=unit, transpose=transpose, backend=case.backend, method=case.method
        )
        G = torch.randn(X.shape, generator=torch.Generator().manual_seed(3), dtype=X.dtype).to(X.device)
        _loss(X, G).backward()
        M = meaning.to(case.device).requires_grad_()
        B_ref = B.detach().clone().requires_grad_()
        op = M.T if transpose else M
        X_ref = torch.linalg.solve_triangular(op, B_ref.reshape(N_REFERENCE, -1), upper=upper != transpose)
        _loss(X_ref.reshape(B.shape), G).backward()
        what = f"upper={upper} unit_diagonal={unit} transpose={transpose}"
        _assert_close(X, X_ref.reshape(B.shape), f"{what}: solution", case)
        _assert_close(B.grad, B_ref.grad, f"{what}: gradient of B", case)
        assert A.grad is not None and A.grad.layout == A.layout and M.grad is not None
        _assert_close(A.grad.to_dense(), M.grad * (stored.to(case.device) != 0), f"{what}: gradient of A", case)


def _tall(case: Case) -> torch.Tensor:
    generator = torch.Generator().manual_seed(_seed(case))
    m, n = 2 * N_GRADCHECK, N_GRADCHECK
    dtype = DTYPES[case.dtype]
    D = torch.randn(m, n, generator=generator, dtype=dtype) * (torch.rand(m, n, generator=generator) < 0.4)
    # complex: neither A nor AᴴA is real, so the Wirtinger gradients are exercised
    return D + torch.cat([2 * torch.eye(n, dtype=dtype), torch.zeros(m - n, n, dtype=dtype)])


def _lstsq_options(case: Case, kind: str) -> dict[str, Any]:
    options = dict(case.options)
    if kind == "iterative":
        options.setdefault("rtol", 1e-12 if case.dtype in ("float64", "complex128") else 1e-5)
    return options


def _check_lstsq(case: Case) -> None:
    spec = get_entry(case.backend).backend.methods[case.method]
    D = _tall(case).to(case.device)
    m = D.shape[0]
    A = to_layout(D.cpu(), case.layout).to(case.device).requires_grad_()
    B = _rhs(case, m).requires_grad_()  # generic B: the residual is not zero
    X = lstsq(A, B, backend=case.backend, method=case.method, **_lstsq_options(case, spec.kind))
    G = torch.randn(X.shape, generator=torch.Generator().manual_seed(3), dtype=X.dtype).to(X.device)
    _loss(X, G).backward()
    D_ref = D.clone().requires_grad_()
    B_ref = B.detach().clone().requires_grad_()
    X_ref = torch.linalg.solve(D_ref.mH @ D_ref, D_ref.mH @ B_ref.reshape(m, -1)).reshape(X.shape)
    _loss(X_ref, G).backward()
    _assert_close(X, X_ref, "least-squares solution", case)
    _assert_close(B.grad, B_ref.grad, "gradient of B", case)
    assert A.grad is not None and A.grad.layout == A.layout and D_ref.grad is not None
    _assert_close(A.grad.to_dense(), D_ref.grad * (D != 0), "gradient of A (with its residual term)", case)


def _check_operation_gradcheck(case: Case) -> None:
    spec = get_entry(case.backend).backend.methods[case.method]
    if spec.operation == "triangular":
        stored, _ = _triangle(case, N_GRADCHECK, upper=False, unit=False)
    else:
        stored = _tall(case)
    A = to_layout(stored, case.layout).to(case.device)
    if A.is_complex():  # torch's CSR constructor has no complex autograd; COO's has
        A = to_layout(stored, "coo").to(case.device)
    params = A.values().clone().requires_grad_()
    B = _rhs(case, A.shape[0]).requires_grad_()

    def function(p: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        matrix = _sparse_from_values(A, p)
        X: torch.Tensor
        if spec.operation == "triangular":
            X = triangular_solve(matrix, rhs, upper=False, transpose=True, backend=case.backend, method=case.method)
        else:
            X = lstsq(matrix, rhs, backend=case.backend, method=case.method, **_lstsq_options(case, spec.kind))
        return X

    nondet_tol = case.nondet_tol if case.nondet_tol is not None else (1e-10 if case.device == "cuda" else 0.0)
    atol = _finite_difference_atol(spec.kind)
    assert torch.autograd.gradcheck(function, (params, B), atol=atol, rtol=1e-4, nondet_tol=nondet_tol), (
        f"{case}: gradcheck failed"
    )


def _check_lstsq_policy(case: Case) -> None:
    D = _tall(case).to(case.device)
    A = to_layout(D.cpu(), case.layout).to(case.device)
    B = _rhs(case, D.shape[0])
    try:
        lstsq(A, B, backend=case.backend, method=case.method, **dict(case.options, rtol=1e-14, maxiter=1))
    except ConvergenceError:
        return
    raise AssertionError(f"{case}: one iteration at rtol=1e-14 did not raise ConvergenceError")


def _check_complex_refused(case: Case) -> None:
    """A method not declared ``complex``, named for a complex ``A``, raises ComplexNotSupportedError."""
    spec = get_entry(case.backend).backend.methods[case.method]
    D = torch.eye(4, dtype=torch.complex128) * (2 + 1j)
    A = to_layout(D, case.layout).to(case.device)
    B = torch.ones(4, dtype=torch.complex128, device=case.device)
    try:
        if spec.operation == "triangular":
            triangular_solve(A, B, upper=False, backend=case.backend, method=case.method)
        elif spec.operation == "lstsq":
            lstsq(A, B, backend=case.backend, method=case.method)
        else:
            solve(A, B, backend=case.backend, method=case.method)
    except ComplexNotSupportedError as error:
        assert case.method in str(error), f"{case}: the refusal does not name the method: {error}"
        return
    raise AssertionError(f"{case}: a method not declared complex accepted a complex A")


def _check_selected_inversion(case: Case) -> None:
    """The capability's two methods on a prepared state, and slogdet's value and gradient, against dense torch."""
    entry = get_entry(case.backend)
    backend = entry.backend
    assert isinstance(backend, SelectedInversionBackend), (
        f"{case}: method declared selected_inversion, but the backend does not implement SelectedInversionBackend"
    )
    dtype = DTYPES[case.dtype]
    wide = torch.complex128 if dtype.is_complex else torch.float64
    assumes = backend.methods[case.method].assumes
    D = matrix_for(assumes, N_REFERENCE, seed=_seed(case), dtype=wide)
    flipped = D[torch.cat([torch.tensor([1, 0]), torch.arange(2, N_REFERENCE)])]
    for dense in (D, flipped) if assumes == "general" else (D,):  # det > 0 and < 0; an SPD method: det > 0
        dense = dense.to(dtype)
        A = to_layout(dense.cpu(), case.layout).to(case.device)
        sign_ref, logabsdet_ref = torch.linalg.slogdet(dense.to(wide))
        inverse = torch.linalg.inv(dense.to(wide))
        csr = A.to_sparse_csr() if A.layout == torch.sparse_coo else A
        options = resolve_options(backend.methods[case.method], case.backend, dict(case.options), N_REFERENCE, dtype)
        state = backend.prepare(csr.detach(), case.method, options)
        sign, logabsdet = backend.logdet(state)
        assert sign.shape == () and logabsdet.shape == (), f"{case}: logdet() must return two 0-d tensors"
        _assert_close(sign, sign_ref.to(dtype), "logdet()'s sign", case)
        _assert_close(logabsdet, logabsdet_ref.to(dtype.to_real()), "logdet()", case)
        rows, cols = csr.to_sparse_coo().indices()
        rows, cols = (
            torch.cat([rows, cols, torch.arange(N_REFERENCE)]),
            torch.cat([cols, rows, torch.arange(N_REFERENCE)]),
        )
        entries = backend.selected_inverse(state, rows.to(case.device), cols.to(case.device))
        assert entries.dtype == dtype, f"{case}: selected_inverse() returned {entries.dtype} for {dtype}"
        _assert_close(entries.cpu(), inverse[rows, cols].to(dtype), "selected_inverse()", case)
        leaf = A.detach().requires_grad_()
        sign, logabsdet = slogdet(leaf, backend=case.backend, method=case.method, **case.options)
        logabsdet.backward()
        assert leaf.grad is not None and leaf.grad.layout == A.layout, f"{case}: the gradient is not in A's layout"
        expected = (inverse.mH * (dense != 0)).to(dtype)  # A⁻ᵀ; A⁻ᴴ for complex (PyTorch's convention)
        _assert_close(leaf.grad.to_dense().cpu(), expected, "∂ logabsdet / ∂A", case)


def _check_sampling(case: Case) -> None:
    """The capability's ``precision_sample`` on a prepared state, its refusal of an indefinite A, and the GMRF."""
    entry = get_entry(case.backend)
    backend = entry.backend
    assert isinstance(backend, SamplingBackend) and isinstance(backend, SelectedInversionBackend), (
        f"{case}: method declared sampling, but the backend does not implement SamplingBackend and "
        "SelectedInversionBackend"
    )
    dtype = DTYPES[case.dtype]
    n = N_REFERENCE
    D = matrix_for("spd", n, seed=_seed(case), dtype=torch.float64)
    A = to_layout(D.to(dtype), case.layout).to(case.device)
    csr = A.to_sparse_csr() if A.layout == torch.sparse_coo else A
    options = resolve_options(backend.methods[case.method], case.backend, dict(case.options), n, dtype)
    state = backend.prepare(csr.detach(), case.method, options)
    Z = torch.eye(n, dtype=dtype, device=case.device)
    S = backend.precision_sample(state, Z)
    assert S.shape == Z.shape and S.dtype == dtype, f"{case}: precision_sample() returned {S.shape} {S.dtype}"
    product = (S.double().T.cpu() @ D @ S.double().cpu()).to(dtype)  # judged at the dtype's tolerance
    _assert_close(product, torch.eye(n, dtype=dtype), "Sᵀ A S = I", case)
    indefinite = random_symmetric_indefinite(n, seed=_seed(case), dtype=torch.float64)
    assert float(torch.linalg.eigvalsh(indefinite)[0]) < 0
    bad = to_layout(indefinite.to(dtype), "csr").to(case.device)
    try:
        backend.prepare(bad, case.method, options)
    except (NotPositiveDefiniteError, SingularMatrixError):
        pass
    else:
        raise AssertionError(f"{case}: prepare() accepted a symmetric indefinite A")
    g = torch.Generator().manual_seed(_seed(case))
    loc, x = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(2, n, generator=g, dtype=torch.float64)
    leaf = A.detach().requires_grad_()
    field = GaussianMarkovRandomField(
        loc.to(dtype).to(case.device), leaf, backend=case.backend, method=case.method, **case.options
    )
    log_prob = field.log_prob(x.to(dtype).to(case.device))
    reference = torch.distributions.MultivariateNormal(loc, precision_matrix=D)
    _assert_close(log_prob.cpu(), reference.log_prob(x).to(dtype), "GaussianMarkovRandomField.log_prob", case)
    _assert_close(field.variance.cpu(), reference.variance.to(dtype), "GaussianMarkovRandomField.variance", case)
    log_prob.sum().backward()
    r = x - loc  # ∂/∂Q_ij of Σ log p = −½ Σ (r_i r_j − (Q⁻¹)_ji) at the stored entries
    expected = -0.5 * (torch.einsum("si,sj->ij", r, r) - 2 * torch.linalg.inv(D).T) * (D != 0)
    assert leaf.grad is not None and leaf.grad.layout == A.layout, f"{case}: the gradient is not in A's layout"
    _assert_close(leaf.grad.to_dense().cpu(), expected.to(dtype), "∂ log_prob / ∂Q", case)


_RUNNERS: dict[str, Callable[[Case], None]] = {
    "complex-refused": _check_complex_refused,
    "triangular": _check_triangular,
    "triangular-gradcheck": _check_operation_gradcheck,
    "lstsq": _check_lstsq,
    "lstsq-gradcheck": _check_operation_gradcheck,
    "lstsq-policy": _check_lstsq_policy,
    "reference": _check_reference,
    "int32": lambda case: _check_reference(case, torch.int32),
    "batched": _check_batched,
    "batched-patterns": _check_batched_patterns,
    "factorize": _check_factorize,
    "transpose": _check_transpose,
    "gradcheck": _check_gradcheck,
    "gradgradcheck": lambda case: _check_gradcheck(case, second_order=True),
    "policy": _check_policy,
    "options": _check_options,
    "unmodified": _check_unmodified,
    "x0": _check_x0,
    "transforms": _check_transforms,
    "selected-inversion": _check_selected_inversion,
    "sampling": _check_sampling,
}


@quietly
def run_case(case: Case) -> None:
    """Run one conformance case; raises ``AssertionError`` (or the solve's error) on failure."""
    _RUNNERS[case.check](case)
