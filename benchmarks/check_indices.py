"""The cost of validating A's index tensors (``tsgu_core.sparse.validate.check_indices``) against a direct solve.

Problem: 2-D Poisson, n = m² (``--m 316``: n ≈ 1e5, nnz ≈ 5e5), float64, one
thread, k = 1. Timed in one run with interleaved repeats (medians):

* ``check CSR`` / ``check COO``: ``check_indices`` on the CSR matrix and on its COO form;
* ``splu solve``: ``tsgu_core.solve(A, b, backend="scipy", method="splu")`` (forward only),
  which includes the check once.

The ratio check ÷ solve is the overhead the validation adds to a direct solve.
Run: ``python benchmarks/check_indices.py`` (``--m 100 --repeats 3`` for a quick look).
"""

from __future__ import annotations

import argparse

from _common import environment, interleaved_medians, markdown_table, median, pin_threads, write_results

pin_threads(1)

import torch  # noqa: E402

import tsgu_core  # noqa: E402
from tsgu_core.sparse.validate import check_indices  # noqa: E402
from tsgu_core.testing import poisson_2d  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--m", type=int, default=316)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    A = poisson_2d(args.m)
    A_coo = A.to_sparse_coo()
    b = torch.ones(A.shape[0], dtype=torch.float64)
    times = interleaved_medians(
        {
            "check CSR": lambda: check_indices(A),
            "check COO": lambda: check_indices(A_coo),
            "splu solve": lambda: tsgu_core.solve(A, b, backend="scipy", method="splu"),
        },
        args.repeats,
    )
    solve = median(times["splu solve"])
    rows = [[name, f"{median(t) * 1e3:.3g}", f"{median(t) / solve:.4f}"] for name, t in times.items()]
    header = f"n = {A.shape[0]}, nnz = {A._nnz()}, threads = {torch.get_num_threads()}, repeats = {args.repeats}\n\n"
    table = header + markdown_table(["variant", "median ms", "÷ splu solve"], rows)
    print(table)
    write_results("check_indices", table, {"environment": environment(), "n": A.shape[0], "times": times})


if __name__ == "__main__":
    main()
