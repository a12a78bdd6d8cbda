"""Test-session settings: one thread per worker (measured: 2 torch threads under load ran
CSR products 7–40× slower than 1), no CUDA test without a CUDA device, and which tests are ``slow``.

The default run (``pytest``, whose addopts say ``-m "not slow"``) keeps every test that guards the
numbers of a backend × method — the whole conformance kit among them — and leaves out the tests
marked ``slow``: the rest of exhaustive parameter products, and a few expensive tests of things the
default run checks elsewhere. ``pytest -m slow`` runs those; ``pytest -m ""`` runs everything (CI does).

A test becomes ``slow`` in one of four ways, all in this file or the test's own marks:

* ``@pytest.mark.slow`` on the test itself;
* its node id (``file.py::test_name`` or ``file.py::test_name[id]``) in :data:`SLOW`;
* for a test over conformance cases, its case's check in :data:`SLOW_CHECKS`;
* its function in :data:`THINNED`: a parametrized test whose product is exhaustive keeps, in the
  default run, a covering subset — every value of every parameter at least once (a backend and its
  method count as one value; for a conformance ``Case``, each backend × method × check × device, each
  with every layout, right-hand side and dtype of that check in ``test_conformance.py``, and somewhere
  for the kit's reruns with an option on), float64 items chosen first — and the rest is ``slow``.

A new test is in the default run unless it is listed here or marked; a new parameter value of a
thinned test is in the default run whenever it is one no kept item covers yet.
"""

import os

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

# XLA compiles the JAX backend's solves without LLVM's optimizations in tests: about half the compile time, and
# compiling is about half of what JAX tests cost (measured: 40 kit cases compiled in 16.5 s → 7.7 s; the kit's
# jax reference and gradcheck tests took 68 → 60 CPU-s in all). The same HLO runs either way, in IEEE arithmetic
# (no fast-math at any level); only the machine code is slower, which the tests' small problems do not feel. Set
# before JAX starts its CPU client; a flag of your own in XLA_FLAGS wins.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()

import zlib  # noqa: E402

import numpy  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import tsgu_core  # noqa: E402
from tsgu_core.testing import Case  # noqa: E402

torch.set_num_threads(1)

THINNED = {
    # the conformance kit: every backend × method × check × device runs by default, on a covering subset of its
    # layouts (COO, CSR), right-hand sides (vector, column, matrix) and dtypes for that check (see _axes)
    "test_conformance.py::test_conformance",
    # the kit again with an option on (its plain runs are whole in test_conformance.py)
    "test_torch_block_krylov.py::test_fused_passes_the_conformance_kit",
    "test_torch_preconditioners.py::test_ilu0_conformance",
    # products of dtype × layout × right-hand side × backend × method around one property
    "test_reliability.py::test_scaled_problem_gives_the_unscaled_answer",
    "test_traced.py::test_torch_func_transforms_match_dense",
    "test_traced.py::test_complex_transforms_follow_the_wirtinger_convention",
    "test_traced.py::test_torch_func_in_float32",
    "test_traced.py::test_compile_fullgraph_forward_and_backward",
    "test_traced.py::test_second_derivatives_through_the_operator_are_exact",
    "test_compat.py::test_c4t_string_solvers_gradcheck",
    "test_compat.py::test_j4t_string_solvers_gradcheck",
    "test_compat.py::test_generic_string_solvers_gradcheck",
    "test_compat.py::test_generic_callable_bicgstab_gradcheck",
}
"""``file.py::test_function`` of the tests that keep only a covering subset in the default run."""

