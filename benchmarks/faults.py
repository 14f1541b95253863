"""Benchmark: the hostile-input corpus, and how every input fared.

Feeds every hostile input the fault tests use to the real components and counts the
outcomes per group:

- configs: the ``tests/configs/bad_*.yaml`` corpus and generated monsters (a 5 MB file,
  ``/dev/zero``, an alias bomb, 900 nested mappings…), each loaded and validated;
- configs (fuzzed): ``--fuzz`` seeded mutations of the shipped rigs and protocols (a key
  replaced by a hostile value, deleted or added, sometimes the text damaged); a valid
  mutation loading is fine, anything else must be our one-line ConfigError;
- array / presenter messages: hostile StimulusShown reports and BlockRequests sent over
  TCP to a live simulated array and a live headless presenter, each followed by a valid
  input that must still be served;
- archives: damaged session files and pvc-8 files, each read by the fitting loader and
  the replay planner.

Further groups are discovered: any ``tests/faults/*_corpus.py`` module that defines
``fault_cases(folder) -> list[Case]`` (see ``tests/faults/outcomes.py``) is run too.

Outcomes: clear error (our error type, one line, or a counted refusal), accepted (a
fuzzed input that is in fact valid), crash, hang, silently accepted (known bad, taken
without complaint).  The run exits 1 when any input crashed, hung or was silently
accepted.

Usage::

    python benchmarks/faults.py                  # ≈ 1 min on 2 CPU cores
    python benchmarks/faults.py --fuzz 2000 --json faults.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from faults.archive_corpus import archive_cases  # noqa: E402 - the corpora live under tests/
from faults.config_corpus import corpus_cases, fuzz_cases  # noqa: E402 - the corpora live under tests/
from faults.message_corpus import array_cases, presenter_cases  # noqa: E402 - the corpora live under tests/
from faults.outcomes import Case, Outcome  # noqa: E402 - the corpora live under tests/

COLUMNS = ("tried", "clear errors", "accepted (valid)", "crashes", "hangs", "silently accepted")
_KINDS = {
    "refused": "clear errors",
    "accepted": "accepted (valid)",
    "crash": "crashes",
    "hang": "hangs",
    "silently_accepted": "silently accepted",
}


def _run(cases: list[Case], results: list[tuple[Case, Outcome]]) -> None:
    for case in cases:
        results.append((case, case.run()))


def _live(make: Callable[[], tuple[Any, list[Case]]], results: list[tuple[Case, Outcome]]) -> None:
    harness, cases = make()
    with harness:
        _run(cases, results)


def _discovered(folder: Path) -> list[Case]:
    cases: list[Case] = []
    for path in sorted((ROOT / "tests" / "faults").glob("*_corpus.py")):
        module = importlib.import_module(f"faults.{path.stem}")
        make = getattr(module, "fault_cases", None)
        if callable(make):
            cases.extend(make(folder / path.stem))
    return cases


def table(results: list[tuple[Case, Outcome]]) -> tuple[list[str], dict[str, Counter]]:
    """Counts per group (and in total) and the lines of a markdown table."""
    groups: dict[str, Counter] = {}
    for case, outcome in results:
        for group in (case.group, "total"):
            counts = groups.setdefault(group, Counter())
            counts["tried"] += 1
            counts[_KINDS[outcome.kind]] += 1
    groups["total"] = groups.pop("total", Counter())
    lines = ["| inputs | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for group, counts in groups.items():
        name = f"**{group}**" if group == "total" else group
        lines.append(f"| {name} | " + " | ".join(str(counts[c]) for c in COLUMNS) + " |")
    return lines, groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz", type=int, default=400, help="fuzzed config files (default 400)")
    parser.add_argument("--seed", type=int, default=12, help="seed of the fuzzed configs")
    parser.add_argument("--json", type=Path, default=None, help="write every outcome here")
    args = parser.parse_args(argv)
    results: list[tuple[Case, Outcome]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="closedloop-faults-") as tmp:
        folder = Path(tmp)
        (folder / "configs").mkdir()
        (folder / "archives").mkdir()
        _run(corpus_cases(folder / "configs"), results)
        _run(fuzz_cases(folder / "configs", args.fuzz, args.seed), results)
        _live(array_cases, results)
        _live(presenter_cases, results)
        _run(archive_cases(folder / "archives"), results)
        _run(_discovered(folder), results)
    lines, groups = table(results)
    print("\n".join(lines))
    slowest = max(results, key=lambda item: item[1].seconds)
    print(
        f"\n{len(results)} inputs in {time.monotonic() - started:.0f} s; slowest: {slowest[0].group} / "
        f"{slowest[0].name} ({slowest[1].seconds:.2f} s)"
    )
    bad = [(case, outcome) for case, outcome in results if not outcome.clean]
    for case, outcome in bad:
        print(f"  {outcome.kind}: {case.group} / {case.name}: {outcome.detail[:300]}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "groups": {group: dict(counts) for group, counts in groups.items()},
                    "outcomes": [
                        {
                            "group": c.group,
                            "name": c.name,
                            "kind": o.kind,
                            "seconds": round(o.seconds, 4),
                            "detail": o.detail[:500],
                        }
                        for c, o in results
                    ],
                },
                indent=1,
            )
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
