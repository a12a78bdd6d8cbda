"""Broken index tensors: a typed error naming the entry, never a crash or a wrong answer (S2.6).

torch builds sparse tensors without checking their indices, and the libraries
behind the backends trust them: before the check existed, a negative COO
index killed the interpreter (SIGSEGV), a CSR whose last row pointer exceeds
nnz returned garbage, a column index ≥ n corrupted SciPy's heap. The broken
cases therefore run in a subprocess (one for all of them: each start imports
torch), so that a regression fails tests instead of killing the test run; a
case the child did not reach before dying fails with the child's exit status.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tsgu_core.errors import StructureError
from tsgu_core.sparse.validate import check_indices

ROOT = Path(__file__).resolve().parents[1]

# Each case: the code that builds ``A`` (3 × 3, or a batch of 2) and the words the error must contain.
CASES = {
    "coo-negative-row": (
        "A = torch.sparse_coo_tensor(torch.tensor([[0, 1, -1], [0, 1, 2]]), torch.ones(3, dtype=D), (3, 3), "
        "check_invariants=False)",
        ["entry 2", "dimension 0", "-1"],
    ),
    "coo-column-too-large": (
        "A = torch.sparse_coo_tensor(torch.tensor([[0, 1, 2], [0, 5, 2]]), torch.ones(3, dtype=D), (3, 3), "
        "check_invariants=False)",
        ["entry 1", "dimension 1", "is 5", "[0, 3)"],
    ),
    "coo-batched-member-index": (
        "A = torch.sparse_coo_tensor(torch.tensor([[0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 1, 3]]), "
        "torch.ones(6, dtype=D), (2, 3, 3), check_invariants=False)",
        ["entry 5", "dimension 2", "is 3"],
    ),
    "csr-last-pointer-beyond-nnz": (
        "A = torch.sparse_csr_tensor(torch.tensor([0, 1, 2, 5]), torch.tensor([0, 1, 2]), torch.ones(3, dtype=D), "
        "(3, 3), check_invariants=False)",
        ["crow_indices[-1] is 5", "3 entries"],
    ),
    "csr-column-index-too-large": (
        "A = torch.sparse_csr_tensor(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 3, 2]), torch.ones(3, dtype=D), "
        "(3, 3), check_invariants=False)",
        ["col_indices[1] is 3", "[0, 3)"],
    ),
    "csr-negative-column-index": (
        "A = torch.sparse_csr_tensor(torch.tensor([0, 1, 2, 3]), torch.tensor([0, -2, 2]), torch.ones(3, dtype=D), "
        "(3, 3), check_invariants=False)",
        ["col_indices[1] is -2"],
    ),
    "csr-decreasing-row-pointers": (
        "A = torch.sparse_csr_tensor(torch.tensor([0, 2, 1, 3]), torch.tensor([0, 1, 2]), torch.ones(3, dtype=D), "
        "(3, 3), check_invariants=False)",
        ["decrease at row 1", "crow_indices[2] = 1 < crow_indices[1] = 2"],
    ),
    "csr-first-pointer-not-zero": (
        "A = torch.sparse_csr_tensor(torch.tensor([1, 2, 3, 3]), torch.tensor([0, 1, 2]), torch.ones(3, dtype=D), "
        "(3, 3), check_invariants=False)",
        ["crow_indices[0] is 1"],
    ),
    "csr-batched-member-decreasing": (
        "A = torch.sparse_csr_tensor(torch.tensor([[0, 1, 2, 3], [0, 2, 1, 3]]), torch.tensor([[0, 1, 2], [0, 1, 2]]),"
        " torch.ones(2, 3, dtype=D), (2, 3, 3), check_invariants=False)",
        ["batch member 1", "decrease at row 1"],
    ),
}

# Every front door that takes A, each called on each broken A; the child prints one line per case and door, and
# "<case> DONE" after a case's last door.
CHILD = """
import torch, tsgu_core
from tsgu_core.errors import StructureError
D = torch.float64

def doors(A):
    batched = A.dim() == 3
    B = torch.ones(*A.shape[:-1], dtype=D)
    found = {{"solve": lambda: tsgu_core.solve(A, B)}}
    for backend in ("torch", "jax"):
        if tsgu_core.get_backend(backend).is_available("cpu"):
            found["solve-" + backend] = lambda backend=backend: tsgu_core.solve(A, B, backend=backend)
    if not batched:
        found["factorize"] = lambda: tsgu_core.factorize(A)
        found["triangular_solve"] = lambda: tsgu_core.triangular_solve(A, B, upper=False)
        found["lstsq"] = lambda: tsgu_core.lstsq(A, B)
    return found

{cases}
"""

CHILD_CASE = """
{build}
for door, call in doors(A).items():
    try:
        call()
    except StructureError as error:
        print({case!r}, door, "StructureError", str(error).replace(chr(10), " "), flush=True)
    except Exception as error:
        print({case!r}, door, "OTHER", type(error).__name__, str(error).replace(chr(10), " "), flush=True)
    else:
        print({case!r}, door, "NO-ERROR", flush=True)
print({case!r}, "DONE", flush=True)
"""


@pytest.fixture(scope="module")
def child() -> subprocess.CompletedProcess[str]:
    """One subprocess that calls every front door on every broken ``A`` of :data:`CASES`, in order."""
    cases = "".join(CHILD_CASE.format(build=build, case=case) for case, (build, _) in CASES.items())
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD.format(cases=cases))],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize("case", list(CASES))
def test_broken_indices_raise_structure_error_in_every_front_door(
    case: str, child: subprocess.CompletedProcess[str]
) -> None:
    _, words = CASES[case]
    ours = [line.split(" ", 1)[1] for line in child.stdout.splitlines() if line.split(" ", 1)[0] == case]
    assert ours[-1:] == ["DONE"], f"the child did not finish this case (rc {child.returncode}): {child.stderr[-2000:]}"
    lines = ours[:-1]
    assert len(lines) >= (2 if "batch" in case else 4), child.stdout + child.stderr
    for line in lines:
        door, verdict, *message = line.split(" ", 2)
        assert verdict == "StructureError", f"{door}: {line}"
        for word in words:
            assert word in message[0], f"{door}: {word!r} not in {message[0]!r}"


def _poisson_csr(m: int) -> torch.Tensor:
    from tsgu_core.testing import poisson_2d

    return poisson_2d(m)


@pytest.mark.parametrize("layout", ["coo", "csr"])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_valid_indices_pass(layout: str, index_dtype: torch.dtype) -> None:
    A = _poisson_csr(6)
    if layout == "coo":
        A = A.to_sparse_coo()
        A = torch.sparse_coo_tensor(A._indices().to(index_dtype), A._values(), A.shape)
    else:
        A = torch.sparse_csr_tensor(
            A.crow_indices().to(index_dtype), A.col_indices().to(index_dtype), A.values(), A.shape
        )
    check_indices(A)  # no error
    check_indices(torch.stack([A.to_sparse_coo(), A.to_sparse_coo()]) if layout == "coo" else A)


def test_empty_matrix_passes() -> None:
    check_indices(torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.int64), torch.zeros(0), (3, 3)))
    check_indices(
        torch.sparse_csr_tensor(
            torch.zeros(4, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.zeros(0), (3, 3)
        )
    )


def test_structure_error_is_a_value_error() -> None:
    A = torch.sparse_coo_tensor(torch.tensor([[0], [7]]), torch.ones(1), (3, 3), check_invariants=False)
    with pytest.raises(ValueError, match="entry 0 in dimension 1 is 7"):
        check_indices(A)
    with pytest.raises(StructureError):
        check_indices(A)
