"""The tsgu command line (issue 16).

Exit codes: 0 success, 1 a solve failed or did not converge, 2 bad input with
one line on stderr and never a traceback. The commands run in the test process
(``cli_runs.tsgu_in_process``: same exit codes, stdout and stderr); a fresh
process runs the installed console script where the process is the point: it
starts, what it imports, warnings torch shows once per process, a terminal.
"""

import json
import os
import struct
import subprocess
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
import torch
from cli_runs import tsgu_in_process, tsgu_process

import tsgu_core
from tsgu_core.testing import random_nonsymmetric

NO_CUDA = not torch.cuda.is_available()


def tsgu(*args, check=True, process=False, warnings_shown=False):
    """``tsgu ARGS`` in this process; with ``process``, the console script in a fresh process.

    ``warnings_shown``: a fresh process that prints every warning reaching Python's machinery (torch shows
    its notices once per process, so only a fresh one can show that a command leaks none).
    """
    if process or warnings_shown:
        result = tsgu_process(*args, env={"PYTHONWARNINGS": "default"} if warnings_shown else None)
    else:
        result = tsgu_in_process(*args)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def python(code, **env):
    environment = dict(os.environ, OMP_NUM_THREADS="1", **env)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=False)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def system(tmp_path):
    D = random_nonsymmetric(30, seed=7).numpy()
    path = tmp_path / "A.mtx"
    scipy.io.mmwrite(path, sp.csr_matrix(D))
    return D, str(path)


# --- the program itself ----------------------------------------------------------


def test_version():
    out = tsgu("--version", process=True).stdout  # the installed console script starts
    assert out.startswith(f"tsgu {tsgu_core.__version__} (torch ") and "Python" in out


_MODULES = "import sys; print(' '.join(sorted(sys.modules)))"


def _modules_after(code):
    return set(python(f"{code}\n{_MODULES}").stdout.split())


def test_help_imports_nothing_beyond_the_package():
    """``tsgu --help`` loads no plugin, no SciPy, no matplotlib: only what ``import tsgu_core`` loads."""
    baseline = _modules_after("import tsgu_core")
    after_help = _modules_after(
        "from tsgu_core.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "try:\n    main(['solve', '--help'])\nexcept SystemExit:\n    pass"
    )
    extra = {name.split(".")[0] for name in after_help - baseline}
    assert not extra & {"scipy", "matplotlib", "tqdm", "jax", "cupy", "tsgu_backends", "pyamg"}, extra
    assert "tsgu_core.cli.bench" in after_help  # the parser was built


def test_help_does_not_import_torch():
    if "torch" in _modules_after("import tsgu_core"):
        pytest.skip("tsgu_core/__init__.py imports torch eagerly (needs lazy PEP 562 re-exports): no CLI can avoid it")
    after_help = _modules_after("from tsgu_core.cli import main\ntry:\n    main(['-h'])\nexcept SystemExit:\n    pass")
    assert "torch" not in after_help


# --- info and explain ----------------------------------------------------------


def test_info_lists_backends_options_and_defaults():
    out = tsgu("info").stdout
    assert "scipy  [tsgu" in out and "torch  [tsgu" in out
    default = tsgu_core.explain("cpu")  # pardiso when pypardiso is installed, else scipy / splu
    assert "defaults:" in out and f"cpu: {default.backend} / {default.method}" in out
    assert "[lstsq]" in out and "[triangular]" in out
    assert "common options of every iterative method:" in out and "rtol " in out
    restart = next(line for line in out.splitlines() if line.strip().startswith("restart "))
    assert "Krylov" in restart  # the option's one-line description
    assert "(method='stochastic')" in out and "probes, seed, generator" in out


def test_info_for_one_backend_and_as_json():
    out = tsgu("info", "torch").stdout
    assert out.startswith("torch  [") and "scipy  [" not in out and "defaults:" not in out
    report = json.loads(tsgu("info", "--json").stdout)
    names = [backend["name"] for backend in report["backends"]]
    assert {"scipy", "torch"} <= set(names)
    scipy_backend = report["backends"][names.index("scipy")]
    assert scipy_backend["devices"]["cpu"]["available"] is True
    gmres = next(method for method in scipy_backend["methods"] if method["name"] == "gmres")
    assert gmres["kind"] == "iterative" and gmres["common_options"] == ["rtol", "atol", "maxiter", "x0"]
    restart = next(option for option in gmres["options"] if option["name"] == "restart")
    assert restart["doc"] and set(restart) == {"name", "doc", "type", "default", "choices", "minimum", "maximum"}
    default = tsgu_core.explain("cpu")
    assert report["defaults"]["cpu"] == {"backend": default.backend, "method": default.method}
    assert {"probes", "seed", "solver", "max_lanczos_steps"} <= set(report["stochastic_estimates"]["options"])
    result = tsgu("info", "nosuch", check=False)
    assert result.returncode == 2 and "registered backends" in result.stderr and "Traceback" not in result.stderr


