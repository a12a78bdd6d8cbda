"""tsgu: differentiable sparse linear solves for PyTorch, with solver backends as plugins.

>>> import torch, tsgu_core
>>> A = torch.eye(2, dtype=torch.float64).to_sparse_csr()
>>> tsgu_core.solve(A, torch.ones(2, dtype=torch.float64), backend="torch").round(decimals=8)
tensor([1., 1.], dtype=torch.float64)
"""

from tsgu_core.autograd import SparseSolveFunction
from tsgu_core.distributed import solve_distributed
from tsgu_core.errors import (
    BackendContractError,
    BackendError,
    BackendUnavailableError,
    ConvergenceError,
    ConvergenceWarning,
    DeviceMismatchError,
    DtypeMismatchError,
    InvalidArgumentError,
    InvalidOptionError,
    LayoutError,
    NonFiniteError,
    PluginLoadError,
    SecondDerivativeError,
    ShapeError,
    SingularMatrixError,
    SolveFailedError,
    StaleFactorizationError,
    StructureError,
    TsguError,
    UnknownBackendError,
    UnknownMethodError,
    UnknownOptionError,
    UnsupportedDeviceError,
)
from tsgu_core.factorize import Factorization, factorize
from tsgu_core.hookspecs import hookimpl, hookspec
from tsgu_core.info import SolveInfo
from tsgu_core.lstsq import lstsq
from tsgu_core.pattern import SparsePattern
from tsgu_core.protocol import (
    COMMON_ITERATIVE_OPTIONS,
    Availability,
    BackendReport,
    DistributedBackend,
    MethodSpec,
    Option,
    SolveOptions,
    SolverBackend,
)
from tsgu_core.registry import (
    BackendEntry,
    BrokenPlugin,
    get_backend,
    get_entry,
    list_backends,
    list_broken_plugins,
    register_plugin,
    reload_plugins,
    unregister_plugin,
)
from tsgu_core.select import Selection, explain, set_default_backend
from tsgu_core.solve import solve, solve_values
from tsgu_core.triangular import triangular_solve

__all__ = [
    "COMMON_ITERATIVE_OPTIONS",
    "Availability",
    "BackendContractError",
    "BackendEntry",
    "BackendError",
    "BackendReport",
    "BackendUnavailableError",
    "BrokenPlugin",
    "ConvergenceError",
    "ConvergenceWarning",
    "DeviceMismatchError",
    "DistributedBackend",
    "DtypeMismatchError",
    "Factorization",
    "InvalidArgumentError",
    "InvalidOptionError",
    "LayoutError",
    "MethodSpec",
    "NonFiniteError",
    "Option",
    "PluginLoadError",
    "SecondDerivativeError",
    "Selection",
    "ShapeError",
    "SingularMatrixError",
    "SolveFailedError",
    "SolveInfo",
    "SolveOptions",
    "SolverBackend",
    "SparsePattern",
    "SparseSolveFunction",
    "StaleFactorizationError",
    "StructureError",
    "TsguError",
    "UnknownBackendError",
    "UnknownMethodError",
    "UnknownOptionError",
    "UnsupportedDeviceError",
    "explain",
    "factorize",
    "get_backend",
    "get_entry",
    "hookimpl",
    "hookspec",
    "list_backends",
    "list_broken_plugins",
    "lstsq",
    "register_plugin",
    "reload_plugins",
    "set_default_backend",
    "solve",
    "solve_distributed",
    "solve_values",
    "triangular_solve",
    "unregister_plugin",
]

try:  # the installed version, without importing anything heavy
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("tsgu")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"
