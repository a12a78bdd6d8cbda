"""What the core can verify, cheaply and exactly, about a structure claim on ``A``.

A user may tell :func:`tsgu_core.solve` what ``A`` is (``assume="spd"``, ...),
and a method declares what it needs (:attr:`MethodSpec.assumes
<tsgu_core.plugins.protocol.MethodSpec>`). Neither is taken on trust where a cheap
check can refute it:

* ``"symmetric"`` / ``"hermitian"`` (the same for real dtypes) / ``"spd"``:
  ``max |a_ij − a_ji| ≤ c·ε·max |a_ij|`` over the union of ``A``'s and
  ``Aᵀ``'s patterns (an entry missing on one side counts as zero), with
  ``c =`` :data:`SYMMETRY_FACTOR` and ``ε`` of the dtype — ``O(nnz log nnz)``;
  for a complex ``A``, ``"hermitian"`` compares with ``conj(a_ji)``
  (``A = Aᴴ``) and ``"symmetric"`` with ``a_ji`` (complex-symmetric,
  ``A = Aᵀ``, which is *not* Hermitian);
* ``"spd"`` also: every diagonal entry stored and positive (necessary, not
  sufficient: CG reports what it finds beyond that). For a complex ``A``
  ``"spd"`` means Hermitian positive definite: ``A = Aᴴ`` and a real
  positive diagonal.

What a *method* assumes (:attr:`MethodSpec.assumes
<tsgu_core.plugins.protocol.MethodSpec>`, ``method=True`` below) is read the way the
method needs it: ``"symmetric"`` and ``"spd"`` methods (MINRES, CG) need a
Hermitian ``A`` when it is complex — a complex-symmetric one is refused.

Positive definiteness itself is not checked (that would cost a
factorization); a CG solve on an indefinite ``A`` fails its residual check.
"""

from __future__ import annotations

import torch

from tsgu_core.errors import InvalidArgumentError, StructureError
from tsgu_core.sparse.pattern import SparsePattern

__all__ = ["ASSUMPTIONS", "SYMMETRY_FACTOR", "asymmetry", "check_structure"]

ASSUMPTIONS = ("general", "symmetric", "hermitian", "spd", "lower", "upper")
"""What ``assume=`` may say about ``A``."""

SYMMETRY_FACTOR = 1000.0
"""``A`` counts as symmetric when ``max |A − Aᵀ| ≤ SYMMETRY_FACTOR·ε·max |A|``."""


def check_assume(assume: object) -> str:
    """``assume`` if it is one of :data:`ASSUMPTIONS`, else :class:`InvalidArgumentError`."""
    if not isinstance(assume, str) or assume not in ASSUMPTIONS:
        raise InvalidArgumentError(f"assume must be one of {list(ASSUMPTIONS)}, got {assume!r}")
    return assume


def asymmetry(pattern: SparsePattern, values: torch.Tensor, *, conjugate: bool = False) -> float:
    """``max |a_ij − a_ji| / max |a_ij|`` (0 for a zero matrix); ``values`` ``(..., nnz)``, batches included.

    With ``conjugate``, ``max |a_ij − conj(a_ji)| / max |a_ij|``: how far ``A`` is from Hermitian.
    """
    distributed = getattr(pattern, "asymmetry", None)  # a DistributedPattern compares across processes
    if distributed is not None:
        return float(distributed(values))  # real: solve_distributed refuses a complex A before this
    if values.numel() == 0:
        return 0.0
    mirrored = values.conj() if conjugate and values.is_complex() else values
    mirror = _mirror_order(pattern)
    if mirror is not None:  # a_ji is values[mirror] at each stored (i, j)
        difference = values - mirrored[..., mirror]
    else:  # pair the entries by key: (i, j) gathers +a_ij and −a_ji
        n = pattern.n
        key = torch.cat([pattern.row * n + pattern.col, pattern.col * n + pattern.row])
        unique, inverse = torch.unique(key, return_inverse=True)
        signed = torch.cat([values, -mirrored], dim=-1)
        difference = values.new_zeros(*values.shape[:-1], unique.numel()).index_add(-1, inverse, signed)
    scale = values.abs().max()
    return float(difference.abs().max() / scale) if bool(scale > 0) else 0.0


