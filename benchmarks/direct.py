"""Direct solves: tsgu's scipy/splu against raw SciPy and against torchsparsegradutils 0.2.7, one thread.

Problems: 2-D Poisson (SPD) and central-difference convection–diffusion
(nonsymmetric), n ≈ 1e5 (``--m 316``), float64, k = 1 and k = 8 right-hand
sides. Variants, timed in one run with interleaved repeats (medians):

* ``raw scipy``: ``splu(A.tocsc())`` then ``lu.solve(B)`` — what a user would
  write by hand (forward only);
* ``tsgu fwd``: ``tsgu_core.solve(A, B, backend="scipy", method="splu")``;
* ``tsgu fwd+bwd``: the same with gradients for A's values and B;
* ``anchor fwd`` / ``anchor fwd+bwd``: ``sparse_solve_c4t`` of
  torchsparsegradutils 0.2.7 (default solver), the project tsgu replaces.

Ratios: fwd ÷ raw (target ≤ 1.05), fwd+bwd ÷ fwd (≤ 1.15), fwd+bwd ÷
anchor fwd+bwd (≤ 0.65 for k = 1). Install the anchor with
``pip install -c constraints.txt -e ".[bench]"``. CuPy is hidden from the
anchor (``sys.modules``), which otherwise imports it and fails without a GPU.
Run: ``python benchmarks/direct.py`` (``--m 100 --repeats 1`` for a quick look).
"""

from __future__ import annotations

import argparse
import sys

from _common import environment, interleaved_medians, markdown_table, median, pin_threads, write_results

pin_threads(1)
sys.modules.setdefault("cupy", None)  # type: ignore[arg-type]
sys.modules.setdefault("cupyx", None)  # type: ignore[arg-type]

import scipy.sparse as sp  # noqa: E402
import scipy.sparse.linalg as sla  # noqa: E402
import torch  # noqa: E402

import tsgu_core  # noqa: E402
from tsgu_core.testing import convection_diffusion_2d, poisson_2d  # noqa: E402

try:
    from torchsparsegradutils.cupy import sparse_solve_c4t  # the anchor
except ImportError:  # pragma: no cover - benchmark-only dependency
    sparse_solve_c4t = None


def _variants(A: torch.Tensor, A_scipy: sp.csr_matrix, B: torch.Tensor) -> dict:
    def raw() -> None:
        sla.splu(A_scipy.tocsc()).solve(B.numpy())

    def ours(backward: bool) -> None:
        leaf, rhs = A.clone().requires_grad_(backward), B.clone().requires_grad_(backward)
        X = tsgu_core.solve(leaf, rhs, backend="scipy", method="splu")
        if backward:
            X.square().sum().backward()

    def anchor(backward: bool) -> None:
        leaf, rhs = A.clone().requires_grad_(backward), B.clone().requires_grad_(backward)
        X = sparse_solve_c4t(leaf, rhs)
        if backward:
            X.square().sum().backward()

    variants = {"raw scipy": raw, "tsgu fwd": lambda: ours(False), "tsgu fwd+bwd": lambda: ours(True)}
    if sparse_solve_c4t is not None:
        variants |= {"anchor fwd": lambda: anchor(False), "anchor fwd+bwd": lambda: anchor(True)}
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=316, help="grid size; n = m² (default 316 → n = 99 856)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if sparse_solve_c4t is None:
        print("torchsparsegradutils is not installed: the anchor columns are left out (pip install -e '.[bench]')")

    rows, payload = [], {}
    for problem_name, make in (("poisson", poisson_2d), ("convection-diffusion", convection_diffusion_2d)):
        A = make(args.m)
        n = A.shape[0]
        A_scipy = sp.csr_matrix((A.values().numpy(), A.col_indices().numpy(), A.crow_indices().numpy()), shape=(n, n))
        for k in (1, 8):
            generator = torch.Generator().manual_seed(k)
            B = torch.randn(n, k, generator=generator, dtype=torch.float64)
            B = B[:, 0] if k == 1 else B

            variants = _variants(A, A_scipy, B)
            times = interleaved_medians(variants, args.repeats)
            t = {name: median(values) for name, values in times.items()}
            payload[f"{problem_name} k={k}"] = times
            anchor_ratio = f"{t['tsgu fwd+bwd'] / t['anchor fwd+bwd']:.2f}" if "anchor fwd+bwd" in t else "-"
            rows.append(
                [
                    problem_name,
                    str(k),
                    f"{t['raw scipy'] * 1e3:.0f}",
                    f"{t['tsgu fwd'] * 1e3:.0f}",
                    f"{t['tsgu fwd+bwd'] * 1e3:.0f}",
                    f"{t['anchor fwd'] * 1e3:.0f}" if "anchor fwd" in t else "-",
                    f"{t['anchor fwd+bwd'] * 1e3:.0f}" if "anchor fwd+bwd" in t else "-",
                    f"{t['tsgu fwd'] / t['raw scipy']:.3f}",
                    f"{t['tsgu fwd+bwd'] / t['tsgu fwd']:.3f}",
                    anchor_ratio,
                ]
            )
            print(rows[-1])
    header = [
        "problem",
        "k",
        "raw scipy ms",
        "tsgu fwd ms",
        "tsgu fwd+bwd ms",
        "anchor fwd ms",
        "anchor fwd+bwd ms",
        "fwd ÷ raw",
        "fwd+bwd ÷ fwd",
        "fwd+bwd ÷ anchor's",
    ]
    facts = environment()
    table = (
        f"# Direct solves (SuperLU) — n = {args.m**2}, float64, {args.repeats} interleaved repeats, medians\n\n"
        + markdown_table(header, rows)
        + "\n\n"
        + "\n".join(f"- {key}: {value}" for key, value in facts.items())
    )
    print(table)
    write_results("direct", table, {"m": args.m, "repeats": args.repeats, "times": payload, "environment": facts})


if __name__ == "__main__":
    main()
