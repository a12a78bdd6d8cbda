"""Entry point of the ``jax`` backend (``[project.entry-points.tsgu] jax``)."""

from collections.abc import Callable

from tsgu_core import SolverBackend, hookimpl


@hookimpl
def tsgu_register_backends(register: Callable[[SolverBackend], None]) -> None:
    from tsgu_backends.jax_backend.backend import JaxBackend

    register(JaxBackend())
