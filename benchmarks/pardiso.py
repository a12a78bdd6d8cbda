"""PARDISO (MKL, through the ``pardiso`` backend) against SuperLU (``scipy``/``splu`` and raw ``splu``), one thread.

Problems, float64: 3-D 7-point Poisson (n = 27 000 and 46 656), 2-D Poisson
and 2-D convection–diffusion (n = 99 856); k = 1 and 8 right-hand sides.
Variants, timed in one run with interleaved repeats (medians):

* ``raw splu``: ``splu(A.tocsc())`` with SciPy's default options, then
  ``lu.solve(B)`` — forward only, what a user writes by hand;
* ``scipy fwd+bwd``: ``tsgu_core.solve(A, B, backend="scipy", method="splu")``
  with gradients for A's values and B (ordering chosen from the pattern);
* ``pardiso fwd`` / ``pardiso fwd+bwd``: the same through ``backend="pardiso"``.

Ratios against the issue's targets: pardiso fwd+bwd ÷ raw splu fwd (3-D
n = 27 000: ≤ 0.25) and pardiso fwd+bwd ÷ scipy fwd+bwd (2-D: ≤ 1.1). The
3-D n = 46 656 case runs SuperLU once (``--heavy-repeats``): one default
factorization takes ~20 s. Run: ``python benchmarks/pardiso.py``
(``--quick`` for small sizes).
"""

from __future__ import annotations

import argparse
import os

from _common import environment, interleaved_medians, median, pin_threads, poisson_3d, report, write_results

pin_threads(1)
os.environ.setdefault("MKL_THREADING_LAYER", "GNU")

import scipy.sparse as sp  # noqa: E402
import scipy.sparse.linalg as sla  # noqa: E402
import torch  # noqa: E402

import tsgu_core  # noqa: E402
from tsgu_core.testing import convection_diffusion_2d, poisson_2d  # noqa: E402

if "pardiso" not in [entry.name for entry in tsgu_core.list_backends()]:  # entry point not installed yet
    from tsgu_backends.pardiso_backend import plugin

    tsgu_core.register_plugin(plugin, name="pardiso")


def _scipy(A: torch.Tensor) -> sp.csr_matrix:
    return sp.csr_matrix((A.values().numpy(), A.col_indices().numpy(), A.crow_indices().numpy()), shape=A.shape)


def _tsgu(A: torch.Tensor, B: torch.Tensor, backend: str, backward: bool, method: str | None = None) -> None:
    leaf, rhs = A.clone().requires_grad_(backward), B.clone().requires_grad_(backward)
    X = tsgu_core.solve(leaf, rhs, backend=backend, method=method)
    if backward:
        X.square().sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--heavy-repeats", type=int, default=1, help="repeats for SuperLU on 3-D n = 46 656")
    parser.add_argument("--quick", action="store_true", help="small problems (smoke test)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scale = 3 if args.quick else 1
    problems = [
        ("3-D poisson", poisson_3d(30 // scale), False),
        ("3-D poisson", poisson_3d(36 // scale), True),
        ("2-D poisson", poisson_2d(316 // scale), False),
        ("2-D convection-diffusion", convection_diffusion_2d(316 // scale), False),
    ]
    rows, payload = [], {}
    for name, A, heavy in problems:
        n = A.shape[0]
        M = _scipy(A)
        for k in (1, 8):
            generator = torch.Generator().manual_seed(k)
            B = torch.randn(n, k, generator=generator, dtype=torch.float64)
            B = B[:, 0] if k == 1 else B
            superlu = {
                "raw splu fwd": lambda M=M, B=B: sla.splu(M.tocsc()).solve(B.numpy()),
                "scipy fwd+bwd": lambda A=A, B=B: _tsgu(A, B, "scipy", True, "splu"),
            }
            pardiso = {
                "pardiso fwd": lambda A=A, B=B: _tsgu(A, B, "pardiso", False),
                "pardiso fwd+bwd": lambda A=A, B=B: _tsgu(A, B, "pardiso", True),
            }
            if heavy:
                if k > 1:  # SuperLU's factorization dominates: one k is enough for the heavy case
                    continue
                times = interleaved_medians(superlu, args.heavy_repeats) | interleaved_medians(pardiso, args.repeats)
            else:
                times = interleaved_medians(superlu | pardiso, args.repeats)
            t = {key: median(values) for key, values in times.items()}
            payload[f"{name} n={n} k={k}"] = times
            rows.append(
                [
                    name,
                    str(n),
                    str(k),
                    f"{t['raw splu fwd'] * 1e3:.0f}",
                    f"{t['scipy fwd+bwd'] * 1e3:.0f}",
                    f"{t['pardiso fwd'] * 1e3:.0f}",
                    f"{t['pardiso fwd+bwd'] * 1e3:.0f}",
                    f"{t['pardiso fwd+bwd'] / t['raw splu fwd']:.3f}",
                    f"{t['pardiso fwd+bwd'] / t['scipy fwd+bwd']:.3f}",
                    f"{t['pardiso fwd+bwd'] / t['pardiso fwd']:.3f}",
                ]
            )
            print(rows[-1], flush=True)
    header = [
        "problem",
        "n",
        "k",
        "raw splu fwd ms",
        "scipy fwd+bwd ms",
        "pardiso fwd ms",
        "pardiso fwd+bwd ms",
        "pardiso fwd+bwd ÷ raw splu fwd",
        "pardiso fwd+bwd ÷ scipy fwd+bwd",
        "pardiso fwd+bwd ÷ fwd",
    ]
    facts = environment() | {"MKL_THREADING_LAYER": os.environ.get("MKL_THREADING_LAYER", "(unset)")}
    title = (
        f"PARDISO vs SuperLU — float64, {args.repeats} interleaved repeats "
        f"(SuperLU on 3-D n=46 656: {args.heavy_repeats}), medians"
    )
    table = report(title, header, rows, facts)
    print(table)
    if not args.quick:
        write_results("pardiso", table, {"repeats": args.repeats, "times": payload, "environment": facts})


if __name__ == "__main__":
    main()
