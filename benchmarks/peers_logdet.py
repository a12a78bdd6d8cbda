"""tsgu's exact sparse log-determinant side by side with its peers: torch-sla, gabp-sparse-inv, CHOLMOD, MKL PARDISO.

Measures, one thread, medians of interleaved repeats (ratios in one run):

1. **torch-sla 0.4** on its own logdet problem, the 2-D five-point Poisson matrix: ``SparseTensor.logdet()``
   with its defaults (``method="auto"``: a positive-definiteness check, then, for an SPD matrix with n ≥ 256,
   the Hutchinson route: a stochastic Lanczos quadrature forward, 20 Rademacher probes × 30 Lanczos steps,
   and a stochastic backward ``grad ≈ (1/20) Σ z[row]·(A⁻¹z)[col]``, one ``SparseTensor.solve`` per probe)
   against ``tsgu_core.slogdet`` + ``backward()`` (exact: SuperLU and selected inversion). The accuracy
   of torch-sla's value and gradient is measured against tsgu's exact ones (relative 2-norm error).
2. **gabp-sparse-inv 0.4.1** on the block pattern it supports (SPD, ``b × b`` blocks on a general graph;
   here a 2-D grid of nodes, ``random_spd_graph``, nested-dissection order, its "reused analysis" route
   ``analyze_junction(...).factor(..., batched=True)``): log-determinant + gradient and the diagonal
   blocks of ``A⁻¹``, against tsgu on the same matrix assembled as a scalar sparse matrix.
3. **CHOLMOD** (scikit-sparse, when importable): ``cholesky(A)`` + ``logdet()`` (and its selected inverse
   if the installed scikit-sparse offers one) against one SuperLU factorization of the ``scipy`` backend
   and tsgu ``slogdet`` + ``backward()``, on 2-D Poisson n = 99 856 and 3-D Poisson n = 27 000.
4. **MKL PARDISO** (pypardiso, when importable): whether the log-determinant can be read from MKL, by
   ``iparm[32]`` (1-based 33) or by ``pardiso_getdiag`` (``iparm[55] = 1``), against
   ``numpy.linalg.slogdet``.

The peers are installed only in the benchmark's own virtual environment, never as tsgu dependencies::

    python3 -m venv /work/venv-peers
    /work/venv-peers/bin/pip install -c constraints.txt torch==2.13.0 scipy numpy numba pluggy torch-sla==0.4.0
    /work/venv-peers/bin/pip install --no-deps -e .            # tsgu itself, from this checkout
    # gabp-sparse-inv 0.4.1 declares Requires-Python >= 3.12 (pure Python, depends on torch only); on
    # Python 3.11 it installs with the check skipped, and imports and runs:
    /work/venv-peers/bin/pip download --no-deps gabp-sparse-inv==0.4.1 --python-version 3.12 \\
        --only-binary=:all: -d /tmp/gabp
    /work/venv-peers/bin/pip install --no-deps --ignore-requires-python /tmp/gabp/gabp_sparse_inv-0.4.1-*.whl
    # CHOLMOD: Debian's SuiteSparse, then scikit-sparse built from its source distribution
    apt-get update && apt-get install -y libsuitesparse-dev
    /work/venv-peers/bin/pip install -c constraints.txt scikit-sparse==0.5.0
    /work/venv-peers/bin/pip install -c constraints.txt pypardiso

Run: ``/work/venv-peers/bin/python benchmarks/peers_logdet.py [--sla-sizes 100 316] [--repeats 3]``
(``--sla-sizes`` are grid sides m, n = m²; 640 gives torch-sla's 409 600 unknowns, about 15 minutes for
3 repeats: ``--sla-sizes 640 --skip gabp cholmod pardiso --name peers_logdet_409600``).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import (
    environment,
    interleaved_medians,
    markdown_table,
    median,
    pin_threads,
    poisson_3d,
    write_results,
)

pin_threads(1)

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

import tsgu_core  # noqa: E402
from tsgu_backends.scipy_cupy_backend.scipy_backend import factorize_member  # noqa: E402
from tsgu_core.testing import poisson_2d  # noqa: E402


def _scipy(A: torch.Tensor) -> sp.csr_matrix:
    return sp.csr_matrix((A.values().numpy(), A.col_indices().numpy(), A.crow_indices().numpy()), shape=A.shape)


def _coo_rows(A: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(A.shape[0]), A.crow_indices().diff())


def _tsgu_logdet_and_gradient(A: torch.Tensor) -> tuple[float, torch.Tensor]:
    leaf = A.detach().requires_grad_()
    _, logabsdet = tsgu_core.slogdet(leaf)
    logabsdet.backward()
    grad = leaf.grad
    assert grad is not None and grad.layout == torch.sparse_csr and torch.equal(grad.col_indices(), A.col_indices())
    return float(logabsdet), grad.values()


def _check_against_dense(A: torch.Tensor) -> None:
    """tsgu's value and gradient against dense torch.linalg.slogdet + autograd (the reference for the others)."""
    value, gradient = _tsgu_logdet_and_gradient(A)
    dense = A.to_dense().requires_grad_()
    reference = torch.linalg.slogdet(dense).logabsdet
    reference.backward()
    assert dense.grad is not None
    expected = dense.grad[_coo_rows(A), A.col_indices()]
    assert abs(value - float(reference)) <= 1e-10 * abs(float(reference))
    torch.testing.assert_close(gradient, expected, rtol=1e-10, atol=1e-12)


