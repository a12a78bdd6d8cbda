"""The ``pardiso`` backend: Intel MKL PARDISO (through pypardiso) for CPU tensors.

PARDISO is a supernodal direct solver with a nested-dissection (METIS)
ordering: on 3-D meshes it factorizes 8–30× faster than SuperLU and with far
less fill. This backend drives PARDISO's phases itself:

* ``prepare`` converts ``A`` to 0-based CSR arrays once (``iparm[34] = 1``,
  no copies per call), chooses the matrix type from the pattern (see
  :func:`choose_mtypes`), runs the analysis (phase 11) once and the numerical
  factorization (phase 22) once per matrix — for a batch sharing one pattern,
  the analysis once and one factorization per member in the same handle
  (``maxfct = b``).
* ``solve`` runs phase 33 for all columns of ``B`` in one call; the backward's
  transpose solve uses the same factors with ``iparm[11] = 2`` (Aᵀ x = b):
  no second factorization.
* The factors are freed (phase −1) when the prepared state is garbage
  collected (``weakref.finalize``), or by :meth:`PardisoHandle.release`.
* PARDISO never reports a singular matrix on its own: it perturbs tiny pivots
  (``iparm[13]`` counts them) and returns an answer. A factorization with
  perturbed pivots is not trusted — the next matrix type is tried, and when
  none is left that member is factorized by SuperLU (partial pivoting), which
  raises :class:`~tsgu_core.errors.SingularMatrixError` for a singular ``A``.
  Empty rows or columns raise it at once.

pypardiso's :class:`PyPardisoSolver` finds and loads MKL's ``mkl_rt``; its
loaded ``pardiso`` routine is called directly (pypardiso's ``solve``/
``factorize`` keep a copy of ``A`` and compare it on every call, convert the
indices to 1-based on every call, and support neither float32, transposed
solves of a CSR matrix, nor several factorizations per handle).

``MKL_THREADING_LAYER`` is set to ``GNU`` for the process if it is unset,
before MKL is first loaded: MKL's default Intel OpenMP runtime clashes with the
GNU OpenMP that torch uses. MKL's thread count follows ``MKL_NUM_THREADS``
(or ``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import collections
import ctypes
import functools
import importlib.util
import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from tsgu_core import (
    Availability,
    BackendReport,
    InvalidOptionError,
    MethodSpec,
    Option,
    SingularMatrixError,
    SolveOptions,
    SparsePattern,
)
from tsgu_core.errors import SolveFailedError
from tsgu_core.plugins.kit import row_indices, row_pointers, superlu, transpose_csr

__all__ = ["METHODS", "MTYPES", "PardisoBackend", "PardisoHandle", "choose_mtypes"]

INSTALL = "pip install pypardiso  (or pip install 'tsgu[all]'; MKL wheels exist for x86-64 only)"
MTYPES = {11: "real nonsymmetric", 1: "real structurally symmetric", 2: "real symmetric positive definite"}
ANALYSE, FACTORIZE, SOLVE, RELEASE = 11, 22, 33, -1
_ERRORS = {
    -1: "input inconsistent",
    -2: "not enough memory",
    -3: "reordering problem",
    -4: "zero pivot (or, for mtype 2, A is not positive definite)",
    -5: "unclassified internal error",
    -6: "reordering failed",
    -7: "diagonal matrix is singular",
    -8: "32-bit integer overflow: A is too large for PARDISO's 32-bit interface",
    -9: "not enough memory for out-of-core",
    -10: "cannot open out-of-core files",
    -11: "out-of-core read/write error",
    -13: "interrupted",
}

METHODS: dict[str, MethodSpec] = {
    "pardiso": MethodSpec(
        "pardiso",
        "direct",
        "general",
        {
            "mtype": Option(
                "PARDISO matrix type: 11 (real nonsymmetric), 1 (real structurally symmetric: symmetric pattern, "
                "diagonal pivoting only) or 2 (real SPD); None: chosen from A — 2 when A is symmetric with a "
                "positive diagonal, falling back to 11 if it is not positive definite; else 11",
                type=int,
                choices=(11, 1, 2),
            ),
        },
        "MKL PARDISO LU/Cholesky (METIS ordering), reused for the transpose solve (iparm[11] = 2)",
        batched=True,
    ),
}


def _pardiso(function: Any, pt: Any, maxfct: int, mnum: int, mtype: int, phase: int, n: int, arrays: tuple) -> int:
    """One call of MKL's ``pardiso`` routine; returns its error code.

    ``arrays`` is ``(a, ia, ja, iparm, b, x, nrhs)``; ``b`` and ``x`` are
    column-major ``(n, nrhs)`` buffers. Kept as a module function so that the
    tests can count the phases run.
    """
    a, ia, ja, iparm, b, x, nrhs = arrays
    i32 = ctypes.c_int32
    pointer = ctypes.POINTER(i32)
    error = i32(0)
    function(
        pt.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)),
        ctypes.byref(i32(maxfct)),
        ctypes.byref(i32(mnum)),
        ctypes.byref(i32(mtype)),
        ctypes.byref(i32(phase)),
        ctypes.byref(i32(n)),
        a.ctypes.data_as(ctypes.c_void_p),
        ia.ctypes.data_as(pointer),
        ja.ctypes.data_as(pointer),
        None,  # perm: unused
        ctypes.byref(i32(nrhs)),
        iparm.ctypes.data_as(pointer),
        ctypes.byref(i32(0)),  # msglvl
        b.ctypes.data_as(ctypes.c_void_p),
        x.ctypes.data_as(ctypes.c_void_p),
        ctypes.byref(error),
    )
    return int(error.value)


def _release(function: Any, pt: Any, maxfct: int, mtype: int, n: int, arrays: tuple) -> None:
    """Phase −1: free every factorization and the analysis held by the handle ``pt``."""
    _pardiso(function, pt, maxfct, 1, mtype, RELEASE, n, arrays)


def _iparm(mtype: int, dtype: Any) -> Any:
    """PARDISO's control array, 0-based as in MKL's C documentation."""
    import numpy as np

    iparm = np.zeros(64, dtype=np.int32)
    iparm[0] = 1  # use the values below, not PARDISO's defaults
    iparm[1] = 2  # nested-dissection ordering (METIS)
    iparm[7] = 0  # iterative refinement only where pivots were perturbed (such factors are not used)
    iparm[9] = 13 if mtype != 2 else 8  # perturb pivots below 1e-13·‖A‖
    iparm[10] = 1 if mtype == 11 else 0  # scaling
    iparm[12] = 2 if mtype == 11 else 0  # (advanced) weighted matching: measured robust where 1 perturbs pivots
    iparm[17] = -1  # report the non-zeros of the factors
    iparm[27] = 1 if dtype == np.float32 else 0  # single precision
    iparm[34] = 1  # 0-based indices
    return iparm


@functools.cache
def _load_pardiso() -> Any:
    """MKL's ``pardiso`` routine, loaded by pypardiso's solver object."""
    os.environ.setdefault("MKL_THREADING_LAYER", "GNU")  # before MKL is first loaded; see the module docstring
    from pypardiso import PyPardisoSolver

    return PyPardisoSolver()._mkl_pardiso


class PardisoHandle:
    """One PARDISO handle: the analysis of one pattern and the factors of ``maxfct`` matrices on it.

    The factors live in MKL's memory until :meth:`release` is called or the
    handle is garbage collected (``weakref.finalize`` runs phase −1).

    Parameters
    ----------
    mtype : int
        PARDISO matrix type (11, 1 or 2).
    indptr, indices : numpy.ndarray
        0-based CSR arrays (int32, sorted within rows; for ``mtype = 2`` the upper triangle).
    values : numpy.ndarray
        ``(maxfct, nnz)`` values of the matrices (float32 or float64).
    """

    def __init__(self, mtype: int, indptr: Any, indices: Any, values: Any) -> None:
        import numpy as np

        self.mtype = mtype
        self.n = int(indptr.shape[0] - 1)
        self.maxfct = int(values.shape[0])
        self.indptr, self.indices, self.values = indptr, indices, values
        self.iparm = _iparm(mtype, values.dtype)
        self.pt = np.zeros(64, dtype=np.int64)
        self.function = _load_pardiso()
        self._dummy = np.zeros(1, dtype=values.dtype)
        arrays = (self._dummy, indptr, indices, self.iparm, self._dummy, self._dummy, 1)
        self.finalizer = weakref.finalize(self, _release, self.function, self.pt, self.maxfct, mtype, self.n, arrays)

    def _call(self, phase: int, member: int, b: Any = None, x: Any = None, nrhs: int = 1) -> int:
        b = self._dummy if b is None else b
        x = self._dummy if x is None else x
        arrays = (self.values[member], self.indptr, self.indices, self.iparm, b, x, nrhs)
        return _pardiso(self.function, self.pt, self.maxfct, member + 1, self.mtype, phase, self.n, arrays)

    def analyse(self) -> None:
        """Phase 11: ordering and symbolic factorization, once for every member."""
        _check(self._call(ANALYSE, 0), "analysis")

    def factorize(self, member: int) -> tuple[int, int]:
        """Phase 22 for one member: returns PARDISO's error code and the number of perturbed pivots."""
        error = self._call(FACTORIZE, member)
        if error not in (0, -4):
            _check(error, "factorization")
        return error, int(self.iparm[13])

    def solve(self, member: int, B: Any, transpose: bool) -> Any:
        """Phase 33 for all columns of ``B`` (``(n, k)``) at once; returns ``X`` as ``(n, k)``."""
        import numpy as np

        columns = np.ascontiguousarray(B.T)  # (k, n) row-major = (n, k) column-major, as PARDISO wants
        X = np.empty_like(columns)
        self.iparm[11] = 2 if transpose and self.mtype != 2 else 0
        _check(self._call(SOLVE, member, columns, X, columns.shape[0]), "solve")
        return X.T

    @property
    def factor_nonzeros(self) -> int:
        """Non-zeros in the factors (``iparm[17]``) of the last factorization."""
        return int(self.iparm[17])

    def release(self) -> None:
        """Free the factors now (phase −1); later solves are an error."""
        self.finalizer()


