"""What a run did, in a few lines: blocks by state, trials, problems, the last model.

Read from the runner's journal (``SESSION.runner.jsonl``) without changing it, so it
also describes a session that is still being written or was interrupted.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from closedloop.runner.journal import BlockRecord, journal_path, read_records
from closedloop.wording import counted


def session_records(session_path: str | Path) -> list[BlockRecord]:
    """Every record of the session's journal, in order (none when there is no journal yet)."""
    path = journal_path(session_path)
    return read_records(path) if path.exists() else []


@dataclass
class RunSummary:
    """Counts and the newest model of one session."""

    session: str
    blocks: int = 0
    trials: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    model_version: int = 0
    model_metrics: dict[str, float] = field(default_factory=dict)
    iterations: int = 0

    @classmethod
    def from_session(cls, session_path: str | Path) -> RunSummary:
        """Summarise the session at ``session_path`` from its journal."""
        records = session_records(session_path)
        summary = cls(
            session=str(session_path),
            blocks=len(records),
            trials=sum(record.n_trials for record in records),
            by_state=dict(Counter(record.state for record in records)),
            iterations=max((record.iteration for record in records), default=0),
        )
        for record in records:
            if record.state not in ("finished", "skipped"):
                summary.problems.append(
                    f"block {record.session_block} {record.kind}: {record.state}"
                    + (f" ({record.detail})" if record.detail else "")
                )
            if record.model_version > summary.model_version:
                summary.model_version, summary.model_metrics = record.model_version, dict(record.metrics)
        return summary

    def text(self) -> str:
        states = ", ".join(f"{count} {state}" for state, count in sorted(self.by_state.items()))
        lines = [
            f"session {self.session}: {self.blocks} blocks ({states or 'none'}), {self.trials} trials"
            + (f", {counted(self.iterations, 'loop iteration')}" if self.iterations else "")
        ]
        if self.model_version:
            r = self.model_metrics.get("r_mean", math.nan)
            ratio = self.model_metrics.get("r_over_rmax_mean", math.nan)
            lines.append(f"newest model v{self.model_version}: held-out r mean {r:.2f}, r/rmax {ratio:.2f}")
        lines.extend(f"  {problem}" for problem in self.problems)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "blocks": self.blocks,
            "trials": self.trials,
            "by_state": self.by_state,
            "iterations": self.iterations,
            "problems": self.problems,
            "model_version": self.model_version,
            "model_metrics": self.model_metrics,
        }
