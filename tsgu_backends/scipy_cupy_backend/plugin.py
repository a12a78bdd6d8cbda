"""Entry point of the ``scipy`` and ``cupy`` backends (``[project.entry-points.tsgu] scipy_cupy``)."""

from collections.abc import Callable

from tsgu_core import SolverBackend, hookimpl


@hookimpl
def tsgu_register_backends(register: Callable[[SolverBackend], None]) -> None:
    from tsgu_backends.scipy_cupy_backend.cupy_backend import CupyBackend
    from tsgu_backends.scipy_cupy_backend.scipy_backend import ScipyBackend

    register(ScipyBackend())
    register(CupyBackend())
