"""method="stochastic" against the exact determinants: error, honesty of the standard error, time.

Measures, one thread:

1. **Variance of the diagonal estimate** (``diagonal_of_inverse(A, method="stochastic")``): plain Hutchinson
   (64 probes) against Hutch++-style deflation at an equal number of solves (``sketch=8`` and ``16``) and the
   Neumann control variate (``control_variate=True``, 64 probes), on 2-D Poisson, a convection-diffusion
   operator and 2-D Poisson + I (n = 2 500), over 10 seeds: the root-mean-square error relative to the mean
   diagonal (against the exact ``diagonal_of_inverse``) and the mean reported standard error on the same scale
   (honest when the two agree). Saved as ``results/stochastic_variance.md``.
2. **Time and error** of ``slogdet`` + ``backward()`` on 2-D Poisson: exact (SuperLU + selected inversion)
   against ``method="stochastic"`` (64 probes, gradient solves by torch CG at ``rtol=1e-8``): interleaved
   medians, the log-determinant's error in its own standard errors, and the gradient's relative 2-norm error.
   Saved as ``results/stochastic_logdet.md``.

Run: ``python benchmarks/stochastic_logdet.py [--repeats 3] [--sizes 64 128 316] [--parts variance timing]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, interleaved_medians, median, pin_threads, report, write_results

pin_threads(1)

import torch  # noqa: E402

import tsgu_core  # noqa: E402
from tsgu_core.testing import convection_diffusion_2d, poisson_2d  # noqa: E402

SOLVES = 64
SEEDS = 10


def _shifted_poisson(m: int) -> torch.Tensor:
    identity = torch.eye(m * m, dtype=torch.float64).to_sparse_coo()
    return (poisson_2d(m).to_sparse_coo() + identity).coalesce().to_sparse_csr()


def variance_rows() -> list[list[str]]:
    rows = []
    problems = {
        "2-D Poisson": poisson_2d(50),
        "convection-diffusion (Péclet 0.5)": convection_diffusion_2d(50),
        "2-D Poisson + I": _shifted_poisson(50),
    }
    for name, A in problems.items():
        exact = tsgu_core.diagonal_of_inverse(A, backend="scipy")
        scale = float(exact.abs().mean())
        variants = {
            "plain, 64 probes": {"probes": SOLVES},
            "sketch=8, 48 probes": {"probes": SOLVES - 16, "sketch": 8},
            "sketch=16, 32 probes": {"probes": SOLVES - 32, "sketch": 16},
            "control_variate, 64 probes": {"probes": SOLVES, "control_variate": True},
        }
        for label, options in variants.items():
            errors, reported = [], []
            for seed in range(SEEDS):
                value, error = tsgu_core.diagonal_of_inverse(
                    A, method="stochastic", backend="scipy", seed=seed, **options
                )
                errors.append(value - exact)
                reported.append(error)
            rms = float(torch.stack(errors).pow(2).mean().sqrt()) / scale
            se = float(torch.stack(reported).pow(2).mean().sqrt()) / scale
            rows.append([name, str(A.shape[0]), label, f"{rms:.3f}", f"{se:.3f}"])
            print(rows[-1], flush=True)
    return rows


def _exact(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = A.detach().requires_grad_()
    _, logabsdet = tsgu_core.slogdet(leaf, backend="scipy")
    logabsdet.backward()
    return logabsdet.detach(), leaf.grad.values()


def _stochastic(A: torch.Tensor, seed: int = 0) -> tuple[tsgu_core.SlogdetEstimate, torch.Tensor]:
    leaf = A.detach().requires_grad_()
    estimate = tsgu_core.slogdet(
        leaf, method="stochastic", backend="torch", solver="cg", rtol=1e-8, probes=SOLVES, seed=seed
    )
    estimate.logabsdet.backward()
    return estimate, leaf.grad.values()


def timing_row(m: int, repeats: int) -> list[str]:
    A = poisson_2d(m)
    logabsdet, gradient = _exact(A)
    estimate, estimated_gradient = _stochastic(A)
    repeats = repeats if m * m <= 20_000 else 1  # the largest: one timed run (each takes minutes)
    times = interleaved_medians({"exact": lambda: _exact(A), "stochastic": lambda: _stochastic(A)}, repeats)
    exact_s, stochastic_s = median(times["exact"]), median(times["stochastic"])
    off = float((estimate.logabsdet.detach() - logabsdet).abs() / estimate.standard_error)
    relative = float(estimate.standard_error / logabsdet.abs())
    gradient_error = float((estimated_gradient - gradient).norm() / gradient.norm())
    row = [
        f"{m * m} ({repeats} run{'s' if repeats > 1 else ''})",
        f"{exact_s:.2f}",
        f"{stochastic_s:.2f}",
        f"{stochastic_s / exact_s:.1f}×",
        f"{float(logabsdet):.6g}",
        f"{float(estimate.standard_error):.3g} ({relative:.1e} relative)",
        f"{off:.2f}",
        str(estimate.lanczos_steps),
        f"{gradient_error:.2f}",
    ]
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--parts", nargs="+", choices=["variance", "timing"], default=["variance", "timing"])
    args = parser.parse_args()
    facts = environment()
    if "variance" in args.parts:
        variance = variance_rows()
        table = report(
            f"diagonal_of_inverse(method='stochastic'), {SEEDS} seeds, scipy splu solves: plain Hutchinson, "
            f"deflation at an equal number of solves ({SOLVES}), the Neumann control variate (+2 products per probe)",
            ["problem", "n", "variant", "rms error / mean diagonal", "reported SE / mean diagonal"],
            variance,
            dict(facts),
        )
        write_results("stochastic_variance", table, {"variance": variance, **facts})
        print(table)
    if "timing" not in args.parts:
        return
    timing = [timing_row(m, args.repeats) for m in args.sizes]
    tables = [
        report(
            "slogdet + backward on 2-D Poisson: exact against method='stochastic' "
            f"({SOLVES} probes, torch CG at rtol=1e-8; 1 thread, medians of interleaved runs)",
            [
                "n",
                "exact (s)",
                "stochastic (s)",
                "stochastic / exact",
                "log det A",
                "standard error",
                "abs. error / SE",
                "Lanczos steps",
                "gradient rel. error",
            ],
            timing,
            dict(facts),
        ),
    ]
    write_results("stochastic_logdet", "\n\n".join(tables), {"timing": timing, **facts})
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
