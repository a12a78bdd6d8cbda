"""The engine's global state: the traced path's request table and prepared cache, threads, and compiling threads.

Every number is checked against a dense reference (``torch.linalg.solve`` and its autograd) on a nonsymmetric A.
"""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
import torch

import tsgu_core
from tsgu_core import SparsePattern, solve_values
from tsgu_core.engine import traced
from tsgu_core.testing import random_nonsymmetric

N = 8


def _problem(seed: int = 3) -> tuple[torch.Tensor, SparsePattern, torch.Tensor, torch.Tensor]:
    D = random_nonsymmetric(N, seed=seed)
    A = D.to_sparse_csr()
    return D, SparsePattern.of(A), A.values().clone(), torch.arange(1.0, N + 1, dtype=torch.float64)


def _dense_value_gradient(D: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x = D⁻¹b`` and the gradient of ``sum(x²)`` at ``D``'s nonzero entries (row-major, as CSR stores them)."""
    D = D.clone().requires_grad_()
    x = torch.linalg.solve(D, b)
    x.square().sum().backward()
    assert D.grad is not None
    return x.detach(), D.grad[D.detach() != 0]


class _Preconditioner:
    """A callable ``M`` (the identity): a fresh object each training step, as a user's closure would be."""

    def __call__(self, R: torch.Tensor) -> torch.Tensor:
        return R


def _train(steps: int) -> list[weakref.ref[_Preconditioner]]:
    D, pattern, values, b = _problem()
    _, expected = _dense_value_gradient(D, b)
    alive = []
    for _ in range(steps):
        M = _Preconditioner()
        alive.append(weakref.ref(M))
        grad = torch.func.grad(
            lambda v, M=M: (
                solve_values(pattern, v, b, backend="torch", method="gmres", M=M, M_transpose=M, rtol=1e-12)
                .square()
                .sum()
            )
        )(values)
        torch.testing.assert_close(grad, expected)
    return alive


def test_the_request_table_is_emptied_by_clearing_the_cache_and_frees_the_options():
    """20 steps with a new M: the table held 20 requests (and 20 M's) even after CACHE.clear() — now none."""
    traced.CACHE.clear()
    pinned = len(traced._REQUESTS)  # requests named by graphs that earlier tests in this process compiled
    alive = _train(20)
    assert len(traced._REQUESTS) <= 20 + pinned
    traced.CACHE.clear()
    gc.collect()
    assert len(traced._REQUESTS) == pinned
    assert [ref for ref in alive if ref() is not None] == []


def test_the_request_table_is_bounded():
    traced.CACHE.clear()
    pinned = len(traced._REQUESTS)  # requests named by graphs that earlier tests in this process compiled
    size = traced.CACHE.requests.size
    alive = _train(size + 6)
    assert len(traced._REQUESTS) <= size + pinned
    gc.collect()
    assert sum(ref() is not None for ref in alive) <= size
    traced.CACHE.clear()


def test_a_backward_after_its_request_left_the_table_still_solves():
    D, pattern, values, b = _problem()
    x_ref, grad_ref = _dense_value_gradient(D, b)
    traced.CACHE.clear()
    v = values.clone().requires_grad_()
    with torch.autograd.forward_ad.dual_level():  # forward-mode AD: the traced path, with a reverse pass after
        dual = torch.autograd.forward_ad.make_dual(v, torch.zeros_like(v))
        x = torch.autograd.forward_ad.unpack_dual(
            solve_values(
                pattern, dual, b, backend="torch", method="gmres", M=(M := _Preconditioner()), M_transpose=M, rtol=1e-12
            )
        ).primal
    traced.CACHE.clear()  # the request leaves the table between the forward and the backward
    x.square().sum().backward()
    torch.testing.assert_close(x.detach(), x_ref)
    torch.testing.assert_close(v.grad, grad_ref)


@pytest.mark.parametrize("backend", ["pardiso", "scipy", "torch"])
def test_threads_share_a_prepared_matrix_forward_and_backward(backend):
    """8 threads, forward and backward through the traced path on one matrix: one CACHE entry, shared."""
    if backend not in {entry.name for entry in tsgu_core.list_backends()}:
        pytest.skip(f"the {backend} backend is not installed")
    D, pattern, values, b = _problem(seed=11)
    x_ref, grad_ref = _dense_value_gradient(D, b)
    options = {"method": "gmres", "rtol": 1e-12} if backend == "torch" else {}
    traced.CACHE.clear()
    results: list[tuple[torch.Tensor, torch.Tensor]] = []
    failures: list[BaseException] = []
    start = threading.Barrier(8)
    rounds = 25 if backend == "pardiso" else 8  # the PARDISO race needed ~200 solves to show (1–5 in 400)

    def work() -> None:
        start.wait()
        try:
            for _ in range(rounds):
                x, vjp = torch.func.vjp(lambda v: solve_values(pattern, v, b, backend=backend, **options), values)
                (grad,) = vjp(2 * x)
                results.append((x, grad))
        except BaseException as error:  # reported below, with the others
            failures.append(error)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(results) == 8 * rounds
    for x, grad in results:
        torch.testing.assert_close(x, x_ref)
        torch.testing.assert_close(grad, grad_ref)


def _slow(x: torch.Tensor) -> torch.Tensor:
    for i in range(60):
        x = torch.sin(x) * 1.0001 + i
    return x


def test_a_thread_that_compiles_does_not_turn_other_threads_solves_into_traced_ones():
    """torch.compiler.is_compiling() is process-wide: while one thread compiles, the others solve eagerly."""
    D, pattern, values, b = _problem(seed=5)
    x_ref, grad_ref = _dense_value_gradient(D, b)
    torch.compiler.reset()
    compiled = torch.compile(_slow, fullgraph=True, backend="aot_eager")
    done = threading.Event()
    outcome: list[object] = []

    def compile_it() -> None:
        try:
            outcome.append(compiled(torch.ones(3)))
        except BaseException as error:
            outcome.append(error)
        finally:
            done.set()

    thread = threading.Thread(target=compile_it)
    thread.start()
    overlapped = failures = rounds = 0
    while not done.is_set() or rounds == 0:
        during = torch.compiler.is_compiling()  # the process-wide flag: another thread is compiling
        try:
            x, info = solve_values(pattern, values, b, backend="scipy", return_info=True)
            grad = torch.func.grad(lambda v: solve_values(pattern, v, b, backend="scipy").square().sum())(values)
            torch.testing.assert_close(x, x_ref)
            torch.testing.assert_close(grad, grad_ref)
            assert info.converged
        except tsgu_core.TsguError:
            failures += 1
        overlapped += during and torch.compiler.is_compiling()
        rounds += 1
    thread.join()
    assert isinstance(outcome[0], torch.Tensor)
    torch.testing.assert_close(outcome[0], _slow(torch.ones(3)))
    assert overlapped > 0, "no solve ran while the other thread compiled: the test proved nothing"
    assert failures == 0, f"{failures} of {rounds} solves failed while another thread compiled"
