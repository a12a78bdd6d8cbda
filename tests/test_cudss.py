"""The ``cudss`` backend (NVIDIA cuDSS through nvmath-python).

Three layers, because the machines this suite runs on have no GPU:

* the CUDA conformance cases of the real backend — they skip here with a
  reason naming the missing device (or nvmath-python) and run where both exist;
* CPU tests of what must hold everywhere: the availability probe, the option
  declarations, selection unchanged by the plugin on this machine, and no
  nvmath/CuPy import from importing the plugin or asking availability;
* the backend's own logic (int32 CSR, column-major right-hand sides in blocks,
  the transposed solve by factorizing ``Aᵀ`` or reusing symmetric factors,
  batches, complex, freeing) run on the CPU against a stand-in for nvmath's
  ``DirectSolver`` that solves densely — through the whole conformance kit
  and against dense ``torch.linalg.solve``. This tests the glue, not cuDSS.

Works with the entry point installed or not: absent, the plugin module is
registered in-process (as ``TSGU_PLUGINS=tsgu_backends.cudss_backend.plugin`` would).
"""

import gc
import importlib.util
import json
import os
import subprocess
import sys
import types

import pytest
import torch

import tsgu_core
from tsgu_backends.cudss_backend import backend as cudss_backend
from tsgu_core import SolveOptions
from tsgu_core.testing import conformance_cases, random_nonsymmetric, random_spd, run_case, to_layout

# Without the entry point installed, the plugin is registered only while this module lists its cases and while
# its tests run, so that other test modules (and `tsgu` subprocesses) see the same backends as before.
_REGISTERED_HERE = "cudss" not in [entry.name for entry in tsgu_core.list_backends()]


def _register() -> None:
    from tsgu_backends.cudss_backend import plugin

    tsgu_core.register_plugin(plugin, name="cudss")


if _REGISTERED_HERE:
    _register()
_CASES = conformance_cases("cudss")
_CUDSS_HERE = tsgu_core.get_entry("cudss").availability("cuda")
if _REGISTERED_HERE:
    tsgu_core.unregister_plugin("cudss")


@pytest.fixture(autouse=True)
def _cudss_registered():
    if not _REGISTERED_HERE:
        yield
        return
    _register()
    try:
        yield
    finally:
        tsgu_core.unregister_plugin("cudss")


# --- the real backend: CUDA conformance (skips without a device) -----------------------------------------------


@pytest.mark.parametrize("case", _CASES, ids=str)
def test_conformance(case):
    run_case(case)


def test_conformance_cases_skip_with_the_missing_thing_named():
    if _CUDSS_HERE:
        pytest.skip("cuDSS is available here: the cases run instead of skipping")
    assert _CASES
    for case in _CASES:
        (skip,) = [mark for mark in case.marks if mark.name == "skip"]
        assert skip.kwargs["reason"].startswith("needs a CUDA device: ")


needs_cudss = pytest.mark.skipif(not _CUDSS_HERE, reason=f"needs a CUDA device with cuDSS: {_CUDSS_HERE.reason}")


def _on_cuda(D: torch.Tensor, layout: str) -> torch.Tensor:
    return to_layout(D, layout).to("cuda")


@pytest.mark.cuda
@needs_cudss
def test_cuda_default_is_cudss():
    chosen = tsgu_core.explain("cuda")
    assert (chosen.backend, chosen.method) == ("cudss", "cudss")


@pytest.mark.cuda
@needs_cudss
@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_cuda_forward_and_gradients_against_dense(layout, k, dtype):
    D = random_nonsymmetric(40, seed=11, dtype=dtype)
    A = _on_cuda(D, layout).requires_grad_()
    generator = torch.Generator().manual_seed(1)
    B = torch.randn(40, *(() if k is None else (k,)), generator=generator, dtype=dtype).to("cuda").requires_grad_()
    X, info = tsgu_core.solve(A, B, backend="cudss", return_info=True)
    X.abs().square().sum().backward()
    D_ref = D.to("cuda").requires_grad_()
    B_ref = B.detach().clone().requires_grad_()
    X_ref = torch.linalg.solve(D_ref, B_ref)
    X_ref.abs().square().sum().backward()
    torch.testing.assert_close(X, X_ref)
    torch.testing.assert_close(B.grad, B_ref.grad)
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (D != 0).to("cuda"))
    assert info.backend == "cudss" and "cuDSS LU" in info.message


