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

    With ``conjugate``, how far ``A`` is from Hermitian. The pattern measures it
    (:meth:`SparsePattern.asymmetry <tsgu_core.sparse.pattern.SparsePattern.asymmetry>`):
    a distributed pattern compares across processes.
    """
    return pattern.asymmetry(values, conjugate=conjugate)


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
        found = pattern.first_bad_diagonal(values.detach())  # a distributed pattern decides collectively
        if found is not None:
            row, stored = found
            raise StructureError(
                f"{what} needs a symmetric positive definite A, but its diagonal entry ({row}, {row}) is "
                f"{'not stored' if not stored else 'not positive'}; an SPD matrix has a positive "
                "diagonal. Use assume='symmetric' (MINRES) or a general method"
            )
