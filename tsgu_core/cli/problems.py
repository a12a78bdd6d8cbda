"""Matrices and right-hand sides for the command line: Matrix Market files, NumPy files, named problems."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tsgu_core.cli.common import CommandError, check_memory, quiet_torch

if TYPE_CHECKING:
    import torch

__all__ = [
    "GALLERY",
    "SOLUTION_SUFFIXES",
    "named_problem",
    "parse_options",
    "read_matrix",
    "read_rhs",
    "write_solution",
]

GALLERY = ("airfoil", "bar", "knot", "local_disc_galerkin_diffusion", "recirc_flow", "unit_cube", "unit_square")
"""Real matrices shipped by pyamg (``pyamg.gallery.load_example``); recirc_flow is strongly nonsymmetric."""


def _to_torch(M: Any, dtype: torch.dtype) -> torch.Tensor:
    import torch

    M = M.tocsr()
    M.sort_indices()
    with quiet_torch():
        return torch.sparse_csr_tensor(
            torch.from_numpy(M.indptr.astype("int64")),
            torch.from_numpy(M.indices.astype("int64")),
            torch.from_numpy(M.data.astype("complex128" if dtype.is_complex else "float64")).to(dtype),
            M.shape,
        )


_COMPRESSED = (".gz", ".bz2")

BYTES_PER_ENTRY = 80
"""Peak bytes per stored entry while a Matrix Market file becomes a CSR tensor: SciPy's COO (row, column, value)
and CSR copies, then torch's int64 indices and values, with their temporaries."""


def check_header(path: str) -> tuple[int, int, int]:
    """Read only the header of a Matrix Market file and refuse, before any allocation, a size it cannot hold.

    A header claims ``rows × columns`` and a number of stored entries; reading the file allocates for
    the claim. Refused: more entries than the file's bytes can hold (each needs at least 4 characters),
    and a claim whose arrays exceed the memory available (:func:`~tsgu_core.cli.common.check_memory`).

    Returns
    -------
    tuple of int
        ``(rows, columns, entries)`` as the header states them.
    """
    import scipy.io

    try:
        rows, columns, entries, layout, _field, symmetry = scipy.io.mminfo(path)
    except Exception as error:
        raise CommandError(f"{path} is not a readable Matrix Market file ({type(error).__name__}: {error})") from error
    if min(rows, columns, entries) < 0:
        raise CommandError(f"{path}: its header claims a negative size ({rows} × {columns}, {entries} entries)")
    compressed = path.lower().endswith(_COMPRESSED)
    least = 4 if layout == "coordinate" else 2  # "i j\n" or "v\n": the fewest characters an entry takes
    if not compressed and entries * least > Path(path).stat().st_size:
        raise CommandError(
            f"{path}: its header claims {entries} stored entries but the file holds only {Path(path).stat().st_size} "
            "bytes: it is truncated or its header is wrong"
        )
    stored = entries * (2 if symmetry != "general" else 1)  # the mirrored half is stored explicitly
    needed = stored * BYTES_PER_ENTRY + (rows + 1) * 8 * 3  # row pointers (SciPy's, torch's, temporaries)
    if layout == "array":
        needed = rows * columns * 16 * 2  # dense: the array and its sparse copy
    claimed = f"{entries} stored entr{'y' if entries == 1 else 'ies'}"
    check_memory(needed, f"{path} ({rows} × {columns}, {claimed} by its header)")
    return rows, columns, entries