@pytest.mark.cuda
@needs_cudss
def test_cuda_transpose_factors_made_once_and_widths_reuse_them():
    D = random_nonsymmetric(30, seed=12)
    backend = tsgu_core.get_backend("cudss")
    state = backend.prepare(_on_cuda(D, "csr"), "cudss", _options())
    generator = torch.Generator().manual_seed(2)
    D_cuda = D.to("cuda")
    made = None
    for transpose, k in [(False, 2), (True, 2), (False, 5), (True, 1), (True, 2)]:
        B = torch.randn(30, k, generator=generator, dtype=torch.float64).to("cuda")
        X, _ = backend.solve(state, B, transpose=transpose)
        torch.testing.assert_close(X, torch.linalg.solve(D_cuda.T if transpose else D_cuda, B))
        if transpose:
            made = made or state.transposed
            assert state.transposed is made is not None  # Aᵀ factorized at the first backward, then reused
    assert state.transpose_mode == "factors of Aᵀ"
    state.release()


@pytest.mark.cuda
@needs_cudss
def test_cuda_singular_a_raises():
    D = random_nonsymmetric(20, seed=13)
    D[5] = D[0] + D[1]
    with pytest.raises(tsgu_core.SingularMatrixError):
        tsgu_core.solve(_on_cuda(D, "csr"), torch.ones(20, dtype=torch.float64, device="cuda"), backend="cudss")


# --- CPU: probe, declarations, selection, imports ---------------------------------------------------------------


def test_probe_cpu_is_refused_without_looking_for_nvmath(monkeypatch):
    def no_lookup(name, *args):
        raise AssertionError(f"looked for {name} on a CPU request")

    monkeypatch.setattr(cudss_backend.importlib.util, "find_spec", no_lookup)
    available = cudss_backend.CudssBackend().is_available("cpu")
    assert not available
    assert available.reason == "serves only CUDA, not 'cpu'"


def test_probe_cuda_without_nvmath_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        cudss_backend.importlib.util, "find_spec", lambda name, *a: None if name == "nvmath" else real(name, *a)
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("asked torch before nvmath"))
    available = cudss_backend.CudssBackend().is_available("cuda")
    assert not available
    assert "nvmath-python" in available.reason
    assert available.install is not None and "tsgu[cudss]" in available.install