def test_info_prints_option_records():
    """An option declared as a record shows type, default, choices, minimum; a plain string is its doc."""
    from tsgu_core.cli.info import _format_option, option_record

    declared = SimpleNamespace(doc="Krylov dimension per cycle", type=int, default=20, choices=None, minimum=1)
    record = option_record("restart", declared)
    assert record == {"name": "restart", "doc": "Krylov dimension per cycle", "type": "int", "default": 20,
                      "choices": None, "minimum": 1, "maximum": None}  # fmt: skip
    assert _format_option(record).split() == [
        "restart",
        "int",
        "≥",
        "1",
        "=",
        "20",
        "Krylov",
        "dimension",
        "per",
        "cycle",
    ]
    choice = option_record("preconditioner", SimpleNamespace(doc="by name", type=(str, type(None)), default=None,
                                                             choices=("jacobi", "ilu"), minimum=None))  # fmt: skip
    assert "{jacobi, ilu}" in _format_option(choice)
    assert option_record("x", "a plain doc") == {"name": "x", "doc": "a plain doc", "type": None, "default": None,
                                                 "choices": None, "minimum": None, "maximum": None}  # fmt: skip
    if hasattr(tsgu_core, "Option"):  # the core's own record, once it exists
        real = option_record("k", tsgu_core.Option("a count", type=int, default=3, minimum=0))
        assert (real["type"], real["default"], real["minimum"], real["doc"]) == ("int", 3, 0, "a count")


def test_explain_lists_every_backend_with_its_verdict():
    out = tsgu("explain", "--device", "cpu", "--method", "cg").stdout
    assert "backend='scipy' method='cg'" in out and "highest priority" in out
    verdicts = {line.split(":")[0].strip(): line for line in out.splitlines()[1:]}
    assert set(verdicts) == {entry.name for entry in tsgu_core.list_backends()}
    assert verdicts["scipy"].endswith("chosen") and "not reached" in verdicts["torch"]
    if "cupy" in verdicts:
        assert "does not serve cpu" in verdicts["cupy"]
    result = tsgu("explain", "--method", "nosuch", check=False)
    assert result.returncode == 2 and "valid methods" in result.stderr and "gmres" in result.stderr


def test_info_and_explain_show_complex_support():
    out = tsgu("info", "scipy").stdout
    splu = next(line for line in out.splitlines() if line.strip().startswith("- splu"))
    minres = next(line for line in out.splitlines() if line.strip().startswith("- minres"))
    assert "[complex]" in splu and "[complex]" not in minres
    report = json.loads(tsgu("info", "--json").stdout)
    pardiso = next(backend for backend in report["backends"] if backend["name"] == "pardiso")
    assert not any(method["complex"] for method in pardiso["methods"]) and "real" in pardiso["complex_note"]
    out = tsgu("explain", "--dtype", "complex128").stdout
    chosen = tsgu_core.explain(torch.eye(2, dtype=torch.complex128).to_sparse_csr())
    assert f"backend={chosen.backend!r} method={chosen.method!r}" in out
    assert tsgu_core.get_backend(chosen.backend).methods[chosen.method].complex


def test_solve_a_complex_matrix_market_file(tmp_path):
    rng = np.random.default_rng(3)
    D = random_nonsymmetric(20, seed=4, dtype=torch.complex128).numpy()
    scipy.io.mmwrite(tmp_path / "C.mtx", sp.csr_matrix(D))
    b = rng.standard_normal(20) + 1j * rng.standard_normal(20)
    np.save(tmp_path / "b.npy", b)
    out = tsgu("solve", str(tmp_path / "C.mtx"), str(tmp_path / "b.npy"), "--dtype", "complex128", "-o",
               str(tmp_path / "x.npy")).stdout  # fmt: skip
    assert "converged:   yes" in out
    np.testing.assert_allclose(D @ np.load(tmp_path / "x.npy"), b, atol=1e-10)


