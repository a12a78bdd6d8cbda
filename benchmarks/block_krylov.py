"""Block Krylov on the CPU: torch CG/BiCGSTAB/GMRES with k columns against k sequential SciPy solves.

float64, one thread, ``rtol`` 1e-6, interleaved repeats (median of each), all
ratios from one run. CG runs on 2-D Poisson (n ≈ 1e5, SPD); BiCGSTAB and
GMRES on 2-D convection–diffusion of the same size (nonsymmetric), GMRES with
the same ``restart`` in SciPy and torch. Right-hand sides: k = 8 random
columns; k = 1 all ones for CG, the first random column for the nonsymmetric
problem (BiCGSTAB diverges from all ones there, SciPy's and torch's alike).
Rows:

* ``scipy``: ``scipy.sparse.linalg.cg`` / ``bicgstab`` / ``gmres``, one
  column at a time (k = 8: eight sequential solves, the reference of the ratios);
* ``torch eager-before``: :func:`krylov_solve` as it was at ``--before`` (a git
  revision, loaded from ``git show``): ``A @ X`` products, a fresh ``(n, k)``
  temporary for every product and its scaling (CG, BiCGSTAB);
* ``torch eager``: the current default: products written by
  ``addmm_(beta=0, alpha=1/σ)`` into one reused buffer;
* ``torch fused-before`` (CG): ``fused=True`` as it was at ``--fused-before``
  (two ``torch.compile``-d kernels per iteration; compile time not timed);
* ``torch fused-C`` (CG, BiCGSTAB): ``fused=True`` as it was at ``--fused-c``:
  the same loops in C, compiled with the system compiler (``-march=native``)
  and called through ctypes (both files loaded from ``git show``);
* ``torch fused`` (CG, BiCGSTAB): ``fused=True``, the vector work in the numba
  loops of :mod:`tsgu_backends.torch_backend.fused_cpu` (first call — compile
  or load from the disk cache — printed separately, not timed), with ``csr=``
  (A's CSR tensor, as the backend passes it): every iteration in one numba
  call that computes the products itself;
* ``torch fused-prev`` (CG, BiCGSTAB): ``fused=True`` with ``csr=`` as it was
  at ``--fused-prev`` (its ``krylov.py``, ``fused_cpu.py`` and numba loops
  loaded from ``git show``): the whole-solve loops before BiCGSTAB's second
  product took ``R −= α·V`` into its pass (four passes per iteration, each
  product pass updating its rows in per-chunk loops);
* ``torch fused per-iteration`` (CG, BiCGSTAB): ``fused=True`` without ``csr=``:
  numba calls per iteration around torch's products (the loops before the
  whole-solve kernels);
* ``tsgu solve``: the whole public path (``tsgu_core.solve``, forward), default
  options and, for CG/BiCGSTAB, ``fused=True``.

The torch operator (int32 CSR) is built once outside the timings, as is
SciPy's CSR matrix. Run: ``python benchmarks/block_krylov.py`` (``--m`` grid,
``--repeats``, ``--before``/``--fused-before``/``--fused-c``/``--fused-prev`` revisions, ``--restart``,
``--methods``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import environment, interleaved_medians, markdown_table, median, pin_threads, write_results

pin_threads(1)

import scipy.sparse as sp  # noqa: E402
import scipy.sparse.linalg as spla  # noqa: E402
import torch  # noqa: E402

from tsgu_backends.torch_backend.krylov import krylov_solve  # noqa: E402
from tsgu_backends.torch_backend.operator import CsrOperator  # noqa: E402
from tsgu_core import solve  # noqa: E402
from tsgu_core.testing import convection_diffusion_2d, poisson_2d  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


# modules moved by the re-layering (882aadb): old sources are loaded with their imports renamed
_MOVED = {
    "tsgu_core.norms": "tsgu_core.plugins.norms",
    "tsgu_backends.torch_native": "tsgu_backends.torch_backend",
    "tsgu_backends.restarts": "tsgu_core.plugins.kit.restarts",
}


def load_before(
    revision: str, name: str, path: str = "tsgu_backends/torch_backend/krylov.py", renames: dict[str, str] | None = None
) -> object:
    """``path`` (default: the torch backend's ``krylov.py``) at ``revision``, imported as a separate module.

    Before the re-layering the torch backend's folder was ``torch_native``: that path is tried next. ``renames``
    replaces module names in its source (for one old module importing another old one).
    """
    for candidate in (path, path.replace("torch_backend", "torch_native")):
        shown = subprocess.run(["git", "show", f"{revision}:{candidate}"], cwd=ROOT, capture_output=True, text=True)
        if shown.returncode == 0:
            break
    else:
        raise FileNotFoundError(f"{path} at {revision}: {shown.stderr.strip()}")
    source = shown.stdout
    for old, new in _MOVED.items():
        source = source.replace(f"from {old} import", f"from {new} import")
    for old, new in (renames or {}).items():
        source = source.replace(old, new)
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=316, help="grid size; n = m² (default 316 → n = 99 856)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--restart", type=int, default=20, help="GMRES restart, SciPy's and torch's")
    parser.add_argument("--before", default="d05942d", help="git revision of the eager-before krylov.py")
    parser.add_argument("--fused-before", default="3ea2178", help="git revision of the fused-before krylov.py")
    parser.add_argument(
        "--fused-c",
        default="882aadb",
        help="git revision whose krylov.py and fused_cpu.py are the C/ctypes fused loops (row 'fused-C'); '' skips",
    )
    parser.add_argument(
        "--fused-prev",
        default="2872731",
        help="git revision whose krylov.py, fused_cpu.py and _fused_loops.py are row 'fused-prev'; '' skips",
    )
    parser.add_argument("--methods", default="cg,bicgstab,gmres", help="comma-separated subset")
    args = parser.parse_args()
    torch.set_num_threads(1)
    before = load_before(args.before, "krylov_before")
    fused_before = load_before(args.fused_before, "krylov_fused_before")
    fused_c = None
    if args.fused_c:  # the C loops compiled with the system compiler, driven by the krylov.py of their time
        fused_c = load_before(args.fused_c, "krylov_fused_c")
        fused_c.fused_cpu = load_before(args.fused_c, "fused_cpu_c", "tsgu_backends/torch_backend/fused_cpu.py")

    fused_prev = None
    if args.fused_prev:  # the numba loops at that revision, with the fused_cpu.py and krylov.py of their time
        loops = "tsgu_backends/torch_backend/_fused_loops.py"
        load_before(args.fused_prev, "fused_loops_prev", loops)
        fused_prev = load_before(args.fused_prev, "krylov_fused_prev")
        fused_prev.fused_cpu = load_before(
            args.fused_prev,
            "fused_cpu_prev",
            "tsgu_backends/torch_backend/fused_cpu.py",
            renames={"tsgu_backends.torch_backend._fused_loops": "fused_loops_prev"},
        )

    problems = {"cg": poisson_2d(args.m), "nonsymmetric": convection_diffusion_2d(args.m)}
    n = problems["cg"].shape[0]
    scipy_matrices = {
        key: sp.csr_matrix((A.values().numpy(), A.col_indices().numpy(), A.crow_indices().numpy()), shape=(n, n))
        for key, A in problems.items()
    }
    operators = {key: CsrOperator(A) for key, A in problems.items()}
    random = torch.randn(n, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rhs = {
        ("cg", 8): random,
        ("cg", 1): torch.ones(n, 1, dtype=torch.float64),
        ("nonsymmetric", 8): random,
        ("nonsymmetric", 1): random[:, :1].clone(),
    }
    rtol = args.rtol
    restart = args.restart
    iterations: dict[str, int] = {}
    methods = args.methods.split(",")

    def problem(method: str) -> str:
        return "cg" if method == "cg" else "nonsymmetric"

    def scipy_solve(method: str, k: int, key: str) -> None:
        solver = getattr(spla, method)
        B = rhs[problem(method), k]
        extra: dict[str, object] = {"maxiter": 10 * n}
        if method == "gmres":  # SciPy's maxiter counts restart cycles; the callback every inner step
            extra = {"restart": restart, "maxiter": 10 * n // restart, "callback_type": "pr_norm"}
        worst = 0
        for j in range(k):
            count = [0]
            _, info = solver(
                scipy_matrices[problem(method)],
                B[:, j].numpy(),
                rtol=rtol,
                atol=0.0,
                callback=lambda _, c=count: c.__setitem__(0, c[0] + 1),
                **extra,
            )
            assert info == 0, f"SciPy {method} failed: info={info}"
            worst = max(worst, count[0])
        iterations[key] = worst

    def torch_solve(module: object, method: str, k: int, key: str, **extra: object) -> None:
        operator = operators[problem(method)]
        if extra.pop("in_loop", False):  # A's CSR: unpreconditioned fused CG multiplies by it inside its loop
            extra["csr"] = operator.matrix
        result = module.krylov_solve(
            method,
            operator.apply,
            None,
            rhs[problem(method), k],
            x0=None,
            rtol=rtol,
            atol=0.0,
            maxiter=10 * n,
            restart=restart,
            **extra,
        )
        assert result.converged, result.message
        iterations[key] = result.iterations

    def public_solve(method: str, k: int, key: str, **extra: object) -> None:
        B = rhs[problem(method), k]
        if method == "gmres":
            extra["restart"] = restart
        _, info = solve(
            problems[problem(method)],
            B if k > 1 else B[:, 0],
            backend="torch",
            method=method,
            rtol=rtol,
            return_info=True,
            **extra,
        )
        assert info.converged, info.message
        iterations[key] = info.iterations

    after = sys.modules[krylov_solve.__module__]
    build_seconds: dict[str, float] = {}
    for method in methods:  # compile/build once per shape: pay it here, outside the timings
        if method == "gmres":
            continue
        for k in (8, 1):
            operator = operators[problem(method)]
            start = time.perf_counter()
            torch_solve(after, method, k, "warm-up", op_into=operator.apply_into, fused=True, in_loop=True)
            build_seconds[f"{method} fused k={k}"] = time.perf_counter() - start
            torch_solve(after, method, k, "warm-up", op_into=operator.apply_into, fused=True)
            if fused_prev is not None and k > 1:
                start = time.perf_counter()
                torch_solve(fused_prev, method, k, "warm-up", op_into=operator.apply_into, fused=True, in_loop=True)
                build_seconds[f"{method} fused-prev k={k}"] = time.perf_counter() - start
            if fused_c is not None:
                start = time.perf_counter()
                torch_solve(fused_c, method, k, "warm-up", op_into=operator.apply_into, fused=True)
                build_seconds[f"{method} fused-C k={k}"] = time.perf_counter() - start
            if method == "cg":
                start = time.perf_counter()
                torch_solve(fused_before, method, k, "warm-up", op_into=operator.apply_into, fused=True)
                build_seconds[f"{method} fused-before k={k}"] = time.perf_counter() - start

    variants = {}
    for method in methods:
        operator = operators[problem(method)]
        for k in (8, 1):
            tag = f"{method} k={k}"
            variants[f"{tag} scipy"] = lambda m=method, k=k, t=tag: scipy_solve(m, k, f"{t} scipy")
            if method != "gmres":  # GMRES's products were the same before
                variants[f"{tag} torch eager-before"] = lambda m=method, k=k, t=tag: torch_solve(
                    before, m, k, f"{t} torch eager-before"
                )
            variants[f"{tag} torch eager"] = lambda m=method, k=k, t=tag, o=operator: torch_solve(
                after, m, k, f"{t} torch eager", op_into=o.apply_into
            )
            if method == "cg":
                variants[f"{tag} torch fused-before"] = lambda m=method, k=k, t=tag, o=operator: torch_solve(
                    fused_before, m, k, f"{t} torch fused-before", op_into=o.apply_into, fused=True
                )
            if method != "gmres" and fused_c is not None:
                variants[f"{tag} torch fused-C"] = lambda m=method, k=k, t=tag, o=operator: torch_solve(
                    fused_c, m, k, f"{t} torch fused-C", op_into=o.apply_into, fused=True
                )
            if method != "gmres":
                variants[f"{tag} torch fused per-iteration"] = lambda m=method, k=k, t=tag, o=operator: torch_solve(
                    after, m, k, f"{t} torch fused per-iteration", op_into=o.apply_into, fused=True
                )
            if method != "gmres" and fused_prev is not None and k > 1:  # one column: per-iteration loops
                variants[f"{tag} torch fused-prev"] = lambda m=method, k=k, t=tag, o=operator: torch_solve(
                    fused_prev, m, k, f"{t} torch fused-prev", op_into=o.apply_into, fused=True, in_loop=True
                )
            if method != "gmres":
                variants[f"{tag} torch fused"] = lambda m=method, k=k, t=tag, o=operator: torch_solve(
                    after, m, k, f"{t} torch fused", op_into=o.apply_into, fused=True, in_loop=True
                )
            if method != "gmres" or k == 1:  # GMRES k=8 through the public path: the same loop, ~40 s
                variants[f"{tag} tsgu solve (default)"] = lambda m=method, k=k, t=tag: public_solve(
                    m, k, f"{t} tsgu solve (default)"
                )
            if method != "gmres":
                variants[f"{tag} tsgu solve fused=True"] = lambda m=method, k=k, t=tag: public_solve(
                    m, k, f"{t} tsgu solve fused=True", fused=True
                )
    times = interleaved_medians(variants, args.repeats)
    medians = {name: median(values) for name, values in times.items()}
    rows = []
    for name, seconds in medians.items():
        tag = " ".join(name.split()[:2])
        reference = medians[f"{tag} scipy"]
        label = "× SciPy (8 sequential)" if "k=8" in tag else "× SciPy"
        rows.append([name, f"{seconds * 1e3:.1f}", str(iterations[name]), f"{seconds / reference:.2f}", label])
    header = ["variant", "median ms", "iterations (max column)", "ratio", "against"]
    facts = environment()
    facts["eager-before revision"] = args.before
    facts["fused-before revision"] = args.fused_before
    facts["fused-C revision (C/ctypes loops)"] = args.fused_c or "(skipped)"
    facts["fused-prev revision (numba loops before the 3-pass BiCGSTAB)"] = args.fused_prev or "(skipped)"
    facts["GMRES restart (SciPy and torch)"] = str(restart)
    facts["first fused call (build or compile + one solve)"] = ", ".join(
        f"{key}: {value:.1f} s" for key, value in build_seconds.items()
    )
    facts["index dtype of the prepared CSR"] = str(operators["cg"].matrix.crow_indices().dtype)
    facts["load average at the end (1, 5, 15 min)"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    table = (
        f"# Block Krylov on the CPU — n = {n}, float64, rtol = {rtol:g}, {args.repeats} interleaved repeats\n\n"
        "CG: 2-D Poisson; BiCGSTAB and GMRES: 2-D convection–diffusion (nonsymmetric).\n\n"
        + markdown_table(header, rows)
        + "\n\nTargets (issue 17, item 3): CG k=8 ≤ 0.70× eight sequential SciPy CG; CG k=1 ≤ 1.3× SciPy CG. "
        "Issue 23, item 7 (numba loops): torch fused CG k=8 ≤ 0.60×, BiCGSTAB k=8 ≤ 0.65×.\n\n"
        + "\n".join(f"- {key}: {value}" for key, value in facts.items())
    )
    print(table)
    name = "block_krylov" + ("" if methods == ["cg", "bicgstab", "gmres"] else "_" + "_".join(methods))
    write_results(
        name if args.m == 316 else f"{name}_m{args.m}",
        table,
        {
            "n": n,
            "rtol": rtol,
            "restart": restart,
            "repeats": args.repeats,
            "times": times,
            "iterations": iterations,
            "build_seconds": build_seconds,
            "environment": facts,
        },
    )


if __name__ == "__main__":
    main()
