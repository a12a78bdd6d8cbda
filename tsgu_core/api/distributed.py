"""Solves whose rows are distributed over MPI processes: :func:`solve_distributed`.

Every process passes its own block of rows: ``A_local`` of shape
``(n_local, n)`` (global column indices) and ``B_local`` of shape
``(n_local,)`` or ``(n_local, k)``; rank ``r`` owns rows
``offset_r … offset_r + n_local_r − 1`` with the ranks in order. The result
``X_local`` has ``B_local``'s shape, and the gradients reach each process's
values of ``A_local`` and rows of ``B_local``.

The gradient is the core's one rule (:class:`~tsgu_core.engine.autograd.SparseSolveFunction`);
only the pattern it works through differs: :class:`DistributedPattern`
receives the *ghost* rows of ``X`` (the off-process columns the local
entries touch) from their owners, sends the transpose product's
contributions to the owners of the rows they touch, and makes every norm
global from ``2·k`` numbers per process — so the convergence policy decides
the same on every process and no process holds anything of size ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from tsgu_core.base.quiet import quietly
from tsgu_core.base.transforms import outside_graphs
from tsgu_core.engine.pipeline import as_columns, execute, matrix_values, plan
from tsgu_core.engine.request import SolveRequest
from tsgu_core.errors import ComplexNotSupportedError, SecondDerivativeError, ShapeError, UnsupportedDeviceError
from tsgu_core.plugins.info import SolveInfo
from tsgu_core.plugins.kit.csr import row_pointers, transpose_csr
from tsgu_core.plugins.protocol import DistributedBackend, SolverBackend
from tsgu_core.sparse.pattern import SparsePattern
from tsgu_core.sparse.validate import check_rhs

__all__ = ["TRAFFIC", "DistributedPattern", "Exchange", "Traffic", "solve_distributed"]


_TAG_GHOSTS, _TAG_CONTRIBUTIONS, _TAG_SETUP = 0x7567, 0x7568, 0x7569  # tsgu's point-to-point tags


@dataclass
class Traffic:
    """What one process sent through its :class:`DistributedPattern`'s exchanges (counted in the exchange code).

    Attributes
    ----------
    bytes_sent : int
        Bytes of ghost rows and transpose contributions sent, point to point.
    messages : int
        Point-to-point messages sent.
    reduced : int
        Numbers this process contributed to collective reductions (norms):
        ``2·k`` per norm of an ``(n_local, k)`` block, independent of ``n``.
    setup_bytes : int
        Bytes sent once, by :meth:`DistributedPattern.of`, to tell the owners which rows to send.
    """

    bytes_sent: int = 0
    messages: int = 0
    reduced: int = 0
    setup_bytes: int = 0

    def snapshot(self) -> Traffic:
        """A copy of the counters (subtract two snapshots to count one operation)."""
        return Traffic(self.bytes_sent, self.messages, self.reduced, self.setup_bytes)

    def __sub__(self, other: Traffic) -> Traffic:
        return Traffic(
            self.bytes_sent - other.bytes_sent,
            self.messages - other.messages,
            self.reduced - other.reduced,
            self.setup_bytes - other.setup_bytes,
        )

    def add(self, *, bytes_sent: int = 0, messages: int = 0, reduced: int = 0, setup_bytes: int = 0) -> None:
        """Count into these counters and into this process's total, :data:`TRAFFIC`."""
        for counters in {id(self): self, id(TRAFFIC): TRAFFIC}.values():
            counters.bytes_sent += bytes_sent
            counters.messages += messages
            counters.reduced += reduced
            counters.setup_bytes += setup_bytes


TRAFFIC = Traffic()
"""Everything this process has sent through any :class:`DistributedPattern` (snapshot it around a solve)."""