def _check(error: int, what: str) -> None:
    if error == 0:
        return
    meaning = _ERRORS.get(error, "unknown error")
    if error == -4:
        raise SingularMatrixError(f"A is singular: PARDISO's {what} found a zero pivot (error -4)")
    raise SolveFailedError(f"PARDISO's {what} failed with error {error}: {meaning}")


@dataclass
class _Pattern:
    """0-based, row-sorted CSR arrays of ``A`` (one pattern, ``b`` value rows) and facts about its structure."""

    indptr: Any
    indices: Any
    values: Any  # (b, nnz)
    rows: Any  # the row of each stored entry
    transpose_order: Any = None  # entry k of Aᵀ (in CSR order) is entry transpose_order[k] of A
    facts: dict[str, bool] = field(default_factory=dict)


def _csr_arrays(A: torch.Tensor) -> _Pattern:
    """The CSR arrays of a COO/CSR tensor or a batched CSR tensor, sorted within rows, values copied."""
    import numpy as np

    n = A.shape[-1]
    if A.layout == torch.sparse_coo:
        coo = A if A.is_coalesced() else A.coalesce()
        rows = coo.indices()[0].numpy()
        indices = coo.indices()[1].numpy()
        indptr = row_pointers(rows, n)
        values = coo.values().numpy()[None, :]
    else:
        batched = A.dim() == 3
        crow = (A.crow_indices()[0] if batched else A.crow_indices()).numpy()
        col = (A.col_indices()[0] if batched else A.col_indices()).numpy()
        values = A.values().numpy() if batched else A.values().numpy()[None, :]
        indptr, indices = crow, col
        rows = row_indices(indptr)
        unsorted = np.flatnonzero((np.diff(indices) < 0) & (rows[1:] == rows[:-1]))
        if unsorted.size:
            order = np.lexsort((indices, rows))
            indices, values = indices[order], values[:, order]
    if max(int(indptr[-1]), n) >= 2**31 - 1:
        raise SolveFailedError(f"A has {int(indptr[-1])} stored entries: more than PARDISO's 32-bit interface holds")
    return _Pattern(
        indptr.astype(np.int32),
        indices.astype(np.int32),
        np.array(values, order="C", copy=True),
        rows,
    )


