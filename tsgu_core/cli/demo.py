"""``tsgu demo``: recover a diffusion coefficient by gradient descent through ``solve``, on every backend.

The problem is :mod:`tsgu_core.examples.diffusion` (embedded, no download).
The operator is symmetric positive definite, so iterative backends use CG
with Jacobi preconditioning where they offer it; direct backends use their
default. Every backend starts from the same guess with the same optimiser
and should end at the same answer.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from tsgu_core.cli import CommandError
from tsgu_core.examples.diffusion import DiffusionProblem
from tsgu_core.registry import list_backends
from tsgu_core.solve import solve


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "demo", help="recover a 2-D diffusion coefficient from noisy data by gradient descent through solve()"
    )
    parser.add_argument("--size", type=int, default=32, help="grid nodes per side (default 32: n = 1024)")
    parser.add_argument("--iterations", type=int, default=200, help="optimiser steps (default 200)")
    parser.add_argument("--sources", type=int, default=4, help="right-hand sides, i.e. experiments (default 4)")
    parser.add_argument("--noise", type=float, default=0.01, help="relative observation noise (default 0.01)")
    parser.add_argument("--smoothing", type=float, default=1e-4, help="weight of the gradient penalty on log κ")
    parser.add_argument("--lr", type=float, default=0.05, help="Adam's learning rate")
    parser.add_argument("--backends", nargs="*", default=None, help="default: every available backend")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--plot", default=None, help="write true vs recovered κ and the loss curves to this PNG")
    parser.set_defaults(handler=run)


@dataclass
class Run:
    backend: str
    method: str
    seconds_per_step: float = 0.0
    error: float = 0.0
    losses: list[float] = field(default_factory=list)
    theta: torch.Tensor | None = None


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
    theta = torch.zeros(problem.n, dtype=problem.dtype, device=observed.device, requires_grad=True)
    optimiser = torch.optim.Adam([theta], lr=lr)
    run = Run(backend, method)
    B = problem.B.to(observed.device)
    start = time.perf_counter()
    for _ in range(iterations):
        optimiser.zero_grad()
        A = problem.matrix(theta)
        U = solve(A, B, backend=backend, method=method, **options)
        loss = problem.loss(theta, U, observed, smoothing)
        loss.backward()
        optimiser.step()
        run.losses.append(float(loss.detach()))
        if progress is not None:
            progress.update(1)
    run.seconds_per_step = (time.perf_counter() - start) / max(iterations, 1)
    run.theta = theta.detach().cpu()
    run.error = problem.relative_error(run.theta)
    return run


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.size < 3 or args.iterations < 1:
        raise CommandError("--size must be ≥ 3 and --iterations ≥ 1")
    device = torch.device(args.device)
    problem = DiffusionProblem(m=args.size, sources=args.sources, noise=args.noise)
    entries = [
        entry
        for entry in list_backends()
        if entry.availability(device.type) and (args.backends is None or entry.name in args.backends)
    ]
    if not entries:
        raise CommandError(f"no available backend on {device.type} matches {args.backends}; see `tsgu info`")
    reference = entries[0]
    method, options = _solver_for(reference)
    observed = problem.observations(
        lambda A, B: solve(A.to(device), B.to(device), backend=reference.name, method=method, **options)
    )
    print(
        f"tsgu demo: recover κ(x, y) on a {args.size}×{args.size} grid (n = {problem.n}) from {args.sources} noisy "
        f"experiments ({args.noise:.0%} noise) by {args.iterations} Adam steps on log κ through tsgu_core.solve"
    )
    runs = []
    with tqdm(total=args.iterations * len(entries), unit="step") as progress:
        for entry in entries:
            method, options = _solver_for(entry)
            progress.set_description(f"{entry.name}/{method}")
            runs.append(recover(problem, observed, entry.name, method, options, args.iterations, args.smoothing,
                                args.lr, progress))  # fmt: skip
    initial = problem.relative_error(torch.zeros(problem.n, dtype=problem.dtype))
    print(f"\nrelative error of κ at the start: {initial:.3f}")
    print(f"{'backend':10s} {'method':10s} {'ms/step':>9s} {'final loss':>11s} {'error of κ':>11s}")
    for record in runs:
        print(
            f"{record.backend:10s} {record.method:10s} {record.seconds_per_step * 1e3:9.1f} "
            f"{record.losses[-1]:11.3e} {record.error:11.3f}"
        )
    spread = max(r.error for r in runs) - min(r.error for r in runs)
    print(f"backends agree on the recovered field's error to {spread:.1e}")
    if args.plot:
        _plot(args.plot, problem, runs)
        print(f"figure written to {args.plot}")
    return 0


def _plot(path: str, problem: DiffusionProblem, runs: list[Run]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise CommandError("--plot needs matplotlib: pip install matplotlib") from error
    m = problem.m
    best = min(runs, key=lambda r: r.error)
    assert best.theta is not None
    truth = problem.kappa_true.reshape(m, m)
    recovered = torch.exp(best.theta).reshape(m, m)
    figure, axes = plt.subplots(1, 3, figsize=(13, 4))
    limits = {"vmin": float(truth.min()), "vmax": float(truth.max()), "origin": "lower", "extent": (0, 1, 0, 1)}
    image = axes[0].imshow(truth.numpy(), **limits)
    axes[0].set_title("true κ")
    axes[1].imshow(recovered.numpy(), **limits)
    axes[1].set_title(f"recovered κ ({best.backend}/{best.method}, error {best.error:.3f})")
    figure.colorbar(image, ax=axes[:2], shrink=0.8)
    for record in runs:
        axes[2].semilogy(record.losses, label=f"{record.backend}/{record.method}")
    axes[2].set_xlabel("Adam step")
    axes[2].set_ylabel("loss")
    axes[2].set_title("loss curves")
    axes[2].legend()
    figure.savefig(path, dpi=110)
    plt.close(figure)
