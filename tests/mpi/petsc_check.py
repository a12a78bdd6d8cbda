"""Run under ``mpiexec -n P`` (P = 1, 2 or 4): distributed solves on 1, 2 … P ranks against each other and dense torch.

Communicators of every size that divides P are made from COMM_WORLD (``Split``),
so one launch of 4 processes solves every case on 1, 2 and 4 ranks. For each
case (nonsymmetric A unless the method needs a symmetric one; COO and CSR;
vector and matrix B) each rank checks its rows of X, ∂L/∂B and ∂L/∂A:

* against dense ``torch.linalg.solve`` autograd in float64 (the independent
  reference) to 1e-8, and
* against the 1-rank result to 1e-10 (relative to the largest magnitude),

and then, on the largest communicator:

* hypre on a nonsymmetric A refuses the backward's transpose solve with
  InvalidOptionError on every rank (its transposed V-cycle is not the
  transpose of its forward one), while its forward solve is right;
* the bytes each rank sends per product, gradient and solve equal its ghost
  count times ``k·8`` (2-D Poisson, ghosts a small fraction of n) — the same
  volume as PETSc's own MatMult scatter — and norms reduce ``2·k`` numbers,
  however large n is;
* the pattern holds nothing of size n.

Prints one line per failure and exits non-zero on any. Used by tests/test_petsc.py.
"""

import ctypes
import sys

import torch
from mpi4py import MPI

import tsgu_core
from tsgu_core.api import distributed
from tsgu_core.api.distributed import DistributedPattern
from tsgu_core.plugins.protocol import SolveOptions
from tsgu_core.sparse import structure
from tsgu_core.sparse.pattern import SparsePattern
from tsgu_core.testing import convection_diffusion_2d, poisson_2d, random_nonsymmetric