def _member_scales(values: Any) -> Any:
    """Per member (row of ``values``), the power of two ``s`` that brings ``max |s·values|`` into ``[1, 2)``.

    One PARDISO handle analyses a batch once, with member 0's values: its
    scaling and matching then serve every member. Members ``1e-300`` and
    ``1e160`` apart overflowed there; scaled, every member has entries of
    order one, and ``(s·A) X = s·B`` has the same ``X``. Scaling by a power of
    two is exact (float32 values are scaled in float64, then cast back).
    """
    import numpy as np

    largest = np.abs(values).max(axis=1).astype(np.float64) if values.shape[1] else np.zeros(values.shape[0])
    usable = np.isfinite(largest) & (largest > 0)
    _, exponent = np.frexp(np.where(usable, largest, 1.0))
    return np.where(usable, np.ldexp(1.0, 1 - exponent), 1.0)


def _structure(p: _Pattern) -> None:
    """Fill ``p.facts``: empty rows/columns, pattern and value symmetry, a positive stored diagonal."""
    import numpy as np

    n = p.indptr.shape[0] - 1
    p.facts["empty"] = bool((np.diff(p.indptr) == 0).any() or (np.bincount(p.indices, minlength=n) == 0).any())
    t_indptr, t_indices, p.transpose_order = transpose_csr(p.rows, p.indices, n)
    symmetric_pattern = np.array_equal(t_indptr, p.indptr) and np.array_equal(t_indices, p.indices)
    p.facts["symmetric pattern"] = bool(symmetric_pattern)
    p.facts["symmetric values"] = bool(symmetric_pattern) and bool((p.values[:, p.transpose_order] == p.values).all())
    diagonal = p.rows == p.indices
    p.facts["full diagonal"] = int(diagonal.sum()) == n
    p.facts["positive diagonal"] = p.facts["full diagonal"] and bool((p.values[:, diagonal] > 0).all())


