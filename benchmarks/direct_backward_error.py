"""Normwise backward errors of direct solves: the measurements behind ``tsgu_core.engine.convergence.C_BACKWARD``.

For every direct method of the scipy and jax backends, on well-conditioned
problems (2-D Poisson and convection–diffusion up to n = 4·10⁴, random
nonsymmetric matrices n = 50…2000) and on numerically singular ones (rows
``r₁, r₂, r₁ + r₂``; a Poisson matrix with one row replaced by the sum of two
others), float32 and float64, forward and transpose solves, it prints

* ``η/ε`` with ``η = ‖r‖ / (‖A‖_F‖x‖ + ‖b‖)`` (the quantity bounded by ``C_BACKWARD``),
* the relative residual ``‖r‖/‖b‖`` over ``√ε`` (the second test of
  :func:`tsgu_core.engine.convergence.direct_verdict`),

the largest over 4 random right-hand sides. Solves run with
``on_failure="ignore"`` so that failing ones are measured too. One thread.
Run: ``python benchmarks/direct_backward_error.py``.
"""

from __future__ import annotations

from _common import environment, markdown_table, pin_threads, write_results

pin_threads(1)

import torch  # noqa: E402

import tsgu_core  # noqa: E402
from tsgu_core.plugins.norms import scaled_norm  # noqa: E402
from tsgu_core.testing import convection_diffusion_2d, poisson_2d, random_nonsymmetric  # noqa: E402


def singular_3x3(dtype: torch.dtype) -> torch.Tensor:
    r1, r2 = torch.tensor([0.1, 0.2, 0.3], dtype=dtype), torch.tensor([0.7, 0.5, 0.11], dtype=dtype)
    return torch.stack([r1, r2, r1 + r2]).to_sparse_csr()


def singular_poisson(m: int, dtype: torch.dtype) -> torch.Tensor:
    D = poisson_2d(m, dtype=dtype).to_dense()
    D[-1] = D[0] + D[1]
    return D.to_sparse_csr()


def problems(dtype: torch.dtype) -> dict[str, tuple[torch.Tensor, bool]]:
    """name -> (A, well-conditioned?)"""
    out: dict[str, tuple[torch.Tensor, bool]] = {}
    for m in (10, 60, 200):
        out[f"poisson_2d n={m * m}"] = (poisson_2d(m, dtype=dtype), True)
        out[f"conv_diff n={m * m}"] = (convection_diffusion_2d(m, dtype=dtype), True)
    for n in (50, 500, 2000):
        density = min(0.25, 10 / n)
        out[f"random n={n}"] = (random_nonsymmetric(n, density=density, dtype=dtype).to_sparse_csr(), True)
    out["r1,r2,r1+r2"] = (singular_3x3(dtype), False)
    out["poisson, row=r0+r1 n=400"] = (singular_poisson(20, dtype), False)
    return out


def measure(A: torch.Tensor, backend: str, method: str) -> tuple[float, float]:
    n, eps = A.shape[0], torch.finfo(A.dtype).eps
    generator = torch.Generator().manual_seed(0)
    B = torch.randn(n, 4, generator=generator, dtype=torch.float64).to(A.dtype)
    values = A.values().clone().requires_grad_()
    A_ = torch.sparse_csr_tensor(A.crow_indices(), A.col_indices(), values, A.shape)
    Bg = B.clone().requires_grad_()
    worst_eta, worst_rel = 0.0, 0.0
    G = torch.randn(n, 4, generator=generator, dtype=torch.float64).to(A.dtype)
    try:  # a non-finite solution (exactly singular) raises whatever on_failure says
        X = tsgu_core.solve(A_, Bg, backend=backend, method=method, on_failure="ignore")
        (X * G).sum().backward()
    except tsgu_core.errors.SingularMatrixError:
        return float("inf"), float("inf")
    Ad = A.to_dense()
    a_norm = scaled_norm(A.values(), dim=0)
    for M, rhs, sol in ((Ad, B, X.detach()), (Ad.T, G, Bg.grad)):
        r = rhs - M @ sol
        eta = scaled_norm(r) / (a_norm * scaled_norm(sol) + scaled_norm(rhs))
        rel = scaled_norm(r) / scaled_norm(rhs)
        worst_eta = max(worst_eta, float(eta.max()) / eps)
        worst_rel = max(worst_rel, float(rel.max()) / eps**0.5)
    return worst_eta, worst_rel


def main() -> None:
    methods = [("scipy", "splu"), ("scipy", "spsolve")]
    jax = tsgu_core.get_backend("jax")
    if jax.is_available("cpu"):
        methods.append(("jax", "spsolve"))
    rows, payload = [], []
    for dtype in (torch.float32, torch.float64):
        for name, (A, good) in problems(dtype).items():
            for backend, method in methods:
                if backend == "jax" and A.shape[0] > 5000:
                    continue  # JAX's spsolve is dense-ish on the CPU: skip the largest
                eta, rel = measure(A, backend, method)
                rows.append(
                    [str(dtype).split(".")[1], name, f"{backend}/{method}", f"{eta:.3g}", f"{rel:.3g}", str(good)]
                )
                payload.append(
                    dict(
                        dtype=str(dtype),
                        problem=name,
                        method=f"{backend}/{method}",
                        eta_over_eps=eta,
                        rel_over_sqrt_eps=rel,
                        well_conditioned=good,
                    )
                )
                print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(["dtype", "problem", "method", "max η/ε", "max (‖r‖/‖b‖)/√ε", "well-conditioned"], rows)
    good = [p for p in payload if p["well_conditioned"]]
    summary = (
        f"\nwell-conditioned: largest η/ε = {max(p['eta_over_eps'] for p in good):.3g}, "
        f"largest (‖r‖/‖b‖)/√ε = {max(p['rel_over_sqrt_eps'] for p in good):.3g}\n"
        f"numerically singular: smallest (‖r‖/‖b‖)/√ε = "
        f"{min(p['rel_over_sqrt_eps'] for p in payload if not p['well_conditioned']):.3g}\n"
    )
    print(table + summary)
    write_results("direct_backward_error", table + summary, {"environment": environment(), "rows": payload})


if __name__ == "__main__":
    main()
