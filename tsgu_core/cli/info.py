"""``tsgu info [BACKEND]`` and ``tsgu explain``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from tsgu_core.cli.common import CommandError, valid_methods

DEVICE_TYPES = ("cpu", "cuda")


def add_parser(commands: Any) -> None:
    info = commands.add_parser(
        "info",
        help="list backends, availability, methods with their options, and the device defaults",
        description="List every registered backend (or one): where it comes from, whether it can run on each "
        "device and why not, its methods with what each assumes of A, and each option's type, default and meaning.",
    )
    info.add_argument("backend", nargs="?", default=None, help="show only this backend")
    info.add_argument("--json", action="store_true", help="print everything as one JSON object")
    info.set_defaults(handler=run_info)
    which = commands.add_parser(
        "explain",
        help="say which backend and method solve() would use, and why the others were not chosen",
        description="Show which backend and method solve() would choose for a matrix on DEVICE, "
        "with every registered backend and its verdict. Given a Matrix Market file, explain for that matrix "
        "(its size, dtype and structure).",
    )
    which.add_argument("matrix", nargs="?", default=None, help="A, a Matrix Market (.mtx) file (optional)")
    which.add_argument("--device", default="cpu", help="device type of A (default cpu)")
    which.add_argument(
        "--assume",
        default="general",
        choices=("general", "symmetric", "spd"),
        help="what you tell solve() about A, as solve(..., assume=...) (default general)",
    )
    which.add_argument("--backend", default=None)
    which.add_argument("--method", default=None)
    which.add_argument("--operation", default="solve", choices=("solve", "triangular", "lstsq"))
    which.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "float64", "complex64", "complex128"),
        help="dtype of A (default float64, or the matrix file's: complex128 for a complex one); a complex one "
        "considers only methods that declare complex support",
    )
    which.set_defaults(handler=run_explain)


# --- options ----------------------------------------------------------------


def _type_name(kind: Any) -> str | None:
    """``int``, ``float | str``; ``None`` when any value is accepted."""
    if isinstance(kind, tuple):
        names = [_type_name(k) for k in kind]
        return None if None in names else " | ".join(str(name) for name in names)
    if kind is None or kind is object:
        return None
    return str(getattr(kind, "__name__", kind))


def _declared_type(declared: Any) -> str | None:
    """The core's own wording (``Option.type_name``) where it has one; ``None`` for any value."""
    name = getattr(declared, "type_name", None)
    if isinstance(name, str):
        return None if name.split(" | ")[0] == "any" else name
    return _type_name(getattr(declared, "type", object))


def option_record(name: str, declared: Any) -> dict[str, Any]:
    """One option as a plain record: a declared :class:`~tsgu_core.Option` or a plain one-line string."""
    if isinstance(declared, str):
        return {"name": name, "doc": declared, "type": None, "default": None, "choices": None, "minimum": None,
                "maximum": None}  # fmt: skip
    choices = getattr(declared, "choices", None)
    default = getattr(declared, "default", None)
    plain = (int, float, str, bool)
    return {
        "name": name,
        "doc": str(getattr(declared, "doc", "")),
        "type": _declared_type(declared),
        "default": default if default is None or isinstance(default, plain) else repr(default),
        "choices": None if choices is None else [c if isinstance(c, plain) else repr(c) for c in choices],
        "minimum": getattr(declared, "minimum", None),
        "maximum": getattr(declared, "maximum", None),
    }


def _format_option(record: Mapping[str, Any]) -> str:
    kind = record["type"] or ""
    if record["choices"]:
        kind = "{" + ", ".join(map(str, record["choices"])) + "}"
    if record["minimum"] is not None:
        kind += f" ≥ {record['minimum']:g}"
    if record.get("maximum") is not None:
        kind += f" ≤ {record['maximum']}"
    default = f" = {record['default']!r}" if record["default"] is not None else ""
    declared = kind + default
    name, doc = record["name"], record["doc"]
    return f"{name:<20} {declared:<24}  {doc}" if declared else f"{name:<20} {doc}"


def _common_options() -> dict[str, Any]:
    from tsgu_core.plugins.protocol import COMMON_ITERATIVE_OPTIONS

    return dict(COMMON_ITERATIVE_OPTIONS)


