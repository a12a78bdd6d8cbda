"""The plugin system: what a backend is, how it is found, chosen and configured.

* :mod:`~tsgu_core.plugins.protocol` — the backend contract (``SolverBackend``, ``MethodSpec``, ``Option``).
* :mod:`~tsgu_core.plugins.hookspecs` — the one pluggy hook, ``tsgu_register_backends``.
* :mod:`~tsgu_core.plugins.registry` — entry-point loading, the registered backends and their provenance.
* :mod:`~tsgu_core.plugins.select` — which backend serves a request, and why.
* :mod:`~tsgu_core.plugins.options` — declared options checked and filled once.
* :mod:`~tsgu_core.plugins.info` — what a solve reports (``SolveInfo``).
* :mod:`~tsgu_core.plugins.norms` — scale-safe norms for backends and the engine.
* :mod:`~tsgu_core.plugins.kit` — the public plugin kit: scaling, restarts, nudges, augmented systems,
  CSR transposition and row pointers, report merging (what every backend needs, written once).

Imports only run downwards: this layer uses :mod:`tsgu_core.errors` and :mod:`tsgu_core.base`.
"""
