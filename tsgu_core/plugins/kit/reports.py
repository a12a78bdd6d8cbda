"""One report from many: merging the :class:`~tsgu_core.plugins.protocol.BackendReport` of parts of a solve.

A solve is often made of parts — the columns of ``B`` solved one by one,
the members of a batch, chunks of members — each with its own report. The
core merges the reports of a batch prepared member by member, and a backend
that splits a solve merges its parts' reports the same way, with
:func:`merge_reports`; :func:`combine_histories` merges residual histories.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tsgu_core.plugins.protocol import BackendReport

__all__ = ["combine_histories", "merge_reports"]


def combine_histories(histories: Iterable[Sequence[float] | None]) -> tuple[float, ...]:
    """Residual histories of separate solves (columns, batch members) as one: the largest value at each step.

    .. math:: h_i = \\max_j h^{(j)}_{\\min(i,\\, \\ell_j - 1)}, \\qquad i < \\max_j \\ell_j

    A shorter history holds its last value (that solve had finished);
    ``None`` and empty histories are left out.

    Examples
    --------
    >>> combine_histories([[1.0, 0.1], [1.0, 0.5, 0.01], None])
    (1.0, 0.5, 0.1)
    """
    kept = [list(h) for h in histories if h]
    length = max((len(h) for h in kept), default=0)
    return tuple(max(h[min(i, len(h) - 1)] for h in kept) for i in range(length))


def merge_reports(reports: Iterable[BackendReport]) -> BackendReport:
    """One report for the parts of a solve.

    Each field is merged so that the whole says no more than its parts:

    * ``iterations``: the most any part used; ``None`` (a direct method)
      when no part counted any;
    * ``converged``: ``False`` if any part failed; else ``None`` (no verdict)
      if any part gave no verdict; else ``True``. A known failure is never
      hidden by a part that cannot tell, and an unknown is never reported as
      success (the core's true-residual check decides in any case);
    * ``message``: the parts' distinct messages in the order first seen,
      joined by ``"; "``;
    * ``history``: :func:`combine_histories` of the parts' histories, ``None``
      when no part reported one;
    * ``singular``: the parts' distinct remarks that ``A`` looked singular,
      joined like the messages (a part that saw it is never hidden).

    Examples
    --------
    >>> a = BackendReport(iterations=12, converged=True, message="cycle 1", history=(1.0, 1e-9))
    >>> b = BackendReport(iterations=30, converged=None, message="cycle 1")
    >>> merge_reports([a, b])
    BackendReport(iterations=30, converged=None, message='cycle 1', history=(1.0, 1e-09), singular='')
    >>> merge_reports([a, BackendReport(converged=False)]).converged
    False
    >>> merge_reports([BackendReport(), BackendReport()])
    BackendReport(iterations=None, converged=None, message='', history=None, singular='')
    """
    parts = list(reports)
    iterations = [r.iterations for r in parts if r.iterations is not None]
    verdicts = [r.converged for r in parts]
    converged = False if False in verdicts else None if None in verdicts or not verdicts else True
    return BackendReport(
        iterations=max(iterations) if iterations else None,
        converged=converged,
        message="; ".join(dict.fromkeys(r.message for r in parts if r.message)),
        history=combine_histories(r.history for r in parts) or None,
        singular="; ".join(dict.fromkeys(r.singular for r in parts if r.singular)),
    )