def _method_record(backend: Any, name: str, spec: Any) -> dict[str, Any]:
    common = _common_options()
    own = {option: declared for option, declared in spec.options.items() if option not in common}
    return {
        "name": name,
        "default": name == backend.default_method,
        "operation": spec.operation,
        "kind": spec.kind,
        "assumes": spec.assumes,
        "complex": bool(getattr(spec, "complex", False)),
        "selected_inversion": bool(getattr(spec, "selected_inversion", False)),
        "sampling": bool(getattr(spec, "sampling", False)),
        "summary": spec.summary,
        "common_options": list(common) if spec.kind == "iterative" else [],
        "options": [option_record(option, declared) for option, declared in own.items()],
    }


def _backend_record(entry: Any) -> dict[str, Any]:
    backend = entry.backend
    devices = {}
    for device in backend.device_types:
        availability = entry.availability(device)
        devices[device] = {
            "available": bool(availability),
            "reason": "" if availability else availability.reason,
            "install": None if availability else availability.install,
        }
    return {
        "name": entry.name,
        "distribution": entry.distribution,
        "version": entry.version,
        "plugin": entry.plugin,
        "priority": backend.priority,
        "complex_note": getattr(backend, "complex_note", None),
        "devices": devices,
        "methods": [_method_record(backend, name, spec) for name, spec in sorted(backend.methods.items())],
    }


# --- info -------------------------------------------------------------------


def run_info(args: argparse.Namespace) -> int:
    from tsgu_core.errors import TsguError
    from tsgu_core.plugins.registry import get_entry, list_backends, list_broken_plugins
    from tsgu_core.plugins.select import explain

    entries = [get_entry(args.backend)] if args.backend else list(list_backends())
    backends = [_backend_record(entry) for entry in entries]
    common = [option_record(name, declared) for name, declared in _common_options().items()]
    broken = [
        {"plugin": b.plugin, "distribution": b.distribution, "version": b.version, "error": b.error}
        for b in ([] if args.backend else list_broken_plugins())
    ]
    defaults: dict[str, Any] = {}
    if not args.backend:
        for device in DEVICE_TYPES:
            try:
                selection = explain(device)
                defaults[device] = {"backend": selection.backend, "method": selection.method}
            except TsguError as error:
                defaults[device] = {"backend": None, "method": None, "why": " ".join(str(error).split())}
    if args.json:
        report: dict[str, Any] = {
            "backends": backends,
            "common_iterative_options": common,
            "stochastic_estimates": _stochastic_record(),
            "broken_plugins": broken,
        }
        if not args.backend:
            report["defaults"] = defaults
        print(json.dumps(report, indent=2))
        return 0
    for record in backends:
        source = f"{record['distribution']} {record['version'] or ''}".strip() or f"plugin {record['plugin']}"
        print(f"{record['name']}  [{source}]  priority {record['priority']}")
        for device, state in record["devices"].items():
            text = "available" if state["available"] else f"unavailable: {state['reason']}"
            fix = f" (fix: {state['install']})" if state["install"] else ""
            print(f"  {device}: {text}{fix}")
        if record["complex_note"]:
            print(f"  complex: {record['complex_note']}")
        for method in record["methods"]:
            flags = " (default)" if method["default"] else ""
            flags += f" [{method['operation']}]" if method["operation"] != "solve" else ""
            flags += " [complex]" if method["complex"] else ""
            flags += " [slogdet, selected inverse]" if method["selected_inversion"] else ""
            flags += " [Gaussian sampling]" if method["sampling"] else ""
            summary = f" — {method['summary']}" if method["summary"] else ""
            print(f"  - {method['name']}{flags}: {method['kind']}, assumes {method['assumes']} A{summary}")
            if method["common_options"]:
                print(f"      {'common options':<20} {', '.join(method['common_options'])}")
            for option in method["options"]:
                print(f"      {_format_option(option)}")
    print("common options of every iterative method:")
    for option in common:
        print(f"  {_format_option(option)}")
    stochastic = _stochastic_record()
    print(f"estimates through any backend's solves (method={stochastic['method']!r}): {stochastic['functions']}")
    print(f"  options: {', '.join(stochastic['options'])}, and the solver's own")
    for record in broken:
        source = f" from {record['distribution']} {record['version']}" if record["distribution"] else ""
        print(f"{record['plugin']}  [failed to load{source}]: {record['error']}")
    if defaults:
        print("defaults:")
        for device, chosen in defaults.items():
            text = f"{chosen['backend']} / {chosen['method']}" if chosen["backend"] else f"none ({chosen['why']})"
            print(f"  {device}: {text}")
    return 0


