"""Backends ``scipy`` (CPU) and ``cupy`` (CUDA): SciPy's and CuPy's sparse solvers.

Both share the method names of ``scipy.sparse.linalg`` (``splu``, ``spsolve``,
``cg``, ``gmres``, ...), SciPy's option names, and one conversion layer
(:mod:`tsgu_backends.scipy_cupy_backend.convert`): zero-copy between CPU torch tensors
and NumPy, and through DLPack between CUDA torch tensors and CuPy. Nothing
here imports SciPy or CuPy until a solve is prepared.
"""
