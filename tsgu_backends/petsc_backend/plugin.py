"""Entry point of the ``petsc`` backend (``[project.entry-points.tsgu] petsc``)."""

from collections.abc import Callable

from tsgu_core import SolverBackend, hookimpl


@hookimpl
def tsgu_register_backends(register: Callable[[SolverBackend], None]) -> None:
    from tsgu_backends.petsc_backend.backend import PetscBackend

    register(PetscBackend())
