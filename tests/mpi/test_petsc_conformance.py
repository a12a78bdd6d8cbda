"""The conformance suite for the petsc backend in one process (run in the PETSc environment by tests/test_petsc.py)."""

import pytest

from tsgu_core.testing import conformance_cases, run_case


# PETSc's KSP keeps state between solves: repeating a backward pass reproduces its gradient to ~1e-13,
# not bit for bit (measured with petsc4py 3.18), which gradcheck's reentrancy test must allow.
@pytest.mark.parametrize("case", conformance_cases("petsc", nondet_tol=1e-10), ids=str)
def test_conformance(case):
    run_case(case)
