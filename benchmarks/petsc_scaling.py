"""The petsc backend on 1 and 2 MPI ranks: forward and forward+backward times.

Launches itself under ``mpiexec -n P`` in the PETSc environment
(``scripts/setup-petsc-env.sh``) for P = 1 and 2 and collects the timings:
2-D Poisson (SPD: ``cg`` + ``gamg``, ``cg`` + ``jacobi``) and convection–diffusion
(nonsymmetric: ``gmres`` + ``bjacobi``, ``lu`` by MUMPS), n ≈ 1e5, rtol 1e-8,
one right-hand side; each rank builds only its own rows. One thread per rank.
This machine has 2 cores, so 2 ranks is all it can show; docs/scaling.md says
what changes at hundreds of ranks. Run: ``python benchmarks/petsc_scaling.py``
(``--m 100`` for a quick look).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = [
    ("poisson", "cg", {"pc": "gamg"}),
    ("poisson", "cg", {"pc": "jacobi"}),
    ("convection-diffusion", "gmres", {"pc": "bjacobi"}),
    ("convection-diffusion", "lu", {}),
]


def worker(m: int, repeats: int) -> None:
    """Runs on every rank: time each case, print one JSON line on rank 0."""
    import torch
    from mpi4py import MPI

    import tsgu_core
    from tsgu_core.testing import convection_diffusion_2d, poisson_2d

    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    results = []
    for problem, method, options in CASES:
        full = (poisson_2d if problem == "poisson" else convection_diffusion_2d)(m)
        n = full.shape[0]
        counts = [n // size + (r < n % size) for r in range(size)]
        start = sum(counts[:rank])
        crow = full.crow_indices()
        lo, hi = int(crow[start]), int(crow[start + counts[rank]])
        local = torch.sparse_csr_tensor(
            crow[start : start + counts[rank] + 1] - lo, full.col_indices()[lo:hi], full.values()[lo:hi],
            (counts[rank], n),
        )  # fmt: skip
        b = torch.ones(counts[rank], dtype=torch.float64)
        extra = dict(options, rtol=1e-8) if method != "lu" else dict(options)
        forward, both, iterations = [], [], None
        for _ in range(repeats):
            comm.Barrier()
            t0 = time.perf_counter()
            tsgu_core.solve_distributed(local, b, method=method, **extra)
            comm.Barrier()
            forward.append(time.perf_counter() - t0)
            leaf, rhs = local.clone().requires_grad_(), b.clone().requires_grad_()
            comm.Barrier()
            t0 = time.perf_counter()
            x, info = tsgu_core.solve_distributed(leaf, rhs, method=method, return_info=True, **extra)
            x.square().sum().backward()
            comm.Barrier()
            both.append(time.perf_counter() - t0)
            iterations = info.iterations
        results.append({"problem": problem, "method": method, "options": options, "n": n, "ranks": size,
                        "forward": statistics.median(forward), "forward_backward": statistics.median(both),
                        "iterations": iterations})  # fmt: skip
    if rank == 0:
        print("RESULTS " + json.dumps(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=316)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.m, args.repeats)
        return
    root = Path(__file__).parents[1]
    python = os.environ.get("TSGU_PETSC_PYTHON", str(root / ".venv-petsc" / "bin" / "python"))
    if not Path(python).exists():
        sys.exit("needs the PETSc environment: run scripts/setup-petsc-env.sh")
    environment = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    by_ranks = {}
    for ranks in (1, 2):
        command = ["mpiexec", "--allow-run-as-root", "--oversubscribe", "-n", str(ranks), python, __file__,
                   "--worker", "--m", str(args.m), "--repeats", str(args.repeats)]  # fmt: skip
        output = subprocess.run(command, capture_output=True, text=True, env=environment, check=True).stdout
        by_ranks[ranks] = json.loads(output.split("RESULTS ", 1)[1])
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import markdown_table, write_results

    rows = []
    for one, two in zip(by_ranks[1], by_ranks[2], strict=True):
        label = f"{one['method']} + {one['options'].get('pc', 'MUMPS' if one['method'] == 'lu' else '-')}"
        rows.append([one["problem"], label, str(one["iterations"]),
                     f"{one['forward'] * 1e3:.0f}", f"{two['forward'] * 1e3:.0f}",
                     f"{one['forward_backward'] * 1e3:.0f}", f"{two['forward_backward'] * 1e3:.0f}",
                     f"{one['forward_backward'] / two['forward_backward']:.2f}"])  # fmt: skip
    header = ["problem", "method", "iterations (1 rank)", "fwd ms, 1 rank", "fwd ms, 2 ranks",
              "fwd+bwd ms, 1 rank", "fwd+bwd ms, 2 ranks", "speed-up (fwd+bwd)"]  # fmt: skip
    table = (
        f"# petsc backend on 1 and 2 ranks — n = {args.m**2}, rtol 1e-8, medians of {args.repeats}, one thread "
        "per rank, 2-core machine\n\n" + markdown_table(header, rows)
    )
    print(table)
    write_results("petsc_scaling", table, {"results": by_ranks})


if __name__ == "__main__":
    main()
