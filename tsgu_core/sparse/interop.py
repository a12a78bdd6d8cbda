"""Sparse matrices of SciPy, CuPy and JAX as torch sparse tensors, and back.

:func:`tsgu_core.solve` takes torch sparse tensors only (it never converts
silently). These converters are the explicit way in and out:

==========================  ====================================================
``from_scipy(M, layout)``   ``scipy.sparse`` matrix or array → CPU COO/CSR tensor
``to_scipy(A)``             CPU COO/CSR tensor → ``scipy.sparse`` ``coo``/``csr``
``from_cupy(M, layout)``    ``cupyx.scipy.sparse`` matrix → CUDA COO/CSR tensor
``to_cupy(A)``              CUDA COO/CSR tensor → ``cupyx.scipy.sparse`` matrix
``from_jax(M, layout)``     ``jax.experimental.sparse`` BCOO/BCSR → COO/CSR tensor
``to_jax(A, format)``       COO/CSR tensor → ``jax.experimental.sparse`` BCOO/BCSR
==========================  ====================================================

Values keep their dtype and indices their width where the target allows
(torch COO indices are always int64; JAX's are int32). Where the layouts
match, the result shares memory with its input (NumPy buffers on the CPU,
DLPack on devices), as ``torch.from_numpy`` does; ``.clone()`` it for an
independent copy. SciPy, CuPy and JAX are imported only when a converter for
them is called: importing ``tsgu_core`` imports none of them.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from tsgu_core.base.quiet import quiet_sparse_notices
from tsgu_core.errors import DeviceMismatchError, LayoutError
from tsgu_core.plugins.kit.csr import row_indices

__all__ = ["from_cupy", "from_jax", "from_scipy", "to_cupy", "to_jax", "to_scipy"]

LayoutName = Literal["csr", "coo"]


def _layout(layout: str | torch.layout) -> torch.layout:
    named = {"csr": torch.sparse_csr, "coo": torch.sparse_coo}
    if isinstance(layout, torch.layout) and layout in named.values():
        return layout
    if isinstance(layout, str) and layout.lower() in named:
        return named[layout.lower()]
    raise LayoutError(f"layout must be 'csr' or 'coo' (or torch.sparse_csr / torch.sparse_coo), got {layout!r}")


def _parts(A: Any, where: str) -> tuple[str, tuple[torch.Tensor, ...]]:
    """CSR ``(values, col, crow)`` or coalesced COO ``(values, row, col)`` of a 2-D torch sparse tensor."""
    if not isinstance(A, torch.Tensor) or A.layout not in (torch.sparse_csr, torch.sparse_coo) or A.dim() != 2:
        got = f"layout {A.layout} with shape {tuple(A.shape)}" if isinstance(A, torch.Tensor) else type(A).__name__
        raise LayoutError(f"{where} needs a 2-D torch sparse COO or CSR tensor, got {got}")
    A = A.detach()
    if A.layout == torch.sparse_csr:
        return "csr", (A.values(), A.col_indices(), A.crow_indices())
    A = A if A.is_coalesced() else A.coalesce()
    indices = A.indices()
    return "coo", (A.values(), indices[0], indices[1])


def _from_parts(layout: torch.layout, shape: tuple[int, int], csr: Any, coo: Any) -> torch.Tensor:
    """Build the tensor from ``csr() -> (crow, col, values)`` or ``coo() -> (row, col, values)``."""
    with quiet_sparse_notices():  # torch's CSR notices: tsgu builds this tensor, so they are tsgu's to hide
        if layout == torch.sparse_csr:
            crow, col, values = csr()
            if crow.dtype != col.dtype:  # SciPy may widen one index array only
                crow, col = crow.to(torch.int64), col.to(torch.int64)
            return torch.sparse_csr_tensor(crow, col, values, shape)
        row, col, values = coo()
        indices = torch.stack([row.to(torch.int64), col.to(torch.int64)])
        return torch.sparse_coo_tensor(indices, values, shape).coalesce()


def from_scipy(M: Any, layout: LayoutName | torch.layout = "csr") -> torch.Tensor:
    """A SciPy sparse matrix or array as a CPU torch sparse tensor.

    Parameters
    ----------
    M : scipy.sparse matrix or array
        Any format (CSR, CSC, COO, BSR, ...); converted with ``tocsr()`` or
        ``tocoo()`` first. Duplicate entries are summed.
    layout : {"csr", "coo"} or torch.layout
        The tensor's layout. CSR from a canonical CSR ``M`` shares its memory.

    Returns
    -------
    Tensor
        ``M``'s shape, dtype and (for CSR) index dtype.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from tsgu_core.sparse.interop import from_scipy
    >>> A = from_scipy(sp.csr_array([[4.0, 1.0], [2.0, 3.0]]))
    >>> A.layout, A.dtype, A.to_dense().tolist()
    (torch.sparse_csr, torch.float64, [[4.0, 1.0], [2.0, 3.0]])
    >>> from_scipy(sp.coo_array([[0.0, 5.0], [0.0, 0.0]]), layout="coo").indices().tolist()
    [[0], [1]]
    """
    import scipy.sparse as sp

    if not sp.issparse(M):
        raise LayoutError(
            f"from_scipy needs a scipy.sparse matrix or array, got {type(M).__name__}"
            f"{'; for a dense NumPy array use torch.from_numpy(M).to_sparse_csr()' if hasattr(M, '__array__') else ''}"
        )
    chosen = _layout(layout)

    def csr() -> tuple[torch.Tensor, ...]:
        C = M.tocsr()
        if not C.has_canonical_format:
            C = C.copy()
            C.sum_duplicates()
        return torch.from_numpy(C.indptr), torch.from_numpy(C.indices), torch.from_numpy(C.data)

    def coo() -> tuple[torch.Tensor, ...]:
        C = M.tocoo()
        return torch.from_numpy(C.row), torch.from_numpy(C.col), torch.from_numpy(C.data)

    return _from_parts(chosen, tuple(M.shape), csr, coo)


def to_scipy(A: torch.Tensor, *, matrix: bool = False) -> Any:
    """A CPU torch sparse COO/CSR tensor as a SciPy sparse array (or matrix), sharing its memory.

    Parameters
    ----------
    A : Tensor
        2-D sparse COO (coalesced first if it is not) or CSR, on the CPU.
    matrix : bool
        Return the legacy ``csr_matrix``/``coo_matrix`` instead of
        ``csr_array``/``coo_array`` (they differ in what ``*`` means).

    Examples
    --------
    >>> import torch
    >>> from tsgu_core.sparse.interop import to_scipy
    >>> M = to_scipy(torch.tensor([[4.0, 0.0], [2.0, 3.0]]).to_sparse_csr())
    >>> type(M).__name__, M.toarray().tolist()
    ('csr_array', [[4.0, 0.0], [2.0, 3.0]])
    """
    import scipy.sparse as sp

    kind, (values, first, second) = _parts(A, "to_scipy")
    if A.device.type != "cpu":
        raise DeviceMismatchError(f"to_scipy needs a CPU tensor, got one on {A.device}; use to_cupy for CUDA")
    shape = tuple(A.shape)
    if kind == "csr":
        maker = sp.csr_matrix if matrix else sp.csr_array
        return maker((values.numpy(), first.numpy(), second.numpy()), shape=shape, copy=False)
    maker = sp.coo_matrix if matrix else sp.coo_array
    return maker((values.numpy(), (first.numpy(), second.numpy())), shape=shape, copy=False)


def from_cupy(M: Any, layout: LayoutName | torch.layout = "csr") -> torch.Tensor:
    """A ``cupyx.scipy.sparse`` matrix as a CUDA torch sparse tensor, through DLPack (no copy where formats match).

    Parameters
    ----------
    M : cupyx.scipy.sparse matrix
        Any format; converted with ``tocsr()`` or ``tocoo()`` first.
    layout : {"csr", "coo"} or torch.layout
        The tensor's layout.
    """
    chosen = _layout(layout)

    def csr() -> tuple[torch.Tensor, ...]:
        C = M.tocsr()
        return torch.from_dlpack(C.indptr), torch.from_dlpack(C.indices), torch.from_dlpack(C.data)

    def coo() -> tuple[torch.Tensor, ...]:
        C = M.tocoo()
        return torch.from_dlpack(C.row), torch.from_dlpack(C.col), torch.from_dlpack(C.data)

    return _from_parts(chosen, tuple(M.shape), csr, coo)


def to_cupy(A: torch.Tensor) -> Any:
    """A CUDA torch sparse COO/CSR tensor as a ``cupyx.scipy.sparse`` ``coo_matrix``/``csr_matrix`` (DLPack)."""
    kind, arrays = _parts(A, "to_cupy")
    if A.device.type != "cuda":
        raise DeviceMismatchError(f"to_cupy needs a CUDA tensor, got one on {A.device}; use to_scipy on the CPU")
    import cupy
    import cupyx.scipy.sparse as csp

    values, first, second = (cupy.from_dlpack(t.contiguous()) for t in arrays)
    if kind == "csr":
        return csp.csr_matrix((values, first, second), shape=tuple(A.shape))
    return csp.coo_matrix((values, (first, second)), shape=tuple(A.shape))


def from_jax(M: Any, layout: LayoutName | torch.layout = "csr") -> torch.Tensor:
    """A ``jax.experimental.sparse`` BCOO or BCSR matrix as a torch sparse tensor (on the array's device).

    Parameters
    ----------
    M : BCOO or BCSR
        2-D, without batch or dense dimensions. Duplicate entries are summed.
    layout : {"csr", "coo"} or torch.layout
        The tensor's layout.

    Examples
    --------
    >>> import torch
    >>> from tsgu_core.sparse.interop import from_jax, to_jax
    >>> A = torch.tensor([[4.0, 0.0], [2.0, 3.0]]).to_sparse_csr()
    >>> from_jax(to_jax(A), layout="coo").to_dense().tolist()
    [[4.0, 0.0], [2.0, 3.0]]
    """
    chosen = _layout(layout)
    if getattr(M, "n_batch", 0) or getattr(M, "n_dense", 0) or len(M.shape) != 2:
        raise LayoutError(f"from_jax needs a 2-D BCOO/BCSR matrix without batch or dense dimensions, got {M!r}")

    def csr() -> tuple[torch.Tensor, ...]:
        if hasattr(M, "indptr"):
            return torch.from_dlpack(M.indptr), torch.from_dlpack(M.indices), torch.from_dlpack(M.data)
        coo_tensor = _from_parts(torch.sparse_coo, tuple(M.shape), csr, coo).to_sparse_csr()
        return coo_tensor.crow_indices(), coo_tensor.col_indices(), coo_tensor.values()

    def coo() -> tuple[torch.Tensor, ...]:
        bcoo = M.to_bcoo() if hasattr(M, "indptr") else M
        indices = torch.from_dlpack(bcoo.indices)
        return indices[:, 0], indices[:, 1], torch.from_dlpack(bcoo.data)

    return _from_parts(chosen, tuple(M.shape), csr, coo)


def to_jax(A: torch.Tensor, format: Literal["bcoo", "bcsr"] = "bcoo") -> Any:
    """A torch sparse COO/CSR tensor as a ``jax.experimental.sparse`` BCOO (default) or BCSR matrix.

    Through DLPack, on the tensor's device, with int32 indices. A float64
    tensor is converted inside ``jax.enable_x64(True)`` so that its values
    stay float64; use the result where 64-bit types are enabled.

    Examples
    --------
    >>> import torch
    >>> from tsgu_core.sparse.interop import to_jax
    >>> M = to_jax(torch.tensor([[4.0, 0.0], [2.0, 3.0]]).to_sparse_coo())
    >>> type(M).__name__, M.nse
    ('BCOO', 3)
    """
    kind, (values, first, second) = _parts(A, "to_jax")
    if format not in ("bcoo", "bcsr"):
        raise LayoutError(f"format must be 'bcoo' or 'bcsr', got {format!r}")
    import contextlib

    import jax
    import jax.dlpack
    from jax.experimental import sparse

    def to_array(t: torch.Tensor) -> Any:
        return jax.dlpack.from_dlpack(t.contiguous())

    scope = jax.enable_x64(True) if values.dtype in (torch.float64, torch.complex128) else contextlib.nullcontext()
    shape = tuple(A.shape)
    with scope:
        if format == "bcsr":
            csr = A.detach() if kind == "csr" else A.detach().coalesce().to_sparse_csr()
            parts = (csr.values(), csr.col_indices().to(torch.int32), csr.crow_indices().to(torch.int32))
            return sparse.BCSR(tuple(to_array(p) for p in parts), shape=shape)
        if kind == "csr":
            row = row_indices(second).to(second.dtype)
            first, second = row, first
        indices = torch.stack([first, second], dim=1).to(torch.int32)
        return sparse.BCOO((to_array(values), to_array(indices)), shape=shape, indices_sorted=True, unique_indices=True)


def conversion_hint(A: Any) -> str:
    """The converter to name when ``A`` is another library's matrix (never imports that library)."""
    module = type(A).__module__ or ""
    if module.startswith("scipy.sparse"):
        return "; convert it with tsgu_core.from_scipy(A, layout='csr')"
    if module.startswith("cupyx"):
        return "; convert it with tsgu_core.from_cupy(A, layout='csr')"
    if module.startswith("jax"):
        return "; convert it with tsgu_core.from_jax(A, layout='csr')"
    if module.startswith("numpy"):
        return (
            "; for a dense NumPy array use torch.from_numpy(A).to_sparse_csr(), "
            "for a scipy.sparse matrix tsgu_core.from_scipy(A, layout='csr')"
        )
    return ""
