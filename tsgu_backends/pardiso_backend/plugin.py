"""Entry point of the ``pardiso`` backend (``[project.entry-points.tsgu] pardiso``)."""

from collections.abc import Callable

from tsgu_core import SolverBackend, hookimpl


@hookimpl
def tsgu_register_backends(register: Callable[[SolverBackend], None]) -> None:
    from tsgu_backends.pardiso_backend.backend import PardisoBackend

    register(PardisoBackend())
