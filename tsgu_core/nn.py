"""``torch.nn`` building blocks, public as ``tsgu_core.nn`` (defined in :mod:`tsgu_core.api.nn`).

>>> from tsgu_core.nn import SparseSolve
"""

from tsgu_core.api.nn import SparseSolve

__all__ = ["SparseSolve"]
