"""``tsgu bench``: every available backend × method on one problem, forward and backward."""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from tsgu_core.cli import CommandError
from tsgu_core.cli.problems import GALLERY, named_problem, read_matrix
from tsgu_core.errors import TsguError
from tsgu_core.registry import list_backends
from tsgu_core.solve import solve


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("bench", help="time every available backend × method on one problem")
    parser.add_argument("matrix", nargs="?", default=None, help="a Matrix Market file (default: --problem)")
    parser.add_argument(
        "--problem", default="poisson2d", help=f"poisson2d, convdiff or a pyamg gallery matrix ({', '.join(GALLERY)})"
    )
    parser.add_argument("--n", type=int, default=10_000, help="size of poisson2d / convdiff (rounded to a square)")
    parser.add_argument("--backends", nargs="*", default=None)
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--rhs", type=int, default=1, help="number of right-hand sides k")
    parser.add_argument("--rtol", type=float, default=1e-8, help="for iterative methods")
    parser.add_argument("--repeats", type=int, default=3, help="timings are medians over this many runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--plot", default=None, help="write a bar chart of the timings to this PNG")
    parser.set_defaults(handler=run)


@dataclass
class Row:
    backend: str
    method: str
    forward: float | None = None
    backward: float | None = None
    residual: float | None = None
    gradient_error: float | None = None
    note: str = ""


def _structure(A: torch.Tensor) -> set[str]:
    """What the methods may assume: always "general"; "symmetric", and "spd" for a positive diagonal."""
    import scipy.sparse as sp

    M = sp.csr_matrix((A.values().numpy(), A.col_indices().numpy(), A.crow_indices().numpy()), shape=tuple(A.shape))
    kinds = {"general"}
    if abs(M - M.T).max() <= 1e-12 * abs(M).max():
        kinds.add("symmetric")
        if (M.diagonal() > 0).all():
            kinds.add("spd")  # assumed: symmetric with a positive diagonal
    return kinds


def _run_case(A: torch.Tensor, B: torch.Tensor, G: torch.Tensor, backend: str, method: str, options: dict[str, Any],
              repeats: int) -> tuple[float, float, float, torch.Tensor, torch.Tensor]:  # fmt: skip
    forward, both = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        solve(A, B, backend=backend, method=method, **options)
        forward.append(time.perf_counter() - start)
        leaf, rhs = A.detach().requires_grad_(), B.detach().clone().requires_grad_()
        start = time.perf_counter()
        X, info = solve(leaf, rhs, backend=backend, method=method, return_info=True, **options)
        (X * G).sum().backward()
        both.append(time.perf_counter() - start)
    assert leaf.grad is not None and rhs.grad is not None
    return statistics.median(forward), statistics.median(both), info.max_residual, leaf.grad.values(), rhs.grad


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.matrix:
        A, label = read_matrix(args.matrix), args.matrix
    else:
        A, label = named_problem(args.problem, args.n)
    if A.shape[0] != A.shape[1]:
        raise CommandError(f"{label} is not square")
    device = torch.device(args.device)
    A = A.to(device)
    n = A.shape[0]
    generator = torch.Generator().manual_seed(0)
    B = torch.randn(n, args.rhs, generator=generator, dtype=A.dtype).to(device)
    G = torch.randn(n, args.rhs, generator=generator, dtype=A.dtype).to(device)
    kinds = _structure(A.cpu())

    cases, rows = [], []
    for entry in list_backends():
        if args.backends and entry.name not in args.backends:
            continue
        if not entry.availability(device.type):
            continue
        for name, spec in entry.backend.methods.items():
            if spec.operation != "solve" or (args.methods and name not in args.methods):
                continue
            if spec.assumes not in kinds:
                rows.append(Row(entry.name, name, note=f"skipped: assumes a {spec.assumes} A"))
                continue
            options = {"rtol": args.rtol} if spec.kind == "iterative" else {}
            cases.append((entry.name, name, options))
    if not cases:
        raise CommandError("no available backend/method matches; see `tsgu info`")

    # reference: dense autograd for small systems, else the first direct method
    if n <= 3000:
        D = A.to_dense().requires_grad_()
        R = B.clone().requires_grad_()
        (torch.linalg.solve(D, R) * G).sum().backward()
        assert D.grad is not None and R.grad is not None
        crow = A.crow_indices()
        row_index = torch.repeat_interleave(torch.arange(n, device=device), crow[1:] - crow[:-1])
        reference = (D.grad[row_index, A.col_indices()], R.grad)
    else:
        reference = None

    for backend, method, options in tqdm(cases, desc=f"tsgu bench ({label})", unit="case"):
        row = Row(backend, method)
        try:
            row.forward, row.backward, row.residual, gA, gB = _run_case(A, B, G, backend, method, options, args.repeats)
            if reference is None:
                reference = (gA, gB)
            row.gradient_error = max(
                float((gA - reference[0]).norm() / reference[0].norm()),
                float((gB - reference[1]).norm() / reference[1].norm()),
            )
        except TsguError as error:
            row.note = f"failed: {type(error).__name__}: {str(error).split(';')[0]}"
        rows.append(row)

    print(f"\n{label}: n = {n}, {A._nnz()} stored entries, k = {args.rhs}, rtol = {args.rtol:g} (iterative), "
          f"medians of {args.repeats} on {device}; assumed structure: {', '.join(sorted(kinds))}")  # fmt: skip
    header = f"{'backend':8s} {'method':12s} {'fwd ms':>9s} {'fwd+bwd ms':>11s} {'residual':>9s} {'grad err':>9s}"
    print(header)
    print("-" * len(header))
    for row in rows:
        if row.forward is None:
            print(f"{row.backend:8s} {row.method:12s} {row.note}")
            continue
        assert row.backward is not None and row.residual is not None and row.gradient_error is not None
        print(
            f"{row.backend:8s} {row.method:12s} {row.forward * 1e3:9.1f} {row.backward * 1e3:11.1f} "
            f"{row.residual:9.1e} {row.gradient_error:9.1e}"
        )
    if args.plot:
        _plot(args.plot, [row for row in rows if row.forward is not None], label)
        print(f"plot written to {args.plot}")
    return 0


def _plot(path: str, rows: list[Row], label: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise CommandError("--plot needs matplotlib: pip install matplotlib") from error
    names = [f"{row.backend}\n{row.method}" for row in rows]
    positions = range(len(rows))
    figure, axis = plt.subplots(figsize=(max(6, 0.9 * len(rows)), 4))
    axis.bar([p - 0.2 for p in positions], [row.forward * 1e3 for row in rows], 0.4, label="forward")  # type: ignore[operator]
    axis.bar([p + 0.2 for p in positions], [row.backward * 1e3 for row in rows], 0.4, label="forward + backward")  # type: ignore[operator]
    axis.set_xticks(list(positions), names, fontsize=8)
    axis.set_ylabel("milliseconds (median)")
    axis.set_yscale("log")
    axis.set_title(label)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