def test_probe_cuda_with_nvmath_but_no_device_imports_nothing(monkeypatch):
    monkeypatch.setattr(cudss_backend.importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(cudss_backend, "_cudss_status", lambda: pytest.fail("imported nvmath without a device"))
    available = cudss_backend.CudssBackend().is_available("cuda")
    assert not available and available.reason == "no CUDA device"


def test_probe_cuda_with_a_device_asks_the_library_once(monkeypatch):
    calls = []
    monkeypatch.setattr(cudss_backend.importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cudss_backend, "_cudss_status", lambda: calls.append(1) or tsgu_core.Availability.yes())
    assert cudss_backend.CudssBackend().is_available("cuda")
    assert calls == [1]


def test_library_status_reports_a_broken_nvmath(monkeypatch):
    broken = types.ModuleType("nvmath")  # no .bindings: the import inside the status check fails
    monkeypatch.setitem(sys.modules, "nvmath", broken)
    monkeypatch.setitem(sys.modules, "nvmath.bindings", None)
    cudss_backend._cudss_status.cache_clear()
    try:
        available = cudss_backend._cudss_status()
    finally:
        cudss_backend._cudss_status.cache_clear()
    assert not available
    assert available.reason.startswith("cuDSS cannot run here: ") and "tsgu[cudss]" in (available.install or "")


def test_method_declaration():
    backend = tsgu_core.get_backend("cudss")
    assert backend.device_types == ("cuda",)
    assert backend.default_method == "cudss"
    assert backend.priority > tsgu_core.get_backend("cupy").priority > tsgu_core.get_backend("torch").priority
    spec = backend.methods["cudss"]
    assert (spec.kind, spec.assumes, spec.batched, spec.complex, spec.operation) == (
        "direct",
        "general",
        True,
        True,
        "solve",
    )
    assert set(spec.options) == {"reordering", "pivot_eps", "ir_steps", "hybrid_memory"}
    assert spec.options["reordering"].choices == cudss_backend.REORDERINGS
    assert spec.options["ir_steps"].check("ir_steps", 2) == 2
    with pytest.raises(tsgu_core.InvalidOptionError):
        spec.options["ir_steps"].check("ir_steps", -1)
    with pytest.raises(tsgu_core.InvalidOptionError):
        spec.options["reordering"].check("reordering", "metis")
    with pytest.raises(tsgu_core.InvalidOptionError):
        spec.options["hybrid_memory"].check("hybrid_memory", 1)


@pytest.mark.parametrize(
    ("assume", "complex", "expected"),
    [
        ("general", False, "GENERAL"),
        ("general", True, "GENERAL"),
        ("spd", False, "SPD"),
        ("spd", True, "HPD"),
        ("symmetric", False, "SYMMETRIC"),
        ("hermitian", False, "SYMMETRIC"),
        ("symmetric", True, "GENERAL"),
        ("hermitian", True, "HERMITIAN"),
    ],
)
def test_matrix_type_from_assume(assume, complex, expected):
    assert cudss_backend.matrix_type(assume, complex) == expected


def _selections() -> dict[str, str]:
    """Every selection a solve can make on this machine, as text (an error's type and message included)."""
    outcome = {}
    for device in ("cpu", "cuda"):
        for operation in ("solve", "triangular", "lstsq"):
            for assume in ("general", "symmetric", "hermitian", "spd"):
                for dtype in (torch.float64, torch.complex128):
                    key = f"{device}/{operation}/{assume}/{dtype}"
                    try:
                        chosen = tsgu_core.explain(device, operation=operation, assume=assume, dtype=dtype)
                        outcome[key] = f"{chosen.backend}/{chosen.method}: {chosen.reason}"
                    except tsgu_core.TsguError as error:
                        outcome[key] = f"{type(error).__name__}"
    return outcome


def test_selection_unchanged_where_cudss_is_unavailable():
    if tsgu_core.get_entry("cudss").availability("cuda"):
        pytest.skip("cuDSS is available here: it is meant to change the CUDA default")
    with_plugin = _selections()
    entry = tsgu_core.get_entry("cudss")
    tsgu_core.unregister_plugin(entry.plugin)
    try:
        assert "cudss" not in [e.name for e in tsgu_core.list_backends()]
        without = _selections()
    finally:
        from tsgu_backends.cudss_backend import plugin

        tsgu_core.register_plugin(plugin, name=entry.plugin)
    assert "cudss" in [e.name for e in tsgu_core.list_backends()]
    assert with_plugin == without


_PROBE_SCRIPT = """
import json, sys
import tsgu_core
names = [e.name for e in tsgu_core.list_backends()]
if "cudss" not in names:
    from tsgu_backends.cudss_backend import plugin
    tsgu_core.register_plugin(plugin, name="cudss")
backend = tsgu_core.get_backend("cudss")
verdicts = {device: backend.is_available(device).reason for device in ("cpu", "cuda")}
chosen = tsgu_core.explain("cpu")
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("nvmath", "cupy", "cupyx", "nvidia"))
print(json.dumps({"verdicts": verdicts, "cpu": [chosen.backend, chosen.method], "heavy": heavy}))
"""


def test_plugin_and_probe_import_no_cuda_library():
    # the script registers the plugin itself when its entry point is not installed (TSGU_PLUGINS would clash with one)
    env = {key: value for key, value in os.environ.items() if key != "TSGU_PLUGINS"}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE_SCRIPT], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    assert report["verdicts"]["cpu"] == "serves only CUDA, not 'cpu'"
    assert report["cpu"][0] != "cudss"


# --- the backend's logic on the CPU, against a dense stand-in for nvmath's DirectSolver -------------------------


