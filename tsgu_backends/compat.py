"""Drop-in functions with the signatures of the project tsgu replaces (torchsparsegradutils), on tsgu.

Same names, arguments and shapes as that project's documented functions, so
code written for it runs unchanged — but every call goes through tsgu's one
gradient rule and its checks. Where the old behaviour was a defect, tsgu's
behaviour wins, and each docstring says where:

* the transpose solve of the backward pass uses ``Aᵀ`` — the old default
  handed the transpose solver ``A`` and got 30 % wrong gradients on
  nonsymmetric matrices;
* options are never dropped: one the chosen method does not accept raises
  ``UnknownOptionError`` (the old functions filtered them away silently);
  this includes tolerance options given to the direct ``spsolve``, which the
  old ``sparse_solve_c4t`` ignored;
* non-convergence raises ``ConvergenceError`` (the old ones returned the
  unconverged iterate as a solution), because the true residual of every
  solve is checked;
* iterative methods take multiple right-hand sides (the old CuPy/SciPy
  wrapper refused them);
* second derivatives through a sparse ``A`` built by torch's constructors
  raise ``SecondDerivativeError``: those constructors drop the second-order
  term, so the old functions' Hessian-vector products were wrong — in
  torchsparsegradutils' own higher-order tests, 109 % (SPD, ``linear_cg`` and
  ``minres``) and 132 % (nonsymmetric, ``bicgstab``) off a truly dense
  reference, which its tests missed because their "dense reference" went
  through the same constructor (``scripts/anchor-second-derivative.py``).
  :func:`tsgu_core.solve_values` takes ``A``'s values as a dense tensor and
  gives exact derivatives of any order (1e-16 in the same measurement).

A user-supplied ``transpose_solve(A, G)`` callable is called with ``A``
itself and must return ``Y`` with ``Aᵀ Y = G`` — exactly what the old
docstrings promised it. Without one, ``solve`` is called with ``Aᵀ``.

Solver callables and their tolerance
------------------------------------
tsgu checks every answer by its true residual ``‖b − A x‖`` per column, but
it cannot know a foreign callable's stopping rule. The policy, for the
forward solve and the backward's transpose solve alike:

1. **The callable declares a tolerance** (see :func:`declared_tolerance`: a
   keyword of the call such as ``rtol``/``tol``/``atol``, a ``settings``
   object's ``cg_tolerance``/``reltol``/``abstol``, or the same in the
   callable's own defaults): each column must reach
   ``‖b − A x‖ ≤ max(rtol·‖b‖, atol)``, with ``rtol`` at least 100 machine
   epsilons of the dtype (what a float32 residual can certify); a miss raises
   :class:`~tsgu_core.errors.ConvergenceError`.
2. **It declares none**: an answer above tsgu's default ``rtol`` (1e-5 for
   float32, 1e-8 for float64) is accepted with a
   :class:`~tsgu_core.errors.ConvergenceWarning` that states the measured
   residual; a non-finite answer, or a relative residual above 1e-2
   (:data:`UNUSABLE_RESIDUAL`), raises ``ConvergenceError``.
3. **``on_failure=`` given to the drop-in** (``"raise"``, ``"warn"``,
   ``"ignore"``; it is not passed to the callable) overrides both: tsgu's own
   check at the declared tolerance, or tsgu's default one, with that choice.

Named methods (``solve="cg"`` and the like) are tsgu's own and follow tsgu's
policy: ``rtol``/``tol``, ``atol`` and ``maxiter`` as given, else tsgu's
defaults, and ``on_failure="raise"``.

Where this module belongs
-------------------------
In ``tsgu_backends``, beside the backends it names, not in the core: its
methods are the built-in backends' (``torch``, ``scipy``, ``cupy``, ``jax``)
chosen by name, and its solver callables speak SciPy's, CuPy's and JAX's
types. It is a facade over public API only — :func:`tsgu_core.solve`,
:func:`tsgu_core.triangular_solve`, the converters of
:mod:`tsgu_core.sparse.interop`, and for dense JAX arrays
:func:`tsgu_backends.jax_backend.precision`, ``to_jax`` and ``from_jax`` —
so no backend's internals are tied to it.
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch

import tsgu_core
from tsgu_core import BackendReport, ConvergenceWarning, MethodSpec, SolveOptions, triangular_solve
from tsgu_core.errors import InvalidArgumentError
from tsgu_core.plugins.options import default_rtol
from tsgu_core.sparse.interop import from_cupy, from_jax, from_scipy, to_cupy, to_jax, to_scipy

__all__ = [
    "LinearCGSettings",
    "bicgstab",
    "c2t_coo",
    "c2t_csr",
    "j2t",
    "j2t_coo",
    "j2t_csr",
    "linear_cg",
    "minres",
    "sparse_generic_lstsq",
    "sparse_generic_solve",
    "sparse_solve_c4t",
    "sparse_solve_j4t",
    "sparse_triangular_solve",
    "t2c_coo",
    "t2c_csr",
    "t2j",
    "t2j_coo",
    "t2j_csr",
]

Solver = Callable[..., Any]


# --- torch-level solver callables for sparse_generic_solve ---------------------------------------


@dataclass(frozen=True)
class LinearCGSettings:
    """Settings of :func:`linear_cg`: ``max_cg_iterations`` and ``cg_tolerance`` (relative)."""

    max_cg_iterations: int = 1000
    cg_tolerance: float = 1e-5


def _krylov(method: str, A: torch.Tensor, B: torch.Tensor, rtol: float, maxiter: int) -> torch.Tensor:
    """The torch backend's ``method`` through :func:`tsgu_core.solve`; the iterate is returned even unconverged.

    These are solver callables: the drop-in that calls them checks the answer's residual by its own policy.
    """
    with torch.no_grad():
        X = tsgu_core.solve(
            A if A.layout == torch.sparse_csr else A.coalesce(),
            B,
            backend="torch",
            method=method,
            rtol=rtol,
            maxiter=maxiter,
            on_failure="ignore",
        )
    return cast(torch.Tensor, X)


_DEFAULT_CG = LinearCGSettings()


def linear_cg(A: torch.Tensor, B: torch.Tensor, settings: LinearCGSettings = _DEFAULT_CG) -> torch.Tensor:
    """Conjugate gradients on torch tensors (for :func:`sparse_generic_solve`); ``A`` must be SPD."""
    return _krylov("cg", A, B, settings.cg_tolerance, settings.max_cg_iterations)


def bicgstab(A: torch.Tensor, B: torch.Tensor, rtol: float = 1e-8, maxiter: int = 1000) -> torch.Tensor:
    """BiCGSTAB on torch tensors (for :func:`sparse_generic_solve`); any invertible ``A``."""
    return _krylov("bicgstab", A, B, rtol, maxiter)


def minres(A: torch.Tensor, B: torch.Tensor, rtol: float = 1e-8, maxiter: int = 1000) -> torch.Tensor:
    """MINRES on torch tensors (for :func:`sparse_generic_solve`); ``A`` must be symmetric."""
    return _krylov("minres", A, B, rtol, maxiter)


# --- a backend made of user callables -------------------------------------------------------------


class _CallableBackend:
    """A one-off backend around a user's ``solve`` (and ``transpose_solve``) callable.

    ``to_library``/``from_library`` convert ``A`` and the right-hand sides to
    what the callables expect (torch, SciPy/CuPy, or JAX); ``by_column`` calls
    them once per column, for libraries whose solvers take vectors.
    """

    default_method = "callable"
    priority = 0

    def __init__(
        self,
        solve: Solver,
        transpose_solve: Solver | None,
        keywords: dict[str, Any],
        *,
        device_types: tuple[str, ...],
        matrix: Callable[[torch.Tensor], Any],
        to_library: Callable[[torch.Tensor], Any],
        from_library: Callable[[Any, torch.Tensor], torch.Tensor],
        by_column: bool,
        label: Callable[..., Any] | None = None,
        warn_above_default: bool = False,
    ):
        named = label if label is not None else solve
        self.name = f"callable:{getattr(named, '__name__', type(named).__name__)}"
        self._warn = warn_above_default
        self.device_types = device_types
        self.methods = {
            "callable": MethodSpec(
                "callable", "iterative", "general", {}, "a user-supplied solve callable", complex=True
            )
        }
        self._solve, self._transpose_solve, self._keywords = solve, transpose_solve, keywords
        self._matrix, self._to, self._from, self._by_column = matrix, to_library, from_library, by_column

    def is_available(self, device_type: str) -> Any:
        from tsgu_core import Availability

        return Availability.yes()

    def prepare(self, A: torch.Tensor, method: str, options: SolveOptions) -> dict[str, Any]:
        return {"A": A, "matrix": self._matrix(A), "transposed": None}

    def solve(
        self, state: dict[str, Any], B: torch.Tensor, *, transpose: bool, x0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, BackendReport]:
        if transpose and self._transpose_solve is not None:
            function, matrix = self._transpose_solve, state["matrix"]  # promised: it solves Aᵀ Y = G itself
        else:
            function, matrix = self._solve, state["matrix"]
            if transpose:
                if state["transposed"] is None:
                    A = state["A"]
                    transposed = A.t().coalesce() if A.layout == torch.sparse_coo else A.t().to_sparse_csr()
                    state["transposed"] = self._matrix(transposed)
                matrix = state["transposed"]

        def call(rhs: torch.Tensor) -> torch.Tensor:
            result = function(matrix, self._to(rhs), **self._keywords)
            if isinstance(result, tuple):
                result = result[0]
            return self._from(result, rhs)

        X = torch.stack([call(B[:, j]) for j in range(B.shape[1])], dim=1) if self._by_column else call(B)
        X = X.to(B.dtype).reshape(B.shape)
        if self._warn:
            self._warn_if_inaccurate(state, B, X, transpose)
        return X, BackendReport()

    def _warn_if_inaccurate(self, state: dict[str, Any], B: torch.Tensor, X: torch.Tensor, transpose: bool) -> None:
        """Warn (ConvergenceWarning) when an answer is usable but above tsgu's default tolerance."""
        A = state["A"]
        if transpose:
            if state.get("A_t") is None:
                state["A_t"] = A.t().coalesce() if A.layout == torch.sparse_coo else A.t().to_sparse_csr()
            A = state["A_t"]
        with torch.no_grad():
            scale = B.abs().amax(dim=0).clamp_min(torch.finfo(B.dtype).tiny)  # scale-free norms
            r_norm = torch.linalg.vector_norm((B - A @ X) / scale, dim=0)
            b_norm = torch.linalg.vector_norm(B / scale, dim=0)
            relative = torch.where(b_norm > 0, r_norm / b_norm.clamp_min(torch.finfo(B.dtype).tiny), r_norm)
        worst = float(relative.max()) if relative.numel() else 0.0
        default = default_rtol(B.dtype)
        if math.isfinite(worst) and default < worst < UNUSABLE_RESIDUAL:
            which = "transpose solve (backward pass)" if transpose else "solve"
            warnings.warn(
                f"{self.name}: the {which} has true relative residual {worst:.3g}, above tsgu's default "
                f"rtol={default:g} for {B.dtype}; accepted because the callable declares no tolerance tsgu can "
                f"read (it raises above {UNUSABLE_RESIDUAL:g}). Pass the callable's tolerance (rtol=, tol=, "
                "settings=...) to have it checked, or on_failure='raise' to make this an error",
                ConvergenceWarning,
                stacklevel=2,
            )


