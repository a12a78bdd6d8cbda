"""slogdet + its exact gradient (selected inversion on SuperLU's factors) against one factorization and dense torch.

Measures, one thread, interleaved medians (ratios in one run):

1. 2-D Poisson, n = 99 856 (and 3-D Poisson, n = 27 000): ``tsgu_core.slogdet(A)`` with
   ``logabsdet.backward()`` (the full gradient, at every stored entry) against one SuperLU factorization of the
   same matrix with the options the ``scipy`` backend uses (target ≤ 3×);
2. 2-D Poisson, n = 4 096: the same against dense ``torch.linalg.slogdet`` + backward (target ≥ 20× faster);
3. the peak memory (tracemalloc: every NumPy allocation) of the selected inversion at n = 99 856 next to
   ``nnz(L + U)`` and ``n²`` numbers;
4. the selection kernel compiled by numba against the same function run by the Python interpreter
   (``.py_func``), at n = 1 600.

Run: ``python benchmarks/logdet.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, interleaved_medians, median, pin_threads, poisson_3d, report, write_results

pin_threads(1)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import tsgu_core  # noqa: E402
from tsgu_backends.scipy_cupy_backend import selinv  # noqa: E402
from tsgu_backends.scipy_cupy_backend.scipy_backend import factorize_member  # noqa: E402
from tsgu_core.testing import poisson_2d  # noqa: E402


def _scipy(A: torch.Tensor):
    import scipy.sparse as sp

    return sp.csr_matrix((A.values().numpy(), A.col_indices().numpy(), A.crow_indices().numpy()), shape=A.shape)


def _slogdet_and_gradient(A: torch.Tensor) -> None:
    leaf = A.detach().requires_grad_()
    _, logabsdet = tsgu_core.slogdet(leaf)
    logabsdet.backward()


def _dense_slogdet_and_gradient(D: torch.Tensor) -> None:
    leaf = D.detach().requires_grad_()
    torch.linalg.slogdet(leaf).logabsdet.backward()


def against_factorization(name: str, A: torch.Tensor, repeats: int) -> list[str]:
    matrix = _scipy(A)
    member = factorize_member(matrix, {})
    fill = member.lu.L.nnz + member.lu.U.nnz
    _slogdet_and_gradient(A)  # compile the kernels
    times = interleaved_medians(
        {
            "one SuperLU factorization": lambda: factorize_member(matrix, {}),
            "slogdet + backward": lambda: _slogdet_and_gradient(A),
        },
        repeats,
    )
    factor, full = median(times["one SuperLU factorization"]), median(times["slogdet + backward"])
    print(f"{name}: factorization {factor:.3f} s, slogdet + backward {full:.3f} s, ratio {full / factor:.2f}")
    return [name, f"{A.shape[0]}", f"{fill}", f"{factor:.3f}", f"{full:.3f}", f"{full / factor:.2f}× (≤ 3×)"]


def against_dense(A: torch.Tensor, repeats: int) -> list[str]:
    D = A.to_dense()
    _slogdet_and_gradient(A)
    times = interleaved_medians(
        {"dense": lambda: _dense_slogdet_and_gradient(D), "tsgu": lambda: _slogdet_and_gradient(A)}, repeats
    )
    dense, ours = median(times["dense"]), median(times["tsgu"])
    print(f"n = {A.shape[0]}: dense {dense:.3f} s, tsgu {ours:.3f} s, {dense / ours:.1f}× faster")
    return [f"{A.shape[0]}", f"{dense:.3f}", f"{ours:.3f}", f"{dense / ours:.1f}× (≥ 20×)"]


def peak_memory(A: torch.Tensor) -> list[str]:
    matrix = _scipy(A)
    lu = selinv.verified(factorize_member(matrix, {}))
    rows, cols = matrix.nonzero()
    selinv.selected_inverse_of_factors(lu, cols[:8], rows[:8])  # compile first
    tracemalloc.start()
    selinv.selected_inverse_of_factors(lu, cols, rows)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    n, fill = A.shape[0], lu.L.nnz + lu.U.nnz
    print(
        f"peak {peak / 1e6:.1f} MB for nnz(L + U) = {fill} ({peak / fill:.1f} bytes each); "
        f"dense: {8 * n * n / 1e9:.0f} GB"
    )
    return [f"{n}", f"{fill}", f"{peak / 1e6:.1f}", f"{peak / fill:.1f}", f"{8 * n * n / 1e9:.1f}"]


def compiled_against_interpreted(A: torch.Tensor) -> list[str]:
    matrix = _scipy(A)
    lu = selinv.verified(factorize_member(matrix, {}))
    rows, cols = matrix.nonzero()
    kernels = selinv._kernels()
    selinv.selected_inverse_of_factors(lu, cols[:8], rows[:8])
    timings = {}
    results = {}
    for label, wrap in (("numba", lambda f: f), ("Python interpreter", lambda f: f.py_func)):
        original = dict(kernels)
        kernels.update({key: wrap(value) for key, value in original.items()})
        try:
            start = time.perf_counter()
            results[label] = selinv.selected_inverse_of_factors(lu, cols, rows)
            timings[label] = time.perf_counter() - start
        finally:
            kernels.update(original)
    assert np.array_equal(results["numba"], results["Python interpreter"]) or np.allclose(
        results["numba"], results["Python interpreter"], rtol=1e-12, atol=0
    )
    ratio = timings["Python interpreter"] / timings["numba"]
    print(f"n = {A.shape[0]}: numba {timings['numba']:.4f} s, interpreted {timings['Python interpreter']:.2f} s")
    return [f"{A.shape[0]}", f"{timings['numba']:.4f}", f"{timings['Python interpreter']:.2f}", f"{ratio:.0f}×"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    facts = environment()
    big, cube, small, tiny = poisson_2d(316), poisson_3d(30), poisson_2d(64), poisson_2d(40)

    factor_rows = [against_factorization("2-D Poisson", big, args.repeats)]
    factor_rows.append(against_factorization("3-D Poisson", cube, args.repeats))
    dense_row = against_dense(small, args.repeats)
    memory_row = peak_memory(big)
    interpreter_row = compiled_against_interpreted(tiny)

    tables = [
        report(
            "slogdet + full gradient against one SuperLU factorization (1 thread, medians)",
            ["problem", "n", "nnz(L + U)", "factorization (s)", "slogdet + backward (s)", "ratio (target)"],
            factor_rows,
            dict(facts),
        ),
        "## against dense torch.linalg.slogdet + backward (2-D Poisson)\n\n"
        + _table(["n", "dense (s)", "tsgu (s)", "speed-up (target)"], [dense_row]),
        "## peak memory of selected inversion (tracemalloc, NumPy allocations)\n\n"
        + _table(["n", "nnz(L + U)", "peak (MB)", "bytes per nnz(L + U)", "a dense A⁻¹ (GB)"], [memory_row]),
        "## the kernels compiled by numba against the same code interpreted (one run, 2-D Poisson)\n\n"
        + _table(["n", "numba (s)", "interpreted (s)", "speed-up"], [interpreter_row]),
    ]
    write_results(
        "logdet",
        "\n\n".join(tables),
        {
            "factorization": factor_rows,
            "dense": dense_row,
            "memory": memory_row,
            "interpreted": interpreter_row,
            "environment": facts,
        },
    )
    print("\n\n".join(tables))


def _table(header: list[str], rows: list[list[str]]) -> str:
    from _common import markdown_table

    return markdown_table(header, rows)


if __name__ == "__main__":
    main()
