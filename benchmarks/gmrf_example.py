"""Where the time of one likelihood + gradient of the GMRF example goes (tsgu_core.examples.gmrf).

Times, at one grid size, medians of ``--repeats`` interleaved runs on one thread: the whole
``log_likelihood`` + ``backward()``, and its parts — ``slogdet(K)`` and ``slogdet(Q_p)`` forward and
backward, ``solve(Q_p, b)`` forward and backward — next to one factorization of ``Q_p`` by the
same backend (``tsgu_core.factorize``: SuperLU, as the ``scipy`` backend orders and runs it).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/gmrf_example.py [--size 250] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import tsgu_core
from tsgu_core.examples.gmrf import MaternGMRF


def _seconds(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = MaternGMRF(m=args.size)
    y = model.simulate().y
    theta = model.theta_true
    values = model.precision_values(theta) + torch.exp(-2 * theta[2]) * model.q_observed
    b = torch.zeros(model.n, dtype=torch.float64).index_put((model.observed_nodes,), y)

    def whole() -> None:
        t = theta.clone().requires_grad_()
        model.log_likelihood(t, y).backward()

    def logdet(matrix) -> None:
        v = matrix.detach().coalesce().values().clone().requires_grad_()
        A = torch.sparse_coo_tensor(matrix.indices(), v, matrix.shape, is_coalesced=True, check_invariants=False)
        tsgu_core.slogdet(A)[1].backward()

    def solve() -> None:
        v = values.clone().requires_grad_()
        A = torch.sparse_coo_tensor(model.q_indices, v, (model.n, model.n), is_coalesced=True, check_invariants=False)
        tsgu_core.solve(A, b).sum().backward()

    posterior = torch.sparse_coo_tensor(model.q_indices, values, (model.n, model.n), check_invariants=False).coalesce()
    cases = {
        "log_likelihood + backward": whole,
        "slogdet(K) + backward": lambda: logdet(model.K(theta)),
        "slogdet(Q_p) + backward": lambda: logdet(posterior),
        "solve(Q_p, b) + backward": solve,
        "one factorize(Q_p)": lambda: tsgu_core.factorize(posterior),
    }
    whole()  # compile / load the kernels first
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, work in cases.items():
            times[name].append(_seconds(work))
    print(f"{args.size}×{args.size} grid, n = {model.n}, nnz(Q_p) = {model.q_indices.shape[1]}, "
          f"{model.n_obs} observations; torch threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")  # fmt: skip
    print("| step | median (s) | runs (s) |")
    print("|---|---|---|")
    for name, runs in times.items():
        print(f"| {name} | {statistics.median(runs):.3f} | {', '.join(f'{r:.3f}' for r in runs)} |")
    print(f"load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
