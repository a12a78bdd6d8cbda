"""The ``tsgu`` command line: ``info``, ``explain``, ``solve``, ``bench`` and ``demo``.

Each command lives in its own module with an ``add_parser(subparsers)`` that
registers its arguments and a handler. Errors a user can act on (a bad
file, an unknown option, an unavailable backend) are printed as one line on
stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tsgu_core.errors import TsguError

__all__ = ["CommandError", "main"]


class CommandError(Exception):
    """A problem with the command's input, reported as one line (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    from tsgu_core.cli import bench, demo, info, solve_file

    parser = argparse.ArgumentParser(prog="tsgu", description="Differentiable sparse linear solves for PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (info, solve_file, bench, demo):
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (CommandError, TsguError, ValueError, TypeError) as error:
        kind = "" if isinstance(error, CommandError) else f"{type(error).__name__}: "
        print(f"tsgu {args.command}: {kind}{error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
