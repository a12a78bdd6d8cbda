"""Solves whose rows are distributed over MPI processes: :func:`solve_distributed`.

Every process passes its own block of rows: ``A_local`` of shape
``(n_local, n)`` (global column indices) and ``B_local`` of shape
``(n_local,)`` or ``(n_local, k)``; rank ``r`` owns rows
``offset_r … offset_r + n_local_r − 1`` with the ranks in order. The result
``X_local`` has ``B_local``'s shape, and the gradients reach each process's
values of ``A_local`` and rows of ``B_local``.

The gradient is the core's one rule (:class:`~tsgu_core.autograd.SparseSolveFunction`);
only the pattern it works through differs: :class:`DistributedPattern` gathers
the remote rows of ``X`` that the local entries reference, reduces the
transpose product over the processes, and makes every norm global — so the
convergence policy decides the same on every process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from tsgu_core.errors import SecondDerivativeError, ShapeError, UnsupportedDeviceError
from tsgu_core.info import SolveInfo
from tsgu_core.pattern import SparsePattern
from tsgu_core.pipeline import as_columns, execute, matrix_values, plan
from tsgu_core.protocol import DistributedBackend, SolverBackend
from tsgu_core.validate import check_rhs

__all__ = ["DistributedPattern", "solve_distributed"]


@dataclass(frozen=True)
class DistributedPattern(SparsePattern):
    """The stored entries of this process's rows, with the communication the core's products need.

    ``row`` holds local row indices, ``col`` global column indices; ``n`` is
    the global size. This first version gathers whole vectors (``Allgatherv``)
    and reduces whole vectors (``Allreduce``) — ``O(n·k)`` memory per process;
    docs/scaling.md describes the ghost-row exchange that replaces it at scale.
    """

    comm: Any = field(default=None, compare=False)
    counts: tuple[int, ...] = ()
    offset: int = 0

    def _gather(self, X: torch.Tensor) -> torch.Tensor:
        """All processes' rows of ``X`` (``(n_local, k)`` each) as one ``(n, k)`` tensor."""
        import numpy as np

        local = np.ascontiguousarray(X.detach().cpu().numpy())
        k = local.shape[1]
        full = np.empty((self.n, k), dtype=local.dtype)
        self.comm.Allgatherv(local, [full, [c * k for c in self.counts]])
        return torch.from_numpy(full).to(X.device)

    def _sum(self, array: torch.Tensor) -> torch.Tensor:
        import numpy as np
        from mpi4py import MPI

        local = np.ascontiguousarray(array.detach().cpu().numpy())
        total = np.empty_like(local)
        self.comm.Allreduce(local, total, op=MPI.SUM)
        return torch.from_numpy(total).to(array.device)

    def _first_order_only(self) -> None:
        if torch.is_grad_enabled():
            raise SecondDerivativeError(
                "distributed solves give first derivatives only; their communication is not differentiable"
            )

    def matmul(self, values: torch.Tensor, X: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
        if not transpose:  # local rows of A times the whole of X
            products = values.unsqueeze(-1) * self._gather(X).index_select(0, self.col)
            return torch.zeros_like(X).index_add(0, self.row, products)
        # Aᵀ X: every process adds its entries' contributions to all rows, then keeps its own block
        products = values.unsqueeze(-1) * X.index_select(0, self.row)
        full = torch.zeros(self.n, X.shape[1], dtype=X.dtype, device=X.device).index_add(0, self.col, products)
        return self._sum(full)[self.offset : self.offset + X.shape[0]]

    def column_norms(self, X: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(self._sum(X.detach().square().sum(-2)))

    def outer_at_entries(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        self._first_order_only()
        return (left.index_select(0, self.row) * self._gather(right).index_select(0, self.col)).sum(-1)


def _local_pattern(A_local: torch.Tensor, comm: Any) -> DistributedPattern:
    counts = tuple(comm.allgather(A_local.shape[0]))
    offset = sum(counts[: comm.Get_rank()])
    local = SparsePattern.of(A_local)  # local row indices, global column indices
    return DistributedPattern(local.row, local.col, sum(counts), None, comm, counts, offset)


def solve_distributed(
    A_local: torch.Tensor,
    B_local: torch.Tensor,
    *,
    comm: Any = None,
    backend: str | SolverBackend | None = None,
    method: str | None = None,
    return_info: bool = False,
    on_failure: str = "raise",
    **options: Any,
) -> torch.Tensor | tuple[torch.Tensor, SolveInfo]:
    r"""Solve ``A X = B`` with the rows of ``A``, ``B`` and ``X`` distributed over MPI processes.

    Call it on every process of ``comm`` (collectively, in the same order).
    The gradients follow :func:`tsgu_core.solve`'s rule — ``∂L/∂B = A⁻ᵀG`` by
    the backend's transpose solve on the same prepared state (PETSc:
    ``KSPSolveTranspose`` with the same KSP and preconditioner), and ``∂L/∂A``
    at each process's stored entries. First derivatives only.

    Parameters
    ----------
    A_local : Tensor
        This process's rows: sparse COO or CSR ``(n_local, n)``, global column
        indices, float32/float64, on the CPU.
    B_local : Tensor
        ``(n_local,)`` or ``(n_local, k)``.
    comm : mpi4py communicator, optional
        Default ``MPI.COMM_WORLD``.
    backend, method, return_info, on_failure, **options
        As for :func:`tsgu_core.solve`. Only backends implementing
        :class:`~tsgu_core.protocol.DistributedBackend` are considered
        (default: the highest-priority available one, e.g. ``"petsc"``).

    Examples
    --------
    Run under ``mpiexec -n 2 python script.py``::

        rows = slice(rank * n // 2, (rank + 1) * n // 2)
        A_local = A_full.to_dense()[rows].to_sparse_csr().requires_grad_()
        X_local = solve_distributed(A_local, B_full[rows], method="gmres", pc="bjacobi", rtol=1e-10)
        X_local.square().sum().backward()    # A_local.grad: this rank's entries
    """
    if comm is None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    detached, values = matrix_values(A_local, any_shape=True)
    if detached.device.type != "cpu":
        raise UnsupportedDeviceError("distributed solves take CPU tensors (each process's MPI buffers)")
    n_local, n = detached.shape
    total = sum(comm.allgather(n_local))
    if total != n:
        raise ShapeError(f"the processes' row blocks add up to {total} rows, but A has {n} columns")
    check_rhs(B_local, detached, "B_local")
    the_plan = plan(backend, method, detached, options, on_failure=on_failure, capability="distributed")
    chosen = the_plan.backend
    assert isinstance(chosen, DistributedBackend)  # ensured by the selection's capability
    spec, solve_options = the_plan.spec, the_plan.options
    pattern = _local_pattern(detached, comm)

    def prepare() -> Any:
        return the_plan.prepare(
            detached, pattern=pattern, prepare=lambda A: chosen.prepare_distributed(A, spec.name, solve_options, comm)
        )

    Bk, restore = as_columns(B_local, 2)
    X, info = execute(the_plan, prepare, values, Bk, x0=options.get("x0"))
    return (restore(X), info) if return_info else restore(X)
