"""Run every ``python`` code block of the given Markdown pages, in order, one namespace per page.

Usage: ``python docs/check_examples.py docs/tutorials.md docs/troubleshooting.md ...``
(default: every page under docs/). A block whose first line is ``# not run: <reason>`` is
skipped (e.g. it needs CUDA). Exits non-zero, naming the page and the block's first line, when a
block raises. ``print`` output is shown, so the comments next to it can be compared by eye.
"""

from __future__ import annotations

import re
import sys
import textwrap
import time
import traceback
from pathlib import Path

BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.S | re.M)


def run_page(path: Path) -> int:
    """Run the page's blocks; return the number that failed."""
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    failed = 0
    for number, match in enumerate(BLOCK.finditer(path.read_text(encoding="utf-8")), 1):
        code = textwrap.dedent(match.group(2))
        line = path.read_text(encoding="utf-8")[: match.start()].count("\n") + 1
        if code.startswith("# not run"):
            print(f"--- {path}:{line} block {number}: skipped ({code.splitlines()[0]})")
            continue
        print(f"--- {path}:{line} block {number}")
        start = time.perf_counter()
        try:
            exec(compile(code, f"{path}:{line}", "exec"), namespace)
        except Exception:
            failed += 1
            traceback.print_exc()
        print(f"    ({time.perf_counter() - start:.1f} s)")
    return failed


def main(argv: list[str]) -> int:
    pages = [Path(arg) for arg in argv] or sorted(Path(__file__).parent.glob("*.md"))
    failures = sum(run_page(page) for page in pages)
    print(f"{failures} block(s) failed" if failures else "all blocks ran")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