class _FakeDirectSolver:
    """What the backend relies on of ``nvmath.sparse.advanced.DirectSolver``, solving densely.

    It checks what nvmath checks (a CSR ``a``; a column-major ``b``, each
    batch member's leading dimension ``n``), factorizes ``a`` as it is at
    :meth:`factorize`, and :meth:`solve` reads ``b`` as it is then (nvmath
    documents in-place updates of a GPU ``b`` between solves).
    """

    created: list["_FakeDirectSolver"] = []

    def __init__(self, a, b, *, options=None, execution=None, stream=None):
        assert a.layout == torch.sparse_csr
        n = a.shape[-1]
        assert b.shape[-2] == n and b.stride(-2) == 1, "b must be column-major"
        assert b.dim() == 2 or b.stride(-1) == n, "a batched b needs leading dimension n"
        self.a, self.b, self.options, self.execution = a, b, options, execution
        self.plan_config = types.SimpleNamespace(reordering_algorithm=None)
        self.factorization_config = types.SimpleNamespace(pivot_eps=None)
        self.solution_config = types.SimpleNamespace(ir_num_steps=0)
        self.factorization_info = types.SimpleNamespace(info=None)
        self.planned = self.factorized = self.freed = False
        self.solves = 0
        _FakeDirectSolver.created.append(self)

    def plan(self):
        self.planned = True

    def factorize(self):
        assert self.planned and not self.freed
        self.dense = self.a.to_dense()
        singular = bool((torch.linalg.matrix_rank(self.dense) < self.dense.shape[-1]).any())
        self.factorization_info.info = 7 if singular else 0
        self.factorized = True

    def solve(self):
        assert self.factorized and not self.freed
        self.solves += 1
        X = torch.linalg.solve(self.dense, self.b)
        return X.transpose(-1, -2).contiguous().transpose(-1, -2)  # nvmath returns column-major X

    def free(self):
        self.freed = True


class _Enum(types.SimpleNamespace):
    pass


@pytest.fixture
def fake_nvmath(monkeypatch):
    """Install the stand-in as ``nvmath.sparse.advanced.DirectSolver`` (and ``nvmath.bindings.cudss``)."""
    cudss = types.ModuleType("nvmath.bindings.cudss")
    cudss.MatrixType = _Enum(**{name: name for name in ("GENERAL", "SYMMETRIC", "HERMITIAN", "SPD", "HPD")})
    cudss.ReorderingAlg = _Enum(**{name.upper(): f"alg:{name}" for name in cudss_backend.REORDERINGS})
    modules = {
        "nvmath": types.ModuleType("nvmath"),
        "nvmath.bindings": types.ModuleType("nvmath.bindings"),
        "nvmath.bindings.cudss": cudss,
        "nvmath.sparse": types.ModuleType("nvmath.sparse"),
        "nvmath.sparse.advanced": types.ModuleType("nvmath.sparse.advanced"),
    }
    modules["nvmath.bindings"].cudss = cudss
    modules["nvmath.sparse.advanced"].DirectSolver = _FakeDirectSolver
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    _FakeDirectSolver.created = []
    return _FakeDirectSolver.created


class _CpuCudss(cudss_backend.CudssBackend):
    """The real backend's prepare/solve, offered on the CPU so the core can drive it with the stand-in."""

    name = "cudss_cpu_stand_in"
    device_types = ("cpu",)
    priority = 0

    def is_available(self, device_type):
        return tsgu_core.Availability.yes() if device_type == "cpu" else tsgu_core.Availability.no("CPU only")


class _StandInPlugin:
    @tsgu_core.hookimpl
    def tsgu_register_backends(self, register):
        register(_CpuCudss())


@pytest.fixture
def stand_in(fake_nvmath):
    """The stand-in backend registered for one test only (other tests' backend lists stay as they were)."""
    tsgu_core.register_plugin(_StandInPlugin(), name="cudss_cpu_stand_in")
    try:
        yield fake_nvmath
    finally:
        tsgu_core.unregister_plugin("cudss_cpu_stand_in")


tsgu_core.register_plugin(_StandInPlugin(), name="cudss_cpu_stand_in")  # only while the cases are listed
_STAND_IN_CASES = conformance_cases("cudss_cpu_stand_in")
tsgu_core.unregister_plugin("cudss_cpu_stand_in")


@pytest.mark.parametrize("case", _STAND_IN_CASES, ids=str)
def test_logic_passes_the_conformance_kit_with_a_dense_stand_in(case, stand_in):
    run_case(case)


def _options(**extra) -> SolveOptions:
    spec = cudss_backend.METHODS["cudss"]
    filled = {name: option.default for name, option in spec.options.items()}
    assume = extra.pop("assume", "general")
    filled.update(extra)
    return SolveOptions(extra=filled, assume=assume)