def _stochastic_record() -> dict[str, Any]:
    """What ``method="stochastic"`` offers on every backend (:mod:`tsgu_core.api.stochastic`)."""
    from tsgu_core.api.stochastic import OPTIONS, STOCHASTIC

    return {
        "method": STOCHASTIC,
        "functions": "slogdet/logdet (SPD A), selected_inverse, diagonal_of_inverse — estimates with standard errors",
        "options": list(OPTIONS),
    }


# --- explain ----------------------------------------------------------------


def run_explain(args: argparse.Namespace) -> int:
    from tsgu_core.plugins.registry import list_backends
    from tsgu_core.plugins.select import explain

    device_type = args.device.split(":")[0]
    if not device_type:
        raise CommandError(f"--device {args.device!r} is not a device name")
    if args.method is not None and args.backend is None:
        valid_methods(device_type, args.method, args.operation)
    import torch

    target: Any = device_type
    if args.matrix is not None:  # its dtype, size and structure; the device stays --device's (no copy needed)
        A = _read_for_explain(args)
        target, dtype = (A if device_type == "cpu" else device_type), A.dtype
    else:
        dtype = getattr(torch, args.dtype or "float64")
    selection = explain(
        target, backend=args.backend, method=args.method, operation=args.operation, assume=args.assume, dtype=dtype
    )
    print(selection)
    seen = {name for name, _ in selection.considered}
    chosen = selection.entry.backend
    for entry in sorted(list_backends(), key=lambda e: (-e.backend.priority, e.name)):
        if entry.name in seen:
            continue
        backend = entry.backend
        if device_type not in backend.device_types:
            print(f"  {entry.name}: does not serve {device_type} (serves {', '.join(backend.device_types)})")
            continue
        if args.backend is not None:
            verdict = "not considered: a backend was requested by name"
        else:
            verdict = f"not reached: ranked after {selection.backend!r}"
            if args.operation == "solve":
                verdict += f" (priority {backend.priority} vs {chosen.priority})"
        offered = [
            n
            for n, spec in backend.methods.items()
            if spec.operation == args.operation and (spec.complex or not dtype.is_complex)
        ]
        if args.method is not None and args.method not in offered:
            verdict += f"; has no method {args.method!r}" + (f" for {dtype} A" if dtype.is_complex else "")
        availability = entry.availability(device_type)
        verdict += "; available" if availability else f"; unavailable: {availability.reason}"
        print(f"  {entry.name}: {verdict}")
    return 0


def _read_for_explain(args: argparse.Namespace) -> Any:
    """The matrix file as a CSR tensor (on the CPU), after printing its size and structure."""
    import scipy.io
    import torch

    from tsgu_core.cli.problems import read_matrix
    from tsgu_core.sparse.pattern import SparsePattern
    from tsgu_core.sparse.structure import SYMMETRY_FACTOR, asymmetry

    if args.dtype is None:
        field = scipy.io.mminfo(args.matrix)[4] if args.matrix.endswith(".mtx") else "real"
        args.dtype = "complex128" if field == "complex" else "float64"
    A = read_matrix(args.matrix, getattr(torch, args.dtype))
    n, m = A.shape
    tolerance = SYMMETRY_FACTOR * torch.finfo(A.dtype).eps
    symmetric = n == m and asymmetry(SparsePattern.of(A), A.values()) <= tolerance
    structure = "symmetric" if symmetric else "nonsymmetric" if n == m else "rectangular"
    print(f"matrix: {args.matrix} — {n}×{m}, {A._nnz()} stored entries, {args.dtype}, {structure}")
    if symmetric and args.assume == "general":
        print("  hint: A is symmetric; if it is also positive definite, --assume spd (solve(..., assume='spd'))")
    return A
