"""Factorize once, solve many: ``tsgu_core.factorize`` against independent solves, one thread.

20 batches of right-hand sides (k = 4 each) against one convection–diffusion
matrix (nonsymmetric, n ≈ 1e5 by default), each batch solved and
differentiated (a loss on X, backward to A's values and B):

* ``independent``: ``tsgu_core.solve(A, B_i)`` for every batch — a new
  factorization each time;
* ``factorize``: ``handle = tsgu_core.factorize(A)`` once, then
  ``handle.solve(B_i)`` — one factorization for all solves and backward passes.

Target: factorize ≤ 0.3 × independent. Run: ``python benchmarks/factorize.py``.
"""

from __future__ import annotations

import argparse

from _common import environment, interleaved_medians, markdown_table, median, pin_threads, write_results

pin_threads(1)

import torch  # noqa: E402

import tsgu_core  # noqa: E402
from tsgu_core.testing import convection_diffusion_2d  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=316)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    A = convection_diffusion_2d(args.m)
    n = A.shape[0]
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, args.k, generator=generator, dtype=torch.float64) for _ in range(args.batches)]

    def independent() -> None:
        leaf = A.clone().requires_grad_()
        for B in batches:
            tsgu_core.solve(leaf, B.requires_grad_(), backend="scipy", method="splu").square().sum().backward()

    def factorized() -> None:
        leaf = A.clone().requires_grad_()
        handle = tsgu_core.factorize(leaf, backend="scipy", method="splu")
        for B in batches:
            handle.solve(B.requires_grad_()).square().sum().backward()

    times = interleaved_medians({"independent": independent, "factorize": factorized}, args.repeats)
    t = {name: median(values) for name, values in times.items()}
    rows = [["independent solves", f"{t['independent'] * 1e3:.0f}", "1.00"],
            ["factorize once", f"{t['factorize'] * 1e3:.0f}", f"{t['factorize'] / t['independent']:.2f}"]]  # fmt: skip
    facts = environment()
    table = (
        f"# factorize once vs independent solves — convection–diffusion n = {n}, {args.batches} batches of "
        f"k = {args.k}, forward + backward, {args.repeats} interleaved repeats\n\n"
        + markdown_table(["variant", "median ms", "÷ independent"], rows)
        + "\n\n"
        + "\n".join(f"- {key}: {value}" for key, value in facts.items())
    )
    print(table)
    write_results("factorize", table, {"n": n, "times": times, "environment": facts})


if __name__ == "__main__":
    main()
