"""PARDISO Cholesky of the symmetric part against LU, on an SPD matrix symmetric only to one ulp (issue 25 item 11).

Problem, float64: an elasticity-like 3-D matrix — the 7-point Laplacian on an
``m³`` grid coupling three unknowns per node through the SPD block
``[[2, 1, 0], [1, 2, 1], [0, 1, 2]]`` (``K = L ⊗ C``, 21 entries per row;
``--m 22``: n = 31 944) — whose upper-triangle entries are moved by one ulp at
random, as floating-point FEM assembly leaves them (``K ≠ Kᵀ`` by ≤ 1 ulp).
Variants, timed in one run with interleaved repeats (medians), one thread, k = 1:

* ``cholesky``: ``tsgu_core.solve(K, b, backend="pardiso", assume="spd")`` —
  PARDISO mtype 2 of ``(K + Kᵀ)/2``, refined against ``K``;
* ``lu``: the same with ``mtype=11`` (what such a ``K`` got before);

each forward only and forward + backward (gradients for ``K``'s values and ``b``).
Run: ``python benchmarks/spd_cholesky.py`` (``--m 12 --repeats 2`` for a quick look).
"""

from __future__ import annotations

import argparse
import os

from _common import environment, interleaved_medians, median, pin_threads, report, write_results

pin_threads(1)
os.environ.setdefault("MKL_THREADING_LAYER", "GNU")

import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

import tsgu_core  # noqa: E402


def elasticity_like(m: int) -> torch.Tensor:
    """``L ⊗ C`` (3-D Laplacian ⊗ a 3 × 3 SPD coupling), upper entries one ulp off at random: CSR, float64."""
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    identity = sp.identity(m)
    L = sp.kron(sp.kron(T, identity), identity) + sp.kron(sp.kron(identity, T), identity)
    L = L + sp.kron(sp.kron(identity, identity), T)
    coupling = sp.csr_matrix([[2.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
    K = sp.kron(L, coupling).tocsr()
    K.sort_indices()
    A = torch.sparse_csr_tensor(
        torch.from_numpy(K.indptr.astype("int64")),
        torch.from_numpy(K.indices.astype("int64")),
        torch.from_numpy(K.data),
        K.shape,
    )
    values = A.values()
    rows = torch.repeat_interleave(torch.arange(K.shape[0]), torch.diff(A.crow_indices()))
    moved = (A.col_indices() > rows) & (torch.rand(values.shape, generator=torch.Generator().manual_seed(0)) < 0.5)
    values = torch.where(moved, torch.nextafter(values, 2 * values), values)
    return torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), values, K.shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--m", type=int, default=22)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    K = elasticity_like(args.m)
    n = K.shape[0]
    b = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    from tsgu_core.sparse.structure import asymmetry

    measured = asymmetry(tsgu_core.SparsePattern.of(K), K.values()) / torch.finfo(torch.float64).eps
    options = {"cholesky": {"assume": "spd"}, "lu": {"mtype": 11}}
    messages = {}

    def forward(name: str) -> None:
        _, info = tsgu_core.solve(K, b, backend="pardiso", return_info=True, **options[name])
        messages[name] = info.message

    def both(name: str) -> None:
        A = K.detach().requires_grad_()
        rhs = b.clone().requires_grad_()
        tsgu_core.solve(A, rhs, backend="pardiso", **options[name]).square().sum().backward()

    forward("lu")  # load MKL once, outside the timings
    variants = {}
    for name in options:
        variants[f"{name} fwd"] = lambda name=name: forward(name)
        variants[f"{name} fwd+bwd"] = lambda name=name: both(name)
    times = interleaved_medians(variants, args.repeats)
    medians = {name: median(values) for name, values in times.items()}
    rows = [
        [name, f"{medians[name]:.3f}", f"{medians[name] / medians[name.replace('cholesky', 'lu')]:.2f}"]
        for name in variants
    ]
    facts = environment()
    facts.update(
        {
            "problem": f"3-D Laplacian ⊗ 3 × 3 SPD coupling, m = {args.m}, n = {n}, nnz = {K.values().numel()}",
            "asymmetry max|K − Kᵀ| / max|K|": f"{measured:.2f} ε",
            "repeats": str(args.repeats),
            "cholesky message": messages["cholesky"],
            "lu message": messages["lu"],
        }
    )
    table = report(
        "PARDISO Cholesky of the symmetric part vs LU (one ulp from symmetric)",
        ["variant", "median s", "÷ lu"],
        rows,
        facts,
    )
    print(table)
    write_results("spd_cholesky", table, {"medians_s": medians, "times_s": times, "n": n, "facts": facts})


if __name__ == "__main__":
    main()
