"""Backend ``cudss``: NVIDIA cuDSS on CUDA tensors, through nvmath-python's ``DirectSolver``.

Importing this package imports neither nvmath nor any CUDA library; see
:class:`tsgu_backends.cudss_backend.backend.CudssBackend`.
"""
