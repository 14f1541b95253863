"""The ``session:`` section: who recorded what from whom, for the session's NWB file.

It may appear in a rig file (the lab, institution, usual experimenters), in a protocol
(the description of the experiment) and in a file given to ``closedloop export-nwb
--metadata META.yaml`` (the animal of the day); `merge` combines them, a later source
overriding an earlier one key by key.  Values follow the rules of the DANDI archive
(NWB best practice): species in Latin binomial form or as an NCBI taxonomy link, sex
one of M, F, U, O, age as an ISO 8601 duration (``P4Y``, ``P23W``, or a range
``P4Y/P6Y``), ids without slashes.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from closedloop.config.schema import ConfigSource, Where, build, setting
from closedloop.config.yaml_loader import load_yaml, read_text
from closedloop.errors import ConfigError

# ISO 8601 durations as NWB ages are written: P[nY][nM][nW][nD][T[nH][nM][nS]], at least one part.
_DURATION = re.compile(
    r"P(?!$)(\d+(\.\d+)?Y)?(\d+(\.\d+)?M)?(\d+(\.\d+)?W)?(\d+(\.\d+)?D)?"
    r"(T(?=\d)(\d+(\.\d+)?H)?(\d+(\.\d+)?M)?(\d+(\.\d+)?S)?)?"
)
_SPECIES = re.compile(r"[A-Z][a-z]+ [a-z]+( [a-z]+)?|https?://purl\.obolibrary\.org/obo/NCBITaxon_\d+")


@dataclass(frozen=True)
class Subject:
    """The animal: the fields DANDI requires (id, species, sex, age) and a few more."""

    subject_id: str | None = None
    species: str | None = None
    sex: Literal["M", "F", "U", "O"] | None = None
    age: str | None = None
    description: str | None = None
    strain: str | None = None
    genotype: str | None = None
    weight: str | None = None

    def check(self, where: Where) -> None:
        if self.subject_id is not None and ("/" in self.subject_id or not self.subject_id.strip()):
            raise where.error("subject_id", f"must be a non-empty id without '/', got {self.subject_id!r}")
        if self.species is not None and not _SPECIES.fullmatch(self.species):
            raise where.error(
                "species",
                f"write the Latin binomial (e.g. 'Macaca mulatta', 'Mus musculus') or an "
                f"NCBI taxonomy link, got {self.species!r}",
            )
        if self.age is not None and not _valid_age(self.age):
            raise where.error(
                "age",
                f"write an ISO 8601 duration such as P4Y (4 years) or P23W, or a range "
                f"P4Y/P6Y (P4Y/ for 'at least'), got {self.age!r}",
            )


@dataclass(frozen=True)
class SessionInfo:
    """Who, where and what, as NWB and DANDI want it (every key optional here)."""

    description: str | None = None
    experimenter: tuple[str, ...] | None = None
    institution: str | None = None
    lab: str | None = None
    keywords: tuple[str, ...] | None = None
    location: str | None = None
    subject: Subject | None = None

    def check(self, where: Where) -> None:
        for name in ("description", "institution", "lab", "location"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise where.error(name, "must not be empty; leave the key out instead")


@dataclass(frozen=True)
class MetadataFile:
    """A file given to ``export-nwb --metadata``: only a ``session:`` section."""

    session: SessionInfo = setting()


def _valid_age(age: str) -> bool:
    if _DURATION.fullmatch(age):
        return True
    low, slash, high = age.partition("/")
    return bool(slash) and bool(low or high) and all(not part or _DURATION.fullmatch(part) for part in (low, high))


def load_metadata(path: str | Path) -> SessionInfo:
    """Read a ``--metadata`` YAML file (a ``session:`` section), checked like a rig file.

    Raises
    ------
    ConfigError
        The file is missing, not YAML, or a key is unknown or invalid (file, line, field).
    """
    text = read_text(path)
    source = ConfigSource(str(path), text, load_yaml(path, text))
    return build(MetadataFile, source.root, Where(source)).session


def section_in_text(text: str, where: str) -> SessionInfo | None:
    """The ``session:`` section of a stored rig or protocol text (None if it has none).

    Raises
    ------
    ConfigError
        The section is invalid; ``where`` names the text (e.g. "rig stored in S.h5").
    """
    if not text.strip():
        return None
    try:
        root = load_yaml(where, text)
    except ConfigError:
        return None  # an unreadable stored text has no section to offer; the text itself is still exported
    node = root.value.get("session")
    if node is None:
        return None
    source = ConfigSource(where, text, root)
    return build(SessionInfo, node, Where(source, "session"))


def merge(*sections: SessionInfo | None) -> SessionInfo:
    """One section from several, later ones overriding earlier ones key by key (subject too)."""
    merged = SessionInfo()
    for section in sections:
        if section is None:
            continue
        updates = {
            f.name: getattr(section, f.name)
            for f in dataclasses.fields(section)
            if getattr(section, f.name) is not None and f.name != "subject"
        }
        subject = merged.subject
        if section.subject is not None:
            base = subject or Subject()
            subject = dataclasses.replace(
                base,
                **{
                    f.name: getattr(section.subject, f.name)
                    for f in dataclasses.fields(Subject)
                    if getattr(section.subject, f.name) is not None
                },
            )
        merged = dataclasses.replace(merged, subject=subject, **updates)
    return merged
