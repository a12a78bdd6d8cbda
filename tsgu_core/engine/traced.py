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

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from tsgu_core.base.transforms import compiling
from tsgu_core.engine.autograd import adjoint_solve, values_gradient
from tsgu_core.engine.pipeline import Plan, check_pattern_values, execute, pattern_matrix, plan
from tsgu_core.engine.prepared import PreparedSolve
from tsgu_core.engine.request import SolveRequest
from tsgu_core.errors import DeviceMismatchError, DtypeMismatchError, InvalidArgumentError, ShapeError, TransformError
from tsgu_core.sparse.pattern import SparsePattern
from tsgu_core.sparse.validate import check_finite, check_rhs

__all__ = ["CACHE", "PreparedCache", "RequestTable", "request_token", "solve_op", "traced_solve_values"]

# --------------------------------------------------------------------------- requests


class RequestTable:
    """The requests the operator can name: a short token (its ``str`` argument) for each :class:`SolveRequest`.

    ``tsgu::solve`` takes plain tensors and strings only, so each request is
    registered here under a token, and the operator looks it up. Equal
    requests (:attr:`SolveRequest.key <tsgu_core.engine.request.SolveRequest.key>`)
    share one token, so a compiled graph does not recompile for a new but
    equal request. The table keeps each request — and the objects among its
    options, e.g. a preconditioner ``M`` — alive, so it is bounded:

    * the ``size`` most recently used requests (least recently used leave
      first), cleared with :data:`CACHE` by ``CACHE.clear()``;
    * plus the requests a compiled graph names (registered while Dynamo
      traces): the graph holds only the token and may run at any later time,
      so those stay for the life of the process — one per compiled call site
      and request, bounded by Dynamo's recompile limit.

    A backward pass outside ``torch.compile`` keeps its request itself and
    registers it again if it has left. Every method takes the table's lock.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._recent: OrderedDict[str, SolveRequest] = OrderedDict()
        self._pinned: dict[str, SolveRequest] = {}
        self._tokens: dict[SolveRequest, str] = {}
        self._count = itertools.count()
        self._lock = threading.Lock()

    def token(self, request: SolveRequest, *, pinned: bool = False) -> str:
        """The token of ``request``, registering it (``pinned``: for the life of the process)."""
        with self._lock:
            token = self._tokens.get(request)
            if token is None:
                token = f"tsgu-request-{next(self._count)}"
                self._tokens[request] = token
            if pinned:
                self._recent.pop(token, None)
                self._pinned[token] = request
            elif token not in self._pinned:
                self._recent[token] = request
                self._recent.move_to_end(token)
                while len(self._recent) > self.size:
                    self._tokens.pop(self._recent.popitem(last=False)[1], None)
            return token

    def request(self, token: str) -> SolveRequest:
        """The request registered under ``token`` (now the most recently used)."""
        with self._lock:
            found = self._pinned.get(token)
            if found is None and token in self._recent:
                self._recent.move_to_end(token)
                found = self._recent[token]
        if found is None:
            raise InvalidArgumentError(
                f"tsgu::solve was called with the request token {token!r}, which names no request (tokens are made "
                "by tsgu_core.solve_values; CACHE.clear() forgets those not held by a compiled graph)"
            )
        return found

    def clear(self) -> None:
        """Forget every request but those compiled graphs name."""
        with self._lock:
            for request in self._recent.values():
                self._tokens.pop(request, None)
            self._recent.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._recent) + len(self._pinned)


def _compiled_token(
    backend: Any, method: str | None, assume: str, on_failure: str, options: tuple[tuple[str, Any], ...]
) -> str:
    """The pinned token of a request met while Dynamo traces (run once, at trace time: the graph keeps the string)."""
    request = SolveRequest.of(backend, method, assume=assume, on_failure=on_failure, options=dict(options))
    return CACHE.requests.token(request, pinned=True)


_constant_compiled_token = torch.compiler.assume_constant_result(_compiled_token)


def request_token(request: SolveRequest) -> str:
    """The operator's ``request`` argument for ``request`` (without ``x0``, which the operator takes as a tensor)."""
    request = request.without("x0")
    if compiling():  # a constant of the graph: Dynamo runs the function once and keeps its result
        options = tuple(sorted(request.options.items()))
        token: str = _constant_compiled_token(
            request.backend, request.method, request.assume, request.on_failure, options
        )
        return token
    return CACHE.requests.token(request)


# --------------------------------------------------------------------------- prepared states


@dataclass
class _Entry:
    """One prepared matrix: the request, copies of its pattern and values, the plan and prepared state.

    Threads that solve with the same matrix (a forward in one, a backward in another) share the entry: its
    ``lock`` serialises the preparation and every backend call on the prepared state.
    """

    request: SolveRequest
    crow: torch.Tensor
    col: torch.Tensor
    values: torch.Tensor
    pattern: SparsePattern
    plan: Plan
    matrix: torch.Tensor
    prepared: PreparedSolve | None = None
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def matches(self, request: SolveRequest, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor) -> bool:
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
        with self.lock:
            if self.prepared is None:
                self.prepared = self.plan.prepare(self.matrix, pattern=self.pattern)
            return self.prepared