# --- solve -------------------------------------------------------------------------


def test_solve_writes_the_solution(system, tmp_path):
    D, path = system
    b = np.arange(30, dtype=float)
    np.save(tmp_path / "b.npy", b)
    out = tsgu("solve", path, str(tmp_path / "b.npy"), "-o", str(tmp_path / "x.npy")).stdout
    default = tsgu_core.explain(torch.from_numpy(D).to_sparse_csr())  # the choice may depend on A's size
    assert f"backend:     {default.backend} / {default.method}" in out and "converged:   yes" in out
    assert "residual" in out
    np.testing.assert_allclose(D @ np.load(tmp_path / "x.npy"), b, atol=1e-10)
    out = tsgu("solve", path, "--backend", "torch", "--method", "bicgstab", "--rtol", "1e-10",
               "--option", "preconditioner='jacobi'", "-o", str(tmp_path / "x.mtx")).stdout  # fmt: skip
    assert "iterations:  " in out and "converged:   yes" in out
    np.testing.assert_allclose(D @ scipy.io.mmread(tmp_path / "x.mtx").ravel(), np.ones(30), atol=1e-8)


def test_solve_json_for_a_matrix_right_hand_side(system, tmp_path):
    D, path = system
    B = np.random.default_rng(0).standard_normal((30, 3))
    np.save(tmp_path / "B.npy", B)
    result = tsgu("solve", path, str(tmp_path / "B.npy"), "--method", "gmres", "--rtol", "1e-10", "--json",
                  "-o", str(tmp_path / "X.npy"))  # fmt: skip
    report = json.loads(result.stdout)
    assert report["converged"] is True and report["columns"] == 3 and len(report["residuals"]) == 3
    assert report["backend"] == "scipy" and report["method"] == "gmres" and report["iterations"] >= 1
    assert report["n"] == 30 and report["nnz"] == int((D != 0).sum()) and report["output"].endswith("X.npy")
    np.testing.assert_allclose(np.load(tmp_path / "X.npy"), np.linalg.solve(D, B), rtol=0, atol=1e-8)


def test_unconverged_solve_exits_1(system, tmp_path):
    _, path = system
    x = tmp_path / "x.npy"
    stuck = ["solve", path, "--backend", "torch", "--method", "gmres", "--maxiter", "2"]
    result = tsgu(*stuck, "--option", "on_failure='warn'", "-o", str(x), check=False)
    assert result.returncode == 1 and "converged:   no (column 0:" in result.stdout
    assert x.exists()  # asked for with on_failure='warn': written, but the exit code says it is not a solution
    assert result.stderr.count("\n") == 1 and "tsgu solve: warning:" in result.stderr
    result = tsgu(*stuck, check=False)  # the default policy raises
    assert result.returncode == 1 and "ConvergenceError" in result.stderr and "Traceback" not in result.stderr
    report = json.loads(tsgu(*stuck, "--option", "on_failure='ignore'", "--json", check=False).stdout)
    assert report["converged"] is False and report["max_residual"] > report["thresholds"][0]
    result = tsgu(*stuck, "--option", "on_failure='warn'", "--quiet", check=False)
    assert result.returncode == 1 and result.stdout == "" and "did not converge" in result.stderr


def test_singular_matrix_exits_1(tmp_path):
    scipy.io.mmwrite(tmp_path / "S.mtx", sp.csr_matrix(np.array([[1.0, 2.0], [2.0, 4.0]])))
    result = tsgu("solve", str(tmp_path / "S.mtx"), check=False)
    assert result.returncode == 1 and result.stderr.startswith("tsgu solve: SingularMatrixError: ")
    assert result.stderr.count("\n") == 1


def test_quiet_solve_prints_nothing(system):
    result = tsgu("solve", system[1], "-q", warnings_shown=True)
    assert result.stdout == "" and result.stderr == ""


@pytest.mark.parametrize("backend", ["scipy", "torch"])
def test_solve_prints_no_warning(system, backend):
    result = tsgu("solve", system[1], "--backend", backend, warnings_shown=True)
    assert result.stderr == "", result.stderr


