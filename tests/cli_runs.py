"""Run ``tsgu ARGS`` for a test: in this process (fast), or as the installed console script in a fresh process.

A fresh ``tsgu`` process imports torch (1.3–4.7 CPU-s each on the test machine). Most command-line tests check
what the command does — its output, the files it writes, its exit code, its error lines — and get the same
answer from :func:`tsgu_in_process`, which calls the console script's entry function
(:func:`tsgu_core.cli.main`) as the script does and returns what a subprocess would: exit code, stdout and
stderr. :func:`tsgu_process` runs the real console script, kept where the process itself is the point: the
script starts at all, what a fresh process imports, torch's notices that it shows once per process, a
memory limit, a terminal.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

SCRIPT = Path(sys.executable).parent / "tsgu"  # the installed console script
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "tsgu_core.cli"]

# warnings.filters of ``python`` started without -W or PYTHONWARNINGS, the filters a ``tsgu`` process runs under
_INTERPRETER_FILTERS = (
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, ""),
    ("ignore", PendingDeprecationWarning, ""),
    ("ignore", ImportWarning, ""),
    ("ignore", ResourceWarning, ""),
)


def tsgu_process(
    *args: str, env: dict[str, str] | None = None, memory_limit: int | None = None
) -> subprocess.CompletedProcess[str]:
    """``tsgu ARGS`` through the installed console script in a fresh process, one thread.

    ``env`` adds environment variables; ``memory_limit`` (bytes) caps the address space as ``ulimit -v`` does,
    set by a small Python that then becomes ``tsgu`` (``os.execv``): a ``preexec_fn`` would make ``subprocess``
    fork this test process, which may hold JAX's threads by then (a fork with threads can deadlock).
    """
    command = [*COMMAND, *args]
    if memory_limit:
        limit = f"resource.setrlimit(resource.RLIMIT_AS, ({memory_limit}, {memory_limit}))"
        command = [sys.executable, "-c", f"import os, resource, sys; {limit}; os.execv(sys.argv[1], sys.argv[1:])",
                   *command]  # fmt: skip
    environment = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run(command, capture_output=True, text=True, env=environment, check=False)


def _show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    """What Python's default ``warnings.showwarning`` does: the warning on (the redirected) ``sys.stderr``."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _exit_code(code: object) -> int:
    """The exit status ``sys.exit(code)`` gives a process (a message is printed on stderr, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _matplotlib_backend() -> str | None:
    """The backend of matplotlib if it is imported (``tsgu demo/bench --plot`` switch it to Agg)."""
    matplotlib = sys.modules.get("matplotlib")
    return matplotlib.get_backend() if matplotlib is not None else None


def tsgu_in_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``tsgu ARGS`` in this process, as the console script runs it; returns what :func:`tsgu_process` would.

    The exit code is ``main``'s return value or its ``SystemExit`` (argparse's, ``--help``, ``--version``); an
    exception that escapes ``main`` is printed as a traceback on stderr with exit code 1, as Python does.
    Warnings run under the filters of a fresh interpreter and print on stderr, not into pytest's record.
    What a command changes for the whole process is restored afterwards: the environment (``--threads``
    sets ``OMP_NUM_THREADS`` and friends), torch's thread count, the warning filters, the working
    directory and matplotlib's backend.
    """
    import torch

    from tsgu_core.cli import main

    environment = dict(os.environ)
    threads = torch.get_num_threads()
    folder = os.getcwd()
    backend = _matplotlib_backend()
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            warnings.resetwarnings()
            for action, category, module in reversed(_INTERPRETER_FILTERS):
                warnings.filterwarnings(action, category=category, module=module)
            warnings.showwarning = _show
            try:
                code = main(list(args))
            except SystemExit as exit:
                code = _exit_code(exit.code)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        for name in set(os.environ) - set(environment):
            del os.environ[name]
        os.environ.update((name, value) for name, value in environment.items() if os.environ.get(name) != value)
        torch.set_num_threads(threads)
        os.chdir(folder)
        if backend is not None and _matplotlib_backend() != backend:
            sys.modules["matplotlib"].use(backend)
    return subprocess.CompletedProcess(["tsgu", *args], code, stdout.getvalue(), stderr.getvalue())
