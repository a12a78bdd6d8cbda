"""Every input check of a solve, done once, before any backend work.

Each check raises a typed error from :mod:`tsgu_core.errors` whose message
says what was wrong and how to fix it. Nothing here casts, copies or moves a
tensor: a mismatch is an error, never a silent conversion.
"""

from __future__ import annotations

from typing import Any

import torch

from tsgu_core.errors import (
    DeviceMismatchError,
    DtypeMismatchError,
    LayoutError,
    NonFiniteError,
    ShapeError,
    StructureError,
    UnsupportedDeviceError,
)
from tsgu_core.sparse.gradient_cost import warn_dense_constructor_gradient
from tsgu_core.sparse.interop import conversion_hint

__all__ = [
    "COMPLEX_DTYPES",
    "FLOAT_DTYPES",
    "INDEX_DTYPES",
    "SOLVE_DTYPES",
    "check_finite",
    "check_indices",
    "check_matrix",
    "check_rhs",
    "check_values",
    "check_x0",
]

FLOAT_DTYPES = (torch.float32, torch.float64)
COMPLEX_DTYPES = (torch.complex64, torch.complex128)
SOLVE_DTYPES = FLOAT_DTYPES + COMPLEX_DTYPES
"""The dtypes ``A`` may have; a method solves a complex ``A`` only if its spec declares ``complex=True``."""
INDEX_DTYPES = (torch.int32, torch.int64)

_LAYOUT_ADVICE = {
    torch.strided: "A is dense; convert it with A.to_sparse_csr() (or use torch.linalg.solve for dense systems)",
    torch.sparse_csc: "convert it with A.to_sparse_csr()",
    torch.sparse_bsr: "convert it with A.to_sparse_coo() (or .to_sparse_coo().to_sparse_csr())",
    torch.sparse_bsc: "convert it with A.to_sparse_coo() (or .to_sparse_coo().to_sparse_csr())",
}


def check_matrix(
    A: Any, name: str = "A", *, allow_batch: bool = False, tall: bool = False, any_shape: bool = False
) -> None:
    """Check that ``A`` is a square sparse COO/CSR real or complex matrix (or, if allowed, a batch of them).

    A batch is ``(b, n, n)``: COO with three sparse dimensions, or batched CSR.
    With ``tall=True``, ``A`` may be ``(m, n)`` with ``m ≥ n`` (least squares);
    with ``any_shape=True`` any ``(m, n)`` (a process's rows of a distributed ``A``).

    Raises
    ------
    TypeError (LayoutError, DtypeMismatchError)
        Not a tensor, a layout other than COO/CSR, a dtype other than
        float32/float64/complex64/complex128, or
        index dtypes other than int32/int64 (or mixed in CSR).
    ShapeError
        Wrong number of dimensions, not square, or with dense (hybrid) dimensions.
    StructureError
        A broken index tensor (see :func:`check_indices`).
    """
    if not isinstance(A, torch.Tensor):
        hint = conversion_hint(A)  # names tsgu_core.from_scipy / from_cupy / from_jax; imports none of them
        raise LayoutError(f"{name} must be a torch sparse tensor (COO or CSR), got {type(A).__name__}{hint}")
    if A.layout not in (torch.sparse_coo, torch.sparse_csr):
        advice = _LAYOUT_ADVICE.get(A.layout, "convert it with A.to_sparse_csr()")
        raise LayoutError(f"{name} has layout {A.layout}; tsgu accepts sparse COO or CSR: {advice}")
    if A.device.type == "meta":
        raise UnsupportedDeviceError(
            f"{name} is on the 'meta' device: it has a shape but no values, so there is nothing to solve; "
            "build it with its values on cpu or cuda"
        )
    dims = (2, 3) if allow_batch else (2,)
    if A.dim() not in dims or A.dense_dim() != 0:
        wanted = "a 2-D sparse matrix or a (b, n, n) batch" if allow_batch else "a 2-D sparse matrix"
        raise ShapeError(
            f"{name} must be {wanted} without dense dimensions, got shape {tuple(A.shape)} "
            f"with {A.sparse_dim()} sparse and {A.dense_dim()} dense dimensions"
        )
    if tall and not any_shape and A.shape[-2] < A.shape[-1]:
        raise ShapeError(
            f"{name} must be tall (m ≥ n, full column rank) for least squares, got shape {tuple(A.shape)}; "
            "an underdetermined system has no unique least-squares solution"
        )
    if not (tall or any_shape) and A.shape[-1] != A.shape[-2]:
        raise ShapeError(f"{name} must be square, got shape {tuple(A.shape)}; for a tall A use tsgu_core.lstsq")
    if A.dtype not in SOLVE_DTYPES:
        raise DtypeMismatchError(
            f"{name} has dtype {A.dtype}; tsgu solves in float32, float64, complex64 or complex128: convert with "
            f"{name}.to(torch.float64) (or torch.complex128)"
        )
    if A.layout == torch.sparse_coo:
        index_dtypes = {A._indices().dtype}
    else:
        index_dtypes = {A.crow_indices().dtype, A.col_indices().dtype}
        if len(index_dtypes) > 1:
            raise DtypeMismatchError(
                f"{name} is CSR with crow_indices of dtype {A.crow_indices().dtype} and col_indices of "
                f"dtype {A.col_indices().dtype}; they must match (both int32 or both int64)"
            )
    (index_dtype,) = index_dtypes
    if index_dtype not in INDEX_DTYPES:
        raise DtypeMismatchError(f"{name} has index dtype {index_dtype}; use int32 or int64 indices")
    check_indices(A, name)
    if A.requires_grad:
        warn_dense_constructor_gradient(A)  # torch's CSR constructor would make the gradient dense: O(n²)


