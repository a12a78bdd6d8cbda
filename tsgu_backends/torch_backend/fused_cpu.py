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

Every call is checked at the entry (:meth:`FusedKernels.call`): tensors on the
CPU, of the kernels' dtype (masks ``torch.bool``), C-contiguous, with
``batch·n·k`` elements for block vectors and ``batch·k`` for per-column
scalars; a violation is a typed :mod:`tsgu_core.errors` error, never a read
out of bounds.
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
            for name, dispatcher in dispatchers.items():
                dispatcher.compile(_signature(dtype, name))
            kernels = _LOADED[dtype] = FusedKernels(dtype, dispatchers)
    return kernels
