"""Benchmark: what importing one module of closedloop loads (modules, subpackages, torch, time).

Each module is imported in a fresh interpreter (``python -X importtime``), so nothing is
shared between measurements.  The journal reader is what the monitor and the reports
import; the runner component is what ``closedloop serve runner`` imports.

Usage::

    python benchmarks/imports.py                         # the default modules, 3 repeats
    python benchmarks/imports.py closedloop.runner.journal closedloop.loop.assemble --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

DEFAULT = (
    "closedloop.runner.journal",
    "closedloop.reports.summary",
    "closedloop.runner.runner",
    "closedloop.loop.assemble",
    "closedloop.replay.pipeline",
)

_PROBE = """
import json, sys, time
started = time.perf_counter()
import {module}
seconds = time.perf_counter() - started
loaded = [m for m in sys.modules if m.startswith("closedloop")]
print(json.dumps({{"seconds": seconds, "modules": len(loaded),
                  "subpackages": sorted({{m.split(".")[1] for m in loaded if "." in m}}),
                  "torch": "torch" in sys.modules, "psychopy": "psychopy" in sys.modules}}))
"""


def measure(module: str, repeats: int) -> dict:
    """Median import time over ``repeats`` fresh interpreters, and what the import loaded."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", _PROBE.format(module=module)], capture_output=True, text=True, check=True
        ).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    return {**runs[-1], "seconds": statistics.median(r["seconds"] for r in runs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=list(DEFAULT), help="modules to import (default: a few)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh interpreters per module (median time)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    for module in args.modules:
        result = measure(module, args.repeats)
        print(
            f"{module:32s} {result['seconds']:6.2f} s  {result['modules']:3d} closedloop modules  "
            f"torch {'yes' if result['torch'] else 'no '}  subpackages: {', '.join(result['subpackages'])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
