"""``tsgu info`` and ``tsgu explain``."""

from __future__ import annotations

import argparse
from typing import Any

from tsgu_core.errors import TsguError
from tsgu_core.registry import list_backends, list_broken_plugins
from tsgu_core.select import explain

DEVICE_TYPES = ("cpu", "cuda")


def add_parser(commands: Any) -> None:
    info = commands.add_parser("info", help="list backends, their availability, methods and the device defaults")
    info.set_defaults(handler=run_info)
    which = commands.add_parser("explain", help="say which backend and method solve() would use, and why")
    which.add_argument("--device", default="cpu", help="device of A (default cpu)")
    which.add_argument("--backend", default=None)
    which.add_argument("--method", default=None)
    which.add_argument("--operation", default="solve", choices=("solve", "triangular", "lstsq"))
    which.set_defaults(handler=run_explain)


def run_info(args: argparse.Namespace) -> int:
    for entry in list_backends():
        backend = entry.backend
        print(f"{entry.name}  [{entry.provenance}]  priority {backend.priority}")
        for device in backend.device_types:
            availability = entry.availability(device)
            state = "available" if availability else f"unavailable: {availability.reason}"
            fix = f" (fix: {availability.install})" if not availability and availability.install else ""
            print(f"  {device}: {state}{fix}")
        for name, spec in sorted(backend.methods.items()):
            default = " (default)" if name == backend.default_method else ""
            default += f" [{spec.operation}]" if spec.operation != "solve" else ""
            options = ", ".join(spec.accepted_options) or "no options"
            print(f"  - {name}{default}: {spec.kind}, assumes {spec.assumes} A; options: {options}")
    for broken in list_broken_plugins():
        source = f" from {broken.distribution} {broken.version}" if broken.distribution else ""
        print(f"{broken.plugin}  [failed to load{source}]: {broken.error}")
    print("defaults:")
    for device in DEVICE_TYPES:
        try:
            selection = explain(device)
            print(f"  {device}: {selection.backend} / {selection.method}")
        except TsguError as error:
            print(f"  {device}: none ({error})")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    print(explain(args.device, backend=args.backend, method=args.method, operation=args.operation))
    return 0