def _dense_reference(D: torch.Tensor, B: torch.Tensor, transpose: bool) -> torch.Tensor:
    return torch.linalg.solve(D.transpose(-1, -2) if transpose else D, B)


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_forward_and_transpose_against_dense(fake_nvmath, layout, dtype):
    D = random_nonsymmetric(12, seed=2, dtype=dtype)
    backend = _CpuCudss()
    state = backend.prepare(to_layout(D, layout), "cudss", _options())
    B = torch.randn(12, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    for transpose in (False, True, False, True):
        X, report = backend.solve(state, B, transpose=transpose)
        torch.testing.assert_close(X, _dense_reference(D, B, transpose))
    # one factorization of A, one of Aᵀ (the plain transpose, also for complex), each reused
    assert len(fake_nvmath) == 2
    forward, transposed = fake_nvmath
    torch.testing.assert_close(forward.a.to_dense(), D)
    torch.testing.assert_close(transposed.a.to_dense(), D.T)
    assert forward.a.crow_indices().dtype == torch.int32 and transposed.a.col_indices().dtype == torch.int32
    assert (forward.solves, transposed.solves) == (2, 2)
    assert "Aᵀ factorized once" in report.message


def test_other_widths_run_in_blocks_on_the_same_factors(fake_nvmath):
    D = random_nonsymmetric(10, seed=4)
    backend = _CpuCudss()
    state = backend.prepare(to_layout(D, "csr"), "cudss", _options())
    generator = torch.Generator().manual_seed(3)
    for k in (2, 5, 1, 2, 4):
        B = torch.randn(10, k, dtype=torch.float64, generator=generator)
        X, _ = backend.solve(state, B, transpose=False)
        torch.testing.assert_close(X, torch.linalg.solve(D, B))
    (solver,) = fake_nvmath
    assert solver.b.shape[-1] == 2  # planned for the first solve's width
    assert solver.solves == 1 + 3 + 1 + 1 + 2  # k = 5 in three blocks of 2 (the last padded), k = 1 padded


@pytest.mark.parametrize("assume", ["symmetric", "spd"])
def test_symmetric_a_reuses_the_forward_factors(fake_nvmath, assume):
    D = random_spd(9, seed=1)
    backend = _CpuCudss()
    state = backend.prepare(to_layout(D, "coo"), "cudss", _options(assume=assume))
    B = torch.randn(9, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for transpose in (False, True):
        X, _ = backend.solve(state, B, transpose=transpose)
        torch.testing.assert_close(X, torch.linalg.solve(D, B))
    (solver,) = fake_nvmath
    assert solver.options["sparse_system_type"] == ("SPD" if assume == "spd" else "SYMMETRIC")


def test_a_symmetric_general_a_is_found_and_reused(fake_nvmath):
    D = random_spd(9, seed=2) + 0.5 * torch.eye(9, dtype=torch.float64)
    backend = _CpuCudss()
    state = backend.prepare(to_layout(D, "csr"), "cudss", _options())
    B = torch.randn(9, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    backend.solve(state, B, transpose=False)
    X, _ = backend.solve(state, B, transpose=True)
    torch.testing.assert_close(X, torch.linalg.solve(D.T, B))
    assert len(fake_nvmath) == 1 and state.transpose_mode == "same"


def test_hermitian_transpose_uses_the_conjugate_of_the_forward_factors(fake_nvmath):
    R = random_nonsymmetric(8, seed=7, dtype=torch.complex128)
    D = R @ R.conj().T + 8 * torch.eye(8, dtype=torch.complex128)  # Hermitian positive definite, dense pattern
    backend = _CpuCudss()
    state = backend.prepare(to_layout(D, "csr"), "cudss", _options(assume="hermitian"))
    B = torch.randn(8, 2, dtype=torch.complex128, generator=torch.Generator().manual_seed(8))
    X, _ = backend.solve(state, B, transpose=True)
    torch.testing.assert_close(X, torch.linalg.solve(D.T, B))  # Aᵀ = Ā ≠ A
    (solver,) = fake_nvmath
    assert solver.options["sparse_system_type"] == "HERMITIAN" and state.transpose_mode == "conjugate"


def test_batch_is_one_solver_and_its_transpose_another(fake_nvmath):
    members = [random_nonsymmetric(7, seed=s) for s in (1, 1)]
    members[1] = members[1] * (1 + torch.rand(7, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    D = torch.stack(members)
    A = D.to_sparse_csr()
    backend = _CpuCudss()
    state = backend.prepare(A, "cudss", _options())
    B = torch.randn(2, 7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    for transpose in (False, True):
        X, _ = backend.solve(state, B, transpose=transpose)
        torch.testing.assert_close(X, _dense_reference(D, B, transpose))
    assert len(fake_nvmath) == 2
    assert fake_nvmath[0].a.shape == (2, 7, 7) and fake_nvmath[0].b.stride() == (21, 1, 7)


def test_options_reach_the_solver(fake_nvmath):
    D = random_nonsymmetric(6, seed=3)
    backend = _CpuCudss()
    state = backend.prepare(
        to_layout(D, "csr"), "cudss", _options(reordering="amd", pivot_eps=1e-12, ir_steps=2, hybrid_memory=True)
    )
    backend.solve(state, torch.ones(6, 1, dtype=torch.float64), transpose=False)
    (solver,) = fake_nvmath
    assert solver.plan_config.reordering_algorithm == "alg:amd"
    assert solver.factorization_config.pivot_eps == 1e-12
    assert solver.solution_config.ir_num_steps == 2
    assert solver.execution["hybrid_memory_mode_options"] == {"hybrid_memory_mode": True}
    assert solver.options["logger"] is cudss_backend._LOGGER


def test_defaults_leave_cudss_configuration_alone(fake_nvmath):
    backend = _CpuCudss()
    state = backend.prepare(to_layout(random_nonsymmetric(5, seed=1), "coo"), "cudss", _options())
    backend.solve(state, torch.ones(5, 1, dtype=torch.float64), transpose=False)
    (solver,) = fake_nvmath
    assert solver.plan_config.reordering_algorithm is None and solver.factorization_config.pivot_eps is None
    assert solver.solution_config.ir_num_steps == 0 and solver.execution is None


def test_solvers_are_freed_with_the_state_or_on_release(fake_nvmath):
    D = random_nonsymmetric(6, seed=5)
    backend = _CpuCudss()
    B = torch.ones(6, 1, dtype=torch.float64)
    state = backend.prepare(to_layout(D, "csr"), "cudss", _options())
    backend.solve(state, B, transpose=False)
    backend.solve(state, B, transpose=True)
    state.release()
    assert all(solver.freed for solver in fake_nvmath)
    state = backend.prepare(to_layout(D, "csr"), "cudss", _options())
    backend.solve(state, B, transpose=False)
    del state
    gc.collect()
    assert fake_nvmath[-1].freed


def test_singular_a_raises(fake_nvmath):
    D = random_nonsymmetric(6, seed=6)
    D[2] = D[0] + D[1]  # a dependent row: structurally fine, numerically singular
    backend = _CpuCudss()
    state = backend.prepare(to_layout(D, "csr"), "cudss", _options())
    with pytest.raises(tsgu_core.SingularMatrixError, match="info = 7"):
        backend.solve(state, torch.ones(6, 1, dtype=torch.float64), transpose=False)
    assert fake_nvmath[0].freed


def test_empty_row_raises_at_prepare(fake_nvmath):
    D = random_nonsymmetric(6, seed=6)
    D[3] = 0.0
    with pytest.raises(tsgu_core.SingularMatrixError, match="empty row or column"):
        _CpuCudss().prepare(to_layout(D, "csr"), "cudss", _options())
    assert fake_nvmath == []


def test_values_are_copied_before_the_lazy_factorization(fake_nvmath):
    D = random_nonsymmetric(6, seed=8)
    A = to_layout(D, "csr")
    backend = _CpuCudss()
    state = backend.prepare(A, "cudss", _options())
    A.values().mul_(2.0)  # after prepare, before the factorization at the first solve
    B = torch.ones(6, 1, dtype=torch.float64)
    X, _ = backend.solve(state, B, transpose=False)
    torch.testing.assert_close(X, torch.linalg.solve(D, B))


@pytest.mark.parametrize(("installed", "ok"), [((0, 8, 0), True), ((0, 7, 1), False)])
def test_library_status_applies_nvmath_cudss_version_requirement(fake_nvmath, monkeypatch, installed, ok):
    sys.modules["nvmath.bindings.cudss"].get_property = lambda i: installed[i]
    module = types.ModuleType("nvmath.sparse.advanced.direct_solver")

    def check():
        if installed[:2] != (0, 8):
            raise RuntimeError("nvmath-python requires cuDSS version 0.8, while you have cuDSS version 0.7.")

    module._check_cudss_version = check
    monkeypatch.setitem(sys.modules, "nvmath.sparse.advanced.direct_solver", module)
    cudss_backend._cudss_status.cache_clear()
    try:
        available = cudss_backend._cudss_status()
    finally:
        cudss_backend._cudss_status.cache_clear()
    assert bool(available) is ok
    if not ok:
        assert "requires cuDSS version 0.8" in available.reason
