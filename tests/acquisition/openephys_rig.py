"""An Open Ephys rig file for tests: the shipped example, pointed at a stand-in broadcaster on free ports."""

from __future__ import annotations

from closedloop.transport import free_tcp_ports
from pathlib import Path

EXAMPLE = Path(__file__).parents[2] / "rigs" / "example_openephys.yaml"
PORT_NAMES = ("stimulus", "spikes", "model", "model_events", "responses", "blocks")


def openephys_rig(tmp_path: Path, event_port: int, *, streams: str = "[]", extra: str = "") -> Path:
    """The example rig with the broadcaster on ``event_port``, our ports free, ``streams`` and more keys."""
    text = EXAMPLE.read_text().replace("tcp://127.0.0.1:5557", f"tcp://127.0.0.1:{event_port}")
    text = text.replace("  streams: []", f"  streams: {streams}")
    if extra:
        text = text.replace("  drop_unsorted: false", "  drop_unsorted: false\n" + extra)
    for name, port in zip(PORT_NAMES, free_tcp_ports(len(PORT_NAMES))):
        text = text.replace(f"    {name}: 56", f"    {name}: {port} #", 1)
    rig = tmp_path / "openephys_rig.yaml"
    rig.write_text(text)
    return rig
