"""The petsc backend's assembly, preconditioners and transpose checks in one process (PETSc environment only).

Run by tests/test_petsc.py inside the environment of scripts/setup-petsc-env.sh. Every numerical check is
against dense ``torch.linalg.solve`` autograd in float64.
"""

import pytest
import torch

import tsgu_core
from tsgu_core.plugins.protocol import SolveOptions
from tsgu_core.testing import convection_diffusion_2d, poisson_2d, random_nonsymmetric

pytest.importorskip("petsc4py", reason="needs petsc4py (scripts/setup-petsc-env.sh)")
BACKEND = tsgu_core.get_entry("petsc").backend


def layout_of(D: torch.Tensor, layout: str) -> torch.Tensor:
    return D.to_sparse() if layout == "coo" else D.to_sparse_csr()


def dense_gradients(D: torch.Tensor, B: torch.Tensor, G: torch.Tensor):
    D_ref, B_ref = D.clone().requires_grad_(), B.clone().requires_grad_()
    X = torch.linalg.solve(D_ref, B_ref if B.dim() == 2 else B_ref.unsqueeze(1))
    X = X if B.dim() == 2 else X.squeeze(1)
    (X * G).sum().backward()
    return X.detach(), B_ref.grad, D_ref.grad * (D != 0)


def solve_and_differentiate(D, B, G, layout, **options):
    A = layout_of(D, layout).requires_grad_()
    B_leaf = B.clone().requires_grad_()
    X, info = tsgu_core.solve(A, B_leaf, backend="petsc", return_info=True, **options)
    (X * G).sum().backward()
    return (X.detach(), B_leaf.grad, A.grad.to_dense()), info


def options(**extra) -> SolveOptions:
    return SolveOptions(rtol=1e-10, atol=0.0, maxiter=1000, extra=extra)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_assembly_is_preallocated_exactly_and_holds_A(layout):
    D = random_nonsymmetric(25, seed=3)
    state = BACKEND.prepare(layout_of(D, layout), "gmres", options(pc="bjacobi", petsc_options=None))
    assert state.matrix.getInfo()["mallocs"] == 0  # d_nnz/o_nnz from the CSR: no reallocation during assembly
    assert state.matrix.getInfo()["nz_used"] == int((D != 0).sum())
    dense = torch.from_numpy(state.matrix.convert("dense").getDenseArray().copy())
    assert torch.equal(dense, D)


CASES = [  # matrix, method, pc, how the transpose solve is done
    ("convection-diffusion", "gmres", "gamg", "transpose"),
    ("convection-diffusion", "gmres", "bjacobi", "transpose"),
    ("convection-diffusion", "bcgs", "ilu", "transpose"),
    ("poisson", "cg", "gamg", "transpose"),
    ("poisson", "cg", "hypre", "symmetric"),  # BoomerAMG's transposed cycle is not its transpose; A = Aᵀ
]
MATRICES = {
    "convection-diffusion": lambda: convection_diffusion_2d(6).to_dense(),
    "poisson": lambda: poisson_2d(6).to_dense(),
}


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("k", [None, 2])
@pytest.mark.parametrize(("matrix", "method", "pc", "mode"), CASES, ids=lambda c: str(c))
def test_amg_and_friends_in_both_directions(matrix, method, pc, mode, layout, k):
    D = MATRICES[matrix]()
    n = D.shape[0]
    generator = torch.Generator().manual_seed(11)
    B = torch.randn((n,) if k is None else (n, k), generator=generator, dtype=torch.float64)
    G = torch.randn(B.shape, generator=generator, dtype=torch.float64)
    assert BACKEND.prepare(layout_of(D, "csr"), method, options(pc=pc, petsc_options=None)).transpose == mode
    got, info = solve_and_differentiate(D, B, G, layout, method=method, pc=pc, rtol=1e-12)
    for what, mine, want in zip(("X", "dL/dB", "dL/dA"), got, dense_gradients(D, B, G), strict=True):
        torch.testing.assert_close(mine, want, rtol=1e-8, atol=1e-9, msg=f"{what} of {method}+{pc}")
    assert info.converged and info.backward is not None and info.backward.converged


@pytest.mark.parametrize(
    ("pc", "petsc_options", "why"),
    [
        ("hypre", None, "is not its transpose"),  # BoomerAMG: HYPRE_BoomerAMGSolveT is another preconditioner
        (None, {"pc_type": "sor"}, "cannot apply it transposed"),  # PETSc: SOR transposes only symmetric sweeps
    ],
)
def test_a_preconditioner_without_a_transpose_is_refused_for_a_nonsymmetric_A(pc, petsc_options, why):
    D = convection_diffusion_2d(6).to_dense()
    B = torch.ones(D.shape[0], dtype=torch.float64)
    state = BACKEND.prepare(layout_of(D, "csr"), "gmres", options(pc=pc, petsc_options=petsc_options))
    assert state.transpose == "refused"
    A = layout_of(D, "csr").requires_grad_()
    extra = {"pc": pc} if pc else {"petsc_options": petsc_options}
    X = tsgu_core.solve(A, B, backend="petsc", method="gmres", rtol=1e-12, **extra)
    torch.testing.assert_close(X.detach(), torch.linalg.solve(D, B), rtol=1e-8, atol=1e-10)  # forward: fine
    with pytest.raises(tsgu_core.errors.InvalidOptionError, match=why) as raised:  # backward: refused, typed
        X.sum().backward()
    assert raised.value.option == "pc"
    assert "pc='gamg'" in str(raised.value) and "method='lu'" in str(raised.value)


def test_an_unknown_preconditioner_is_an_error():
    with pytest.raises(tsgu_core.errors.InvalidOptionError, match="hypre"):
        tsgu_core.solve(poisson_2d(4), torch.ones(16, dtype=torch.float64), backend="petsc", pc="boomer")
