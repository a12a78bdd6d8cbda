"""The methods of the ``scipy`` and ``cupy`` backends: what each assumes and accepts.

Option names are the libraries' own (``restart``, ``inner_m``, ``M``, ...).
The common iterative options ``rtol``, ``atol``, ``maxiter`` and ``x0`` keep
SciPy's meaning, except that ``maxiter`` counts iterations for every method
as in the other backends — for ``gmres`` and ``lgmres`` an inner (Arnoldi)
step, where SciPy counts restart cycles or outer iterations.
"""

from __future__ import annotations

from tsgu_core import MethodSpec

__all__ = ["CUPY_METHODS", "SCIPY_METHODS"]

_SUPERLU = {
    "permc_spec": "column ordering: 'COLAMD' (default), 'NATURAL', 'MMD_ATA' or 'MMD_AT_PLUS_A'",
    "diag_pivot_thresh": "threshold for a diagonal pivot (SuperLU)",
    "relax": "supernode relaxation (SuperLU expert option)",
    "panel_size": "panel size (SuperLU expert option)",
    "options": "dict of further SuperLU options, e.g. {'Equil': False}",
}
_M = {"M": "preconditioner: a LinearOperator or matrix approximating A⁻¹ (its adjoint serves the transpose solve)"}
_NAMED = {
    "preconditioner": "by name, built once: 'jacobi', 'ilu' (spilu), 'amg' (pyamg smoothed aggregation); "
    "exclusive with M",
    "ilu_drop_tol": "spilu drop tolerance (with preconditioner='ilu'; default 1e-4)",
    "ilu_fill_factor": "spilu fill factor (with preconditioner='ilu'; default 10)",
}


def _iterative(name: str, assumes: str, summary: str, **options: str) -> MethodSpec:
    return MethodSpec(name, "iterative", assumes, {**options, **_M, **_NAMED}, summary)  # type: ignore[arg-type]


SCIPY_METHODS: dict[str, MethodSpec] = {
    "splu": MethodSpec(
        "splu",
        "direct",
        "general",
        _SUPERLU,
        "SuperLU factorisation, reused for the transpose solve (trans='T')",
        batched=True,
    ),
    "spsolve": MethodSpec(
        "spsolve",
        "direct",
        "general",
        {"permc_spec": _SUPERLU["permc_spec"]},
        "spsolve's SuperLU path, factorised once so that the backward reuses it (spsolve itself cannot)",
        batched=True,
    ),
    "cg": _iterative("cg", "spd", "conjugate gradients (A symmetric positive definite)"),
    "cgs": _iterative("cgs", "general", "conjugate gradients squared (erratic; may stall near 1e-11 in float64)"),
    "bicgstab": _iterative("bicgstab", "general", "BiCGSTAB"),
    "gmres": _iterative("gmres", "general", "restarted GMRES", restart="Krylov dimension per cycle (default 20)"),
    "lgmres": _iterative(
        "lgmres",
        "general",
        "LGMRES",
        inner_m="inner GMRES iterations per outer one (default 30)",
        outer_k="vectors carried between outer iterations (default 3)",
    ),
    "minres": _iterative(
        "minres", "symmetric", "MINRES (A symmetric, may be indefinite)", shift="solve (A − shift·I)x = b"
    ),
    "qmr": MethodSpec(
        "qmr",
        "iterative",
        "general",
        {"M1": "left preconditioner (LinearOperator)", "M2": "right preconditioner (LinearOperator)"},
        "quasi-minimal residual (uses products with Aᵀ)",
    ),
    "tfqmr": _iterative("tfqmr", "general", "transpose-free QMR"),
    "spsolve_triangular": MethodSpec(
        "spsolve_triangular", "direct", "general", {}, "scipy.sparse.linalg.spsolve_triangular", operation="triangular"
    ),
    "lsmr": MethodSpec(
        "lsmr",
        "iterative",
        "general",
        {"conlim": "stop if the condition estimate exceeds this (default 1e8)"},
        "LSMR on A and Aᵀ, with refinement on the augmented system",
        operation="lstsq",
    ),
    "lsqr": MethodSpec(
        "lsqr",
        "iterative",
        "general",
        {"conlim": "stop if the condition estimate exceeds this (default 1e8)"},
        "LSQR on A and Aᵀ, with refinement on the augmented system",
        operation="lstsq",
    ),
    "augmented_splu": MethodSpec(
        "augmented_splu",
        "direct",
        "general",
        _SUPERLU,
        "SuperLU on the augmented system [[I, A], [Aᵀ, 0]]: direct least squares for moderate sizes",
        operation="lstsq",
    ),
}

CUPY_METHODS: dict[str, MethodSpec] = {
    "splu": MethodSpec(
        "splu",
        "direct",
        "general",
        _SUPERLU,
        "SuperLU factorisation on the CPU (as cupyx does), triangular solves on the GPU; reused for trans='T'",
    ),
    "spsolve": MethodSpec(
        "spsolve",
        "direct",
        "general",
        {"permc_spec": _SUPERLU["permc_spec"]},
        "as splu (factorised once so that the backward reuses it)",
    ),
    "cg": MethodSpec("cg", "iterative", "spd", dict(_M), "conjugate gradients (cupyx)"),
    "cgs": MethodSpec("cgs", "iterative", "general", dict(_M), "conjugate gradients squared (cupyx)"),
    "gmres": MethodSpec(
        "gmres", "iterative", "general", {"restart": "Krylov dimension per cycle (default 20)", **_M}, "GMRES (cupyx)"
    ),
    "minres": MethodSpec(
        "minres", "iterative", "symmetric", {"shift": "solve (A − shift·I)x = b", **_M}, "MINRES (cupyx)"
    ),
    "spsolve_triangular": MethodSpec(
        "spsolve_triangular", "direct", "general", {}, "cupyx spsolve_triangular (cuSPARSE)", operation="triangular"
    ),
}