def _mirror_order(pattern: SparsePattern) -> torch.Tensor | None:
    """For a structurally symmetric pattern in CSR order, ``order`` with ``a_ji = values[order]`` at each ``(i, j)``.

    ``None`` for any other pattern (the caller then pairs entries by key). Aᵀ's pattern in CSR order
    equals A's exactly when the pattern is symmetric, and then Aᵀ's values, ``values[order]``, sit at A's
    positions. Cost: one sort of the column indices, cached by the pattern and reused by the transposed
    solve of the backward; measured on the CPU at n = 1e5, nnz = 5e5: ~5 ms against ~50 ms for pairing by
    key with ``torch.unique``.
    """
    if pattern.crow is None or pattern.rows != pattern.n or type(pattern) is not SparsePattern:
        return None
    transposed, order = pattern.transposed()
    crow = transposed.crow
    if crow is not None and torch.equal(crow, pattern.crow) and torch.equal(transposed.col, pattern.col):
        return order
    return None


def check_structure(
    pattern: SparsePattern, values: torch.Tensor, needs: str, *, what: str, method: bool = False
) -> None:
    """Raise :class:`StructureError` if ``A`` visibly is not ``needs`` (``"symmetric"``, ``"hermitian"``, ``"spd"``).

    ``what`` says who needs it, for the message (e.g. ``"method 'cg'"`` or ``"assume='spd'"``).
    ``method=True`` reads ``needs`` as a method's :attr:`~tsgu_core.plugins.protocol.MethodSpec.assumes`: for a
    complex ``A`` a ``"symmetric"`` method needs a Hermitian ``A``.
    """
    if needs not in ("symmetric", "hermitian", "spd"):
        return
    tolerance = SYMMETRY_FACTOR * torch.finfo(values.dtype).eps
    hermitian = values.is_complex() and (needs in ("hermitian", "spd") or method)
    measured = asymmetry(pattern, values.detach(), conjugate=hermitian)
    if measured > tolerance:
        if hermitian:
            raise StructureError(
                f"{what} needs a Hermitian A (A = Aᴴ) for complex values, but max |a_ij − conj(a_ji)| is "
                f"{measured:.3g} of max |a_ij| (allowed: {tolerance:.3g}); a complex-symmetric A (Aᵀ = A) is not "
                "Hermitian: use a general method (e.g. method='gmres', or the backend's default)"
            )
        raise StructureError(
            f"{what} needs a symmetric A, but max |a_ij − a_ji| is {measured:.3g} of max |a_ij| "
            f"(allowed: {tolerance:.3g}); use a general method (e.g. method='gmres', or the backend's default) "
            "or make A symmetric, e.g. (A + A.T) / 2"
        )
    if needs == "spd":
        found = _first_bad_diagonal(pattern, values.detach())
        if found is not None:
            row, stored = found
            raise StructureError(
                f"{what} needs a symmetric positive definite A, but its diagonal entry ({row}, {row}) is "
                f"{'not stored' if not stored else 'not positive'}; an SPD matrix has a positive "
                "diagonal. Use assume='symmetric' (MINRES) or a general method"
            )


def _first_bad_diagonal(pattern: SparsePattern, values: torch.Tensor) -> tuple[int, bool] | None:
    """The first row whose diagonal entry is unstored or not positive, and whether it is stored; else None."""
    distributed = getattr(pattern, "first_bad_diagonal", None)  # a DistributedPattern decides collectively
    if distributed is not None:
        found: tuple[int, bool] | None = distributed(values)
        return found
    diagonal = pattern.diagonal(values).real  # Hermitian (checked before): a real diagonal
    stored = torch.zeros(pattern.n, dtype=torch.bool, device=pattern.row.device)
    stored[pattern.row[pattern.row == pattern.col]] = True
    bad = (~stored) | (diagonal <= 0).reshape(-1, pattern.n).any(0)
    if not bool(bad.any()):
        return None
    row = int(bad.nonzero()[0])
    return row, bool(stored[row])
