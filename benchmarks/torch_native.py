"""Torch-native CG against SciPy CG on 2-D Poisson (n ≈ 1e5), one thread.

Measures, in one run with interleaved repeats (median of each):

* k = 1: ``tsgu_core.solve(..., backend="torch", method="cg")`` (forward, the
  whole public path: validation, prepare, solve, residual check) and the
  backend alone (prepare + solve, no core), against ``scipy.sparse.linalg.cg``;
* k = 8: the torch block CG (all columns together) against eight sequential
  SciPy CG solves.

Same ``rtol`` everywhere; iteration counts are printed so the comparison is
per-work as well as per-second. Run: ``python benchmarks/torch_native.py``
(``--m 316`` sets the grid, n = m²; ``--repeats 5``).
"""

from __future__ import annotations

import argparse

from _common import environment, interleaved_medians, markdown_table, median, pin_threads, write_results

pin_threads(1)

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import scipy.sparse.linalg as spla  # noqa: E402
import torch  # noqa: E402

from tsgu_core import get_backend, solve  # noqa: E402
from tsgu_core.plugins.options import resolve_options  # noqa: E402
from tsgu_core.testing import poisson_2d  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=316, help="grid size; n = m² (default 316 → n = 99 856)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rtol", type=float, default=1e-8)
    args = parser.parse_args()
    torch.set_num_threads(1)

    A = poisson_2d(args.m)
    n = A.shape[0]
    A_scipy = sp.csr_matrix((A.values().numpy(), A.col_indices().numpy(), A.crow_indices().numpy()), shape=(n, n))
    b = torch.ones(n, dtype=torch.float64)
    B8 = torch.randn(n, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rtol = args.rtol
    backend = get_backend("torch")
    iterations: dict[str, int] = {}

    def scipy_cg(rhs: np.ndarray, key: str) -> None:
        count = [0]
        _, info = spla.cg(
            A_scipy, rhs, rtol=rtol, maxiter=10 * n, callback=lambda _: count.__setitem__(0, count[0] + 1)
        )
        assert info == 0, f"SciPy CG failed: info={info}"
        iterations[key] = max(iterations.get(key, 0), count[0])

    def tsgu_cg(rhs: torch.Tensor, key: str) -> None:
        _, info = solve(A, rhs, backend="torch", method="cg", rtol=rtol, return_info=True)
        iterations[key] = info.iterations

    def backend_only(rhs: torch.Tensor, key: str) -> None:
        spec = backend.methods["cg"]
        options = resolve_options(spec, "torch", {"rtol": rtol}, n, rhs.dtype)
        state = backend.prepare(A, "cg", options)
        _, report = backend.solve(state, rhs.reshape(n, -1), transpose=False)
        iterations[key] = report.iterations

    variants = {
        "k=1 scipy cg": lambda: scipy_cg(b.numpy(), "k=1 scipy cg"),
        "k=1 tsgu torch cg": lambda: tsgu_cg(b, "k=1 tsgu torch cg"),
        "k=1 torch backend alone": lambda: backend_only(b, "k=1 torch backend alone"),
        "k=8 scipy cg × 8 sequential": lambda: [
            scipy_cg(B8[:, j].numpy(), "k=8 scipy cg × 8 sequential") for j in range(8)
        ],
        "k=8 tsgu torch block cg": lambda: tsgu_cg(B8, "k=8 tsgu torch block cg"),
    }
    times = interleaved_medians(variants, args.repeats)
    medians = {name: median(values) for name, values in times.items()}
    reference = {"k=1": medians["k=1 scipy cg"], "k=8": medians["k=8 scipy cg × 8 sequential"]}
    rows = []
    for name, seconds in medians.items():
        ratio = seconds / reference[name[:3]]
        rows.append([name, f"{seconds * 1e3:.1f}", str(iterations[name]), f"{ratio:.2f}"])
    header = ["variant", "median ms", "iterations (max column)", "× SciPy (same k)"]
    facts = environment()
    table = (
        f"# torch-native CG vs SciPy CG — 2-D Poisson, n = {n}, rtol = {rtol:g}, {args.repeats} interleaved repeats\n\n"
        + markdown_table(header, rows)
        + "\n\n"
        + "\n".join(f"- {key}: {value}" for key, value in facts.items())
    )
    print(table)
    write_results(
        "torch_native",
        table,
        {"n": n, "rtol": rtol, "repeats": args.repeats, "times": times, "iterations": iterations, "environment": facts},
    )


if __name__ == "__main__":
    main()