@dataclass(frozen=True)
class Exchange:
    """The ghost exchange of one process's rows: who sends which rows to whom, built once per pattern.

    Attributes
    ----------
    comm : mpi4py communicator
        The processes, in row order.
    counts : tuple of int
        Every process's number of rows.
    offset : int
        This process's first global row.
    ghosts : Tensor
        The sorted global indices of this process's ghost columns.
    local_col : Tensor
        Every entry's column in the *extended* local vector
        ``[ghosts below offset, own rows, ghosts above]`` (sorted within each row, like the pattern's ``col``).
    below : int
        How many ghosts lie below ``offset``.
    recv : tuple of (int, int, int)
        ``(owner rank, start, stop)`` in the ghost array: what each neighbour sends here.
    send : tuple of (int, Tensor)
        ``(requesting rank, local rows it needs)``: what this process sends to each neighbour.
    traffic : Traffic
        Bytes and messages sent so far through this exchange.
    """

    comm: Any = field(compare=False)
    counts: tuple[int, ...]
    offset: int
    ghosts: torch.Tensor = field(compare=False)
    local_col: torch.Tensor = field(compare=False)
    below: int
    recv: tuple[tuple[int, int, int], ...] = field(compare=False, repr=False)
    send: tuple[tuple[int, torch.Tensor], ...] = field(compare=False, repr=False)
    traffic: Traffic = field(default_factory=Traffic, compare=False)

    @property
    def n_local(self) -> int:
        """This process's number of rows."""
        return self.counts[int(self.comm.Get_rank())]

    @property
    def n_extended(self) -> int:
        """Rows of the extended local vector: own rows plus ghosts."""
        return self.n_local + self.ghosts.numel()