def choose_mtypes(facts: dict[str, bool], mtype: int | None) -> list[int]:
    """The PARDISO matrix types to try, in order, for a pattern with these ``facts``.

    Without an explicit ``mtype``: 2 (Cholesky) then 11 when ``A`` is
    symmetric with a positive stored diagonal (so possibly SPD; a failed
    Cholesky falls back), else 11. Type 1 (structurally symmetric, diagonal
    pivoting without matching) is used only when asked for: measured on
    nonsymmetric values with small diagonals it loses 4 digits against 11 and
    is faster only in the solve phase.

    >>> choose_mtypes({"symmetric values": True, "positive diagonal": True, "symmetric pattern": True}, None)
    [2, 11]
    >>> choose_mtypes({"symmetric values": False, "positive diagonal": True, "symmetric pattern": True}, None)
    [11]
    """
    if mtype is None:
        return [2, 11] if facts["symmetric values"] and facts["positive diagonal"] else [11]
    if mtype == 2 and not facts["symmetric values"]:
        raise InvalidOptionError(
            "mtype=2 (SPD) needs a symmetric A: a symmetric pattern, a positive diagonal and values symmetric to "
            "1000ε relative (max |a_ij − a_ji| / max |a_ij|); use mtype=11"
        )
    if mtype == 1 and not facts["symmetric pattern"]:
        raise InvalidOptionError("mtype=1 (structurally symmetric) needs a symmetric pattern; use mtype=11")
    if mtype in (1, 2) and not facts["full diagonal"]:
        raise InvalidOptionError(f"mtype={mtype} needs every diagonal entry of A stored; use mtype=11")
    return [mtype]


def _for_mtype(p: _Pattern, mtype: int, symmetric_part: bool = False) -> tuple[Any, Any, Any]:
    """CSR arrays as PARDISO wants them for ``mtype``: the upper triangle for 2, everything otherwise.

    With ``symmetric_part`` (``mtype = 2`` of a pattern-symmetric ``A``), the values are those of
    ``(A + Aᵀ)/2``.
    """
    import numpy as np

    if mtype != 2:
        return p.indptr, p.indices, p.values
    values = (p.values + p.values[:, p.transpose_order]) / 2 if symmetric_part else p.values
    keep = p.indices >= p.rows
    n = p.indptr.shape[0] - 1
    indptr = row_pointers(p.rows[keep], n).astype(np.int32)
    return indptr, np.ascontiguousarray(p.indices[keep]), np.ascontiguousarray(values[:, keep])