def _garbage(tmp_path):
    (tmp_path / "bad.mtx").write_text("this is not a matrix\n")
    return [str(tmp_path / "bad.mtx")]


def _short_rhs(tmp_path):
    np.save(tmp_path / "short.npy", np.ones(7))
    return ["A", str(tmp_path / "short.npy")]


def _rectangular(tmp_path):
    scipy.io.mmwrite(tmp_path / "R.mtx", sp.random(5, 3, density=0.5, random_state=0, format="csr"))
    return [str(tmp_path / "R.mtx")]


def _non_finite_rhs(tmp_path):
    np.save(tmp_path / "nan.npy", np.full(30, np.nan))
    return ["A", str(tmp_path / "nan.npy")]


def _complex_matrix(tmp_path):
    scipy.io.mmwrite(tmp_path / "C.mtx", sp.csr_matrix(np.eye(3) * (1 + 1j)))
    return [str(tmp_path / "C.mtx")]


BAD_SOLVES = {
    "missing file": (lambda t: ["nowhere.mtx"], "no such file"),
    "garbage file": (_garbage, "not a readable Matrix Market file"),
    "output folder missing": (lambda t: ["A", "-o", "/nonexistent/dir/x.npy"], "does not exist"),
    "output suffix": (lambda t: ["A", "-o", str(t / "x.txt")], "ending in .npy, .mtx"),
    "output is a folder": (lambda t: ["A", "-o", str(t)], "cannot tell the format"),
    "unknown method": (lambda t: ["A", "--method", "nosuch"], "valid methods — "),
    "unknown method of a backend": (lambda t: ["A", "--backend", "torch", "--method", "splu"], "its methods"),
    "unknown backend": (lambda t: ["A", "--backend", "nope"], "registered backends"),
    "malformed option": (lambda t: ["A", "--option", "restart"], "NAME=VALUE"),
    "short right-hand side": (_short_rhs, "needs (30,)"),
    "rectangular matrix": (_rectangular, "square"),
    "folder as matrix": (lambda t: [str(t)], "is a folder"),
    "complex matrix without --dtype complex128": (_complex_matrix, "pass --dtype complex128"),
    "non-finite right-hand side": (_non_finite_rhs, "NonFiniteError"),
    "bad on_failure": (lambda t: ["A", "--option", "on_failure='bogus'"], "on_failure must be one of"),
}


@pytest.mark.parametrize("case", BAD_SOLVES)
def test_bad_solves_get_one_line_and_exit_2(system, tmp_path, case):
    make, words = BAD_SOLVES[case]
    arguments = [system[1] if a == "A" else a for a in make(tmp_path)]
    result = tsgu("solve", *arguments, check=False)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and result.stderr.startswith("tsgu solve: ")
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_output_is_checked_before_reading_the_matrix():
    result = tsgu("solve", "nowhere.mtx", "-o", "x.txt", check=False)
    assert result.returncode == 2 and "-o x.txt" in result.stderr  # not "no such file": the output came first


# --- bench and demo: outputs and devices before any work ------------------------

BAD_RUNS = {
    "demo plot folder": (["demo", "--plot", "/nonexistent/d.png"], "the folder /nonexistent does not exist"),
    "demo plot suffix": (["demo", "--plot", "d.txt"], "ending in .png, .pdf, .svg"),
    "demo device name": (["demo", "--device", "nonsense"], "not a device name"),
    "demo backends": (["demo", "--backends", "nope"], "unknown nope"),
    "demo size": (["demo", "--size", "2"], "--size must be ≥ 3"),
    "bench plot folder": (["bench", "--n", "16", "--plot", "/nonexistent/b.png"], "does not exist"),
    "bench problem": (["bench", "--problem", "nonsense"], "unknown problem"),
    "bench repeats": (["bench", "--repeats", "0"], "--repeats"),
    "bench backends": (["bench", "--n", "16", "--backends", "nope"], "--backends: unknown nope"),
    "bench methods": (["bench", "--n", "16", "--methods", "nosuch"], "--methods: no backend offers nosuch"),
    "bench device index": (["bench", "--device", "cpu:x"], "not a device name"),
}
if NO_CUDA:
    BAD_RUNS["demo cuda"] = (["demo", "--device", "cuda"], "--device cuda:")
    BAD_RUNS["bench cuda"] = (["bench", "--device", "cuda"], "--device cuda:")