@dataclass(frozen=True)
class DistributedPattern(SparsePattern):
    """The stored entries of this process's rows — a :class:`SparsePattern` — and their ghost :class:`Exchange`.

    ``row`` holds local row indices, ``col`` global column indices, ``n``
    the global size, ``crow`` the local row pointers; ``exchange`` says what
    travels between processes. Build it once per pattern with :meth:`of`
    (collective); it then serves every product, norm, structure check and
    gradient of solves with that pattern, by overriding the
    :class:`SparsePattern` methods the core calls.

    Only *ghosts* travel: the off-process columns ``j`` that this process's
    entries touch. ``A @ X`` receives the ghost rows of ``X`` from their
    owners; ``Aᵀ @ X`` sends each ghost's contribution to its owner, which
    adds it to its row; the gradient ``−⟨S_i, X_j⟩`` receives the ghost rows
    of ``X``. Norms are reduced collectively from ``2·k`` numbers per
    process, scaled by the global largest magnitude first, so every process
    computes the same norm (and reaches the same verdict) and nothing
    overflows. Memory per process: its entries, its rows and its ghosts —
    nothing of size ``n`` (only ``O(P)`` row counts). The exchanges are
    point-to-point messages on ``comm`` with tsgu's own tags
    (``0x7567``–``0x7569``); like every collective call they must be made
    by all processes in the same order.

    Attributes
    ----------
    exchange : Exchange
        The ghost exchange; its ``comm``, ``counts``, ``offset``, ``ghosts``,
        ``local_col``, ``below`` and ``traffic`` are also read through the pattern.
    """

    exchange: Exchange = field(kw_only=True, compare=False, repr=False)

    @property
    def comm(self) -> Any:
        return self.exchange.comm

    @property
    def counts(self) -> tuple[int, ...]:
        return self.exchange.counts

    @property
    def offset(self) -> int:
        return self.exchange.offset

    @property
    def ghosts(self) -> torch.Tensor:
        return self.exchange.ghosts

    @property
    def local_col(self) -> torch.Tensor:
        return self.exchange.local_col

    @property
    def below(self) -> int:
        return self.exchange.below

    @property
    def traffic(self) -> Traffic:
        return self.exchange.traffic

    @classmethod
    def of(cls, A_local: torch.Tensor, comm: Any = None) -> DistributedPattern:
        """The pattern of this process's rows ``A_local`` ``(n_local, n)`` (global columns), with its ghost exchange.

        Collective over ``comm`` (default ``MPI.COMM_WORLD``): every process
        calls it with its own rows, ranks in row order. Sends each owner the
        list of its rows this process needs — once; all later exchanges are
        point to point between neighbours.

        Parameters
        ----------
        A_local : Tensor
            Sparse COO (coalesced) or CSR, ``(n_local, n)``, on the CPU.
        comm : mpi4py communicator, optional
            The processes, ranks in row order; default ``MPI.COMM_WORLD``.

        Returns
        -------
        DistributedPattern
        """
        if comm is None:
            from mpi4py import MPI

            comm = MPI.COMM_WORLD
        rank, size = comm.Get_rank(), comm.Get_size()
        n_local, n = A_local.shape
        counts = tuple(int(c) for c in comm.allgather(n_local))
        offsets = [0]
        for c in counts:
            offsets.append(offsets[-1] + c)
        if offsets[-1] != n:
            raise ShapeError(f"the processes' row blocks add up to {offsets[-1]} rows, but A has {n} columns")
        local = SparsePattern.of(A_local)
        crow = local.crow
        if crow is None or crow.numel() != n_local + 1:  # a COO pattern's pointers are over its rows
            crow = row_pointers(local.row, n_local)
        lo, hi = offsets[rank], offsets[rank + 1]
        col = local.col
        owned = (col >= lo) & (col < hi)
        ghosts = torch.unique(col[~owned])  # sorted
        below = int((ghosts < lo).sum())
        ghost_position = torch.searchsorted(ghosts, col)
        local_col = torch.where(
            owned, col - lo + below, torch.where(col < lo, ghost_position, ghost_position + n_local)
        )
        # owners of the ghosts: sorted ghosts have non-decreasing owners, so each owner's ghosts are one slice
        boundaries = torch.tensor(offsets[1:], dtype=torch.int64)
        owner = torch.searchsorted(boundaries, ghosts, right=True)
        owners, per_owner = torch.unique_consecutive(owner, return_counts=True)
        recv, start = [], 0
        for q, c in zip(owners.tolist(), per_owner.tolist(), strict=True):
            recv.append((q, start, start + c))
            start += c
        wanted = [0] * size
        for q, a, b in recv:
            wanted[q] = b - a
        asked = comm.alltoall(wanted)  # O(P) integers, once per pattern
        traffic = Traffic()
        send = _setup_send_lists(comm, recv, ghosts, asked, lo, traffic)
        exchange = Exchange(comm, counts, lo, ghosts, local_col, below, tuple(recv), tuple(send), traffic)
        return cls(local.row, col, n, crow, exchange=exchange)

    # --- sizes ---------------------------------------------------------------------------------------------
    @property
    def n_local(self) -> int:
        """This process's number of rows."""
        return self.exchange.n_local

    @property
    def n_extended(self) -> int:
        """Rows of the extended local vector: own rows plus ghosts."""
        return self.exchange.n_extended

    def diagonal(self, values: torch.Tensor) -> torch.Tensor:
        """This process's rows of the diagonal, dense ``(n_local,)``: the entries whose column is their global row."""
        on_diagonal = self.col == self.row + self.offset
        diagonal = values.new_zeros(self.n_local)
        return diagonal.index_add(0, self.row[on_diagonal], values[on_diagonal])

    def asymmetry(self, values: torch.Tensor, *, conjugate: bool = False) -> float:
        """``max |a_ij − a_ji| / max |a_ij|`` of the whole distributed ``A`` — the same number on every process.

        Collective. Each entry in a ghost column is sent, as ``(column, row,
        value)``, to the owner of that column — the row its transpose lives
        in — over the neighbour channels of the ghost exchange; every process
        then compares its own entries with the transposes it holds and
        received, and two numbers are reduced. Bytes: 24 per off-process
        entry, counted as set-up traffic. Real values only (``conjugate`` changes
        nothing: :func:`solve_distributed` refuses a complex ``A``).
        """
        import numpy as np
        from mpi4py import MPI

        values = values.detach().reshape(-1).to(torch.float64)
        n_local, below = self.n_local, self.below
        rows = self.row + self.offset
        ghost = (self.local_col < below) | (self.local_col >= below + n_local)
        ghost_index = torch.where(self.local_col < below, self.local_col, self.local_col - n_local)
        outgoing: list[np.ndarray] = []
        requests = []
        for q, a, b in self.exchange.recv:  # owners of this process's ghost columns
            chosen = ghost & (ghost_index >= a) & (ghost_index < b)
            triples = torch.stack([self.col[chosen].double(), rows[chosen].double(), values[chosen]], 1)
            outgoing.append(np.ascontiguousarray(triples.numpy()))
            requests.append(self.comm.isend(outgoing[-1], dest=q, tag=_TAG_SETUP))
            self.traffic.add(setup_bytes=outgoing[-1].nbytes)
        received = [self.comm.recv(source=r, tag=_TAG_SETUP) for r, _ in self.exchange.send]
        MPI.Request.Waitall(requests)
        incoming = torch.from_numpy(np.concatenate(received)) if received else torch.zeros(0, 3, dtype=torch.float64)
        mine = ~ghost  # transposes of entries in own columns stay here
        key = torch.cat(
            [
                rows * self.n + self.col,  # a_ij, as stored
                self.col[mine] * self.n + rows[mine],  # a_ji of own columns: −a_ij at (j, i)
                incoming[:, 0].long() * self.n + incoming[:, 1].long(),  # transposes sent by other processes
            ]
        )
        signed = torch.cat([values, -values[mine], -incoming[:, 2]])
        unique, inverse = torch.unique(key, return_inverse=True)
        difference = torch.zeros(unique.numel(), dtype=torch.float64).index_add(0, inverse, signed)
        local = np.array(
            [
                float(difference.abs().max()) if difference.numel() else 0.0,
                float(values.abs().max()) if values.numel() else 0.0,
            ]
        )
        largest = np.empty(2)
        self.comm.Allreduce(local, largest, op=MPI.MAX)
        self.traffic.add(reduced=2)
        return float(largest[0] / largest[1]) if largest[1] > 0 else 0.0

    def first_bad_diagonal(self, values: torch.Tensor) -> tuple[int, bool] | None:
        """The first global row whose diagonal entry is unstored or not positive, and whether it is stored.

        Collective; ``None`` on every process when every diagonal entry is
        stored and positive (what an SPD matrix needs).
        """
        import numpy as np
        from mpi4py import MPI

        on_diagonal = self.col == self.row + self.offset
        stored = torch.zeros(self.n_local, dtype=torch.bool)
        stored[self.row[on_diagonal]] = True
        bad = (~stored) | (self.diagonal(values.detach().reshape(-1)) <= 0)
        first = int(bad.nonzero()[0]) if bool(bad.any()) else None
        local = np.array([self.n if first is None else self.offset + first], dtype=np.int64)
        found = np.empty(1, dtype=np.int64)
        self.comm.Allreduce(local, found, op=MPI.MIN)
        if int(found[0]) == self.n:
            return None
        row = int(found[0])
        flag = np.array([1 if first is not None and self.offset + first == row and bool(stored[first]) else 0])
        is_stored = np.empty(1, dtype=flag.dtype)
        self.comm.Allreduce(flag, is_stored, op=MPI.MAX)
        return row, bool(is_stored[0])

    # --- communication -------------------------------------------------------------------------------------
    def _ghost_rows(self, X: torch.Tensor) -> torch.Tensor:
        """The rows of ``X`` (``(n_local, k)`` on every process) at this process's ghosts, from their owners."""
        import numpy as np
        from mpi4py import MPI

        k = X.shape[1]
        received = np.empty((self.ghosts.numel(), k), dtype=_numpy_dtype(X.dtype))
        requests = [self.comm.Irecv(received[a:b], source=q, tag=_TAG_GHOSTS) for q, a, b in self.exchange.recv]
        local = X.detach().numpy()
        outgoing = []
        for r, rows in self.exchange.send:
            block = np.ascontiguousarray(local[rows.numpy()])
            outgoing.append(block)
            requests.append(self.comm.Isend(block, dest=r, tag=_TAG_GHOSTS))
            self.traffic.add(bytes_sent=block.nbytes, messages=1)
        MPI.Request.Waitall(requests)
        return torch.from_numpy(received)

    def _return_contributions(self, extended: torch.Tensor) -> torch.Tensor:
        """Own rows of an extended ``(n_extended, k)`` block plus the contributions other processes made to them."""
        import numpy as np
        from mpi4py import MPI

        k = extended.shape[1]
        n_local, below = self.n_local, self.below
        own = extended[below : below + n_local].clone()
        ghost_part = torch.cat([extended[:below], extended[below + n_local :]]).numpy()
        incoming = [np.empty((rows.numel(), k), dtype=ghost_part.dtype) for _, rows in self.exchange.send]
        requests = [
            self.comm.Irecv(buffer, source=r, tag=_TAG_CONTRIBUTIONS)
            for buffer, (r, _) in zip(incoming, self.exchange.send, strict=True)
        ]
        for q, a, b in self.exchange.recv:
            block = np.ascontiguousarray(ghost_part[a:b])
            requests.append(self.comm.Isend(block, dest=q, tag=_TAG_CONTRIBUTIONS))
            self.traffic.add(bytes_sent=block.nbytes, messages=1)
        MPI.Request.Waitall(requests)
        for buffer, (_, rows) in zip(
            incoming, self.exchange.send, strict=True
        ):  # in rank order: the same sum on every run
            own.index_add_(0, rows, torch.from_numpy(buffer))
        return own

    def extend(self, X: torch.Tensor) -> torch.Tensor:
        """``X``'s own rows with its ghost rows around them: ``(n_extended, k)``, indexed by ``local_col``."""
        ghost_rows = self._ghost_rows(X).to(X.dtype)
        return torch.cat([ghost_rows[: self.below], X.detach(), ghost_rows[self.below :]])

    # --- the core's products -------------------------------------------------------------------------------
    def _first_order_only(self, *tensors: torch.Tensor) -> None:
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            raise SecondDerivativeError(
                "distributed solves give first derivatives only; their communication is not differentiable"
            )

    def _local_csr(self, values: torch.Tensor) -> torch.Tensor:
        crow, _ = self.csr_indices()
        return torch.sparse_csr_tensor(
            crow, self.local_col, values, (self.n_local, self.n_extended), check_invariants=False
        )

    @cached_property
    def _local_transposed(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(crow, col, order)`` of the local block's transpose ``(n_extended, n_local)`` in CSR order."""
        return transpose_csr(self.row, self.local_col, self.n_extended)

    def matmul(self, values: torch.Tensor, X: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
        """This process's rows of ``A @ X`` (or ``Aᵀ @ X``), exchanging only ghost rows (collective)."""
        self._first_order_only(values, X)
        values = values.detach()
        if not transpose:  # local rows of A times own rows and ghosts of X
            return self._local_csr(values) @ self.extend(X)
        crow, col, order = self._local_transposed
        transposed = torch.sparse_csr_tensor(
            crow, col, values[order], (self.n_extended, self.n_local), check_invariants=False
        )
        return self._return_contributions(transposed @ X.detach())

    def column_norms(self, X: torch.Tensor) -> torch.Tensor:
        """Global 2-norms of the columns of ``X`` ``(n_local, k)``: the same ``k`` numbers on every process.

        Two reductions of ``k`` numbers: the global largest magnitude ``m``
        (non-finite entries count as infinite), then the sum of
        ``(X / m)²``; the norm is ``m·√sum`` — no overflow or underflow for
        any finite ``X``, NaN for a column with a non-finite entry.
        """
        import numpy as np
        from mpi4py import MPI

        X = X.detach()
        magnitude = X.abs().amax(0) if X.shape[0] else X.new_zeros(X.shape[1])
        magnitude = torch.where(torch.isfinite(magnitude), magnitude, torch.inf)
        largest = np.empty(X.shape[1], dtype=np.float64)
        self.comm.Allreduce(magnitude.to(torch.float64).numpy(), largest, op=MPI.MAX)
        scale = torch.from_numpy(largest)
        safe = torch.where((scale > 0) & torch.isfinite(scale), scale, 1.0)
        squares = (X.to(torch.float64) / safe).square().sum(0)
        squares = torch.where(torch.isfinite(scale), squares, torch.nan)
        total = np.empty(X.shape[1], dtype=np.float64)
        self.comm.Allreduce(squares.numpy(), total, op=MPI.SUM)
        self.traffic.add(reduced=2 * X.shape[1])
        return (torch.from_numpy(total).sqrt() * torch.where(scale > 0, scale, 0.0)).to(X.dtype)

    def outer_at_entries(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """``⟨left_i, right_j⟩`` at this process's entries; ``right``'s ghost rows come from their owners."""
        self._first_order_only(left, right)
        right_extended = self.extend(right)
        if left.dtype in (torch.float32, torch.float64):
            pattern = self._local_csr(torch.zeros(self.col.numel(), dtype=left.dtype))
            sampled: torch.Tensor = torch.sparse.sampled_addmm(pattern, left.detach(), right_extended.T, beta=0.0)
            return sampled.values()
        return (left.index_select(0, self.row) * right_extended.index_select(0, self.local_col)).sum(-1)


def _numpy_dtype(dtype: torch.dtype) -> Any:
    return torch.empty(0, dtype=dtype).numpy().dtype


def _setup_send_lists(
    comm: Any,
    recv: list[tuple[int, int, int]],
    ghosts: torch.Tensor,
    asked: list[int],
    lo: int,
    traffic: Traffic,
) -> list[tuple[int, torch.Tensor]]:
    """Tell every owner which of its rows this process needs; learn which of ours the others need."""
    import numpy as np
    from mpi4py import MPI

    requesters = [r for r, c in enumerate(asked) if c > 0]
    buffers = {r: np.empty(asked[r], dtype=np.int64) for r in requesters}
    requests = [comm.Irecv(buffers[r], source=r, tag=_TAG_SETUP) for r in requesters]
    outgoing = []
    for q, a, b in recv:
        block = np.ascontiguousarray(ghosts[a:b].numpy())
        outgoing.append(block)
        requests.append(comm.Isend(block, dest=q, tag=_TAG_SETUP))
        traffic.add(setup_bytes=block.nbytes)
    MPI.Request.Waitall(requests)
    return [(r, torch.from_numpy(buffers[r] - lo)) for r in requesters]


@outside_graphs
@quietly
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
        :class:`~tsgu_core.plugins.protocol.DistributedBackend` are considered
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
    if detached.is_complex():
        raise ComplexNotSupportedError(
            f"solve_distributed solves real systems only (its collective norms and structure checks are real), "
            f"got {detached.dtype}; solve a complex A on one process with tsgu_core.solve"
        )
    if detached.device.type != "cpu":
        raise UnsupportedDeviceError("distributed solves take CPU tensors (each process's MPI buffers)")
    n_local, n = detached.shape
    total = sum(comm.allgather(n_local))
    if total != n:
        raise ShapeError(f"the processes' row blocks add up to {total} rows, but A has {n} columns")
    check_rhs(B_local, detached, "B_local")
    request = SolveRequest.of(backend, method, on_failure=on_failure, options=options)
    the_plan = plan(request, detached, capability="distributed")
    chosen = the_plan.backend
    assert isinstance(chosen, DistributedBackend)  # ensured by the selection's capability
    spec, solve_options = the_plan.spec, the_plan.options
    pattern = DistributedPattern.of(detached, comm)  # collective: the ghost exchange, once per pattern

    def prepare() -> Any:
        return the_plan.prepare(
            detached, pattern=pattern, prepare=lambda A: chosen.prepare_distributed(A, spec.name, solve_options, comm)
        )

    Bk, restore = as_columns(B_local, 2)
    empty = n == 0 or Bk.shape[-1] == 0  # global: a process without rows still joins the collective solve
    X, info = execute(the_plan, prepare, values, Bk, x0=request.x0, empty=empty)
    return (restore(X), info) if return_info else restore(X)
