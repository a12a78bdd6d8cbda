"""Block Krylov on the CPU: torch CG/BiCGSTAB with k columns against k sequential SciPy solves.

2-D Poisson (n ≈ 1e5), float64, one thread, ``rtol`` 1e-6, interleaved repeats
(median of each), all ratios from one run. Rows:

* ``scipy``: ``scipy.sparse.linalg.cg`` / ``bicgstab``, one column at a time
  (k = 8: eight sequential solves, the reference of the ratios);
* ``torch eager-before``: :func:`krylov_solve` as it was at ``--before`` (a git
  revision, loaded from ``git show``): ``A @ X`` products, a fresh ``(n, k)``
  temporary for every product and its scaling;
* ``torch eager-after``: the current default: products written by
  ``addmm_(beta=0, alpha=1/σ)`` into one reused buffer;
* ``torch fused`` (CG): ``fused=True``, the vector work of an iteration in two
  ``torch.compile``-d passes (compile time printed separately, not timed);
* ``tsgu solve``: the whole public path (``tsgu_core.solve``, forward).

The torch operator (int32 CSR) is built once outside the timings, as is
SciPy's CSR matrix. Run: ``python benchmarks/block_krylov.py`` (``--m`` grid,
``--repeats``, ``--before`` revision, ``--no-bicgstab``).
"""

from __future__ import annotations

import argparse
import importlib.util
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

from tsgu_backends.torch_native.krylov import krylov_solve  # noqa: E402
from tsgu_backends.torch_native.operator import CsrOperator  # noqa: E402
from tsgu_core import solve  # noqa: E402
from tsgu_core.testing import poisson_2d  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def load_before(revision: str) -> object:
    """``tsgu_backends/torch_native/krylov.py`` at ``revision``, imported as a separate module."""
    source = subprocess.run(
        ["git", "show", f"{revision}:tsgu_backends/torch_native/krylov.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "krylov_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("krylov_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["krylov_before"] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=316, help="grid size; n = m² (default 316 → n = 99 856)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--before", default="d05942d", help="git revision of the eager-before krylov.py")
    parser.add_argument("--no-bicgstab", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    before = load_before(args.before)

    A = poisson_2d(args.m)
    n = A.shape[0]
    A_scipy = sp.csr_matrix((A.values().numpy(), A.col_indices().numpy(), A.crow_indices().numpy()), shape=(n, n))
    operator = CsrOperator(A)
    B = {
        1: torch.ones(n, 1, dtype=torch.float64),
        8: torch.randn(n, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)),
    }
    rtol = args.rtol
    iterations: dict[str, int] = {}
    methods = ["cg"] + ([] if args.no_bicgstab else ["bicgstab"])

    def scipy_solve(method: str, k: int, key: str) -> None:
        solver = getattr(spla, method)
        worst = 0
        for j in range(k):
            count = [0]
            _, info = solver(
                A_scipy,
                B[k][:, j].numpy(),
                rtol=rtol,
                atol=0.0,
                maxiter=10 * n,
                callback=lambda _, c=count: c.__setitem__(0, c[0] + 1),
            )
            assert info == 0, f"SciPy {method} failed: info={info}"
            worst = max(worst, count[0])
        iterations[key] = worst

    def torch_solve(module: object, method: str, k: int, key: str, **extra: object) -> None:
        result = module.krylov_solve(
            method, operator.apply, None, B[k], x0=None, rtol=rtol, atol=0.0, maxiter=10 * n, **extra
        )
        assert result.converged, result.message
        iterations[key] = result.iterations

    def public_solve(method: str, k: int, key: str, **extra: object) -> None:
        rhs = B[k] if k > 1 else B[k][:, 0]
        _, info = solve(A, rhs, backend="torch", method=method, rtol=rtol, return_info=True, **extra)
        iterations[key] = info.iterations

    after = sys.modules[krylov_solve.__module__]
    compile_seconds: dict[str, float] = {}
    for k in (8, 1):  # the fused kernels compile once per shape: pay it here, outside the timings
        start = time.perf_counter()
        torch_solve(after, "cg", k, "warm-up", op_into=operator.apply_into, fused=True)
        compile_seconds[f"k={k}"] = time.perf_counter() - start

    variants = {}
    for method in methods:
        for k in (8, 1):
            tag = f"{method} k={k}"
            variants[f"{tag} scipy"] = lambda m=method, k=k, t=tag: scipy_solve(m, k, f"{t} scipy")
            variants[f"{tag} torch eager-before"] = lambda m=method, k=k, t=tag: torch_solve(
                before, m, k, f"{t} torch eager-before"
            )
            variants[f"{tag} torch eager-after"] = lambda m=method, k=k, t=tag: torch_solve(
                after, m, k, f"{t} torch eager-after", op_into=operator.apply_into
            )
            if method == "cg":
                variants[f"{tag} torch fused"] = lambda m=method, k=k, t=tag: torch_solve(
                    after, m, k, f"{t} torch fused", op_into=operator.apply_into, fused=True
                )
            variants[f"{tag} tsgu solve (default)"] = lambda m=method, k=k, t=tag: public_solve(
                m, k, f"{t} tsgu solve (default)"
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
    facts["fused first-call time (compile + one solve)"] = ", ".join(
        f"{key}: {value:.1f} s" for key, value in compile_seconds.items()
    )
    facts["index dtype of the prepared CSR"] = str(operator.matrix.crow_indices().dtype)
    table = (
        f"# Block Krylov on the CPU — 2-D Poisson, n = {n}, float64, rtol = {rtol:g}, "
        f"{args.repeats} interleaved repeats\n\n"
        + markdown_table(header, rows)
        + "\n\nTargets (issue 17, item 3): CG k=8 ≤ 0.70× eight sequential SciPy CG; CG k=1 ≤ 1.3× SciPy CG.\n\n"
        + "\n".join(f"- {key}: {value}" for key, value in facts.items())
    )
    print(table)
    write_results(
        "block_krylov" if args.m == 316 else f"block_krylov_m{args.m}",
        table,
        {
            "n": n,
            "rtol": rtol,
            "repeats": args.repeats,
            "times": times,
            "iterations": iterations,
            "compile_seconds": compile_seconds,
            "environment": facts,
        },
    )


if __name__ == "__main__":
    main()
