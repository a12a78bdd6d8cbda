"""The methods of the ``scipy`` and ``cupy`` backends: what each assumes and accepts.

Option names are the libraries' own (``restart``, ``inner_m``, ``M``, ...).
The common iterative options ``rtol``, ``atol``, ``maxiter`` and ``x0`` keep
SciPy's meaning, except that ``maxiter`` counts iterations for every method
as in the other backends — for ``gmres`` and ``lgmres`` an inner (Arnoldi)
step, where SciPy counts restart cycles or outer iterations.
"""

from __future__ import annotations

from tsgu_core import MethodSpec, Option

__all__ = [
    "CUPY_METHODS",
    "LDLT_OPTIONS",
    "LIBRARY_KEYWORDS",
    "SCIPY_METHODS",
    "SUPERLU_OPTIONS",
    "library_keywords",
    "superlu_keywords",
]

SUPERLU_OPTIONS = {
    "permc_spec": Option("column ordering", type=str, choices=("COLAMD", "NATURAL", "MMD_ATA", "MMD_AT_PLUS_A")),
    "diag_pivot_thresh": Option("threshold for a diagonal pivot (SuperLU; default 1)", type=float, minimum=0.0),
    "relax": Option("supernode relaxation (SuperLU expert option)", type=int, minimum=1),
    "panel_size": Option("panel size (SuperLU expert option)", type=int, minimum=1),
    "options": Option("further SuperLU options, e.g. {'Equil': False}", type=dict),
}
"""SuperLU's own options, passed to ``splu`` when set."""

LDLT_OPTIONS = {
    "permc_spec": Option(
        "symmetric fill-reducing ordering", type=str, default="MMD_AT_PLUS_A", choices=("MMD_AT_PLUS_A", "NATURAL")
    ),
    "relax": SUPERLU_OPTIONS["relax"],
    "panel_size": SUPERLU_OPTIONS["panel_size"],
}
"""The ``ldlt`` method's options: SuperLU's symmetric orderings and expert options (its pivoting is fixed)."""

LIBRARY_KEYWORDS = ("restart", "inner_m", "outer_k", "shift", "M1", "M2")
"""Declared options that go to the library's solver as keywords of the same name."""

_M = {
    "M": Option(
        "preconditioner: a LinearOperator or matrix approximating A⁻¹ (its transpose serves the transpose solve)"
    )
}
_NAMED = {
    "preconditioner": Option(
        "built once by name: 'jacobi', 'ilu' (spilu), 'amg' (pyamg smoothed aggregation); exclusive with M",
        type=str,
        choices=("jacobi", "ilu", "amg"),
    ),
    "ilu_drop_tol": Option("spilu drop tolerance (with preconditioner='ilu'; SciPy's default 1e-4)", type=float),
    "ilu_fill_factor": Option("spilu fill factor (with preconditioner='ilu'; SciPy's default 10)", type=float),
}
_RESTART = {"restart": Option("Krylov dimension per cycle", type=int, default=20, minimum=1)}
_CONLIM = {"conlim": Option("stop if the condition estimate exceeds this", type=float, default=1e8, minimum=1.0)}


def _iterative(name: str, assumes: str, summary: str, **options: Option) -> MethodSpec:
    return MethodSpec(
        name,
        "iterative",
        assumes,  # type: ignore[arg-type]
        {**options, **_M, **_NAMED},
        summary,
        complex=True,
    )


