"""The ``tsgu`` command line: ``info``, ``explain``, ``solve``, ``bench`` and ``demo``.

Each command lives in its own module with an ``add_parser(subparsers)`` that
registers its arguments and a handler. The rules:

* ``tsgu --help`` imports nothing heavy: torch, the registry and the plugins
  are imported inside the handlers.
* Every input and output is checked before any work (files, suffixes,
  folders, ``--device``, ``--plot``).
* Exit codes: 0 success; 1 a solve failed (did not converge, singular ``A``,
  a backend error); 2 a
  problem with the input (a bad file, an unknown backend, method or option,
  an unusable device): one line on stderr, never a traceback.
* torch's notices about sparse CSR tensors are hidden while a command runs
  (scoped; see :func:`~tsgu_core.cli.common.quiet_torch`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tsgu_core.cli.common import CommandError, quiet_torch

__all__ = ["EXIT_INPUT", "EXIT_OK", "EXIT_SOLVE_FAILED", "CommandError", "main"]

EXIT_OK = 0
EXIT_SOLVE_FAILED = 1
EXIT_INPUT = 2


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    python = ".".join(map(str, sys.version_info[:3]))
    return f"tsgu {installed('tsgu')} (torch {installed('torch')}, Python {python})"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (imports nothing heavy)."""
    from tsgu_core.cli import bench, demo, info, solve_file

    parser = argparse.ArgumentParser(
        prog="tsgu",
        description="Differentiable sparse linear solves for PyTorch.",
        epilog="exit codes: 0 success, 1 a solve failed or did not converge, 2 bad input (one line on stderr). "
        "See `tsgu COMMAND --help`.",
    )
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (info, solve_file, bench, demo):
        module.add_parser(commands)
    return parser


def _report(command: str, error: BaseException, *, kind: bool = True, listing: bool = False) -> None:
    """One line on stderr; with ``listing``, the message's own lines (e.g. one accepted option per line) are kept."""
    name = f"{type(error).__name__}: " if kind else ""
    lines = str(error).splitlines() if listing else [str(error)]
    first, *rest = [" ".join(line.split()) for line in lines if line.strip()] or [""]
    print(f"tsgu {command}: {name}{first}", file=sys.stderr)
    for line in rest:
        print(f"  {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    from tsgu_core import errors

    # the solve ran and failed: did not converge, singular, or the backend itself failed
    failed = tuple(getattr(errors, name) for name in ("SolveFailedError", "BackendError") if hasattr(errors, name))
    try:
        with quiet_torch():
            return int(args.handler(args) or EXIT_OK)
    except CommandError as error:
        _report(args.command, error, kind=False)
        return EXIT_INPUT
    except failed as error:
        _report(args.command, error)
        return EXIT_SOLVE_FAILED
    except errors.UnknownOptionError as error:  # the accepted options, one per line
        _report(args.command, error, listing=True)
        return EXIT_INPUT
    except (errors.TsguError, ValueError, TypeError) as error:
        _report(args.command, error)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print(f"tsgu {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `tsgu info | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except MemoryError as error:  # a last resort: the commands estimate the memory they need before any work
        _report(args.command, CommandError(f"out of memory: {error or 'the problem is too large for this machine'}"),
                kind=False)  # fmt: skip
        return EXIT_INPUT
    except OSError as error:  # e.g. a disk that filled up while writing
        where = f" ({error.filename})" if error.filename else ""
        _report(args.command, CommandError(f"{error.strerror or error}{where}"), kind=False)
        return EXIT_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
