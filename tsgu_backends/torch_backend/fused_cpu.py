"""Fused CPU loops for block CG and BiCGSTAB: one pass over memory per vector stage, compiled by numba.

``fused=True`` on the CPU runs each iteration's vector work — everything
except the products with ``A`` (torch's MKL SpMM) — in a few loops that read
and write each ``(n, k)`` block vector once per stage and keep the per-column
scalar logic (``α``, ``β``, ``ω``, the ``active`` masks) inside the same call:

* CG: ``⟨P, AP⟩``; ``R −= α·AP`` with ``‖R‖²``; ``X += α·P`` with
  ``P = R + β·P`` — three passes (the floor: each needs the previous
  reduction), one call per iteration without a preconditioner;
* BiCGSTAB: ``P = R + β(P − ω·V)``; ``⟨R̂, V⟩`` with ``‖V‖²``; ``R −= α·V``
  with ``‖R‖²``; ``⟨T, T⟩`` with ``⟨T, R⟩``; ``X += α·P̂ + ω·Ŝ`` with
  ``R −= ω·T``, ``‖R‖²`` and the next ``⟨R̂, R⟩`` — five passes.

Without a preconditioner, for 2 to :data:`LOOP_MAX_K` columns, given ``A``'s
CSR tensor (the backend passes it), every iteration runs in one call that computes the products too
(:meth:`FusedKernels.loop`; no Python between iterations): each product's
pass also takes the pointwise update of the vector it multiplies — each row
updated just before the first product row that reads it, so the update and
the product share one pass over memory — and the dot products of its result.
CG then makes two passes per iteration (``X``/``P`` updates with ``AP`` and
``⟨P, AP⟩``; ``R −= α·AP`` with ``‖R‖²``), BiCGSTAB three (``P`` with
``V = AP``, ``⟨R̂, V⟩`` and ``‖V‖²``; ``S = R − α·V`` with ``‖S‖²``, ``T = AS``,
``⟨T, T⟩`` and ``⟨T, S⟩``; the last pass above). A product row is
summed in one vector register of ``k`` numbers (``k`` ≤ :data:`LOOP_MAX_K`,
known when compiling: one compile per ``k``, seconds, then kept on disk);
each column's sum runs over the row's entries in stored order. Measured
(2-D Poisson, n = 1e5, k = 8, one thread, a loaded 2-core machine): this
product takes about 0.8× the time of torch's MKL one, and a whole CG iteration
about 0.75× the per-iteration loops after torch's product (whole solves:
``benchmarks/results/block_krylov_cg_bicgstab.md``).

Why not ``torch.compile``: measured (torch 2.13, one thread, n = 1e5, 8
columns), inductor evaluates a pointwise update and a column reduction of its
result (``R −= α·AP`` then ``‖R‖²``) in two loops over memory, recomputing
the update, and a whole iteration compiled as one graph writes ``R`` to a fresh
buffer first (6.4 ms against 0.5 ms for the split kernels).

The loops (:mod:`tsgu_backends.torch_backend._fused_loops`) are compiled by
numba (``nogil``, no ``fastmath``) once per dtype — the column count is an
argument — on the numpy views of the tensors (:meth:`torch.Tensor.numpy`: no
copy). Sums run over ``w = k·lanes`` interleaved lanes (``w`` near 2 KiB of them)
folded at the end, so one column is summed by several partial sums, not one
serial chain. Arithmetic per element is the eager loops' (same operations in
the same order; sums associate differently, as torch's do). No system C
compiler is used.

No ``fastmath``: the loops are memory-bound, and measured (n = 1e5, k = 8)
allowing contraction into fused multiply-adds changed no loop's time beyond the
noise, while it would round differently from torch's eager operations (which do
not contract), so the fused iterates would no longer be the eager ones;
reassociation is not needed either, as the lanes above already split every sum. Bounds are not checked inside (numba's
default): every call is checked at the entry instead (below). Index arithmetic
in the product runs on unsigned numbers, so numba emits no negative-index
wrap-around there.

Compiling takes seconds, so the machine code is kept on disk — in the folder
only the user can write of :mod:`tsgu_backends.numba_cache` (``$TSGU_KERNEL_CACHE``,
``off`` disables it, else ``~/.cache/tsgu/kernels``), whose files are read only
when no one else could have written them: numba's cache files are pickles, and
loading one runs whatever it was made to run. A refused folder is a warning,
and the loops are compiled in memory.

The loops run on the calling thread only and release the GIL (the products keep
torch's threads): they are measured with one thread, where they win; with
several threads torch's eager vector operations run in parallel, so measure
before choosing ``fused``.

Every call is checked at the entry (:meth:`FusedKernels.call`,
:meth:`FusedKernels.loop`): tensors on the CPU, of the kernels' dtype (masks
``torch.bool``), C-contiguous, with ``batch·n·k`` elements for block vectors
and ``batch·k`` for per-column scalars; ``A`` a CPU CSR tensor of that dtype
and ``batch·n`` rows whose row pointers run from 0 to its entry count without
going back, every column inside its batch member (checked in one pass over the
indices per call, not per iteration); a violation is a typed
:mod:`tsgu_core.errors` error, never a read out of bounds.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

import numpy as np
import torch

from tsgu_backends.numba_cache import attach_trusted_cache
from tsgu_core.errors import (
    DeviceMismatchError,
    DtypeMismatchError,
    InvalidArgumentError,
    LayoutError,
    ShapeError,
)

__all__ = ["FusedKernels", "kernels_for"]

_LANE_BYTES = 2048  # w·itemsize ≈ 2 KiB of partial sums: long rows, little cost per row (measured, k = 1 and 8)

# The arguments of each loop after (batch, n, k, w): "v" a block vector (batch·n·k), "s" per-column scalars
# (batch·k), "m" a per-column mask (bool, batch·k), "f" one number of the dtype.
_SPECS: dict[str, tuple[tuple[str, str], ...]] = {
    "cg_iteration": (("P", "v"), ("AP", "v"), ("R", "v"), ("X", "v"), ("rz", "s"), ("active", "m"), ("tol2", "s")),
    "cg_step": (
        *(("P", "v"), ("AP", "v"), ("R", "v")),
        *(("rz", "s"), ("active", "m"), ("tol2", "s"), ("alpha", "s"), ("rr", "s")),
    ),
    "cg_advance": (
        *(("X", "v"), ("P", "v"), ("Z", "v")),
        *(("alpha", "s"), ("rz", "s"), ("rz_new", "s"), ("active", "m")),
    ),
    "bicg_direction": (
        *(("P", "v"), ("V", "v"), ("R", "v")),
        *(("rho_new", "s"), ("rho", "s"), ("alpha", "s"), ("omega", "s"), ("active", "m"), ("rr", "s")),
        *(("rhat_norm", "s"), ("eps", "f"), ("ok", "m")),
    ),
    "bicg_half": (
        *(("Rhat", "v"), ("V", "v"), ("R", "v"), ("rho_new", "s"), ("rhat_norm", "s"), ("eps", "f")),
        *(("ok", "m"), ("tol2", "s"), ("alpha", "s"), ("go_on", "m")),
    ),
    "bicg_finish": (
        *(("T", "v"), ("R", "v"), ("X", "v"), ("Phat", "v"), ("Shat", "v"), ("Rhat", "v")),
        *(("alpha", "s"), ("go_on", "m"), ("tol2", "s"), ("omega", "s"), ("rr", "s"), ("rho_next", "s")),
        ("active", "m"),
    ),
}
_NUMPY = {torch.float64: np.float64, torch.float32: np.float32}
LOOP_SPECS: dict[str, tuple[tuple[str, str], ...]] = {
    "cg_loop": (("X", "v"), ("P", "v"), ("R", "v"), ("AP", "v"), ("rz", "s"), ("active", "m"), ("tol2", "s")),
    "bicgstab_loop": (
        *(("X", "v"), ("P", "v"), ("V", "v"), ("R", "v"), ("Rhat", "v"), ("T", "v")),
        *(("rr", "s"), ("rho_new", "s"), ("rhat_norm", "s"), ("active", "m"), ("tol2", "s")),
    ),
}
"""The whole-solve loops' tensors after the matrix: block vectors ("v") and per-column scalars ("s", masks "m")."""
LOOP_MAX_K = 32  # the whole-solve loops keep a row of k numbers in vector registers: up to 32 (compiled per k)