def check_indices(A: torch.Tensor, name: str = "A") -> None:
    """Check ``A``'s index tensors in ``O(nnz)``, before any backend (or torch kernel) reads them.

    torch builds sparse tensors without checking them (``check_invariants``
    is off by default), and a broken index crashes the process or corrupts
    memory in the libraries behind the backends. Checked:

    * COO (2-D, or ``(b, n, n)`` with three sparse dimensions): every index
      non-negative and below its dimension's size;
    * a COO tensor flagged coalesced: its entries sorted and none stored
      twice (an uncoalesced one is coalesced, summing duplicates, by the
      solve);
    * CSR (also batched, member by member): ``crow[0] = 0``,
      ``crow[-1] = nnz``, ``crow`` non-decreasing, every column index in
      ``[0, n)``, and no column stored twice in one row. torch's own CSR
      invariants forbid such duplicates, and the libraries behind the
      backends read them differently (PARDISO crashes or hangs on them), so
      they are refused rather than summed: the message shows how to sum them.

    Cost: a min/max reduction over the indices, a difference of the row
    pointers and of the column indices (columns sorted within rows are the
    fast path; unsorted rows cost one sort); the offending entry is located
    only when one is found.
    Measured at n = 10⁵ (2-D Poisson, nnz = 5·10⁵, one thread;
    ``benchmarks/check_indices.py``): 0.9 ms for CSR, 1.1 ms for COO, against
    523 ms for a scipy/splu solve (0.2 %).

    Parameters
    ----------
    A : Tensor
        A sparse COO or CSR tensor (layout and index dtypes already checked).
    name : str
        For messages.

    Raises
    ------
    StructureError
        Naming the first bad entry and what it should be.

    Examples
    --------
    >>> import torch
    >>> A = torch.sparse_coo_tensor(torch.tensor([[0, 1], [1, 3]]), torch.ones(2), (2, 2), check_invariants=False)
    >>> check_indices(A)
    Traceback (most recent call last):
    ...
    tsgu_core.errors.StructureError: A's COO index of entry 1 in dimension 1 is 3; it must lie in [0, 2)
    """
    if A.layout == torch.sparse_coo:
        _check_coo_indices(A, name)
        _check_coo_coalesced(A, name)
    elif A.layout == torch.sparse_csr:
        _check_csr_indices(A, name)
        _check_csr_duplicates(A, name)


