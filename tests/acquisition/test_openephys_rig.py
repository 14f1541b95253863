"""The acquisition section of a rig file: Open Ephys and LSL keys, each error naming file, line and field."""

from __future__ import annotations

import pytest

from closedloop.config import load_rig
from closedloop.errors import ConfigError

from .openephys_rig import EXAMPLE


def _load(tmp_path, old: str, new: str):
    text = EXAMPLE.read_text()
    assert old in text
    path = tmp_path / "rig.yaml"
    path.write_text(text.replace(old, new))
    return load_rig(path)


def test_the_shipped_rigs_load_with_their_documented_defaults():
    acquisition = load_rig(EXAMPLE).acquisition
    assert (acquisition.photodiode_line, acquisition.clock_stream, acquisition.streams) == (1, None, ())
    assert (acquisition.drop_unsorted, acquisition.discover_units_s) == (False, 10)
    assert acquisition.photodiode_timeout_s == 30
    lsl = load_rig(EXAMPLE.with_name("example_lsl.yaml")).acquisition
    assert (lsl.kind, lsl.spike_stream, lsl.marker_stream) == ("lsl", "closedloop-spikes", "closedloop-markers")


def test_streams_and_electrodes_are_read(tmp_path):
    text = EXAMPLE.read_text().replace("  streams: []", '  streams: [{name: "Probe B", offset_s: -1.5}, {name: LFP}]')
    text = text.replace("  electrodes: []", "  electrodes: [{name: left shank, number: 7}]")
    path = tmp_path / "rig.yaml"
    path.write_text(text.replace("  clock_stream: null", "  clock_stream: Rhythm Data"))
    acquisition = load_rig(path).acquisition
    assert [(s.name, s.offset_s) for s in acquisition.streams] == [("Probe B", -1.5), ("LFP", None)]
    assert acquisition.clock_stream == "Rhythm Data" and acquisition.electrodes[0].number == 7


@pytest.mark.parametrize(
    "old, new, field, message",
    [
        ("photodiode_line: 1 ", "photodiode_line: 0 ", "acquisition.photodiode_line", "numbers TTL lines from 1"),
        ("  streams: []", "  streams: [{name: A}, {name: A}]", "acquisition.streams[1].name", "listed twice"),
        ("  streams: []", "  streams: [{name: A, offset_s: .nan}]", "acquisition.streams[0].offset_s", "finite"),
        ("  streams: []", "  streams: [{name: A, offest_s: 1}]", "acquisition.streams[0].offest_s", "did you mean"),
        (
            "  clock_stream: null",
            "  clock_stream: A\n  streams: [{name: A}]",
            "acquisition.streams[0].name",
            "is the clock_stream",
        ),
        (
            "  electrodes: []",
            "  electrodes: [{name: a, number: 1}, {name: b, number: 1}]",
            "acquisition.electrodes[1].number",
            "given to two electrodes",
        ),
        ("  electrodes: []", "  electrodes: [{name: a, number: 10000}]", "acquisition.electrodes[0].number", "<= 9999"),
        ("  drop_unsorted: false", "  drop_unsorted: yes", "acquisition.drop_unsorted", "true or false"),
        ("  discover_units_s: 10", "  discover_units_s: -1", "acquisition.discover_units_s", ">= 0"),
        ("  photodiode_timeout_s: 30", "  photodiode_timeout_s: 0", "acquisition.photodiode_timeout_s", "> 0"),
        (
            "  drop_unsorted: false",
            "  drop_unsorted: false\n  spike_stream: x",
            "acquisition.spike_stream",
            "only used when kind is lsl",
        ),
    ],
)
def test_bad_acquisition_settings_name_the_line_and_field(tmp_path, old, new, field, message):
    if new.startswith("  clock_stream: A"):  # one key per line: drop the example's own streams line
        text_old = "  streams: []"
        path = tmp_path / "rig.yaml"
        path.write_text(EXAMPLE.read_text().replace(text_old, "").replace(old, new))
        with pytest.raises(ConfigError) as error:
            load_rig(path)
    else:
        with pytest.raises(ConfigError) as error:
            _load(tmp_path, old, new)
    text = str(error.value)
    assert field in text and message in text and "rig.yaml:" in text
