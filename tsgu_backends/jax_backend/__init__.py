"""Backend ``jax``: ``jax.scipy.sparse.linalg`` Krylov methods and a direct ``spsolve``.

Tensors cross to JAX through DLPack (no copy), float64 is enabled only for
the duration of a call (``jax.enable_x64``, never process-wide), every
column of ``B`` is its own Krylov solve (``vmap``), and compiled solves are
cached so that repeated calls with the same shapes do not recompile.
"""