def _relative_error(estimate: torch.Tensor, exact: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(estimate - exact) / torch.linalg.vector_norm(exact))


# ----------------------------------------------------------------------------------------------- torch-sla
def torch_sla_row(m: int, repeats: int) -> list[str]:
    from torch_sla import SparseTensor

    A = poisson_2d(m)
    n = A.shape[0]
    rows, cols = _coo_rows(A), A.col_indices()
    _check_against_dense(poisson_2d(30))  # compiles the kernels too

    out: dict[str, tuple[float, torch.Tensor]] = {}

    def sla() -> None:
        values = A.values().clone().requires_grad_()
        logdet = SparseTensor(values, rows, cols, (n, n)).logdet(method="hutchinson")
        logdet.backward()
        assert values.grad is not None
        out["sla"] = (float(logdet), values.grad)

    def ours() -> None:
        out["tsgu"] = _tsgu_logdet_and_gradient(A)

    start = time.perf_counter()
    times = interleaved_medians({"torch-sla": sla, "tsgu": ours}, repeats)
    wall = time.perf_counter() - start
    t_sla, t_ours = median(times["torch-sla"]), median(times["tsgu"])
    exact_value, exact_gradient = out["tsgu"]
    sla_value, sla_gradient = out["sla"]
    value_error = abs(sla_value - exact_value) / abs(exact_value)
    gradient_error = _relative_error(sla_gradient, exact_gradient)
    print(
        f"2-D Poisson n = {n}: torch-sla {t_sla:.2f} s, tsgu {t_ours:.2f} s ({t_sla / t_ours:.1f}× faster); "
        f"torch-sla logdet rel. error {value_error:.1e}, gradient rel. error {gradient_error:.2e} ({wall:.0f} s)"
    )
    return [
        f"{n}",
        f"{t_sla:.2f}",
        f"{t_ours:.3f}",
        f"{t_sla / t_ours:.1f}×",
        f"{exact_value:.6f}",
        f"{value_error:.1e}",
        f"{gradient_error:.2e}",
    ]