SLOW = {
    # the selected-inversion kernels' cache, each case a subprocess compiling every kernel afresh (~10-14 CPU-s):
    # the cache's rules (the trusted folder, a folder others may write, a planted file) are one module
    # (tsgu_backends/numba_cache.py), checked in the default run on the fused loops' small kernels
    "test_fused_cpu.py::test_the_selinv_kernels_use_the_trusted_cache",
    # inductor compiles C++ (14 CPU-s); every backend's traced operator runs under aot_eager in the default run
    "test_traced.py::test_compile_fullgraph_with_inductor[torch]",
    # second derivatives through the operator for jax in CSR too (10 CPU-s): the kit's jax gradgradcheck and the
    # torch cases of this test stay
    "test_traced.py::test_second_derivatives_through_the_operator_are_exact[jax-csr]",
    # the fused BiCGSTAB gradcheck with a matrix B (9 CPU-s, mostly compiling the k = 2 loop): the vector case
    # stays, and matrix-B fused gradients are checked against dense in test_fused_solves_and_differentiates
    "test_torch_block_krylov.py::test_fused_bicgstab_gradcheck[shape1]",
    "test_fused_cpu.py::test_the_selinv_kernels_refuse_a_0777_cache_folder_and_slogdet_is_still_right",
    "test_fused_cpu.py::test_the_selinv_kernels_load_a_planted_file_only_when_it_is_yours",
    # method="stochastic" through jax (9 CPU-s, mostly jax's compilation): the estimators only call
    # tsgu_core.solve, checked through torch and scipy in the default run and for jax by its own tests
    "test_stochastic.py::test_diagonal_and_gradient_through_jax",
    # the demo on a pseudo-terminal (3 runs), and with every backend and warnings shown: its output, not its
    # numbers (test_demo_recovers_the_field_quietly runs the demo and checks what it recovers); both need fresh
    # processes (a terminal; torch's one-time notices)
    "test_cli.py::test_progress_bar_only_on_a_terminal_and_not_when_quiet",
    "test_cli.py::test_demo_prints_no_warning",
    # forward-mode gradcheck through jax (7 CPU-s): the traced operator is the same op whatever backend solves
    # inside it; the torch and scipy cases stay, and the kit checks jax's gradients in reverse mode
    "test_traced.py::test_gradcheck_with_forward_ad[jax]",
    # the real-world matrices: one general (recirc_flow) and one SPD (airfoil) stay, against dense
    "test_gallery.py::test_gallery_matrix_solution_and_gradients[local_disc_galerkin_diffusion-general]",
    "test_gallery.py::test_gallery_matrix_solution_and_gradients[unit_cube-spd]",
    # chunked batches: gradcheck once (csr, bicgstab); gmres's chunks are checked against dense gradients
    "test_batch_chunks.py::test_chunked_batch_gradcheck[coo-gmres]",
    "test_batch_chunks.py::test_chunked_batch_gradcheck[csr-gmres]",
    "test_batch_chunks.py::test_chunked_batch_gradcheck[coo-bicgstab]",
    # one layout of each: the other layout's gradients are checked against dense in the same files
    "test_batch_patterns.py::test_solve_values_with_different_patterns_to_second_order[coo]",
    "test_batched.py::test_batched_gradcheck[coo-torch]",
    "test_traced.py::test_gradcheck_with_forward_ad[scipy]",
    # inductor compiles C++ per backend; the traced operator is one opaque op whatever the backend inside
    # (test_compile_fullgraph_with_inductor[torch] stays, and every backend runs under aot_eager)
    "test_traced.py::test_compile_fullgraph_with_inductor[jax]",
    # second derivatives through the operator and complex compile for jax (12 CPU-s each): the conformance kit's
    # jax gradgradcheck checks its second derivatives; the torch cases of both tests stay
    "test_traced.py::test_second_derivatives_through_the_operator_are_exact[jax-coo]",
    "test_traced.py::test_complex_compile_fullgraph_and_second_derivatives[jax]",
    # 40 jax spsolve solves in a subprocess after Krylov solves (the intermittent dtype loss): the default run keeps
    # the deterministic test that JAX's host callback is never used for spsolve on the CPU
    "test_reliability_wave3.py::test_jax_spsolve_after_krylov_solves_never_loses_float64",
    "test_traced.py::test_compile_fullgraph_with_inductor[scipy]",
    # complex + torch.compile + second derivatives through the operator for the torch backend (6 CPU-s, Dynamo
    # tracing its Krylov loop's callers): the operator is one opaque op whatever backend solves inside it, and the
    # scipy case of the same test stays
    "test_traced.py::test_complex_compile_fullgraph_and_second_derivatives[torch]",
    # a fresh process (~2.5 CPU-s) for a constructor that shares poisson_2d's code (testing.matrices._grid_csr)
    "test_errors_wave3.py::test_tsgu_constructors_emit_no_torch_notice[convection_diffusion_2d]",
}
"""Node ids (``file.py::test_name``, or with ``[id]``) of costly tests whose point the default run checks elsewhere."""

SLOW_CHECKS = {
    # the kit's torch.func/torch.compile check with fused=True: the traced operator is one opaque op whichever loop
    # runs inside it (the plain torch kit's transforms check runs by default), and its vmap over B folds into more
    # columns, which compiles each whole-solve loop once more (2·K_MATRIX columns: 11 CPU-s on a cold cache)
    "test_torch_block_krylov.py::test_fused_passes_the_conformance_kit": {"transforms"},
}
"""Of a test over conformance cases, the kit's checks whose cases are all ``slow``."""


