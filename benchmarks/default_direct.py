"""Which CPU direct solver should be the default: SuperLU (``scipy``) or PARDISO (``pardiso``), by size and structure.

Problems, float64, one right-hand side, one thread: 2-D 5-point Poisson
(``m × m``) and 3-D 7-point Poisson (``m³``) over a range of sizes. For each,
the forward solve ``tsgu_core.solve(A, b, backend=...)`` is timed two ways:

* ``first``: in a fresh interpreter (torch and tsgu already imported, the
  matrix built), the first solve — what a one-shot ``tsgu solve`` pays;
  PARDISO's includes loading MKL (~1–2 s). Median of ``--first-repeats`` processes;
* ``warm``: in this process after one untimed solve of each backend, median
  of ``--repeats`` interleaved solves — what a program solving many systems pays.

The rule (:func:`derive_rule`, copied into ``DEFAULT_FROM`` in
:mod:`tsgu_backends.pardiso_backend.backend`): per pattern class, PARDISO from
the smallest measured ``n`` from which on its warm saving per solve repays
its extra first-call cost (MKL's load) within ``PAYBACK_SOLVES`` solves — a
one-shot solve loses at most that load, a program solving many systems gains
from the first few on. Run: ``python benchmarks/default_direct.py``
(``--quick`` for a short look; ``--derive`` to re-derive the rule from the
saved results).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from _common import environment, interleaved_medians, median, pin_threads, poisson_3d, report, write_results

pin_threads(1)
os.environ.setdefault("MKL_THREADING_LAYER", "GNU")

import torch  # noqa: E402

import tsgu_core  # noqa: E402
from tsgu_core.testing import poisson_2d  # noqa: E402

BACKENDS = ("scipy", "pardiso")
PAYBACK_SOLVES = 10
SIZES = {"2-D": (32, 64, 128, 200, 316, 447), "3-D": (10, 14, 20, 26, 32, 40)}
QUICK = {"2-D": (32, 100), "3-D": (10, 16)}

_FIRST = """
import json, sys, time
sys.path.insert(0, {benchmarks!r})
from _common import pin_threads, poisson_3d
pin_threads(1)
import torch, tsgu_core
from tsgu_core.testing import poisson_2d
A = poisson_2d({m}, dtype=torch.float64).to_sparse_csr() if {kind!r} == "2-D" else poisson_3d({m})
b = torch.ones(A.shape[0], dtype=torch.float64)
start = time.perf_counter()
tsgu_core.solve(A, b, backend={backend!r})
print(json.dumps(time.perf_counter() - start))
"""


def matrix(kind: str, m: int) -> torch.Tensor:
    return poisson_2d(m, dtype=torch.float64).to_sparse_csr() if kind == "2-D" else poisson_3d(m)


def first_call(kind: str, m: int, backend: str) -> float:
    """Seconds of the first solve in a fresh interpreter."""
    code = _FIRST.format(benchmarks=str(Path(__file__).parent), m=m, kind=kind, backend=backend)
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def derive_rule(records: list[dict]) -> dict[str, object]:
    """Per class, the smallest ``n`` from which on PARDISO repays its extra first-call cost within PAYBACK_SOLVES.

    Extra first-call cost ``L``: the median over sizes of ``(first − warm)`` of PARDISO minus that of SuperLU.
    ``None`` where no measured size qualifies.
    """
    overheads = sorted(
        (r["first_s"]["pardiso"] - r["warm_s"]["pardiso"]) - (r["first_s"]["scipy"] - r["warm_s"]["scipy"])
        for r in records
    )
    load = overheads[len(overheads) // 2]
    rule: dict[str, object] = {"load_s": load, "payback_solves": PAYBACK_SOLVES}
    for kind in sorted({r["kind"] for r in records}):
        sizes = sorted((r for r in records if r["kind"] == kind), key=lambda r: r["n"])
        wins = [PAYBACK_SOLVES * (r["warm_s"]["scipy"] - r["warm_s"]["pardiso"]) >= load for r in sizes]
        start = next((i for i in range(len(sizes)) if all(wins[i:])), None)
        rule[kind + "-like"] = None if start is None else sizes[start]["n"]
    return rule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--first-repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--derive", action="store_true", help="only re-derive the rule from the saved results")
    args = parser.parse_args()
    if args.derive:  # re-derive the rule from saved rows; store it with them
        results = Path(__file__).parent / "results"
        saved = json.loads((results / "default_direct.json").read_text())
        saved["rule"] = rule = derive_rule(saved["rows"])
        (results / "default_direct.json").write_text(json.dumps(saved, indent=2) + "\n")
        lines = [
            line for line in (results / "default_direct.md").read_text().splitlines() if "derived rule" not in line
        ]
        (results / "default_direct.md").write_text("\n".join([*lines, f"- derived rule: {json.dumps(rule)}"]) + "\n")
        print(rule)
        return
    sizes = QUICK if args.quick else SIZES

    rows, payload = [], []
    for kind, ms in sizes.items():
        for m in ms:
            A = matrix(kind, m)
            n, nnz = A.shape[0], A.values().numel()
            b = torch.ones(n, dtype=torch.float64)
            variants = {
                backend: (lambda backend=backend, A=A, b=b: tsgu_core.solve(A, b, backend=backend))
                for backend in BACKENDS
            }
            for run in variants.values():
                run()  # warm: libraries loaded, first-touch costs paid
            warm = {name: median(times) for name, times in interleaved_medians(variants, args.repeats).items()}
            first = {
                backend: median([first_call(kind, m, backend) for _ in range(args.first_repeats)])
                for backend in BACKENDS
            }
            record = {"kind": kind, "m": m, "n": n, "nnz": nnz, "per_row": nnz / n, "first_s": first, "warm_s": warm}
            payload.append(record)
            rows.append(
                [
                    kind,
                    str(n),
                    f"{nnz / n:.1f}",
                    f"{first['scipy']:.3f}",
                    f"{first['pardiso']:.3f}",
                    f"{first['pardiso'] / first['scipy']:.2f}",
                    f"{warm['scipy']:.4f}",
                    f"{warm['pardiso']:.4f}",
                    f"{warm['pardiso'] / warm['scipy']:.2f}",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)
    header = [
        "pattern",
        "n",
        "nnz/n",
        "first scipy s",
        "first pardiso s",
        "first ÷",
        "warm scipy s",
        "warm pardiso s",
        "warm ÷",
    ]
    facts = environment()
    facts["repeats (warm, first)"] = f"{args.repeats}, {args.first_repeats}"
    rule = derive_rule(payload)
    facts["derived rule (PARDISO from n, per class)"] = json.dumps(rule)
    table = report("Default CPU direct solver: SuperLU vs PARDISO, first call and warm", header, rows, facts)
    print(table)
    write_results(
        "default_direct" + ("_quick" if args.quick else ""), table, {"rows": payload, "rule": rule, "facts": facts}
    )


if __name__ == "__main__":
    main()