# ----------------------------------------------------------------------------------------------- gabp-sparse-inv
def gabp_row(side: int, block: int, repeats: int) -> list[str]:
    from gabp_sparse_inv import analyze_junction, elimination_order_nested_dissection, grid_edges, random_spd_graph

    nodes = side * side
    G = random_spd_graph(nodes, grid_edges(side, side), block, seed=0)
    order = elimination_order_nested_dissection(side, side)
    start = time.perf_counter()
    analysis = analyze_junction(nodes, G.edge_index, order)
    symbolic = time.perf_counter() - start
    A = _assemble_blocks(G.diag, G.edge_index, G.edge_val)
    out: dict[str, object] = {}

    def gabp() -> None:
        diag = G.diag.clone().requires_grad_()
        edges = G.edge_val.clone().requires_grad_()
        factor = analysis.factor(diag, edges, batched=True)
        logdet = factor.logdet()
        logdet.backward()
        out["gabp"] = (float(logdet), factor.marginal_diag().detach().reshape(-1))

    def ours() -> None:
        logdet, _ = _tsgu_logdet_and_gradient(A)
        out["tsgu"] = (logdet, tsgu_core.diagonal_of_inverse(A))

    ours()
    times = interleaved_medians({"gabp": gabp, "tsgu": ours}, repeats)
    t_gabp, t_ours = median(times["gabp"]), median(times["tsgu"])
    (l_gabp, d_gabp), (l_ours, d_ours) = out["gabp"], out["tsgu"]  # type: ignore[misc]
    value_error = abs(l_gabp - l_ours) / abs(l_ours)
    diagonal_error = _relative_error(d_gabp, d_ours)
    n = A.shape[0]
    print(
        f"gabp grid {side}×{side}, {block}×{block} blocks (n = {n}): gabp {t_gabp:.3f} s "
        f"(+ symbolic {symbolic:.3f} s), "
        f"tsgu {t_ours:.3f} s; logdet agree to {value_error:.1e}, diag(A⁻¹) to {diagonal_error:.1e}"
    )
    return [
        f"{side}×{side} grid, {block}×{block} blocks",
        f"{n}",
        f"{t_gabp:.3f} (+ {symbolic:.3f} analysis)",
        f"{t_ours:.3f}",
        f"{t_gabp / t_ours:.1f}×",
        f"{value_error:.1e}",
        f"{diagonal_error:.1e}",
    ]


