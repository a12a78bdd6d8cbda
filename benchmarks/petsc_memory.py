"""Distributed solves on 1, 2 and 4 MPI ranks: per-rank peak memory and bytes sent per solve, forward and backward.

Weak scaling: every rank owns one box of a 2-D (5-point) or 3-D (7-point) Poisson grid — the box partition a
graph partitioner such as ParMETIS would give — and builds only its own rows (global numbering box by box).
For each rank count, preconditioner (``gamg``: AMG; ``bjacobi``: block Jacobi with ILU(0) per rank) and problem it
records, per rank:

* rows, stored entries and ghosts (off-rank columns its rows touch);
* bytes sent, counted in two places: tsgu's ghost exchange (``tsgu_core.api.distributed.TRAFFIC``: the residual
  checks and the gradient) and PETSc's own messages (its ``petsc_isend_len``/``petsc_send_len`` counters: the
  Krylov iterations' scatters and the preconditioner), forward solve and backward (transpose solve + gradient),
  with PETSc's set-up (``prepare``) measured on its own;
* collective reductions (PETSc's ``petsc_allreduce_ct``) and tsgu's reduced numbers (norms: ``2·k`` each);
* peak resident memory (``ru_maxrss``) above the process's baseline after imports, after the forward and after
  the backward;
* what the former whole-vector gather would have moved per exchange, ``(n − n_local)·k·8`` bytes (derived).

It checks that the 2- and 4-rank solutions and gradients match those of the same global problem solved on one
rank to 1e-10 (rank 0 solves it after the measurements).
One thread per rank; on this 2-core machine the ranks are oversubscribed, so no times are reported.
Run: ``python benchmarks/petsc_memory.py`` (``--quick`` for small boxes); results go to
benchmarks/results/petsc_memory.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RANK_GRIDS = {2: {1: (1, 1), 2: (2, 1), 4: (2, 2)}, 3: {1: (1, 1, 1), 2: (2, 1, 1), 4: (2, 2, 1)}}


def box_rows(box: tuple[int, ...], ranks: tuple[int, ...], rank: int):
    """This rank's rows of the Poisson matrix on a grid of ``ranks`` boxes of ``box`` points, numbered box by box."""
    import torch

    dim = len(box)
    per_rank = 1
    for b in box:
        per_rank *= b
    rank_coord = []
    r = rank
    for p in reversed(ranks):  # the rank's box, last axis fastest
        rank_coord.append(r % p)
        r //= p
    rank_coord = rank_coord[::-1]
    local = torch.arange(per_rank)
    coords, rest = [], local
    for b in reversed(box):
        coords.append(rest % b)
        rest = rest // b
    coords = coords[::-1]
    grid = [c + rc * b for c, rc, b in zip(coords, rank_coord, box, strict=True)]  # global grid coordinates
    size = [b * p for b, p in zip(box, ranks, strict=True)]

    def global_index(points: list[torch.Tensor]) -> torch.Tensor:
        owner = torch.zeros_like(points[0])
        within = torch.zeros_like(points[0])
        for g, b, p in zip(points, box, ranks, strict=True):
            owner = owner * p + g // b
            within = within * b + g % b
        return owner * per_rank + within

    rows, cols, vals = [local], [local + rank * per_rank], [torch.full((per_rank,), 2.0 * dim, dtype=torch.float64)]
    for axis in range(dim):
        for step in (-1, 1):
            moved = [g.clone() for g in grid]
            moved[axis] += step
            inside = (moved[axis] >= 0) & (moved[axis] < size[axis])
            rows.append(local[inside])
            cols.append(global_index([m[inside] for m in moved]))
            vals.append(torch.full((int(inside.sum()),), -1.0, dtype=torch.float64))
    total = 1
    for s in size:
        total *= s
    indices = torch.stack([torch.cat(rows), torch.cat(cols)])
    A = torch.sparse_coo_tensor(indices, torch.cat(vals), (per_rank, total)).coalesce()
    return A.to_sparse_csr()


