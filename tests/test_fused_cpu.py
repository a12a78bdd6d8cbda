"""The fused CPU loops (numba): checks at the entry, threads and processes building at once, a cache that loads
nothing another user could have written (issue 23 item 7, issue 25 item 8)."""

import importlib
import json
import os
import pickle
import stat
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import tsgu_core
from tsgu_backends import numba_cache
from tsgu_backends.torch_backend import fused_cpu, krylov
from tsgu_backends.torch_backend.operator import CsrOperator
from tsgu_core.errors import (
    DeviceMismatchError,
    DtypeMismatchError,
    InvalidArgumentError,
    InvalidOptionError,
    LayoutError,
    ShapeError,
)
from tsgu_core.testing import poisson_2d, random_nonsymmetric, random_spd, to_layout

ROOT = Path(__file__).resolve().parent.parent
AS_ROOT = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give a file to another uid (os.chown)"
)
OTHER_UID = 12345


def _new_cache_folder(monkeypatch, tmp_path):
    """``TSGU_KERNEL_CACHE`` set to a folder not made yet (``tmp/kernels``), restored afterwards."""
    folder = tmp_path / "kernels"
    monkeypatch.setenv("TSGU_KERNEL_CACHE", str(folder))
    return folder


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """No loops loaded and no cache chosen yet in this process, with ``TSGU_KERNEL_CACHE`` a new 0700 folder.

    numba's dispatchers keep what they compiled; the disk caches attached to them are put back afterwards.
    """
    fused_cpu.kernels_for(torch.float64)  # the dispatchers exist (and are compiled) before their caches are saved
    folder = _new_cache_folder(monkeypatch, tmp_path)
    loops = sys.modules["tsgu_backends.torch_backend._fused_loops"]
    saved = {name: dispatcher._cache for name, dispatcher in loops.KERNELS.items()}
    monkeypatch.setattr(fused_cpu, "_LOADED", {})
    monkeypatch.setattr(fused_cpu, "_CACHE_STATE", {})
    monkeypatch.setattr(krylov, "_compile_failure", {})
    yield folder
    for name, dispatcher in loops.KERNELS.items():
        dispatcher._cache = saved[name]


def _cg_problem(k=3, dtype=torch.float64):
    A = poisson_2d(6, dtype=dtype)
    B = torch.randn(A.shape[0], k, dtype=dtype, generator=torch.Generator().manual_seed(k))
    return A, B


def _fused_cg(A, B):
    operator = CsrOperator(A)
    return krylov.krylov_solve("cg", operator.apply, None, B, x0=None, rtol=1e-10, atol=0.0, maxiter=500, fused=True)


# -- checks at the entry -----------------------------------------------------------------------------------------


def _cg_advance_arguments(n=10, k=2, dtype=torch.float64):
    vector = [torch.zeros(n, k, dtype=dtype) for _ in range(3)]
    scalars = [torch.ones(k, dtype=dtype) for _ in range(3)]
    return [*vector, *scalars, torch.ones(k, dtype=torch.bool)]


@pytest.mark.parametrize(
    ("position", "bad", "error", "message"),
    [
        (
            2,
            torch.zeros(9, 2, dtype=torch.float64),
            ShapeError,
            r"Z has 18 elements, expected 20 .*preconditioner M must return",
        ),
        (0, torch.zeros(10, 2, dtype=torch.float32), DtypeMismatchError, "X has dtype torch.float32"),
        (6, torch.ones(2, dtype=torch.float64), DtypeMismatchError, "active has dtype torch.float64"),
        (1, torch.zeros(2, 10, dtype=torch.float64).T, LayoutError, "P must be a dense C-contiguous"),
        (3, torch.ones(3, dtype=torch.float64), ShapeError, r"alpha has 3 elements, expected 2 \(batch 1 × k 2\)"),
        (0, torch.zeros(10, 2, dtype=torch.float64, device="meta"), DeviceMismatchError, "X is on meta"),
        (4, 1.0, DtypeMismatchError, "rz must be a tensor"),
    ],
)
def test_the_entry_refuses_what_would_take_the_loops_outside_the_memory(position, bad, error, message):
    kernels = fused_cpu.kernels_for(torch.float64)
    arguments = _cg_advance_arguments()
    arguments[position] = bad
    with pytest.raises(error, match=message):
        kernels.call("cg_advance", 1, 10, 2, *arguments)


