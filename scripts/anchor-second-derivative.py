#!/usr/bin/env python
"""Measure the anchor's Hessian-vector products against a truly dense reference (and tsgu's solve_values).

torchsparsegradutils' higher-order tests build ``A`` from parameters ``theta``
with ``torch.sparse_coo_tensor`` and compare against a "dense reference" that
is ``A.to_dense()`` of the *same* sparse constructor — whose backward drops
the second-order term, so both sides lose it and agree. This script repeats
those three problems (float64) and compares the Hessian-vector product
``∇_θ (1ᵀ ∇_θ L)`` with ``L = ‖X‖²`` of

* the anchor's ``sparse_generic_solve`` (its own code, not tsgu's drop-in),
* the anchor's own dense reference (through the sparse constructor),
* tsgu's ``solve_values`` (values passed as a dense tensor),

with a truly dense reference: ``A`` assembled by ``torch.diag`` only and
``torch.linalg.solve`` (itself checked by central finite differences of the
exact first-order gradient). Prints a table and writes
``benchmarks/results/anchor-second-derivative.md``.

Usage: ``OMP_NUM_THREADS=1 PYTHONPATH=$PWD python scripts/anchor-second-derivative.py``
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

DTYPE = torch.float64


def tridiagonal_parts(theta: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The anchor's parameterisations: (diagonal, upper, lower) of a tridiagonal ``A``."""
    if kind == "spd":
        off = -0.1 * torch.sigmoid(theta[:-1])
        return theta.square() + 2.0, off, off
    n = 6
    return theta[:n].square() + 3.0, 0.05 * torch.tanh(theta[n : 2 * n - 1]), -0.08 * torch.sigmoid(theta[2 * n - 1 :])


def pattern(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.cat([torch.arange(n), torch.arange(n - 1), torch.arange(1, n)])
    cols = torch.cat([torch.arange(n), torch.arange(1, n), torch.arange(n - 1)])
    return rows, cols


def sparse_from(theta: torch.Tensor, kind: str) -> torch.Tensor:
    """As the anchor's tests build it: ``torch.sparse_coo_tensor`` of the parts, coalesced."""
    diag, upper, lower = tridiagonal_parts(theta, kind)
    n = diag.numel()
    return torch.sparse_coo_tensor(torch.stack(pattern(n)), torch.cat([diag, upper, lower]), (n, n)).coalesce()


def truly_dense(theta: torch.Tensor, kind: str) -> torch.Tensor:
    diag, upper, lower = tridiagonal_parts(theta, kind)
    return torch.diag(diag) + torch.diag(upper, 1) + torch.diag(lower, -1)


def hessian_vector(solve: Callable[[torch.Tensor], torch.Tensor], theta0: torch.Tensor) -> torch.Tensor:
    theta = theta0.clone().requires_grad_()
    (grad,) = torch.autograd.grad(solve(theta).square().sum(), theta, create_graph=True)
    (hv,) = torch.autograd.grad(grad.sum(), theta)
    return hv


def finite_difference(
    solve: Callable[[torch.Tensor], torch.Tensor], theta0: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """``H·1`` by central differences of the (first-order, exact) gradient along ``1``."""

    def grad(theta: torch.Tensor) -> torch.Tensor:
        theta = theta.clone().requires_grad_()
        return torch.autograd.grad(solve(theta).square().sum(), theta)[0]

    return (grad(theta0 + eps) - grad(theta0 - eps)) / (2 * eps)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def measure(
    name: str, kind: str, size: int, seed: int, anchor_solve: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> str:
    """One table row: the relative error of each Hessian-vector product against the truly dense one."""
    import tsgu_core

    torch.manual_seed(seed)
    theta0 = torch.randn(size, dtype=DTYPE)
    B = torch.randn(6, 2, dtype=DTYPE)
    n = 6
    rows, cols = pattern(n)
    order = torch.argsort(rows * n + cols)  # coalesced (row-major) order of the stored entries
    structure = torch.sparse_coo_tensor(
        torch.stack([rows[order], cols[order]]), torch.ones(3 * n - 2, dtype=DTYPE), (n, n)
    ).coalesce()

    def dense(t: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(truly_dense(t, kind), B)

    def anchor(t: torch.Tensor) -> torch.Tensor:
        return anchor_solve(sparse_from(t, kind), B)

    def anchor_reference(t: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(sparse_from(t, kind).to_dense(), B)

    def through_tsgu(t: torch.Tensor) -> torch.Tensor:
        values = torch.cat(tridiagonal_parts(t, kind))[order]
        return tsgu_core.solve_values(structure, values, B, backend="scipy")

    truth = hessian_vector(dense, theta0)
    errors = [relative(hessian_vector(f, theta0), truth) for f in (anchor, anchor_reference)]
    return (
        f"| {name} | {errors[0]:.1%} | {errors[1]:.1%} | {relative(hessian_vector(through_tsgu, theta0), truth):.1e} "
        f"| {relative(finite_difference(dense, theta0), truth):.1e} |"
    )


def main() -> int:
    from torchsparsegradutils.sparse_solve import sparse_generic_solve
    from torchsparsegradutils.utils import bicgstab, linear_cg, minres
    from torchsparsegradutils.utils.bicgstab import BICGSTABSettings
    from torchsparsegradutils.utils.linear_cg import LinearCGSettings
    from torchsparsegradutils.utils.minres import MINRESSettings

    def bicgstab_transpose(A: torch.Tensor, B: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return bicgstab(A.t().coalesce(), B, **kwargs)

    problems = [  # name, kind, theta size, seed, anchor solver keywords (as in its tests, float64)
        ("linear_cg (SPD)", "spd", 6, 1, {"solve": linear_cg, "transpose_solve": linear_cg,
                                          "settings": LinearCGSettings(cg_tolerance=1e-5, max_cg_iterations=1000)}),
        ("minres (SPD)", "spd", 6, 1, {"solve": minres, "transpose_solve": minres,
                                       "settings": MINRESSettings(minres_tolerance=1e-10, max_cg_iterations=1000)}),
        ("bicgstab (nonsymmetric)", "general", 16, 2, {"solve": bicgstab, "transpose_solve": bicgstab_transpose,
                                                       "settings": BICGSTABSettings(reltol=1e-12, abstol=1e-12,
                                                                                    matvec_max=1000)}),
    ]  # fmt: skip
    lines = [
        "# Hessian-vector products of the anchor's higher-order tests, against a truly dense reference",
        "",
        "`‖hv − hv_dense‖ / ‖hv_dense‖` in float64; `hv_dense` from `A = diag(...)` and `torch.linalg.solve`.",
        "",
        "| problem | anchor sparse_generic_solve | anchor's own 'dense reference' | tsgu solve_values "
        "| check: finite differences |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, kind, size, seed, keywords in problems:
        lines.append(
            measure(name, kind, size, seed, lambda A, B, keywords=keywords: sparse_generic_solve(A, B, **keywords))
        )
    report = "\n".join(lines)
    print(report)
    out = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "anchor-second-derivative.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report + "\n")
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