NEAR_SYMMETRY = 16.0
"""× the dtype's ε: an ``A`` this close to symmetric (``max |a_ij − a_ji| / max |a_ij|``) gets Cholesky unasked.

FEM assembly in floating point leaves ``K`` symmetric to a few ulps only (scikit-fem's
elasticity matrix: ``|K − Kᵀ| ≤ 2.8e-17``); with ``assume="spd"`` (which the core
checks to ``SYMMETRY_FACTOR·ε``) or an explicit ``mtype=2`` the same is done up to
``SYMMETRY_FACTOR·ε``. The factors are those of the symmetric part ``(A + Aᵀ)/2``, and
every solution is refined against ``A`` itself (up to two steps of
``x ← x + S⁻¹(b − A x)``), so the answer is ``A``'s, not ``S``'s.
"""


def _symmetric_part(p: _Pattern, A: torch.Tensor, options: SolveOptions, requested: int | None) -> str:
    """Why the symmetric part of ``A`` may be factorized by Cholesky (``""``: it may not; ``A`` is then unchanged).

    Sets ``p.facts["symmetric values"]`` where it may. Needs a symmetric pattern, a positive stored diagonal and
    values symmetric to :data:`NEAR_SYMMETRY`·ε — or, with ``assume="spd"`` or ``mtype=2``, to the core's
    ``SYMMETRY_FACTOR``·ε — measured scale-free by :func:`tsgu_core.sparse.structure.asymmetry`.
    """
    from tsgu_core.sparse.structure import SYMMETRY_FACTOR, asymmetry

    facts = p.facts
    if facts["symmetric values"] or not (facts["symmetric pattern"] and facts["positive diagonal"]):
        return ""
    if requested not in (None, 2):
        return ""
    values = A.values() if A.layout == torch.sparse_csr or A.is_coalesced() else A.coalesce().values()
    measured = asymmetry(SparsePattern.of(A), values.detach())
    eps = torch.finfo(A.dtype).eps
    asked = options.assume == "spd" or requested == 2
    if measured > (SYMMETRY_FACTOR if asked else NEAR_SYMMETRY) * eps:
        return ""
    facts["symmetric values"] = True
    why = "assume='spd'" if options.assume == "spd" else "mtype=2" if requested == 2 else f"≤ {NEAR_SYMMETRY:g}ε"
    return f"of the symmetric part (A + Aᵀ)/2, A being symmetric to {measured / eps:.2g}ε ({why}); refined against A"


TINY_PIVOT = 2.0**-26
"""Below this ratio of SuperLU's smallest to largest pivot (``|U_ii|``), a member PARDISO perturbed counts as singular.

``cond(U) ≥ max|U_ii| / min|U_ii|``, so a ratio under ``√ε`` (float64) proves ``U``
ill-conditioned beyond half the working precision. Measured: pyamg's pure-Neumann
``unit_square`` (singular, null space the constants) 1.4e-15; 2-D Poisson (14 × 14) 0.46.
"""


def _tiny_pivots(superlu: dict[int, Any], batched: bool, dtype: torch.dtype) -> str:
    """What SuperLU's factors of the members PARDISO perturbed show: ``""``, or which pivots are tiny."""
    import numpy as np

    seen = []
    limit = TINY_PIVOT if dtype == torch.float64 else 2.0**-12  # √ε of float64 / float32
    for member, factors in sorted(superlu.items()):
        pivots = np.abs(factors.U.diagonal())
        ratio = float(pivots.min() / pivots.max()) if pivots.size and pivots.max() > 0 else 0.0
        if ratio < limit:
            where = f" (batch member {member})" if batched else ""
            seen.append(f"PARDISO perturbed a pivot{where} and SuperLU's smallest pivot is {ratio:.2g} of its largest")
        if len(seen) == 3:
            break
    return "; ".join(seen)


def _member_matrix(p: _Pattern, member: int) -> Any:
    """Member ``member`` of ``A`` (as scaled) as a SciPy CSR matrix, sharing the arrays."""
    import scipy.sparse as sp

    n = p.indptr.shape[0] - 1
    return sp.csr_matrix((p.values[member], p.indices, p.indptr), shape=(n, n))


