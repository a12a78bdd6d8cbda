"""The one solve pipeline: declared options, selection errors, plugin failures, patterns, info, warnings."""

import pathlib
import re
import warnings

import numpy as np
import pytest
import torch

import tsgu_core
from tsgu_core import Option, SparsePattern, errors
from tsgu_core.plugins.protocol import Availability, BackendReport, MethodSpec
from tsgu_core.testing import DenseBackend, random_nonsymmetric, random_spd, to_layout, triangular_pair

N = 8


@pytest.fixture
def A():
    return to_layout(random_nonsymmetric(N, seed=3), "csr")


@pytest.fixture
def b():
    return torch.linspace(1.0, 2.0, N, dtype=torch.float64)


# --- options -------------------------------------------------------------------------------------


def test_option_check_normalises_numbers_and_enforces_declarations():
    count = Option("a count", type=int, default=3, minimum=1)
    assert count.check("count", np.int64(7)) == 7 and type(count.check("count", np.int64(7))) is int
    for bad in (True, 2.5, "4"):
        with pytest.raises(errors.InvalidOptionError, match="option count must be int"):
            count.check("count", bad)
    with pytest.raises(errors.InvalidOptionError, match="≥ 1") as caught:
        count.check("count", 0)
    assert caught.value.option == "count" and isinstance(caught.value, ValueError | TypeError)
    name = Option("a name", type=str, choices=("a", "b"))
    assert name.check("name", None) is None  # unset is allowed when the default is None
    with pytest.raises(errors.InvalidOptionError, match=r"one of \['a', 'b'\]"):
        name.check("name", "c")
    assert Option("x", type=float).check("x", np.float32(0.5)) == 0.5


def test_method_spec_reads_a_plain_string_as_a_doc_and_refuses_core_options():
    spec = MethodSpec("m", "iterative", "general", {"knob": "turns things"})
    assert spec.options["knob"] == Option("turns things")
    assert list(spec.accepted_options)[:4] == ["rtol", "atol", "maxiter", "x0"]
    with pytest.raises(errors.BackendContractError, match="supplied by the core"):
        MethodSpec("m", "iterative", "general", {"rtol": Option("mine")})


class RecordingBackend(DenseBackend):
    """Records the options ``prepare`` receives."""

    methods = {
        "lu": MethodSpec(
            "lu",
            "direct",
            "general",
            {"pivoting": Option("pivot or not", type=bool, default=True), "label": Option("a label", type=str)},
        )
    }

    def prepare(self, A, method, options):
        self.seen = options
        return super().prepare(A, method, options)


def test_the_core_fills_defaults_and_checks_values_before_prepare(register, A, b):
    backend = register(RecordingBackend(name="recording"))
    tsgu_core.solve(A, b, backend="recording", label="x")
    assert dict(backend.seen.extra) == {"pivoting": True, "label": "x"} and backend.seen["pivoting"] is True
    with pytest.raises(errors.InvalidOptionError, match="option pivoting must be bool"):
        tsgu_core.solve(A, b, backend="recording", pivoting="yes")


def test_iterative_options_are_numbers_and_integral_types_are_accepted(A, b):
    x, info = tsgu_core.solve(
        A, b, backend="torch", method="gmres", rtol=np.float64(1e-12), maxiter=np.int64(200), restart=np.int32(5),
        return_info=True,
    )  # fmt: skip
    torch.testing.assert_close(x, torch.linalg.solve(A.to_dense(), b))
    assert info.converged


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"restart": 0}, "restart"),
        ({"maxiter": 0}, "maxiter"),
        ({"rtol": float("nan")}, "rtol"),
        ({"atol": -1}, "atol"),
    ],
)
def test_bad_numbers_name_the_option(A, b, options, name):
    with pytest.raises(errors.InvalidOptionError, match=f"option {name}") as caught:
        tsgu_core.solve(A, b, backend="torch", method="gmres", **options)
    assert caught.value.option == name


def test_unknown_option_lists_declarations_with_types_and_defaults(A, b):
    with pytest.raises(errors.UnknownOptionError) as caught:
        tsgu_core.solve(A, b, backend="torch", method="gmres", tol=1e-3)
    message = str(caught.value)
    assert "restart: Krylov dimension before a restart (int; default 20; ≥ 1)" in message
    assert "preconditioner:" in message and "one of 'jacobi'" in message


def test_a_preconditioner_of_the_wrong_shape_is_an_option_error(A, b):
    with pytest.raises(errors.InvalidOptionError, match=r"M has shape \(3, 3\)"):
        tsgu_core.solve(A, b, backend="scipy", method="gmres", M=np.eye(3))