def test_sizes_and_argument_counts_that_do_not_fit_are_refused():
    kernels = fused_cpu.kernels_for(torch.float64)
    with pytest.raises(ShapeError, match="k ≥ 1"):
        kernels.call("cg_advance", 1, 10, 0, *_cg_advance_arguments())
    with pytest.raises(InvalidArgumentError, match="takes 7 arguments"):
        kernels.call("cg_advance", 1, 10, 2, *_cg_advance_arguments()[:-1])


def test_a_preconditioner_of_the_wrong_shape_is_a_typed_error_not_a_read_past_the_end():
    """``M`` returning one column for three: the C loops read past Z's end; now a typed error names M.

    The backend checks every result of a callable ``M`` before the loops see it (the loops' own entry check,
    a ``ShapeError``, is tested on ``FusedKernels.call`` directly).
    """
    D = random_spd(24, seed=3)
    B = torch.randn(24, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with pytest.raises(InvalidOptionError, match="preconditioner M .* must return M⁻¹R as a tensor of its input"):
        tsgu_core.solve(to_layout(D, "csr"), B, backend="torch", method="cg", fused=True, M=lambda R: R[..., :1])


def _loop_arguments(name, n=16, k=2, batch=1):
    """A whole-solve loop's arguments after the matrix and its scale: ``(sizes, tensors, maxiter)``."""
    tensors = [
        torch.zeros(batch * n * k, dtype=torch.float64)
        if kind == "v"
        else torch.ones(batch * k, dtype=torch.bool if kind == "m" else torch.float64)
        for _, kind in fused_cpu.LOOP_SPECS[name]
    ]
    return [(batch, n, k), tensors, 3]


def _csr(crow, col, values, size):
    return torch.sparse_csr_tensor(torch.tensor(crow), torch.tensor(col), values, (size, size), check_invariants=False)


_POISSON = poisson_2d(4)  # 16 rows, int64 indices
_CROW, _COL, _VALUES = _POISSON.crow_indices().tolist(), _POISSON.col_indices().tolist(), _POISSON.values()


@pytest.mark.parametrize("name", ["cg_loop", "bicgstab_loop"])
@pytest.mark.parametrize(
    ("matrix", "change", "error", "message"),
    [
        (_POISSON.to(torch.float32), {}, DtypeMismatchError, "matrix has dtype torch.float32"),
        (_POISSON.to_sparse_coo(), {}, LayoutError, "2-D sparse CSR"),
        (poisson_2d(3), {}, ShapeError, r"shape \(9, 9\), expected \(16, 16\)"),
        (_csr(_CROW, [*_COL[:-1], 16], _VALUES, 16), {}, ShapeError, "do not fit each other"),
        (_csr(_CROW, [*_COL[:-1], -1], _VALUES, 16), {}, ShapeError, "do not fit each other"),
        (_csr([*_CROW[:-1], _CROW[-1] + 1], _COL, _VALUES, 16), {}, ShapeError, "do not fit each other"),
        (_csr([*_CROW[:3], _CROW[4], _CROW[3], *_CROW[5:]], _COL, _VALUES, 16), {}, ShapeError, "do not fit"),
        (_POISSON, {"k": 33}, ShapeError, r"k ≤ 32"),
        (_POISSON, {"batch": 0}, ShapeError, r"batch 0"),
        (_POISSON, {"members": 2}, ShapeError, "a row of one batch member holds a column of another"),
        (_POISSON, {1: torch.zeros(31, dtype=torch.float64)}, ShapeError, "has 31 elements, expected 32"),
        (_POISSON, {"drop": 1}, InvalidArgumentError, "tensors, got"),
    ],
)
def test_the_whole_solve_loops_refuse_what_would_take_them_outside_the_memory(name, matrix, change, error, message):
    """The loops read ``V`` (``P``, ``R``) at every stored column: a column out of range, row pointers past the
    entries or going back, another member's column in a batch, are typed errors before the loop runs."""
    kernels = fused_cpu.kernels_for(torch.float64)
    sizes, tensors, maxiter = _loop_arguments(name, n=8, batch=2) if "members" in change else _loop_arguments(name)
    batch, n, k = sizes
    sizes = (change.get("batch", batch), n, change.get("k", k))
    if 1 in change:
        tensors[1] = change[1]
    if "drop" in change:
        tensors = tensors[:-1]
    with pytest.raises(error, match=message):
        kernels.loop(name, matrix, 1.0, sizes, tuple(tensors), maxiter)


def test_the_loops_are_compiled_once_per_dtype_whatever_the_column_count():
    assert fused_cpu.kernels_for(torch.float64, 1) is fused_cpu.kernels_for(torch.float64, 8)
    with pytest.raises(DtypeMismatchError, match="float32/float64"):
        fused_cpu.kernels_for(torch.float16)


# -- threads -----------------------------------------------------------------------------------------------------


def test_threads_calling_the_first_fused_solve_at_once_all_get_the_loops(fresh):
    """8 threads start their first fused solve together (three rounds, each with a new cache folder).

    The C build wrote scratch files named by the process id: threads removed each other's, and the
    ``FileNotFoundError`` turned ``fused`` off for the rest of the process (3 of 6 trials with two threads).
    """
    A, B = _cg_problem()
    expected = torch.linalg.solve(A.to_dense(), B)
    for round_ in range(3):
        os.environ["TSGU_KERNEL_CACHE"] = str(fresh / str(round_))  # monkeypatch restores it
        fused_cpu._LOADED.clear()
        fused_cpu._CACHE_STATE.clear()
        barrier = threading.Barrier(8)
        results: list[object] = [None] * 8

        def work(i, barrier=barrier, results=results):
            barrier.wait()
            try:
                results[i] = _fused_cg(A, B.clone())
            except Exception as error:  # reported below
                results[i] = error

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert krylov._compile_failure == {}, krylov._compile_failure  # fused stayed on
        for result in results:
            assert isinstance(result, krylov.KrylovResult), result
            torch.testing.assert_close(result.X, expected)
        assert torch.float64 in fused_cpu._LOADED


# -- the cache folder and its files ------------------------------------------------------------------------------


def test_the_cache_folder_is_made_for_the_user_only(tmp_path):
    folder = numba_cache.trusted_directory(tmp_path / "a" / "kernels")
    assert stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0


@pytest.mark.parametrize(
    ("mode", "where", "message"),
    [
        (0o777, "folder", "writable by others"),
        (0o770, "folder", "writable by others"),
        (0o777, "parent", "which another user could change"),
        (0o775, "parent", "which another user could change"),
    ],
)
def test_a_cache_folder_others_can_write_is_refused(tmp_path, mode, where, message):
    parent = tmp_path / "shared"
    folder = parent / "kernels"
    folder.mkdir(parents=True, mode=0o700)
    (folder if where == "folder" else parent).chmod(mode)
    with pytest.raises(numba_cache.UntrustedCacheError, match=message):
        numba_cache.trusted_directory(folder)
    link = tmp_path / "link"
    link.symlink_to(folder)  # a link of the user's own to such a folder is judged by where it leads
    with pytest.raises(numba_cache.UntrustedCacheError, match=message):
        numba_cache.trusted_directory(link)


def test_a_sticky_parent_such_as_tmp_is_accepted(tmp_path):
    parent = tmp_path / "tmp-like"
    parent.mkdir()
    parent.chmod(0o1777)
    assert numba_cache.trusted_directory(parent / "kernels").parent == parent.resolve()


@AS_ROOT
def test_a_cache_folder_of_another_user_is_refused(tmp_path):
    folder = tmp_path / "kernels"
    folder.mkdir(mode=0o700)
    os.chown(folder, OTHER_UID, OTHER_UID)
    with pytest.raises(numba_cache.UntrustedCacheError, match=f"belongs to uid {OTHER_UID}"):
        numba_cache.trusted_directory(folder)


def test_kernels_built_at_another_optimization_level_are_other_cache_entries(tmp_path, monkeypatch):
    """numba's cache key has no optimization level: ours puts it in the file names, so kernels built at another
    ``NUMBA_OPT`` are never served to a run at the default level, nor the reverse."""
    from numba.core import config

    from tsgu_backends.torch_backend import _fused_loops

    folder = numba_cache.trusted_directory(tmp_path / "kernels")
    paths = {}
    for level in (0, 3):
        monkeypatch.setattr(config, "OPT", config._OptLevel(level))
        paths[level] = Path(numba_cache.disk_cache(_fused_loops.cg_advance.py_func, folder).index_path)
    assert paths[0] != paths[3]
    assert "-O0" in paths[0].name and "-O3" in paths[3].name and paths[0].parent == paths[3].parent


def test_the_cache_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("TSGU_KERNEL_CACHE", "off")
    assert numba_cache.cache_directory() is None


def _open_to_everyone(folder):
    """``folder`` made with mode 0777 and a file in it that anyone could have put there."""
    folder.mkdir()
    folder.chmod(0o777)
    (folder / "planted.nbi").write_bytes(b"anything")


def test_a_0777_cache_folder_is_refused_with_a_warning_and_the_solve_is_still_right(fresh):
    """issue 25 item 8: the C build loaded a library planted in such a folder; now nothing in it is read."""
    _open_to_everyone(fresh)
    A, B = _cg_problem()
    with pytest.warns(RuntimeWarning, match=r"no disk cache .*writable by others \(mode 0777\)"):
        result = _fused_cg(A, B)
    torch.testing.assert_close(result.X, torch.linalg.solve(A.to_dense(), B))
    assert krylov._compile_failure == {} and torch.float64 in fused_cpu._LOADED  # the loops ran, from memory
    assert fused_cpu._CACHE_STATE["directory"] is None
    assert sorted(p.name for p in fresh.iterdir()) == ["planted.nbi"]  # nothing written there either


class _Payload:
    """What a planted cache file could hold: unpickling it runs ``os.makedirs(marker, exist_ok=True)``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker, 0o700, True))


def _plant(dispatchers, cache, marker):
    """A payload as the index and first data file of each of ``dispatchers`` in ``cache``; the files planted."""
    folder = numba_cache.trusted_directory(cache)
    planted = []
    for dispatcher in dispatchers:
        index = Path(numba_cache.disk_cache(dispatcher.py_func, folder).index_path)
        index.parent.mkdir(parents=True, exist_ok=True)
        for path in (index, index.with_name(index.name.replace(".nbi", ".1.nbc"))):
            path.write_bytes(pickle.dumps(_Payload(str(marker))))
            planted.append(path)
    return planted


def _kernel_cache(folder, name="cg_advance", dtype=torch.float64):
    """A checked disk cache in ``folder`` for the real loop ``name``, its dispatcher and its signature."""
    kernels = fused_cpu.kernels_for(dtype)
    dispatcher = kernels._dispatchers[name]
    return numba_cache.disk_cache(dispatcher.py_func, numba_cache.trusted_directory(folder)), dispatcher


@pytest.mark.parametrize("owner", ["you", pytest.param("another uid", marks=AS_ROOT)])
def test_a_planted_index_is_loaded_only_when_it_is_yours(tmp_path, owner):
    """Control (yours): the planted file is the one read — its payload runs. Another uid's: refused, not read."""
    cache, dispatcher = _kernel_cache(tmp_path / "kernels")
    signature = fused_cpu._signature(torch.float64, "cg_advance")
    marker = tmp_path / "payload-ran"
    planted = Path(cache.index_path)
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(pickle.dumps(_Payload(str(marker))))
    if owner == "you":
        assert cache.load_overload(signature, dispatcher.targetctx) is None
        assert marker.exists()
        return
    os.chown(planted, OTHER_UID, OTHER_UID)
    with pytest.warns(RuntimeWarning, match=f"refused to load kernel cache file .*owner uid {OTHER_UID}"):
        assert cache.load_overload(signature, dispatcher.targetctx) is None
    assert not marker.exists()


@pytest.fixture(scope="module")
def compiled_cg_advance():
    """A compile result of the real loop ``cg_advance`` made in this process (one loaded from disk cannot be
    saved again): a new dispatcher of the same function, compiled once for the module (seconds)."""
    import numba

    dispatcher = numba.njit(nogil=True, fastmath=False)(
        fused_cpu.kernels_for(torch.float64)._dispatchers["cg_advance"].py_func
    )
    signature = fused_cpu._signature(torch.float64, "cg_advance")
    dispatcher.compile(signature)
    return dispatcher.overloads[signature]


@pytest.mark.parametrize("change", ["yours", pytest.param("another uid", marks=AS_ROOT), "group-writable"])
def test_a_planted_data_file_is_loaded_only_when_it_is_yours_and_no_one_else_can_write_it(
    tmp_path, change, compiled_cg_advance
):
    cache, dispatcher = _kernel_cache(tmp_path / "kernels")
    signature = fused_cpu._signature(torch.float64, "cg_advance")
    cache.save_overload(signature, compiled_cg_advance)  # a genuine entry
    assert cache.load_overload(signature, dispatcher.targetctx) is not None  # read back from disk
    (data,) = Path(cache.index_path).parent.glob("*.nbc")
    marker = tmp_path / "payload-ran"
    data.write_bytes(pickle.dumps(_Payload(str(marker))))
    if change == "yours":
        assert cache.load_overload(signature, dispatcher.targetctx) is None
        assert marker.exists()  # control: this is the file read
        return
    if change == "another uid":
        os.chown(data, OTHER_UID, OTHER_UID)
    else:
        data.chmod(0o664)
    with pytest.warns(RuntimeWarning, match="refused to load kernel cache file"):
        assert cache.load_overload(signature, dispatcher.targetctx) is None
    assert not marker.exists()


# -- the selected-inversion kernels (slogdet's gradient) share the cache ------------------------------------------

SELINV_KERNELS = "tsgu_backends.scipy_cupy_backend.selinv_kernels"


@pytest.fixture
def fresh_selinv(monkeypatch, tmp_path):
    """The selected-inversion kernels not imported (the next slogdet imports new dispatchers, which choose their
    cache then: seconds of compiling) and ``TSGU_KERNEL_CACHE`` a new folder, all put back afterwards.

    Returns ``folder`` and ``before`` (the kernels' module imported before, whose dispatchers have the new ones'
    file names).
    """
    from tsgu_backends import scipy_cupy_backend
    from tsgu_backends.scipy_cupy_backend import selinv

    before = importlib.import_module(SELINV_KERNELS)
    monkeypatch.delattr(scipy_cupy_backend, "selinv_kernels")  # both put back afterwards
    monkeypatch.delitem(sys.modules, SELINV_KERNELS)
    monkeypatch.setattr(selinv, "_JIT", {})
    return SimpleNamespace(folder=_new_cache_folder(monkeypatch, tmp_path), before=before)


def _slogdet_against_dense():
    """slogdet and its gradient (selected inversion) of a nonsymmetric CSR matrix, checked against dense torch."""
    D = random_nonsymmetric(12, seed=4)
    leaf = D.clone().requires_grad_()
    sign_ref, logabsdet_ref = torch.linalg.slogdet(leaf)
    logabsdet_ref.backward()
    A = D.to_sparse_csr().requires_grad_()
    sign, logabsdet = tsgu_core.slogdet(A)
    logabsdet.backward()
    assert sign.item() == sign_ref.item()
    torch.testing.assert_close(logabsdet, logabsdet_ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(A.grad.to_dense(), leaf.grad * (D != 0), rtol=1e-10, atol=1e-12)


def test_the_selinv_kernels_refuse_a_0777_cache_folder_and_slogdet_is_still_right(fresh_selinv):
    """issue 25 item 8 for the kernels of selected inversion: ``cache=True`` used numba's folder (next to the
    source, or user-wide) with no checks; now a folder others can write is refused and nothing in it is read."""
    _open_to_everyone(fresh_selinv.folder)
    with pytest.warns(RuntimeWarning, match=r"selected inversion.*no disk cache .*writable by others \(mode 0777\)"):
        _slogdet_against_dense()
    kernels = sys.modules[SELINV_KERNELS]
    assert kernels.CACHE.directory is None
    assert all(sum(d.stats.cache_hits.values()) == 0 for d in kernels.KERNELS)
    assert sum(sum(d.stats.cache_misses.values()) for d in kernels.KERNELS) > 0  # compiled, in memory
    assert sorted(p.name for p in fresh_selinv.folder.iterdir()) == ["planted.nbi"]  # nothing written there either


def test_the_selinv_kernels_use_the_trusted_cache(fresh_selinv):
    """The kernels are kept in the checked folder (only the user can write what is there) and loaded back."""
    _slogdet_against_dense()
    kernels = sys.modules[SELINV_KERNELS]
    assert kernels.CACHE.directory == fresh_selinv.folder.resolve()
    files = list(fresh_selinv.folder.rglob("*.nbi"))
    assert files and all(stat.S_IMODE(p.stat().st_mode) & 0o022 == 0 for p in fresh_selinv.folder.rglob("*"))
    used = [d for d in kernels.KERNELS if d.signatures]
    for dispatcher in used:  # a new cache on the same folder finds every compiled signature on disk
        cache = numba_cache.disk_cache(dispatcher.py_func, kernels.CACHE.directory)
        for signature in dispatcher.signatures:
            assert cache.load_overload(signature, dispatcher.targetctx) is not None, dispatcher


@pytest.mark.parametrize("owner", ["you", pytest.param("another uid", marks=AS_ROOT)])
def test_the_selinv_kernels_load_a_planted_file_only_when_it_is_yours(fresh_selinv, owner):
    """Every index and first data file the kernels would read holds a payload. Control (yours): it runs — these
    are the files read. Another uid's: refused with a warning, never unpickled, and slogdet is right."""
    marker = fresh_selinv.folder.parent / "payload-ran"
    planted = _plant(fresh_selinv.before.KERNELS, fresh_selinv.folder, marker)  # the same file names as the new ones
    if owner == "you":
        _slogdet_against_dense()
        assert marker.exists()
        return
    for path in planted:
        os.chown(path, OTHER_UID, OTHER_UID)
    with pytest.warns(RuntimeWarning, match=f"selected inversion.*refused to load kernel cache file .*uid {OTHER_UID}"):
        _slogdet_against_dense()
    assert not marker.exists()


def test_listing_backends_and_importing_the_cache_imports_no_numba():
    """numba (and scipy) load on the first fused solve or slogdet only: not when backends are listed."""
    code = (
        "import sys, tsgu_core\n"
        "from tsgu_backends import numba_cache\n"
        "from tsgu_backends.torch_backend import fused_cpu\n"
        "from tsgu_backends.scipy_cupy_backend import selinv\n"
        "[entry.availability('cpu') for entry in tsgu_core.list_backends()]\n"
        "print(sorted(m for m in ('numba', 'scipy') if m in sys.modules))"
    )
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


# -- processes (each compiles the loops: tens of seconds) --------------------------------------------------------

_WORKER = """
import json, sys, threading, warnings
import torch
from tsgu_backends.torch_backend import krylov
from tsgu_backends.torch_backend.operator import CsrOperator
from tsgu_core.testing import poisson_2d

dtypes = [getattr(torch, name) for name in sys.argv[1].split(",")]
threads = int(sys.argv[2])
barrier = threading.Barrier(threads)
errors = []

def work(i):
    dtype = dtypes[i % len(dtypes)]
    A = poisson_2d(6, dtype=dtype)
    B = torch.randn(A.shape[0], 3, dtype=dtype, generator=torch.Generator().manual_seed(i))
    op = CsrOperator(A)
    barrier.wait()
    result = krylov.krylov_solve("cg", op.apply, None, B, x0=None, rtol=1e-5, atol=0.0, maxiter=500, fused=True)
    residual = (torch.linalg.vector_norm(B - A.to_dense() @ result.X, dim=0) / torch.linalg.vector_norm(B, dim=0))
    if not (result.converged and bool((residual <= 2e-5).all())):
        errors.append(f"thread {i}: residual {residual.tolist()}")

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
loops = sys.modules["tsgu_backends.torch_backend._fused_loops"]
print(json.dumps({
    "errors": errors,
    "failure": krylov._compile_failure,
    "warnings": [str(w.message) for w in caught if "fused" in str(w.message)],
    "hits": sum(sum(d.stats.cache_hits.values()) for d in loops.KERNELS.values()),
    "misses": sum(sum(d.stats.cache_misses.values()) for d in loops.KERNELS.values()),
}))
"""


def _worker(dtypes, threads, cache, wait=True):
    environment = dict(os.environ, OMP_NUM_THREADS="1", TSGU_KERNEL_CACHE=str(cache))
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-c", _WORKER, dtypes, str(threads)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return _report(process) if wait else process


def _report(process):
    out, err = process.communicate(timeout=900)
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_processes_and_threads_building_at_once_share_one_cache(tmp_path):
    """Two processes (4 threads each, float64 and float32) compile into one new cache folder at the same time —
    the two write the same index files — then a third process finds every loop there, both dtypes, correct."""
    cache = tmp_path / "kernels"
    first = _worker("float64", 4, cache, wait=False)
    second = _worker("float32", 4, cache, wait=False)
    for report in (_report(first), _report(second)):
        assert report["errors"] == [] and report["failure"] == {} and report["warnings"] == [], report
        assert report["misses"] == 6, report  # six loops compiled once for the process's dtype (or loaded: hits)
    third = _worker("float64,float32", 8, cache)
    assert third["errors"] == [] and third["failure"] == {} and third["warnings"] == [], third
    assert (third["hits"], third["misses"]) == (12, 0), third  # 6 loops × 2 dtypes, all from disk
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o022 == 0 for p in cache.rglob("*"))


@pytest.mark.slow
def test_a_process_never_runs_code_planted_in_a_0777_cache_folder(tmp_path):
    """Every file the loops would read is planted (a payload that makes a folder when unpickled), in a 0777
    folder: the process warns, compiles in memory, solves right, and the payload never runs."""
    cache = tmp_path / "kernels"
    marker = tmp_path / "payload-ran"
    _plant(fused_cpu.kernels_for(torch.float64)._dispatchers.values(), cache, marker)
    for path in (cache, *cache.rglob("*")):
        path.chmod(0o777)
    report = _worker("float64", 2, cache)
    assert report["errors"] == [] and report["failure"] == {}, report
    assert any("writable by others (mode 0777)" in message for message in report["warnings"]), report
    assert (report["hits"], report["misses"]) == (0, 6), report
    assert not marker.exists()