def _assemble_blocks(diag: torch.Tensor, edge_index: torch.Tensor, edge_val: torch.Tensor) -> torch.Tensor:
    """The scalar CSR matrix with diagonal blocks ``diag[i]``, ``A[i, j] = edge_val`` and ``A[j, i] = edge_valᵀ``."""
    nodes, b, _ = diag.shape
    local = torch.arange(b)
    p, q = local.repeat_interleave(b), local.repeat(b)

    def place(
        bi: torch.Tensor, bj: torch.Tensor, blocks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (bi[:, None] * b + p).reshape(-1), (bj[:, None] * b + q).reshape(-1), blocks.reshape(-1)

    i, j = edge_index
    parts = [
        place(torch.arange(nodes), torch.arange(nodes), diag),
        place(i, j, edge_val),
        place(j, i, edge_val.mT),
    ]
    r, c, v = (torch.cat(x) for x in zip(*parts, strict=True))
    return torch.sparse_coo_tensor(torch.stack([r, c]), v, (nodes * b, nodes * b)).coalesce().to_sparse_csr()


# ----------------------------------------------------------------------------------------------- CHOLMOD
def cholmod_rows(repeats: int) -> tuple[list[list[str]], str]:
    from sksparse import cholmod

    inverse = next(
        (name for name in ("inv_selected", "spinv", "selected_inverse") if hasattr(cholmod.Factor, name)), None
    )
    rows = []
    for name, A in (("2-D Poisson", poisson_2d(316)), ("3-D Poisson", poisson_3d(30))):
        matrix = _scipy(A)
        csc = matrix.tocsc()
        _tsgu_logdet_and_gradient(A)
        factor = cholmod.cholesky(csc)
        cholmod_logdet = float(factor.logdet())
        exact, _ = _tsgu_logdet_and_gradient(A)
        variants = {
            "SuperLU factorization": lambda matrix=matrix: factorize_member(matrix, {}),
            "CHOLMOD cholesky + logdet": lambda csc=csc: cholmod.cholesky(csc).logdet(),
            "tsgu slogdet + backward": lambda A=A: _tsgu_logdet_and_gradient(A),
        }
        if inverse is not None:
            variants["CHOLMOD cholesky + selected inverse"] = lambda csc=csc: getattr(cholmod.cholesky(csc), inverse)()
        times = interleaved_medians(variants, repeats)
        t = {key: median(value) for key, value in times.items()}
        print(name, {key: round(value, 3) for key, value in t.items()}, abs(cholmod_logdet - exact) / abs(exact))
        rows.append(
            [
                name,
                f"{A.shape[0]}",
                f"{t['SuperLU factorization']:.3f}",
                f"{t['CHOLMOD cholesky + logdet']:.3f}",
                f"{t['SuperLU factorization'] / t['CHOLMOD cholesky + logdet']:.1f}×",
                f"{t['tsgu slogdet + backward']:.3f}",
                f"{t['CHOLMOD cholesky + selected inverse']:.3f}" if inverse else "not offered",
                f"{abs(cholmod_logdet - exact) / abs(exact):.1e}",
            ]
        )
    return rows, inverse or "none"


# ----------------------------------------------------------------------------------------------- PARDISO
def pardiso_rows() -> list[list[str]]:
    """What MKL PARDISO (through pypardiso) gives for the log-determinant, against numpy.linalg.slogdet."""
    from pypardiso.pardiso_wrapper import PyPardisoSolver

    def solver(mtype: int, scaling_and_matching: int) -> PyPardisoSolver:
        s = PyPardisoSolver(mtype=mtype)
        # iparm(1) = 1: we set the iparms (MKL otherwise overwrites them with defaults, iparm(56) included)
        for i, v in ((1, 1), (2, 2), (10, 13 if mtype == 11 else 8), (11, scaling_and_matching)):
            s.set_iparm(i, v)
        s.set_iparm(13, scaling_and_matching)
        s.set_iparm(33, 1)  # iparm[32]: "determinant" — see whether MKL writes anything back
        s.set_iparm(56, 1)  # iparm[55]: enable pardiso_getdiag
        return s

    def factor_diagonal(s: PyPardisoSolver, n: int) -> np.ndarray:
        df, da, error = np.zeros(n), np.zeros(n), ctypes.c_int32(0)
        s.libmkl.pardiso_getdiag(
            s.pt.ctypes.data_as(ctypes.c_void_p),
            df.ctypes.data_as(ctypes.c_void_p),
            da.ctypes.data_as(ctypes.c_void_p),
            ctypes.byref(ctypes.c_int32(1)),
            ctypes.byref(error),
        )
        assert error.value == 0, error.value
        return df

    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(4):
            rng = np.random.default_rng(seed)
            n = 400
            A = sp.random(n, n, density=0.02, random_state=seed, format="csr") * 5
            A = (A + sp.diags(rng.uniform(-3, 3, n))).tocsr()
            if seed >= 2:  # rows permuted: pivoting must swap rows, and the sign must follow the swaps
                A = A[rng.permutation(n)]
            A.sort_indices()
            sign, exact = np.linalg.slogdet(A.toarray())
            for sm in (0, 1):
                s = solver(11, sm)
                s.factorize(A)
                df = factor_diagonal(s, n)
                got, got_sign = np.log(np.abs(df)).sum(), np.prod(np.sign(df))
                rows.append(
                    [
                        f"nonsymmetric random n = {n}, seed {seed}" + (", rows permuted" if seed >= 2 else ""),
                        "11",
                        "on" if sm else "off",
                        f"{sign:+.0f} {exact:.10f}",
                        f"{got_sign:+.0f} {got:.10f}",
                        f"{abs(got - exact) / abs(exact):.1e}",
                        f"{s.get_iparm(33)}",
                        f"{s.get_iparm(14)}",
                    ]
                )
        P = _scipy(poisson_2d(100))
        exact = float(np.log(np.abs(factorize_member(P, {}).lu.U.diagonal())).sum())
        s = solver(2, 0)
        upper = sp.triu(P).tocsr()
        upper.sort_indices()
        s.factorize(upper)
        got = float(np.log(factor_diagonal(s, P.shape[0])).sum())
        rows.append(
            [
                "SPD 2-D Poisson n = 10 000 (reference: SuperLU)",
                "2",
                "off",
                f"+1 {exact:.10f}",
                f"+1 {got:.10f}",
                f"{abs(got - exact) / abs(exact):.1e}",
                f"{s.get_iparm(33)}",
                f"{s.get_iparm(14)}",
            ]
        )
    for row in rows:
        print("pardiso:", row)
    return rows


DECISIONS = """
## Findings and decisions (from the run of 2026-12-06 above and `peers_logdet_409600.md`; a loaded 2-core machine)

**torch-sla 0.4.** Its default `SparseTensor.logdet()` (`method="auto"`) does not reach its stochastic route on
this matrix: `is_positive_definite()` answers `False` for the SPD Poisson matrix, so it takes the LU route, which
multiplies the determinant out and returns `inf` (overflow) with no gradient. Its logdet benchmark therefore needs
`method="hutchinson"` (20 Rademacher probes, 30 Lanczos steps: `torch_sla/det.py`), which is what is timed here.
That route's value is off by ~1e-3 relative, and its gradient — `(1/20) Σ z[row]·(A⁻¹z)[col]`, one solve per probe
— has a relative 2-norm error of 2.6 (n = 10 000), 6.7 (n = 99 856) and 11 (n = 409 600): larger than the gradient
itself. tsgu gives the exact value and gradient (checked against dense torch at n = 900 in the same run) 14× faster
at n = 10⁴ and 10⁵, and 19.5× at torch-sla's largest size, n = 409 600 (14.6 s against 284 s; a separate run,
`peers_logdet_409600.md`, 892 s for 3 repeats).

**gabp-sparse-inv 0.4.1** (installed with `--ignore-requires-python`: it declares Python ≥ 3.12, is pure Python
and runs on 3.11): on SPD 2×2-block grids it agrees with tsgu to 1e-16 (log det and diag(A⁻¹)); tsgu (log det +
gradient + diagonal of the inverse) is 8× faster at n = 2 048 and 13× at n = 8 192, not counting gabp's symbolic
analysis. gabp covers SPD block patterns (and unpivoted nonsymmetric ones); tsgu any pivoted sparse matrix.

**CHOLMOD: not now.** `scikit-sparse==0.5.0` does not build against Debian 12's SuiteSparse 5.12
(`libsuitesparse-dev`, apt: update 10 s + install 39 s): its generated `cholmod.c` needs CHOLMOD ≥ 5 fields
(`nsbounds_hit`, `sbound`); the build fails after 151 s. `scikit-sparse==0.4.16` builds (179 s, Cython + a C
compiler + the apt package) and is measured here: CHOLMOD's Cholesky + logdet is 2.3× faster than one SuperLU
factorization on 2-D Poisson n = 99 856 and 1.3× on 3-D n = 27 000 (a second, single-repeat run:
1.2× and 1.4×), but scikit-sparse exposes **no selected
inverse** (`Factor` has `inv()`, the full inverse, only), so the gradient would still need our own recurrences on
CHOLMOD's supernodal `L` — new code for SPD input only. The forward gain (≤ 2.3× on the factorization, i.e. at
most ~1.5× on `slogdet` + backward, whose cost is ~2–3 factorizations) does not pay for an optional extra that
needs root (apt), a compiler and ~4 minutes to install on a fresh machine, and whose current release does not
build on Debian stable. Revisit when scikit-sparse ships wheels (or exposes selected inversion).

**MKL PARDISO: SPD only, through `pardiso_getdiag`; not for general matrices.** MKL does not return a
determinant in `iparm`: `iparm(33)` (0-based 32) set to 1 comes back unchanged as 1. pypardiso exposes neither the
factors nor a selected inverse (MKL has none). What works is MKL's `pardiso_getdiag` (the factor's diagonal `df`),
reached through `solver.libmkl`, with `iparm(1) = 1` (else MKL overwrites `iparm(56)` with its defaults) and
`iparm(56) = 1` before the factorization:

```python
s = PyPardisoSolver(mtype=2)                        # SPD; pass the upper triangle as CSR
for i, v in ((1, 1), (2, 2), (10, 8), (56, 1)):     # own iparms, METIS, pivot eps 1e-8, enable getdiag
    s.set_iparm(i, v)
s.factorize(sp.triu(A).tocsr())
df, da, err = np.zeros(n), np.zeros(n), ctypes.c_int32(0)
s.libmkl.pardiso_getdiag(s.pt.ctypes.data_as(ctypes.c_void_p), df.ctypes.data_as(ctypes.c_void_p),
                         da.ctypes.data_as(ctypes.c_void_p), ctypes.byref(ctypes.c_int32(1)), ctypes.byref(err))
logdet = np.log(df).sum()                           # err.value == 0; equals SuperLU's to 0.0 relative (n = 10⁴)
```

For a nonsymmetric matrix (`mtype=11`) it is not reliable: with scaling + matching on (MKL's default) `df` belongs to
the scaled, permuted matrix (log det off by 88 %); with them off a matrix that needs row pivoting gets perturbed
pivots (125, 135 here) and a wrong value and sign. So a PARDISO `slogdet` could be offered for SPD (`mtype=2`)
only, and its gradient would still need a selected inverse that MKL does not give — not worth a capability now.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sla-sizes", type=int, nargs="*", default=[100, 316])
    parser.add_argument("--sla-repeats", type=int, default=3)
    parser.add_argument("--gabp-sides", type=int, nargs="*", default=[32, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["sla", "gabp", "cholmod", "pardiso"])
    parser.add_argument("--name", default="peers_logdet", help="results file name under benchmarks/results/")
    args = parser.parse_args()
    facts = environment()
    sections: list[str] = []
    payload: dict[str, object] = {"environment": facts}

    def add(key: str, package: str, rows: list[list[str]], title: str, header: list[str]) -> None:
        facts[package] = version(package)
        payload[key] = rows
        sections.append(f"## {title}\n\n" + markdown_table(header, rows))

    if "sla" not in args.skip:
        sla = [torch_sla_row(m, args.sla_repeats) for m in args.sla_sizes]
        title = (
            'torch-sla 0.4 `SparseTensor.logdet(method="hutchinson")` (its defaults: 20 probes, 30 Lanczos steps) '
            "+ backward, against tsgu `slogdet` + backward (exact), 2-D five-point Poisson"
        )
        header = ["n", "torch-sla (s)", "tsgu (s)", "tsgu faster by", "exact log det"]
        add("torch-sla", "torch-sla", sla, title, [*header, "torch-sla log det rel. error", "its gradient rel. error"])
    if "gabp" not in args.skip:
        gabp = [gabp_row(side, 2, args.repeats) for side in args.gabp_sides]
        title = (
            "gabp-sparse-inv (reused analysis, `batched=True`): log det + gradient + diag(A⁻¹), "
            "against tsgu `slogdet` + backward + `diagonal_of_inverse`, SPD block grid (`random_spd_graph`)"
        )
        header = ["pattern", "n", "gabp (s)", "tsgu (s)", "tsgu faster by", "log det agree", "diag(A⁻¹) agree"]
        add("gabp", "gabp-sparse-inv", gabp, title, header)
    if "cholmod" not in args.skip:
        cholmod, inverse = cholmod_rows(args.repeats)
        title = f"CHOLMOD (scikit-sparse; selected inverse method: {inverse}) against SuperLU, SPD Poisson"
        header = ["problem", "n", "one SuperLU factorization (s)", "CHOLMOD cholesky + logdet (s)"]
        header += ["CHOLMOD faster by", "tsgu slogdet + backward (s)", "CHOLMOD selected inverse (s)", "log det agree"]
        add("cholmod", "scikit-sparse", cholmod, title, header)
    if "pardiso" not in args.skip:
        title = "MKL PARDISO (pypardiso): the log-determinant from `pardiso_getdiag` against numpy.linalg.slogdet"
        header = ["matrix", "mtype", "scaling + matching", "numpy slogdet", "∏ sign(df), Σ log abs(df)"]
        header += ["log rel. error", "iparm(33) after", "perturbed pivots"]
        add("pardiso", "pypardiso", pardiso_rows(), title, header)
    facts["load average at the end (1, 5, 15 min)"] = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    listing = "\n".join(f"- {key}: {value}" for key, value in facts.items())
    title = "# tsgu's exact log-determinant beside its peers (1 thread, medians of interleaved repeats)"
    table = f"{title}\n\n" + "\n\n".join(sections) + f"\n\n## environment\n\n{listing}"
    if args.name == "peers_logdet":
        table += "\n\n" + DECISIONS.strip()
    write_results(args.name, table, payload)
    print(table)


if __name__ == "__main__":
    main()
