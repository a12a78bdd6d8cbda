"""The built-in solver backends of tsgu, each an ordinary plugin.

Every backend here is registered through the ``tsgu`` entry-point group of
the ``tsgu`` distribution, exactly as a third-party plugin is, and builds on
the same public plugin kit (:mod:`tsgu_core.plugins.kit`). Importing this
package imports no solver library (no SciPy, CuPy, JAX, PETSc, PARDISO or
cuDSS): each backend imports its library when it is first asked to prepare
a solve.

* ``tsgu_backends.torch_backend`` — backend ``torch``: CG, BiCGSTAB, MINRES,
  GMRES and LSQR in pure torch, on CPU and CUDA.
* ``tsgu_backends.scipy_cupy_backend`` — backends ``scipy`` (CPU: SuperLU and
  ``scipy.sparse.linalg``'s Krylov and least-squares methods) and ``cupy``
  (CUDA: ``cupyx.scipy.sparse.linalg``).
* ``tsgu_backends.jax_backend`` — backend ``jax``: ``jax.scipy.sparse.linalg``
  Krylov methods and ``spsolve``, through DLPack.
* ``tsgu_backends.petsc_backend`` — backend ``petsc``: PETSc's KSP solvers
  through petsc4py, also distributed over MPI.
* ``tsgu_backends.pardiso_backend`` — backend ``pardiso``: Intel oneMKL PARDISO
  (through pypardiso's MKL) on the CPU.
* ``tsgu_backends.cudss_backend`` — backend ``cudss``: NVIDIA cuDSS (through
  nvmath-python) on CUDA; its probe imports nothing on a CPU-only machine.

:mod:`tsgu_backends.compat` — drop-in functions with the signatures of
torchsparsegradutils, written on the public API of the core and of these backends.
"""
