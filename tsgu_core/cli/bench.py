"""``tsgu bench``: every available backend × method on one problem, forward and backward.

Each case runs ``--warmup`` untimed forward + backward passes first (JIT
compilation, caches, lazy imports), then ``--repeats`` timed ones; the table
shows medians. A case that raises is a row marked ``failed`` with the error,
in the table and in the plot, never dropped.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import textwrap
import time
from dataclasses import asdict, dataclass
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
from tsgu_core.cli.problems import BYTES_PER_ENTRY, GALLERY, named_problem, read_matrix

if TYPE_CHECKING:
    import torch


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "bench",
        help="time every available backend × method on one problem (forward, forward + backward)",
        description="Time every available backend × method on one problem: forward and forward + backward, "
        "medians of --repeats runs after --warmup untimed runs; residuals, iterations and the gradient's error "
        "against a reference. Failed cases are shown as failures.",
    )
    parser.add_argument("matrix", nargs="?", default=None, help="a Matrix Market file (default: --problem)")
    parser.add_argument(
        "--problem", default="poisson2d", help=f"poisson2d, convdiff or a pyamg gallery matrix ({', '.join(GALLERY)})"
    )
    parser.add_argument("--n", type=int, default=10_000, help="size of poisson2d / convdiff (rounded to a square)")
    parser.add_argument("--backends", nargs="*", default=None, help="default: every available backend")
    parser.add_argument("--methods", nargs="*", default=None, help="default: every solve method")
    parser.add_argument("--rhs", type=int, default=1, help="number of right-hand sides k (default 1)")
    parser.add_argument("--rtol", type=float, default=1e-8, help="for iterative methods (default 1e-8)")
    parser.add_argument("--repeats", type=int, default=3, help="timings are medians over this many runs (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per case before timing (default 1)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="default float64")
    parser.add_argument("--device", default="cpu", help="where A and B live: cpu (default), cuda, cuda:1, …")
    parser.add_argument("--plot", default=None, help="write a dot plot of the timings to this .png, .pdf or .svg")
    add_threads_option(parser, default=None)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object (no table)")
    parser.set_defaults(handler=run)


@dataclass
class Row:
    """One backend × method case."""

    backend: str
    method: str
    kind: str = ""
    status: str = "ok"  # "ok", "failed" or "skipped"
    forward_ms: float | None = None
    forward_backward_ms: float | None = None
    iterations: int | None = None
    backward_iterations: int | None = None
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


def _short(error: BaseException) -> str:
    """``ConvergenceError: the solve did not converge after 2260 iteration(s)``: the error's first clause."""
    text = re.sub(r"^backend '[^']*', method '[^']*': ", "", " ".join(str(error).split()))
    return f"{type(error).__name__}: {text.split(';')[0][:90]}"


