"""Draw docs/_static/gmrf.png: the 250 × 250 worked example of docs/gmrf.md, and print its table.

Usage (about 2 minutes on one thread)::

    OMP_NUM_THREADS=1 python docs/figures/gmrf_figure.py [--size 250] [--out docs/_static/gmrf.png]

The table printed is the one docs/gmrf.md shows (Markdown); the figure is the true field, the
data, the posterior mean at the fitted parameters and the likelihood trace of L-BFGS.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from tsgu_core.examples.gmrf import MaternGMRF, fit, plot_fit, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=250)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "_static" / "gmrf.png"))
    parser.add_argument("--dpi", type=int, default=90)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = MaternGMRF(m=args.size)  # the defaults: range 20, variance 1, σ = 0.5, half the nodes observed, seed 0
    data = model.simulate()
    result = fit(model, data.y)
    print(f"{args.size}×{args.size} grid, n = {model.n}, {model.n_obs} observations")
    print("| parameter | truth | estimate | SE | \\|error\\|/SE |")
    print("|---|---|---|---|---|")
    for name, truth, estimate, error in summary(model, result):
        print(f"| {name} | {truth:.4f} | {estimate:.4f} | {error:.4f} | {abs(estimate - truth) / error:.2f} |")
    print(
        f"log p: {result.trace[0]:.2f} → {result.log_likelihood:.2f}, {result.iterations} L-BFGS iterations, "
        f"{len(result.trace)} evaluations; fit {result.seconds:.1f} s, "
        f"standard errors {result.seconds_information:.1f} s"
    )
    start_range = math.sqrt(8) / math.exp(float(result.start[0]))
    print(f"start: range {start_range:.1f}, θ0 = {[round(float(t), 4) for t in result.start]}")
    plot_fit(args.out, model, data, result, dpi=args.dpi)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
