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

from closedloop.config.schema import ConfigSource, LoadedFromFile, Where, internal, load_settings_file, setting

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

    width_px: int = setting(ge=1)
    height_px: int = setting(ge=1)
    width_cm: float = setting(gt=0)
    height_cm: float = setting(gt=0)
    distance_cm: float = setting(gt=0)
    refresh_hz: float = setting(gt=0, le=2000)
    gamma: float | None = setting(gt=0, le=10)
    mean_luminance: float = setting(0.5, ge=0, le=1)
    fullscreen: bool = True
    screen: int = setting(0, ge=0)
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
    aperture_diameter_deg: float = setting(gt=0)
    size_px: int = setting(66, ge=2)


_KEYS_BY_KIND = {
    "openephys": ("event_endpoint", "sample_rate_hz", "photodiode_line"),
    "sim": ("scenario", "seed", "speed"),
    "replay": ("archive", "speed"),
}


@dataclass(frozen=True)
class Acquisition:
    """Where spikes and sync events come from.

    ``kind`` is ``sim`` (simulated array), ``openephys`` (Open Ephys ZMQ plugin) or
    ``replay`` (an archived recording).  ``speed`` is the playback rate for sim and
    replay: 1.0 is real time, 2.0 twice as fast, 0 as fast as possible.
    """

    kind: Literal["sim", "openephys", "replay"]
    event_endpoint: str = "tcp://127.0.0.1:5557"
    sample_rate_hz: float = setting(30000.0, gt=0)
    photodiode_line: int | None = setting(None, ge=0)
    scenario: str = "sim/default.yaml"
    seed: int | None = None
    speed: float = setting(1.0, ge=0)
    archive: str | None = None

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
        if self.kind != "openephys":
            return
        if self.photodiode_line is None:
            raise where.error("photodiode_line", "required when kind is openephys: the TTL line the photodiode is on")
        port = self.event_port
        if port is None and not self.event_endpoint.startswith("ipc://"):
            raise where.error(
                "event_endpoint", f"must look like tcp://HOST:PORT or ipc://PATH, got {self.event_endpoint!r}"
            )
        if port is not None and not 1 <= port[1] <= 65535:
            raise where.error("event_endpoint", f"port must be 1..65535, got {port[1]}")


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
            raise where.error("security", f"'none' leaves every socket on {self.host} open to the network; use "
                              "'curve' and make the rig's keys with 'closedloop keys init RIG.yaml', or host 127.0.0.1")
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
    source: ConfigSource | None = internal()

    @property
    def pixels_per_degree(self) -> float:
        """Shortcut for ``display.pixels_per_degree``."""
        return self.display.pixels_per_degree

    def check(self, where: Where) -> None:
        self._check_aperture(where)
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
