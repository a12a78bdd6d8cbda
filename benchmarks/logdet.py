"""slogdet + its exact gradient (selected inversion on SuperLU's factors) against one factorization and dense torch.

Measures, one thread, interleaved medians (ratios in one run):

1. 2-D Poisson, n = 99 856 (and 3-D Poisson, n = 27 000): ``tsgu_core.slogdet(A)`` with
   ``logabsdet.backward()`` (the full gradient, at every stored entry) against one SuperLU factorization of the
   same matrix with the options the ``scipy`` backend uses (target ≤ 3×); also 3-D convection–diffusion
   (n = 27 000, nonsymmetric values on the same pattern: the general recurrences, not the symmetric path);
2. where that time goes, one run each: SuperLU, the symbolic phase (the pattern C), the numeric sweep, the rest
   (reading the factors out of SuperLU, the parities, the autograd and index work);
3. 2-D Poisson, n = 4 096: the same against dense ``torch.linalg.slogdet`` + backward (target ≥ 20× faster);
4. the peak memory (tracemalloc: every NumPy allocation) of the selected inversion at n = 99 856 next to
   ``nnz(L + U)`` and ``n²`` numbers, on the symmetric path (Poisson) and the general one;
5. the selection kernel compiled by numba against the same function run by the Python interpreter
   (``.py_func``), at n = 1 600.

Run: ``python benchmarks/logdet.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import collections
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
from tsgu_backends.scipy_cupy_backend import scipy_backend, selinv  # noqa: E402
from tsgu_backends.scipy_cupy_backend.scipy_backend import factorize_member  # noqa: E402
from tsgu_core.testing import poisson_2d  # noqa: E402


def _scipy(A: torch.Tensor):
    return tsgu_core.to_scipy(A, matrix=True)


def convection_diffusion_3d(m: int, peclet: float = 0.5) -> torch.Tensor:
    """3-D Poisson plus central-difference convection ``peclet·∂x u``: the same pattern, nonsymmetric values (CSR)."""
    import scipy.sparse as sp

    A = poisson_3d(m)
    T = sp.diags([-peclet, peclet], [-1, 1], shape=(m, m))
    identity = sp.identity(m)
    M = (_scipy(A) + sp.kron(sp.kron(T, identity), identity)).tocsr()
    return tsgu_core.from_scipy(M)


def _slogdet_and_gradient(A: torch.Tensor) -> None:
    leaf = A.detach().requires_grad_()
    _, logabsdet = tsgu_core.slogdet(leaf)
    logabsdet.backward()


def _dense_slogdet_and_gradient(D: torch.Tensor) -> None:
    leaf = D.detach().requires_grad_()
    torch.linalg.slogdet(leaf).logabsdet.backward()


def against_factorization(name: str, A: torch.Tensor, repeats: int, target: str = "≤ 3×") -> list[str]:
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
    return [name, f"{A.shape[0]}", f"{fill}", f"{factor:.3f}", f"{full:.3f}", f"{full / factor:.2f}× ({target})"]


def against_dense(A: torch.Tensor, repeats: int) -> list[str]:
    D = A.to_dense()
    _slogdet_and_gradient(A)
    times = interleaved_medians(
        {"dense": lambda: _dense_slogdet_and_gradient(D), "tsgu": lambda: _slogdet_and_gradient(A)}, repeats
    )
    dense, ours = median(times["dense"]), median(times["tsgu"])
    print(f"n = {A.shape[0]}: dense {dense:.3f} s, tsgu {ours:.3f} s, {dense / ours:.1f}× faster")
    return [f"{A.shape[0]}", f"{dense:.3f}", f"{ours:.3f}", f"{dense / ours:.1f}× (≥ 20×)"]


STAGES = {
    "lower_rows": "symbolic",
    "distinct_columns": "symbolic",
    "closed": "symbolic",
    "etree": "symbolic",
    "symbolic": "symbolic",
    "scatter": "symbolic",
    "selinv": "numeric sweep",
    "gather": "numeric sweep",
}


def breakdown(name: str, A: torch.Tensor) -> list[str]:
    """One ``slogdet`` + backward with SuperLU and the kernels timed (the rest by difference)."""
    spent: dict[str, float] = collections.defaultdict(float)
    kernels = selinv._kernels()
    original_kernels, original_superlu = dict(kernels), scipy_backend.superlu

    def timed(stage: str, function):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[stage] += time.perf_counter() - start

        return run

    kernels.update({key: timed(STAGES[key], value) for key, value in original_kernels.items() if key in STAGES})
    scipy_backend.superlu = timed("SuperLU", original_superlu)
    try:
        start = time.perf_counter()
        _slogdet_and_gradient(A)
        total = time.perf_counter() - start
    finally:
        kernels.update(original_kernels)
        scipy_backend.superlu = original_superlu
    parts = [spent["SuperLU"], spent["symbolic"], spent["numeric sweep"]]
    rest = total - sum(parts)
    print(
        f"{name}: total {total:.3f} s = SuperLU {parts[0]:.3f} + symbolic {parts[1]:.3f} + numeric "
        f"{parts[2]:.3f} + rest {rest:.3f}"
    )
    return [name, f"{total:.3f}"] + [f"{x:.3f} ({x / parts[0]:.2f})" for x in (*parts, rest)]


def peak_memory(A: torch.Tensor, symmetric: bool) -> list[str]:
    matrix = _scipy(A)
    member = factorize_member(matrix, {})
    lu = selinv.verified(member)
    rows, cols = matrix.nonzero()
    symmetric = symmetric and member.symmetric
    selinv.selected_inverse_of_factors(lu, cols[:8], rows[:8], symmetric=symmetric)  # compile first
    tracemalloc.start()
    selinv.selected_inverse_of_factors(lu, cols, rows, symmetric=symmetric)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    n, fill = A.shape[0], lu.L.nnz + lu.U.nnz
    path = "symmetric" if symmetric else "general"
    print(
        f"peak ({path}) {peak / 1e6:.1f} MB for nnz(L + U) = {fill} ({peak / fill:.1f} bytes each); "
        f"dense: {8 * n * n / 1e9:.0f} GB"
    )
    return [f"{n}", path, f"{fill}", f"{peak / 1e6:.1f}", f"{peak / fill:.1f}", f"{8 * n * n / 1e9:.1f}"]


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
    flow = convection_diffusion_3d(30)

    factor_rows = [against_factorization("2-D Poisson", big, args.repeats)]
    factor_rows.append(against_factorization("3-D Poisson", cube, args.repeats))
    factor_rows.append(against_factorization("3-D convection–diffusion", flow, args.repeats, "no target"))
    split_rows = [
        breakdown(name, A) for name, A in (("2-D Poisson", big), ("3-D Poisson", cube), ("3-D conv.–diff.", flow))
    ]
    dense_row = against_dense(small, args.repeats)
    memory_rows = [peak_memory(big, symmetric) for symmetric in (True, False)]
    interpreter_row = compiled_against_interpreted(tiny)

    tables = [
        report(
            "slogdet + full gradient against one SuperLU factorization (1 thread, medians)",
            ["problem", "n", "nnz(L + U)", "factorization (s)", "slogdet + backward (s)", "ratio (target)"],
            factor_rows,
            dict(facts),
        ),
        "## where the time of one slogdet + backward goes (s; in brackets: × SuperLU's time in the same run)\n\n"
        + _table(["problem", "total", "SuperLU", "symbolic (pattern C)", "numeric sweep", "rest"], split_rows),
        "## against dense torch.linalg.slogdet + backward (2-D Poisson)\n\n"
        + _table(["n", "dense (s)", "tsgu (s)", "speed-up (target)"], [dense_row]),
        "## peak memory of selected inversion (tracemalloc, NumPy allocations)\n\n"
        + _table(["n", "path", "nnz(L + U)", "peak (MB)", "bytes per nnz(L + U)", "a dense A⁻¹ (GB)"], memory_rows),
        "## the kernels compiled by numba against the same code interpreted (one run, 2-D Poisson)\n\n"
        + _table(["n", "numba (s)", "interpreted (s)", "speed-up"], [interpreter_row]),
    ]
    write_results(
        "logdet",
        "\n\n".join(tables),
        {
            "factorization": factor_rows,
            "dense": dense_row,
            "split": split_rows,
            "memory": memory_rows,
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