def _run_case(A: torch.Tensor, B: torch.Tensor, G: torch.Tensor, row: Row, options: dict[str, Any], warmup: int,
              repeats: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Time one case into ``row``; returns the gradients of ``(A's values, B)``."""
    import torch

    from tsgu_core.api.solve import solve

    def synchronize() -> None:
        if A.device.type == "cuda":
            torch.cuda.synchronize(A.device)

    def forward() -> Any:
        return solve(A, B, backend=row.backend, method=row.method, return_info=True, **options)[1]

    def forward_backward() -> tuple[Any, torch.Tensor, torch.Tensor]:
        leaf, rhs = A.detach().requires_grad_(), B.detach().clone().requires_grad_()
        X, info = solve(leaf, rhs, backend=row.backend, method=row.method, return_info=True, **options)
        (X * G).sum().backward()
        assert leaf.grad is not None and rhs.grad is not None
        return info, leaf.grad.values(), rhs.grad

    for _ in range(warmup):
        forward_backward()
    synchronize()
    times_forward, times_both = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        info = forward()
        synchronize()
        times_forward.append(time.perf_counter() - start)
        start = time.perf_counter()
        both, grad_A, grad_B = forward_backward()
        synchronize()
        times_both.append(time.perf_counter() - start)
    row.forward_ms = statistics.median(times_forward) * 1e3
    row.forward_backward_ms = statistics.median(times_both) * 1e3
    row.iterations = info.iterations
    row.backward_iterations = both.backward.iterations if both.backward is not None else None
    row.residual = info.max_residual
    return grad_A, grad_B


def _cases(args: argparse.Namespace, device_type: str, kinds: set[str]) -> tuple[list[tuple[Row, dict]], list[Row]]:
    from tsgu_core.errors import did_you_mean
    from tsgu_core.plugins.registry import list_backends

    entries = list(list_backends())
    names = {entry.name for entry in entries}
    unknown = sorted(set(args.backends or ()) - names)
    if unknown:
        close = did_you_mean(unknown[0], names)
        raise CommandError(f"--backends: unknown {', '.join(unknown)}{close}; registered: {', '.join(sorted(names))}")
    methods = {n for e in entries for n, s in e.backend.methods.items() if s.operation == "solve"}
    unknown = sorted(set(args.methods or ()) - methods)
    if unknown:
        raise CommandError(f"--methods: no backend offers {', '.join(unknown)}; methods: {', '.join(sorted(methods))}")
    cases, skipped = [], []
    for entry in entries:
        if args.backends and entry.name not in args.backends:
            continue
        if device_type not in entry.backend.device_types:
            continue
        availability = entry.availability(device_type)
        wanted = [
            (name, spec)
            for name, spec in entry.backend.methods.items()
            if spec.operation == "solve" and (not args.methods or name in args.methods)
        ]
        if wanted and not availability:  # one row for the whole backend
            skipped.append(Row(entry.name, "-", status="skipped", note=f"unavailable: {availability.reason}"))
            continue
        for name, spec in wanted:
            row = Row(entry.name, name, spec.kind)
            if spec.assumes not in kinds:
                row.status, row.note = "skipped", f"assumes a {spec.assumes} A"
                skipped.append(row)
            else:
                cases.append((row, {"rtol": args.rtol} if spec.kind == "iterative" else {}))
    if not cases:
        raise CommandError(f"no available backend/method on {device_type} matches; see `tsgu info`")
    return cases, skipped


def run(args: argparse.Namespace) -> int:
    if args.repeats < 1 or args.warmup < 0 or args.rhs < 1 or args.n < 4:
        raise CommandError("--repeats and --rhs must be ≥ 1, --warmup ≥ 0, --n ≥ 4")
    if not (math.isfinite(args.rtol) and args.rtol > 0):  # before any work: a bad tolerance would fail every case
        raise CommandError(f"--rtol must be a finite number > 0, got {args.rtol}")
    if args.matrix is None:  # a 5-point stencil: five entries a row, plus B, G, X and gradients (k columns each)
        check_memory(args.n * (5 * BYTES_PER_ENTRY + 64 * args.rhs), f"--problem {args.problem} with --n {args.n}")
    check_plot(args.plot)
    threads = set_threads(args.threads)
    device = check_device(args.device)

    import torch

    dtype = getattr(torch, args.dtype)
    if args.matrix:
        A, label = read_matrix(args.matrix, dtype), args.matrix
    else:
        A, label = named_problem(args.problem, args.n, dtype)
    if A.shape[0] != A.shape[1]:
        raise CommandError(f"{label} is {A.shape[0]}×{A.shape[1]}; bench needs a square matrix")
    kinds = _structure(A)
    cases, skipped = _cases(args, device.type, kinds)
    A = A.to(device)
    n, nnz = A.shape[0], int(A._nnz())
    generator = torch.Generator().manual_seed(0)
    B = torch.randn(n, args.rhs, generator=generator, dtype=dtype).to(device)
    G = torch.randn(n, args.rhs, generator=generator, dtype=dtype).to(device)

    reference, reference_name = None, None
    if n <= 3000:  # dense autograd in float64 is the independent reference
        D = A.to(torch.float64).to_dense().requires_grad_()
        R = B.to(torch.float64).clone().requires_grad_()
        (torch.linalg.solve(D, R) * G.to(torch.float64)).sum().backward()
        assert D.grad is not None and R.grad is not None
        from tsgu_core.plugins.kit.csr import row_indices

        row_index = row_indices(A.crow_indices())
        reference = (D.grad[row_index, A.col_indices()], R.grad)
        reference_name = "dense torch.linalg.solve (float64)"

    gradients: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with progress(len(cases), description=f"tsgu bench ({label})", unit="case", quiet=args.quiet or args.json) as bar:
        for index, (row, options) in enumerate(cases):
            bar.set_description(f"{row.backend}/{row.method}")
            try:
                gradients[index] = _run_case(A, B, G, row, options, args.warmup, args.repeats)
            except Exception as error:  # a failing case is a result to show, not a reason to stop
                row.status, row.note = "failed", _short(error)
                row.forward_ms = row.forward_backward_ms = None
            bar.update(1)
    if reference is None:  # large n: the first direct method that worked, else the first case that worked
        ordered = sorted(gradients, key=lambda i: cases[i][0].kind != "direct")
        if ordered:
            reference = gradients[ordered[0]]
            reference_name = f"{cases[ordered[0]][0].backend}/{cases[ordered[0]][0].method}"
    if reference is not None:
        for index, (gA, gB) in gradients.items():
            ref_A, ref_B = reference[0].to(gA.dtype), reference[1].to(gB.dtype)
            cases[index][0].gradient_error = max(
                float((gA - ref_A).norm() / ref_A.norm()), float((gB - ref_B).norm() / ref_B.norm())
            )
    rows = [row for row, _ in cases] + skipped
    title = (f"{label}: n = {n}, nnz = {nnz}, k = {args.rhs}, rtol = {args.rtol:g} (iterative), {args.dtype}, "
             f"{device}, {threads} CPU thread{'s' if threads > 1 else ''}")  # fmt: skip
    structure = ", ".join(sorted(kinds))
    setting = (f"medians of {args.repeats} run(s) after {args.warmup} warm-up; "
               f"A's structure: {structure}; gradient reference: {reference_name or 'none'}")  # fmt: skip

    if args.json:
        problem = {
            "label": label,
            "n": n,
            "nnz": nnz,
            "k": args.rhs,
            "rtol": args.rtol,
            "dtype": args.dtype,
            "device": str(device),
            "threads": threads,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "structure": sorted(kinds),
            "gradient_reference": reference_name,
        }
        print(json.dumps({"problem": problem, "rows": [asdict(row) for row in rows]}, indent=2))
    else:
        _print_table(rows, title, setting)
    if args.plot:
        _plot(args.plot, rows, title, setting)
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0


def _print_table(rows: list[Row], title: str, setting: str) -> None:
    print(title)
    print(setting)
    header = (f"{'backend':8s} {'method':10s} {'fwd ms':>9s} {'fwd+bwd ms':>11s} {'iters':>11s} {'residual':>9s} "
              f"{'grad err':>9s}  status")  # fmt: skip
    print(header)
    print("-" * len(header))
    for row in rows:
        if row.status != "ok":
            print(f"{row.backend:8s} {row.method:10s} {'':>9s} {'':>11s} {'':>11s} {'':>9s} {'':>9s}  "
                  f"{row.status}: {row.note}")  # fmt: skip
            continue
        iterations = "-" if row.iterations is None else f"{row.iterations}/{row.backward_iterations or '-'}"
        error = "-" if row.gradient_error is None else f"{row.gradient_error:.1e}"
        print(f"{row.backend:8s} {row.method:10s} {row.forward_ms:9.2f} {row.forward_backward_ms:11.2f} "
              f"{iterations:>11s} {row.residual:9.1e} {error:>9s}  ok")  # fmt: skip
    print("iters: forward/backward iterations (iterative methods); grad err: relative error of (∂L/∂A, ∂L/∂B)")


def _plot(path: str, rows: list[Row], title: str, setting: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    backends = sorted({row.backend for row in rows})
    palette = [plt.get_cmap("tab10")(i) for i in (0, 1, 2, 4, 5, 6, 8, 9)]  # no red: red marks failures
    colour = {name: palette[i % len(palette)] for i, name in enumerate(backends)}
    order = {"ok": 0, "failed": 1, "skipped": 2}
    not_run = [r for r in rows if r.status == "skipped"]
    rows = sorted((r for r in rows if r.status != "skipped"), key=lambda r: (r.backend, order[r.status], r.method))
    height = 2.2 + 0.32 * len(rows)
    figure, axis = plt.subplots(figsize=(8.5, height), layout="constrained")
    finished = [r.forward_backward_ms for r in rows if r.forward_backward_ms is not None]
    right = max(finished, default=1.0) * 1.22
    for y, row in enumerate(rows):
        tint = colour[row.backend]
        if row.status == "ok":
            assert row.forward_ms is not None and row.forward_backward_ms is not None
            axis.plot([row.forward_ms, row.forward_backward_ms], [y, y], color=tint, linewidth=1.2, zorder=1)
            axis.plot(row.forward_ms, y, "o", markerfacecolor="white", markeredgecolor=tint, markersize=7, zorder=2)
            axis.plot(row.forward_backward_ms, y, "o", color=tint, markersize=7, zorder=2)
            axis.annotate(f"{row.forward_backward_ms:.3g}", (row.forward_backward_ms, y), xytext=(6, 0),
                          textcoords="offset points", va="center", fontsize=7.5, color="0.25")  # fmt: skip
        else:
            axis.annotate("✕ failed — " + row.note[:80], (0, y), xytext=(4, 0), textcoords="offset points",
                          va="center", fontsize=7.5, color="#b2182b")  # fmt: skip
        if y and row.backend != rows[y - 1].backend:
            axis.axhline(y - 0.5, color="0.85", linewidth=0.8)
    axis.set_yticks(range(len(rows)), [f"{r.backend} / {r.method}" for r in rows], fontsize=8.5)
    for tick, row in zip(axis.get_yticklabels(), rows, strict=True):
        tick.set_color(colour[row.backend])
    axis.invert_yaxis()
    axis.set_xlim(0, right)
    axis.set_ylim(len(rows) - 0.5, -0.5)
    axis.set_xlabel("wall time per call, ms (median; linear scale)")
    axis.grid(axis="x", color="0.9", linewidth=0.8)
    axis.set_axisbelow(True)
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)
    label, numbers = title.split(": ", 1)
    axis.set_title(f"{label}\n{numbers}\n{setting.split('; gradient')[0]}", fontsize=9, loc="left")
    if not_run:
        reasons: dict[str, list[str]] = {}
        for row in not_run:
            name = row.backend if row.method == "-" else f"{row.backend}/{row.method}"
            reasons.setdefault(row.note, []).append(name)
        text = "not run: " + "; ".join(f"{', '.join(names)} ({why})" for why, names in reasons.items())
        figure.supxlabel(textwrap.fill(text, 130), x=0.01, ha="left", fontsize=7.5, color="0.4")
    handles = [
        Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markeredgecolor="0.2", label="forward"),
        Line2D([], [], marker="o", linestyle="", color="0.2", label="forward + backward"),
    ]
    axis.legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    figure.savefig(path, dpi=150)
    plt.close(figure)
