"""``tsgu demo``: recover a diffusion coefficient by gradient descent through ``solve_values``, on every backend.

The problem is :mod:`tsgu_core.examples.diffusion` (embedded, no download).
The operator is symmetric positive definite, so iterative backends use CG
with Jacobi preconditioning where they offer it; direct backends use their
default. Every backend starts from the same guess with the same optimiser
and should end at the same answer.

``tsgu demo --problem gmrf`` fits a Matérn GMRF by its exact marginal likelihood instead
(:mod:`tsgu_core.cli.demo_gmrf`).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tsgu_core.cli.common import (
    CommandError,
    add_threads_option,
    check_device,
    check_memory,
    check_plot,
    progress,
    set_threads,
)
from tsgu_core.cli.demo_gmrf import GMRF_SIZE, run_gmrf

if TYPE_CHECKING:
    import torch

    from tsgu_core.examples.diffusion import DiffusionProblem


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "demo",
        help="recover a 2-D diffusion coefficient from noisy data by gradient descent through solve_values() "
        "(or, with --problem gmrf, fit a Gaussian Markov random field by exact marginal likelihood)",
        description="Recover a spatially varying diffusion coefficient κ(x, y) of a 2-D PDE from noisy "
        "observations by Adam steps on log κ through tsgu_core.solve_values, on every available backend. "
        "With --problem gmrf: fit (log κ, log τ, log σ) of a Matérn GMRF to noisy data on a grid by L-BFGS on the "
        "exact log marginal likelihood (tsgu_core.slogdet and tsgu_core.solve), with standard errors.",
    )
    parser.add_argument(
        "--problem",
        choices=("diffusion", "gmrf"),
        default="diffusion",
        help="diffusion (default): the inverse problem above, on every backend; gmrf: fit the range, variance and "
        "noise of a Matérn Gaussian Markov random field by its exact marginal likelihood through slogdet() and "
        f"solve() (default --size {GMRF_SIZE}: about 10 s on one thread; 250 takes 2–4 minutes)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help=f"grid nodes per side (default 32: n = 1024; with --problem gmrf {GMRF_SIZE})",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="optimiser steps (default 200; with --problem gmrf at most 50 L-BFGS iterations)",
    )
    parser.add_argument("--sources", type=int, default=None, help="right-hand sides, i.e. experiments (default 4)")
    parser.add_argument(
        "--noise",
        type=float,
        default=None,
        help="relative observation noise (default 0.01; with --problem gmrf the noise's standard "
        "deviation σ, default 0.5)",
    )
    parser.add_argument("--smoothing", type=float, default=None, help="weight of the gradient penalty on log κ (1e-4)")
    parser.add_argument("--lr", type=float, default=None, help="Adam's learning rate (default 0.05)")
    parser.add_argument(
        "--range",
        type=float,
        default=None,
        dest="practical_range",
        metavar="RHO",
        help="gmrf: the true practical range √8/κ in grid units (default 20)",
    )
    parser.add_argument(
        "--variance", type=float, default=None, help="gmrf: the true marginal variance 1/(4πκ²τ²) (default 1)"
    )
    parser.add_argument(
        "--observed", type=float, default=None, help="gmrf: the fraction of nodes observed, at random (default 0.5)"
    )
    parser.add_argument("--seed", type=int, default=None, help="gmrf: the seed of the data (default 0)")
    parser.add_argument(
        "--backends",
        nargs="*",
        default=None,
        help="default: every available backend (gmrf: one, with log-determinants; default scipy's splu)",
    )
    parser.add_argument("--device", default="cpu", help="where A and B live: cpu (default), cuda, cuda:1, …")
    parser.add_argument(
        "--plot",
        default=None,
        help="write the figure (true and recovered κ, loss and error curves; gmrf: true field, data, posterior "
        "mean, likelihood trace)",
    )
    # one thread: the problem is small, and on a loaded 2-core machine torch's default 2 threads took 1 119 ms per
    # CG step against 23 ms with one (measured)
    add_threads_option(parser, default=1)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no introduction")
    parser.set_defaults(handler=run)


DIFFUSION_ONLY = ("sources", "smoothing", "lr")
GMRF_ONLY = ("practical_range", "variance", "observed", "seed")
DIFFUSION_DEFAULTS = {"size": 32, "iterations": 200, "sources": 4, "noise": 0.01, "smoothing": 1e-4, "lr": 0.05}


def _option(name: str) -> str:
    return "--range" if name == "practical_range" else f"--{name}"


BYTES_PER_UNKNOWN = 2000
"""Peak memory of the demo per grid node, measured (1.9 kB at n = 160 000 with 4 sources and SciPy's LU)."""


@dataclass
class Run:
    backend: str
    method: str
    seconds_per_step: float = 0.0
    error: float = 0.0
    losses: list[float] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)
    theta: torch.Tensor | None = None
    failure: str = ""