def _refine(handle: PardisoHandle, matrix: Any, member: int, B: Any, X: Any, transpose: bool) -> Any:
    """Up to two steps ``X ← X + S⁻¹(B − op(A) X)`` while the residual shrinks (``S``: the symmetric part)."""
    import numpy as np

    op = matrix.T if transpose else matrix
    residual = B - op @ X
    norm = np.linalg.norm(residual)
    for _ in range(2):
        if not norm > 0:
            break
        candidate = X + handle.solve(member, residual, transpose)
        candidate_residual = B - op @ candidate
        candidate_norm = np.linalg.norm(candidate_residual)
        if not candidate_norm < norm:
            break
        X, residual, norm = candidate, candidate_residual, candidate_norm
    return X


@dataclass
class PardisoState:
    """The prepared state: one PARDISO handle, and SuperLU factors for members PARDISO could not trust."""

    handle: PardisoHandle | None
    superlu: dict[int, Any]
    batched: bool
    members: int
    message: str
    scales: Any = None  # (members,) float64 powers of two: member m was factorized as scales[m]·A_m
    singular: str = ""  # what the factorizations saw that shows a member singular (see BackendReport.singular)
    exact: list[Any] | None = None  # SciPy CSR of each (scaled) member where the handle holds its symmetric part


DEFAULT_FROM: dict[str, int | None] = {"2-D-like": 199_809, "3-D-like": 17_576}
"""The smallest ``n`` from which PARDISO, not SuperLU, is the CPU default, per pattern class (``None``: never).

Derived by ``benchmarks/default_direct.py`` (``derive_rule``; results in
``benchmarks/results/default_direct.md``, 2-D and 3-D Poisson, one thread): PARDISO from the
smallest measured ``n`` from which on its warm saving per solve repays its extra first-call
cost — MKL's load, 3.6 s on that (loaded) machine, 1.2–1.9 s unloaded — within 10 solves.
Measured warm PARDISO ÷ SuperLU: 2-D 0.69–0.92 from n = 16 384, saving 1.2 s per solve only at
n = 199 809; 3-D 0.48 at n = 8 000, 0.25 at 17 576, 0.09 at 64 000. A one-shot solve (``tsgu
solve``) below these sizes no longer pays MKL's load; a program that solves many smaller 3-D
systems gains with ``tsgu_core.set_default_backend("cpu", "pardiso")``.
"""
RULE_SOURCE = "benchmarks/results/default_direct.md"
PLANAR_BELOW = 2.4
"""A pattern whose :func:`mesh_dimension` is below this is "2-D-like", else "3-D-like"."""


def mesh_dimension(crow: Any, col: Any) -> tuple[float, int]:
    """How the pattern's graph grows with distance, ``N(r) ∝ r^d``: ``(d, D)`` with ``D`` the diameter found.

    ``D`` comes from a double sweep of breadth-first searches along the stored
    entries ``i → j`` (SciPy's, ``O(nnz)`` each; what row 0 reaches); from the far
    end, ``N(r)`` counts the nodes within distance ``r`` and
    ``d = log₂ (N(2r) / N(r))`` with ``r = D/6``. A 2-D mesh of any stencil gives
    about 2, a 3-D one about 3 (exact for grids: 2.0 for 2-D Poisson, 3.0 for 3-D);
    ``inf`` for a pattern too small to tell (``D < 6``), e.g. a random one.
    Measured: 35–100 ms at n = 1e5 (2-D Poisson, one thread, on a loaded 2-core machine).
    """
    import numpy as np
    import scipy.sparse as sp
    from scipy.sparse.csgraph import breadth_first_order

    n = len(crow) - 1
    graph = sp.csr_matrix((np.ones(len(col), dtype=np.int8), col, crow), shape=(n, n))

    far_end = int(breadth_first_order(graph, 0, return_predecessors=False)[-1])
    order, parents = breadth_first_order(graph, far_end, return_predecessors=True)
    # breadth-first order lists the levels one after the other, and each node's parent sits earlier, in order:
    # level k + 1 ends where the nodes whose parent lies beyond level k begin
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(len(order))
    parent_position = position[parents[order[1:]]]  # non-decreasing
    ends = [1]  # ends[k]: nodes within distance k
    while ends[-1] < len(order):
        ends.append(1 + int(np.searchsorted(parent_position, ends[-1], side="left")))
    diameter = len(ends) - 1
    r = diameter // 6
    if r < 1:
        return float("inf"), diameter
    near, far = ends[r], ends[2 * r]
    return float(np.log2(far / near)), diameter


