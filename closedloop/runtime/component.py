"""The component lifecycle every part of the loop follows (docs/architecture.md).

A component is constructed with plain, picklable arguments; it opens sockets and other
resources in `Component.setup` (which runs in the thread or process that will run it),
does one short unit of work per `Component.step`, and releases everything in
`Component.teardown`.  The runtime owns the loop, heartbeats and shutdown.
"""

from __future__ import annotations


class Component:
    """Base class: override `setup`, `step` and `teardown`.

    Parameters
    ----------
    name
        Unique name, used in logs, heartbeats and error reports.
    heartbeat_interval_s
        How often the runtime reports that this component is alive.

    Attributes
    ----------
    activity
        What the component is busy with now, in words ("fitting model v1, epoch
        120/300"); empty when idle.  The supervisor names it when a heartbeat is late.

    Notes
    -----
    `step` should return within a fraction of a second (poll sockets with a short
    timeout) so that a shutdown request is seen promptly.  Return ``False`` when the
    component has nothing more to do; ``None`` or ``True`` to be called again.
    `teardown` runs whenever `setup` was called, even if setup failed part-way, so it
    must cope with resources that were never opened.
    """

    def __init__(self, name: str, *, heartbeat_interval_s: float = 1.0):
        if not name or not isinstance(name, str):
            raise ValueError("a component needs a non-empty name")
        if heartbeat_interval_s <= 0:
            raise ValueError(f"{name}: heartbeat_interval_s must be positive, got {heartbeat_interval_s}")
        self.name = name
        self.heartbeat_interval_s = heartbeat_interval_s
        self.activity = ""

    def setup(self) -> None:
        """Open resources (sockets, files, models)."""

    def step(self) -> bool | None:
        """Do one unit of work; return ``False`` when finished."""
        raise NotImplementedError(f"{type(self).__name__}.step")

    def teardown(self) -> None:
        """Release resources; called once, in reverse start order at shutdown."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