def _solver_for(entry: Any) -> tuple[str, dict[str, Any]]:
    """The backend's default if it is direct; else CG with Jacobi where offered (A is SPD)."""
    backend = entry.backend
    default = backend.methods[backend.default_method]
    if default.kind == "direct":
        return default.name, {}
    if "cg" in backend.methods:
        options: dict[str, Any] = {"rtol": 1e-10}
        if "preconditioner" in backend.methods["cg"].options:
            options["preconditioner"] = "jacobi"
        return "cg", options
    return default.name, {"rtol": 1e-10}


def recover(problem: DiffusionProblem, observed: torch.Tensor, backend: str, method: str, options: dict[str, Any],
            iterations: int, smoothing: float, lr: float, progress: Any = None) -> Run:  # fmt: skip
    """Adam on ``θ = log κ`` from ``θ = 0``; returns the run's record."""
    import torch

    theta = torch.zeros(problem.n, dtype=problem.dtype, device=observed.device, requires_grad=True)
    optimiser = torch.optim.Adam([theta], lr=lr)
    run = Run(backend, method)
    start = time.perf_counter()
    for _ in range(iterations):
        optimiser.zero_grad()
        # A(θ)'s values go to solve_values with the fixed pattern: torch's sparse constructors would cost
        # O(n²) in the backward (measured 2.5 s at n = 22 500) where this is O(nnz)
        loss = problem.objective(theta, observed, smoothing, backend=backend, method=method, **options)
        loss.backward()
        optimiser.step()
        run.losses.append(float(loss.detach()))
        run.errors.append(problem.relative_error(theta.detach()))
        if progress is not None:
            progress.update(1)
    run.seconds_per_step = (time.perf_counter() - start) / max(iterations, 1)
    run.theta = theta.detach().cpu()
    run.error = problem.relative_error(run.theta)
    return run


def run(args: argparse.Namespace) -> int:
    given = DIFFUSION_ONLY if args.problem == "gmrf" else GMRF_ONLY
    wrong = [_option(name) for name in given if getattr(args, name) is not None]
    if wrong:
        other = "diffusion" if args.problem == "gmrf" else "gmrf"
        raise CommandError(f"{', '.join(wrong)} applies to --problem {other} only (this is --problem {args.problem})")
    if args.problem == "gmrf":
        return run_gmrf(args)
    for name, default in DIFFUSION_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.size < 3 or args.iterations < 1 or args.sources < 1:
        raise CommandError("--size must be ≥ 3, --iterations and --sources ≥ 1")
    if args.noise < 0 or args.smoothing < 0 or args.lr <= 0:
        raise CommandError("--noise and --smoothing must be ≥ 0, --lr > 0")
    # measured: 1.9 kB per unknown at peak (n = 160 000, 4 sources, scipy's LU, one step); refuse before allocating
    check_memory(args.size**2 * (BYTES_PER_UNKNOWN + 64 * args.sources), f"--size {args.size} (n = {args.size**2})")
    check_plot(args.plot)
    threads = set_threads(args.threads)
    device = check_device(args.device)

    import torch

    from tsgu_core.api.solve import solve
    from tsgu_core.errors import did_you_mean
    from tsgu_core.examples.diffusion import DiffusionProblem
    from tsgu_core.plugins.registry import list_backends

    registered = list(list_backends())
    unknown = sorted(set(args.backends or ()) - {entry.name for entry in registered})
    if unknown:
        names = ", ".join(entry.name for entry in registered)
        close = did_you_mean(unknown[0], [entry.name for entry in registered])
        raise CommandError(f"--backends: unknown {', '.join(unknown)}{close}; registered: {names}")
    entries = [
        entry
        for entry in registered
        if entry.availability(device.type)
        and (args.backends is None or entry.name in args.backends)
        and any(spec.operation == "solve" for spec in entry.backend.methods.values())
    ]
    if not entries:
        wanted = f" among {', '.join(args.backends)}" if args.backends else ""
        raise CommandError(f"no backend{wanted} is available on {device.type}; see `tsgu info`")
    problem = DiffusionProblem(m=args.size, sources=args.sources, noise=args.noise)
    reference = entries[0]
    method, options = _solver_for(reference)
    observed = problem.observations(
        lambda A, B: solve(A.to(device), B.to(device), backend=reference.name, method=method, **options)
    )
    if not args.quiet:
        print(
            f"tsgu demo: recover κ(x, y) on a {args.size}×{args.size} grid (n = {problem.n}) from {args.sources} "
            f"noisy experiments ({args.noise:.0%} noise) by {args.iterations} Adam steps on log κ through "
            f"tsgu_core.solve_values, on {device} ({threads} CPU thread{'s' if threads > 1 else ''})"
        )
    runs = []
    with progress(args.iterations * len(entries), unit="step", quiet=args.quiet) as bar:
        for entry in entries:
            method, options = _solver_for(entry)
            bar.set_description(f"{entry.name}/{method}")
            try:
                runs.append(recover(problem, observed, entry.name, method, options, args.iterations,
                                    args.smoothing, args.lr, bar))  # fmt: skip
            except Exception as error:  # one backend failing is a result to show, not a reason to stop
                text = " ".join(str(error).split())
                runs.append(Run(entry.name, method, failure=f"{type(error).__name__}: {text.split(';')[0][:100]}"))
    initial = problem.relative_error(torch.zeros(problem.n, dtype=problem.dtype))
    print(f"relative error of κ at the start: {initial:.3f}")
    print(f"{'backend':10s} {'method':10s} {'ms/step':>9s} {'final loss':>11s} {'error of κ':>11s}")
    for record in runs:
        if record.failure:
            print(f"{record.backend:10s} {record.method:10s} failed: {record.failure}")
            continue
        print(
            f"{record.backend:10s} {record.method:10s} {record.seconds_per_step * 1e3:9.1f} "
            f"{record.losses[-1]:11.3e} {record.error:11.3f}"
        )
    finished = [r for r in runs if not r.failure]
    if not finished:
        print("tsgu demo: every backend failed", file=sys.stderr)
        return 1
    spread = max(r.error for r in finished) - min(r.error for r in finished)
    print(f"backends agree on the recovered field's error to {spread:.1e}")
    runs = finished
    if args.plot:
        _plot(args.plot, problem, runs, args)
        if not args.quiet:
            print(f"figure written to {args.plot}")
    return 0


