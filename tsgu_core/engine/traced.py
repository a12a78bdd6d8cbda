r"""The solve as one opaque PyTorch operator, for ``torch.compile``, ``torch.func`` and forward-mode AD.

Under those transforms :func:`tsgu_core.solve_values` runs as the custom
operator ``tsgu::solve`` on dense tensors only — the pattern's CSR index
tensors, the values, the right-hand sides — because neither Dynamo nor
functorch can hold a torch sparse tensor:

* ``torch.compile`` (``fullgraph=True`` too): the operator has a fake kernel
  (its result is shaped like ``B``), so a graph holds the solve as one node,
  and the backend runs when the graph runs.
* Reverse mode: :class:`_TracedSolve`, whose backward is the rule of
  :mod:`tsgu_core.engine.autograd` — :func:`~tsgu_core.engine.autograd.adjoint_solve` and
  :func:`~tsgu_core.engine.autograd.values_gradient`, the very functions the eager
  path uses — with its solve made by this same Function in transpose mode,
  so derivatives of every order are exact.
* Forward mode: for :math:`X = \operatorname{op}(A)^{-1} B` the tangent is

  .. math:: \dot X = \operatorname{op}(A)^{-1} \bigl(\dot B - \operatorname{op}(\dot A)\, X\bigr),

  one more solve with the same prepared state (a direct method reuses its
  factorization).
* ``vmap``: over ``B`` the samples become columns of one multi-column
  solve; over the values they become a batch of matrices sharing the
  pattern — never a Python loop.

The backend's prepared state (a factorization, a preconditioner) is found
again by content: :data:`CACHE` keeps the last few, keyed by the request
(backend, method, options) and compared entry by entry on the pattern and
the values, so the backward's and the tangent's solves reuse the forward's,
under ``torch.compile`` too. A changed value is a new matrix, never a stale
factorization.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from tsgu_core.engine.autograd import adjoint_solve, values_gradient
from tsgu_core.errors import (
    DeviceMismatchError,
    DtypeMismatchError,
    InvalidArgumentError,
    ShapeError,
    TransformError,
)
from tsgu_core.sparse.pattern import SparsePattern
from tsgu_core.engine.prepared import PreparedSolve

__all__ = ["CACHE", "PreparedCache", "solve_op", "traced_solve_values"]

# --------------------------------------------------------------------------- requests


_PLAIN = (bool, int, float, complex, str, type(None))


def _token(value: Any, keep: list[Any]) -> Any:
    """``value`` as a part of a key: plain scalars and strings by value, anything else by identity (kept alive)."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, tuple) and all(isinstance(item, _PLAIN) for item in value):
        return value
    keep.append(value)  # alive while its key is: an id is never reused for another object
    return f"<{type(value).__module__}.{type(value).__qualname__} at {id(value):#x}>"


_REQUESTS: dict[str, tuple[Any, str | None, str, str, dict[str, Any], list[Any]]] = {}


def _request_key(
    backend: Any, method: str | None, assume: str, on_failure: str, options: tuple[tuple[str, Any], ...]
) -> str:
    """A stable string for a request: equal requests, equal keys (a compiled graph does not recompile).

    Two option values that merely print alike (two SciPy ``LinearOperator``
    preconditioners, two arrays) are different requests: only plain scalars
    and strings are compared by value.
    """
    keep: list[Any] = []
    parts = (
        _token(backend, keep),
        method,
        assume,
        on_failure,
        tuple((name, _token(value, keep)) for name, value in options),
    )
    key = repr(parts)
    _REQUESTS.setdefault(key, (backend, method, assume, on_failure, dict(options), keep))
    return key


_constant_request_key = torch.compiler.assume_constant_result(_request_key)


# --------------------------------------------------------------------------- prepared states


@dataclass
class _Entry:
    """One prepared matrix: the request, copies of its pattern and values, the plan and prepared state."""

    request: str
    crow: torch.Tensor
    col: torch.Tensor
    values: torch.Tensor
    pattern: SparsePattern
    plan: Any
    matrix: torch.Tensor
    prepared: PreparedSolve | None = None

    def matches(self, request: str, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor) -> bool:
        return (
            request == self.request
            and values.shape == self.values.shape
            and values.dtype == self.values.dtype
            and values.device == self.values.device
            and crow.shape == self.crow.shape
            and col.shape == self.col.shape
            and torch.equal(crow, self.crow)
            and torch.equal(col, self.col)
            and torch.equal(values, self.values)
        )

    def prepared_state(self) -> PreparedSolve:
        if self.prepared is None:
            self.prepared = self.plan.prepare(self.matrix, pattern=self.pattern)
        return self.prepared