@pytest.mark.parametrize("case", BAD_RUNS)
def test_bad_runs_stop_before_any_work(case):
    arguments, words = BAD_RUNS[case]
    result = tsgu(*arguments, check=False)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""  # the demo's introduction and the bench table never started


def test_bench_reports_failures_warmup_and_iterations(tmp_path):
    pytest.importorskip("pyamg", reason="needs pyamg (its gallery matrix recirc_flow)")
    plot = tmp_path / "bench.png"
    out = tsgu("bench", "--problem", "recirc_flow", "--repeats", "1", "--backends", "scipy", "torch",
               "--methods", "splu", "gmres", "cg", "bicgstab", "--plot", str(plot)).stdout  # fmt: skip
    assert "'recirc_flow': n = 225, nnz = 1849, k = 1, rtol = 1e-08 (iterative), float64, cpu" in out
    assert "after 1 warm-up" in out and "iters" in out
    rows = {tuple(line.split()[:2]): line for line in out.splitlines() if line.startswith(("scipy ", "torch "))}
    assert "skipped: assumes a spd A" in rows["scipy", "cg"]  # recirc_flow is nonsymmetric
    # GMRES(20) stalls on recirc_flow: the case is shown as failed, not dropped
    assert "failed: ConvergenceError" in rows["torch", "gmres"]
    assert rows["scipy", "splu"].split()[-1] == "ok" and rows["torch", "bicgstab"].split()[-1] == "ok"
    assert "/" in rows["torch", "bicgstab"].split()[4]  # forward/backward iterations
    assert plot.stat().st_size > 10_000


def test_bench_json_against_the_dense_reference():
    report = json.loads(tsgu("bench", "--n", "100", "--repeats", "2", "--warmup", "0", "--backends", "scipy",
                             "torch", "--methods", "splu", "cg", "--rtol", "1e-10", "--json").stdout)  # fmt: skip
    problem = report["problem"]
    assert (problem["n"], problem["nnz"], problem["k"], problem["repeats"], problem["warmup"]) == (100, 460, 1, 2, 0)
    assert problem["gradient_reference"].startswith("dense torch.linalg.solve")
    rows = {(row["backend"], row["method"]): row for row in report["rows"]}
    assert set(rows) == {("scipy", "splu"), ("scipy", "cg"), ("torch", "cg")}
    for row in rows.values():
        assert row["status"] == "ok" and row["gradient_error"] < 1e-7 and row["forward_ms"] > 0
    assert rows["scipy", "splu"]["iterations"] is None and rows["torch", "cg"]["iterations"] >= 1


def test_demo_recovers_the_field_quietly(tmp_path):
    # through the installed console script: one demo (and the solves of the warning tests) as a user runs them
    out = tsgu("demo", "--size", "12", "--iterations", "60", "--backends", "scipy", "torch",
               "--plot", str(tmp_path / "demo.png"), process=True).stdout  # fmt: skip
    start = float(out.split("relative error of κ at the start:")[1].split()[0])
    finals = [float(line.split()[-1]) for line in out.splitlines() if line.startswith(("scipy ", "torch "))]
    assert start > 0.3 and len(finals) == 2
    assert all(final < 0.15 for final in finals)  # stated bound: the error of κ falls from ~0.35 below 0.15
    assert (tmp_path / "demo.png").stat().st_size > 10_000


def test_demo_prints_no_warning():
    result = tsgu("demo", "--size", "6", "--iterations", "3", warnings_shown=True)  # every available backend
    assert result.stderr == "", result.stderr
    result = tsgu("demo", "--size", "6", "--iterations", "3", "--backends", "torch", "--quiet")
    assert not result.stdout.startswith("tsgu demo:") and "error of κ" in result.stdout