def _check_coo_coalesced(A: torch.Tensor, name: str) -> None:
    """A COO tensor that claims to be coalesced must have sorted, distinct entries (else its values are misread)."""
    indices = A._indices()
    if not A.is_coalesced() or indices.shape[1] < 2:
        return
    keys = indices[0]
    for dim in range(1, indices.shape[0]):
        keys = keys * A.shape[dim] + indices[dim]
    steps = torch.diff(keys)
    if not bool(steps.le(0).any()):
        return
    entry = int(torch.nonzero(steps.le(0))[0, 0]) + 1
    raise StructureError(
        f"{name} is flagged coalesced but its COO entry {entry} (index {indices[:, entry].tolist()}) is "
        f"{'a duplicate of' if bool(steps[entry - 1] == 0) else 'out of order after'} entry {entry - 1}; build it "
        f"without is_coalesced=True: torch.sparse_coo_tensor({name}._indices(), {name}._values(), {name}.shape)"
        " (tsgu sums duplicates of an uncoalesced COO tensor)"
    )


def _check_csr_duplicates(A: torch.Tensor, name: str) -> None:
    """No column stored twice in one row (the indices are already known to be in range)."""
    crow, col = A.crow_indices(), A.col_indices()
    batched = crow.dim() == 2
    crow2, col2 = (crow, col) if batched else (crow.unsqueeze(0), col.unsqueeze(0))
    nnz, n = col2.shape[1], A.shape[-1]
    if nnz < 2:
        return
    # fast path: columns strictly increasing within every row; a step s (entry s to s + 1) may go down or stay
    # only where entry s + 1 starts a row, so the non-increasing steps are all at row starts
    down = torch.diff(col2, dim=1).le(0)
    starts = crow2[:, 1:-1].to(torch.int64) - 1  # the step into each of rows 1 … m-1
    at_start = down.gather(1, starts.clamp(0, nnz - 2)) & (starts >= 0) & (starts < nnz - 1)
    # a run of empty rows repeats a start: count each start once
    first = torch.ones_like(starts, dtype=torch.bool)
    first[:, 1:] = starts[:, 1:] != starts[:, :-1]
    if int(down.sum()) == int((at_start & first).sum()):
        return
    for member in range(col2.shape[0]):  # unsorted (or duplicated) columns somewhere: sort each member's keys
        rows = torch.repeat_interleave(
            torch.arange(crow2.shape[1] - 1, device=col.device), torch.diff(crow2[member].to(torch.int64))
        )
        keys = torch.sort(rows * n + col2[member].to(torch.int64)).values
        twice = torch.nonzero(torch.diff(keys).eq(0))
        if twice.numel():
            key = int(keys[int(twice[0, 0])])
            where = f" (batch member {member})" if batched else ""
            raise StructureError(
                f"{name} stores column {key % n} of row {key // n} more than once{where}; CSR holds each (row, "
                "column) once (torch's CSR invariants require it, and the solver libraries misread duplicates). "
                f"To sum duplicates, pass an uncoalesced COO tensor, which tsgu coalesces: "
                f"torch.sparse_coo_tensor({name}.to_sparse_coo().indices(), {name}.values(), {name}.shape)"
            )


