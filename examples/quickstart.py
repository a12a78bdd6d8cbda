"""Solve a nonsymmetric sparse system and backpropagate through it, on every available CPU backend."""

import torch

import tsgu_core
from tsgu_core.testing import convection_diffusion_2d

A = convection_diffusion_2d(30).requires_grad_()  # n = 900, nonsymmetric, CSR
b = torch.ones(A.shape[0], dtype=torch.float64, requires_grad=True)

for entry in tsgu_core.list_backends():
    if not entry.availability("cpu"):
        print(f"{entry.name:8s} skipped: {entry.availability('cpu').reason}")
        continue
    A.grad = b.grad = None
    x, info = tsgu_core.solve(A, b, backend=entry.name, return_info=True)
    loss = x.square().sum()
    loss.backward()
    print(
        f"{entry.name:8s} method={info.method:9s} residual={info.max_residual:.1e} "
        f"iterations={info.iterations} loss={loss.item():.6f} |dL/dA|={A.grad.values().norm():.4f}"
    )
print(tsgu_core.explain(A))
