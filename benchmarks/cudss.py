"""cuDSS (the ``cudss`` backend) against CuPy's ``spsolve``/``splu`` and torch's Krylov methods, on one CUDA device.

**Never run yet**: written on a machine without a GPU. It exits with a message
(status 1) where torch sees no CUDA device or the ``cudss`` backend is
unavailable, and writes no results file then.

Problems, float64: 2-D Poisson and 2-D convection–diffusion (n ≈ 10⁵),
3-D 7-point Poisson (n ≈ 10⁵), 2-D Poisson (n = 10⁶), and with ``--large``
3-D Poisson (n = 10⁶); k = 1 and 8 right-hand sides. Variants, timed in one
run with interleaved repeats after one warm-up each (medians, the device
synchronized around every call):

* ``raw cudss fwd``: nvmath's ``direct_solver`` on an int32 CSR and a
  column-major ``B`` — what a user writes by hand, the anchor of tsgu's overhead;
* ``cudss fwd`` / ``cudss fwd+bwd``: ``tsgu_core.solve(A, B, backend="cudss")``,
  the latter with gradients for A's values and B (the backward factorizes Aᵀ
  once for a nonsymmetric A; a symmetric A reuses the forward factors);
* ``cupy spsolve fwd+bwd`` / ``cupy splu fwd+bwd``: the ``cupy`` backend
  (SuperLU factorizes on the host; skipped for n > 2·10⁵ unless ``--cupy-large``);
* ``torch krylov fwd+bwd``: the ``torch`` backend's CG (SPD problems) or
  BiCGSTAB (convection–diffusion) at ``rtol = 1e-10``.

Ratios printed: cudss fwd+bwd ÷ cupy splu fwd+bwd, ÷ torch krylov fwd+bwd,
cudss fwd+bwd ÷ cudss fwd, and cudss fwd ÷ raw cudss fwd. Run:
``python benchmarks/cudss.py`` (``--quick`` for small sizes, no results file).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Callable

from _common import environment, interleaved_medians, median, pin_threads, poisson_3d, report, write_results

pin_threads(int(os.environ.get("TSGU_BENCH_THREADS", "1")))

import torch  # noqa: E402

import tsgu_core  # noqa: E402
from tsgu_core.testing import convection_diffusion_2d, poisson_2d  # noqa: E402

if "cudss" not in [entry.name for entry in tsgu_core.list_backends()]:  # entry point not installed yet
    from tsgu_backends.cudss_backend import plugin

    tsgu_core.register_plugin(plugin, name="cudss")


def _synchronized(run: Callable[[], object]) -> Callable[[], None]:
    def timed() -> None:
        torch.cuda.synchronize()
        run()
        torch.cuda.synchronize()

    return timed


def _tsgu(A: torch.Tensor, B: torch.Tensor, backend: str, backward: bool, **options: object) -> None:
    leaf, rhs = A.clone().requires_grad_(backward), B.clone().requires_grad_(backward)
    X = tsgu_core.solve(leaf, rhs, backend=backend, **options)
    if backward:
        X.square().sum().backward()


def _raw_cudss(A: torch.Tensor, B: torch.Tensor) -> None:
    from nvmath.sparse.advanced import direct_solver

    matrix = torch.sparse_csr_tensor(
        A.crow_indices().to(torch.int32), A.col_indices().to(torch.int32), A.values(), A.shape, device=A.device
    )
    rhs = B.T.contiguous().T if B.dim() == 2 else B  # column-major
    direct_solver(matrix, rhs)


def _device_facts() -> dict[str, str]:
    device = torch.cuda.current_device()
    properties = torch.cuda.get_device_properties(device)
    facts = {
        "device": f"{properties.name} (compute capability {properties.major}.{properties.minor})",
        "device memory": f"{properties.total_memory / 2**30:.0f} GiB",
        "torch CUDA": str(torch.version.cuda),
    }
    try:
        from importlib.metadata import version

        from nvmath.bindings import cudss

        facts["nvmath-python"] = version("nvmath-python")
        facts["cuDSS"] = ".".join(str(cudss.get_property(i)) for i in range(3))
    except Exception as error:  # report, do not fail the run
        facts["nvmath-python"] = f"(version unknown: {error})"
    facts["cupy"] = "installed" if importlib.util.find_spec("cupy") else "not installed"
    facts["CUDSS_THREADING_LIB"] = os.environ.get("CUDSS_THREADING_LIB", "(unset; the wheel's layer if found)")
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small problems (smoke test), no results file")
    parser.add_argument("--large", action="store_true", help="also 3-D Poisson with n = 10⁶")
    parser.add_argument("--cupy-large", action="store_true", help="also CuPy's host SuperLU for n > 2·10⁵")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/cudss.py needs a CUDA device, and torch sees none here: nothing was measured.")
    available = tsgu_core.get_entry("cudss").availability("cuda")
    if not available:
        fix = f" (fix: {available.install})" if available.install else ""
        sys.exit(f"benchmarks/cudss.py: the cudss backend is unavailable: {available.reason}{fix}")
    cupy = tsgu_core.get_entry("cupy").availability("cuda")
    torch.set_num_threads(int(os.environ.get("TSGU_BENCH_THREADS", "1")))
    scale = 4 if args.quick else 1
    problems = [
        ("2-D poisson", poisson_2d(316 // scale), True),
        ("2-D convection-diffusion", convection_diffusion_2d(316 // scale), False),
        ("3-D poisson", poisson_3d(46 // scale), True),
        ("2-D poisson", poisson_2d(1000 // scale), True),
    ]
    if args.large:
        problems.append(("3-D poisson", poisson_3d(100 // scale), True))
    rows, payload = [], {}
    for name, A_cpu, spd in problems:
        A = A_cpu.to("cuda")
        n = A.shape[0]
        for k in (1, 8):
            generator = torch.Generator().manual_seed(k)
            B = torch.randn(n, k, generator=generator, dtype=torch.float64).to("cuda")
            B = B[:, 0] if k == 1 else B
            krylov = "cg" if spd else "bicgstab"
            variants: dict[str, Callable[[], object]] = {
                "raw cudss fwd": lambda A=A, B=B: _raw_cudss(A, B),
                "cudss fwd": lambda A=A, B=B: _tsgu(A, B, "cudss", False),
                "cudss fwd+bwd": lambda A=A, B=B: _tsgu(A, B, "cudss", True),
                "torch krylov fwd+bwd": lambda A=A, B=B, m=krylov: _tsgu(A, B, "torch", True, method=m, rtol=1e-10),
            }
            if cupy and (n <= 200_000 or args.cupy_large):
                variants["cupy spsolve fwd+bwd"] = lambda A=A, B=B: _tsgu(A, B, "cupy", True, method="spsolve")
                variants["cupy splu fwd+bwd"] = lambda A=A, B=B: _tsgu(A, B, "cupy", True, method="splu")
            timed = {key: _synchronized(run) for key, run in variants.items()}
            for run in timed.values():  # warm-up: CUDA contexts, cuDSS/cuSPARSE handles, kernels
                run()
            times = interleaved_medians(timed, args.repeats)
            t = {key: median(values) for key, values in times.items()}
            payload[f"{name} n={n} k={k}"] = times

            def ms(key: str, t: dict[str, float] = t) -> str:
                return f"{t[key] * 1e3:.1f}" if key in t else "—"

            def ratio(a: str, b: str, t: dict[str, float] = t) -> str:
                return f"{t[a] / t[b]:.3f}" if a in t and b in t else "—"

            rows.append(
                [
                    name,
                    str(n),
                    str(k),
                    ms("raw cudss fwd"),
                    ms("cudss fwd"),
                    ms("cudss fwd+bwd"),
                    ms("cupy spsolve fwd+bwd"),
                    ms("cupy splu fwd+bwd"),
                    f"{ms('torch krylov fwd+bwd')} ({krylov})",
                    ratio("cudss fwd+bwd", "cupy splu fwd+bwd"),
                    ratio("cudss fwd+bwd", "torch krylov fwd+bwd"),
                    ratio("cudss fwd+bwd", "cudss fwd"),
                    ratio("cudss fwd", "raw cudss fwd"),
                ]
            )
            print(rows[-1], flush=True)
    header = [
        "problem",
        "n",
        "k",
        "raw cudss fwd ms",
        "cudss fwd ms",
        "cudss fwd+bwd ms",
        "cupy spsolve fwd+bwd ms",
        "cupy splu fwd+bwd ms",
        "torch krylov fwd+bwd ms",
        "cudss ÷ cupy splu (fwd+bwd)",
        "cudss ÷ torch krylov (fwd+bwd)",
        "cudss fwd+bwd ÷ fwd",
        "tsgu cudss fwd ÷ raw",
    ]
    facts = environment() | _device_facts()
    title = f"cuDSS vs CuPy vs torch Krylov on CUDA — float64, {args.repeats} interleaved repeats, medians"
    table = report(title, header, rows, facts)
    print(table)
    if not args.quick:
        write_results("cudss", table, {"repeats": args.repeats, "times": payload, "environment": facts})


if __name__ == "__main__":
    main()
