"""Tools for testing tsgu and its plugins: the conformance suite, test matrices, a reference backend.

Importing this module imports pytest only when :func:`conformance_cases` is called.
"""

from tsgu_core.testing.conformance import CHECKS, Case, conformance_cases, run_case
from tsgu_core.testing.dense_backend import DenseBackend
from tsgu_core.testing.matrices import (
    convection_diffusion_2d,
    matrix_for,
    poisson_2d,
    random_nonsymmetric,
    random_spd,
    random_symmetric_indefinite,
    to_layout,
    triangular_pair,
)

__all__ = [
    "CHECKS",
    "Case",
    "DenseBackend",
    "conformance_cases",
    "convection_diffusion_2d",
    "matrix_for",
    "poisson_2d",
    "random_nonsymmetric",
    "random_spd",
    "random_symmetric_indefinite",
    "run_case",
    "to_layout",
    "triangular_pair",
]