@dataclass
class PreparedCache:
    """The last ``size`` prepared matrices, found again by content (see the module docstring).

    A factorization can be large: ``size`` bounds how many are kept alive, and
    :meth:`clear` frees them all.
    """

    size: int = 4
    _entries: list[_Entry] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def entry(self, request: str, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor) -> _Entry:
        """The entry for this matrix, prepared before or made now (the least recently used one leaves)."""
        with self._lock:
            for index, entry in enumerate(self._entries):
                if entry.matches(request, crow, col, values):
                    self._entries.append(self._entries.pop(index))
                    return entry
        entry = _new_entry(request, crow, col, values)
        with self._lock:
            self._entries.append(entry)
            del self._entries[: max(len(self._entries) - self.size, 0)]
        return entry

    def clear(self) -> None:
        """Forget every prepared matrix (and free what the backends hold for them)."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


CACHE = PreparedCache()
"""The prepared states of the traced path; ``tsgu_core.engine.traced.CACHE.clear()`` frees them."""


def _new_entry(request: str, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor) -> _Entry:
    from tsgu_core.engine.pipeline import plan
    from tsgu_core.api.solve import pattern_matrix
    from tsgu_core.sparse.validate import check_finite

    backend, method, assume, on_failure, options, _ = _REQUESTS[request]
    crow, col, values = crow.clone(), col.clone(), values.detach().clone()  # the entry owns what it was made of
    pattern = SparsePattern.from_csr(crow, col, crow.numel() - 1)
    matrix = pattern_matrix(pattern, values)
    check_finite(A=values)
    the_plan = plan(backend, method, matrix, options, on_failure=on_failure, assume=assume)
    return _Entry(request, crow, col, values, pattern, the_plan, matrix)


# --------------------------------------------------------------------------- the operator


def _lazy_views_honoured() -> Any:
    """Dispatch that resolves torch's lazy conjugate, negative and zero views inside the operator.

    Compiled graphs (``aot_eager``, ``inductor``) call an operator's kernel with
    the ``Conjugate``, ``Negative`` and ``ZeroTensor`` keys excluded: a lazy
    ``x.conj()`` then multiplies as ``x`` — measured on torch 2.13, a silently
    wrong complex solve. The backends use such views, so they are honoured again
    for the operator's body; every other exclusion stays.
    """
    keys = torch._C.DispatchKey
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in (keys.Conjugate, keys.Negative, keys.ZeroTensor):
        exclude = exclude.remove(key)
    return torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude)


@torch.library.custom_op(
    "tsgu::solve",
    mutates_args=(),
    schema="(Tensor crow, Tensor col, Tensor values, Tensor B, Tensor? x0, str request, bool transpose) -> Tensor",
)
def solve_op(
    crow: torch.Tensor,
    col: torch.Tensor,
    values: torch.Tensor,
    B: torch.Tensor,
    x0: torch.Tensor | None,
    request: str,
    transpose: bool,
) -> torch.Tensor:
    """``op(A)⁻¹ B`` for the CSR matrix ``(crow, col, values)`` — not differentiable by itself.

    ``B`` is ``(n, k)``, or ``(b, n, k)`` with ``values`` ``(b, nnz)``;
    ``request`` is a key made by :func:`traced_solve_values`. Use
    :func:`tsgu_core.solve_values`, which adds the derivatives.
    """
    from tsgu_core.engine.pipeline import execute
    from tsgu_core.sparse.validate import check_rhs

    with torch.no_grad(), _lazy_views_honoured():
        entry = CACHE.entry(request, crow, col, values)
        check_rhs(B, entry.matrix)
        X, _ = execute(entry.plan, entry.prepared_state, values, B.contiguous(), transpose=transpose, x0=x0)
    X = X.contiguous()  # the fake kernel promises B's shape in row-major order (SciPy returns column-major)
    return X.clone() if X.data_ptr() in (B.data_ptr(), values.data_ptr()) else X


@solve_op.register_fake
def _solve_op_fake(
    crow: torch.Tensor,
    col: torch.Tensor,
    values: torch.Tensor,
    B: torch.Tensor,
    x0: torch.Tensor | None,
    request: str,
    transpose: bool,
) -> torch.Tensor:
    return torch.empty_like(B, memory_format=torch.contiguous_format)


# --------------------------------------------------------------------------- derivatives


def _apply(
    row: torch.Tensor,
    crow: torch.Tensor,
    col: torch.Tensor,
    values: torch.Tensor,
    B: torch.Tensor,
    x0: torch.Tensor | None,
    request: str,
    transpose: bool,
) -> torch.Tensor:
    """The differentiable solve: with a forward-mode rule, except while Dynamo traces (it cannot hold one)."""
    if torch.compiler.is_compiling() and _transform_active():
        raise TransformError(
            "a torch.func transform (grad, jvp, vmap, …) or forward-mode AD inside torch.compile cannot go through "
            "tsgu's solve: Dynamo cannot trace its derivative rules there. Put torch.compile inside the "
            "transform's function, or run the transform eagerly (both work)"
        )
    function = _TracedSolve if torch.compiler.is_compiling() else _TracedSolveForward
    X: torch.Tensor = function.apply(row, crow, col, values, B, x0, request, transpose)
    return X


def _transform_active() -> bool:
    """Whether a ``torch.func`` transform or a forward-AD level is active (asked in a way Dynamo can trace)."""
    return bool(torch._C._are_functorch_transforms_active()) or torch.autograd.forward_ad._current_level >= 0


def _pattern(row: torch.Tensor, crow: torch.Tensor, col: torch.Tensor) -> SparsePattern:
    return SparsePattern(row, col, crow.shape[0] - 1, crow)


class _TracedSolve(torch.autograd.Function):
    """``X = op(A)⁻¹ B`` through :func:`solve_op`, differentiable in ``values`` and ``B``."""

    @staticmethod
    def forward(
        row: torch.Tensor,
        crow: torch.Tensor,
        col: torch.Tensor,
        values: torch.Tensor,
        B: torch.Tensor,
        x0: torch.Tensor | None,
        request: str,
        transpose: bool,
    ) -> torch.Tensor:
        X: torch.Tensor = solve_op(crow, col, values, B, x0, request, transpose)
        return X

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        row, crow, col, values, _, _, request, transpose = inputs
        ctx.request, ctx.transpose = request, transpose
        ctx.save_for_backward(row, crow, col, values, output)

    @staticmethod
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        row, crow, col, values, X = ctx.saved_tensors
        need_values, need_B = ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        if not (need_values or need_B):
            return (None,) * 8

        def solve_transposed(rhs: torch.Tensor) -> torch.Tensor:
            return _apply(row, crow, col, values, rhs, None, ctx.request, not ctx.transpose)

        S = adjoint_solve(solve_transposed, G)
        grad_values = values_gradient(_pattern(row, crow, col), X, S, ctx.transpose) if need_values else None
        return None, None, None, grad_values, (S if need_B else None), None, None, None

    @staticmethod
    def vmap(
        info: Any,
        in_dims: tuple[int | None, ...],
        row: torch.Tensor,
        crow: torch.Tensor,
        col: torch.Tensor,
        values: torch.Tensor,
        B: torch.Tensor,
        x0: torch.Tensor | None,
        request: str,
        transpose: bool,
    ) -> tuple[torch.Tensor, int]:
        if any(dim is not None for dim in in_dims[:3]):
            raise TransformError(
                "vmap over the pattern is not possible: the samples must share one SparsePattern "
                "(map over the values and right-hand sides instead)"
            )
        values_dim, B_dim, x0_dim = in_dims[3:6]
        if values_dim is None:  # one matrix: the samples become columns of one solve
            assert B_dim is not None, "vmap calls the rule only when something is mapped"
            samples = B.movedim(B_dim, -1)  # (..., n, k, s)
            shape = samples.shape
            guess = None
            if x0 is not None:
                guess = x0.movedim(x0_dim, -1) if x0_dim is not None else x0.unsqueeze(-1).expand(shape)
                guess = guess.reshape(*shape[:-2], -1)
            X = _apply(row, crow, col, values, samples.reshape(*shape[:-2], -1), guess, request, transpose)
            return X.reshape(shape), len(shape) - 1
        size = info.batch_size  # a batch of matrices sharing the pattern
        values = values.movedim(values_dim, 0)
        B = B.movedim(B_dim, 0) if B_dim is not None else B.expand(size, *B.shape)
        if x0 is not None:
            x0 = x0.movedim(x0_dim, 0) if x0_dim is not None else x0.expand(size, *x0.shape)
        shape = B.shape
        flat_values = values.reshape(-1, values.shape[-1])
        flat_B = B.reshape(-1, *shape[-2:])
        flat_x0 = None if x0 is None else x0.reshape(flat_B.shape)
        X = _apply(row, crow, col, flat_values, flat_B, flat_x0, request, transpose)
        return X.reshape(shape), 0


class _TracedSolveForward(_TracedSolve):
    """:class:`_TracedSolve` with its forward-mode rule (Dynamo cannot trace one: used outside ``torch.compile``)."""

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        _TracedSolve.setup_context(ctx, inputs, output)
        row, crow, col, values = inputs[:4]
        ctx.save_for_forward(row, crow, col, values, output)

    @staticmethod
    def jvp(ctx: Any, *tangents: torch.Tensor | None) -> torch.Tensor:
        row, crow, col, values, X = ctx.saved_tensors
        d_values, d_B = tangents[3], tangents[4]
        rhs = d_B if d_B is not None else torch.zeros_like(X)
        if d_values is not None:
            rhs = rhs - _pattern(row, crow, col).matmul(d_values, X, transpose=ctx.transpose)
        return _apply(row, crow, col, values, rhs, None, ctx.request, ctx.transpose)


# --------------------------------------------------------------------------- the front door


def traced_solve_values(
    A: Any,
    values: torch.Tensor,
    B: torch.Tensor,
    *,
    backend: Any,
    method: str | None,
    assume: str,
    return_info: bool,
    on_failure: str,
    options: Mapping[str, Any],
) -> torch.Tensor:
    """:func:`tsgu_core.solve_values` through :func:`solve_op` (see the module docstring).

    Only shapes, dtypes and devices are checked here — what a tracer can see
    without data; the operator checks the rest (finite values, options,
    convergence) when it runs.
    """
    if return_info:
        raise TransformError(
            "return_info=True is not available under torch.compile, torch.func or forward-mode AD (the solve is one "
            "opaque operator there); call solve_values(..., return_info=True) outside the transform to inspect it"
        )
    pattern = A if isinstance(A, SparsePattern) else _pattern_of(A)
    if pattern.crow is None or pattern.rows != pattern.n:
        raise ShapeError(
            f"the pattern must be of a square matrix in CSR order (SparsePattern.of(A)), got {pattern.rows}×{pattern.n}"
        )
    _check_tensors(pattern, values, B)
    x0 = options.get("x0")
    rest = tuple(sorted((name, value) for name, value in options.items() if name != "x0"))
    make_key = _constant_request_key if torch.compiler.is_compiling() else _request_key
    request = make_key(backend, method, assume, on_failure, rest)
    columns = B if B.dim() == values.dim() + 1 else B.unsqueeze(-1)
    guess = None
    if isinstance(x0, torch.Tensor):
        guess = x0.reshape(columns.shape) if x0.shape == columns.shape[:-1] else x0
    elif x0 is not None:
        raise InvalidArgumentError(f"x0 must be a dense torch tensor, got {type(x0).__name__}")
    X = _apply(pattern.row, pattern.crow, pattern.col, values, columns, guess, request, False)
    return X if B.dim() == values.dim() + 1 else X.squeeze(-1)


def _pattern_of(A: Any) -> SparsePattern:
    """The pattern of a sparse tensor passed as ``A`` (captured by the transform: read as the plain tensor it is)."""
    from tsgu_core.sparse.validate import check_matrix

    with torch._C._DisableFuncTorch():
        check_matrix(A, allow_batch=True)
        if A.requires_grad:
            raise InvalidArgumentError(
                "A must not require grad in solve_values: its values are not used; "
                "detach it (or pass SparsePattern.of(A))"
            )
        if A.layout == torch.sparse_coo and not A.is_coalesced():
            raise InvalidArgumentError(
                "solve_values needs a coalesced COO A (values follow its order): use A.coalesce()"
            )
        return SparsePattern.of(A.detach())


def _check_tensors(pattern: SparsePattern, values: Any, B: Any) -> None:
    """Shapes, dtypes and devices of ``values`` and ``B`` for ``pattern`` (no data is read)."""
    if not isinstance(values, torch.Tensor) or values.dim() not in (1, 2) or values.shape[-1] != pattern.nnz:
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ShapeError(f"values must have shape ({pattern.nnz},) — or (b, {pattern.nnz}) for a batch — got {shape}")
    if not isinstance(B, torch.Tensor):
        raise InvalidArgumentError(f"B must be a dense torch tensor, got {type(B).__name__}")
    leading = tuple(values.shape[:-1])
    if B.dim() not in (len(leading) + 1, len(leading) + 2) or tuple(B.shape[: len(leading) + 1]) != (
        *leading,
        pattern.n,
    ):
        raise ShapeError(
            f"B must have shape {(*leading, pattern.n)} or {(*leading, pattern.n)} + (k,) for values of shape "
            f"{tuple(values.shape)}, got {tuple(B.shape)}"
        )
    if B.dtype != values.dtype:
        raise DtypeMismatchError(f"B has dtype {B.dtype} but the values {values.dtype}; use B.to({values.dtype})")
    if B.device != values.device or pattern.col.device != values.device:
        raise DeviceMismatchError(
            f"values ({values.device}), B ({B.device}) and the pattern ({pattern.col.device}) must share a device"
        )
