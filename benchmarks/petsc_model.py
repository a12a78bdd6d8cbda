"""The weak-scaling model of docs/scaling.md, fitted to benchmarks/results/petsc_memory.json and extrapolated.

Reads the per-rank measurements of ``benchmarks/petsc_memory.py`` (1, 2, 4 ranks; 2-D and 3-D Poisson; one box
of the grid per rank), fits the model's constants and prints — and saves to
benchmarks/results/petsc_model.{json,md} — the per-rank memory and bytes per solve at 1e6 rows per rank on
64, 256 and 1 000 ranks. No MPI here: ``python benchmarks/petsc_model.py`` (plain Python, no dependencies).

The model, per rank, for one right-hand side (k = 1; bytes scale with k):

* rows ``r``; box side ``b = r^(1/d)``; ghosts ``g = 2d·b^(d−1)`` for an interior rank of a box partition
  with a (2d+1)-point stencil (measured ranks have fewer faces: their ``g`` is read, not modelled);
* memory ``M = M0 + m·r`` (``m``, ``M0`` from the 1-rank runs at two box sizes; the ghosts' share, a few
  vectors of ``g``, is below the measurement's resolution and stated separately);
* PETSc's bytes per solve ``β·it·g·8`` (``β``: ghost-vector scatters per Krylov iteration, all multigrid
  levels included, fitted on the 4-rank runs), its set-up ``γ·g·8``;
* tsgu's bytes per solve: forward ``g·8`` (the residual check), backward ``2·g·8`` (the transpose
  residual check and the gradient) — exact, by construction;
* iterations: AMG grows by the measured slope per doubling of n (fitted over the 1, 2, 4-rank runs of the
  largest box; a flat count is the optimistic case); block Jacobi ``c·√(b·P)`` in 2-D and ``c·√b·P^(1/3)``
  in 3-D (one-level domain decomposition: condition number ``∝ 1/(H·h)``), ``c`` fitted on the 4-rank run;
* the former whole-vector gather: ``(n − r)·8`` bytes into every rank per exchange, 3 exchanges per
  forward + backward.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
RANKS = (64, 256, 1000)
ROWS = 1_000_000


def worst(row: dict) -> dict:
    return max(row["per_rank"], key=lambda x: x["ghosts"])


def fit(rows: list[dict]) -> dict:
    """The model's constants per dimension from the measurements."""
    model = {}
    for dim in (2, 3):
        mine = [r for r in rows if r["dim"] == dim]
        single = sorted((r for r in mine if r["ranks"] == 1 and r["pc"] == "gamg"), key=lambda r: r["side"])
        small, large = single[0], single[-1]
        peak = {id(r): max(x["backward_mb"] for x in r["per_rank"]) for r in single}
        r_small, r_large = worst(small)["rows"], worst(large)["rows"]
        slope = (peak[id(large)] - peak[id(small)]) / (r_large - r_small)  # MB per row
        four = {
            pc: max((r for r in mine if r["ranks"] == 4 and r["pc"] == pc), key=lambda r: r["side"])
            for pc in ("gamg", "bjacobi")
        }
        constants = {"memory_mb_per_row": slope, "memory_mb_fixed": peak[id(large)] - slope * r_large}
        for pc, row in four.items():
            w = worst(row)
            iterations = w["iterations_forward"] + w["iterations_backward"]
            constants[f"{pc}_beta"] = (w["petsc_forward_bytes"] + w["petsc_backward_bytes"]) / (
                iterations * w["ghosts"] * 8
            )
            # iterations against log2(total rows) over the largest box's 1, 2, 4-rank runs: least-squares slope
            series = [(math.log2(worst(r)["n"]), worst(r)["iterations_forward"]) for r in mine
                      if r["pc"] == pc and r["side"] == row["side"]]  # fmt: skip
            mean_x = sum(x for x, _ in series) / len(series)
            mean_y = sum(y for _, y in series) / len(series)
            slope = sum((x - mean_x) * (y - mean_y) for x, y in series) / sum((x - mean_x) ** 2 for x, _ in series)
            constants[f"{pc}_iterations"] = w["iterations_forward"]
            constants[f"{pc}_iterations_per_doubling"] = slope
            constants[f"{pc}_n"] = w["n"]
            constants[f"{pc}_allreduces_per_iteration"] = (
                w["petsc_forward_allreduces"] + w["petsc_backward_allreduces"]
            ) / iterations
            if pc == "gamg":
                constants["gamg_gamma"] = w["petsc_setup_bytes"] / (w["ghosts"] * 8)
            else:
                side, ranks = row["side"], row["ranks"]
                growth = (side * ranks) ** 0.5 if dim == 2 else side**0.5 * ranks ** (1 / 3)
                constants["bjacobi_c"] = w["iterations_forward"] / growth
        model[dim] = constants
    return model


