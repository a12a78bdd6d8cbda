"""The built-in solver backends of tsgu, each an ordinary plugin.

Every backend here is registered through the ``tsgu`` entry-point group of
the ``tsgu`` distribution, exactly as a third-party plugin is. Importing this
package imports no solver library (no SciPy, CuPy or JAX): each backend
imports its library when it is first asked to prepare a solve.

* ``tsgu_backends.torch_backend`` — backend ``torch``: Krylov methods in pure
  torch, on CPU and CUDA.
* ``tsgu_backends.cudss_backend`` — backend ``cudss``: NVIDIA cuDSS (through
  nvmath-python) on CUDA; its probe imports nothing on a CPU-only machine.
"""
