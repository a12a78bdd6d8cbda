"""The ``petsc`` backend: a KSP (Krylov method + preconditioner) per prepared ``A``.

* ``prepare`` assembles a PETSc AIJ matrix from the CSR arrays of ``A`` (or, in
  :func:`tsgu_core.solve_distributed`, of this process's rows), preallocated
  exactly (``d_nnz``/``o_nnz`` counted from the CSR), creates the KSP and sets
  it up once — the preconditioner (``gamg``, hypre's BoomerAMG, …; for ``lu``
  the factorization, by MUMPS when distributed) is built here.
* ``solve(transpose=True)`` calls ``KSPSolveTranspose`` on the same KSP and
  preconditioner: no new set-up, no new factorization. ``prepare`` checks by
  a dot test that PETSc really applies the preconditioner's transpose; where
  it does not (BoomerAMG, SOR), an exactly symmetric ``A`` is solved with
  ``KSPSolve`` instead, and any other ``A`` has its transpose solve refused
  with :class:`~tsgu_core.errors.InvalidOptionError` naming alternatives.
* PETSc's converged reason and iteration count feed ``BackendReport``; the
  core checks the true residual regardless.
* Complex ``A``: only with a PETSc built with complex scalars
  (``--with-scalar-type=complex``; Debian's ``python3-petsc4py-complex``).
  Whether the installed petsc4py is one is read from its build files without
  importing it (:func:`scalar_type`); only then do the methods declare
  ``complex=True``. ``KSPSolveTranspose`` solves with the plain (non-Hermitian)
  transpose, as the contract asks. Debian's ``python3-petsc4py-real`` has real
  scalars: a complex ``A`` is refused with
  :class:`~tsgu_core.errors.ComplexNotSupportedError`.
* ``petsc_options`` passes any PETSc option (``{"ksp_gmres_restart": 50}``)
  under a private prefix; an option PETSc never reads is reported as an error,
  not dropped.

Install: PyPI has only source distributions of PETSc and petsc4py (``pip install
'tsgu[petsc]'`` builds PETSc: 15–25 min on 2 cores). ``scripts/setup-petsc-env.sh``
makes a separate environment from Debian's petsc4py 3.18 (Open MPI, MUMPS,
hypre) in under a minute; Debian's petsc4py needs NumPy 1.x, so that
environment has no JAX.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tsgu_core import (
    Availability,
    BackendContractError,
    BackendReport,
    ComplexNotSupportedError,
    InvalidOptionError,
    MethodSpec,
    Option,
    SingularMatrixError,
    SolveOptions,
    SparsePattern,
)
from tsgu_core.plugins.kit import Restarts, combine_histories, nudge, power_of_two, row_indices

__all__ = ["PetscBackend"]

INSTALL = "scripts/setup-petsc-env.sh (Debian's petsc4py in its own environment), or pip install 'tsgu[petsc]'"
_PCS = ("none", "jacobi", "bjacobi", "ilu", "gamg", "hypre", "lu")
_OPTIONS = {
    "pc": Option(
        "preconditioner (default: PETSc's own for gmres/bcgs, jacobi for cg, none for minres); gamg: PETSc's "
        "smoothed-aggregation AMG, hypre: BoomerAMG; the backward pass checks that its transpose is applied",
        type=str,
        choices=_PCS,
    ),
    "petsc_options": Option(
        "further PETSc options, e.g. {'ksp_gmres_restart': 50, 'pc_gamg_threshold': 0.02}; one PETSc never "
        "reads is an error",
        type=dict,
    ),
}
_KSP = {"gmres": "gmres", "bcgs": "bcgs", "cg": "cg", "minres": "minres", "lu": "preonly"}

METHODS: dict[str, MethodSpec] = {
    "gmres": MethodSpec("gmres", "iterative", "general", dict(_OPTIONS), "KSPGMRES (restart 30 unless set)"),
    "bcgs": MethodSpec("bcgs", "iterative", "general", dict(_OPTIONS), "KSPBCGS (BiCGSTAB)"),
    "cg": MethodSpec("cg", "iterative", "spd", dict(_OPTIONS), "KSPCG (A SPD; use an SPD preconditioner)"),
    "minres": MethodSpec("minres", "iterative", "symmetric", dict(_OPTIONS), "KSPMINRES (A symmetric)"),
    "lu": MethodSpec(
        "lu",
        "direct",
        "general",
        {"petsc_options": _OPTIONS["petsc_options"]},
        "KSPPREONLY + PCLU (MUMPS when distributed); the factors serve the transpose solve",
    ),
}


@functools.cache
def scalar_type() -> str:
    """``"complex"``, ``"real"`` or ``"unknown"``: PETSc's scalar type, read from petsc4py's build files.

    Never imports petsc4py (that starts MPI): reads ``petsc4py/lib/petsc.cfg``
    for ``PETSC_DIR``/``PETSC_ARCH``, then ``petscconf.h``
    (``PETSC_USE_COMPLEX``) or ``petscvariables`` (``PETSC_SCALAR``) where
    installed, else the Debian directory names ``…-complex`` / ``…-real``.
    """
    spec = importlib.util.find_spec("petsc4py")
    if spec is None or not spec.submodule_search_locations:
        return "unknown"
    for location in spec.submodule_search_locations:
        config = Path(location) / "lib" / "petsc.cfg"
        if not config.is_file():
            continue
        found = dict(re.findall(r"^\s*(PETSC_\w+)\s*=\s*(.*?)\s*$", config.read_text(), re.MULTILINE))
        root = Path(found.get("PETSC_DIR", "")) / found.get("PETSC_ARCH", "")
        for header in (root / "include" / "petscconf.h", Path(found.get("PETSC_DIR", "")) / "include" / "petscconf.h"):
            if header.is_file():
                return "complex" if re.search(r"PETSC_USE_COMPLEX\s+1", header.read_text()) else "real"
        variables = root / "lib" / "petsc" / "conf" / "petscvariables"
        if variables.is_file():
            return "complex" if re.search(r"PETSC_SCALAR\s*=\s*complex", variables.read_text()) else "real"
        for part in (str(root), str(location)):
            if "-complex" in part:
                return "complex"
            if "-real" in part:
                return "real"
    return "unknown"


_prefixes = itertools.count()
_REFINEMENTS = 3


_ADJOINT_TOLERANCE = 1e-6  # a transposed preconditioner that misses the dot test by more is not the transpose


@dataclass
class _State:
    """A set-up KSP and how its transpose solve is done.

    ``transpose`` is ``"transpose"`` (``KSPSolveTranspose``: the preconditioner's
    transpose passed the dot test), ``"symmetric"`` (``A = Aᵀ`` exactly, so
    ``KSPSolve`` with the same preconditioner is the transpose solve) or
    ``"refused"`` (``refusal`` says why; a transpose solve raises).
    """

    ksp: Any
    matrix: Any
    method: str
    options: SolveOptions
    transpose: str = "transpose"
    refusal: str = ""


def _singular(reason: int) -> bool:
    from petsc4py import PETSc

    return bool(reason == PETSc.KSP.ConvergedReason.DIVERGED_PCSETUP_FAILED)


class PetscBackend:
    """PETSc KSP solvers (see the module docstring)."""

    name = "petsc"
    device_types = ("cpu",)
    default_method = "gmres"
    priority = 5  # never a device default; ask for it by name

    @functools.cached_property
    def methods(self) -> dict[str, MethodSpec]:
        """:data:`METHODS`, declared ``complex`` when PETSc has complex scalars (:func:`scalar_type`)."""
        if scalar_type() != "complex":
            return METHODS
        return {name: dataclasses.replace(spec, complex=True) for name, spec in METHODS.items()}

    @property
    def complex_note(self) -> str:
        """What ``tsgu info`` and a refusal say about complex ``A``."""
        found = {"complex": "complex scalars", "real": "real scalars", "unknown": "scalar type unknown"}[scalar_type()]
        return (
            "complex A needs a PETSc built with complex scalars (Debian: python3-petsc4py-complex; from source: "
            f"--with-scalar-type=complex); the petsc4py found here: {found}"
        )

    def is_available(self, device_type: str) -> Availability:
        if device_type != "cpu":
            return Availability.no(f"serves only the CPU, not {device_type!r}")
        for module in ("petsc4py", "mpi4py"):
            if importlib.util.find_spec(module) is None:
                return Availability.no(f"{module} is not importable here", install=INSTALL)
        return Availability.yes()

    def prepare(self, A: torch.Tensor, method: str, options: SolveOptions) -> _State:
        from mpi4py import MPI

        if A.is_complex():
            import numpy as np
            from petsc4py import PETSc

            if np.dtype(PETSc.ScalarType).kind != "c":
                raise ComplexNotSupportedError(f"backend 'petsc': {self.complex_note} (PETSc.ScalarType is real)")

        return self.prepare_distributed(A, method, options, MPI.COMM_SELF)

    def prepare_distributed(self, A_local: torch.Tensor, method: str, options: SolveOptions, comm: Any) -> _State:
        """Assemble this process's rows of ``A`` over ``comm`` and set the KSP up once."""
        from petsc4py import PETSc

        pc_type = options["pc"] if method != "lu" else None  # lu declares no pc
        petsc_options = options["petsc_options"] or {}
        matrix = _assemble(A_local, comm)
        prefix = f"tsgu{next(_prefixes)}_"
        database = PETSc.Options()
        for key, value in petsc_options.items():
            database[prefix + key.lstrip("-")] = value
        defaults = []  # our own defaults, set only where the user did not: not reported as unused
        if pc_type == "gamg" and "pc_gamg_sym_graph" not in {key.lstrip("-") for key in petsc_options}:
            defaults.append(prefix + "pc_gamg_sym_graph")  # aggregation needs a symmetric graph (nonsymmetric A)
            database[defaults[-1]] = True
        ksp = PETSc.KSP().create(comm=comm)
        ksp.setOptionsPrefix(prefix)
        ksp.setOperators(matrix)
        ksp.setType(_KSP[method])
        pc = ksp.getPC()
        if method == "lu":
            pc.setType("lu")
            if comm.Get_size() > 1:
                pc.setFactorSolverType("mumps")
        else:  # CG and MINRES need an SPD preconditioner; PETSc's default (ILU) is not symmetric
            try:
                pc.setType(pc_type or {"cg": "jacobi", "minres": "none"}.get(method, pc.getType()))
                if pc_type == "hypre":
                    pc.setHYPREType("boomeramg")
            except PETSc.Error as error:  # e.g. a PETSc built without hypre
                first = str(error).splitlines()[0]
                raise InvalidOptionError(f"this PETSc cannot make pc={pc_type!r} ({first})", option="pc") from error
        if self.methods[method].kind == "iterative":
            ksp.setTolerances(rtol=options.rtol, atol=options.atol, max_it=options.maxiter)
            if method in ("gmres", "bcgs", "cg"):  # stop on the true residual's norm where PETSc can
                ksp.setNormType(PETSc.KSP.NormType.UNPRECONDITIONED)
        ksp.setFromOptions()
        try:
            ksp.setUp()
        except PETSc.Error as error:
            raise SingularMatrixError(f"PETSc could not set up {method!r} (a singular A?): {error}") from error
        unused = [key for key in petsc_options if not _used(database, prefix + key.lstrip("-"))]
        for key in petsc_options:
            database.delValue(prefix + key.lstrip("-"))
        for name in defaults:
            database.delValue(name)
        if unused:
            raise InvalidOptionError(
                f"PETSc did not use option(s) {unused} for method {method!r}; check their names",
                option="petsc_options",
            )
        mode, refusal = _transpose_support(ksp, matrix, pc.getType())
        return _State(ksp, matrix, method, options, mode, refusal)

    def solve(
        self, state: _State, B: torch.Tensor, *, transpose: bool, x0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, BackendReport]:
        """Each column: ``KSPSolve`` (or ``KSPSolveTranspose``), then refinement passes from the iterate.

        PETSc stops on its own residual norm (preconditioned for CG and MINRES),
        and BiCGSTAB breaks down on right-hand sides with few non-zeros (a
        one-hot gradient): after a solve the true residual is measured, and
        while it misses the tolerance the solve is repeated from the current
        iterate — after a breakdown nudged by a tiny seeded random vector — up
        to three times. The core's residual check decides as always.

        Scaling: each column is solved as ``A y = b/s`` with ``s`` its largest
        magnitude (a power of two, exact), ``x = s·y``. Where ``A``'s largest
        row sum ``σ`` lies outside ``[2⁻²⁵⁶, 2²⁵⁶]`` — where PETSc's unscaled
        dot products and Givens rotations would underflow or overflow — the
        matrix is also scaled by ``1/σ`` for the solve and scaled back after
        (exact; PETSc sets the preconditioner up again for the scaled matrix,
        a cost paid only by such extreme problems).
        """
        from petsc4py import PETSc

        ksp, matrix = state.ksp, state.matrix
        options = state.options
        iterative = self.methods[state.method].kind == "iterative"
        sigma = power_of_two(matrix.norm(PETSc.NormType.INFINITY))
        rescale = not 2.0**-256 <= sigma <= 2.0**256
        if not rescale:
            sigma = 1.0
        if rescale:  # PCReset: the preconditioner is set up again, for the matrix as it now is
            matrix.scale(1.0 / sigma)
            ksp.getPC().reset()
            ksp.setOperators(matrix)
        try:
            return self._solve_columns(state, B, transpose, x0, sigma, iterative)
        finally:
            if rescale:
                matrix.scale(sigma)
                ksp.getPC().reset()
                ksp.setOperators(matrix)
            if iterative:  # the columns set atol/s
                ksp.setTolerances(atol=options.atol)

    def _solve_columns(
        self, state: _State, B: torch.Tensor, transpose: bool, x0: torch.Tensor | None, sigma: float, iterative: bool
    ) -> tuple[torch.Tensor, BackendReport]:
        """The loop of :meth:`solve` over the columns, for ``A/σ`` (``σ = 1``: unscaled)."""
        from petsc4py import PETSc

        ksp, matrix = state.ksp, state.matrix
        if transpose and state.transpose == "refused":
            raise InvalidOptionError(state.refusal, option="pc")
        b, x = matrix.createVecs()
        residual = b.duplicate()
        transposed = transpose and state.transpose == "transpose"  # "symmetric": A = Aᵀ, KSPSolve is the same
        multiply = matrix.multTranspose if transposed else matrix.mult
        run = ksp.solveTranspose if transposed else ksp.solve
        options = state.options
        X = torch.empty_like(B)
        iterations, converged, reasons = 0, True, set()
        histories: list[list[float]] = []
        norm, target, reason = 0.0, 0.0, 1
        for j in range(B.shape[1]):
            b.array[:] = B[:, j].numpy()
            largest = b.norm(PETSc.NormType.INFINITY)  # the column's largest magnitude, over all ranks
            if largest == 0.0:  # a zero column: its solution is exactly zero
                X[:, j] = 0.0
                continue
            scale = power_of_two(largest)
            b.scale(1.0 / scale)
            x.array[:] = 0.0 if x0 is None else x0[:, j].numpy() * (sigma / scale)
            target = float("inf")
            if iterative:
                ksp.setTolerances(atol=options.atol / scale)
                target = max(options.rtol * b.norm(), options.atol / scale)
            good = x.copy()  # the iterate with the smallest true residual so far

            def true_residual() -> float:
                multiply(x, residual)
                residual.aypx(-1.0, b)  # b − op(A) x
                return float(residual.norm())

            norm = best = true_residual()
            # a direct method runs once; an iterative one has up to _REFINEMENTS more attempts from its iterate
            rules = Restarts(
                options.maxiter if iterative else 1,
                max_restarts=_REFINEMENTS if iterative else 0,
                max_attempts=_REFINEMENTS + 1 if iterative else 1,
                reference=[b.norm()],
            )
            if iterative:
                histories.append(rules.history)
            while (verdict := rules.review([norm], [iterative and norm <= target])) != "stop":
                if verdict == "done":
                    break
                if verdict == "restart":
                    # breakdown or divergence (BiCGSTAB's DIVERGED_DTOL on some right-hand sides): restart from
                    # the best iterate, nudged by a tiny seeded random vector so the shadow residual changes
                    step = x.duplicate()
                    seed = 1000 * j + 10 * rules.attempts + matrix.getComm().getRank()  # reproducible, per rank
                    a_norm = matrix.norm(PETSc.NormType.FROBENIUS)
                    step.array[:] = nudge(step.getLocalSize(), seed, b.norm(), a_norm)
                    x.waxpy(1.0, step, good)
                    norm = true_residual()
                    continue
                ksp.setInitialGuessNonzero(rules.attempts > 0 or x0 is not None or rules.restarts > 0)
                run(b, x)
                reason = ksp.getConvergedReason()
                if state.method == "lu" and _singular(reason):
                    raise SingularMatrixError("A is singular: PETSc's LU factorization failed (zero pivot)")
                rules.charge(ksp.getIterationNumber() if iterative else 1)
                reasons.add(_reason_name(reason))
                norm = true_residual()
                if math.isfinite(norm) and norm < best:
                    best = norm
                    x.copy(good)  # petsc4py: x.copy(good) writes x into good
            if iterative and not norm <= target and math.isfinite(best) and best < norm:
                good.copy(x)  # hand back the best iterate, not the last (the core's check judges it)
                norm = best
            used = rules.used if iterative else 0
            iterations = max(iterations, used)
            converged = converged and (norm <= target if iterative else reason > 0)
            X[:, j] = torch.from_numpy(x.array * (scale / sigma)).to(B.dtype)
        ksp.setInitialGuessNonzero(False)
        report = BackendReport(
            iterations=iterations if iterative else None,
            converged=converged,
            message=f"PETSc converged reason(s): {', '.join(sorted(reasons))}",
            history=combine_histories(histories) if iterative else None,
        )
        return X, report


