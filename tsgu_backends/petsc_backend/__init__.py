"""Backend ``petsc``: PETSc's KSP solvers through petsc4py, in one process or distributed over MPI.

Importing this package does not import petsc4py; see the backend's docstring.
"""
