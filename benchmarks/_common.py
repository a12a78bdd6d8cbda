"""Shared benchmark helpers: thread pinning, environment report, interleaved median timing, result files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
NOTED_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
RESULTS = Path(__file__).parent / "results"


def pin_threads(threads: int = 1) -> None:
    """Set every thread count to ``threads``; call before importing numpy/scipy/torch."""
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(threads)


def environment() -> dict[str, str]:
    """The facts a reader needs to compare timings: versions, threads, BLAS quirks."""
    import numpy
    import scipy
    import torch

    facts = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": str(os.cpu_count()),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
    }
    for variable in THREAD_VARIABLES + NOTED_VARIABLES:
        facts[variable] = os.environ.get(variable, "(unset)")
    return facts


def interleaved_medians(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Time every variant ``repeats`` times, interleaving them so they share the machine's noise."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_results(name: str, table: str, payload: dict) -> None:
    """Save the printed table (markdown) and the raw numbers (json) under benchmarks/results/."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(table + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nsaved benchmarks/results/{name}.md and .json")


def report(title: str, header: list[str], rows: list[list[str]], facts: dict[str, str]) -> str:
    """``# title``, the table, and the facts of the run — the load average at its end added to ``facts``."""
    facts["load average at the end (1, 5, 15 min)"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    listing = "\n".join(f"- {key}: {value}" for key, value in facts.items())
    return f"# {title}\n\n{markdown_table(header, rows)}\n\n{listing}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def poisson_3d(m: int) -> torch.Tensor:
    """The 7-point Laplacian on an ``m × m × m`` grid (n = m³), as a CPU torch CSR tensor, float64."""
    import scipy.sparse as sp
    import torch

    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    identity = sp.identity(m)
    M = sp.kron(sp.kron(T, identity), identity) + sp.kron(sp.kron(identity, T), identity)
    M = (M + sp.kron(sp.kron(identity, identity), T)).tocsr()
    M.sort_indices()
    return torch.sparse_csr_tensor(
        torch.from_numpy(M.indptr.astype("int64")),
        torch.from_numpy(M.indices.astype("int64")),
        torch.from_numpy(M.data),
        M.shape,
    )
