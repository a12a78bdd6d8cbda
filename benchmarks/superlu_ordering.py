"""SuperLU's column ordering chosen from A's structure (scipy backend, ``splu``), one thread.

On a structurally symmetric pattern the scipy backend now factorizes with
``permc_spec="MMD_AT_PLUS_A"``, ``SymmetricMode`` and ``diag_pivot_thresh=0.01``
(kept when one test solve's backward error stays below 100·ε). Variants,
timed in one run with interleaved repeats (medians), k = 1, float64:

* ``raw default``: ``splu(A.tocsc())`` (SciPy's defaults: COLAMD, partial pivoting), then ``lu.solve(b)``;
* ``raw symmetric``: the same with the symmetric-mode options above;
* ``tsgu fwd``: ``tsgu_core.solve(A, b, backend="scipy", method="splu")`` (ordering chosen by tsgu).

Ratio against the issue's target: tsgu fwd ÷ raw default ≤ 0.80 on 2-D Poisson
n = 99 856, with the same accuracy (normwise backward error
‖b − Ax‖∞ / (‖A‖∞‖x‖∞ + ‖b‖∞) printed per variant).
Run: ``python benchmarks/superlu_ordering.py`` (``--quick`` for small sizes).
"""

from __future__ import annotations

import argparse

from _common import environment, interleaved_medians, median, pin_threads, poisson_3d, report, write_results

pin_threads(1)

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import scipy.sparse.linalg as sla  # noqa: E402
import torch  # noqa: E402

import tsgu_core  # noqa: E402
from tsgu_backends.scipy_cupy_backend.scipy_backend import SYMMETRIC_MODE  # noqa: E402
from tsgu_core.testing import convection_diffusion_2d, poisson_2d  # noqa: E402


def _backward_error(M: sp.csr_matrix, x: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(b - M @ x).max() / (abs(M).sum(1).max() * np.abs(x).max() + np.abs(b).max()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--repeats-3d", type=int, default=1, help="repeats on 3-D Poisson (SuperLU takes seconds)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    s = 3 if args.quick else 1
    problems = [
        ("2-D poisson", poisson_2d(316 // s), args.repeats),
        ("2-D convection-diffusion", convection_diffusion_2d(316 // s), args.repeats),
        ("3-D poisson", poisson_3d(30 // s), args.repeats_3d),
    ]
    rows, payload = [], {}
    for name, A, repeats in problems:
        n = A.shape[0]
        M = sp.csr_matrix((A.values().numpy(), A.col_indices().numpy(), A.crow_indices().numpy()), shape=A.shape)
        b = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        solutions: dict[str, np.ndarray] = {}

        def raw(key: str, options: dict, M=M, b=b, solutions=solutions) -> None:
            solutions[key] = sla.splu(M.tocsc(), **options).solve(b.numpy())

        def ours(A=A, b=b, solutions=solutions) -> None:
            solutions["tsgu fwd"] = tsgu_core.solve(A, b, backend="scipy", method="splu").numpy()

        variants = {
            "raw default": lambda raw=raw: raw("raw default", {}),
            "raw symmetric": lambda raw=raw: raw("raw symmetric", SYMMETRIC_MODE),
            "tsgu fwd": ours,
        }
        times = interleaved_medians(variants, repeats)
        t = {key: median(values) for key, values in times.items()}
        errors = {key: _backward_error(M, x, b.numpy()) for key, x in solutions.items()}
        payload[name] = {"n": n, "times": times, "backward errors": errors}
        rows.append(
            [name, str(n)]
            + [f"{t[key] * 1e3:.0f}" for key in variants]
            + [f"{t['raw symmetric'] / t['raw default']:.3f}", f"{t['tsgu fwd'] / t['raw default']:.3f}"]
            + [f"{errors[key]:.1e}" for key in variants]
        )
        print(rows[-1], flush=True)
    header = [
        "problem",
        "n",
        "raw default ms",
        "raw symmetric ms",
        "tsgu fwd ms",
        "raw sym ÷ default",
        "tsgu fwd ÷ raw default",
        "berr default",
        "berr symmetric",
        "berr tsgu",
    ]
    facts = environment()
    title = (
        f"SuperLU ordering from the pattern — k = 1, float64, {args.repeats} interleaved repeats "
        f"({args.repeats_3d} on 3-D), medians"
    )
    table = report(title, header, rows, facts)
    print(table)
    if not args.quick:
        write_results("superlu_ordering", table, {"times": payload, "environment": facts})


if __name__ == "__main__":
    main()
