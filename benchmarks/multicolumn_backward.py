"""The backward pass for many right-hand sides (k = 1 and 8), SuperLU and PARDISO, one thread.

Problems, n = 99 856, float64: 2-D convection–diffusion (nonsymmetric values)
and 2-D Poisson (symmetric). Variants, timed in one run with interleaved
repeats (medians):

* ``lu N`` / ``lu T``: one SuperLU factorization's ``solve(B)`` and
  ``solve(B, trans="T")`` alone (SuperLU's transposed solve goes column by
  column; the plain one is blocked over the columns);
* ``scipy fwd`` / ``scipy fwd+bwd``: ``tsgu_core.solve(..., backend="scipy",
  method="splu")`` without and with gradients for A's values and B (for a
  symmetric A the backward's transpose solve is a plain solve);
* ``pardiso fwd`` / ``pardiso fwd+bwd``: the same through ``backend="pardiso"``
  (transposed solve on the same factors, all columns in one call).

Ratio against the issue's target: fwd+bwd ÷ fwd ≤ 1.30 at k = 8 on
convection–diffusion. Run: ``python benchmarks/multicolumn_backward.py``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os

from _common import environment, interleaved_medians, median, pin_threads, report, write_results

pin_threads(1)
os.environ.setdefault("MKL_THREADING_LAYER", "GNU")

import scipy.sparse as sp  # noqa: E402
import scipy.sparse.linalg as sla  # noqa: E402
import torch  # noqa: E402

import tsgu_core  # noqa: E402
from tsgu_core.testing import convection_diffusion_2d, poisson_2d  # noqa: E402

HAS_PARDISO = importlib.util.find_spec("pypardiso") is not None
if HAS_PARDISO and "pardiso" not in [entry.name for entry in tsgu_core.list_backends()]:
    from tsgu_backends.pardiso_backend import plugin

    tsgu_core.register_plugin(plugin, name="pardiso")


def _tsgu(A: torch.Tensor, B: torch.Tensor, backend: str, backward: bool) -> None:
    leaf, rhs = A.clone().requires_grad_(backward), B.clone().requires_grad_(backward)
    X = tsgu_core.solve(leaf, rhs, backend=backend, method="splu" if backend == "scipy" else None)
    if backward:
        X.square().sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=316, help="grid size; n = m² (default 316 → n = 99 856)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, payload = [], {}
    for name, make in (("convection-diffusion", convection_diffusion_2d), ("poisson", poisson_2d)):
        A = make(args.m)
        M = sp.csr_matrix((A.values().numpy(), A.col_indices().numpy(), A.crow_indices().numpy()), shape=A.shape)
        lu = sla.splu(M.tocsc())
        for k in (1, 8):
            B = torch.randn(A.shape[0], k, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
            B = B[:, 0] if k == 1 else B
            variants = {
                "lu N": lambda B=B, lu=lu: lu.solve(B.numpy()),
                "lu T": lambda B=B, lu=lu: lu.solve(B.numpy(), trans="T"),
                "scipy fwd": lambda A=A, B=B: _tsgu(A, B, "scipy", False),
                "scipy fwd+bwd": lambda A=A, B=B: _tsgu(A, B, "scipy", True),
            }
            if HAS_PARDISO:
                variants["pardiso fwd"] = lambda A=A, B=B: _tsgu(A, B, "pardiso", False)
                variants["pardiso fwd+bwd"] = lambda A=A, B=B: _tsgu(A, B, "pardiso", True)
            times = interleaved_medians(variants, args.repeats)
            t = {key: median(values) for key, values in times.items()}
            payload[f"{name} k={k}"] = times
            pardiso = (
                [
                    f"{t['pardiso fwd'] * 1e3:.0f}",
                    f"{t['pardiso fwd+bwd'] * 1e3:.0f}",
                    f"{t['pardiso fwd+bwd'] / t['pardiso fwd']:.3f}",
                ]
                if HAS_PARDISO
                else ["-", "-", "-"]
            )
            rows.append(
                [
                    name,
                    str(k),
                    f"{t['lu N'] * 1e3:.0f}",
                    f"{t['lu T'] * 1e3:.0f}",
                    f"{t['lu T'] / t['lu N']:.2f}",
                    f"{t['scipy fwd'] * 1e3:.0f}",
                    f"{t['scipy fwd+bwd'] * 1e3:.0f}",
                    f"{t['scipy fwd+bwd'] / t['scipy fwd']:.3f}",
                    *pardiso,
                ]
            )
            print(rows[-1], flush=True)
    header = [
        "problem",
        "k",
        "lu N ms",
        "lu T ms",
        "T ÷ N",
        "scipy fwd ms",
        "scipy fwd+bwd ms",
        "scipy fwd+bwd ÷ fwd",
        "pardiso fwd ms",
        "pardiso fwd+bwd ms",
        "pardiso fwd+bwd ÷ fwd",
    ]
    facts = environment() | {"MKL_THREADING_LAYER": os.environ.get("MKL_THREADING_LAYER", "(unset)")}
    title = f"Multi-column backward — n = {args.m**2}, float64, {args.repeats} interleaved repeats, medians"
    table = report(title, header, rows, facts)
    print(table)
    write_results(
        "multicolumn_backward", table, {"m": args.m, "repeats": args.repeats, "times": payload, "environment": facts}
    )


if __name__ == "__main__":
    main()
