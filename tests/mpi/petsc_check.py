"""Run under ``mpiexec -n P``: distributed solves and gradients against the single-process dense answer.

Every rank builds the same nonsymmetric matrix, takes its block of rows, and
solves with tsgu_core.solve_distributed on the petsc backend; the gathered
solution and gradients must match dense torch.linalg.solve autograd. Exits
non-zero on any mismatch. Used by tests/test_petsc.py.
"""

import sys

import torch
from mpi4py import MPI

import tsgu_core
from tsgu_core.testing import random_nonsymmetric

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
N = 30
counts = [N // size + (r < N % size) for r in range(size)]
start = sum(counts[:rank])
rows = slice(start, start + counts[rank])

D = random_nonsymmetric(N, seed=42)
failures = []
cases = [
    ("gmres", {"pc": "bjacobi", "rtol": 1e-12}),
    ("bcgs", {"pc": "jacobi", "rtol": 1e-12}),
    ("gmres", {"pc": "none", "rtol": 1e-12, "petsc_options": {"ksp_gmres_restart": 40}}),
    ("lu", {}),
]
for (method, options), layout, k in [(c, lay, kk) for c in cases for lay in ("coo", "csr") for kk in (None, 3)]:
    generator = torch.Generator().manual_seed(7)
    B = torch.randn((N,) if k is None else (N, k), generator=generator, dtype=torch.float64)
    G = torch.randn(B.shape, generator=generator, dtype=torch.float64)
    block = D[rows].to_sparse() if layout == "coo" else D[rows].to_sparse_csr()
    A_local = block.requires_grad_()
    B_local = B[rows].clone().requires_grad_()
    X_local, info = tsgu_core.solve_distributed(A_local, B_local, method=method, return_info=True, **options)
    (X_local * G[rows]).sum().backward()

    D_ref = D.clone().requires_grad_()
    B_ref = B.clone().requires_grad_()
    X_ref = torch.linalg.solve(D_ref, B_ref if k else B_ref.unsqueeze(1))
    X_ref = X_ref if k else X_ref.squeeze(1)
    (X_ref * G).sum().backward()
    checks = {
        "X": (X_local.detach(), X_ref.detach()[rows]),
        "dL/dB": (B_local.grad, B_ref.grad[rows]),
        "dL/dA": (A_local.grad.to_dense(), (D_ref.grad * (D != 0))[rows]),
    }
    for what, (got, want) in checks.items():
        error = float((got - want).abs().max())
        if not error < 1e-8:
            failures.append(f"rank {rank}: {method} {options} {layout} k={k}: {what} off by {error:.2e}")
    if not info.converged or (method != "lu" and info.backward is not None and not info.backward.converged):
        failures.append(f"rank {rank}: {method}: not converged ({info.message})")

all_failures = comm.gather(failures, root=0)
if rank == 0:
    flat = [f for part in all_failures for f in part]
    print("\n".join(flat) if flat else f"petsc distributed check: {len(cases) * 4} cases OK on {size} rank(s)")
ok = comm.bcast(rank != 0 or not [f for part in all_failures for f in part], root=0)
sys.exit(0 if ok else 1)
