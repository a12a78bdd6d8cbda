"""Complex against real solves: the cost of complex128 in tsgu, forward + backward, one thread.

The problem: a 2-D five-point ``−Δ + σ I`` on an ``m × m`` grid, with a real shift
``σ = c`` (float64) and the complex shift ``σ = c·(1 + i)`` (complex128) — the same
pattern, the same conditioning class. For each backend/method, one forward solve of
``k`` right-hand sides and its backward pass (a loss on ``X``, gradients to ``A``'s
values and ``B``), real and complex interleaved; the ratio complex/real is measured
in the same run. A complex multiply-add is four real ones, so ratios near 2–4 are
the arithmetic, not overhead.

Also measured: the gradient at the stored entries (``SparsePattern.outer_at_entries``,
n = 1e5, nnz ≈ 5e5, k = 8) through ``torch.sparse.sampled_addmm`` (the fast path,
which now serves complex dtypes too) against the gather/scatter form, and the
conjugations :func:`tsgu_core.engine.autograd.adjoint_solve` adds around a backward solve.

Run: ``python benchmarks/complex.py`` (``--m``, ``--k``, ``--repeats``).
"""

from __future__ import annotations

import argparse
import time

from _common import environment, interleaved_medians, median, pin_threads, report, write_results

pin_threads(1)

import torch  # noqa: E402

import tsgu_core  # noqa: E402
from tsgu_core import SparsePattern  # noqa: E402
from tsgu_core.engine.autograd import adjoint_solve  # noqa: E402
from tsgu_core.testing import poisson_2d  # noqa: E402

CASES = (("scipy", "splu", {}), ("torch", "gmres", {"rtol": 1e-10}), ("torch", "bicgstab", {"rtol": 1e-10}))


def shifted(m: int, dtype: torch.dtype, shift: complex) -> torch.Tensor:
    A = poisson_2d(m, dtype=dtype)
    pattern = SparsePattern.of(A)
    diagonal = torch.nonzero(pattern.row == pattern.col).flatten()
    values = A.values().index_add(0, diagonal, torch.full((A.shape[0],), shift, dtype=dtype))
    return pattern.to_csr(values)


def forward_backward(A: torch.Tensor, B: torch.Tensor, backend: str, method: str, options: dict) -> str:
    """One solve and its backward; returns the iterations "forward/backward" (``-`` for a direct method)."""
    leaf = A.detach().requires_grad_()
    rhs = B.detach().requires_grad_()
    X, info = tsgu_core.solve(leaf, rhs, backend=backend, method=method, return_info=True, **options)
    loss = (X * X.conj()).real.sum() if X.is_complex() else X.square().sum()
    loss.backward()
    return "-" if info.iterations is None else f"{info.iterations}/{info.backward.iterations}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=150)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    c = 0.5
    real = shifted(args.m, torch.float64, c)
    complex_ = shifted(args.m, torch.complex128, c * (1 + 1j))
    n = real.shape[0]
    B_real = torch.randn(n, args.k, generator=generator, dtype=torch.float64)
    B_complex = torch.randn(n, args.k, generator=generator, dtype=torch.complex128)

    rows = []
    payload: dict = {"n": n, "k": args.k, "repeats": args.repeats, "solves": {}}
    for backend, method, options in CASES:
        variants = {
            "float64": lambda b=backend, m=method, o=options: forward_backward(real, B_real, b, m, o),
            "complex128": lambda b=backend, m=method, o=options: forward_backward(complex_, B_complex, b, m, o),
        }
        iterations = [run() for run in variants.values()]  # warm-up (imports, first-call costs)
        times = interleaved_medians(variants, args.repeats)
        t_real, t_complex = median(times["float64"]), median(times["complex128"])
        rows.append([f"{backend}/{method} forward+backward", f"{t_real * 1e3:.1f}", f"{t_complex * 1e3:.1f}",
                     f"{t_complex / t_real:.2f}", " vs ".join(iterations)])  # fmt: skip
        payload["solves"][f"{backend}/{method}"] = times

    size = 316  # n ≈ 1e5, nnz ≈ 5e5
    pattern = SparsePattern.of(poisson_2d(size))
    left = torch.randn(pattern.n, 8, generator=generator, dtype=torch.complex128)
    right = torch.randn(pattern.n, 8, generator=generator, dtype=torch.complex128)

    def sampled() -> None:
        with torch.no_grad():
            pattern.outer_at_entries(left, right)

    def gathered() -> None:
        with torch.no_grad():
            (left.index_select(0, pattern.row) * right.index_select(0, pattern.col)).sum(-1)

    times = interleaved_medians({"sampled_addmm": sampled, "gather": gathered}, args.repeats)
    t_fast, t_slow = median(times["sampled_addmm"]), median(times["gather"])
    rows.append(["complex128 ∂L/∂A at the entries (n = 1e5, k = 8): sampled_addmm vs gather",
                 f"{t_slow * 1e3:.1f}", f"{t_fast * 1e3:.1f}", f"{t_fast / t_slow:.2f}", ""])  # fmt: skip
    payload["outer_at_entries"] = times

    G = torch.randn(n, args.k, generator=generator, dtype=torch.complex128)
    identity_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        adjoint_solve(lambda R: R, G)
        identity_times.append(time.perf_counter() - start)
    conj_cost = median(identity_times)
    splu = median(payload["solves"]["scipy/splu"]["complex128"])
    rows.append([f"adjoint_solve's conjugations (n = {n}, k = {args.k}) vs scipy/splu forward+backward",
                 f"{splu * 1e3:.1f}", f"{conj_cost * 1e3:.3f}", f"{conj_cost / splu:.4f}", ""])  # fmt: skip
    payload["conjugations"] = identity_times

    facts = environment()
    title = (
        f"complex128 vs float64 — shifted 2-D Laplacian n = {n} (σ = {c} real, {c}(1+i) complex), k = {args.k}, "
        f"medians of {args.repeats} interleaved repeats"
    )
    header = ["case", "float64 / reference (ms)", "complex128 / candidate (ms)", "ratio", "iterations fwd/bwd"]
    table = report(title, header, rows, facts)
    print(table)
    write_results("complex", table, {**payload, "environment": facts})


if __name__ == "__main__":
    main()
