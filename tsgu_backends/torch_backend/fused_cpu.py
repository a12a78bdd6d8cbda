"""Fused CPU loops for block CG and BiCGSTAB: one pass over memory per vector stage, compiled by numba.

``fused=True`` on the CPU runs each iteration's vector work — everything
except the products with ``A`` (torch's MKL SpMM) — in a few loops that read
and write each ``(n, k)`` block vector once per stage and keep the per-column
scalar logic (``α``, ``β``, ``ω``, the ``active`` masks) inside the same call:

* CG: ``⟨P, AP⟩``; ``R −= α·AP`` with ``‖R‖²``; ``X += α·P`` with
  ``P = R + β·P`` — three passes (the floor: each needs the previous
  reduction), one call per iteration without a preconditioner;
* BiCGSTAB: ``P = R + β(P − ω·V)``; ``⟨R̂, V⟩`` with ``‖V‖²``; ``R −= α·V``
  with ``‖R‖²``; ``⟨T, T⟩`` with ``⟨T, R⟩``; ``X += α·P̂ + ω·Ŝ`` with
  ``R −= ω·T``, ``‖R‖²`` and the next ``⟨R̂, R⟩`` — five passes.

Why not ``torch.compile``: measured (torch 2.13, one thread, n = 1e5, 8
columns), inductor evaluates a pointwise update and a column reduction of its
result (``R −= α·AP`` then ``‖R‖²``) in two loops over memory, recomputing
the update, and a whole iteration compiled as one graph writes ``R`` to a fresh
buffer first (6.4 ms against 0.5 ms for the split kernels).

The loops (:mod:`tsgu_backends.torch_backend._fused_loops`) are compiled by
numba (``nogil``, no ``fastmath``) once per dtype — the column count is an
argument — on the numpy views of the tensors (:meth:`torch.Tensor.numpy`: no
copy). Sums run over ``w = k·lanes`` interleaved lanes (``w`` near 2 KiB of them)
folded at the end, so one column is summed by several partial sums, not one
serial chain. Arithmetic per element is the eager loops' (same operations in
the same order; sums associate differently, as torch's do). No system C
compiler is used.

Compiling takes seconds, so the machine code is kept on disk — but numba's
cache files are pickles, and loading one runs whatever it was made to run. The
cache therefore lives in one folder that only the user can write:
``$TSGU_KERNEL_CACHE`` if set (``off`` disables the disk cache), else
``$XDG_CACHE_HOME/tsgu/kernels`` (``~/.cache/tsgu/kernels``), created with mode
0700. The folder is refused — the loops are then compiled in memory, after a
warning that says why — when it, or any folder above it, is writable by another
user (except sticky folders such as ``/tmp``), or it belongs to someone else;
a file in it is read only through a descriptor whose owner is the user and
whose mode lets no one else write it (others are refused with a warning and
replaced by a fresh compile). Writers take a lock file, so processes building
at the same time never pair one kernel's index entry with another's code.

The loops run on the calling thread only and release the GIL (the products keep
torch's threads): they are measured with one thread, where they win; with
several threads torch's eager vector operations run in parallel, so measure
before choosing ``fused``.

Every call is checked at the entry (:meth:`FusedKernels.call`): tensors on the
CPU, of the kernels' dtype (masks ``torch.bool``), C-contiguous, with
``batch·n·k`` elements for block vectors and ``batch·k`` for per-column
scalars; a violation is a typed :mod:`tsgu_core.errors` error, never a read
out of bounds.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import os
import pickle
import stat
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from tsgu_core.errors import (
    DeviceMismatchError,
    DtypeMismatchError,
    InvalidArgumentError,
    LayoutError,
    ShapeError,
)

__all__ = ["FusedKernels", "cache_directory", "kernels_for"]

_LANE_BYTES = 2048  # w·itemsize ≈ 2 KiB of partial sums: long rows, little cost per row (measured, k = 1 and 8)

# The arguments of each loop after (batch, n, k, w): "v" a block vector (batch·n·k), "s" per-column scalars
# (batch·k), "m" a per-column mask (bool, batch·k), "f" one number of the dtype.
_SPECS: dict[str, tuple[tuple[str, str], ...]] = {
    "cg_iteration": (("P", "v"), ("AP", "v"), ("R", "v"), ("X", "v"), ("rz", "s"), ("active", "m"), ("tol2", "s")),
    "cg_step": (
        *(("P", "v"), ("AP", "v"), ("R", "v")),
        *(("rz", "s"), ("active", "m"), ("tol2", "s"), ("alpha", "s"), ("rr", "s")),
    ),
    "cg_advance": (
        *(("X", "v"), ("P", "v"), ("Z", "v")),
        *(("alpha", "s"), ("rz", "s"), ("rz_new", "s"), ("active", "m")),
    ),
    "bicg_direction": (
        *(("P", "v"), ("V", "v"), ("R", "v")),
        *(("rho_new", "s"), ("rho", "s"), ("alpha", "s"), ("omega", "s"), ("active", "m"), ("rr", "s")),
        *(("rhat_norm", "s"), ("eps", "f"), ("ok", "m")),
    ),
    "bicg_half": (
        *(("Rhat", "v"), ("V", "v"), ("R", "v"), ("rho_new", "s"), ("rhat_norm", "s"), ("eps", "f")),
        *(("ok", "m"), ("tol2", "s"), ("alpha", "s"), ("go_on", "m")),
    ),
    "bicg_finish": (
        *(("T", "v"), ("R", "v"), ("X", "v"), ("Phat", "v"), ("Shat", "v"), ("Rhat", "v")),
        *(("alpha", "s"), ("go_on", "m"), ("tol2", "s"), ("omega", "s"), ("rr", "s"), ("rho_next", "s")),
        ("active", "m"),
    ),
}
_NUMPY = {torch.float64: np.float64, torch.float32: np.float32}


class FusedKernels:
    """The compiled loops for one dtype, called with tensors (see the module docstring for the layout)."""

    def __init__(self, dtype: torch.dtype, dispatchers: dict[str, Any]):
        self.dtype = dtype
        self._scalar = _NUMPY[dtype]
        self._itemsize = np.dtype(self._scalar).itemsize
        self._dispatchers = dispatchers

    def call(self, name: str, batch: int, n: int, k: int, *arguments: torch.Tensor | float) -> int:
        """Run loop ``name`` on ``arguments`` after checking them; the count of columns that go on.

        Raises
        ------
        DeviceMismatchError, DtypeMismatchError, LayoutError, ShapeError
            When a tensor is not on the CPU, not of the loops' dtype (masks: ``torch.bool``), not
            C-contiguous, or not of ``batch·n·k`` (block vectors) or ``batch·k`` (per-column scalars) elements.
        InvalidArgumentError
            When the number of arguments is not the loop's.
        """
        spec = _SPECS[name]
        if len(arguments) != len(spec):
            raise InvalidArgumentError(
                f"fused loop {name} takes {len(spec)} arguments after (batch, n, k), got {len(arguments)}"
            )
        if batch < 0 or n < 0 or k < 1:
            raise ShapeError(f"fused loop {name}: batch {batch}, n {n}, k {k} (batch, n ≥ 0 and k ≥ 1 expected)")
        lanes = max(1, _LANE_BYTES // (self._itemsize * k))
        converted: list[object] = []
        sizes = {"v": batch * n * k, "s": batch * k, "m": batch * k}
        for (label, kind), value in zip(spec, arguments, strict=True):
            if kind == "f":
                converted.append(self._scalar(float(value)))
            elif (  # the checks of _checked, in one expression: this runs a few times per iteration
                type(value) is torch.Tensor
                and value.dtype is (torch.bool if kind == "m" else self.dtype)
                and value.is_cpu
                and value.layout is torch.strided
                and value.is_contiguous()
                and value.numel() == sizes[kind]
            ):
                converted.append(value.detach().numpy().reshape(-1))  # a view: contiguous, so no copy
            else:  # the same checks one by one, to say which failed
                converted.append(self._checked(name, label, kind, value, sizes[kind], (batch, n, k)))
        result = self._dispatchers[name](batch, n, k, k * lanes, *converted)
        return int(result)

    def _checked(
        self, name: str, label: str, kind: str, value: object, expected: int, sizes: tuple[int, int, int]
    ) -> np.ndarray:
        """``value`` as a flat numpy view (no copy), after the checks that keep the loops inside its memory."""
        hint = ""
        if kind == "v":  # block vectors are made from R, some by the user's M: a misfit comes from M
            hint = " (a preconditioner M must return a tensor of its input's shape, dtype and device)"
        where = f"fused loop {name}: {label}"
        if not isinstance(value, torch.Tensor):
            raise DtypeMismatchError(f"{where} must be a tensor, got {type(value).__name__}{hint}")
        if value.device.type != "cpu":
            raise DeviceMismatchError(f"{where} is on {value.device}; the fused loops run on the CPU{hint}")
        dtype = torch.bool if kind == "m" else self.dtype
        if value.dtype != dtype:
            raise DtypeMismatchError(f"{where} has dtype {value.dtype}, expected {dtype}{hint}")
        if value.layout != torch.strided or not value.is_contiguous():
            raise LayoutError(f"{where} must be a dense C-contiguous tensor{hint}")
        if value.numel() != expected:
            batch, n, k = sizes
            what = f"batch {batch} × n {n} × k {k}" if kind == "v" else f"batch {batch} × k {k}"
            raise ShapeError(f"{where} has {value.numel()} elements, expected {expected} ({what}){hint}")
        array: np.ndarray = value.detach().view(-1).numpy()
        return array


# -- the disk cache: one folder only the user can write, files read only when the user owns them ----------------


_CACHE_CLASS: Any = None  # numba's function cache made safe (built on first use: numba imports then)
_REFUSED: set[str] = set()  # the cache files already warned about


class UntrustedCacheError(OSError):
    """A cache folder or file that another user could have written (refused: loading it could run their code)."""


def _euid() -> int:
    return os.geteuid() if hasattr(os, "geteuid") else 0


def cache_directory() -> Path | None:
    """The folder the compiled loops are kept in, or ``None`` when ``$TSGU_KERNEL_CACHE`` is ``off``.

    ``$TSGU_KERNEL_CACHE`` if set, else ``$XDG_CACHE_HOME/tsgu/kernels``, else ``~/.cache/tsgu/kernels``.
    Its trust is checked by :func:`trusted_directory` before anything in it is read.
    """
    configured = os.environ.get("TSGU_KERNEL_CACHE")
    if configured is not None and configured.strip().lower() in {"off", "0", "none", "no", ""}:
        return None
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tsgu" / "kernels"


def trusted_directory(directory: Path) -> Path:
    """``directory`` (created with mode 0700 when missing), resolved, once it is safe to load code from.

    Safe: owned by the user and writable by no one else; every folder above it owned by the user or root and
    writable by no one else unless it is sticky (``/tmp``), so no one else can swap the folder for theirs.

    Raises
    ------
    UntrustedCacheError
        When a folder fails these tests (what to do is in the message).
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    resolved = Path(os.path.realpath(directory))
    uid = _euid()
    advice = "point TSGU_KERNEL_CACHE to a folder only you can write (mode 0700), or set it to 'off'"
    info = resolved.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise UntrustedCacheError(f"kernel cache {resolved} is not a folder; {advice}")
    if info.st_uid != uid:
        raise UntrustedCacheError(f"kernel cache {resolved} belongs to uid {info.st_uid}, not you ({uid}); {advice}")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UntrustedCacheError(
            f"kernel cache {resolved} is writable by others (mode {stat.S_IMODE(info.st_mode):04o}); {advice}"
        )
    for parent in resolved.parents:
        above = parent.stat()
        sticky = bool(above.st_mode & stat.S_ISVTX)
        if above.st_uid not in (0, uid) or (above.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky):
            raise UntrustedCacheError(
                f"kernel cache {resolved} lies in {parent} (uid {above.st_uid}, mode "
                f"{stat.S_IMODE(above.st_mode):04o}), which another user could change; {advice}"
            )
    return resolved


