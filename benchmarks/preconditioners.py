"""Preconditioned against plain Krylov methods (tsgu's scipy backend), one thread.

2-D Poisson (SPD: CG) and convection–diffusion (nonsymmetric: GMRES and
BiCGSTAB), n ≈ 1e5, rtol 1e-8, one right-hand side. For each method and
preconditioner (none, ``jacobi``, ``ilu``, ``amg`` through pyamg): iterations
and forward time (median of repeats, the preconditioner's set-up included).
Target: AMG-preconditioned CG needs at least 5× fewer iterations than plain
CG on Poisson. Run: ``python benchmarks/preconditioners.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from _common import environment, markdown_table, pin_threads, write_results

pin_threads(1)

import torch  # noqa: E402

import tsgu_core  # noqa: E402
from tsgu_core.testing import convection_diffusion_2d, poisson_2d  # noqa: E402

PRECONDITIONERS = (None, "jacobi", "ilu", "amg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=316)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, payload = [], {}
    for problem, make, methods in (
        ("poisson", poisson_2d, ("cg",)),
        ("convection-diffusion", convection_diffusion_2d, ("gmres", "bicgstab")),
    ):
        A = make(args.m)
        b = torch.ones(A.shape[0], dtype=torch.float64)
        for method in methods:
            plain_iterations = None
            for preconditioner in PRECONDITIONERS:
                if preconditioner == "ilu" and method == "cg":
                    continue  # ILU is not symmetric: the backend refuses it for CG
                options = {"rtol": 1e-8, "maxiter": 20_000}
                if preconditioner:
                    options["preconditioner"] = preconditioner
                times, info = [], None
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    _, info = tsgu_core.solve(A, b, backend="scipy", method=method, return_info=True, **options)
                    times.append(time.perf_counter() - start)
                assert info is not None
                if preconditioner is None:
                    plain_iterations = info.iterations
                ratio = plain_iterations / info.iterations if info.iterations else float("nan")
                rows.append([problem, method, preconditioner or "none", str(info.iterations),
                             f"{ratio:.1f}", f"{statistics.median(times) * 1e3:.0f}"])  # fmt: skip
                payload[f"{problem}/{method}/{preconditioner}"] = {"iterations": info.iterations, "times": times}
                print(rows[-1])
    facts = environment()
    table = (
        f"# Preconditioners (scipy backend) — n = {args.m**2}, rtol = 1e-8, medians of {args.repeats}\n\n"
        + markdown_table(["problem", "method", "preconditioner", "iterations", "fewer than plain ×", "ms"], rows)
        + "\n\n"
        + "\n".join(f"- {key}: {value}" for key, value in facts.items())
    )
    print(table)
    write_results("preconditioners", table, {"results": payload, "environment": facts})


if __name__ == "__main__":
    main()
