"""The solve engine: one pipeline from a request to a checked, differentiable solution.

* :mod:`~tsgu_core.engine.request` — ``SolveRequest``: what a front door was asked, frozen once.
* :mod:`~tsgu_core.engine.pipeline` — plan (validate, select, prepare) and execute a solve.
* :mod:`~tsgu_core.engine.prepared` — a prepared state: the one place that calls a backend.
* :mod:`~tsgu_core.engine.convergence` — residuals measured and judged; typed failures.
* :mod:`~tsgu_core.engine.autograd` — THE gradient rule (``torch.autograd.Function``).
* :mod:`~tsgu_core.engine.traced` — its twin for ``torch.compile`` and ``torch.func``: a custom op on dense tensors.

Imports only run downwards: this layer uses :mod:`tsgu_core.sparse`, :mod:`tsgu_core.plugins`,
:mod:`tsgu_core.base` and the errors; never a front door.
"""