world = MPI.COMM_WORLD
rank, size = world.Get_rank(), world.Get_size()
sizes = [p for p in (1, 2, 4) if size % p == 0 and p <= size]
comms = {p: (MPI.COMM_SELF if p == 1 else world if p == size else world.Split(rank // p, rank)) for p in sizes}
failures: list[str] = []


def block_rows(n: int, comm) -> slice:
    me, p = comm.Get_rank(), comm.Get_size()
    counts = [n // p + (r < n % p) for r in range(p)]
    start = sum(counts[:me])
    return slice(start, start + counts[me])


def local_rows(D: torch.Tensor, rows: slice, layout: str) -> torch.Tensor:
    block = D[rows]
    return block.to_sparse() if layout == "coo" else block.to_sparse_csr()


def solve_on(comm, D, B, G, layout, method, options):
    """X, ∂L/∂B, ∂L/∂A (dense, this rank's rows) of L = ⟨G, X⟩ on ``comm``; rows slice; info."""
    rows = block_rows(D.shape[0], comm)
    A_local = local_rows(D, rows, layout).requires_grad_()
    B_local = B[rows].clone().requires_grad_()
    X, info = tsgu_core.solve_distributed(A_local, B_local, comm=comm, method=method, return_info=True, **options)
    (X * G[rows]).sum().backward()
    return (X.detach(), B_local.grad, A_local.grad.to_dense()), rows, info


def dense_reference(D, B, G):
    D_ref, B_ref = D.clone().requires_grad_(), B.clone().requires_grad_()
    X = torch.linalg.solve(D_ref, B_ref if B.dim() == 2 else B_ref.unsqueeze(1))
    X = X if B.dim() == 2 else X.squeeze(1)
    (X * G).sum().backward()
    return X.detach(), B_ref.grad, D_ref.grad * (D != 0)


def relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-300))


matrices = {
    "random nonsymmetric": random_nonsymmetric(30, seed=42),
    "convection-diffusion": convection_diffusion_2d(8).to_dense(),
    "poisson (symmetric)": poisson_2d(8).to_dense(),
}
cases = [  # (matrix, method, options)
    ("random nonsymmetric", "gmres", {"pc": "bjacobi", "rtol": 1e-13}),
    ("random nonsymmetric", "bcgs", {"pc": "jacobi", "rtol": 1e-13}),
    ("random nonsymmetric", "gmres", {"pc": "none", "rtol": 1e-13, "petsc_options": {"ksp_gmres_restart": 40}}),
    ("random nonsymmetric", "lu", {}),
    ("convection-diffusion", "gmres", {"pc": "gamg", "rtol": 1e-13}),
    ("poisson (symmetric)", "cg", {"pc": "gamg", "rtol": 1e-13}),
    ("poisson (symmetric)", "cg", {"pc": "hypre", "rtol": 1e-13}),
]
count = 0
for name, method, options in cases:
    D = matrices[name]
    n = D.shape[0]
    for layout in ("coo", "csr"):
        for k in (None, 3):
            generator = torch.Generator().manual_seed(7)
            B = torch.randn((n,) if k is None else (n, k), generator=generator, dtype=torch.float64)
            G = torch.randn(B.shape, generator=generator, dtype=torch.float64)
            reference = dense_reference(D, B, G)
            label = f"{name} {method} {options} {layout} k={k}"
            results = {p: solve_on(comms[p], D, B, G, layout, method, options) for p in sizes}
            one, all_rows, _ = results[1]
            for p, (got, rows, info) in results.items():
                for what, mine, dense, single in zip(("X", "dL/dB", "dL/dA"), got, reference, one, strict=True):
                    if not relative(mine, dense[rows]) < 1e-8:
                        error = relative(mine, dense[rows])
                        failures.append(f"rank {rank}, {p} rank(s): {label}: {what} off dense by {error:.1e}")
                    if not relative(mine, single[rows]) < 1e-10:
                        error = relative(mine, single[rows])
                        failures.append(f"rank {rank}, {p} rank(s): {label}: {what} off 1-rank by {error:.1e}")
                if not info.converged or (info.backward is not None and not info.backward.converged):
                    failures.append(f"rank {rank}, {p} rank(s): {label}: not converged ({info.message})")
            count += 1

# float32: the same code path, checked against dense float64 at float32's accuracy
for p, comm in comms.items():
    D32 = matrices["random nonsymmetric"].to(torch.float32)
    rows = block_rows(D32.shape[0], comm)
    A_local = local_rows(D32, rows, "csr").requires_grad_()
    B32 = torch.arange(1.0, D32.shape[0] + 1).div(D32.shape[0])
    B_local = B32[rows].clone().requires_grad_()
    X = tsgu_core.solve_distributed(A_local, B_local, comm=comm, method="gmres", pc="bjacobi", rtol=1e-6)
    X.sum().backward()
    want = dense_reference(D32.double(), B32.double(), torch.ones(D32.shape[0], dtype=torch.float64))
    got = (X.detach(), B_local.grad, A_local.grad.to_dense())
    for what, mine, dense in zip(("X", "dL/dB", "dL/dA"), got, want, strict=True):
        if mine.dtype != torch.float32 or not relative(mine.double(), dense[rows]) < 1e-4:
            failures.append(
                f"rank {rank}, {p} rank(s): float32 {what} off by {relative(mine.double(), dense[rows]):.1e}"
            )
    # the diagonal of this rank's rows, as a preconditioner would read it
    pattern = DistributedPattern.of(A_local.detach(), comm)
    if not torch.equal(pattern.diagonal(A_local.detach().values()), D32.diagonal()[rows]):
        failures.append(f"rank {rank}, {p} rank(s): DistributedPattern.diagonal is wrong")

# more ranks than rows: a rank without rows still takes part in every collective step
for p, comm in comms.items():
    D = random_nonsymmetric(3, seed=5)
    rows = block_rows(3, comm)
    A_local = local_rows(D, rows, "coo").requires_grad_()
    B_local = torch.arange(1.0, 4.0, dtype=torch.float64)[rows].clone().requires_grad_()
    X = tsgu_core.solve_distributed(A_local, B_local, comm=comm, method="gmres", pc="jacobi", rtol=1e-12)
    X.sum().backward()
    want = dense_reference(D, torch.arange(1.0, 4.0, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    got = (X.detach(), B_local.grad, A_local.grad.to_dense())
    for what, mine, dense in zip(("X", "dL/dB", "dL/dA"), got, want, strict=True):
        if mine.shape != dense[rows].shape or (mine.numel() and not relative(mine, dense[rows]) < 1e-8):
            failures.append(f"rank {rank}, {p} rank(s), {rows.stop - rows.start} row(s): {what} wrong")

# structure checks of a distributed A (what method 'cg' needs): collective, and the same as one process's
for p, comm in comms.items():
    for name, D in matrices.items():
        rows = block_rows(D.shape[0], comm)
        local = local_rows(D, rows, "csr")
        pattern = DistributedPattern.of(local, comm)
        full = D.to_sparse_csr()
        want = structure.asymmetry(SparsePattern.of(full), full.values())
        got = pattern.asymmetry(local.values())
        if abs(got - want) > 1e-15 or (name.startswith("poisson") and got != 0.0):
            failures.append(f"rank {rank}, {p} rank(s): asymmetry of {name} is {got}, one process says {want}")
    E = matrices["poisson (symmetric)"].clone()
    E[40, 40], E[50, 50] = -1.0, 0.0  # the first bad diagonal entry is row 40 (stored, negative); 50 is unstored
    rows = block_rows(E.shape[0], comm)
    pattern = DistributedPattern.of(local_rows(E, rows, "csr"), comm)
    if pattern.first_bad_diagonal(local_rows(E, rows, "csr").values()) != (40, True):
        failures.append(f"rank {rank}, {p} rank(s): first bad diagonal entry not found at row 40")
    E[40, 40] = 4.0
    if pattern.first_bad_diagonal(local_rows(E, rows, "csr").values()) != (50, False):
        failures.append(f"rank {rank}, {p} rank(s): the unstored diagonal entry of row 50 not found")
    D = matrices["convection-diffusion"]
    rows = block_rows(D.shape[0], comm)
    try:  # cg needs a symmetric A: refused on every process alike
        tsgu_core.solve_distributed(local_rows(D, rows, "csr"), torch.ones(rows.stop - rows.start, dtype=torch.float64),
                                    comm=comm, method="cg", rtol=1e-8)  # fmt: skip
        failures.append(f"rank {rank}, {p} rank(s): cg on a nonsymmetric A was not refused")
    except tsgu_core.errors.StructureError:
        pass

# hypre on a nonsymmetric A: the forward solve is right; the backward is refused on every rank, typed, naming
# alternatives
comm = comms[sizes[-1]]
D = matrices["convection-diffusion"]
rows = block_rows(D.shape[0], comm)
A_local = local_rows(D, rows, "csr").requires_grad_()
B = torch.ones(D.shape[0], dtype=torch.float64)
X = tsgu_core.solve_distributed(A_local, B[rows], comm=comm, method="gmres", pc="hypre", rtol=1e-12)
if not relative(X.detach(), torch.linalg.solve(D, B)[rows]) < 1e-8:
    failures.append(f"rank {rank}: hypre forward solve wrong")
try:
    X.sum().backward()
    failures.append(f"rank {rank}: hypre's transpose solve on a nonsymmetric A was not refused")
except Exception as error:
    typed = isinstance(error, tsgu_core.errors.InvalidOptionError) and getattr(error, "option", None) == "pc"
    if not (typed and "pc='gamg'" in str(error) and "not symmetric" in str(error)):
        failures.append(f"rank {rank}: hypre refusal is {type(error).__name__}: {error}")

# message volume: 2-D Poisson in row blocks (ghosts: at most two grid lines per rank, a small fraction of n)
m, k = 32, 2
P = poisson_2d(m).to_dense()
n = P.shape[0]
rows = block_rows(n, comm)
A_local = local_rows(P, rows, "csr")
pattern = DistributedPattern.of(A_local, comm)
ghosts = pattern.ghosts.numel()
sends = sum(r.numel() for _, r in pattern.exchange.send)  # rows other ranks need from this one
if size > 1 and not (0 < ghosts <= 2 * m and ghosts < n // 10):
    failures.append(f"rank {rank}: {ghosts} ghosts for n = {n} in row blocks of a {m}×{m} grid")
if sum(comm.allgather(ghosts)) != sum(comm.allgather(sends)):
    failures.append(f"rank {rank}: ghosts requested and rows sent do not match")
X = torch.randn(n, k, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
values = A_local.values()
expected = {"A @ X": sends * k * 8, "Aᵀ @ X": ghosts * k * 8, "gradient": sends * k * 8}
operations = {
    "A @ X": lambda: pattern.matmul(values, X[rows]),
    "Aᵀ @ X": lambda: pattern.matmul(values, X[rows], transpose=True),
    "gradient": lambda: pattern.outer_at_entries(X[rows], X[rows]),
}
for what, operation in operations.items():
    before = distributed.TRAFFIC.snapshot()
    operation()
    sent = distributed.TRAFFIC - before
    if sent.bytes_sent != expected[what] or sent.reduced != 0:
        failures.append(
            f"rank {rank}: {what} sent {sent.bytes_sent} bytes, expected {expected[what]} ({ghosts} ghosts)"
        )
# the same volume as PETSc's own scatter for its MatMult (its Mvctx): both move exactly the ghost values
with open("/proc/self/maps") as maps:
    library = ctypes.CDLL(sorted({line.split()[-1] for line in maps if "libpetsc" in line})[0])
petsc_sent = [ctypes.c_double.in_dll(library, name) for name in ("petsc_isend_len", "petsc_send_len")]
jacobi = SolveOptions(rtol=1e-8, atol=0.0, maxiter=100, extra={"pc": "jacobi", "petsc_options": None})
matrix = tsgu_core.get_entry("petsc").backend.prepare_distributed(A_local, "gmres", jacobi, comm).matrix
if matrix.getInfo()["mallocs"] != 0:  # d_nnz/o_nnz preallocation: assembly never reallocates
    failures.append(f"rank {rank}: assembling {matrix.getInfo()['mallocs']:.0f} times reallocated")
x, y = matrix.createVecs()
x.array[:] = X[rows, 0].numpy()
matrix.mult(x, y)  # the first MatMult also sets PETSc's scatter up: count the second
start = sum(c.value for c in petsc_sent)
matrix.mult(x, y)
petsc_bytes = sum(c.value for c in petsc_sent) - start
if petsc_bytes != sends * 8:
    failures.append(
        f"rank {rank}: PETSc's MatMult sent {petsc_bytes:.0f} bytes, tsgu's exchange {sends * 8} per column"
    )
before = distributed.TRAFFIC.snapshot()
pattern.column_norms(X[rows])
if (distributed.TRAFFIC - before).reduced != 2 * k or (distributed.TRAFFIC - before).bytes_sent != 0:
    failures.append(f"rank {rank}: a norm of {k} columns reduced {(distributed.TRAFFIC - before).reduced} numbers")
# a whole solve, forward and backward: only ghost rows travel through tsgu (PETSc's KSP uses its own scatter)
leaf = A_local.clone().requires_grad_()
right = X[rows].clone().requires_grad_()
before = distributed.TRAFFIC.snapshot()
solution = tsgu_core.solve_distributed(leaf, right, comm=comm, method="cg", pc="gamg", rtol=1e-10)
middle = distributed.TRAFFIC.snapshot()
solution.square().sum().backward()
forward, backward = middle - before, distributed.TRAFFIC - middle
if forward.bytes_sent != sends * k * 8 or backward.bytes_sent != (ghosts + sends) * k * 8:
    failures.append(
        f"rank {rank}: a solve sent {forward.bytes_sent} bytes forward, {backward.bytes_sent} backward, "
        f"expected {sends * k * 8} and {(ghosts + sends) * k * 8} ({ghosts} ghosts, {sends} rows sent)"
    )
if forward.reduced > 10 * k or backward.reduced > 10 * k:
    failures.append(f"rank {rank}: norms reduced {forward.reduced}/{backward.reduced} numbers for k = {k}")
# memory: the pattern's tensors are its entries, rows and ghosts, and O(P) counts — nothing of size n
held = sum(t.numel() for t in vars(pattern).values() if isinstance(t, torch.Tensor))
held += sum(r.numel() for _, r in pattern.exchange.send)
bound = 4 * values.numel() + 2 * (rows.stop - rows.start) + ghosts + 2 * len(pattern.counts) + 8
if held > bound:
    failures.append(f"rank {rank}: the pattern holds {held} indices, more than its entries, rows and ghosts ({bound})")

all_failures = [f for part in world.allgather(failures) for f in part]
if rank == 0:
    print("\n".join(all_failures) if all_failures else f"petsc distributed check: {count} cases OK on {sizes} rank(s)")
sys.exit(1 if all_failures else 0)