_FD_CHECKS = {"gradcheck", "gradgradcheck", "triangular-gradcheck", "lstsq-gradcheck"}
"""The conformance kit's finite-difference checks (``torch.autograd.gradcheck``/``gradgradcheck``)."""


def _value_key(value):
    return str(value) if isinstance(value, torch.dtype) else repr(value)


def _axes(item):
    """The (parameter, value) pairs an item covers; a backend and its method are one value."""
    params = dict(item.callspec.params)
    for value in params.values():
        if isinstance(value, Case):
            if (
                value.check == "gradgradcheck"
                and value.dtype.startswith("complex")
                and item.path.name.startswith("test_conformance")
            ):
                # complex second derivatives: slow (the default run checks each method's complex gradients by
                # gradcheck and "reference", and its second derivatives by gradgradcheck in float64)
                return set()
            method = ("method", value.backend, value.method, value.check, value.device)
            # the whole kit covers layouts, right-hand sides and dtypes for each method × check; a rerun of the kit
            # with an option on (fused, ilu0) covers them once over all its methods
            own = method if item.path.name == "test_conformance.py" else ()
            # a finite-difference check re-derives the gradient that "reference" compares exactly on every layout
            # and right-hand side: it covers its dtypes (real and complex), and layouts and right-hand sides once
            # over the method's finite-difference checks
            shape = (value.backend, value.method, value.device, "fd") if own and value.check in _FD_CHECKS else own
            return {method, ("layout", value.layout, shape), ("rhs", value.rhs, shape), ("dtype", value.dtype, own)}
    axes = set()
    if "backend" in params and "method" in params:
        axes.add(("backend-method", _value_key(params.pop("backend")), _value_key(params.pop("method"))))
    axes.update((name, _value_key(value)) for name, value in params.items())
    return axes


def _where(item):
    return f"{item.path.name}::{getattr(item, 'originalname', item.name)}", f"{item.path.name}::{item.name}"


def _mark_slow(items):
    """Mark ``slow`` what :data:`SLOW` names and what a covering subset of each :data:`THINNED` test leaves out."""
    slow = pytest.mark.slow
    groups = {}
    for item in items:
        function, node = _where(item)
        case = getattr(item, "callspec", None) and item.callspec.params.get("case")
        if function in SLOW or node in SLOW or (isinstance(case, Case) and case.check in SLOW_CHECKS.get(function, ())):
            item.add_marker(slow)
        elif function in THINNED and hasattr(item, "callspec"):
            groups.setdefault(function, []).append(item)
    for group in groups.values():
        # greedy cover: take the item that covers most values not yet covered (ties: float64 first, then file order)
        left = sorted(group, key=lambda item: "float64" not in item.name)
        axes = {id(item): _axes(item) for item in left}
        covered = set()
        while left:
            best = max(left, key=lambda item: len(axes[id(item)] - covered))
            if not axes[id(best)] - covered:
                break
            covered |= axes[id(best)]
            left.remove(best)
        for item in left:
            item.add_marker(slow)


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook deselects by ``-m``
def pytest_collection_modifyitems(config, items):
    _mark_slow(items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def pytest_ignore_collect(collection_path, config):
    """tests/mpi runs only inside the PETSc environment, launched by tests/test_petsc.py."""
    if "mpi" in collection_path.parts and not os.environ.get("TSGU_PETSC_TESTS"):
        return True
    return None


@pytest.fixture(autouse=True)
def _seeded_global_rng(request):
    """Every test starts from its own fixed state of torch's and numpy's global random generators (a hash of its
    node id), whatever ran before it on its worker: a test that draws without a generator cannot then pass or
    fail by the order pytest-xdist happens to give it."""
    seed = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(seed)
    numpy.random.seed(seed)


@pytest.fixture
def register():
    """``register(backend)`` registers a backend object as an in-test plugin, removed after the test."""
    names = []

    def _register(backend):
        class Plugin:
            @tsgu_core.hookimpl
            def tsgu_register_backends(self, register):
                register(backend)

        name = f"plugin-{backend.name}"
        tsgu_core.register_plugin(Plugin(), name=name)
        names.append(name)
        return backend

    yield _register
    for name in names:
        tsgu_core.unregister_plugin(name)
