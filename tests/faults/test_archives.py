"""Damaged archives are refused with one clear line naming the file; the CLI exits 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedloop.cli import main

from .archive_corpus import (
    READERS,
    UNUSED,
    attempt,
    base_archives,
    damaged_archives,
    damaged_session,
)
from .config_corpus import ROOT

PROTOCOL = """\
name: damaged
seed: 1
timing: {stimulus_ms: 100, blank_ms: 200}
images: {n: 20}
fit: {architecture: linear, max_epochs: 1, patience: 1}
blocks:
  - {kind: natural, images: all, repeats: 2}
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("damaged")


@pytest.fixture(scope="module")
def damaged(folder: Path) -> dict[str, Path]:
    return damaged_archives(folder)


def test_every_damaged_archive_is_refused_by_every_reader(damaged: dict[str, Path]) -> None:
    outcomes = {
        f"{name} ({reader_name})": attempt(reader, path)
        for name, path in damaged.items()
        for reader_name, reader in READERS.items()
        if name not in UNUSED[reader_name]
    }
    assert {name: (o.kind, o.detail) for name, o in outcomes.items() if o.kind != "refused"} == {}
    assert len(outcomes) >= 70


def test_the_intact_archives_still_read(folder: Path) -> None:
    for path in base_archives(folder).values():
        for reader in READERS.values():
            assert attempt(reader, path).kind == "silently_accepted"  # i.e. read without complaint


@pytest.mark.parametrize(
    "damage", ["trial points at stimulus 999999", "last block's trial_stop is 1e9", "NaN pixels", "spike time NaN"]
)
@pytest.mark.parametrize("command", ["replay", "export-nwb"])
def test_the_cli_refuses_a_damaged_session_with_exit_2(folder: Path, damage: str, command: str, capsys) -> None:
    path = damaged_session(base_archives(folder)["session"], folder, damage)
    if command == "replay":
        protocol = folder / "protocol.yaml"
        protocol.write_text(PROTOCOL)
        argv = [
            "replay",
            str(path),
            "--protocol",
            str(protocol),
            "--rig",
            str(ROOT / "rigs" / "sim.yaml"),
            "--no-offline",
        ]
    else:
        argv = ["export-nwb", str(path), str(folder / f"{abs(hash(damage))}.nwb")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "damaged" in err, err


def test_a_refresh_checks_only_the_new_rows_and_names_the_right_one(folder: Path, tmp_path: Path) -> None:
    import shutil

    import h5py

    from closedloop.data.session_checks import check_committed
    from closedloop.data.session_format import committed_lengths
    from closedloop.errors import DataFileError

    path = tmp_path / "s.h5"
    shutil.copyfile(base_archives(folder)["session"], path)
    with h5py.File(path, "r+") as file:
        file["blocks/trial_start"][2] += 1
        file["trials/stimulus_id"][100] = 10**6
    with h5py.File(path, "r") as file:
        lengths = committed_lengths(file)
        check_committed(file, lengths, path, since={"blocks": 3, "trials": 101})  # both already seen
        with pytest.raises(DataFileError, match="block row 2 covers trials"):
            check_committed(file, lengths, path, since={"blocks": 2, "trials": 101})
        with pytest.raises(DataFileError, match="trial 100 refers to stimulus 1000000"):
            check_committed(file, lengths, path, since={"blocks": 3, "trials": 60})


@pytest.mark.timeout(120)
def test_yaml_stored_in_a_session_is_parsed_within_bounds(folder: Path, tmp_path: Path, capsys) -> None:
    import shutil

    import h5py

    path = tmp_path / "bomb.h5"
    shutil.copyfile(base_archives(folder)["session"], path)
    bomb = (ROOT / "tests" / "configs" / "bad_alias_bomb.yaml").read_text()
    with h5py.File(path, "r+") as file:
        file.attrs["rig_yaml"] = bomb
        file.attrs["protocol_yaml"] = bomb
    # The stored text is exported verbatim; only optional facts are looked up in it.
    assert main(["export-nwb", str(path), str(tmp_path / "bomb.nwb")]) in (0, 2)
    assert "Traceback" not in capsys.readouterr().err