@dataclass
class PreparedCache:
    """The last ``size`` prepared matrices, found again by content (see the module docstring).

    A factorization can be large: ``size`` bounds how many are kept alive, and
    :meth:`clear` frees them all, with the requests they were made for
    (:attr:`requests`, a :class:`RequestTable`).
    """

    size: int = 4
    requests: RequestTable = field(default_factory=RequestTable)
    _entries: list[_Entry] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def entry(self, token: str, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor) -> _Entry:
        """The entry for this matrix, prepared before or made now (the least recently used one leaves)."""
        request = self.requests.request(token)
        with self._lock:
            for index, entry in enumerate(self._entries):
                if entry.matches(request, crow, col, values):
                    self._entries.append(self._entries.pop(index))
                    return entry
            entry = _new_entry(request, crow, col, values)  # cheap (no backend work): under the lock, made once
            self._entries.append(entry)
            del self._entries[: max(len(self._entries) - self.size, 0)]
            return entry

    def clear(self) -> None:
        """Forget every prepared matrix (and free what the backends hold for them) and the requests."""
        with self._lock:
            self._entries.clear()
        self.requests.clear()

    def __len__(self) -> int:
        return len(self._entries)


CACHE = PreparedCache()
"""The prepared states of the traced path; ``tsgu_core.engine.traced.CACHE.clear()`` frees them."""

_REQUESTS = CACHE.requests
"""The request table of :data:`CACHE` (at most ``CACHE.requests.size`` requests besides compiled graphs' own)."""


def _new_entry(request: SolveRequest, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor) -> _Entry:
    crow, col, values = crow.clone(), col.clone(), values.detach().clone()  # the entry owns what it was made of
    pattern = SparsePattern.from_csr(crow, col, crow.numel() - 1)
    matrix = pattern_matrix(pattern, values)
    check_finite(A=values)
    return _Entry(request, crow, col, values, pattern, plan(request, matrix), matrix)


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
    entry = CACHE.entry(request, crow, col, values)
    with torch.no_grad(), _lazy_views_honoured(), entry.lock:  # one thread at a time on a prepared state
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
    traced = compiling()  # this thread's answer: another thread compiling does not count
    if traced and _transform_active():
        raise TransformError(
            "a torch.func transform (grad, jvp, vmap, …) or forward-mode AD inside torch.compile cannot go through "
            "tsgu's solve: Dynamo cannot trace its derivative rules there. Put torch.compile inside the "
            "transform's function, or run the transform eagerly (both work)"
        )
    function = _TracedSolve if traced else _TracedSolveForward
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
        ctx.kept = CACHE.requests.request(ctx.request)  # the backward may come after the token has left the table

    @staticmethod
    def backward(ctx: Any, G: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        ctx.request = CACHE.requests.token(ctx.kept)
        return _TracedSolve.backward(ctx, G)

    @staticmethod
    def jvp(ctx: Any, *tangents: torch.Tensor | None) -> torch.Tensor:
        ctx.request = CACHE.requests.token(ctx.kept)
        row, crow, col, values, X = ctx.saved_tensors
        d_values, d_B = tangents[3], tangents[4]
        rhs = d_B if d_B is not None else torch.zeros_like(X)
        if d_values is not None:
            rhs = rhs - _pattern(row, crow, col).matmul(d_values, X, transpose=ctx.transpose)
        return _apply(row, crow, col, values, rhs, None, ctx.request, ctx.transpose)


# --------------------------------------------------------------------------- the front door


def traced_solve_values(
    A: torch.Tensor | SparsePattern, values: torch.Tensor, B: torch.Tensor, request: SolveRequest, *, return_info: bool
) -> torch.Tensor:
    """:func:`tsgu_core.solve_values` through :func:`solve_op` (see the module docstring).

    ``A`` is a :class:`SparsePattern` or a sparse tensor already checked by
    :func:`~tsgu_core.engine.pipeline.check_pattern_source`. Only shapes, dtypes
    and devices are checked here — what a tracer can see without data; the
    operator checks the rest (finite values, options, convergence) when it runs.
    """
    if return_info:
        raise TransformError(
            "return_info=True is not available under torch.compile, torch.func or forward-mode AD (the solve is one "
            "opaque operator there); call solve_values(..., return_info=True) outside the transform to inspect it"
        )
    if not isinstance(A, SparsePattern):
        with torch._C._DisableFuncTorch():  # captured by the transform: read as the plain tensor it is
            A = SparsePattern.of(A.detach())
    if A.crow is None or A.rows != A.n:
        raise ShapeError(
            f"the pattern must be of a square matrix in CSR order (SparsePattern.of(A)), got {A.rows}×{A.n}"
        )
    check_pattern_values(A, values)
    _check_rhs(A, values, B)
    x0 = request.x0
    columns = B if B.dim() == values.dim() + 1 else B.unsqueeze(-1)
    guess = None
    if isinstance(x0, torch.Tensor):
        guess = x0.reshape(columns.shape) if x0.shape == columns.shape[:-1] else x0
    elif x0 is not None:
        raise InvalidArgumentError(f"x0 must be a dense torch tensor, got {type(x0).__name__}")
    X = _apply(A.row, A.crow, A.col, values, columns, guess, request_token(request), False)
    return X if B.dim() == values.dim() + 1 else X.squeeze(-1)


def _check_rhs(pattern: SparsePattern, values: torch.Tensor, B: Any) -> None:
    """Shape, dtype and device of ``B`` for ``pattern`` and checked ``values`` (no data is read)."""
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
    if B.device != values.device:
        raise DeviceMismatchError(f"values ({values.device}) and B ({B.device}) must share a device")
