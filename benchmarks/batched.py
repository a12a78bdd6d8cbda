"""Batched solves against a Python loop of single solves, one thread.

A batch of ``b`` convection–diffusion matrices (n = m², one shared pattern,
member-specific coefficients) with one right-hand side each. For every
backend that can solve it, in one run with interleaved repeats (medians):

* ``batched``: ``tsgu_core.solve(A_batch, B_batch)`` — the torch backend
  runs the members in block Krylov iterations, on the CPU in cache-sized
  chunks of members (see ``tsgu_backends.torch_backend.backend._Chunks``); a
  backend without batch support is looped over by the core;
* ``loop``: ``[tsgu_core.solve(A_i, b_i) for i in range(b)]``;

forward and forward+backward (gradients for every member's values and
right-hand side), with the forward iteration counts of the iterative methods
(a batch, or chunk, iterates until its slowest member converges).
Run: ``python benchmarks/batched.py`` (``--batch 32 --m 100``).
"""

from __future__ import annotations

import argparse
import os

from _common import environment, interleaved_medians, markdown_table, median, pin_threads, write_results

pin_threads(1)

import torch  # noqa: E402

import tsgu_core  # noqa: E402
from tsgu_core.testing import convection_diffusion_2d  # noqa: E402


def batch_of_problems(batch: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    base = convection_diffusion_2d(m)
    generator = torch.Generator().manual_seed(0)
    scale = 1 + 0.2 * torch.rand(batch, 1, generator=generator, dtype=torch.float64)
    values = base.values().unsqueeze(0) * scale  # member-specific coefficients, same pattern
    n = base.shape[0]
    crow = base.crow_indices().expand(batch, -1).contiguous()
    col = base.col_indices().expand(batch, -1).contiguous()
    A = torch.sparse_csr_tensor(crow, col, values, (batch, n, n))
    B = torch.randn(batch, n, generator=generator, dtype=torch.float64)
    return A, B


def _label(backend: str, method: str, options: dict) -> str:
    return f"{backend}/{method}" + (" fused" if options.get("fused") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--m", type=int, default=100, help="grid size; n = m² (default 100 → n = 10 000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rtol", type=float, default=1e-8)
    parser.add_argument("--backends", nargs="*", default=None, help="backends besides torch (default: all available)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    A, B = batch_of_problems(args.batch, args.m)
    n = A.shape[-1]
    members = [
        torch.sparse_csr_tensor(A.crow_indices()[i], A.col_indices()[i], A.values()[i], (n, n))
        for i in range(args.batch)
    ]
    cases = [
        ("torch", "bicgstab", {"rtol": args.rtol}),
        ("torch", "bicgstab", {"rtol": args.rtol, "fused": True}),  # the numba loops of fused=True, in each chunk
        ("torch", "gmres", {"rtol": args.rtol}),
    ]
    for entry in tsgu_core.list_backends():
        wanted = args.backends is None or entry.name in args.backends
        if entry.name != "torch" and wanted and entry.availability("cpu"):
            spec = entry.backend.methods[entry.backend.default_method]
            cases.append((entry.name, spec.name, {"rtol": args.rtol} if spec.kind == "iterative" else {}))

    variants = {}
    for backend, method, options in cases:

        def batched(backward: bool, backend=backend, method=method, options=options) -> None:
            matrix = A.clone().requires_grad_(backward)  # a leaf: torch's batched-CSR constructor densifies gradients
            rhs = B.clone().requires_grad_(backward)
            X = tsgu_core.solve(matrix, rhs, backend=backend, method=method, **options)
            if backward:
                X.square().sum().backward()

        def loop(backward: bool, backend=backend, method=method, options=options) -> None:
            for i, member in enumerate(members):
                matrix = member.clone().requires_grad_(backward)
                rhs = B[i].clone().requires_grad_(backward)
                X = tsgu_core.solve(matrix, rhs, backend=backend, method=method, **options)
                if backward:
                    X.square().sum().backward()

        label = _label(backend, method, options)
        variants[f"{label} batched fwd"] = lambda f=batched: f(False)
        variants[f"{label} loop fwd"] = lambda f=loop: f(False)
        variants[f"{label} batched fwd+bwd"] = lambda f=batched: f(True)
        variants[f"{label} loop fwd+bwd"] = lambda f=loop: f(True)

    times = interleaved_medians(variants, args.repeats)
    medians = {name: median(values) for name, values in times.items()}
    iterations = {}  # forward iterations, untimed: a batch (or chunk) iterates until its slowest member is done
    for backend, method, options in cases:
        if options:
            _, info = tsgu_core.solve(A, B, backend=backend, method=method, return_info=True, **options)
            singles = [
                tsgu_core.solve(member, B[i], backend=backend, method=method, return_info=True, **options)[1]
                for i, member in enumerate(members)
            ]
            mean = sum(s.iterations for s in singles) / len(singles)
            iterations[_label(backend, method, options)] = (info.iterations, mean)
    rows = []
    for backend, method, options in cases:
        label = _label(backend, method, options)
        its = iterations.get(label)
        shown = f"{its[0]} / {its[1]:.0f}" if its else "—"
        for phase in ("fwd", "fwd+bwd"):
            together, looped = medians[f"{label} batched {phase}"], medians[f"{label} loop {phase}"]
            ratio = f"{together / looped:.2f}"
            rows.append([label, phase, f"{together * 1e3:.0f}", f"{looped * 1e3:.0f}", ratio, shown])
    header = ["backend/method", "pass", "batched ms", "loop ms", "batched ÷ loop", "fwd iterations: batched / loop"]
    facts = environment()
    facts["load average at the end (1, 5, 15 min)"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    table = (
        f"# Batched vs loop — b = {args.batch} convection–diffusion members, n = {n}, rtol = {args.rtol:g}, "
        f"{args.repeats} interleaved repeats\n\n"
        + markdown_table(header, rows)
        + "\n\n"
        + "\n".join(f"- {key}: {value}" for key, value in facts.items())
    )
    print(table)
    write_results("batched", table, {"batch": args.batch, "n": n, "times": times, "environment": facts})


if __name__ == "__main__":
    main()