# --- selection -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gmress", "LU", 3])
def test_a_mistyped_method_without_backend_lists_the_valid_ones(A, b, method):
    with pytest.raises(errors.UnknownMethodError) as caught:
        tsgu_core.solve(A, b, method=method)
    if isinstance(method, str):
        assert "gmres" in caught.value.valid and "splu" in caught.value.valid
        assert "gmres" in str(caught.value)


@pytest.mark.parametrize("device", ["tpu", 3, None])
def test_explain_rejects_what_is_not_a_device(device):
    with pytest.raises(errors.InvalidArgumentError):
        tsgu_core.explain(device)


def test_distributed_selection_only_considers_distributed_backends():
    with pytest.raises(errors.UnsupportedDeviceError, match="does not offer distributed solves"):
        tsgu_core.plugins.select.select("torch", "cpu", None, capability="distributed")
    petsc = tsgu_core.get_entry("petsc")
    if not petsc.availability("cpu"):
        with pytest.raises(errors.BackendUnavailableError, match="petsc"):
            tsgu_core.plugins.select.select(None, "cpu", None, capability="distributed")
    else:
        assert tsgu_core.plugins.select.select(None, "cpu", None, capability="distributed").backend == "petsc"


# --- what a plugin can do wrong ---------------------------------------------------------------------


class FaultyBackend(DenseBackend):
    def __init__(self, name, fault_in, fault):
        super().__init__(name=name)
        self.fault_in, self.fault = fault_in, fault

    def prepare(self, A, method, options):
        if self.fault_in == "prepare":
            raise self.fault
        return super().prepare(A, method, options)

    def solve(self, state, B, *, transpose, x0=None):
        if self.fault_in == "solve" or (self.fault_in == "transpose" and transpose):
            raise self.fault
        if self.fault_in == "none-result":
            return None
        return super().solve(state, B, transpose=transpose, x0=x0)


@pytest.mark.parametrize("where", ["prepare", "solve", "transpose"])
def test_a_plugin_exception_is_wrapped_with_backend_and_method(register, A, b, where):
    register(FaultyBackend("faulty", where, ZeroDivisionError("oops")))
    A = A.clone().requires_grad_()
    with pytest.raises(
        errors.BackendError, match=r"backend 'faulty', method 'lu': .*ZeroDivisionError: oops"
    ) as caught:
        tsgu_core.solve(A, b, backend="faulty").sum().backward()
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
    assert (caught.value.backend, caught.value.method) == ("faulty", "lu")