SCIPY_METHODS: dict[str, MethodSpec] = {
    "splu": MethodSpec(
        "splu",
        "direct",
        "general",
        SUPERLU_OPTIONS,
        "SuperLU factorization, reused for the transpose solve (trans='T')",
        batched=True,
        complex=True,
        selected_inversion=True,
    ),
    "spsolve": MethodSpec(
        "spsolve",
        "direct",
        "general",
        {"permc_spec": SUPERLU_OPTIONS["permc_spec"]},
        "spsolve's SuperLU path, factorized once so that the backward reuses it (spsolve itself cannot)",
        batched=True,
        complex=True,
    ),
    "ldlt": MethodSpec(
        "ldlt",
        "direct",
        "spd",
        LDLT_OPTIONS,
        "A = Pᵀ L D Lᵀ P for a symmetric positive definite A (SuperLU, symmetric ordering, no pivoting); "
        "refuses an A that is not positive definite; log-determinants, selected inverses, Gaussian sampling",
        selected_inversion=True,
        sampling=True,
    ),
    "cg": _iterative("cg", "spd", "conjugate gradients (A symmetric positive definite)"),
    "cgs": _iterative("cgs", "general", "conjugate gradients squared (erratic; may stall near 1e-11 in float64)"),
    "bicgstab": _iterative("bicgstab", "general", "BiCGSTAB"),
    "gmres": _iterative("gmres", "general", "restarted GMRES", **_RESTART),
    "lgmres": _iterative(
        "lgmres",
        "general",
        "LGMRES",
        inner_m=Option("inner GMRES iterations per outer one", type=int, default=30, minimum=1),
        outer_k=Option("vectors carried between outer iterations", type=int, default=3, minimum=0),
    ),
    "minres": MethodSpec(
        "minres",
        "iterative",
        "symmetric",
        {"shift": Option("solve (A − shift·I)x = b", type=float, default=0.0), **_M, **_NAMED},
        "MINRES (A symmetric, may be indefinite; real only: SciPy's MINRES takes unconjugated inner products)",
    ),
    "qmr": MethodSpec(
        "qmr",
        "iterative",
        "general",
        {"M1": Option("left preconditioner (LinearOperator)"), "M2": Option("right preconditioner (LinearOperator)")},
        "quasi-minimal residual (uses products with Aᵀ)",
        complex=True,
    ),
    "tfqmr": _iterative("tfqmr", "general", "transpose-free QMR"),
    "spsolve_triangular": MethodSpec(
        "spsolve_triangular",
        "direct",
        "general",
        {},
        "scipy.sparse.linalg.spsolve_triangular",
        operation="triangular",
        complex=True,
    ),
    "lsmr": MethodSpec(
        "lsmr",
        "iterative",
        "general",
        _CONLIM,
        "LSMR on A and Aᵀ (Aᴴ when complex), with refinement on the augmented system",
        operation="lstsq",
        complex=True,
    ),
    "lsqr": MethodSpec(
        "lsqr",
        "iterative",
        "general",
        _CONLIM,
        "LSQR on A and Aᵀ (Aᴴ when complex), with refinement on the augmented system",
        operation="lstsq",
        complex=True,
    ),
    "augmented_splu": MethodSpec(
        "augmented_splu",
        "direct",
        "general",
        SUPERLU_OPTIONS,
        "SuperLU on the augmented system [[I, A], [Aᴴ, 0]]: direct least squares for moderate sizes",
        operation="lstsq",
        complex=True,
    ),
}

CUPY_METHODS: dict[str, MethodSpec] = {
    "splu": MethodSpec(
        "splu",
        "direct",
        "general",
        SUPERLU_OPTIONS,
        "SuperLU factorization on the CPU (as cupyx does), triangular solves on the GPU; reused for trans='T'",
        complex=True,
    ),
    "spsolve": MethodSpec(
        "spsolve",
        "direct",
        "general",
        {"permc_spec": SUPERLU_OPTIONS["permc_spec"]},
        "as splu (factorized once so that the backward reuses it)",
        complex=True,
    ),
    "cg": MethodSpec("cg", "iterative", "spd", dict(_M), "conjugate gradients (cupyx)", complex=True),
    "cgs": MethodSpec("cgs", "iterative", "general", dict(_M), "conjugate gradients squared (cupyx)", complex=True),
    "gmres": MethodSpec("gmres", "iterative", "general", {**_RESTART, **_M}, "GMRES (cupyx)", complex=True),
    "minres": MethodSpec(
        "minres",
        "iterative",
        "symmetric",
        {"shift": Option("solve (A − shift·I)x = b", type=float, default=0.0), **_M},
        "MINRES (cupyx; real only, as SciPy's)",
    ),
    "spsolve_triangular": MethodSpec(
        "spsolve_triangular",
        "direct",
        "general",
        {},
        "cupyx spsolve_triangular (cuSPARSE)",
        operation="triangular",
        complex=True,
    ),
}


def superlu_keywords(options: dict[str, object]) -> dict[str, object]:
    """The SuperLU options that were set, as ``splu`` keywords."""
    return {name: value for name, value in options.items() if name in SUPERLU_OPTIONS and value is not None}


def library_keywords(options: dict[str, object]) -> dict[str, object]:
    """The declared options that go to the library's Krylov solver under their own names."""
    return {name: value for name, value in options.items() if name in LIBRARY_KEYWORDS and value is not None}
