"""The front doors users call; each freezes its request and hands it to :mod:`tsgu_core.engine`.

* :mod:`~tsgu_core.api.solve` — ``solve`` and ``solve_values``.
* :mod:`~tsgu_core.api.triangular` — ``triangular_solve``.
* :mod:`~tsgu_core.api.lstsq` — ``lstsq`` for a tall ``A``.
* :mod:`~tsgu_core.api.factorize` — ``factorize``: one factorization, many solves.
* :mod:`~tsgu_core.api.distributed` — ``solve_distributed`` under MPI.
* :mod:`~tsgu_core.api.nn` — ``SparseSolve``, public as :mod:`tsgu_core.nn`.

The public names are re-exported lazily from :mod:`tsgu_core`.
"""
