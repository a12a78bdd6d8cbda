"""tsgu: differentiable sparse linear solves for PyTorch, with solver backends as plugins.

>>> import torch, tsgu_core
>>> A = torch.eye(2, dtype=torch.float64).to_sparse_csr()
>>> tsgu_core.solve(A, torch.ones(2, dtype=torch.float64), backend="torch").round(decimals=8)
tensor([1., 1.], dtype=torch.float64)
"""

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # eager for type checkers; at run time each name loads on first use (PEP 562)
    from tsgu_core.api.determinants import diagonal_of_inverse, logdet, selected_inverse, slogdet
    from tsgu_core.api.distributed import solve_distributed
    from tsgu_core.api.factorize import Factorization, factorize
    from tsgu_core.api.lstsq import lstsq
    from tsgu_core.api.solve import solve, solve_values
    from tsgu_core.api.stochastic import Estimate, SlogdetEstimate
    from tsgu_core.api.triangular import triangular_solve
    from tsgu_core.distributions.gmrf import GaussianMarkovRandomField
    from tsgu_core.engine.autograd import SparseSolveFunction
    from tsgu_core.errors import (
        BackendContractError,
        BackendError,
        BackendUnavailableError,
        ComplexNotSupportedError,
        ConvergenceError,
        ConvergenceWarning,
        DeviceMismatchError,
        DtypeMismatchError,
        InvalidArgumentError,
        InvalidOptionError,
        LayoutError,
        NonFiniteError,
        NotPositiveDefiniteError,
        PerformanceWarning,
        PluginLoadError,
        SecondDerivativeError,
        ShapeError,
        SingularMatrixError,
        SingularMatrixWarning,
        SolveFailedError,
        StaleFactorizationError,
        StructureError,
        TransformError,
        TsguError,
        UnknownBackendError,
        UnknownMethodError,
        UnknownOptionError,
        UnsupportedDeviceError,
    )
    from tsgu_core.plugins.hookspecs import hookimpl, hookspec
    from tsgu_core.plugins.info import SolveInfo
    from tsgu_core.plugins.protocol import (
        COMMON_ITERATIVE_OPTIONS,
        Availability,
        BackendReport,
        DistributedBackend,
        MethodSpec,
        Option,
        SamplingBackend,
        SelectedInversionBackend,
        SolveOptions,
        SolverBackend,
    )
    from tsgu_core.plugins.registry import (
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
    from tsgu_core.plugins.select import Selection, explain, set_default_backend
    from tsgu_core.sparse.interop import from_cupy, from_jax, from_scipy, to_cupy, to_jax, to_scipy
    from tsgu_core.sparse.pattern import SparsePattern

_WHERE = {
    "SparseSolveFunction": "tsgu_core.engine.autograd",
    "solve_distributed": "tsgu_core.api.distributed",
    "diagonal_of_inverse": "tsgu_core.api.determinants",
    "logdet": "tsgu_core.api.determinants",
    "selected_inverse": "tsgu_core.api.determinants",
    "slogdet": "tsgu_core.api.determinants",
    "Estimate": "tsgu_core.api.stochastic",
    "SlogdetEstimate": "tsgu_core.api.stochastic",
    "BackendContractError": "tsgu_core.errors",
    "BackendError": "tsgu_core.errors",
    "BackendUnavailableError": "tsgu_core.errors",
    "ConvergenceError": "tsgu_core.errors",
    "ConvergenceWarning": "tsgu_core.errors",
    "PerformanceWarning": "tsgu_core.errors",
    "DeviceMismatchError": "tsgu_core.errors",
    "DtypeMismatchError": "tsgu_core.errors",
    "ComplexNotSupportedError": "tsgu_core.errors",
    "InvalidArgumentError": "tsgu_core.errors",
    "TransformError": "tsgu_core.errors",
    "InvalidOptionError": "tsgu_core.errors",
    "LayoutError": "tsgu_core.errors",
    "NonFiniteError": "tsgu_core.errors",
    "NotPositiveDefiniteError": "tsgu_core.errors",
    "PluginLoadError": "tsgu_core.errors",
    "SecondDerivativeError": "tsgu_core.errors",
    "ShapeError": "tsgu_core.errors",
    "SingularMatrixError": "tsgu_core.errors",
    "SingularMatrixWarning": "tsgu_core.errors",
    "SolveFailedError": "tsgu_core.errors",
    "StaleFactorizationError": "tsgu_core.errors",
    "StructureError": "tsgu_core.errors",
    "TsguError": "tsgu_core.errors",
    "UnknownBackendError": "tsgu_core.errors",
    "UnknownMethodError": "tsgu_core.errors",
    "UnknownOptionError": "tsgu_core.errors",
    "UnsupportedDeviceError": "tsgu_core.errors",
    "Factorization": "tsgu_core.api.factorize",
    "GaussianMarkovRandomField": "tsgu_core.distributions.gmrf",
    "factorize": "tsgu_core.api.factorize",
    "hookimpl": "tsgu_core.plugins.hookspecs",
    "hookspec": "tsgu_core.plugins.hookspecs",
    "SolveInfo": "tsgu_core.plugins.info",
    "from_cupy": "tsgu_core.sparse.interop",
    "from_jax": "tsgu_core.sparse.interop",
    "from_scipy": "tsgu_core.sparse.interop",
    "to_cupy": "tsgu_core.sparse.interop",
    "to_jax": "tsgu_core.sparse.interop",
    "to_scipy": "tsgu_core.sparse.interop",
    "lstsq": "tsgu_core.api.lstsq",
    "SparsePattern": "tsgu_core.sparse.pattern",
    "COMMON_ITERATIVE_OPTIONS": "tsgu_core.plugins.protocol",
    "Availability": "tsgu_core.plugins.protocol",
    "BackendReport": "tsgu_core.plugins.protocol",
    "DistributedBackend": "tsgu_core.plugins.protocol",
    "MethodSpec": "tsgu_core.plugins.protocol",
    "Option": "tsgu_core.plugins.protocol",
    "SamplingBackend": "tsgu_core.plugins.protocol",
    "SelectedInversionBackend": "tsgu_core.plugins.protocol",
    "SolveOptions": "tsgu_core.plugins.protocol",
    "SolverBackend": "tsgu_core.plugins.protocol",
    "BackendEntry": "tsgu_core.plugins.registry",
    "BrokenPlugin": "tsgu_core.plugins.registry",
    "get_backend": "tsgu_core.plugins.registry",
    "get_entry": "tsgu_core.plugins.registry",
    "list_backends": "tsgu_core.plugins.registry",
    "list_broken_plugins": "tsgu_core.plugins.registry",
    "register_plugin": "tsgu_core.plugins.registry",
    "reload_plugins": "tsgu_core.plugins.registry",
    "unregister_plugin": "tsgu_core.plugins.registry",
    "Selection": "tsgu_core.plugins.select",
    "explain": "tsgu_core.plugins.select",
    "set_default_backend": "tsgu_core.plugins.select",
    "solve": "tsgu_core.api.solve",
    "solve_values": "tsgu_core.api.solve",
    "triangular_solve": "tsgu_core.api.triangular",
}
"""Public name -> the module that defines it: `import tsgu_core` (and `tsgu --help`) imports no torch."""


class _LazyPackage(types.ModuleType):
    """The package's module type: a public function shadows the submodule of the same name.

    ``tsgu_core.solve`` is the function even after ``tsgu_core.solve`` the module has been imported (the import
    system sets a package attribute for each submodule; the eager imports used to overwrite it).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _WHERE.get(name) == f"{__name__}.{name}":
            return
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> Any:
        module = _WHERE.get(name)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        super().__setattr__(name, value)
        return value

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(_WHERE))


sys.modules[__name__].__class__ = _LazyPackage

__all__ = [
    "COMMON_ITERATIVE_OPTIONS",
    "Availability",
    "BackendContractError",
    "BackendEntry",
    "BackendError",
    "BackendReport",
    "BackendUnavailableError",
    "BrokenPlugin",
    "ComplexNotSupportedError",
    "ConvergenceError",
    "ConvergenceWarning",
    "DeviceMismatchError",
    "DistributedBackend",
    "DtypeMismatchError",
    "Estimate",
    "Factorization",
    "GaussianMarkovRandomField",
    "InvalidArgumentError",
    "InvalidOptionError",
    "LayoutError",
    "MethodSpec",
    "NonFiniteError",
    "NotPositiveDefiniteError",
    "Option",
    "PerformanceWarning",
    "PluginLoadError",
    "SamplingBackend",
    "SecondDerivativeError",
    "SelectedInversionBackend",
    "Selection",
    "ShapeError",
    "SingularMatrixError",
    "SingularMatrixWarning",
    "SlogdetEstimate",
    "SolveFailedError",
    "SolveInfo",
    "SolveOptions",
    "SolverBackend",
    "SparsePattern",
    "SparseSolveFunction",
    "StaleFactorizationError",
    "StructureError",
    "TransformError",
    "TsguError",
    "UnknownBackendError",
    "UnknownMethodError",
    "UnknownOptionError",
    "UnsupportedDeviceError",
    "diagonal_of_inverse",
    "explain",
    "factorize",
    "from_cupy",
    "from_jax",
    "from_scipy",
    "get_backend",
    "get_entry",
    "hookimpl",
    "hookspec",
    "list_backends",
    "list_broken_plugins",
    "logdet",
    "lstsq",
    "register_plugin",
    "reload_plugins",
    "selected_inverse",
    "set_default_backend",
    "slogdet",
    "solve",
    "solve_distributed",
    "solve_values",
    "to_cupy",
    "to_jax",
    "to_scipy",
    "triangular_solve",
    "unregister_plugin",
]

try:  # the installed version, without importing anything heavy
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("tsgu")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"
