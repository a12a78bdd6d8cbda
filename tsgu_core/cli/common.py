"""What every ``tsgu`` command shares: the error type, input checks done before any work, quiet torch, progress.

Nothing here imports torch at module level: ``tsgu --help`` must stay instant.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "PLOT_SUFFIXES",
    "THREAD_VARIABLES",
    "CommandError",
    "add_threads_option",
    "available_memory",
    "check_device",
    "check_memory",
    "check_output",
    "check_plot",
    "progress",
    "quiet_torch",
    "set_threads",
    "valid_methods",
]

PLOT_SUFFIXES = (".png", ".pdf", ".svg")
"""Figure formats ``--plot`` writes (by the file name's suffix)."""


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""The variables ``--threads`` sets for the libraries loaded after it (OpenMP, OpenBLAS, MKL)."""


def add_threads_option(parser: Any, default: int | None) -> None:
    """``--threads N``: the CPU threads torch and the BLAS/OpenMP libraries may use (see :func:`set_threads`)."""
    said = "the libraries' own default" if default is None else str(default)
    parser.add_argument(
        "--threads",
        type=int,
        default=default,
        help=f"CPU threads for torch, OpenMP, OpenBLAS and MKL (default {said}); on a small problem or a busy "
        "machine more threads cost time",
    )


def set_threads(threads: int | None) -> int:
    """Apply ``--threads`` before torch, NumPy or SciPy is imported; return torch's thread count.

    The environment variables reach the libraries loaded later (each reads them once, when loaded);
    torch's own count is set directly. ``None`` changes nothing.

    Raises
    ------
    CommandError
        ``threads`` is less than 1.
    """
    if threads is not None:
        if threads < 1:
            raise CommandError(f"--threads must be ≥ 1, got {threads}")
        for variable in THREAD_VARIABLES:
            os.environ[variable] = str(threads)
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


class CommandError(Exception):
    """A problem with the command's input, reported as one line (exit code 2)."""


def quiet_torch() -> contextlib.AbstractContextManager[None]:
    """Hide torch's two notices about sparse CSR tensors while tsgu builds and solves with them (scoped)."""
    from tsgu_core.base.quiet import quiet_sparse_notices

    return quiet_sparse_notices()


def check_output(path: str, suffixes: Sequence[str], option: str) -> Path:
    """Check, before any work, that ``path`` can be written and has a supported suffix.

    Raises
    ------
    CommandError
        The suffix is not one of ``suffixes``, the folder does not exist or is
        not writable, or ``path`` is a folder.
    """
    if not path.strip():
        raise CommandError(f"{option} got an empty file name; give one ending in {', '.join(suffixes)}")
    target = Path(path)
    if target.suffix.lower() not in suffixes:
        raise CommandError(f"{option} {path}: cannot tell the format; use a file name ending in {', '.join(suffixes)}")
    folder = target.parent
    if not folder.is_dir():
        raise CommandError(f"{option} {path}: the folder {folder} does not exist")
    if target.is_dir():
        raise CommandError(f"{option} {path} is a folder; give a file name")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise CommandError(f"{option} {path}: not writable")
    return target


def available_memory() -> int | None:
    """Bytes this process may still allocate: ``MemAvailable``, capped by ``ulimit -v``; ``None`` if unknown."""
    known: list[int] = []
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    known.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        with contextlib.suppress(ValueError, OSError, AttributeError):
            known.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            known.append(soft)
    except (ImportError, OSError, ValueError):
        pass
    return min(known) if known else None


def _size(count: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count / 1e3:.3g} kB"


def check_memory(needed: float, what: str) -> None:
    """Refuse, before allocating, work that needs more than the memory available (:func:`available_memory`).

    Raises
    ------
    CommandError
        ``needed`` bytes exceed what this process may allocate.
    """
    available = available_memory()
    if available is not None and needed > available:
        raise CommandError(f"{what} needs about {_size(needed)} of memory, but only {_size(available)} is available")


def check_plot(path: str | None) -> None:
    """``--plot PATH``: a writable figure file, and matplotlib installed (checked before any work)."""
    if path is None:
        return
    check_output(path, PLOT_SUFFIXES, "--plot")
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise CommandError("--plot needs matplotlib: pip install matplotlib (or pip install 'tsgu[all]')") from error


def check_device(text: str) -> torch.device:
    """Parse ``--device`` and prove that torch can put a tensor there, before any work.

    Raises
    ------
    CommandError
        Not a device name, a CUDA device on a build or machine without CUDA,
        or an index beyond the devices present.
    """
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as error:
        raise CommandError(f"--device {text}: not a device name (e.g. cpu, cuda, cuda:1)") from error
    if device.type == "meta":
        raise CommandError(f"--device {text}: the meta device holds shapes but no values; use cpu or cuda")
    if device.type == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            raise CommandError(f"--device {text}: this torch build has no CUDA support; use --device cpu")
        if not torch.cuda.is_available():
            raise CommandError(f"--device {text}: no CUDA device is visible here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise CommandError(f"--device {text}: only {count} CUDA device(s) here (cuda:0 … cuda:{count - 1})")
    try:
        torch.zeros(1, device=device)
    except Exception as error:  # torch raises several types here (AssertionError, RuntimeError)
        raise CommandError(f"--device {text}: torch cannot use it ({type(error).__name__}: {error})") from error
    return device


def valid_methods(device_type: str, method: str, operation: str = "solve") -> None:
    """Refuse a method no registered backend offers on ``device_type``, listing the valid ones.

    A method offered only by an unavailable backend passes: selection then
    says why that backend cannot run.
    """
    from tsgu_core.plugins.registry import list_backends

    offered: dict[str, list[str]] = {}
    for entry in list_backends():
        if device_type not in entry.backend.device_types:
            continue
        for name, spec in entry.backend.methods.items():
            if spec.operation == operation:
                offered.setdefault(entry.name, []).append(name)
    if any(method in names for names in offered.values()):
        return
    from tsgu_core.errors import did_you_mean

    listing = "; ".join(f"{backend}: {', '.join(sorted(names))}" for backend, names in sorted(offered.items()))
    close = did_you_mean(method, {name for names in offered.values() for name in names})
    raise CommandError(f"no backend on {device_type} offers method {method!r}{close}; valid methods — {listing}")


class _NoProgress:
    """Stands in for a tqdm bar when none is shown."""

    def update(self, count: int = 1) -> None:
        pass

    def set_description(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress(total: int, *, description: str = "", unit: str = "it", quiet: bool = False) -> Any:
    """A tqdm bar on stderr when stderr is a terminal, not ``quiet``, and tqdm is installed; else a no-op."""
    if quiet or not sys.stderr.isatty():
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is the optional extra "cli"
        return _NoProgress()
    return tqdm(total=total, desc=description, unit=unit, leave=False, file=sys.stderr)
