"""The backward of ``solve(torch.sparse_csr_tensor(crow, col, values(θ)), B)`` against ``solve_values``.

torch's backward of the CSR constructor (``SparseCompressedTensorBackward0``)
makes the gradient dense, ``n × n``, before keeping the stored entries: O(n²)
time and memory (issue 25, item 12). This measures it on the diffusion matrix
of :mod:`tsgu_core.examples.diffusion` (one source, SciPy's LU, one thread),
each variant in its own process so the peak resident memory is its own:

* ``values``: ``solve_values(pattern, values(θ), B)`` — O(nnz);
* ``constructor``: ``solve(problem.matrix(θ), B)`` — torch's CSR constructor;
* ``coo``: ``solve(torch.sparse_coo_tensor(indices, values(θ)), B)`` — sparse backward.

Run: ``python benchmarks/csr_constructor_backward.py`` (``--m 50 100 150``). Measured 2026-12 on the
2-core development machine (backward time, growth of the peak resident memory):

=======  ===============  ===================  ===============
n        values           constructor          coo
=======  ===============  ===================  ===============
2 500    0.003 s, +31 MiB  0.18 s, +85 MiB     0.020 s, +32 MiB
10 000   0.013 s, +35 MiB  2.6 s, +895 MiB     0.035 s, +38 MiB
22 500   0.021 s, +43 MiB  19 s, +4.4 GiB      0.082 s, +50 MiB
=======  ===============  ===================  ===============

The threshold of tsgu's warning (:data:`tsgu_core.sparse.gradient_cost.DENSE_GRADIENT_WARNING_N`) comes
from these numbers.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import warnings


def measure(m: int, how: str) -> str:
    import torch

    from tsgu_core import solve, solve_values
    from tsgu_core.examples.diffusion import DiffusionProblem

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    problem = DiffusionProblem(m=m, sources=1)
    theta = torch.zeros(problem.n, dtype=torch.float64, requires_grad=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if how == "values":
        U = solve_values(problem.pattern, problem.values(theta), problem.B, backend="scipy")
    elif how == "constructor":
        U = solve(problem.matrix(theta), problem.B, backend="scipy")
    else:
        indices = torch.stack([problem.pattern.row, problem.pattern.col])
        A = torch.sparse_coo_tensor(indices, problem.values(theta), (problem.n, problem.n), is_coalesced=True)
        U = solve(A, problem.B, backend="scipy")
    start = time.perf_counter()
    U.sum().backward()
    seconds = time.perf_counter() - start
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return f"n = {problem.n:6d}  {how:11s}  backward {seconds:7.3f} s  peak +{grown:6.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, nargs="*", default=[50, 100, 150], help="grid sides (n = m²)")
    parser.add_argument("--one", nargs=2, metavar=("M", "HOW"), help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.one:
        print(measure(int(args.one[0]), args.one[1]))
        return
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    print("one thread; each line its own process")
    for m in args.m:
        for how in ("values", "coo", "constructor"):
            result = subprocess.run([sys.executable, __file__, "--one", str(m), how], env=environment,
                                    capture_output=True, text=True, check=True)  # fmt: skip
            print(result.stdout.strip())


if __name__ == "__main__":
    main()
