"""Plugins: in-test plugins, real dist-info entry points, broken plugins, autoload switch, no heavy imports (S6)."""

import subprocess
import sys
import textwrap

import pytest
import torch

import tsgu_core
from tsgu_core import errors
from tsgu_core.testing import DenseBackend, conformance_cases, random_nonsymmetric, run_case, to_layout

PLUGIN_MODULE = """
import tsgu_core
from tsgu_core.testing import DenseBackend

class Marked(DenseBackend):
    calls = 0

    def solve(self, state, B, *, transpose, x0=None):
        type(self).calls += 1
        return super().solve(state, B, transpose=transpose, x0=x0)

@tsgu_core.hookimpl
def tsgu_register_backends(register):
    register(Marked(name="{name}", priority={priority}))
"""


def write_distribution(root, dist, version, entry_points, modules):
    """Write an installed-looking distribution (dist-info + modules) under ``root``; no pip involved."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {value}" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[tsgu]\n{lines}\n")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def fresh_registry(monkeypatch, tmp_path):
    """Plugins reloaded from a sys.path that also holds ``tmp_path``; restored afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    tsgu_core.reload_plugins()
    yield tmp_path
    tsgu_core.reload_plugins()


def problem(n=8):
    D = random_nonsymmetric(n, seed=11)
    return D, to_layout(D, "csr"), torch.arange(n, dtype=torch.float64)


def test_in_test_plugin_registers_and_solves():
    backend = DenseBackend(name="in-test")

    class Plugin:
        @tsgu_core.hookimpl
        def tsgu_register_backends(self, register):
            register(backend)

    assert tsgu_core.register_plugin(Plugin(), name="in-test-plugin") == ["in-test"]
    try:
        D, A, b = problem()
        x = tsgu_core.solve(A, b, backend="in-test")
        torch.testing.assert_close(x, torch.linalg.solve(D, b))
        assert backend.factorizations == 1
        entry = tsgu_core.get_entry("in-test")
        assert entry.plugin == "in-test-plugin" and entry.distribution is None
    finally:
        tsgu_core.unregister_plugin("in-test-plugin")
    with pytest.raises(errors.UnknownBackendError):
        tsgu_core.get_backend("in-test")


def test_direct_backend_reuses_its_factorization_in_backward():
    backend = DenseBackend(name="reuse")

    class Plugin:
        @tsgu_core.hookimpl
        def tsgu_register_backends(self, register):
            register(backend)

    tsgu_core.register_plugin(Plugin(), name="reuse-plugin")
    try:
        D, A, b = problem()
        A.requires_grad_()
        x = tsgu_core.solve(A, b, backend="reuse")
        x.sum().backward()
        assert backend.factorizations == 1
    finally:
        tsgu_core.unregister_plugin("reuse-plugin")


def test_distribution_plugin_found_through_entry_points(fresh_registry):
    write_distribution(
        fresh_registry,
        "tsgu-fake-plugin",
        "1.2.3",
        {"fake": "tsgu_fake_plugin"},
        {"tsgu_fake_plugin": PLUGIN_MODULE.format(name="fake", priority=0)},
    )
    entry = tsgu_core.get_entry("fake")
    assert (entry.distribution, entry.version, entry.plugin) == ("tsgu-fake-plugin", "1.2.3", "fake")
    assert "fake" in [e.name for e in tsgu_core.list_backends()]
    D, A, b = problem()
    x = tsgu_core.solve(A, b, backend="fake")
    torch.testing.assert_close(x, torch.linalg.solve(D, b))
    assert type(entry.backend).calls == 1
    for case in conformance_cases("fake", checks=["reference", "policy"]):
        if not case.marks:
            run_case(case.values[0])


def test_priority_decides_default_not_load_order(fresh_registry):
    write_distribution(
        fresh_registry,
        "tsgu-high",
        "0.1",
        {"high": "tsgu_high"},
        {"tsgu_high": PLUGIN_MODULE.format(name="high", priority=10_000)},
    )
    assert tsgu_core.explain("cpu").backend == "high"
    assert tsgu_core.explain("cpu", method="gmres").backend != "high"  # high offers only "lu"
    tsgu_core.set_default_backend("cpu", "torch")
    try:
        assert tsgu_core.explain("cpu").backend == "torch"
    finally:
        tsgu_core.set_default_backend("cpu", None)


