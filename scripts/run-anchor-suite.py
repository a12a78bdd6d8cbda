#!/usr/bin/env python
"""Run torchsparsegradutils' own solve tests with its five entry points swapped for tsgu's drop-ins.

The anchor project (``torchsparsegradutils``, installed from the ``bench``
extra) ships its tests inside the package. This script copies the solve test
modules (plus the anchor's ``conftest.py`` and ``test_config.py``, unchanged)
into a temporary directory, writes a tiny pytest plugin that replaces the
anchor's ``sparse_generic_solve``, ``sparse_triangular_solve``,
``sparse_generic_lstsq``, ``sparse_solve_j4t`` and ``sparse_solve_c4t`` with
the functions of :mod:`tsgu_backends.compat` *before* the test modules import
them, runs pytest on the copies, and prints pass/fail counts, the failures
grouped by reason (exception type and message with numbers masked).

Nothing else of the anchor is touched: its random matrices, solver callables
(``linear_cg``, ``bicgstab``, ``minres``) and tolerances are its own. On a
machine where CuPy is installed without its CUDA libraries, the plugin stands
in a placeholder for ``cupyx.scipy.sparse.linalg`` (which the anchor imports
at module level but uses only for CUDA tensors), so its SciPy CPU path runs;
``--anchor`` uses the same plugin without the swap.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python scripts/run-anchor-suite.py [--anchor] [--keep DIR] [-k EXPR]

``--anchor`` runs the same copies without the swap (the anchor's own numbers).
The report is also written to ``benchmarks/results/anchor-suite.md`` unless
``--no-save`` is given.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

MODULES = [
    "test_sparse_solve.py",
    "test_sparse_triangular_solve.py",
    "test_sparse_lstsq.py",
    "test_jax_sparse_solve.py",
    "test_cupy_sparse_solve.py",
]
SUPPORT = ["conftest.py", "test_config.py"]

PLUGIN = '''\
"""pytest plugin (loaded with -p before any test module): the anchor's entry points become tsgu's."""

import os
import sys
import types

try:  # cupy without the CUDA libraries (a CPU-only machine) fails here; the anchor imports it at module level
    import cupyx.scipy.sparse.linalg  # noqa: F401
except ImportError as error:  # only its CUDA paths use it: make them fail with the real error, the CPU path run
    reason = error

    def _missing(name, reason=reason):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(f"cupyx.scipy.sparse.linalg.{name}: {reason}")

    placeholder = types.ModuleType("cupyx.scipy.sparse.linalg")
    placeholder.__getattr__ = _missing
    sys.modules["cupyx.scipy.sparse.linalg"] = placeholder
    import cupyx.scipy.sparse

    cupyx.scipy.sparse.linalg = placeholder

import torchsparsegradutils
import torchsparsegradutils.cupy
import torchsparsegradutils.cupy.cupy_sparse_solve
import torchsparsegradutils.jax
import torchsparsegradutils.jax.jax_sparse_solve
import torchsparsegradutils.sparse_lstsq
import torchsparsegradutils.sparse_solve

SWAP = os.environ.get("TSGU_ANCHOR_SWAP", "1") == "1"
SWAPS = {
    "sparse_generic_solve": [torchsparsegradutils, torchsparsegradutils.sparse_solve],
    "sparse_triangular_solve": [torchsparsegradutils, torchsparsegradutils.sparse_solve],
    "sparse_generic_lstsq": [torchsparsegradutils, torchsparsegradutils.sparse_lstsq],
    "sparse_solve_j4t": [torchsparsegradutils.jax, torchsparsegradutils.jax.jax_sparse_solve],
    "sparse_solve_c4t": [torchsparsegradutils.cupy, torchsparsegradutils.cupy.cupy_sparse_solve],
}
if SWAP:
    from tsgu_backends import compat

    for name, modules in SWAPS.items():
        for module in modules:
            assert hasattr(module, name), (module, name)
            setattr(module, name, getattr(compat, name))


def pytest_report_header(config):
    return "entry points: " + ("tsgu_backends.compat" if SWAP else "the anchor's own")
'''


def _anchor_tests() -> Path:
    spec = importlib.util.find_spec("torchsparsegradutils")
    if spec is None or spec.origin is None:
        sys.exit(
            "torchsparsegradutils is not installed: pip install 'tsgu[bench]' (it pins torchsparsegradutils==0.2.7)"
        )
    return Path(spec.origin).parent / "tests"


_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def _reason(element: ET.Element) -> str:
    """A short, number-free reason for a failure: the exception's type and the message's first line."""
    message = element.get("message") or ""
    text = element.text or ""
    lines = [line for line in text.splitlines() if line.startswith("E ")]
    first = lines[0][1:].strip() if lines else message.splitlines()[0] if message else "?"
    first = _NUMBER.sub("#", first)
    return first[:160]


def _group(case: ET.Element) -> str:
    """The test's function name without its parameters (``test_x[a-b]`` -> ``module::test_x``)."""
    module = (case.get("classname") or "").rsplit(".", 1)[-1]
    return f"{module}::{(case.get('name') or '').split('[', 1)[0]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchor", action="store_true", help="run the anchor's own functions (no swap)")
    parser.add_argument("--keep", type=Path, help="write the copies here and keep them")
    parser.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/anchor-suite.md")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    parser.add_argument("-x", action="store_true", help="stop at the first failure")
    args = parser.parse_args()

    source = _anchor_tests()
    root = Path(__file__).resolve().parent.parent
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="tsgu-anchor-"))
    workdir.mkdir(parents=True, exist_ok=True)
    for name in MODULES + SUPPORT:
        shutil.copy(source / name, workdir / name)
    (workdir / "tsgu_anchor_swap.py").write_text(PLUGIN)

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(workdir), str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    junit = workdir / "junit.xml"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", "-q", "--no-header"]
    command += ["-o", "junit_family=xunit1", f"--junitxml={junit}", "-p", "no:randomly"]
    command += ["-p", "tsgu_anchor_swap"]
    env["TSGU_ANCHOR_SWAP"] = "0" if args.anchor else "1"
    if args.keyword:
        command += ["-k", args.keyword]
    if args.x:
        command += ["-x"]
    command += [*MODULES, "--tb=short", "-rN"]
    print("$", " ".join(command), f"(in {workdir})", flush=True)
    completed = subprocess.run(
        command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if not junit.exists():
        print(completed.stdout[-5000:])
        return 2

    passed, failed, skipped = 0, [], 0
    for case in ET.parse(junit).getroot().iter("testcase"):
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None:
            failed.append((_group(case), _reason(problem), case.get("name")))
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    total = passed + len(failed) + skipped
    what = "the anchor's own functions" if args.anchor else "tsgu's drop-ins (tsgu_backends.compat)"
    lines = [
        f"# torchsparsegradutils 0.2.7 solve tests through {what}",
        "",
        "command: `" + " ".join(["python", "/".join(Path(sys.argv[0]).parts[-2:]), *sys.argv[1:]]) + "`",
        "",
        f"**{passed} passed, {len(failed)} failed, {skipped} skipped, of {total}**",
        "",
    ]
    if failed:
        lines += ["| failures | test | reason |", "|---:|---|---|"]
        counts = collections.Counter((group, reason) for group, reason, _ in failed)
        for (group, reason), count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            lines.append(f"| {count} | `{group}` | {reason.replace('|', '/')} |")
    report = "\n".join(lines)
    print(report)
    if not args.no_save and not args.keyword:
        out = root / "benchmarks" / "results" / ("anchor-suite-own.md" if args.anchor else "anchor-suite.md")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report + "\n")
        print(f"\nwritten to {out.relative_to(root)}")
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
