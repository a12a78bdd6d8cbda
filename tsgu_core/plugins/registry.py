"""Which backends exist: plugin loading through pluggy and entry points.

Rules of this module
--------------------
* Nothing is loaded at import. The first call that needs a backend loads
  every entry point of the group ``tsgu`` once (lazily, under a lock).
* Every read and every change of the registry (loading, registering,
  unregistering, reloading, listing, getting) holds one lock: a thread never
  sees half a plugin registered, nor a backend listed that it cannot get
  as it was listed.
* Each entry point is loaded and asked for its backends on its own: a plugin
  that fails to import, whose hook raises, or whose backend breaks the
  contract is recorded with its error and does not affect any other plugin.
  The error is raised (as :class:`~tsgu_core.errors.PluginLoadError`) only
  when someone asks for that plugin's name.
* Each backend remembers the plugin and the distribution (name, version) that
  provided it.
* ``TSGU_DISABLE_PLUGIN_AUTOLOAD=1`` loads no entry point; ``TSGU_PLUGINS``
  (comma-separated module names) then names plugin modules to load instead.
  :func:`register_plugin` registers an in-process plugin at any time.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import pluggy

from tsgu_core.errors import BackendContractError, PluginLoadError, UnknownBackendError, did_you_mean
from tsgu_core.plugins import hookspecs
from tsgu_core.plugins.protocol import Availability, SolverBackend

__all__ = [
    "BackendEntry",
    "BrokenPlugin",
    "get_backend",
    "get_entry",
    "list_backends",
    "list_broken_plugins",
    "register_plugin",
    "reload_plugins",
    "unregister_plugin",
]

AUTOLOAD_ENV = "TSGU_DISABLE_PLUGIN_AUTOLOAD"
PLUGINS_ENV = "TSGU_PLUGINS"


@dataclass(frozen=True)
class BackendEntry:
    """A registered backend and where it came from.

    Attributes
    ----------
    name : str
        The backend's name.
    backend : SolverBackend
        The backend object.
    plugin : str
        The plugin that registered it (its entry-point or module name).
    distribution, version : str or None
        The installed distribution that provides the plugin, if any.
    """

    name: str
    backend: SolverBackend
    plugin: str
    distribution: str | None = None
    version: str | None = None

    def availability(self, device_type: str) -> Availability:
        """The backend's availability on ``device_type`` (never raises)."""
        if device_type not in self.backend.device_types:
            return Availability.no(f"serves device types {list(self.backend.device_types)}, not {device_type!r}")
        try:
            result = self.backend.is_available(device_type)
        except Exception as exc:  # a contract breach must not take selection down
            return Availability.no(f"is_available() raised {type(exc).__name__}: {exc}")
        if not isinstance(result, Availability):
            return Availability(bool(result), "available" if result else "unavailable (no reason given)")
        return result

    @property
    def provenance(self) -> str:
        """``"distribution version"`` or the plugin name when not installed."""
        if self.distribution:
            return f"{self.distribution} {self.version or ''}".strip()
        return f"plugin {self.plugin} (not from an installed distribution)"


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that could not be loaded, and why."""

    plugin: str
    error: str
    distribution: str | None = None
    version: str | None = None
    value: str = ""


@dataclass
class _State:
    plugin_manager: pluggy.PluginManager
    entries: dict[str, BackendEntry] = field(default_factory=dict)
    broken: dict[str, BrokenPlugin] = field(default_factory=dict)
    plugin_backends: dict[str, list[str]] = field(default_factory=dict)


_lock = threading.RLock()
_state: _State | None = None


def _new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    return pm


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def check_backend(backend: Any) -> str | None:
    """Return why ``backend`` breaks the contract, or None if it keeps it."""
    missing = [
        attr
        for attr in (
            "name",
            "device_types",
            "methods",
            "default_method",
            "priority",
            "is_available",
            "prepare",
            "solve",
        )
        if not hasattr(backend, attr)
    ]
    if missing:
        return f"backend object {backend!r} lacks {missing} (see tsgu_core.plugins.protocol.SolverBackend)"
    if not isinstance(backend.name, str) or not backend.name:
        return f"backend name must be a non-empty string, got {backend.name!r}"
    if backend.default_method not in backend.methods:
        return (
            f"backend {backend.name!r}: default_method {backend.default_method!r} "
            f"is not among its methods {sorted(backend.methods)}"
        )
    default = backend.methods[backend.default_method]
    if default.operation != "solve":
        return f"backend {backend.name!r}: default method {default.name!r} must be a square-solve method"
    if default.assumes != "general":
        return (
            f"backend {backend.name!r}: default method {default.name!r} assumes {default.assumes!r} A; "
            "a default must be correct for a general nonsymmetric A"
        )
    for key, spec in backend.methods.items():
        if spec.name != key:
            return f"backend {backend.name!r}: methods[{key!r}] is named {spec.name!r}"
    return None


def _register_into(
    state: _State,
    plugin: Any,
    plugin_name: str,
    distribution: str | None,
    version: str | None,
) -> list[str]:
    """Register ``plugin`` with pluggy and collect the backends it provides."""
    if state.plugin_manager.is_registered(plugin) or state.plugin_manager.has_plugin(plugin_name):
        raise PluginLoadError(f"a plugin named {plugin_name!r} is already registered")
    try:
        state.plugin_manager.register(plugin, name=plugin_name)
        state.plugin_manager.check_pending()  # a misspelled hook is an error, not a silently idle plugin
    except Exception as exc:
        if state.plugin_manager.is_registered(plugin):
            state.plugin_manager.unregister(plugin)
        state.broken[plugin_name] = BrokenPlugin(plugin_name, _describe(exc), distribution, version)
        return []
    others = [p for p in state.plugin_manager.get_plugins() if p is not plugin]
    caller = state.plugin_manager.subset_hook_caller("tsgu_register_backends", remove_plugins=others)
    collected: list[SolverBackend] = []

    def register(backend: SolverBackend) -> None:
        collected.append(backend)

    try:
        caller(register=register)
        problems = [p for p in map(check_backend, collected) if p]
        if problems:
            raise BackendContractError("; ".join(problems))
        if not collected:
            raise BackendContractError(
                "its tsgu_register_backends hook registered no backend (call register(backend) for each one)"
            )
        names = [b.name for b in collected]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            problems.append(f"registers backend names {duplicates} more than once")
        for backend in collected:
            if backend.name in state.entries:
                other = state.entries[backend.name]
                problems.append(f"backend name {backend.name!r} is already provided by {other.provenance}")
        if problems:
            raise BackendContractError("; ".join(problems))
    except Exception as exc:
        state.plugin_manager.unregister(plugin)
        state.broken[plugin_name] = BrokenPlugin(plugin_name, _describe(exc), distribution, version)
        return []
    for backend in collected:
        state.entries[backend.name] = BackendEntry(backend.name, backend, plugin_name, distribution, version)
    state.plugin_backends[plugin_name] = [b.name for b in collected]
    return [b.name for b in collected]


def _distribution_of_module(module_name: str) -> tuple[str | None, str | None]:
    top = module_name.split(".")[0]
    dists = importlib.metadata.packages_distributions().get(top, [])
    if not dists:
        return None, None
    try:
        return dists[0], importlib.metadata.version(dists[0])
    except importlib.metadata.PackageNotFoundError:
        return dists[0], None


def _load_entry_points(state: _State) -> None:
    for ep in importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        dist_name = dist.name if dist is not None else None
        dist_version = dist.version if dist is not None else None
        if ep.name in state.broken or state.plugin_manager.has_plugin(ep.name):
            continue  # the same distribution seen twice on sys.path
        try:
            plugin = ep.load()
        except Exception as exc:
            state.broken[ep.name] = BrokenPlugin(ep.name, _describe(exc), dist_name, dist_version, ep.value)
            continue
        _register_into(state, plugin, ep.name, dist_name, dist_version)


def _load_env_plugins(state: _State) -> None:
    for module_name in filter(None, (s.strip() for s in os.environ.get(PLUGINS_ENV, "").split(","))):
        if state.plugin_manager.has_plugin(module_name):
            continue
        dist_name, dist_version = _distribution_of_module(module_name)
        try:
            plugin = importlib.import_module(module_name)
        except Exception as exc:
            state.broken[module_name] = BrokenPlugin(module_name, _describe(exc), dist_name, dist_version, module_name)
            continue
        _register_into(state, plugin, module_name, dist_name, dist_version)


def _loaded() -> _State:
    global _state
    with _lock:
        if _state is None:
            state = _State(_new_plugin_manager())
            if os.environ.get(AUTOLOAD_ENV, "").strip().lower() not in ("1", "true", "yes"):
                _load_entry_points(state)
            _load_env_plugins(state)
            _state = state
        return _state


def reload_plugins() -> None:
    """Forget every registered plugin; the next query loads entry points again."""
    global _state
    with _lock:
        _state = None


def register_plugin(
    plugin: Any,
    name: str | None = None,
    *,
    distribution: str | None = None,
    version: str | None = None,
) -> list[str]:
    """Register an in-process plugin and return the backend names it provided.

    Parameters
    ----------
    plugin : module or object
        Anything with a ``@hookimpl``-marked ``tsgu_register_backends``.
    name : str, optional
        Plugin name (default: the object's ``__name__`` or its repr).
    distribution, version : str, optional
        Provenance to show in :func:`list_backends`.

    Raises
    ------
    PluginLoadError
        If the plugin's hook raises or a backend breaks the contract. Nothing
        of the plugin stays registered then.

    Examples
    --------
    >>> import tsgu_core
    >>> from tsgu_core.testing import DenseBackend
    >>> class Plugin:
    ...     @tsgu_core.hookimpl
    ...     def tsgu_register_backends(self, register):
    ...         register(DenseBackend(name="dense-doc"))
    >>> tsgu_core.register_plugin(Plugin(), name="doc-plugin")
    ['dense-doc']
    >>> tsgu_core.unregister_plugin("doc-plugin")
    """
    plugin_name = name or getattr(plugin, "__name__", None) or repr(plugin)
    with _lock:
        state = _loaded()
        state.broken.pop(plugin_name, None)
        names = _register_into(state, plugin, plugin_name, distribution, version)
        if plugin_name in state.broken:
            broken = state.broken.pop(plugin_name)
            raise PluginLoadError(f"plugin {plugin_name!r} could not be registered: {broken.error}")
        return names


def unregister_plugin(name: str) -> None:
    """Remove a plugin (by its plugin name) and every backend it registered."""
    with _lock:
        state = _loaded()
        state.broken.pop(name, None)
        for backend_name in state.plugin_backends.pop(name, []):
            state.entries.pop(backend_name, None)
        if state.plugin_manager.has_plugin(name):
            state.plugin_manager.unregister(name=name)


def list_backends() -> list[BackendEntry]:
    """Every registered backend, sorted by name.

    Each :class:`BackendEntry` says which plugin and distribution provided the
    backend; ``entry.availability(device_type)`` says whether it runs there.
    Plugins that failed to load are listed by :func:`list_broken_plugins`.

    Examples
    --------
    >>> from tsgu_core import list_backends
    >>> "torch" in [entry.name for entry in list_backends()]
    True
    """
    with _lock:
        state = _loaded()
        return [state.entries[name] for name in sorted(state.entries)]


def list_broken_plugins() -> list[BrokenPlugin]:
    """The plugins that failed to load, each with its error."""
    with _lock:
        state = _loaded()
        return [state.broken[name] for name in sorted(state.broken)]


def get_entry(name: str) -> BackendEntry:
    """The :class:`BackendEntry` of backend ``name``.

    Raises
    ------
    PluginLoadError
        If ``name`` is a plugin that failed to load.
    UnknownBackendError
        If nothing of that name is registered; the message lists what is.
    """
    with _lock:
        state = _loaded()
        if name in state.entries:
            return state.entries[name]
        if name in state.broken:
            broken = state.broken[name]
            source = f" from {broken.distribution} {broken.version}" if broken.distribution else ""
            raise PluginLoadError(f"plugin {name!r}{source} failed to load: {broken.error}")
        registered = sorted(state.entries)
        listing = ", ".join(f"{n} ({state.entries[n].provenance})" for n in registered) or "none"
        hint = ""
        if state.broken:
            hint = "; plugins that failed to load (one may provide it): " + ", ".join(
                f"{b.plugin} ({b.error})" for b in state.broken.values()
            )
        raise UnknownBackendError(
            f"no backend named {name!r}{did_you_mean(name, registered)}; registered backends: {listing}{hint}",
            name=name,
            registered=registered,
        )


def get_backend(name: str) -> SolverBackend:
    """The backend object registered as ``name`` (see :func:`get_entry`).

    Examples
    --------
    >>> from tsgu_core import get_backend
    >>> get_backend("torch").device_types
    ('cpu', 'cuda')
    """
    return get_entry(name).backend