def _assemble(A_local: torch.Tensor, comm: Any) -> Any:
    """This process's rows as a PETSc AIJ matrix, preallocated exactly from the local CSR.

    ``d_nnz``/``o_nnz`` — the stored entries of each row inside and outside
    this process's diagonal block — are counted from the CSR arrays, so
    assembly never reallocates; ``NEW_NONZERO_ALLOCATION_ERR`` turns any
    reallocation into an error rather than a slowdown.
    """
    import numpy as np
    from petsc4py import PETSc

    crow_t, col_t = SparsePattern.of(A_local).csr_indices()  # a coalesced COO's values are in CSR order too
    values = A_local.values() if A_local.layout == torch.sparse_csr else A_local._values()
    n_local, n = A_local.shape
    integer = PETSc.IntType
    crow = crow_t.numpy().astype(integer)
    col = col_t.numpy().astype(integer)
    lo = comm.exscan(n_local) or 0  # this process's first row (exscan gives None on rank 0)
    rows = row_indices(crow)
    inside = (col >= lo) & (col < lo + n_local)
    d_nnz = np.bincount(rows[inside], minlength=n_local).astype(integer)
    o_nnz = np.bincount(rows[~inside], minlength=n_local).astype(integer)
    matrix = PETSc.Mat().createAIJ(size=((n_local, n), (n_local, n)), nnz=(d_nnz, o_nnz), comm=comm)
    matrix.setOption(PETSc.Mat.Option.NEW_NONZERO_ALLOCATION_ERR, True)
    matrix.setValuesCSR(crow, col, values.numpy().astype(PETSc.ScalarType))
    matrix.assemble()
    return matrix