def _check_coo_indices(A: torch.Tensor, name: str) -> None:
    indices = A._indices()  # (sparse_dim, nnz), uncoalesced allowed
    if indices.shape[1] == 0:
        return
    sizes = list(A.shape[: A.sparse_dim()])
    low, high = torch.stack([indices.amin(dim=1), indices.amax(dim=1)]).tolist()
    if min(low) >= 0 and all(h < size for h, size in zip(high, sizes, strict=True)):
        return
    limits = torch.tensor(sizes, dtype=indices.dtype, device=indices.device).unsqueeze(1)
    bad = ((indices < 0) | (indices >= limits)).any(dim=0)
    entry = int(torch.nonzero(bad)[0, 0])
    column = indices[:, entry].tolist()
    dim = next(d for d, (i, size) in enumerate(zip(column, sizes, strict=True)) if not 0 <= i < size)
    raise StructureError(
        f"{name}'s COO index of entry {entry} in dimension {dim} is {column[dim]}; it must lie in [0, {sizes[dim]})"
    )


def _check_csr_indices(A: torch.Tensor, name: str) -> None:
    crow, col = A.crow_indices(), A.col_indices()
    batched = crow.dim() == 2
    crow2, col2 = (crow, col) if batched else (crow.unsqueeze(0), col.unsqueeze(0))
    nnz, n = col2.shape[1], A.shape[-1]

    def where(member: int) -> str:
        return f" (batch member {member})" if batched else ""

    first, last = crow2[:, 0], crow2[:, -1]
    steps = torch.diff(crow2, dim=1)
    checks = [
        first.ne(0).any(),
        last.ne(nnz).any(),
        steps.lt(0).any() if steps.numel() else torch.tensor(False),
        (col2.amin() < 0) | (col2.amax() >= n) if nnz else torch.tensor(False),
    ]
    bad_first, bad_last, decreasing, bad_col = torch.stack([c.to(crow.device) for c in checks]).tolist()
    if bad_first:
        member = int(torch.nonzero(first.ne(0))[0, 0])
        raise StructureError(
            f"{name}'s crow_indices[0] is {int(first[member])}{where(member)}; the row pointers must start at 0"
        )
    if bad_last:
        member = int(torch.nonzero(last.ne(nnz))[0, 0])
        raise StructureError(
            f"{name}'s crow_indices[-1] is {int(last[member])}{where(member)} but {name} stores {nnz} entries; "
            "the last row pointer must equal nnz"
        )
    if decreasing:
        member, row = (int(i) for i in torch.nonzero(steps.lt(0))[0])
        raise StructureError(
            f"{name}'s crow_indices decrease at row {row}{where(member)}: crow_indices[{row + 1}] = "
            f"{int(crow2[member, row + 1])} < crow_indices[{row}] = {int(crow2[member, row])}; row pointers must "
            "not decrease"
        )
    if bad_col:
        member, entry = (int(i) for i in torch.nonzero((col2 < 0) | (col2 >= n))[0])
        raise StructureError(
            f"{name}'s col_indices[{entry}] is {int(col2[member, entry])}{where(member)}; column indices must lie "
            f"in [0, {n})"
        )


def check_rhs(B: Any, A: torch.Tensor, name: str = "B") -> None:
    """Check that ``B`` is dense, ``(m,)`` or ``(m, k)`` for ``A`` ``(m, n)`` — ``(b, n)`` or ``(b, n, k)``
    for a batched ``A`` — with ``A``'s dtype and device."""
    if A.dim() == 2:
        _check_dense(B, name, A.shape[0], A.dtype, A.device, f"A of shape {tuple(A.shape)}")
        return
    batch, n = A.shape[0], A.shape[-1]
    if not isinstance(B, torch.Tensor) or B.layout != torch.strided:
        raise LayoutError(f"{name} must be a dense (strided) torch tensor, got {type(B).__name__}")
    if B.dim() not in (2, 3) or tuple(B.shape[:2]) != (batch, n):
        raise ShapeError(
            f"{name} must have shape ({batch}, {n}) or ({batch}, {n}, k) to match the batched A of shape "
            f"{tuple(A.shape)}, got {tuple(B.shape)}"
        )
    _check_dense(B.reshape(batch * n, -1), name, batch * n, A.dtype, A.device, f"A of shape {tuple(A.shape)}")