_DIMENSIONS: collections.OrderedDict[tuple[object, ...], tuple[tuple[torch.Tensor, ...], tuple[float, int]]] = (
    collections.OrderedDict()
)
_DIMENSIONS_LOCK = threading.Lock()
_DIMENSIONS_KEPT = 4


def _cached_dimension(A: torch.Tensor) -> tuple[float, int]:
    """:func:`mesh_dimension` of ``A``'s pattern (a batch: its first member's), remembered for the last 4 patterns.

    Keyed on ``A``'s own index tensors (storage address, version and sizes) before any conversion, so a loop that
    solves with the same ``A`` — or rebuilds it from the same index tensors — measures once, COO or CSR. Each
    entry keeps its index tensors alive: a freed pattern's memory can then never be reused by another pattern
    whose tensors would match the key (a stale hit chose the solver of another matrix). Only matrices between
    the two classes' thresholds are measured, so the memory kept is bounded (four mid-size patterns' indices).
    """
    indices = (A._indices(),) if A.layout == torch.sparse_coo else (A.crow_indices(), A.col_indices())
    key = (A.layout, *((i.data_ptr(), i._version, i.numel()) for i in indices))
    with _DIMENSIONS_LOCK:
        if key in _DIMENSIONS:
            _DIMENSIONS.move_to_end(key)
            return _DIMENSIONS[key][1]
    if A.layout == torch.sparse_coo:
        A = A.detach().coalesce()
        A = (A if A.dim() == 2 else A[0].coalesce()).to_sparse_csr()
    crow, col = (A.crow_indices(), A.col_indices()) if A.dim() == 2 else (A.crow_indices()[0], A.col_indices()[0])
    found = mesh_dimension(crow.numpy(), col.numpy())
    with _DIMENSIONS_LOCK:
        _DIMENSIONS[key] = (indices, found)
        while len(_DIMENSIONS) > _DIMENSIONS_KEPT:
            _DIMENSIONS.popitem(last=False)
    return found


