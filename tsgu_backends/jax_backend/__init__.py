"""Backend ``jax``: ``jax.scipy.sparse.linalg`` Krylov methods and a direct ``spsolve``.

Tensors cross to JAX through DLPack (no copy), float64 is enabled only for
the duration of a call (``jax.enable_x64``, never process-wide), every
column of ``B`` is its own Krylov solve (``lax.map`` on the CPU, ``vmap`` on
a GPU), the CPU product is a hybrid ELL + COO one that XLA fuses (see
:mod:`tsgu_backends.jax_backend.operator`), and compiled solves are cached so
that repeated calls with the same shapes do not recompile.

Its public functions, for code that hands dense tensors to JAX itself (as
:mod:`tsgu_backends.compat` does): :func:`precision` (the float64 scope),
:func:`to_jax` and :func:`from_jax` (dense arrays through DLPack). Sparse
matrices cross with :func:`tsgu_core.to_jax` and :func:`tsgu_core.from_jax`.
"""

from tsgu_backends.jax_backend.convert import from_jax, precision, to_jax

__all__ = ["from_jax", "precision", "to_jax"]