def test_broken_plugin_is_isolated(fresh_registry):
    write_distribution(
        fresh_registry,
        "tsgu-broken",
        "6.6.6",
        {"broken": "tsgu_broken_plugin", "good": "tsgu_good_plugin"},
        {
            "tsgu_broken_plugin": "raise ImportError('libfoo.so: cannot open shared object file')\n",
            "tsgu_good_plugin": PLUGIN_MODULE.format(name="good", priority=0),
        },
    )
    names = [e.name for e in tsgu_core.list_backends()]
    assert "good" in names and "torch" in names
    (broken,) = [b for b in tsgu_core.list_broken_plugins() if b.plugin == "broken"]
    assert broken.distribution == "tsgu-broken" and "libfoo.so" in broken.error
    with pytest.raises(errors.PluginLoadError, match=r"'broken' from tsgu-broken 6\.6\.6 failed to load.*libfoo"):
        tsgu_core.get_backend("broken")
    with pytest.raises(errors.UnknownBackendError, match="failed to load.*broken"):
        tsgu_core.get_backend("typo")
    D, A, b = problem()
    tsgu_core.solve(A, b, backend="good")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("register(object())", "lacks"),
        ("raise RuntimeError('hook exploded')", "hook exploded"),
        ("register(Bad(name='torch'))", "already provided"),
        ("b = Bad(name='x'); b.default_method = 'nope'; register(b)", "not among its methods"),
    ],
)
def test_contract_breaches_are_reported_not_fatal(body, words):
    from tsgu_core.testing import DenseBackend as Bad

    class Plugin:
        @tsgu_core.hookimpl
        def tsgu_register_backends(self, register):
            exec(body, {"register": register, "Bad": Bad})

    with pytest.raises(errors.PluginLoadError, match=words):
        tsgu_core.register_plugin(Plugin(), name="breach")
    assert "torch" in [e.name for e in tsgu_core.list_backends()]
    assert "x" not in [e.name for e in tsgu_core.list_backends()]


def test_default_method_must_be_general():
    from tsgu_core import MethodSpec

    class SpdOnly(DenseBackend):
        methods = {"cg": MethodSpec("cg", "iterative", "spd")}
        default_method = "cg"

    class Plugin:
        @tsgu_core.hookimpl
        def tsgu_register_backends(self, register):
            register(SpdOnly(name="spd-only"))

    with pytest.raises(errors.PluginLoadError, match="general nonsymmetric"):
        tsgu_core.register_plugin(Plugin(), name="spd-plugin")


def run_python(code, **env):
    import os

    environment = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=False)


def test_autoload_switch(fresh_registry, monkeypatch):
    """The switch in a fresh process, as a user sets it; ``TSGU_PLUGINS`` with it here, after a reload.

    The registry reads both variables whenever it loads (the first query after start or after
    ``reload_plugins``), so the two ``TSGU_PLUGINS`` cases need no process of their own.
    """
    code = (
        "import tsgu_core; print(sorted(e.name for e in tsgu_core.list_backends()))\n"
        "print([b.plugin for b in tsgu_core.list_broken_plugins()])"
    )
    off = run_python(code, TSGU_DISABLE_PLUGIN_AUTOLOAD="1")
    assert off.returncode == 0, off.stderr
    assert off.stdout.splitlines()[0] == "[]"
    monkeypatch.setenv("TSGU_DISABLE_PLUGIN_AUTOLOAD", "1")  # the fixture reloads the plugins afterwards
    monkeypatch.setenv("TSGU_PLUGINS", "tsgu_backends.torch_backend.plugin")
    tsgu_core.reload_plugins()
    assert sorted(e.name for e in tsgu_core.list_backends()) == ["torch"]
    monkeypatch.setenv("TSGU_PLUGINS", "no_such_module_xyz")
    tsgu_core.reload_plugins()
    assert "no_such_module_xyz" in [b.plugin for b in tsgu_core.list_broken_plugins()]


def test_imports_and_listing_do_not_import_cupy_or_jax():
    code = (
        "import sys, tsgu_core, tsgu_backends\n"
        "for entry in tsgu_core.list_backends():\n"
        "    [entry.availability(d) for d in entry.backend.device_types]\n"
        "tsgu_core.explain('cpu')\n"
        "print(sorted(m for m in ('cupy', 'cupyx', 'jax', 'jaxlib') if m in sys.modules))"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    if torch.cuda.is_available():
        pytest.skip("with a CUDA device, availability on cuda legitimately imports cupy/jax to probe the GPU")
    assert result.stdout.strip() == "[]"


def test_import_of_core_alone_imports_no_solver_library():
    result = run_python(
        "import sys, tsgu_core, tsgu_backends\nprint(sorted(m for m in ('cupy', 'jax', 'scipy') if m in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