def extrapolate(model: dict) -> list[dict]:
    out = []
    for dim, c in model.items():
        side = round(ROWS ** (1 / dim))
        ghosts = 2 * dim * side ** (dim - 1)
        for ranks in RANKS:
            n = ROWS * ranks
            for pc in ("gamg", "bjacobi"):
                if pc == "gamg":  # measured growth per doubling of n, continued (flat would be the optimistic case)
                    iterations = c["gamg_iterations"] + c["gamg_iterations_per_doubling"] * math.log2(n / c["gamg_n"])
                else:
                    growth = (side * ranks) ** 0.5 if dim == 2 else side**0.5 * ranks ** (1 / 3)
                    iterations = c["bjacobi_c"] * growth
                out.append({
                    "dim": dim, "ranks": ranks, "pc": pc, "rows": ROWS, "side": side, "ghosts": ghosts,
                    "ghost_fraction": ghosts / ROWS, "iterations": iterations,
                    "memory_mb": c["memory_mb_fixed"] + c["memory_mb_per_row"] * ROWS,
                    "petsc_mb_per_solve": c[f"{pc}_beta"] * iterations * ghosts * 8 / 1e6,
                    "petsc_setup_mb": c["gamg_gamma"] * ghosts * 8 / 1e6 if pc == "gamg" else 0.0,
                    "allreduces_per_solve": c[f"{pc}_allreduces_per_iteration"] * iterations,
                    "tsgu_forward_kb": ghosts * 8 / 1e3, "tsgu_backward_kb": 2 * ghosts * 8 / 1e3,
                    "old_gather_gb": (n - ROWS) * 8 / 1e9,
                })  # fmt: skip
    return out


def main() -> None:
    measured = json.loads((RESULTS / "petsc_memory.json").read_text())
    model = fit(measured["rows"])
    table = extrapolate(model)
    lines = ["# Weak-scaling model fitted to petsc_memory.json (benchmarks/petsc_model.py)", "", "Constants:", ""]
    for dim, constants in model.items():
        shown = ", ".join(f"{key} = {value:.3g}" for key, value in constants.items())
        lines.append(f"* {dim}-D: {shown}")
    lines += [
        "",
        f"Extrapolation, {ROWS:.0e} rows per rank, an interior rank of a box partition, one right-hand side "
        "(forward + backward where both):",
        "",
        "| dim | ranks | pc | ghosts (fraction) | iterations | memory MB | PETSc MB/solve fwd+bwd | PETSc set-up MB | "
        "allreduces fwd+bwd | tsgu KB fwd/bwd | former gather GB per exchange |",
        "|" + "---|" * 11,
    ]
    for r in table:
        lines.append(
            f"| {r['dim']}-D | {r['ranks']} | {r['pc']} | {r['ghosts']} ({r['ghost_fraction']:.1%}) | "
            f"{r['iterations']:.0f} | {r['memory_mb']:.0f} | {r['petsc_mb_per_solve']:.1f} | "
            f"{r['petsc_setup_mb']:.1f} | "
            f"{r['allreduces_per_solve']:.0f} | {r['tsgu_forward_kb']:.0f}/{r['tsgu_backward_kb']:.0f} | "
            f"{r['old_gather_gb']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    (RESULTS / "petsc_model.md").write_text(text)
    (RESULTS / "petsc_model.json").write_text(json.dumps({"model": model, "extrapolation": table}, indent=1))


if __name__ == "__main__":
    main()
