"""Entry point of the ``torch`` backend (``[project.entry-points.tsgu] torch``)."""

from collections.abc import Callable

from tsgu_core import SolverBackend, hookimpl


@hookimpl
def tsgu_register_backends(register: Callable[[SolverBackend], None]) -> None:
    from tsgu_backends.torch_backend.backend import TorchBackend

    register(TorchBackend())
