"""``tsgu solve A.mtx [B] [-o X]``: solve a system from files and report how it went.

Exit code 0 when every column converged, 1 when the solve failed or did not
converge (also under ``--option on_failure='warn'``, which still writes X), 2
for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from typing import Any

from tsgu_core.cli.common import check_device, check_output, valid_methods
from tsgu_core.cli.problems import SOLUTION_SUFFIXES, parse_options, read_matrix, read_rhs, write_solution


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "solve",
        help="solve A X = B for a Matrix Market A; print convergence, residual, iterations, time",
        description="Solve A X = B for a Matrix Market A. Exit code 0: converged; 1: the solve failed or did not "
        "converge (X is still written under --option on_failure='warn'); 2: bad input.",
    )
    parser.add_argument("matrix", help="A, a Matrix Market (.mtx) file")
    parser.add_argument("rhs", nargs="?", default=None, help="B, a .mtx or .npy file (default: ones)")
    parser.add_argument("--backend", default=None, help="a backend name (default: chosen by device; see tsgu explain)")
    parser.add_argument("--method", default=None, help="a method of the backend (see tsgu info)")
    parser.add_argument("--rtol", type=float, default=None, help="relative tolerance of iterative methods")
    parser.add_argument("--atol", type=float, default=None, help="absolute tolerance of iterative methods")
    parser.add_argument("--maxiter", type=int, default=None, help="iteration limit of iterative methods")
    parser.add_argument(
        "--option", action="append", metavar="NAME=VALUE", help="a method option, VALUE a Python literal (repeatable)"
    )
    parser.add_argument(
        "--dtype",
        choices=("float64", "float32", "complex128", "complex64"),
        default="float64",
        help="default float64; a complex Matrix Market file needs complex128 or complex64",
    )
    parser.add_argument("--device", default="cpu", help="where A and B live: cpu (default), cuda, cuda:1, …")
    parser.add_argument("-o", "--output", default=None, help="write X to this .npy or .mtx file")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing unless the solve fails")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.output is not None:  # "" too: it names no file
        check_output(args.output, SOLUTION_SUFFIXES, "-o")
    options = parse_options(args.option)
    for name in ("rtol", "atol", "maxiter"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    device = check_device(args.device)
    if args.method is not None and args.backend is None:
        valid_methods(device.type, args.method)

    import torch

    from tsgu_core.api.solve import solve
    from tsgu_core.cli.common import CommandError
    from tsgu_core.errors import ConvergenceWarning

    dtype = getattr(torch, args.dtype)
    A = read_matrix(args.matrix, dtype)
    if A.shape[0] != A.shape[1]:
        raise CommandError(f"{args.matrix} is {A.shape[0]}×{A.shape[1]}; solve needs a square matrix")
    B = read_rhs(args.rhs, A.shape[0], dtype)
    A, B = A.to(device), B.to(device)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        X, info = solve(A, B, backend=args.backend, method=args.method, return_info=True, **options)
    elapsed = time.perf_counter() - start
    for warning in caught:  # a ConvergenceWarning becomes one line; others are shown as usual
        if issubclass(warning.category, ConvergenceWarning):
            if not args.quiet and not args.json:
                print(f"tsgu solve: warning: {' '.join(str(warning.message).split())}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    if args.output is not None:
        write_solution(args.output, X)

    columns = 1 if B.dim() == 1 else B.shape[1]
    failing = [
        f"column {j}: {residual:.3g} > {threshold:.3g}"
        for j, (residual, threshold) in enumerate(zip(info.residuals, info.thresholds or (), strict=False))
        if not residual <= threshold
    ]
    if args.json:
        report = {
            "matrix": args.matrix,
            "n": A.shape[0],
            "nnz": int(A._nnz()),
            "dtype": args.dtype,
            "rhs": args.rhs,
            "columns": columns,
            "backend": info.backend,
            "method": info.method,
            "kind": info.kind,
            "converged": bool(info.converged),
            "iterations": info.iterations,
            "residuals": list(info.residuals),
            "max_residual": info.max_residual,
            "thresholds": None if info.thresholds is None else list(info.thresholds),
            "backend_seconds": info.wall_time,
            "seconds": elapsed,
            "message": info.message,
            "output": args.output,
            "device": str(device),
        }
        print(json.dumps(report, indent=2))
    elif not args.quiet:
        needed = f"; needed ≤ {max(info.thresholds):.1e}" if info.thresholds else ""
        print(
            f"matrix:      {args.matrix} — {A.shape[0]}×{A.shape[1]}, {A._nnz()} stored entries, {args.dtype}, "
            f"on {device}"
        )
        print(f"rhs:         {args.rhs or 'ones'} — {columns} column(s)")
        print(f"backend:     {info.backend} / {info.method} ({info.kind})")
        print(f"converged:   {'yes' if info.converged else 'no'}{' (' + '; '.join(failing) + ')' if failing else ''}")
        print(f"residual:    {info.max_residual:.3e} (largest relative ‖b − A x‖ / ‖b‖ over the columns{needed})")
        print(f"iterations:  {'-' if info.iterations is None else info.iterations}")
        print(f"time:        {elapsed:.3f} s ({info.wall_time:.3f} s in the backend)")
        if args.output is not None:
            print(f"solution:    written to {args.output}")
    elif not info.converged:
        detail = "; ".join(failing) or f"largest relative residual {info.max_residual:.3g}"
        print(f"tsgu solve: did not converge ({detail})", file=sys.stderr)
    return 0 if info.converged else 1
