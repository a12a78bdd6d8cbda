"""Are the GMRF example's standard errors right? Refit many seeded data sets and look at |error|/SE.

For each seed, :mod:`tsgu_core.examples.gmrf` draws a field and data, fits ``θ = (log κ, log τ, log σ)``
by maximum likelihood and takes standard errors from the observed information. If the standard
errors are right, ``z = (θ̂ − θ_true)/SE`` is close to ``N(0, 1)`` per parameter: mean ≈ 0, standard
deviation ≈ 1, and about 5% of the ``|z|`` above 1.96.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/gmrf_calibration.py [--size 30] [--range 6] [--seeds 20]
"""

from __future__ import annotations

import argparse
import time

import torch

from tsgu_core.examples.gmrf import PARAMETERS, MaternGMRF, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=30)
    parser.add_argument("--range", type=float, default=6.0)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    scores = []
    print(f"{args.size}×{args.size} grid, true range {args.range}, variance 1, σ = 0.5, half the nodes observed")
    print("| seed | " + " | ".join(f"z({name})" for name in PARAMETERS) + " |")
    print("|---|---|---|---|")
    for seed in range(args.seeds):
        model = MaternGMRF(m=args.size, practical_range=args.range, seed=seed)
        result = fit(model, model.simulate().y)
        z = (result.theta - model.theta_true) / result.standard_errors
        scores.append(z)
        print(f"| {seed} | " + " | ".join(f"{float(v):+.2f}" for v in z) + " |")
    Z = torch.stack(scores)
    means, spreads = ([round(float(v), 2) for v in row] for row in (Z.mean(0), Z.std(0)))
    outside = int((Z.abs() > 1.96).sum())
    print(f"mean z: {means}; sd of z: {spreads}; |z| > 1.96: {outside} of {Z.numel()}")
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