def read_matrix(path: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A Matrix Market file as a CSR tensor (float64 by default); any problem is a :class:`CommandError`."""
    import scipy.io
    import scipy.sparse as sp

    if Path(path).is_dir():
        raise CommandError(f"{path} is a folder, not a Matrix Market file")
    if not Path(path).is_file():
        raise CommandError(f"no such file: {path}")
    check_header(path)
    try:
        M = scipy.io.mmread(path)
    except Exception as error:
        raise CommandError(f"{path} is not a readable Matrix Market file ({type(error).__name__}: {error})") from error
    if not sp.issparse(M):
        M = sp.csr_matrix(M)
    import torch

    dtype = dtype or torch.float64
    if M.dtype.kind not in "fic":
        raise CommandError(f"{path} holds {M.dtype} entries; tsgu solves real or complex (float) systems")
    if M.dtype.kind == "c" and not dtype.is_complex:
        raise CommandError(f"{path} holds complex entries; pass --dtype complex128 (or complex64) to solve it")
    return _to_torch(M, dtype)


def read_rhs(path: str | None, n: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The right-hand side (float64 by default) from a ``.mtx`` or ``.npy`` file, or ones; ``(n,)`` or ``(n, k)``."""
    import torch

    dtype = dtype or torch.float64

    if path is None:
        return torch.ones(n, dtype=dtype)
    if not Path(path).is_file():
        raise CommandError(f"no such file: {path}")
    try:
        if path.endswith(".npy"):
            import numpy as np

            array = np.load(path)
        else:
            import scipy.io
            import scipy.sparse as sp

            array = scipy.io.mmread(path)
            array = array.toarray() if sp.issparse(array) else array
    except Exception as error:
        raise CommandError(f"cannot read the right-hand side {path} ({type(error).__name__}: {error})") from error
    kinds = "fiubc" if dtype.is_complex else "fiub"
    if getattr(array, "dtype", None) is None or array.dtype.kind not in kinds:
        found = getattr(array, "dtype", type(array))
        raise CommandError(
            f"the right-hand side {path} holds {found} values, not reals"
            + ("; pass --dtype complex128 for a complex system" if getattr(found, "kind", "") == "c" else "")
        )
    B = torch.as_tensor(array).to(dtype)
    if B.dim() == 2 and B.shape[1] == 1 and path.endswith(".mtx"):
        B = B[:, 0]
    if B.dim() not in (1, 2) or B.shape[0] != n:
        raise CommandError(f"the right-hand side has shape {tuple(B.shape)}; A needs ({n},) or ({n}, k)")
    return B


SOLUTION_SUFFIXES = (".npy", ".mtx")
"""The formats ``tsgu solve -o`` writes."""


def write_solution(path: str, X: torch.Tensor) -> None:
    """Write ``X`` as ``.npy`` or Matrix Market (``.mtx``), by the file's extension (checked beforehand).

    Raises
    ------
    CommandError
        The file cannot be written (a full disk, a lost connection, ...); a partly written regular file is removed.
    """
    array = X.detach().cpu().numpy()
    lowered = path.lower()
    if not lowered.endswith(SOLUTION_SUFFIXES):
        raise CommandError(f"cannot tell the format of {path}: use a .npy or .mtx file name")
    try:
        if lowered.endswith(".npy"):
            import numpy as np

            with open(path, "wb") as file:  # np.save(path) would append .npy to a name ending in .NPY
                np.save(file, array)
        else:
            import scipy.io

            scipy.io.mmwrite(path, array.reshape(array.shape[0], -1))
    except OSError as error:
        target = Path(path)
        if target.is_file() and not target.is_symlink():
            target.unlink(missing_ok=True)  # no half-written solution left behind
        raise CommandError(f"-o {path}: cannot write the solution ({error.strerror or error})") from error


def parse_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["restart=30", "preconditioner=jacobi"]`` → ``{"restart": 30, "preconditioner": "jacobi"}``."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise CommandError(f"options are NAME=VALUE, got {pair!r}")
        try:
            options[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[name] = text
    return options


def named_problem(name: str, n: int, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, str]:
    """A named problem (float64 by default): ``poisson2d``, ``convdiff`` (n rounded to a square grid) or a pyamg
    gallery matrix."""
    import torch

    from tsgu_core.testing import convection_diffusion_2d, poisson_2d

    dtype = dtype or torch.float64

    side = max(2, round(n**0.5))
    if name == "poisson2d":
        return poisson_2d(side, dtype=dtype), f"2-D Poisson, {side}×{side} grid (SPD)"
    if name == "convdiff":
        return convection_diffusion_2d(
            side, dtype=dtype
        ), f"2-D convection–diffusion, {side}×{side} grid (nonsymmetric)"
    if name in GALLERY:
        try:
            from pyamg.gallery import load_example
        except ImportError as error:
            raise CommandError(f"problem {name!r} comes from pyamg's gallery: pip install pyamg") from error
        return _to_torch(load_example(name)["A"], dtype), f"pyamg gallery matrix {name!r}"
    raise CommandError(f"unknown problem {name!r}; choose poisson2d, convdiff or one of {', '.join(GALLERY)}")
