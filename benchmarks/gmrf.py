"""GaussianMarkovRandomField on a 2-D field, n = 99 856: what each use costs next to one SuperLU factorization.

Measures, one thread, interleaved medians (ratios in one run), on the SPD 2-D five-point Poisson matrix
(the precision of a first-order intrinsic field, made proper by a 0.01 shift):

* one factorization by the ``scipy`` backend's ``splu`` (its default options) and by ``ldlt``
  (``Pᵀ L D Lᵀ P``, what the field uses), with their fill ``nnz(L + U)``;
* a new field's ``log_prob`` + ``backward()`` (the exact gradient at every stored entry of the precision);
* a new field's ``variance`` (the diagonal of ``Q⁻¹`` by selected inversion);
* ``sample()`` and ``sample((100,))`` from a field whose factor is kept (the triangular solves only).

Run: ``python benchmarks/gmrf.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, interleaved_medians, median, pin_threads, report, write_results

pin_threads(1)

import torch  # noqa: E402

from tsgu_backends.scipy_cupy_backend.sampling import factorize_ldlt  # noqa: E402
from tsgu_backends.scipy_cupy_backend.scipy_backend import factorize_member  # noqa: E402
from tsgu_core.distributions import GaussianMarkovRandomField  # noqa: E402
from tsgu_core.testing import poisson_2d  # noqa: E402


def _scipy(A: torch.Tensor):
    import scipy.sparse as sp

    return sp.csr_matrix((A.values().numpy(), A.col_indices().numpy(), A.crow_indices().numpy()), shape=A.shape)


def _shifted(A: torch.Tensor, shift: float) -> torch.Tensor:
    crow, col = A.crow_indices(), A.col_indices()
    rows = torch.repeat_interleave(torch.arange(A.shape[0]), crow.diff())
    values = A.values() + shift * (rows == col)  # every diagonal entry is stored
    return torch.sparse_csr_tensor(crow, col, values, A.shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--m", type=int, default=316, help="grid side (n = m²)")
    args = parser.parse_args()
    facts = environment()
    Q = _shifted(poisson_2d(args.m), 0.01)
    n = Q.shape[0]
    matrix = _scipy(Q)
    loc = torch.zeros(n, dtype=torch.float64)
    x = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def log_prob_and_backward() -> None:
        leaf = Q.detach().requires_grad_()
        GaussianMarkovRandomField(loc, leaf, validate_args=False).log_prob(x).backward()

    def variance() -> None:
        GaussianMarkovRandomField(loc, Q, validate_args=False).variance  # noqa: B018 - the property computes

    kept = GaussianMarkovRandomField(loc, Q)  # factorized (validated) here, once
    kept.sample()
    log_prob_and_backward()  # compile the selected-inversion kernels
    splu, ldlt = factorize_member(matrix, {}).lu, factorize_ldlt(matrix, {}).lu
    variants = {
        "one factorization, splu": lambda: factorize_member(matrix, {}),
        "one factorization, ldlt": lambda: factorize_ldlt(matrix, {}),
        "new field: log_prob + backward": log_prob_and_backward,
        "new field: variance": variance,
        "kept factor: sample()": lambda: kept.sample(),
        "kept factor: sample((100,))": lambda: kept.sample((100,)),
    }
    times = interleaved_medians(variants, args.repeats)
    base = median(times["one factorization, splu"])
    rows = []
    for name in variants:
        t = median(times[name])
        rows.append([name, f"{t:.3f}", f"{t / base:.2f}×"])
        print(f"{name}: {t:.3f} s ({t / base:.2f}× one splu factorization)")
    fill = [
        ["splu", f"{splu.L.nnz + splu.U.nnz}"],
        ["ldlt", f"{ldlt.L.nnz + ldlt.U.nnz}"],
    ]
    table = report(
        f"GaussianMarkovRandomField, 2-D Poisson + 0.01 I, n = {n} (1 thread, medians of {args.repeats})",
        ["operation", "time (s)", "× one splu factorization"],
        rows,
        dict(facts),
    )
    from _common import markdown_table

    table += "\n\n## fill of the two factorizations\n\n" + markdown_table(["method", "nnz(L + U)"], fill)
    write_results("gmrf", table, {"rows": rows, "fill": fill, "environment": facts})
    print(table)


if __name__ == "__main__":
    main()