def test_threads_option_sets_torch_and_the_blas_libraries(monkeypatch):
    out = tsgu("demo", "--size", "6", "--iterations", "2", "--backends", "torch").stdout
    assert "(1 CPU thread)" in out.splitlines()[0]  # the demo's default: its problem is small
    out = tsgu("demo", "--size", "6", "--iterations", "2", "--backends", "torch", "--threads", "2").stdout
    assert "(2 CPU threads)" in out.splitlines()[0]
    report = json.loads(tsgu("bench", "--n", "100", "--repeats", "1", "--warmup", "0", "--backends", "torch",
                             "--methods", "cg", "--threads", "3", "--json").stdout)  # fmt: skip
    assert report["problem"]["threads"] == 3
    from tsgu_core.cli.common import THREAD_VARIABLES, set_threads

    for variable in THREAD_VARIABLES:
        monkeypatch.setenv(variable, "1")  # restored after the test
    threads = torch.get_num_threads()
    try:
        assert set_threads(2) == 2 and torch.get_num_threads() == 2
        assert [os.environ[variable] for variable in THREAD_VARIABLES] == ["2", "2", "2"]
    finally:
        torch.set_num_threads(threads)
    result = tsgu("demo", "--threads", "0", check=False)
    assert result.returncode == 2 and "--threads must be ≥ 1, got 0" in result.stderr
    assert set_threads(None) >= 1  # None leaves every count as it is


def test_demo_shows_failing_backends_and_exits_1_when_all_fail():
    result = tsgu("demo", "--size", "6", "--iterations", "3", "--backends", "scipy", "torch", "--lr", "1e300",
                  check=False)  # fmt: skip
    assert result.returncode == 1 and result.stderr == "tsgu demo: every backend failed\n"
    rows = [line for line in result.stdout.splitlines() if line.startswith(("scipy ", "torch "))]
    assert len(rows) == 2 and all("failed: NonFiniteError" in row for row in rows)


def _on_a_terminal(arguments, *, block_tqdm=False):
    """Run the CLI with stderr on a pseudo-terminal; returns (exit code, what the terminal showed)."""
    import fcntl
    import pty
    import termios

    block = "sys.modules['tqdm'] = None; " if block_tqdm else ""  # then `import tqdm` raises ImportError
    code = f"import sys; {block}from tsgu_core.cli import main; sys.exit(main({arguments!r}))"
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 0-column pty hides tqdm
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=secondary,
                               env=environment)  # fmt: skip
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the terminal closed: the child is gone
            break
        if not chunk:
            break
        shown += chunk
    os.close(primary)
    return process.wait(), shown.decode(errors="replace")


def test_progress_bar_only_on_a_terminal_and_not_when_quiet():
    pytest.importorskip("termios", reason="needs POSIX pseudo-terminals (pty, termios)")
    demo = ["demo", "--size", "4", "--iterations", "2", "--backends", "scipy"]
    if _has_tqdm():
        code, shown = _on_a_terminal(demo)
        assert code == 0 and "step" in shown and "scipy/splu" in shown
    code, shown = _on_a_terminal([*demo, "--quiet"])
    assert code == 0 and "step" not in shown
    code, shown = _on_a_terminal(demo, block_tqdm=True)  # tqdm is the optional extra "cli"
    assert code == 0 and "step" not in shown and "Traceback" not in shown
    assert "step" not in tsgu(*demo).stderr  # not a terminal: no bar


def _has_tqdm():
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


# --- the demo's model -----------------------------------------------------------------


def test_demo_model_gradient_is_exact():
    """The demo's gradient flows through A's values: check it against finite differences."""
    from tsgu_core import solve
    from tsgu_core.examples.diffusion import DiffusionProblem

    problem = DiffusionProblem(m=4, sources=2)
    theta = 0.1 * torch.randn(problem.n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    theta.requires_grad_()

    def U(t):
        return solve(problem.matrix(t), problem.B, backend="scipy")

    assert torch.autograd.gradcheck(U, (theta,))


def test_demo_model_matrix_matches_the_stencil_and_is_quiet():
    """A(κ = 1) is h⁻² times the 5-point Laplacian; building it shows no warning and keeps the filters."""
    from tsgu_core.examples.diffusion import DiffusionProblem

    problem = DiffusionProblem(m=5)
    before = list(warnings.filters)
    A = problem.matrix(torch.zeros(25, dtype=torch.float64)).to_dense()
    assert warnings.filters == before
    one = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(5, 5))
    laplacian = sp.kronsum(one, one).toarray() * 36  # h = 1/6
    np.testing.assert_allclose(A.numpy(), laplacian, rtol=1e-14)
    result = python(
        "import torch\nfrom tsgu_core.examples.diffusion import DiffusionProblem\n"
        "DiffusionProblem(m=4).matrix(torch.zeros(16, dtype=torch.float64))",
        PYTHONWARNINGS="default",
    )
    assert result.stderr == ""