def _transpose_support(ksp: Any, matrix: Any, pc_type: str) -> tuple[str, str]:
    """How the transpose solve can be done with this KSP: ``(mode, refusal)`` as in :class:`_State`.

    The dot test: for random ``u`` and ``v``, ``⟨v, M u⟩ = ⟨Mᵀ v, u⟩`` to
    1e-6 relative, with ``M`` the preconditioner and ``Mᵀ`` what PETSc's
    ``PCApplyTranspose`` applies. If that fails (or PETSc has no transpose for
    this preconditioner), the transpose solve is allowed only for an exactly
    symmetric ``A`` (then ``KSPSolve`` is the transpose solve); otherwise it is
    refused, with alternatives. Cost: three preconditioner applications and,
    only when the test fails, one parallel transpose of ``A``.
    """
    import numpy as np
    from petsc4py import PETSc

    if pc_type in ("none", "jacobi"):  # the identity and a diagonal are their own transposes
        return "transpose", ""
    pc = ksp.getPC()
    u, v = matrix.createVecs()
    rank = matrix.getComm().getRank()
    u.array[:] = np.random.default_rng(1 + 2 * rank).standard_normal(u.getLocalSize())
    v.array[:] = np.random.default_rng(2 + 2 * rank).standard_normal(v.getLocalSize())
    forward, backward = u.duplicate(), v.duplicate()
    pc.apply(u, forward)
    why = ""
    try:
        pc.applyTranspose(v, backward)
    except PETSc.Error as error:
        why = f"PETSc cannot apply it transposed ({str(error).splitlines()[0]})"
    else:
        scale = v.norm() * forward.norm() + backward.norm() * u.norm()
        # tDot: the unconjugated product, so a complex build tests the plain transpose KSPSolveTranspose applies
        mismatch = abs(v.tDot(forward) - backward.tDot(u)) / scale if scale > 0 else 0.0
        if not mismatch <= _ADJOINT_TOLERANCE:
            why = f"what PETSc applies as its transpose is not its transpose (dot test off by {mismatch:.1e})"
    if not why:
        return "transpose", ""
    transposed = PETSc.Mat()
    matrix.transpose(transposed)  # a new matrix (petsc4py transposes in place without one)
    transposed.axpy(-1.0, matrix)
    asymmetry = transposed.norm(PETSc.NormType.INFINITY)
    transposed.destroy()
    if asymmetry == 0.0:
        return "symmetric", ""
    alternatives = "pc='gamg' (PETSc applies its V-cycle transposed exactly), pc='bjacobi' or 'ilu', or method='lu'"
    return "refused", (
        f"the backward pass needs a transpose solve with preconditioner {pc_type!r}, but {why}, and A is not "
        f"symmetric, so the forward preconditioner cannot stand in for it. Use {alternatives}"
    )


def _used(database: Any, name: str) -> bool:
    """Whether PETSc read option ``name``: petsc4py's ``Options.used`` where it exists (newer
    petsc4py), else PETSc's own ``PetscOptionsUsed`` through ctypes (petsc4py 3.18 lacks it)."""
    if hasattr(database, "used"):
        return bool(database.used(name))
    import ctypes

    with open("/proc/self/maps") as maps:  # the libpetsc petsc4py loaded
        paths = sorted({line.split()[-1] for line in maps if "libpetsc" in line and ".so" in line})
    if not paths:
        raise BackendContractError("cannot tell whether PETSc used an option: no libpetsc found in this process")
    function = ctypes.CDLL(paths[0]).PetscOptionsUsed
    function.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    flag = ctypes.c_int(0)
    if function(None, name.encode(), ctypes.byref(flag)) != 0:
        raise BackendContractError(f"PetscOptionsUsed failed for {name!r}")
    return bool(flag.value)


def _reason_name(reason: int) -> str:
    from petsc4py import PETSc

    names = {value: name for name, value in vars(PETSc.KSP.ConvergedReason).items() if isinstance(value, int)}
    return str(names.get(reason, reason))