def test_interrupts_pass_through_untouched(register, A, b):
    register(FaultyBackend("interrupted", "solve", KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        tsgu_core.solve(A, b, backend="interrupted")


def test_a_solve_that_returns_nothing_breaks_the_contract(register, A, b):
    register(FaultyBackend("empty-handed", "none-result", None))
    with pytest.raises(errors.BackendContractError, match=r"must return \(X, BackendReport\)"):
        tsgu_core.solve(A, b, backend="empty-handed")


def test_a_plugin_that_registers_nothing_is_reported_broken():
    class Idle:
        @tsgu_core.hookimpl
        def tsgu_register_backends(self, register):
            pass

    with pytest.raises(errors.PluginLoadError, match="registered no backend"):
        tsgu_core.register_plugin(Idle(), name="idle-plugin")
    assert "idle-plugin" not in [b.plugin for b in tsgu_core.list_broken_plugins()]  # raised, not kept


def test_a_misspelled_hook_is_reported_not_ignored():
    class Misspelled:
        @tsgu_core.hookimpl
        def tsgu_register_backend(self, register):  # no such hook
            register(DenseBackend(name="never"))

    with pytest.raises(errors.PluginLoadError, match="tsgu_register_backend"):
        tsgu_core.register_plugin(Misspelled(), name="misspelled-plugin")
    with pytest.raises(errors.UnknownBackendError):
        tsgu_core.get_backend("never")


# --- non-finite numbers the user did not see coming ----------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "scipy"])
def test_a_nan_upstream_gradient_is_named_not_blamed_on_A(A, b, backend):
    A = A.clone().requires_grad_()
    x = tsgu_core.solve(A, b, backend=backend)
    with pytest.raises(errors.NonFiniteError, match="upstream gradient"):
        (x * torch.tensor(float("nan"), dtype=torch.float64)).sum().backward()


def test_a_nan_in_x0_is_named(A, b):
    x0 = torch.zeros(N, dtype=torch.float64)
    x0[2] = float("nan")
    with pytest.raises(errors.NonFiniteError, match="x0 contains 1 non-finite"):
        tsgu_core.solve(A, b, backend="torch", x0=x0)


# --- warnings, info, patterns ---------------------------------------------------------------------


def test_a_convergence_warning_points_at_the_caller_and_gives_fitting_advice(A, b):
    A = A.clone().requires_grad_()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x = tsgu_core.solve(A, b, backend="torch", method="gmres", maxiter=1, rtol=1e-14, on_failure="warn")
        x.sum().backward()
    raised = [w for w in caught if issubclass(w.category, errors.ConvergenceWarning)]
    assert len(raised) == 2  # the forward solve and the backward's transpose solve
    assert {pathlib.Path(w.filename).resolve() for w in raised} == {pathlib.Path(__file__).resolve()}
    assert all("on_failure='warn'" not in str(w.message) for w in raised)


def test_info_is_returned_and_the_backward_solve_is_recorded(A, b):
    A = A.clone().requires_grad_()
    x, info = tsgu_core.solve(A, b, backend="torch", rtol=1e-12, return_info=True)
    assert info.backward is None and not info.transpose
    x.sum().backward()
    assert info.backward is not None and info.backward.transpose and info.backward.converged
    with pytest.raises(TypeError):
        tsgu_core.SolveInfo("torch", "gmres")  # keyword-only


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sparse_pattern_is_public_and_drives_solve_values(layout):
    D = random_nonsymmetric(N, seed=4)
    A = to_layout(D, layout)
    pattern = SparsePattern.of(A)
    assert pattern.nnz == A._nnz() and pattern.n == N
    torch.testing.assert_close(pattern.to_csr(A.values()).to_dense(), D)
    transposed, order = pattern.transposed()
    torch.testing.assert_close(transposed.to_csr(A.values()[order]).to_dense(), D.T)
    torch.testing.assert_close(pattern.diagonal(A.values()), torch.diagonal(D))
    values = A.values().clone().requires_grad_()
    b = torch.arange(1.0, N + 1, dtype=torch.float64)
    x = tsgu_core.solve_values(pattern, values, b, backend="scipy")
    x.square().sum().backward()
    D_ref = D.clone().requires_grad_()
    torch.linalg.solve(D_ref, b).square().sum().backward()
    torch.testing.assert_close(x, torch.linalg.solve(D, b))
    torch.testing.assert_close(values.grad, D_ref.grad[D != 0])


def test_solve_values_checks_values_against_a_pattern():
    pattern = SparsePattern.of(to_layout(random_nonsymmetric(N, seed=4), "csr"))
    b = torch.ones(N, dtype=torch.float64)
    with pytest.raises(errors.ShapeError, match=f"values must have shape \\({pattern.nnz},\\)"):
        tsgu_core.solve_values(pattern, torch.ones(pattern.nnz + 1, dtype=torch.float64), b)
    with pytest.raises(errors.DtypeMismatchError):
        tsgu_core.solve_values(pattern, torch.ones(pattern.nnz, dtype=torch.int64), b)


# --- structure hints ---------------------------------------------------------------------------------


HINTS = [
    ("scipy", "spd", "cg"),
    ("torch", "spd", "cg"),
    ("torch", "symmetric", "minres"),
    ("scipy", "hermitian", "minres"),
]


@pytest.mark.parametrize(("backend", "assume", "expected"), HINTS)
def test_a_structure_hint_picks_the_method_that_exploits_it(backend, assume, expected):
    D = random_spd(N, seed=6)
    A = to_layout(D, "csr").requires_grad_()
    b = torch.arange(1.0, N + 1, dtype=torch.float64, requires_grad=True)
    x, info = tsgu_core.solve(A, b, backend=backend, assume=assume, rtol=1e-12, return_info=True)
    assert info.method == expected
    x.square().sum().backward()
    D_ref, b_ref = D.clone().requires_grad_(), b.detach().clone().requires_grad_()
    torch.linalg.solve(D_ref, b_ref).square().sum().backward()
    torch.testing.assert_close(x, torch.linalg.solve(D, b.detach()))
    torch.testing.assert_close(b.grad, b_ref.grad)
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (D != 0))
    assert f"assume={assume!r}" in tsgu_core.explain(A, backend=backend, assume=assume).reason


def test_a_false_structure_claim_is_refused(A, b):
    with pytest.raises(errors.StructureError, match="assume='spd' needs a symmetric A"):
        tsgu_core.solve(A, b, assume="spd")
    S = random_spd(N, seed=6)
    S[3, 3] = -S[3, 3]
    with pytest.raises(errors.StructureError, match=r"diagonal entry \(3, 3\) is not positive"):
        tsgu_core.solve(to_layout(S, "csr"), b, assume="spd")
    with pytest.raises(errors.InvalidArgumentError, match="assume must be one of"):
        tsgu_core.solve(A, b, assume="positive")


def test_symmetry_is_judged_relative_to_the_dtype():
    S = random_spd(N, seed=6)
    S[0, 1] *= 1 + 1e-14  # rounding-level asymmetry: still symmetric
    b = torch.ones(N, dtype=torch.float64)
    x = tsgu_core.solve(to_layout(S, "coo"), b, backend="torch", assume="symmetric", rtol=1e-12)
    torch.testing.assert_close(x, torch.linalg.solve(S, torch.ones(N, dtype=torch.float64)))


@pytest.mark.parametrize("assume", ["lower", "upper"])
def test_a_triangular_hint_solves_triangularly(assume):
    stored, meaning = triangular_pair(N, upper=assume == "upper", seed=2)
    b = torch.ones(N, dtype=torch.float64)
    x, info = tsgu_core.solve(to_layout(stored, "csr"), b, assume=assume, return_info=True)
    assert info.method in ("triangular", "spsolve_triangular")
    torch.testing.assert_close(x, torch.linalg.solve(meaning, b))
    with pytest.raises(errors.StructureError, match="not (upper|lower) triangular"):
        tsgu_core.solve(to_layout(stored.T.contiguous(), "csr"), b, assume=assume)


def test_no_untyped_raise_in_the_packages():
    """Every deliberate error is a TsguError (which also derives from the builtin a user expects)."""
    root = pathlib.Path(tsgu_core.__file__).parent.parent
    plain = re.compile(r"raise (ValueError|TypeError|RuntimeError)\(")
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for package in ("tsgu_core", "tsgu_backends")
        for path in sorted((root / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if plain.search(line)
    ]
    assert not offenders, f"plain builtin raises: {offenders}"


def test_availability_and_report_are_importable_from_the_top():
    assert tsgu_core.Availability is Availability and tsgu_core.BackendReport is BackendReport


@pytest.mark.parametrize(
    ("backend", "method"), [("torch", "gmres"), ("torch", "bicgstab"), ("scipy", "gmres"), ("jax", "bicgstab")]
)
def test_iterative_solves_report_their_residual_history(backend, method):
    """SolveInfo.history: the true relative residual at every attempt, from 1 (x0 = 0) down, forward and backward."""
    if backend == "jax":
        pytest.importorskip("jax", reason="needs JAX")
    A = to_layout(random_nonsymmetric(N, seed=5), "csr").requires_grad_()
    b = torch.ones(N, dtype=torch.float64)
    options = {"restart": 2} if method == "gmres" else {}
    x, info = tsgu_core.solve(A, b, backend=backend, method=method, rtol=1e-12, return_info=True, **options)
    x.sum().backward()
    for record in (info, info.backward):
        assert record.history is not None and len(record.history) >= 2
        assert record.history[0] == pytest.approx(1.0, abs=1e-6)  # the zero start (a nudge changes it by ~1e-6)
        assert record.history[-1] == pytest.approx(record.max_residual, rel=1e-3, abs=1e-15)
        assert record.history[-1] <= 1e-12 < record.history[0]
        assert "residual history: 1 → " in str(record)
    if method == "gmres" and backend == "torch":  # GMRES(2) restarts: one entry per cycle
        assert len(info.history) > 3
    direct = tsgu_core.solve(A.detach(), b, backend="scipy", method="splu", return_info=True)[1]
    assert direct.history is None


def test_tsgu_prints_none_of_torchs_sparse_notices():
    """solve (COO input), its backward, lstsq and factorize build CSR tensors inside tsgu: no torch notice."""
    import subprocess
    import sys

    code = (
        "import torch, tsgu_core\n"
        "D = torch.tensor([[4.0, 1.0, 0.0], [2.0, 5.0, 1.0], [0.0, 1.0, 3.0]], dtype=torch.float64)\n"
        "A = D.to_sparse().requires_grad_()\n"
        "b = torch.ones(3, dtype=torch.float64, requires_grad=True)\n"
        "for backend in ('scipy', 'torch'):\n"
        "    tsgu_core.solve(A, b, backend=backend).sum().backward()\n"
        "tsgu_core.lstsq(A.detach(), b.detach(), backend='torch')\n"
        "tsgu_core.factorize(A, backend='scipy').solve(b).sum().backward()\n"
    )
    result = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, check=True)
    assert result.stderr == ""
