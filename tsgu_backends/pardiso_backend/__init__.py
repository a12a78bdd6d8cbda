"""Backend ``pardiso``: Intel MKL PARDISO on the CPU, through pypardiso's solver object.

Importing this package imports neither pypardiso nor MKL; see
:class:`tsgu_backends.pardiso_backend.backend.PardisoBackend`.
"""
