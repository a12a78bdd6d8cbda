"""The one plugin hook of tsgu.

A plugin is a module (or any object) with a function marked ``@hookimpl``::

    from tsgu_core import hookimpl

    @hookimpl
    def tsgu_register_backends(register):
        register(MyBackend())

and is announced to tsgu through the ``tsgu`` entry-point group of its
distribution (see ``plugins.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from tsgu_core.plugins.protocol import SolverBackend

PROJECT_NAME = "tsgu"
ENTRY_POINT_GROUP = "tsgu"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def tsgu_register_backends(register: Callable[[SolverBackend], None]) -> None:
    """Register solver backends by calling ``register(backend)`` for each."""