@contextlib.contextmanager
def _open_trusted(path: str) -> Iterator[IO[bytes]]:
    """``path`` opened for reading — refused unless it is a regular file of the user that no one else can write.

    The tests run on the open descriptor (``fstat``), so the file read is the file checked.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    descriptor = os.open(path, flags)
    try:
        info = os.fstat(descriptor)
        uid = _euid()
        if not stat.S_ISREG(info.st_mode) or info.st_uid != uid or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UntrustedCacheError(
                f"refused to load kernel cache file {path}: owner uid {info.st_uid} (you are {uid}), mode "
                f"{stat.S_IMODE(info.st_mode):04o}; it may have been planted — it will be replaced by a fresh build"
            )
        handle = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with handle:
        yield handle


def _refused(path: str, error: UntrustedCacheError) -> None:
    """Warn once per file (a refused index is read twice: before the build and before it is replaced)."""
    if path not in _REFUSED:
        _REFUSED.add(path)
        warnings.warn(f"fused=True: {error}", RuntimeWarning, stacklevel=2)


def _make_cache_class() -> type:
    """numba's function cache with a fixed, checked folder, descriptor-checked reads, and a lock for writers.

    Built on first use (numba imports here). Reuses numba's index format: ``(numba version)`` then
    ``(source stamp, {key: data file})``, each data file one pickled compile result.
    """
    from numba.core import caching

    class TrustedLocator(caching._CacheLocator):
        def __init__(self, py_func: Any, py_file: str, directory: Path):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._cache_path = str(directory / self.get_suitable_cache_subpath(py_file))

        def ensure_cache_path(self) -> None:
            os.makedirs(self._cache_path, mode=0o700, exist_ok=True)

        def get_cache_path(self) -> str:
            return self._cache_path

        def get_source_stamp(self) -> bytes:
            with open(self._py_file, "rb") as source:
                return hashlib.sha256(source.read()).digest()

        def get_disambiguator(self) -> str:
            return str(self._lineno)

    class TrustedImpl(caching.CompileResultCacheImpl):
        def __init__(self, py_func: Any, directory: Path):  # not numba's: no search through other locators
            self._lineno = py_func.__code__.co_firstlineno
            source = inspect.getfile(py_func)
            self._locator = TrustedLocator(py_func, source, directory)
            module = os.path.splitext(os.path.basename(source))[0]
            self._filename_base = self.get_filename_base(f"{module}.{py_func.__qualname__}", sys.abiflags)

    class TrustedFile(caching.IndexDataCacheFile):
        @contextlib.contextmanager
        def _locked(self, exclusive: bool) -> Iterator[None]:
            import fcntl

            os.makedirs(self._cache_path, mode=0o700, exist_ok=True)
            lock = self._index_path + ".lock"
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            descriptor = os.open(lock, flags, 0o600)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                yield
            finally:
                os.close(descriptor)  # releases the lock

        def save(self, key: Any, data: Any) -> None:
            with self._locked(exclusive=True):  # the index read, the data name chosen and both files written
                super().save(key, data)

        def load(self, key: Any) -> Any:
            with self._locked(exclusive=False):
                return super().load(key)

        def _load_index(self) -> dict[Any, Any]:
            try:
                with _open_trusted(self._index_path) as handle:
                    version = pickle.load(handle)
                    if version != self._version:
                        return {}
                    stamp, overloads = pickle.loads(handle.read())
            except FileNotFoundError:
                return {}
            except UntrustedCacheError as error:
                _refused(self._index_path, error)
                return {}
            return dict(overloads) if stamp == self._source_stamp else {}

        def _load_data(self, name: str) -> Any:
            try:
                with _open_trusted(self._data_path(name)) as handle:
                    return pickle.loads(handle.read())
            except UntrustedCacheError as error:
                _refused(self._data_path(name), error)
                raise

    class TrustedCache(caching.FunctionCache):
        def __init__(self, py_func: Any, directory: Path):  # numba's, with the classes above
            self._name = repr(py_func)
            self._py_func = py_func
            self._impl = TrustedImpl(py_func, directory)
            self._cache_path = self._impl.locator.get_cache_path()
            self._cache_file = TrustedFile(
                cache_path=self._cache_path,
                filename_base=self._impl.filename_base,
                source_stamp=self._impl.locator.get_source_stamp(),
            )
            self.enable()

        @property
        def index_path(self) -> str:
            """The index file this cache reads first (pickled: it is checked before it is read)."""
            path: str = self._cache_file._index_path
            return path

    return TrustedCache


def _disk_cache(py_func: Any, directory: Path) -> Any:
    """A checked numba function cache for ``py_func`` in ``directory`` (already found trusted)."""
    global _CACHE_CLASS
    if _CACHE_CLASS is None:
        _CACHE_CLASS = _make_cache_class()
    return _CACHE_CLASS(py_func, directory)


def _signature(dtype: torch.dtype, name: str) -> tuple[Any, ...]:
    from numba import types

    scalar = types.float64 if dtype == torch.float64 else types.float32
    kinds = {
        "v": types.Array(scalar, 1, "C"),
        "s": types.Array(scalar, 1, "C"),
        "m": types.Array(types.boolean, 1, "C"),
        "f": scalar,
    }
    return (types.int64,) * 4 + tuple(kinds[kind] for _, kind in _SPECS[name])


_LOCK = threading.RLock()  # one build at a time in this process; numba's own compile lock is taken inside
_LOADED: dict[torch.dtype, FusedKernels] = {}
_CACHE_STATE: dict[str, object] = {}  # "directory": the folder attached (or None), "reason": why none


def _attach_cache(dispatchers: dict[str, Any]) -> None:
    """Give the loops the checked disk cache, once per process; without one (refused, off) they compile in memory."""
    if "directory" in _CACHE_STATE:
        return
    directory = cache_directory()
    chosen: Path | None = None
    if directory is not None:
        try:
            import fcntl  # noqa: F401  (writers lock; no fcntl, no disk cache)

            chosen = trusted_directory(directory)
            for dispatcher in dispatchers.values():
                dispatcher._cache = _disk_cache(dispatcher.py_func, chosen)
        except (OSError, ImportError, AttributeError, TypeError) as error:  # AttributeError: another numba
            for dispatcher in dispatchers.values():
                dispatcher._cache = _null_cache()
            _CACHE_STATE["reason"] = f"{type(error).__name__}: {error}"
            chosen = None
            warnings.warn(
                f"fused=True: no disk cache for the compiled loops ({error}); they are compiled in memory "
                "(seconds, once per process and dtype)",
                RuntimeWarning,
                stacklevel=4,
            )
    _CACHE_STATE["directory"] = chosen


def _null_cache() -> Any:
    from numba.core.caching import NullCache

    return NullCache()


def kernels_for(dtype: torch.dtype, k: int = 1) -> FusedKernels:
    """The fused loops for ``dtype`` (float32/float64), compiled on first use per process and kept on disk.

    ``k`` (the column count) is an argument of the loops, not part of what is compiled.

    Raises
    ------
    DtypeMismatchError
        For a dtype other than float32/float64.
    Exception
        Whatever numba raises when it cannot compile (the caller falls back to the eager loops).
    """
    if dtype not in _NUMPY:
        raise DtypeMismatchError(f"the fused loops are built for float32/float64, not {dtype}")
    kernels = _LOADED.get(dtype)
    if kernels is not None:
        return kernels
    with _LOCK:  # a second thread waits here for the first one's build, then takes it
        kernels = _LOADED.get(dtype)
        if kernels is None:
            loops = importlib.import_module("tsgu_backends.torch_backend._fused_loops")  # numba loads here
            dispatchers = loops.KERNELS
            _attach_cache(dispatchers)
            for name, dispatcher in dispatchers.items():
                dispatcher.compile(_signature(dtype, name))
            kernels = _LOADED[dtype] = FusedKernels(dtype, dispatchers)
    return kernels
