"""The YAML loader and the generic schema layer, on small settings classes written here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from closedloop.config.schema import ConfigSource, Where, build, setting
from closedloop.config.yaml_loader import load_yaml
from closedloop.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    rate: float = setting(ge=0)
    label: str = "x"


@dataclass(frozen=True, kw_only=True)
class Circle:
    kind: Literal["circle"] = "circle"
    radius: float = setting(gt=0)


@dataclass(frozen=True, kw_only=True)
class Square:
    kind: Literal["square"] = "square"
    side: float = setting(gt=0)

    def check(self, where: Where) -> None:
        if self.side > 10:
            raise where.error("side", "too big for the test")


@dataclass(frozen=True)
class Settings:
    count: int = setting(ge=1, le=10)
    flag: bool = False
    name: str = "default"
    mode: Literal["a", "b"] = "a"
    pair: tuple[float, float] = (0.0, 1.0)
    values: list[int] = field(default_factory=list)
    optional: float | None = setting(None, gt=0)
    size: int | Literal["all"] = "all"
    inner: Inner = field(default_factory=lambda: Inner(rate=1.0))
    shapes: tuple[Circle | Square, ...] = ()


def _build(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    root = load_yaml(path)
    return build(Settings, root, Where(ConfigSource(str(path), text, root)))


def _error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        _build(tmp_path, text)
    return caught.value


def test_defaults_fill_and_types_convert(tmp_path: Path) -> None:
    settings = _build(tmp_path, "count: 3\npair: [1, 2.5]\nvalues: [4, 5]\noptional: 1e-3\nname: 2024\n")
    assert settings.count == 3 and settings.flag is False and settings.mode == "a"
    assert settings.pair == (1.0, 2.5) and isinstance(settings.pair[0], float)
    assert settings.values == [4, 5]
    assert settings.optional == pytest.approx(0.001)
    assert settings.name == "2024"  # unquoted numbers are text as written
    assert settings.inner == Inner(rate=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.count = 4  # type: ignore[misc]


def test_null_union_and_literal_union(tmp_path: Path) -> None:
    settings = _build(tmp_path, "count: 1\noptional: null\nsize: 7\n")
    assert settings.optional is None and settings.size == 7
    assert _build(tmp_path, "count: 1\nsize: all\n").size == "all"
    error = _error(tmp_path, "count: 1\nsize: some\n")
    assert "size: expected an integer or 'all', got text 'some'" in str(error)


@pytest.mark.parametrize(
    ("text", "fragment", "line"),
    [
        ("count: 1\nflag: 1\n", "flag: expected true or false, got integer 1", 2),
        ("count: 1\nflag: 'true'\n", "flag: expected true or false, got text 'true'", 2),
        ("count: 1\nflag: off\n", "flag: write true or false, not 'off'", 2),
        ("count: true\n", "count: expected an integer, got boolean 'true'", 1),
        ("count: 2.0\n", "count: expected an integer, got number 2.0", 1),
        ("count: 0\n", "count: must be >= 1, got 0", 1),
        ("count: 11\n", "count: must be <= 10, got 11", 1),
        ("count: 1\noptional: -1\n", "optional: must be > 0, got -1", 2),
        ("count: 1\noptional: .nan\n", "optional: must be a finite number", 2),
        ("count: 1\npair: [1, 2, 3]\n", "pair: expected a list of 2 values [a number, a number], got 3 values", 2),
        ("count: 1\npair: [1, x]\n", "pair[1]: expected a number, got text 'x'", 2),
        ("count: 1\nvalues: 3\n", "values: expected a list, got integer 3", 2),
        ("count: 1\nmode: c\n", "mode: must be one of 'a', 'b', got text 'c'", 2),
        ("count: 1\nname: null\n", "name: expected text, got null", 2),
        ("count: 1\ninner: 3\n", "inner: expected a mapping of settings (key: value), got integer 3", 2),
        ("count: 1\ninner:\n  label: y\n", "inner.rate: missing required key 'rate' under 'inner'", 2),
        ("count: 1\ninner:\n  rate: 1\n  rates: 2\n", "inner.rates: unknown key 'rates'; did you mean 'rate'?", 4),
        ("count: 1\nzzz: 2\n", "zzz: unknown key 'zzz'; allowed keys: count, flag, name, mode,", 2),
        ("cuont: 1\n", "unknown key 'cuont'; did you mean 'count'? Allowed keys: count, flag,", 1),
        ("flag: false\n", "count: missing required key 'count'", 1),
        ("count: 1\nshapes:\n  - kind: circle\n    radius: 1\n  - side: 2\n", "shapes[1]: missing required key", 5),
        (
            "count: 1\nshapes:\n  - kind: squares\n",
            "shapes[0].kind: must be one of circle, square, got text 'squares'; did you mean 'square'?",
            3,
        ),
        ("count: 1\nshapes:\n  - kind: circle\n  - kind: square\n", "shapes[0].radius: missing required", 3),
        ("count: 1\nshapes:\n  - kind: square\n    side: 11\n", "shapes[0].side: too big for the test", 4),
        ("count: 1\nshapes:\n  - kind: circle\n    radius: 1\n    side: 2\n", "shapes[0].side: unknown key 'side'", 5),
    ],
)
def test_errors_name_field_and_line(tmp_path: Path, text: str, fragment: str, line: int) -> None:
    error = _error(tmp_path, text)
    assert fragment in str(error)
    assert error.line == line
    assert str(error).startswith(f"{tmp_path / 'settings.yaml'}:{line}: ")


def test_tagged_union_builds_the_right_class(tmp_path: Path) -> None:
    settings = _build(tmp_path, "count: 1\nshapes:\n  - {kind: circle, radius: 2}\n  - kind: square\n    side: 3\n")
    assert settings.shapes == (Circle(radius=2.0), Square(side=3.0))


def test_line_of_reaches_into_lists_and_falls_back_to_the_parent(tmp_path: Path) -> None:
    text = "a:\n  b:\n    - x: 1\n    - x: 2\n      y: 3\n"
    path = tmp_path / "lines.yaml"
    path.write_text(text)
    source = ConfigSource(str(path), text, load_yaml(path))
    assert source.line_of("a.b[1].y") == 5
    assert source.line_of("a.b[1].missing") == 4
    assert source.line_of("a.b[9]") == 2
    assert source.line_of("a") == 1
    assert Where(source, "a.b[0]").has("x") and not Where(source, "a.b[0]").has("y")


@pytest.mark.parametrize(
    ("text", "fragment", "line"),
    [
        ("a: 1\na: 2\n", "a: duplicate key (first defined on line 1, again on line 2)", 2),
        ("a:\n  b: 1\n  c: {d: 1, d: 2}\n", "d: duplicate key (first defined on line 3, again on line 3)", 3),
        ("a: 1\n---\nb: 2\n", "YAML syntax error", 2),
        ("a:\t1\n", "tab character where YAML expects spaces", 1),
        ("a: !custom 1\n", "cannot read this value", 1),
        ("[1, 2]: x\n", "a key must be a single word", 1),
        ("just text\n", "the top level must be a mapping of settings (key: value lines), found text 'just text'", 1),
        ("", "the file is empty", 1),
        ("a: &x [1, *x]\n", "an alias (*name) refers to a value that contains it", 1),
        ("base: &b {x: 1}\nc:\n  <<: *b\n", "YAML merge keys (<<) are not supported", 3),
    ],
)
def test_loader_errors(tmp_path: Path, text: str, fragment: str, line: int) -> None:
    path = tmp_path / "file.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_yaml(path)
    assert fragment in str(caught.value)
    assert caught.value.line == line


def test_loader_rejects_binary_and_folders(tmp_path: Path) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_yaml(binary)
    with pytest.raises(ConfigError, match="is a folder"):
        load_yaml(tmp_path)


def test_keys_keep_their_spelling_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("on: 1\n\nno:\n  - yes\n")
    root = load_yaml(path)
    assert list(root.value) == ["on", "no"]  # YAML 1.1 would have made these booleans
    assert root.key_lines == {"on": 1, "no": 3}
    item = root.value["no"].value[0]
    assert (item.value, item.raw, item.line) == (True, "yes", 4)
