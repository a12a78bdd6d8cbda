"""JAX CG (tsgu's jax backend) against SciPy CG and against torchsparsegradutils 0.2.7, one thread.

2-D Poisson, n ≈ 1e5 (``--m 316``), float64, rtol 1e-8, k = 1 and k = 8.
Timed in one run (interleaved repeats, medians):

* ``scipy cg``: ``scipy.sparse.linalg.cg`` per column (SciPy takes vectors);
* ``tsgu jax cg``: ``tsgu_core.solve(..., backend="jax", method="cg")``, steady
  state (after one warm-up call that compiles), forward only;
* ``anchor j4t cg``: ``sparse_solve_j4t`` of torchsparsegradutils 0.2.7 with
  ``jax.scipy.sparse.linalg.cg`` (it needs JAX's x64 mode switched on
  process-wide, which the script does for it — tsgu does not).

The compile time of the first tsgu call is reported separately. XLA runs on
one thread (``XLA_FLAGS``), as do SciPy and torch.
Run: ``python benchmarks/jax_backend.py`` (``--m 100 --repeats 1`` for a quick look).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from _common import environment, interleaved_medians, markdown_table, median, pin_threads, write_results

pin_threads(1)
os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
sys.modules.setdefault("cupy", None)  # type: ignore[arg-type]
sys.modules.setdefault("cupyx", None)  # type: ignore[arg-type]

import scipy.sparse as sp  # noqa: E402
import scipy.sparse.linalg as sla  # noqa: E402
import torch  # noqa: E402

import tsgu_core  # noqa: E402
from tsgu_core.testing import poisson_2d  # noqa: E402

RTOL = 1e-8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=316)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import jax

    A = poisson_2d(args.m)
    n = A.shape[0]
    A_scipy = sp.csr_matrix((A.values().numpy(), A.col_indices().numpy(), A.crow_indices().numpy()), shape=(n, n))
    try:
        from torchsparsegradutils.jax import sparse_solve_j4t
    except ImportError:
        sparse_solve_j4t = None
        print("torchsparsegradutils is not installed: the anchor is left out (pip install -e '.[bench]')")

    rows, payload = [], {}
    for k in (1, 8):
        B = torch.randn(n, k, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
        B = B[:, 0] if k == 1 else B
        start = time.perf_counter()
        tsgu_core.solve(A, B, backend="jax", method="cg", rtol=RTOL)
        first_call = time.perf_counter() - start

        def scipy_cg(B: torch.Tensor = B) -> None:
            columns = B.reshape(n, -1).numpy()
            for j in range(columns.shape[1]):
                _, info = sla.cg(A_scipy, columns[:, j], rtol=RTOL, maxiter=10 * n)
                assert info == 0

        def tsgu_cg(B: torch.Tensor = B) -> None:
            tsgu_core.solve(A, B, backend="jax", method="cg", rtol=RTOL)

        variants = {"scipy cg": scipy_cg, "tsgu jax cg": tsgu_cg}
        if sparse_solve_j4t is not None:

            def anchor(B: torch.Tensor = B) -> None:
                previous = jax.config.jax_enable_x64
                jax.config.update("jax_enable_x64", True)  # the anchor needs it process-wide
                try:
                    sparse_solve_j4t(A, B, solve=jax.scipy.sparse.linalg.cg, tol=RTOL)
                finally:
                    jax.config.update("jax_enable_x64", previous)

            anchor()  # warm-up (compilation)
            variants["anchor j4t cg"] = anchor
        times = interleaved_medians(variants, args.repeats)
        t = {name: median(values) for name, values in times.items()}
        payload[f"k={k}"] = {"times": times, "first_call_s": first_call}
        rows.append(
            [
                str(k),
                f"{t['scipy cg'] * 1e3:.0f}",
                f"{t['tsgu jax cg'] * 1e3:.0f}",
                f"{(first_call - t['tsgu jax cg']) * 1e3:.0f}",
                f"{t['anchor j4t cg'] * 1e3:.0f}" if "anchor j4t cg" in t else "-",
                f"{t['tsgu jax cg'] / t['scipy cg']:.2f}",
                f"{t['tsgu jax cg'] / t['anchor j4t cg']:.2f}" if "anchor j4t cg" in t else "-",
            ]
        )
        print(rows[-1])
    header = [
        "k",
        "scipy cg ms",
        "tsgu jax cg ms (steady)",
        "compile ms (first call − steady)",
        "anchor j4t cg ms",
        "tsgu ÷ scipy",
        "tsgu ÷ anchor",
    ]
    facts = environment() | {"jax": jax.__version__, "XLA_FLAGS": os.environ["XLA_FLAGS"]}
    table = (
        f"# JAX CG vs SciPy CG — 2-D Poisson, n = {n}, rtol = {RTOL:g}, {args.repeats} interleaved repeats\n\n"
        + markdown_table(header, rows)
        + "\n\n"
        + "\n".join(f"- {key}: {value}" for key, value in facts.items())
    )
    print(table)
    write_results("jax_backend", table, {"n": n, "repeats": args.repeats, "results": payload, "environment": facts})


if __name__ == "__main__":
    main()
