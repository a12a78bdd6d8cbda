"""``tsgu solve A.mtx [B] [-o X]``: solve a system from files and report how it went."""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from tsgu_core.cli.problems import parse_options, read_matrix, read_rhs, write_solution
from tsgu_core.solve import solve


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("solve", help="solve A X = B for a Matrix Market A; print residual, iterations, time")
    parser.add_argument("matrix", help="A, a Matrix Market (.mtx) file")
    parser.add_argument("rhs", nargs="?", default=None, help="B, a .mtx or .npy file (default: ones)")
    parser.add_argument("--backend", default=None)
    parser.add_argument("--method", default=None)
    parser.add_argument("--rtol", type=float, default=None)
    parser.add_argument("--atol", type=float, default=None)
    parser.add_argument("--maxiter", type=int, default=None)
    parser.add_argument("--option", action="append", metavar="NAME=VALUE", help="a method option (repeatable)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("-o", "--output", default=None, help="write X to this .npy or .mtx file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    dtype = getattr(torch, args.dtype)
    A = read_matrix(args.matrix, dtype)
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"{args.matrix} is {A.shape[0]}×{A.shape[1]}; solve needs a square matrix")
    B = read_rhs(args.rhs, A.shape[0], dtype)
    options = parse_options(args.option)
    for name in ("rtol", "atol", "maxiter"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    start = time.perf_counter()
    X, info = solve(A, B, backend=args.backend, method=args.method, return_info=True, **options)
    elapsed = time.perf_counter() - start
    iterations = "-" if info.iterations is None else str(info.iterations)
    print(f"matrix      {args.matrix}: {A.shape[0]}×{A.shape[1]}, {A._nnz()} stored entries, {args.dtype}")
    print(f"backend     {info.backend} / {info.method} ({info.kind})")
    print(
        f"residual    {info.max_residual:.3e} (largest relative ‖b − A x‖ / ‖b‖ over {len(info.residuals)} column(s))"
    )
    print(f"iterations  {iterations}")
    print(f"time        {elapsed:.3f} s")
    if args.output:
        write_solution(args.output, X)
        print(f"solution    written to {args.output}")
    return 0