def _largest_gap(curves: list[list[float]]) -> float:
    """The largest relative difference between any curve and the first, over all steps."""
    first = curves[0]
    return max(
        (abs(a - b) / max(abs(b), 1e-300) for curve in curves[1:] for a, b in zip(curve, first, strict=True)),
        default=0.0,
    )


def _plot(path: str, problem: DiffusionProblem, runs: list[Run], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    m = problem.m
    best = min(runs, key=lambda r: r.error)
    assert best.theta is not None
    truth = problem.kappa_true.reshape(m, m).numpy()
    recovered = torch.exp(best.theta).reshape(m, m).numpy()
    figure, axes = plt.subplots(2, 2, figsize=(9.5, 8), layout="constrained")
    figure.suptitle(
        f"Recovering κ(x, y) from {problem.sources} noisy experiments ({args.noise:.0%} noise), "
        f"{m}×{m} grid, {args.iterations} Adam steps through tsgu_core.solve_values",
        fontsize=11,
    )
    shared = {"vmin": float(truth.min()), "vmax": float(truth.max()), "origin": "lower", "extent": (0, 1, 0, 1),
              "cmap": "viridis"}  # fmt: skip
    image = axes[0, 0].imshow(truth, **shared)
    axes[0, 0].set_title("(a) true κ", loc="left", fontsize=10)
    axes[0, 1].imshow(recovered, **shared)
    axes[0, 1].set_title(
        f"(b) recovered κ ({best.backend}/{best.method})\nrelative error ‖κ − κ_true‖/‖κ_true‖ = {best.error:.3f}",
        loc="left",
        fontsize=10,
    )
    for axis in axes[0]:
        axis.set_xlabel("x")
        axis.set_ylabel("y")
    figure.colorbar(image, ax=axes[0, :], shrink=0.9, label="κ(x, y)")

    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D", "v", "P"]
    every = max(1, args.iterations // 8)
    panels = [
        (axes[1, 0], [r.losses for r in runs], "(c) loss", "loss (misfit + smoothing), log scale", "log"),
        (axes[1, 1], [r.errors for r in runs], "(d) error of κ", "relative error ‖κ − κ_true‖/‖κ_true‖", "linear"),
    ]
    for axis, curves, title, ylabel, scale in panels:
        axis.set_yscale(scale)
        for i, (record, curve) in enumerate(zip(runs, curves, strict=True)):
            axis.plot(
                range(1, len(curve) + 1),
                curve,
                linestyle=styles[i % len(styles)],
                marker=markers[i % len(markers)],
                markevery=(i * every // max(len(runs), 1), every),
                markersize=5,
                markerfacecolor="none",
                linewidth=1.4,
                label=f"{record.backend}/{record.method}",
            )
        gap = _largest_gap(curves)
        if len(runs) > 1 and gap < 1e-3:
            axis.text(0.98, 0.97, f"the {len(runs)} curves coincide\n(largest relative gap {gap:.1e})",
                      transform=axis.transAxes, ha="right", va="top", fontsize=8, color="0.3")  # fmt: skip
        axis.set_title(title, loc="left", fontsize=10)
        axis.set_xlabel("Adam step")
        axis.set_ylabel(ylabel)
        axis.grid(True, which="major", color="0.9", linewidth=0.8)
        for side in ("top", "right"):
            axis.spines[side].set_visible(False)
    axes[1, 0].legend(fontsize=8, frameon=False, loc="center right")
    figure.savefig(path, dpi=150)
    plt.close(figure)
