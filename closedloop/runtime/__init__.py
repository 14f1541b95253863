"""Component lifecycle, the supervisor that runs components, and clocks (docs/architecture.md)."""

from __future__ import annotations

from closedloop.runtime.clocks import Deadline, Pacer, elapsed_s, now_ns, ns_to_s, s_to_ns
from closedloop.runtime.component import Component
from closedloop.runtime.supervisor import ComponentState, Supervisor, SupervisorReport

__all__ = [
    "Component",
    "ComponentState",
    "Deadline",
    "Pacer",
    "Supervisor",
    "SupervisorReport",
    "elapsed_s",
    "now_ns",
    "ns_to_s",
    "s_to_ns",
]
