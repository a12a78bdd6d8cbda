"""Entry point of the ``cudss`` backend (``[project.entry-points.tsgu] cudss``)."""

from collections.abc import Callable

from tsgu_core import SolverBackend, hookimpl


@hookimpl
def tsgu_register_backends(register: Callable[[SolverBackend], None]) -> None:
    from tsgu_backends.cudss_backend.backend import CudssBackend

    register(CudssBackend())
