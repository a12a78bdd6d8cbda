"""The conformance suite over every registered backend × method × device (see tsgu_core.testing)."""

import pytest

from tsgu_core.testing import conformance_cases, run_case


@pytest.mark.parametrize("case", conformance_cases(), ids=str)
def test_conformance(case):
    run_case(case)