class PardisoBackend:
    """MKL PARDISO for CPU tensors (see the module docstring).

    Examples
    --------
    >>> backend = PardisoBackend()
    >>> backend.default_method, backend.priority > 100, bool(backend.is_available("cuda"))
    ('pardiso', True, False)

    With pypardiso installed, ``tsgu_core.solve(A, B)`` on the CPU uses it where
    it is faster than SuperLU (:meth:`priority_for`, :data:`DEFAULT_FROM`;
    ``tsgu_core.explain(A)`` says which and why);
    ``tsgu_core.solve(A, B, backend="pardiso", mtype=11)`` forces PARDISO's LU.
    """

    name = "pardiso"
    device_types = ("cpu",)
    methods = METHODS
    default_method = "pardiso"
    preferred_methods: ClassVar[dict[str, str]] = {"spd": "pardiso", "symmetric": "pardiso", "hermitian": "pardiso"}
    priority = 110  # above scipy's SuperLU (100) where priority_for says PARDISO is faster; see docs/backends.md
    complex_note = "real systems only: pypardiso exposes none of MKL PARDISO's complex matrix types"

    def priority_for(self, A: torch.Tensor) -> tuple[int, str]:
        """PARDISO's priority for ``A``: ``priority`` where it beats SuperLU, else 90 (below scipy's 100).

        The rule (:data:`DEFAULT_FROM`, measured in ``benchmarks/default_direct.py``): PARDISO from
        ``DEFAULT_FROM[class]`` unknowns on, where the class is "2-D-like" if the pattern's
        :func:`mesh_dimension` is below :data:`PLANAR_BELOW`, else "3-D-like".
        """
        n = A.shape[-1]
        thresholds = [t for t in DEFAULT_FROM.values() if t is not None]
        if not thresholds or n < min(thresholds):  # below every class's threshold: no need to look at the pattern
            return 90, f"n = {n}: SuperLU is faster below n = {min(thresholds, default=0)} ({RULE_SOURCE})"
        if None not in DEFAULT_FROM.values() and n >= max(thresholds):  # above every class's threshold
            return self.priority, f"n = {n} ≥ {max(thresholds)}: PARDISO is faster for any pattern ({RULE_SOURCE})"
        dimension, diameter = _cached_dimension(A)
        kind = "2-D-like" if dimension < PLANAR_BELOW else "3-D-like"
        threshold = DEFAULT_FROM[kind]
        shape = f"a {kind} pattern (mesh dimension {dimension:.2g} from diameter {diameter})"
        if threshold is None or n < threshold:
            where = "at every size measured" if threshold is None else f"below n = {threshold}"
            return 90, f"{shape}: SuperLU is faster {where} ({RULE_SOURCE})"
        return self.priority, f"{shape}, n = {n} ≥ {threshold}: PARDISO is faster ({RULE_SOURCE})"

    def is_available(self, device_type: str) -> Availability:
        if device_type != "cpu":
            return Availability.no(f"serves only the CPU, not {device_type!r}")
        if importlib.util.find_spec("pypardiso") is None:
            return Availability.no("pypardiso (MKL PARDISO) is not installed", install=INSTALL)
        return Availability.yes()

    def prepare(self, A: torch.Tensor, method: str, options: SolveOptions) -> PardisoState:
        requested = options["mtype"]  # declared: None, 11, 1 or 2
        pattern = _csr_arrays(A.detach())
        scales = _member_scales(pattern.values)
        pattern.values = (pattern.values * scales[:, None]).astype(pattern.values.dtype)  # exact: powers of two
        _structure(pattern)
        if pattern.facts["empty"]:
            raise SingularMatrixError("A is singular: it has an empty row or column (no stored entry)")
        members = pattern.values.shape[0]
        symmetric_part = _symmetric_part(pattern, A.detach(), options, requested)
        notes = []
        for position, mtype in enumerate(candidates := choose_mtypes(pattern.facts, requested)):
            last = position == len(candidates) - 1
            handle = PardisoHandle(mtype, *_for_mtype(pattern, mtype, bool(symmetric_part)))
            handle.analyse()
            untrusted = []
            for member in range(members):
                error, perturbed = handle.factorize(member)
                if error or perturbed:
                    untrusted.append(member)
                    reason = "not positive definite" if error else f"{perturbed} perturbed pivot(s)"
                    notes.append(f"mtype {mtype}{f' member {member}' if A.dim() == 3 else ''}: {reason}")
                    if not last:
                        break
            if untrusted and not last:
                handle.release()
                continue
            superlu = {member: self._superlu(pattern, member, A.dim() == 3) for member in untrusted}
            singular = _tiny_pivots(superlu, A.dim() == 3, A.dtype)
            used = handle if len(untrusted) < members else None
            if used is None:
                handle.release()
            message = f"PARDISO mtype {mtype} ({MTYPES[mtype]})"
            exact = None
            if mtype == 2 and symmetric_part and used is not None:
                message += " " + symmetric_part
                exact = [_member_matrix(pattern, member) for member in range(members)]
            if superlu:
                message += f"; SuperLU for {'every member' if used is None else sorted(superlu)}"
            if notes:
                message += f" ({'; '.join(notes)})"
            return PardisoState(used, superlu, A.dim() == 3, members, message, scales, singular, exact)
        raise AssertionError("unreachable: the last candidate always returns")

    @staticmethod
    def _superlu(pattern: _Pattern, member: int, batched: bool) -> Any:
        matrix = _member_matrix(pattern, member)
        return superlu(matrix, {}, what=f"batch member {member} of A" if batched else "A")

    def solve(
        self, state: PardisoState, B: torch.Tensor, *, transpose: bool, x0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, BackendReport]:
        batch = B if state.batched else B.unsqueeze(0)
        solutions = []
        for member in range(state.members):
            rhs = batch[member].detach().numpy()
            if state.scales is not None and state.scales[member] != 1.0:  # (s·A) X = s·B, s a power of two
                rhs = (rhs * state.scales[member]).astype(rhs.dtype)
            if member in state.superlu:
                X = state.superlu[member].solve(rhs, trans="T" if transpose else "N")
            else:
                assert state.handle is not None
                X = state.handle.solve(member, rhs, transpose)
                if state.exact is not None:
                    X = _refine(state.handle, state.exact[member], member, rhs, X, transpose)
            solutions.append(torch.from_numpy(X).to(B.dtype).contiguous())
        X = torch.stack(solutions) if state.batched else solutions[0]
        return X, BackendReport(message=state.message, singular=state.singular)
