"""A disk cache for numba kernels that loads nothing another user could have written (built-in backends only).

Private to :mod:`tsgu_backends` (the torch backend's ``fused=True`` loops, the
scipy backend's selected-inversion kernels); :mod:`tsgu_core` never imports
numba, and importing this module imports no numba either — numba's caching
classes are subclassed on first use.

numba's cache files are pickles: loading one runs whatever it was made to run.
Compiled kernels are therefore kept in one folder only the user can write:
``$TSGU_KERNEL_CACHE`` if set (``off`` disables the disk cache), else
``$XDG_CACHE_HOME/tsgu/kernels`` (``~/.cache/tsgu/kernels``), created with
mode 0700. The folder is refused — the kernels are then compiled in memory,
after a warning that says why — when it, or any folder above it, is writable by
another user (except sticky folders such as ``/tmp``), or it belongs to someone
else; a file in it is read only through a descriptor whose owner is the user
and whose mode lets no one else write it (others are refused with a warning and
replaced by a fresh compile). Writers take a lock file, so processes building
at the same time never pair one kernel's index entry with another's code. A
kernel's entries are keyed by the SHA-256 of its source file, so an edited file
is never served stale code.

Use :func:`attach_trusted_cache` on the dispatchers of ``numba.njit`` (without
``cache=True``) before their first compile.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import pickle
import stat
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

__all__ = [
    "CacheChoice",
    "UntrustedCacheError",
    "attach_trusted_cache",
    "cache_directory",
    "disk_cache",
    "trusted_directory",
]

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


def _refused(path: str, error: UntrustedCacheError, what: str) -> None:
    """Warn once per file (a refused index is read twice: before the build and before it is replaced)."""
    if path not in _REFUSED:
        _REFUSED.add(path)
        warnings.warn(f"{what}: {error}", RuntimeWarning, stacklevel=2)


def optimization_level() -> str:
    """numba's LLVM optimization level (``$NUMBA_OPT``) as a name part: ``O3`` (the default), ``O0``, ``Omax``…

    Part of every cached kernel's file name: numba's own cache key holds the signature and the CPU, not the
    optimization level, so without it kernels built at ``NUMBA_OPT=1`` would be served to a later run at the
    default level, and the other way round.
    """
    from numba.core import config

    level = config.OPT  # type: ignore[attr-defined]  # set by numba at import from $NUMBA_OPT
    return "Omax" if getattr(level, "is_opt_max", False) else f"O{int(level)}"


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
            return f"{self._lineno}-{optimization_level()}"  # kernels built at another NUMBA_OPT are others

    class TrustedImpl(caching.CompileResultCacheImpl):
        def __init__(self, py_func: Any, directory: Path):  # not numba's: no search through other locators
            self._lineno = py_func.__code__.co_firstlineno
            source = inspect.getfile(py_func)
            self._locator = TrustedLocator(py_func, source, directory)
            module = os.path.splitext(os.path.basename(source))[0]
            self._filename_base = self.get_filename_base(f"{module}.{py_func.__qualname__}", sys.abiflags)

    class TrustedFile(caching.IndexDataCacheFile):
        what = "numba kernels"  # who is warned about in a refusal (set per cache)

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
                _refused(self._index_path, error, self.what)
                return {}
            return dict(overloads) if stamp == self._source_stamp else {}

        def _load_data(self, name: str) -> Any:
            try:
                with _open_trusted(self._data_path(name)) as handle:
                    return pickle.loads(handle.read())
            except UntrustedCacheError as error:
                _refused(self._data_path(name), error, self.what)
                raise

    class TrustedCache(caching.FunctionCache):
        def __init__(self, py_func: Any, directory: Path, what: str):  # numba's, with the classes above
            self._name = repr(py_func)
            self._py_func = py_func
            self._impl = TrustedImpl(py_func, directory)
            self._cache_path = self._impl.locator.get_cache_path()
            self._cache_file = TrustedFile(
                cache_path=self._cache_path,
                filename_base=self._impl.filename_base,
                source_stamp=self._impl.locator.get_source_stamp(),
            )
            self._cache_file.what = what
            self.enable()

        @property
        def index_path(self) -> str:
            """The index file this cache reads first (pickled: it is checked before it is read)."""
            path: str = self._cache_file._index_path
            return path

    return TrustedCache


def disk_cache(py_func: Any, directory: Path, what: str = "numba kernels") -> Any:
    """A checked numba function cache for ``py_func`` in ``directory`` (already found trusted).

    ``what`` names the kernels in the warning when a file in it is refused.
    """
    global _CACHE_CLASS
    if _CACHE_CLASS is None:
        _CACHE_CLASS = _make_cache_class()
    return _CACHE_CLASS(py_func, directory, what)


class CacheChoice(NamedTuple):
    """Where :func:`attach_trusted_cache` put the kernels' cache: ``directory`` (``None``: in memory) and why not."""

    directory: Path | None
    reason: str | None = None


def attach_trusted_cache(dispatchers: Iterable[Any], *, what: str, stacklevel: int = 2) -> CacheChoice:
    """Give numba ``dispatchers`` the checked disk cache; without one (refused, ``off``) they compile in memory.

    Call it before their first compile. ``what`` names the kernels in warnings (``"fused=True"``). A refused
    folder is a :class:`RuntimeWarning` at ``stacklevel`` above the caller, not an error: the kernels still run.
    """
    dispatchers = list(dispatchers)
    directory = cache_directory()
    if directory is None:
        _set_caches(dispatchers, None, what)
        return CacheChoice(None, "TSGU_KERNEL_CACHE is off")
    try:
        import fcntl  # noqa: F401  (writers lock; no fcntl, no disk cache)

        chosen = trusted_directory(directory)
        _set_caches(dispatchers, chosen, what)
    except (OSError, ImportError, AttributeError, TypeError) as error:  # AttributeError: another numba
        _set_caches(dispatchers, None, what)
        warnings.warn(
            f"{what}: no disk cache for the compiled kernels ({error}); they are compiled in memory "
            "(seconds, once per process)",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )
        return CacheChoice(None, f"{type(error).__name__}: {error}")
    return CacheChoice(chosen)


def _set_caches(dispatchers: list[Any], directory: Path | None, what: str) -> None:
    """Each dispatcher's cache: a checked one in ``directory``, or numba's null cache (``None``)."""
    if directory is None:
        from numba.core.caching import NullCache

        for dispatcher in dispatchers:
            dispatcher._cache = NullCache()
        return
    for dispatcher in dispatchers:
        dispatcher._cache = disk_cache(dispatcher.py_func, directory, what)
