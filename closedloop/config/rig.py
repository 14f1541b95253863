"""The rig file: display geometry, where the receptive fields are, acquisition, ports, device.

`load_rig` reads a rig YAML into a frozen `Rig`; every key is described in
``rigs/example_openephys.yaml``.  Geometry is checked when the file loads (the
aperture must fit on the screen and miss the photodiode patch) so a bad rig fails
before any hardware is touched.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from closedloop.config.brain import BrainSettings
from closedloop.config.schema import (
    ConfigSource,
    LoadedFromFile,
    Where,
    internal,
    load_settings_file,
    path_setting,
    setting,
)
from closedloop.config.session_info import SessionInfo

#: Largest seed: seeds are stored and used as unsigned 32-bit integers.
MAX_SEED = 2**32 - 1

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda|cuda:\d+")
#: The sync line of stimulus onsets when a rig does not name one: the simulated array's and the
#: simulated archives' photodiode line.
PHOTODIODE_LINE = 1
_TCP_ENDPOINT = re.compile(r"tcp://(?P<host>[^:/\s]+):(?P<port>\d+)")
# Addresses that all mean "this machine" when comparing a port clash.
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "0.0.0.0", "*", "::1"}


def check_device(where: Where, name: str, device: str) -> None:
    """Raise unless ``device`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    if not DEVICE_PATTERN.fullmatch(device):
        raise where.error(name, f"must be 'auto', 'cpu', 'cuda' or 'cuda:N' (N = GPU index), got {device!r}")


@dataclass(frozen=True)
class Photodiode:
    """A patch in a screen corner that flips with each stimulus, seen by a photodiode."""

    enabled: bool = True
    corner: Literal["top_left", "top_right", "bottom_left", "bottom_right"] = "bottom_left"
    size_px: int = setting(40, ge=1)


@dataclass(frozen=True)
class Display:
    """Monitor geometry and calibration.

    ``mean_luminance`` is a fraction of the display's range (0 = black, 1 = white);
    ``gamma`` is ``None`` when the display is already linearised.
    """

    width_px: int = setting(ge=1, le=32768)
    height_px: int = setting(ge=1, le=32768)
    width_cm: float = setting(gt=0, le=10000)
    height_cm: float = setting(gt=0, le=10000)
    distance_cm: float = setting(gt=0, le=10000)
    refresh_hz: float = setting(gt=0, le=2000)
    gamma: float | None = setting(gt=0, le=10)
    mean_luminance: float = setting(0.5, ge=0, le=1)
    fullscreen: bool = True
    screen: int = setting(0, ge=0, le=63)
    photodiode: Photodiode = field(default_factory=Photodiode)

    @property
    def cm_per_px(self) -> float:
        """Horizontal size of one pixel in cm."""
        return self.width_cm / self.width_px

    @property
    def pixels_per_degree(self) -> float:
        """Pixels per degree of visual angle at the screen centre.

        One pixel at the centre subtends ``2·atan(p / 2d)`` where ``p`` is its size
        and ``d`` the viewing distance.
        """
        degrees_per_pixel = math.degrees(2 * math.atan(self.cm_per_px / (2 * self.distance_cm)))
        return 1.0 / degrees_per_pixel

    @property
    def frame_ms(self) -> float:
        """Duration of one frame in milliseconds."""
        return 1000.0 / self.refresh_hz

    @property
    def half_width_deg(self) -> float:
        """Eccentricity of the left/right screen edge on the horizontal meridian."""
        return math.degrees(math.atan(self.width_cm / 2 / self.distance_cm))

    @property
    def half_height_deg(self) -> float:
        """Eccentricity of the top/bottom screen edge on the vertical meridian."""
        return math.degrees(math.atan(self.height_cm / 2 / self.distance_cm))

    def to_pixels(self, x_deg: float, y_deg: float) -> tuple[float, float]:
        """Screen position (column, row from the top-left) of a point given in degrees.

        Degrees are measured from the screen centre along each meridian, x to the right
        and y upward, using the exact ``d·tan(angle)`` projection onto the flat screen.
        """
        x_cm = self.distance_cm * math.tan(math.radians(x_deg))
        y_cm = self.distance_cm * math.tan(math.radians(y_deg))
        return (self.width_px / 2 + x_cm / self.cm_per_px, self.height_px / 2 - y_cm * self.height_px / self.height_cm)

    def check(self, where: Where) -> None:
        vertical_cm_per_px = self.height_cm / self.height_px
        if abs(vertical_cm_per_px / self.cm_per_px - 1) > 0.05:
            raise where.error(
                "height_cm",
                f"pixels are not square: {self.cm_per_px * 10:.3f} mm wide but {vertical_cm_per_px * 10:.3f} mm "
                "high; measure the visible image's width_cm and height_cm again",
            )
        if self.photodiode.size_px > min(self.width_px, self.height_px):
            raise where.error("photodiode.size_px", f"larger than the screen ({self.width_px}×{self.height_px} px)")


@dataclass(frozen=True)
class Stimulus:
    """Where stimuli appear: a circular aperture centred on the receptive fields.

    ``size_px`` is the resolution of the stimulus array (images are size_px × size_px),
    stretched to fill the aperture on screen.
    """

    centre_deg: tuple[float, float]
    aperture_diameter_deg: float = setting(gt=0, le=180)
    size_px: int = setting(66, ge=2, le=4096)


_OPENEPHYS_KEYS = (
    "event_endpoint",
    "sample_rate_hz",
    "photodiode_line",
    "clock_stream",
    "streams",
    "electrodes",
    "drop_unsorted",
)
#: A real recording system: how long to listen for units, and to wait for the first photodiode edge.
_REAL_RIG_KEYS = ("discover_units_s", "photodiode_timeout_s")
_KEYS_BY_KIND = {
    "openephys": _OPENEPHYS_KEYS + _REAL_RIG_KEYS,
    "lsl": ("spike_stream", "marker_stream", "photodiode_line", "resolve_timeout_s") + _REAL_RIG_KEYS,
    "sim": ("scenario", "brain", "seed", "speed"),
    "replay": ("archive", "speed"),
}


@dataclass(frozen=True)
class OpenEphysStream:
    """An Open Ephys stream besides the clock stream, and what to add to its times.

    ``offset_s`` converts the stream's ``sample_number / sample_rate`` to the clock
    stream's seconds; ``null`` refuses its events (two sample clocks are never mixed).
    """

    name: str
    offset_s: float | None = None


@dataclass(frozen=True)
class ElectrodeNumber:
    """A number for an electrode the GUI names other than ``Electrode/Stereotrode/Tetrode N``."""

    name: str
    number: int = setting(ge=0, le=9999)


@dataclass(frozen=True)
class Acquisition:
    """Where spikes and sync events come from.

    ``kind`` is ``sim`` (simulated array), ``openephys`` (the Open Ephys GUI's Event
    Broadcaster plugin) or ``replay`` (an archived recording).  ``speed`` is the playback
    rate for sim and replay: 1.0 is real time, 2.0 twice as fast, 0 as fast as possible.
    For openephys, ``photodiode_line`` is the TTL line as the GUI shows it (1 = the first,
    which the plugin sends as line 0); ``clock_stream``, ``streams``, ``electrodes`` and
    ``drop_unsorted`` are described in ``rigs/example_openephys.yaml``.  ``lsl`` (Lab
    Streaming Layer) reads the streams named ``spike_stream`` and ``marker_stream``
    (`closedloop.acquisition.lsl`).  A sim rig's neurons are ``brain``
    (`closedloop.config.brain`) or, without it, the population of ``scenario``.  Paths are
    relative to the rig file's folder (`closedloop.paths`).
    """

    kind: Literal["sim", "openephys", "replay", "lsl"]
    event_endpoint: str = "tcp://127.0.0.1:5557"
    sample_rate_hz: float = setting(30000.0, gt=0)
    photodiode_line: int | None = setting(None, ge=0)
    clock_stream: str | None = None
    streams: tuple[OpenEphysStream, ...] = ()
    electrodes: tuple[ElectrodeNumber, ...] = ()
    drop_unsorted: bool = False
    discover_units_s: float = setting(10.0, ge=0, le=3600)
    photodiode_timeout_s: float = setting(30.0, gt=0, le=3600)
    spike_stream: str = "closedloop-spikes"
    marker_stream: str = "closedloop-markers"
    resolve_timeout_s: float = setting(10.0, gt=0, le=600)
    scenario: str = path_setting("sim/default.yaml")
    brain: BrainSettings | None = None
    seed: int | None = setting(None, ge=0, le=MAX_SEED)
    speed: float = setting(1.0, ge=0, le=1000)
    archive: str | None = path_setting(None)

    @property
    def onset_line(self) -> int:
        """The sync line whose rising edges are stimulus onsets: ``photodiode_line``, else `PHOTODIODE_LINE`."""
        return PHOTODIODE_LINE if self.photodiode_line is None else int(self.photodiode_line)

    @property
    def event_port(self) -> tuple[str, int] | None:
        """(host, port) of a ``tcp://`` event endpoint, else ``None``."""
        match = _TCP_ENDPOINT.fullmatch(self.event_endpoint)
        return (match["host"], int(match["port"])) if match else None

    def check(self, where: Where) -> None:
        for key in dict.fromkeys(key for keys in _KEYS_BY_KIND.values() for key in keys):
            if where.has(key) and key not in _KEYS_BY_KIND[self.kind]:
                used_by = " or ".join(kind for kind, keys in _KEYS_BY_KIND.items() if key in keys)
                raise where.error(key, f"only used when kind is {used_by}, but kind is {self.kind}; remove it")
        if where.has("scenario") and where.has("brain"):
            raise where.error(
                "scenario",
                f"give either scenario or brain (line {where.line('brain')}), not both; "
                "a population brain takes its own scenario",
            )
        if self.kind not in ("openephys", "lsl"):
            return
        if self.photodiode_line is None:
            raise where.error(
                "photodiode_line",
                f"required when kind is {self.kind}: the TTL line the photodiode is "
                "on, as the recording system numbers it (1 = the first)",
            )
        if self.photodiode_line < 1:
            raise where.error(
                "photodiode_line",
                f"the GUI numbers TTL lines from 1, got {self.photodiode_line} "
                "(the Event Broadcaster sends the GUI's line 1 as 0: write 1 for it)",
            )
        if self.kind == "lsl":
            for key in ("spike_stream", "marker_stream"):
                if not getattr(self, key).strip():
                    raise where.error(key, "must be the LSL stream's name")
            return
        self._check_streams(where)
        port = self.event_port
        if port is None and not self.event_endpoint.startswith("ipc://"):
            raise where.error(
                "event_endpoint", f"must look like tcp://HOST:PORT or ipc://PATH, got {self.event_endpoint!r}"
            )
        if port is not None and not 1 <= port[1] <= 65535:
            raise where.error("event_endpoint", f"port must be 1..65535, got {port[1]}")

    def _check_streams(self, where: Where) -> None:
        names = [stream.name for stream in self.streams]
        if self.clock_stream is not None and self.clock_stream in names:
            raise where.error(
                f"streams[{names.index(self.clock_stream)}].name",
                f"{self.clock_stream!r} is the clock_stream; list only the other streams here",
            )
        for i, name in enumerate(names):
            if not name.strip():
                raise where.error(f"streams[{i}].name", "must be a stream name as the GUI shows it")
            if name in names[:i]:
                raise where.error(f"streams[{i}].name", f"stream {name!r} is listed twice")
        if len(names) > 89:
            raise where.error("streams", f"at most 89 streams besides the clock stream, got {len(names)}")
        electrodes = [e.name for e in self.electrodes]
        numbers = [e.number for e in self.electrodes]
        for i, (name, number) in enumerate(zip(electrodes, numbers)):
            if name in electrodes[:i]:
                raise where.error(f"electrodes[{i}].name", f"electrode {name!r} is listed twice")
            if number in numbers[:i]:
                raise where.error(f"electrodes[{i}].number", f"number {number} is given to two electrodes")


@dataclass(frozen=True)
class Ports:
    """TCP ports our components bind when run as separate processes.

    The defaults avoid Open Ephys's 5556/5557.
    """

    stimulus: int = setting(5600, ge=1, le=65535)
    spikes: int = setting(5601, ge=1, le=65535)
    model: int = setting(5602, ge=1, le=65535)
    model_events: int = setting(5603, ge=1, le=65535)
    responses: int = setting(5604, ge=1, le=65535)
    blocks: int = setting(5605, ge=1, le=65535)

    def named(self) -> dict[str, int]:
        """Every port by field name."""
        return {
            "stimulus": self.stimulus,
            "spikes": self.spikes,
            "model": self.model,
            "model_events": self.model_events,
            "responses": self.responses,
            "blocks": self.blocks,
        }

    def check(self, where: Where) -> None:
        seen: dict[int, str] = {}
        for name, port in self.named().items():
            if port in seen:
                first = where.field(seen[port])
                raise where.error(
                    name, f"port {port} is also used by {first} (line {where.line(seen[port])}); give each its own port"
                )
            seen[port] = name


@dataclass(frozen=True)
class Network:
    """Address our components bind to (loopback unless the lab needs otherwise), and socket security.

    ``security`` is ``curve`` (every socket authenticated and encrypted with the
    certificates in ``keys``, made by ``closedloop keys init RIG.yaml``), ``none``
    (plain ZeroMQ; loopback hosts only) or ``auto`` (curve unless the host is loopback).
    ``keys`` is relative to the rig file's folder.
    """

    host: str = "127.0.0.1"
    ports: Ports = field(default_factory=Ports)
    security: Literal["auto", "curve", "none"] = "auto"
    keys: str = "keys"

    @property
    def loopback(self) -> bool:
        """Whether ``host`` is this machine only (127.x.x.x, localhost, ::1)."""
        return self.host in ("localhost", "::1") or self.host.startswith("127.")

    @property
    def curve(self) -> bool:
        """Whether sockets use CURVE (``security: curve``, or ``auto`` on a non-loopback host)."""
        return self.security == "curve" or (self.security == "auto" and not self.loopback)

    def endpoint(self, name: str) -> str:
        """``tcp://host:port`` for one of the `Ports` by name."""
        return f"tcp://{self.host}:{self.ports.named()[name]}"

    def check(self, where: Where) -> None:
        if not self.host or "://" in self.host or any(c.isspace() for c in self.host):
            raise where.error("host", f"must be a host name or IP address such as 127.0.0.1, got {self.host!r}")
        if self.security == "none" and not self.loopback:
            raise where.error(
                "security",
                f"'none' leaves every socket on {self.host} open to the network; use "
                "'curve' and make the rig's keys with 'closedloop keys init RIG.yaml', or host 127.0.0.1",
            )
        if not self.keys or "\0" in self.keys:
            raise where.error("keys", "must name the folder of the rig's certificates, e.g. keys")


@dataclass(frozen=True)
class Compute:
    """Where the model runs: ``auto`` (a GPU when present), ``cpu``, ``cuda`` or ``cuda:N``."""

    device: str = "auto"

    def check(self, where: Where) -> None:
        check_device(where, "device", self.device)


@dataclass(frozen=True)
class Rig(LoadedFromFile):
    """One recording rig, as read from its YAML file.

    ``source`` keeps the file's path and text (session files store the text).
    """

    name: str
    display: Display
    stimulus: Stimulus
    acquisition: Acquisition
    network: Network = field(default_factory=Network)
    compute: Compute = field(default_factory=Compute)
    session: SessionInfo | None = None
    source: ConfigSource | None = internal()

    @property
    def pixels_per_degree(self) -> float:
        """Shortcut for ``display.pixels_per_degree``."""
        return self.display.pixels_per_degree

    def check(self, where: Where) -> None:
        self._check_aperture(where)
        self._check_stimulus_size(where)
        self._check_photodiode(where)
        self._check_event_port(where)

    def _check_aperture(self, where: Where) -> None:
        display, (x, y) = self.display, self.stimulus.centre_deg
        radius = self.stimulus.aperture_diameter_deg / 2
        half_w, half_h = display.half_width_deg, display.half_height_deg
        screen = f"the screen spans ±{half_w:.1f}° × ±{half_h:.1f}° at {display.distance_cm:g} cm"
        if radius > min(half_w, half_h):
            raise where.error(
                "stimulus.aperture_diameter_deg",
                f"aperture larger than the screen: {2 * radius:g}° across but {screen}; use a smaller aperture",
            )
        if abs(x) + radius > half_w or abs(y) + radius > half_h:
            raise where.error(
                "stimulus.centre_deg",
                f"the aperture ({2 * radius:g}° at ({x:g}, {y:g})°) reaches past the screen edge: {screen}; "
                "move the centre or shrink the aperture",
            )

    def _check_stimulus_size(self, where: Where) -> None:
        side = min(self.display.width_px, self.display.height_px)
        if self.stimulus.size_px > side:
            raise where.error(
                "stimulus.size_px",
                f"{self.stimulus.size_px} px is larger than the display ({self.display.width_px}×"
                f"{self.display.height_px} px); use at most {side}",
            )

    def _check_photodiode(self, where: Where) -> None:
        patch = self.display.photodiode
        if not patch.enabled:
            return
        display, (x, y) = self.display, self.stimulus.centre_deg
        radius = self.stimulus.aperture_diameter_deg / 2
        left, top = display.to_pixels(x - radius, y + radius)
        right, bottom = display.to_pixels(x + radius, y - radius)
        px0 = 0 if patch.corner.endswith("left") else display.width_px - patch.size_px
        py0 = 0 if patch.corner.startswith("top") else display.height_px - patch.size_px
        if left < px0 + patch.size_px and right > px0 and top < py0 + patch.size_px and bottom > py0:
            raise where.error(
                "display.photodiode.corner",
                f"the {patch.size_px}-px photodiode patch in the {patch.corner} corner overlaps the stimulus "
                "aperture; choose another corner or a smaller size_px",
            )

    def _check_event_port(self, where: Where) -> None:
        if self.acquisition.kind != "openephys" or self.acquisition.event_port is None:
            return
        host, port = self.acquisition.event_port
        same_host = host == self.network.host or {host, self.network.host} <= _LOCAL_HOSTS
        for name, ours in self.network.ports.named().items():
            if same_host and ours == port:
                raise where.error(
                    f"network.ports.{name}",
                    f"port {port} is also used by acquisition.event_endpoint "
                    f"(line {where.line('acquisition.event_endpoint')}); Open Ephys uses it, pick another port",
                )


def load_rig(path: str | Path) -> Rig:
    """Read and check a rig YAML file.

    Parameters
    ----------
    path
        The rig file.

    Returns
    -------
    Rig
        The rig, with its source text kept in ``rig.source``.

    Raises
    ------
    ConfigError
        If the file is missing, not valid YAML, or any setting is unknown, missing,
        of the wrong type or inconsistent (the message names the line and field).
    """
    return load_settings_file(Rig, path)
