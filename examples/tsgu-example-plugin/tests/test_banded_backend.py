"""The tsgu conformance suite for the banded backend, plus a banded-specific check.

Works installed (the entry point registers the plugin) or from a source tree
(the fixture registers it in-process, as ``plugins.md`` shows).
"""

import pytest
import torch

import tsgu_core
from tsgu_core.testing import conformance_cases, run_case

if "banded" not in [entry.name for entry in tsgu_core.list_backends()]:  # not installed: register in-process
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "src"))
    import tsgu_banded

    tsgu_core.register_plugin(tsgu_banded, name="banded")


@pytest.mark.parametrize("case", conformance_cases("banded"), ids=str)
def test_conformance(case):
    run_case(case)


def test_tridiagonal_with_gradients():
    n = 50
    D = 2 * torch.eye(n, dtype=torch.float64) - 0.5 * torch.diag(torch.ones(n - 1, dtype=torch.float64), 1)
    D = D - 0.9 * torch.diag(torch.ones(n - 1, dtype=torch.float64), -1)  # nonsymmetric
    A = D.to_sparse_csr().requires_grad_()
    b = torch.randn(n, dtype=torch.float64, requires_grad=True)
    x = tsgu_core.solve(A, b, backend="banded")
    x.square().sum().backward()
    D_ref = D.clone().requires_grad_()
    torch.linalg.solve(D_ref, b.detach()).square().sum().backward()
    torch.testing.assert_close(A.grad.to_dense(), D_ref.grad * (D != 0))