def _check_dense(X: Any, name: str, n: int, dtype: torch.dtype, device: torch.device, against: str) -> None:
    if not isinstance(X, torch.Tensor):
        raise LayoutError(f"{name} must be a dense torch tensor, got {type(X).__name__}")
    if X.layout != torch.strided:
        raise LayoutError(f"{name} must be dense (torch.strided), got {X.layout}: convert it with {name}.to_dense()")
    if X.dim() not in (1, 2) or X.shape[0] != n:
        transposed = X.dim() == 2 and X.shape[1] == n and name in ("B", "b")
        hint = f"; its columns are rows here: pass {name}.T (tsgu takes one right-hand side per column)"
        raise ShapeError(
            f"{name} must have shape ({n},) or ({n}, k) to match {against}, got {tuple(X.shape)}"
            + (hint if transposed else "")
        )
    if X.dtype != dtype:
        raise DtypeMismatchError(
            f"{name} has dtype {X.dtype} but A has {dtype}; tsgu does not cast silently: "
            f"use {name}.to(A.dtype) (here {name}.to({dtype})) or convert A"
            + (_COMPLEX_NOTE if X.dtype.is_complex != dtype.is_complex else "")
        )
    if X.device != device:
        raise DeviceMismatchError(
            f"{name} is on {X.device} but A is on {device}; move one with .to(device) — tsgu does not copy silently"
        )


_COMPLEX_NOTE = (
    "; a real and a complex operand are never promoted silently (the gradients' dtypes would change): "
    "make both complex, or both real"
)


def check_values(values: Any, A: torch.Tensor) -> None:
    """Check a values tensor for ``A``'s pattern: dense, shaped like ``A.values()``, ``A``'s dtype and device."""
    if not isinstance(values, torch.Tensor) or values.layout != torch.strided:
        raise LayoutError(f"values must be a dense torch tensor, got {type(values).__name__}")
    expected = tuple(A.values().shape) if A.layout == torch.sparse_csr else (A._nnz(),)
    if tuple(values.shape) != expected:
        raise ShapeError(f"values must have shape {expected} to match A's stored entries, got {tuple(values.shape)}")
    _check_dense(values.reshape(-1), "values", values.numel(), A.dtype, A.device, "A's stored entries")


def check_finite(**tensors: torch.Tensor) -> None:
    """Raise :class:`NonFiniteError` if a tensor holds NaN or infinity (``check_finite(A=values, B=B)``)."""
    for label, tensor in tensors.items():
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            raise NonFiniteError(
                f"{label} contains {bad} non-finite value(s) (NaN or infinity); a solve would return garbage. "
                f"Find them with (~torch.isfinite({label}{'.values()' if label == 'A' else ''})).nonzero()"
            )


def check_x0(x0: Any, Bk: torch.Tensor) -> torch.Tensor:
    """Check an initial guess against ``B`` (as ``(..., n, k)``); return it detached, shaped like ``Bk``."""
    if not isinstance(x0, torch.Tensor) or x0.layout != torch.strided:
        raise LayoutError(f"x0 must be a dense torch tensor, got {type(x0).__name__}")
    if x0.shape != Bk.shape and x0.shape != Bk.shape[:-1]:
        raise ShapeError(f"x0 must have B's shape {tuple(Bk.shape)} (or without its last axis), got {tuple(x0.shape)}")
    if x0.shape == Bk.shape[:-1] and Bk.shape[-1] != 1:
        raise ShapeError(f"x0 must have B's shape {tuple(Bk.shape)}, got {tuple(x0.shape)}")
    if x0.dtype != Bk.dtype:
        raise DtypeMismatchError(
            f"x0 has dtype {x0.dtype} but A has {Bk.dtype}; tsgu does not cast silently: use x0.to({Bk.dtype})"
        )
    if x0.device != Bk.device:
        raise DeviceMismatchError(f"x0 is on {x0.device} but A is on {Bk.device}; tsgu does not copy silently")
    return x0.detach().reshape(Bk.shape)
