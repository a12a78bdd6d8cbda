"""``tsgu demo --problem gmrf``: fit a Matérn GMRF by its exact marginal likelihood (:mod:`tsgu_core.examples.gmrf`).

Draws a field and noisy data at a random subset of the nodes, maximises
``log p(y | θ)`` over ``θ = (log κ, log τ, log σ)`` with L-BFGS (gradients
through :func:`tsgu_core.slogdet` and :func:`tsgu_core.solve`), and prints the
estimates with their standard errors next to the truth.
"""

from __future__ import annotations

import argparse
import math
import sys

from tsgu_core.cli.common import CommandError, check_device, check_memory, check_plot, progress, set_threads

__all__ = ["BYTES_PER_NODE", "GMRF_SIZE", "run_gmrf"]

GMRF_SIZE = 100
"""The default grid side (measured: about 10 s on one thread; 250 × 250 takes 2–4 minutes)."""

BYTES_PER_NODE = 40_000
"""Peak memory per grid node, measured with margin (2.1 GB at 250 × 250, one thread, SciPy's LU)."""

DEFAULTS = {"iterations": 50, "noise": 0.5, "practical_range": 20.0, "variance": 1.0, "observed": 0.5, "seed": 0}


def _check(args: argparse.Namespace) -> None:
    if args.size is None:
        args.size = GMRF_SIZE
    for name, default in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.size < 3 or args.iterations < 1:
        raise CommandError("--size must be ≥ 3 and --iterations ≥ 1")
    if not all(value > 0 for value in (args.noise, args.practical_range, args.variance)) or not 0 < args.observed <= 1:
        raise CommandError("--noise, --range and --variance must be > 0, and --observed in (0, 1]")
    if args.backends is not None and len(args.backends) != 1:
        raise CommandError("--problem gmrf runs on one backend: name one with --backends (e.g. scipy), or none")
    check_memory(args.size**2 * BYTES_PER_NODE, f"--size {args.size} (n = {args.size**2})")
    check_plot(args.plot)


def run_gmrf(args: argparse.Namespace) -> int:
    """The handler of ``tsgu demo --problem gmrf``; returns the exit code."""
    _check(args)
    threads = set_threads(args.threads)
    device = check_device(args.device)
    if device.type != "cpu":
        raise CommandError(f"--problem gmrf runs on the CPU (log-determinants come from SciPy's LU), not {device}")

    from tsgu_core.examples.gmrf import PARAMETERS, MaternGMRF, fit, summary

    backend = args.backends[0] if args.backends else None
    model = MaternGMRF(m=args.size, practical_range=args.practical_range, variance=args.variance, noise=args.noise,
                       observed=args.observed, seed=args.seed, backend=backend)  # fmt: skip
    data = model.simulate()
    if not args.quiet:
        print(
            f"tsgu demo: fit a Matérn GMRF on a {args.size}×{args.size} grid (n = {model.n}) to {model.n_obs} noisy "
            f"observations (σ = {args.noise:g}; true range {args.practical_range:g}, variance {args.variance:g}) by "
            f"L-BFGS on the exact log marginal likelihood through tsgu_core.slogdet and tsgu_core.solve "
            f"({threads} CPU thread{'s' if threads > 1 else ''})"
        )
    with progress(args.iterations * 5 // 4 + 10, unit="eval", quiet=args.quiet) as bar:

        def advance(value: float) -> None:
            bar.set_description(f"log p = {value:.2f}")
            bar.update(1)

        result = fit(model, data.y, iterations=args.iterations, callback=advance)
    print(f"{'parameter':28s} {'truth':>9s} {'estimate':>9s} {'SE':>8s} {'|error|/SE':>10s}")
    worst = 0.0
    for name, truth, estimate, error in summary(model, result):
        ratio = abs(estimate - truth) / error if error > 0 else math.inf
        if name in PARAMETERS:
            worst = max(worst, ratio)
        print(f"{name:28s} {truth:9.4f} {estimate:9.4f} {error:8.4f} {ratio:10.2f}")
    trace = result.trace
    evaluations = len(trace)
    print(
        f"log p(y | θ): {trace[0]:.2f} at the start, {result.log_likelihood:.2f} at the optimum after "
        f"{result.iterations} L-BFGS iterations ({evaluations} evaluations; the last changed it by "
        f"{abs(trace[-1] - trace[-2]) if evaluations > 1 else 0.0:.1e})"
    )
    print(
        f"time: fit {result.seconds:.1f} s ({result.seconds / max(evaluations, 1):.2f} s per likelihood + gradient), "
        f"standard errors {result.seconds_information:.1f} s (7 more gradients)"
    )
    if not result.converged:
        print(
            f"L-BFGS did not reach the maximum within {args.iterations} iterations (or the Hessian there is not "
            "negative definite): the estimates and standard errors are not final; try more --iterations",
            file=sys.stderr,
        )
        return 1
    verdict = "within" if worst <= 3 else "NOT within"
    print(f"the estimates of θ are {verdict} 3 standard errors of the truth (largest |error|/SE {worst:.2f})")
    if args.plot:
        from tsgu_core.examples.gmrf import plot_fit

        plot_fit(args.plot, model, data, result)
        if not args.quiet:
            print(f"figure written to {args.plot}")
    return 0