class PetscCounters:
    """PETSc's global message counters (bytes sent point to point, reductions), read through ctypes."""

    def __init__(self) -> None:
        import ctypes

        with open("/proc/self/maps") as maps:
            path = sorted({line.split()[-1] for line in maps if "libpetsc" in line and ".so" in line})[0]
        library = ctypes.CDLL(path)
        self.values = {
            name: ctypes.c_double.in_dll(library, f"petsc_{name}")
            for name in ("isend_len", "send_len", "isend_ct", "send_ct", "allreduce_ct")
        }

    def read(self) -> dict[str, float]:
        v = {name: value.value for name, value in self.values.items()}
        return {
            "bytes": v["isend_len"] + v["send_len"],
            "messages": v["isend_ct"] + v["send_ct"],
            "allreduces": v["allreduce_ct"],
        }


def pattern_bytes(pattern) -> int:
    """Bytes of the index tensors a DistributedPattern holds (with its transpose, built by a backward pass)."""
    import torch

    held = [t for t in vars(pattern).values() if isinstance(t, torch.Tensor)]
    held += [rows for _, rows in pattern.exchange.send]
    held += list(pattern._local_transposed)
    return sum(t.numel() * t.element_size() for t in held)


def peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(dim: int, side: int, pc: str, out: str) -> None:
    """Runs on every rank: one problem, one preconditioner, forward and backward, everything counted."""
    import torch
    from mpi4py import MPI
    from petsc4py import PETSc  # noqa: F401 — loaded before the counters are found

    import tsgu_core
    from tsgu_core.api import distributed
    from tsgu_core.api.distributed import DistributedPattern
    from tsgu_core.plugins.protocol import SolveOptions

    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    petsc = PetscCounters()
    baseline = peak_mb()
    box = (side,) * dim
    A_local = box_rows(box, RANK_GRIDS[dim][size], rank)
    n_local, n = A_local.shape
    pattern = DistributedPattern.of(A_local, comm)
    ghosts = pattern.ghosts.numel()
    built = peak_mb()
    b_local = torch.ones(n_local, dtype=torch.float64)
    options = {"method": "cg", "pc": pc, "rtol": 1e-11}

    # PETSc's set-up alone (assembly, preconditioner), to split it from the solve
    backend = tsgu_core.get_entry("petsc").backend
    before = petsc.read()
    state = backend.prepare_distributed(
        A_local, "cg", SolveOptions(rtol=1e-11, atol=0.0, maxiter=10000, extra={"pc": pc, "petsc_options": None}), comm
    )
    setup = {key: petsc.read()[key] - before[key] for key in before}
    state.ksp.destroy()
    state.matrix.destroy()

    leaf = A_local.clone().requires_grad_()
    rhs = b_local.clone().requires_grad_()
    p0, t0 = petsc.read(), distributed.TRAFFIC.snapshot()
    X, info = tsgu_core.solve_distributed(leaf, rhs, comm=comm, return_info=True, **options)
    p1, t1 = petsc.read(), distributed.TRAFFIC.snapshot()
    after_forward = peak_mb()
    X.square().sum().backward()
    p2, t2 = petsc.read(), distributed.TRAFFIC.snapshot()
    after_backward = peak_mb()
    record = {
        "rank": rank, "rows": n_local, "n": n, "nnz": int(A_local.values().numel()), "ghosts": ghosts,
        "neighbours": len(pattern.exchange.recv),
        "iterations_forward": info.iterations, "iterations_backward": info.backward.iterations,
        "petsc_setup_bytes": setup["bytes"], "petsc_setup_allreduces": setup["allreduces"],
        "petsc_forward_bytes": p1["bytes"] - p0["bytes"] - setup["bytes"],
        "petsc_forward_allreduces": p1["allreduces"] - p0["allreduces"] - setup["allreduces"],
        "petsc_backward_bytes": p2["bytes"] - p1["bytes"],
        "petsc_backward_allreduces": p2["allreduces"] - p1["allreduces"],
        "tsgu_forward_bytes": (t1 - t0).bytes_sent, "tsgu_backward_bytes": (t2 - t1).bytes_sent,
        "tsgu_forward_reduced": (t1 - t0).reduced, "tsgu_backward_reduced": (t2 - t1).reduced,
        "old_gather_bytes": (n - n_local) * 8,
        "pattern_mb": pattern_bytes(pattern) / 1e6,
        "peak_mb_baseline": baseline, "built_mb": built - baseline,
        "forward_mb": after_forward - baseline, "backward_mb": after_backward - baseline,
    }  # fmt: skip
    records = comm.gather(record, root=0)
    # the same global problem on one rank (after every measurement): solutions and gradients must agree to 1e-10
    pieces = comm.gather((X.detach(), rhs.grad, leaf.grad.values()), root=0)
    if rank == 0:
        if size > 1:
            full = torch.cat([box_rows(box, RANK_GRIDS[dim][size], r).to_sparse_coo() for r in range(size)]).coalesce()
            full = full.to_sparse_csr().requires_grad_()
            ones = torch.ones(n, dtype=torch.float64, requires_grad=True)
            X1 = tsgu_core.solve_distributed(full, ones, comm=MPI.COMM_SELF, **options)
            X1.square().sum().backward()
            single = (X1.detach(), ones.grad, full.grad.values())
            mine = [torch.cat([p[i] for p in pieces]) for i in range(3)]
            match = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(mine, single, strict=True))
        else:
            match = 0.0
        with open(out, "w") as file:
            json.dump({"match_1rank": match, "per_rank": records}, file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small boxes (a smoke test)")
    parser.add_argument("--worker", nargs=4, metavar=("DIM", "SIDE", "PC", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        dim, side, pc, out = args.worker
        worker(int(dim), int(side), pc, out)
        return
    python = os.environ.get("TSGU_PETSC_PYTHON", str(ROOT / ".venv-petsc" / "bin" / "python"))
    # (dim, side of each rank's box, preconditioners): two box sizes per dimension for the memory slope
    runs = [(2, 40, ("gamg", "bjacobi")), (3, 12, ("gamg", "bjacobi"))]
    if not args.quick:
        runs = [(2, 80, ("gamg",)), (2, 160, ("gamg", "bjacobi")), (3, 20, ("gamg",)), (3, 30, ("gamg", "bjacobi"))]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    print(f"threads per rank: 1 (OMP_NUM_THREADS=1, torch.set_num_threads(1)); cores here: {os.cpu_count()}")
    rows, worst = [], 0.0
    with tempfile.TemporaryDirectory() as scratch:
        for dim, side, pcs in runs:
            for pc in pcs:
                for size in (1, 2, 4):
                    out = f"{scratch}/d{dim}_{side}_{pc}_{size}"
                    command = ["mpiexec", "--allow-run-as-root", "--oversubscribe", "-n", str(size), python,
                               __file__, "--worker", str(dim), str(side), pc, out]  # fmt: skip
                    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
                    if done.returncode != 0:
                        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
                    with open(out) as file:
                        measured = json.load(file)
                    worst = max(worst, measured["match_1rank"])
                    rows.append({"dim": dim, "side": side, "pc": pc, "ranks": size, **measured})
                    print(summary_line(rows[-1]), flush=True)
    results = ROOT / "benchmarks" / "results"
    (results / "petsc_memory.json").write_text(json.dumps({"quick": args.quick, "rows": rows}, indent=1))
    (results / "petsc_memory.md").write_text(table(rows, args.quick))
    print(f"largest difference from the 1-rank result: {worst:.1e}")
    if worst > 1e-10:
        sys.exit("2- or 4-rank results differ from the 1-rank ones by more than 1e-10")


def summary_line(row: dict) -> str:
    r = max(row["per_rank"], key=lambda x: x["ghosts"])
    kb = {key: r[key] / 1e3 for key in r if key.endswith("_bytes")}
    return (
        f"{row['dim']}-D {row['side']}^{row['dim']} {row['pc']:8s} P={row['ranks']}: rows/rank {r['rows']}, "
        f"ghosts {r['ghosts']}, it {r['iterations_forward']}/{r['iterations_backward']}, PETSc KB fwd "
        f"{kb['petsc_forward_bytes']:.0f} bwd {kb['petsc_backward_bytes']:.0f} setup {kb['petsc_setup_bytes']:.0f}, "
        f"tsgu KB fwd {kb['tsgu_forward_bytes']:.1f} bwd {kb['tsgu_backward_bytes']:.1f}, "
        f"peak MB {max(x['backward_mb'] for x in row['per_rank']):.0f}, match {row['match_1rank']:.0e}"
    )


COLUMNS = (
    "dim | box | pc | ranks | rows/rank | nnz/rank | ghosts | neighbours | iterations fwd/bwd | PETSc setup KB | "
    "PETSc fwd KB | PETSc bwd KB | PETSc allreduces fwd/bwd | tsgu fwd KB | tsgu bwd KB | "
    "tsgu reduced numbers fwd/bwd | old gather KB | tsgu pattern MB | PETSc matrix MB | peak MB built/fwd/bwd | "
    "max diff vs 1 rank"
)


def table(rows: list[dict], quick: bool) -> str:
    baseline = rows[0]["per_rank"][0]["peak_mb_baseline"]
    lines = [
        "# Distributed solves: per-rank memory and bytes sent (benchmarks/petsc_memory.py)",
        "",
        f"{'Quick run (small boxes). ' if quick else ''}Weak scaling: one box of the Poisson grid per rank "
        "(2-D 5-point, 3-D 7-point), `cg`, rtol 1e-11 (so that rank counts agree to 1e-10), one right-hand "
        "side, float64, one thread per rank, ranks oversubscribed on a 2-core machine (no times). The rank "
        "with the most ghosts is shown; bytes are what that rank sent. PETSc forward excludes its set-up, "
        "shown apart. `old gather`: what the former whole-vector `Allgatherv` moved into each rank per "
        "exchange, (n − n_local)·8. `tsgu pattern MB`: the index tensors of the rank's DistributedPattern "
        "(with the transpose it builds for a backward pass). `PETSc matrix MB`: its AIJ storage, 8 + 4 bytes per "
        "entry (int32 indices; this PETSc build does not log memory). "
        "`peak MB`: the largest rank's peak RSS above its baseline after imports (baseline ≈ "
        f"{baseline:.0f} MB: Python, torch, PETSc) once its rows are built (with the construction's transient "
        "COO → CSR copies), after the forward solve (with PETSc's set-up) and after the backward.",
        "",
        f"| {COLUMNS} |",
        "|" + "---|" * (COLUMNS.count("|") + 1),
    ]
    for row in rows:
        r = max(row["per_rank"], key=lambda x: x["ghosts"])
        kb = {key: r[key] / 1e3 for key in r if key.endswith("_bytes")}
        peak = [max(x[key] for x in row["per_rank"]) for key in ("built_mb", "forward_mb", "backward_mb")]
        cells = [
            f"{row['dim']}-D", f"{row['side']}^{row['dim']}", row["pc"], row["ranks"], r["rows"], r["nnz"],
            r["ghosts"], r["neighbours"], f"{r['iterations_forward']}/{r['iterations_backward']}",
            f"{kb['petsc_setup_bytes']:.0f}", f"{kb['petsc_forward_bytes']:.1f}", f"{kb['petsc_backward_bytes']:.1f}",
            f"{r['petsc_forward_allreduces']:.0f}/{r['petsc_backward_allreduces']:.0f}",
            f"{kb['tsgu_forward_bytes']:.2f}", f"{kb['tsgu_backward_bytes']:.2f}",
            f"{r['tsgu_forward_reduced']}/{r['tsgu_backward_reduced']}", f"{kb['old_gather_bytes']:.0f}",
            f"{r['pattern_mb']:.2f}", f"{r['nnz'] * (8 + 4) / 1e6:.2f}",
            "/".join(f"{p:.0f}" for p in peak), f"{row['match_1rank']:.0e}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
