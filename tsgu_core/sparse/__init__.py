"""Sparse patterns and batches: the matrices the engine solves with, checked once.

* :mod:`~tsgu_core.sparse.pattern` — ``SparsePattern``: the index structure, apart from the values.
* :mod:`~tsgu_core.sparse.structure` — symmetry and diagonal checks behind ``assume=``.
* :mod:`~tsgu_core.sparse.batch` — batched ``A``: members grouped by pattern.
* :mod:`~tsgu_core.sparse.validate` — every input check, before any backend work.
* :mod:`~tsgu_core.sparse.interop` — SciPy, CuPy and JAX matrices to and from torch.

Imports only run downwards: this layer uses :mod:`tsgu_core.plugins`, :mod:`tsgu_core.base` and the errors.
"""