class FusedKernels:
    """The compiled loops for one dtype, called with tensors (see the module docstring for the layout)."""

    def __init__(self, dtype: torch.dtype, dispatchers: dict[str, Any]):
        self.dtype = dtype
        self._scalar = _NUMPY[dtype]
        self._itemsize = np.dtype(self._scalar).itemsize
        self._dispatchers = dispatchers

    def call(self, name: str, batch: int, n: int, k: int, *arguments: torch.Tensor | float) -> int:
        """Run loop ``name`` on ``arguments`` after checking them; the count of columns that go on.

        Raises
        ------
        DeviceMismatchError, DtypeMismatchError, LayoutError, ShapeError
            When a tensor is not on the CPU, not of the loops' dtype (masks: ``torch.bool``), not
            C-contiguous, or not of ``batch·n·k`` (block vectors) or ``batch·k`` (per-column scalars) elements.
        InvalidArgumentError
            When the number of arguments is not the loop's.
        """
        spec = _SPECS[name]
        if len(arguments) != len(spec):
            raise InvalidArgumentError(
                f"fused loop {name} takes {len(spec)} arguments after (batch, n, k), got {len(arguments)}"
            )
        if batch < 0 or n < 0 or k < 1:
            raise ShapeError(f"fused loop {name}: batch {batch}, n {n}, k {k} (batch, n ≥ 0 and k ≥ 1 expected)")
        lanes = max(1, _LANE_BYTES // (self._itemsize * k))
        converted: list[object] = []
        sizes = {"v": batch * n * k, "s": batch * k, "m": batch * k}
        for (label, kind), value in zip(spec, arguments, strict=True):
            if kind == "f":
                converted.append(self._scalar(float(value)))
            elif (  # the checks of _checked, in one expression: this runs a few times per iteration
                type(value) is torch.Tensor
                and value.dtype is (torch.bool if kind == "m" else self.dtype)
                and value.is_cpu
                and value.layout is torch.strided
                and value.is_contiguous()
                and value.numel() == sizes[kind]
            ):
                converted.append(value.detach().numpy().reshape(-1))  # a view: contiguous, so no copy
            else:  # the same checks one by one, to say which failed
                converted.append(self._checked(name, label, kind, value, sizes[kind], (batch, n, k)))
        result = self._dispatchers[name](batch, n, k, k * lanes, *converted)
        return int(result)

    def loop(
        self,
        name: str,
        matrix: torch.Tensor,
        scale: float,
        sizes: tuple[int, int, int],
        arguments: tuple[torch.Tensor, ...],
        maxiter: int,
    ) -> int:
        """Run whole-solve loop ``name`` (``"cg_loop"``, ``"bicgstab_loop"``: every iteration in one call, the
        products by ``scale · matrix`` computed inside) after checking its arguments; the iterations run.

        ``sizes`` is ``(batch, n, k)``; ``arguments`` are the loop's block vectors then per-column scalars in the
        order of :data:`LOOP_SPECS` (updated in place as the loop's docstring says). ``matrix`` is the CSR
        ``(batch·n, batch·n)`` matrix (block-diagonal for a batch) whose product ``op`` computes.

        Raises
        ------
        DeviceMismatchError, DtypeMismatchError, LayoutError, ShapeError, InvalidArgumentError
            As :meth:`call`, for the vectors and for ``matrix`` (a CPU CSR tensor of the loops' dtype, of
            ``batch·n`` rows, whose row pointers, column indices and values fit each other, every column of a
            member's rows inside that member), and for ``k`` above :data:`LOOP_MAX_K`.
        """
        batch, n, k = sizes
        if batch < 1 or n < 1 or not 1 <= k <= LOOP_MAX_K:
            raise ShapeError(f"fused {name}: batch {batch}, n {n}, k {k} (≥ 1 each, k ≤ {LOOP_MAX_K} expected)")
        spec = LOOP_SPECS[name]
        if len(arguments) != len(spec):
            raise InvalidArgumentError(f"fused {name} takes {len(spec)} tensors, got {len(arguments)}")
        arrays = [
            self._checked(name, label, kind, value, batch * n * k if kind == "v" else batch * k, sizes)
            for (label, kind), value in zip(spec, arguments, strict=True)
        ]
        crow, col, values = self._csr(name, matrix, batch, n)
        lanes = max(1, _LANE_BYTES // (self._itemsize * k))
        kk = (self._scalar(0),) * k  # its length is k, known when compiling: one compile per k
        extra = (self._scalar(float(torch.finfo(self.dtype).eps)),) if name == "bicgstab_loop" else ()
        head = (crow, col, values, self._scalar(scale), batch, n, kk, k * lanes)
        return int(self._dispatchers[name](*head, *arrays, *extra, int(maxiter)))

    def _csr(self, name: str, matrix: torch.Tensor, batch: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``matrix``'s row pointers, column indices and values as numpy views, once they are checked to fit."""
        where = f"fused {name}: the matrix"
        if not isinstance(matrix, torch.Tensor) or matrix.layout != torch.sparse_csr or matrix.dim() != 2:
            raise LayoutError(f"{where} must be a 2-D sparse CSR tensor")
        if matrix.device.type != "cpu":
            raise DeviceMismatchError(f"{where} is on {matrix.device}; the fused loops run on the CPU")
        if matrix.dtype != self.dtype:
            raise DtypeMismatchError(f"{where} has dtype {matrix.dtype}, expected {self.dtype}")
        if tuple(matrix.shape) != (batch * n, batch * n):
            raise ShapeError(f"{where} has shape {tuple(matrix.shape)}, expected {(batch * n, batch * n)}")
        crow, col, values = (_flat(t) for t in (matrix.crow_indices(), matrix.col_indices(), matrix.values()))
        if crow.dtype != col.dtype or crow.dtype not in (np.int32, np.int64):
            raise DtypeMismatchError(f"{where} has index dtypes {crow.dtype} and {col.dtype} (int32 or int64)")
        if not self._dispatchers["csr_fits"](crow, col, values, batch, n):
            raise ShapeError(
                f"{where}'s row pointers, column indices and values do not fit each other, or a row of one batch "
                "member holds a column of another"
            )
        return crow, col, values

    def _checked(
        self, name: str, label: str, kind: str, value: object, expected: int, sizes: tuple[int, int, int]
    ) -> np.ndarray:
        """``value`` as a flat numpy view (no copy), after the checks that keep the loops inside its memory."""
        hint = ""
        if kind == "v":  # block vectors are made from R, some by the user's M: a misfit comes from M
            hint = " (a preconditioner M must return a tensor of its input's shape, dtype and device)"
        where = f"fused loop {name}: {label}"
        if not isinstance(value, torch.Tensor):
            raise DtypeMismatchError(f"{where} must be a tensor, got {type(value).__name__}{hint}")
        if value.device.type != "cpu":
            raise DeviceMismatchError(f"{where} is on {value.device}; the fused loops run on the CPU{hint}")
        dtype = torch.bool if kind == "m" else self.dtype
        if value.dtype != dtype:
            raise DtypeMismatchError(f"{where} has dtype {value.dtype}, expected {dtype}{hint}")
        if value.layout != torch.strided or not value.is_contiguous():
            raise LayoutError(f"{where} must be a dense C-contiguous tensor{hint}")
        if value.numel() != expected:
            batch, n, k = sizes
            what = f"batch {batch} × n {n} × k {k}" if kind == "v" else f"batch {batch} × k {k}"
            raise ShapeError(f"{where} has {value.numel()} elements, expected {expected} ({what}){hint}")
        array: np.ndarray = value.detach().view(-1).numpy()
        return array


def _flat(tensor: torch.Tensor) -> np.ndarray:
    """A contiguous 1-D numpy view of ``tensor`` (a copy only where it is not contiguous)."""
    array: np.ndarray = tensor.detach().contiguous().view(-1).numpy()
    return array


def _signature(dtype: torch.dtype, name: str) -> tuple[Any, ...]:
    from numba import types

    scalar = types.float64 if dtype == torch.float64 else types.float32
    kinds = {
        "v": types.Array(scalar, 1, "C"),
        "s": types.Array(scalar, 1, "C"),
        "m": types.Array(types.boolean, 1, "C"),
        "f": scalar,
    }
    return (types.int64,) * 4 + tuple(kinds[kind] for _, kind in _SPECS[name])


_LOCK = threading.RLock()  # one build at a time in this process; numba's own compile lock is taken inside
_LOADED: dict[torch.dtype, FusedKernels] = {}
_CACHE_STATE: dict[str, object] = {}  # "directory": the folder attached (or None), "reason": why none


def _attach_cache(dispatchers: dict[str, Any]) -> None:
    """Give the loops the checked disk cache, once per process; without one (refused, off) they compile in memory."""
    if "directory" not in _CACHE_STATE:
        choice = attach_trusted_cache(dispatchers.values(), what="fused=True", stacklevel=4)
        _CACHE_STATE.update(choice._asdict())


def kernels_for(dtype: torch.dtype, k: int = 1) -> FusedKernels:
    """The fused loops for ``dtype`` (float32/float64), compiled on first use per process and kept on disk.

    ``k`` (the column count) is an argument of the loops, not part of what is compiled.

    Raises
    ------
    DtypeMismatchError
        For a dtype other than float32/float64.
    Exception
        Whatever numba raises when it cannot compile (the caller falls back to the eager loops).
    """
    if dtype not in _NUMPY:
        raise DtypeMismatchError(f"the fused loops are built for float32/float64, not {dtype}")
    kernels = _LOADED.get(dtype)
    if kernels is not None:
        return kernels
    with _LOCK:  # a second thread waits here for the first one's build, then takes it
        kernels = _LOADED.get(dtype)
        if kernels is None:
            loops = importlib.import_module("tsgu_backends.torch_backend._fused_loops")  # numba loads here
            dispatchers = loops.KERNELS
            _attach_cache(dispatchers)
            for name in _SPECS:  # the whole-solve loops and csr_fits compile on first use (per k and index dtype)
                dispatchers[name].compile(_signature(dtype, name))
            kernels = _LOADED[dtype] = FusedKernels(dtype, dispatchers)
    return kernels