UNUSABLE_RESIDUAL = 1e-2
"""A callable that declares no tolerance: an answer above this true relative residual raises."""

CERTIFIABLE_EPS = 100
"""A declared relative tolerance is checked as at least this many machine epsilons of the dtype."""

_RELATIVE = ("rtol", "tol", "reltol", "tolerance", "cg_tolerance")
_ABSOLUTE = ("atol", "abstol")


def _real(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


def _first(source: Any, names: tuple[str, ...], *, mapping: bool) -> tuple[float, str] | None:
    for name in names:
        value = source.get(name) if mapping else getattr(source, name, None)
        real = _real(value)
        if real is not None:
            return float(real), name
    return None


def _defaults(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # builtins and some C functions have no signature
        return {}
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


@dataclass(frozen=True)
class DeclaredTolerance:
    """The tolerance a solver callable declares: ``‖b − A x‖ ≤ max(rtol·‖b‖, atol)`` per column.

    ``source`` says where it was found, e.g. ``"settings.cg_tolerance"``.
    """

    rtol: float
    atol: float
    source: str


def declared_tolerance(solve: Callable[..., Any], keywords: dict[str, Any]) -> DeclaredTolerance | None:
    """The residual tolerance a solver callable declares, or ``None`` if it declares none tsgu can read.

    Looked up, for the relative and the absolute tolerance separately, first
    in the keywords of the call, then in their ``settings`` object, then in
    the callable's own defaults (a parameter's default, or the attributes of
    its default ``settings``). Relative names: ``rtol``, ``tol``, ``reltol``,
    ``tolerance``, ``cg_tolerance``; absolute: ``atol``, ``abstol``. A
    tolerance on something other than the residual (e.g. MINRES's
    ``minres_tolerance``, a relative-update criterion) is not one.

    Examples
    --------
    >>> from tsgu_backends.compat import LinearCGSettings, declared_tolerance, linear_cg
    >>> declared_tolerance(linear_cg, {"settings": LinearCGSettings(cg_tolerance=1e-6)})
    DeclaredTolerance(rtol=1e-06, atol=0.0, source='settings.cg_tolerance')
    >>> declared_tolerance(lambda A, b: b, {}) is None
    True
    """
    defaults = _defaults(solve)
    places: list[tuple[Any, bool, str]] = [(keywords, True, "")]
    if keywords.get("settings") is not None:
        places.append((keywords["settings"], False, "settings."))
    places.append((defaults, True, "default "))
    if defaults.get("settings") is not None:
        places.append((defaults["settings"], False, "default settings."))
    found: dict[str, tuple[float, str]] = {}
    for kind, names in (("rtol", _RELATIVE), ("atol", _ABSOLUTE)):
        for source, mapping, prefix in places:
            hit = _first(source, names, mapping=mapping)
            if hit is not None:
                found[kind] = (hit[0], prefix + hit[1])
                break
    if not found:
        return None
    rtol, atol = found.get("rtol", (0.0, "")), found.get("atol", (0.0, ""))
    return DeclaredTolerance(rtol[0], atol[0], " and ".join(where for _, where in (rtol, atol) if where))


def _policy(solve: Callable[..., Any], keywords: dict[str, Any], dtype: torch.dtype) -> tuple[dict[str, Any], bool]:
    """The options for the core's residual check of a callable's answers, and whether to warn above the default.

    Pops ``on_failure`` from ``keywords`` (it is tsgu's, not the callable's).
    See the module docstring for the policy.
    """
    on_failure = keywords.pop("on_failure", None)
    declared = declared_tolerance(solve, keywords)
    floor = CERTIFIABLE_EPS * torch.finfo(dtype).eps  # a callable stops on its own (recursive) residual
    tolerance = {} if declared is None else {"rtol": max(declared.rtol, floor), "atol": declared.atol}
    if on_failure is not None:  # the caller's explicit choice: tsgu's own check at the declared or default tolerance
        return {**tolerance, "on_failure": on_failure}, False
    if declared is not None:
        return {**tolerance, "on_failure": "raise"}, False
    return {"rtol": UNUSABLE_RESIDUAL, "atol": 0.0, "on_failure": "raise"}, True


def _method_keywords(keywords: dict[str, Any]) -> dict[str, Any]:
    """The old functions' ``tol`` is tsgu's (and SciPy's) ``rtol``; everything else passes unchanged."""
    keywords = dict(keywords)
    if "tol" in keywords:
        if "rtol" in keywords:
            raise InvalidArgumentError("pass either tol or rtol, not both")
        keywords["rtol"] = keywords.pop("tol")
    return keywords


# --- the solve functions ------------------------------------------------------------------------


def sparse_generic_solve(
    A: torch.Tensor,
    B: torch.Tensor,
    solve: Solver | str | None = None,
    transpose_solve: Solver | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    r"""Sparse solve with iterative methods and sparse-aware gradients (old signature, tsgu underneath).

    ``solve`` is a torch-level callable ``solve(A, B, **kwargs) -> X`` (e.g.
    :func:`linear_cg`, :func:`bicgstab`, :func:`minres`) or the name of a
    method of tsgu's ``torch`` backend (``"cg"``, ``"bicgstab"``,
    ``"minres"``, ``"gmres"``). ``transpose_solve(A, G, **kwargs)`` must solve
    ``Aᵀ Y = G``; without it ``solve`` gets ``Aᵀ``. Gradients: ``∂L/∂B = A⁻ᵀG``,
    ``∂L/∂A = −(A⁻ᵀG) Xᵀ`` at ``A``'s stored entries. Complex ``A`` and ``B``
    (same dtype) are accepted where the method is (the torch backend's all) and
    by a callable; gradients then follow PyTorch's convention (``A⁻ᴴG``,
    ``−(A⁻ᴴG) Xᴴ``), and ``transpose_solve`` must still solve the plain
    ``Aᵀ Y = G`` (tsgu conjugates around it).

    Differences from the old function: the default is GMRES (the old default,
    MINRES, assumes a symmetric ``A``); a callable's answer is checked by its
    true residual, forward and backward, by the policy of the module
    docstring (its own declared tolerance; if it declares none, a
    :class:`~tsgu_core.errors.ConvergenceWarning` above tsgu's default and an
    error above 1e-2; ``on_failure=`` overrides); ``A`` and ``B`` of different
    dtypes are an error, not a warning.

    Second derivatives (``create_graph=True``) with respect to parameters
    that *build* ``A`` through ``torch.sparse_coo_tensor``/``sparse_csr_tensor``
    raise :class:`~tsgu_core.errors.SecondDerivativeError`: torch's sparse
    constructors drop the second-order term, and the old function returned
    Hessian-vector products 109–132 % off. Pass the values as a dense tensor
    to :func:`tsgu_core.solve_values` instead — exact to any order::

        values = build_values(theta)               # dense (nnz,), in A's coalesced order
        X = tsgu_core.solve_values(A_pattern, values, B)
        (g,) = torch.autograd.grad(loss(X), theta, create_graph=True)

    Examples
    --------
    >>> import torch
    >>> from tsgu_backends.compat import sparse_generic_solve, linear_cg, bicgstab, LinearCGSettings
    >>> indices = torch.tensor([[0, 0, 1, 1, 2], [0, 1, 0, 1, 2]])
    >>> values = torch.tensor([4.0, -1.0, -1.0, 4.0, 2.0])
    >>> A = torch.sparse_coo_tensor(indices, values, (3, 3))
    >>> B = torch.tensor([1.0, 2.0, 3.0])
    >>> sparse_generic_solve(A, B, solve=linear_cg).shape
    torch.Size([3])
    >>> sparse_generic_solve(A, torch.randn(3, 5), solve=bicgstab).shape
    torch.Size([3, 5])
    >>> settings = LinearCGSettings(max_cg_iterations=1000, cg_tolerance=1e-6)
    >>> x = sparse_generic_solve(A, B, solve=linear_cg, settings=settings)
    >>> _ = A.requires_grad_(True), B.requires_grad_(True)
    >>> sparse_generic_solve(A, B).sum().backward()
    >>> A.grad.is_sparse
    True
    """
    if solve is None or isinstance(solve, str):
        name = {"linear_cg": "cg"}.get(solve or "gmres", solve or "gmres")
        return cast(torch.Tensor, tsgu_core.solve(A, B, backend="torch", method=name, **_method_keywords(kwargs)))
    kwargs = dict(kwargs)
    check, warn = _policy(solve, kwargs, A.dtype)
    backend = _CallableBackend(
        solve,
        transpose_solve,
        kwargs,
        device_types=("cpu", "cuda"),
        matrix=lambda M: M,
        to_library=lambda t: t,
        from_library=lambda x, like: x.to(like.device),
        by_column=False,
        warn_above_default=warn,
    )
    return cast(torch.Tensor, tsgu_core.solve(A, B, backend=backend, **check))


def sparse_solve_c4t(
    A: torch.Tensor,
    B: torch.Tensor,
    solve: Solver | str | None = None,
    transpose_solve: Solver | str | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Sparse solve through SciPy (CPU tensors) or CuPy (CUDA tensors) (old signature, tsgu underneath).

    ``solve`` is ``"cg"``, ``"cgs"``, ``"minres"``, ``"gmres"``, ``"spsolve"``
    (or any method of tsgu's ``scipy``/``cupy`` backend), or a callable
    ``solve(A_sp, b, **kwargs)`` taking a SciPy/CuPy matrix and one column.
    ``transpose_solve`` may name the same kind of method or be a callable that
    solves ``Aᵀ y = g`` given ``A`` (the plain transpose, also for complex
    ``A``: every method of the backends but ``minres`` accepts complex).

    Differences from the old function: the default is SuperLU (``"splu"``),
    factorized once and reused by the backward pass for one or many
    right-hand sides; iterative methods take many right-hand sides;
    ``tol`` means ``rtol`` and an option the method does not accept raises —
    including ``tol``/``atol``/``maxiter`` given to the direct ``"spsolve"``,
    which the old function ignored (drop them, or choose an iterative
    method); the transpose solve uses ``Aᵀ``; the result is checked by its
    residual (a callable ``solve`` by the policy of the module docstring).

    Examples
    --------
    >>> import torch
    >>> from tsgu_backends.compat import sparse_solve_c4t
    >>> idx = torch.tensor([[0, 1, 1], [0, 0, 1]])
    >>> val = torch.tensor([2.0, -1.0, 2.0], dtype=torch.float64)
    >>> A = torch.sparse_coo_tensor(idx, val, (2, 2))
    >>> b = torch.tensor([1.0, 3.0], dtype=torch.float64)
    >>> sparse_solve_c4t(A, b).shape
    torch.Size([2])
    >>> x_cg = sparse_solve_c4t(A, b, solve="gmres", tol=1e-8)
    >>> sparse_solve_c4t(A, torch.randn(2, 3, dtype=torch.float64), solve="spsolve").shape
    torch.Size([2, 3])
    """
    backend_name = "cupy" if A.device.type == "cuda" else "scipy"
    if isinstance(transpose_solve, str) and transpose_solve != solve:
        raise InvalidArgumentError(
            f"transpose_solve={transpose_solve!r} differs from solve={solve!r}: tsgu's backward reuses the forward "
            "method on Aᵀ (and its factorization); pass a callable for a different transpose solver"
        )
    if solve is None or isinstance(solve, str):
        return cast(
            torch.Tensor,
            tsgu_core.solve(A, B, backend=backend_name, method=solve or "splu", **_method_keywords(kwargs)),
        )
    cuda = A.device.type == "cuda"

    def to_library(t: torch.Tensor) -> Any:
        if cuda:
            import cupy

            return cupy.from_dlpack(t.contiguous())
        return t.detach().numpy()

    def from_library(x: Any, like: torch.Tensor) -> torch.Tensor:
        return torch.from_dlpack(x) if cuda else torch.from_numpy(x)

    kwargs = dict(kwargs)
    check, warn = _policy(solve, kwargs, A.dtype)
    backend = _CallableBackend(
        solve,
        transpose_solve if callable(transpose_solve) else None,
        kwargs,
        device_types=("cuda",) if cuda else ("cpu",),
        matrix=lambda M: (to_cupy(M) if cuda else to_scipy(M, matrix=True)).tocsr(),
        to_library=to_library,
        from_library=from_library,
        by_column=True,
        warn_above_default=warn,
    )
    return cast(torch.Tensor, tsgu_core.solve(A, B, backend=backend, **check))


def sparse_solve_j4t(
    A: torch.Tensor,
    B: torch.Tensor,
    solve: Solver | str | None = None,
    transpose_solve: Solver | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Sparse solve with JAX's solvers (old signature, tsgu underneath).

    ``solve`` is a method of tsgu's ``jax`` backend (``"bicgstab"``, the
    default as before, ``"gmres"``, ``"cg"``, ``"spsolve"``) or a callable
    ``solve(A_jax, b, **kwargs) -> (x, info)`` like
    ``jax.scipy.sparse.linalg.bicgstab``, given a JAX BCOO matrix and one
    column (inside a float64 scope for float64 and complex128 tensors). Complex
    ``A`` and ``B`` are accepted by every named method and by a callable.

    Differences from the old function: the default transpose solve uses
    ``Aᵀ`` (the old default transposed twice: 27–33 % wrong gradients);
    each column of ``B`` is its own Krylov solve (the old one flattened them
    into one, with 8-column gradients 1e7 off); float64 is scoped to the
    call; the result is checked by its residual.

    Examples
    --------
    >>> import torch
    >>> from tsgu_backends.compat import sparse_solve_j4t
    >>> A = torch.tensor([[3.0, 1.0], [-1.0, 2.0]], dtype=torch.float64).to_sparse_csr()
    >>> sparse_solve_j4t(A, torch.ones(2, dtype=torch.float64), tol=1e-10).shape
    torch.Size([2])
    """
    if solve is None or isinstance(solve, str):
        return cast(
            torch.Tensor, tsgu_core.solve(A, B, backend="jax", method=solve or "bicgstab", **_method_keywords(kwargs))
        )
    from tsgu_backends.jax_backend import precision

    def call_in_scope(function: Solver) -> Solver:
        def scoped(matrix: Any, rhs: Any, **keywords: Any) -> Any:
            with precision(A.dtype):
                result = function(matrix, t2j(rhs), **keywords)
                result = result[0] if isinstance(result, tuple) else result
                return j2t(result).clone()

        return scoped

    def matrix(M: torch.Tensor) -> Any:
        with precision(M.dtype):
            return t2j_coo(M)

    kwargs = dict(kwargs)
    check, warn = _policy(solve, kwargs, A.dtype)
    backend = _CallableBackend(
        call_in_scope(solve),
        call_in_scope(transpose_solve) if transpose_solve is not None else None,
        kwargs,
        device_types=("cpu", "cuda"),
        matrix=matrix,
        to_library=lambda t: t,
        from_library=lambda x, like: x,
        by_column=True,
        label=solve,
        warn_above_default=warn,
    )
    return cast(torch.Tensor, tsgu_core.solve(A, B, backend=backend, **check))


def sparse_triangular_solve(
    A: torch.Tensor, B: torch.Tensor, upper: bool = True, unitriangular: bool = False, transpose: bool = False
) -> torch.Tensor:
    """Sparse triangular solve (old signature), through :func:`tsgu_core.triangular_solve`.

    Difference: ``A`` is checked to be triangular on the declared side in the
    forward pass (the old function found out only in backward).

    >>> import torch
    >>> from tsgu_backends.compat import sparse_triangular_solve
    >>> L = torch.tensor([[2.0, 0.0], [1.0, 4.0]], dtype=torch.float64).to_sparse_csr()
    >>> sparse_triangular_solve(L, torch.tensor([2.0, 9.0], dtype=torch.float64), upper=False)
    tensor([1., 2.], dtype=torch.float64)
    """
    return triangular_solve(A, B, upper=upper, unit_diagonal=unitriangular, transpose=transpose)


def sparse_generic_lstsq(
    A: torch.Tensor,
    B: torch.Tensor,
    lstsq: str | None = None,
    transpose_lstsq: str | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Sparse least squares for a tall ``A`` (old signature), through :func:`tsgu_core.lstsq`.

    ``lstsq`` names a least-squares method (``"lsmr"``, ``"lsqr"``,
    ``"augmented_splu"`` of the scipy backend, ``"lsqr"`` of torch); default:
    tsgu's choice. Differences: the gradient includes the residual term, and an
    inaccurate solution raises — the old function returned a 99.6 % wrong
    answer at condition number 1e4 without a word.

    >>> import torch
    >>> from tsgu_backends.compat import sparse_generic_lstsq
    >>> A = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]], dtype=torch.float64).to_sparse_csr()
    >>> sparse_generic_lstsq(A, torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64), rtol=1e-12).shape
    torch.Size([2])
    """
    if transpose_lstsq is not None and transpose_lstsq != lstsq:
        raise InvalidArgumentError(
            "tsgu's least-squares gradient uses the forward method; transpose_lstsq must equal lstsq"
        )
    return cast(torch.Tensor, tsgu_core.lstsq(A, B, method=lstsq, **_method_keywords(kwargs)))


# --- converters: the old names, thin aliases of tsgu_core.sparse.interop ------------------------------


def t2c_coo(A: torch.Tensor) -> Any:
    """A torch COO tensor as a SciPy (CPU) or CuPy (CUDA) ``coo_matrix``; see :func:`tsgu_core.to_scipy`."""
    return (to_cupy(A) if A.device.type == "cuda" else to_scipy(A, matrix=True)).tocoo()


def t2c_csr(A: torch.Tensor) -> Any:
    """A torch CSR (or COO) tensor as a SciPy (CPU) or CuPy (CUDA) ``csr_matrix``."""
    return (to_cupy(A) if A.device.type == "cuda" else to_scipy(A, matrix=True)).tocsr()


def _is_cupy(M: Any) -> bool:
    return type(M).__module__.startswith("cupyx")


def c2t_coo(M: Any) -> torch.Tensor:
    """A SciPy or CuPy sparse matrix as a torch COO tensor; see :func:`tsgu_core.sparse.interop.from_scipy`."""
    return from_cupy(M, "coo") if _is_cupy(M) else from_scipy(M, "coo")


def c2t_csr(M: Any) -> torch.Tensor:
    """A SciPy or CuPy sparse matrix as a torch CSR tensor; see :func:`tsgu_core.sparse.interop.from_scipy`."""
    return from_cupy(M, "csr") if _is_cupy(M) else from_scipy(M, "csr")


def t2j(x: torch.Tensor) -> Any:
    """A dense torch tensor as a JAX array through DLPack (float64 needs JAX's x64 mode on)."""
    from tsgu_backends.jax_backend import to_jax as dense_to_jax

    return dense_to_jax(x)


def j2t(x: Any) -> torch.Tensor:
    """A dense JAX array as a torch tensor through DLPack."""
    from tsgu_backends.jax_backend import from_jax as dense_from_jax

    return dense_from_jax(x)


def t2j_coo(A: torch.Tensor) -> Any:
    """A torch COO (or CSR) tensor as a JAX ``BCOO`` matrix; see :func:`tsgu_core.sparse.interop.to_jax`."""
    return to_jax(A, "bcoo")


def t2j_csr(A: torch.Tensor) -> Any:
    """A torch CSR (or COO) tensor as a JAX ``BCSR`` matrix; see :func:`tsgu_core.sparse.interop.to_jax`."""
    return to_jax(A, "bcsr")


def j2t_coo(M: Any) -> torch.Tensor:
    """A JAX BCOO (or BCSR) matrix as a torch COO tensor; see :func:`tsgu_core.sparse.interop.from_jax`."""
    return from_jax(M, "coo")


def j2t_csr(M: Any) -> torch.Tensor:
    """A JAX BCSR (or BCOO) matrix as a torch CSR tensor; see :func:`tsgu_core.sparse.interop.from_jax`."""
    return from_jax(M, "csr")
