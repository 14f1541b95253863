"""Read a YAML file into a tree of nodes that remember their line numbers.

PyYAML's ``safe_load`` forgets where each value came from and silently keeps the
last of two duplicate keys.  Configuration errors must name the file and line, so
this module composes PyYAML's node graph and turns it into `YamlNode` objects that
carry a 1-based line for every value and every mapping key.

A settings file comes from outside, so reading it is bounded before anything is
built: at most `MAX_FILE_BYTES` are read (``/dev/zero`` or a log file given by
mistake is refused at once), nesting deeper than `MAX_DEPTH` is refused while
composing, and the size aliases (``*name``) would expand to is computed on the node
graph, without expanding it, so an alias bomb is refused in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from closedloop.errors import ConfigError

#: Largest settings file read, in bytes; shipped rigs and protocols are 1-4 KB.
MAX_FILE_BYTES = 64 * 1024
#: Deepest nesting of mappings and lists (shipped files use 4 levels).
MAX_DEPTH = 32
#: Most values a file may hold once aliases are expanded (shipped files hold ~100).
MAX_VALUES = 20_000
#: Longest text shown from a value in an error message.
_SHOWN_CHARS = 40

# Type names a user understands, for "expected ..., got ..." messages.
_KIND_NAMES = {"mapping": "a mapping (key: value)", "sequence": "a list", "scalar": "a single value"}


@dataclass
class YamlNode:
    """One value of a YAML document and where it is.

    Attributes
    ----------
    kind
        ``"mapping"``, ``"sequence"`` or ``"scalar"``.
    value
        ``dict[str, YamlNode]`` for a mapping, ``list[YamlNode]`` for a sequence, and
        the value PyYAML resolved (int, float, bool, str or None) for a scalar.
    line
        1-based line where the value starts.
    raw
        For scalars, the text as written (without quotes).
    plain
        For scalars, True when the value was written without quotes.
    key_lines
        For mappings, the 1-based line of each key.
    """

    kind: str
    value: Any
    line: int
    raw: str = ""
    plain: bool = True
    key_lines: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """Short description of what the value is, for error messages."""
        if self.kind != "scalar":
            return _KIND_NAMES[self.kind]
        value, raw = self.value, shorten(self.raw)
        if value is None:
            return "null"
        if isinstance(value, bool):
            return f"boolean {raw!r}" if self.plain else f"text {raw!r}"
        if isinstance(value, int):
            return f"integer {raw}"
        if isinstance(value, float):
            return f"number {raw}"
        return f"text {raw!r}"


def shorten(raw: str) -> str:
    """``raw`` as shown in a one-line message: long values are cut and their length given."""
    if len(raw) <= _SHOWN_CHARS:
        return raw
    return f"{raw[:12]}...({len(raw)} characters)"


def load_yaml(path: str | Path, text: str | None = None) -> YamlNode:
    """Read a YAML file whose top level is a mapping.

    Parameters
    ----------
    path
        The file; also used in error messages.
    text
        The file's contents, if already read (then ``path`` is only used in messages).

    Returns
    -------
    YamlNode
        The top-level mapping.

    Raises
    ------
    ConfigError
        If the file cannot be read, is not valid YAML, uses tabs for indentation, has
        duplicate keys, is empty, or its top level is not a mapping.
    """
    if text is None:
        text = read_text(path)
    try:
        root = _compose(path, text)
    except yaml.MarkedYAMLError as error:
        raise _syntax_error(path, text, error) from None
    except yaml.reader.ReaderError as error:  # a control character: placed by its offset, not a mark
        line = text.count("\n", 0, max(0, error.position)) + 1
        raise ConfigError(
            path, line, None, f"character {error.character!r} is not allowed in YAML; remove it (or save as plain text)"
        ) from None
    except yaml.YAMLError as error:  # errors without a position
        raise ConfigError(path, None, None, f"not valid YAML: {' '.join(str(error).split())}") from None
    if root is None:
        # Line 1: an empty file has no better place, and every error names a line.
        raise ConfigError(path, 1, None, "the file is empty; expected a mapping of settings (key: value lines)")
    _check_expanded_size(path, root)
    node = _convert(path, root, SafeConstructor(), set())
    if node.kind != "mapping":
        raise ConfigError(
            path,
            node.line,
            None,
            f"the top level must be a mapping of settings (key: value lines), found {node.describe()}",
        )
    return node


def read_text(path: str | Path) -> str:
    """Read a configuration file as UTF-8 text, raising `ConfigError` if that fails.

    At most `MAX_FILE_BYTES` are read, so a huge file or an endless device is refused
    at once instead of filling memory.
    """
    try:
        return read_limited(path)
    except FileNotFoundError:
        raise ConfigError(path, None, None, "file not found; check the path") from None
    except IsADirectoryError:
        raise ConfigError(path, None, None, "is a folder, expected a YAML file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(path, None, None, f"not UTF-8 text ({error.reason}); save it as UTF-8") from None
    except OSError as error:
        raise ConfigError(path, None, None, f"cannot read the file: {error.strerror}") from None


def read_limited(path: str | Path) -> str:
    """A settings file's UTF-8 text, reading at most `MAX_FILE_BYTES` (`ConfigError` if larger).

    Other problems (missing file, not UTF-8) raise the usual OSError / UnicodeDecodeError.
    """
    with open(path, "rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise _too_large(path)
    return data.decode("utf-8")


def check_bounds(path: str | Path, text: str) -> None:
    """Raise `ConfigError` if ``text`` nests too deep or its aliases expand too far.

    For loaders that parse with PyYAML themselves: call this first, so their own
    parse never expands an alias bomb.  Syntax errors are left to that parse.
    """
    try:
        root = _compose(path, text)
    except yaml.YAMLError:
        return
    if root is not None:
        _check_expanded_size(path, root)


def safe_load_bounded(text: str) -> Any:
    """``yaml.safe_load`` for YAML kept inside data files (a session's rig and protocol text).

    The settings-file bounds apply first; text past them raises ``yaml.YAMLError``, which
    callers of ``yaml.safe_load`` already handle.
    """
    try:
        check_bounds("<stored YAML>", text)
    except ConfigError as error:
        raise yaml.YAMLError(error.message) from None
    return yaml.safe_load(text)


def _compose(path: str | Path, text: str) -> yaml.Node | None:
    """PyYAML's node graph of ``text``, refusing files too large or nested too deep (`ConfigError`)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise _too_large(path)
    try:
        return yaml.compose(text, Loader=_BoundedLoader)
    except _TooDeep as error:
        raise ConfigError(
            path,
            error.line,
            None,
            f"nested more than {MAX_DEPTH} levels deep; settings files use a few levels, "
            "check the brackets and indentation",
        ) from None


def _too_large(path: str | Path) -> ConfigError:
    return ConfigError(
        path,
        None,
        None,
        f"larger than {MAX_FILE_BYTES // 1024} KiB; rig, protocol and scenario files are a few KB "
        "of settings, check that this is the right file",
    )


class _TooDeep(Exception):
    def __init__(self, line: int):
        super().__init__(line)
        self.line = line


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a limit on nesting (its composer recurses once per level)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep(self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_expanded_size(path: str | Path, root: yaml.Node) -> None:
    """Refuse a node graph whose aliases would expand past `MAX_VALUES` values or `MAX_DEPTH` levels.

    Aliases share nodes, so sizes are summed per distinct node (iteratively, without
    recursion): linear in the file, however much the aliases would multiply it.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children = _children(node)
        if children_done:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(child)] for child in children)
            depth[key] = 1 + max((depth[id(child)] for child in children), default=0)
            line = node.start_mark.line + 1
            if size[key] > MAX_VALUES:
                raise ConfigError(
                    path,
                    line,
                    None,
                    f"aliases (*name) here expand to more than {MAX_VALUES} values; "
                    "write the settings out instead of repeating aliases",
                )
            if depth[key] > MAX_DEPTH:
                raise ConfigError(
                    path,
                    line,
                    None,
                    f"aliases (*name) here nest more than {MAX_DEPTH} levels deep; write the settings out",
                )
            continue
        if key in size:
            continue
        if key in open_nodes:
            line = node.start_mark.line + 1
            raise ConfigError(path, line, None, "an alias (*name) refers to a value that contains it; remove the loop")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _syntax_error(path: str | Path, text: str, error: yaml.MarkedYAMLError) -> ConfigError:
    mark = error.problem_mark or error.context_mark
    line = mark.line + 1 if mark is not None else None
    problem = error.problem or "invalid YAML"
    if "'\\t'" in problem and line is not None:
        source_line = text.splitlines()[line - 1] if line <= len(text.splitlines()) else ""
        indent = source_line[: len(source_line) - len(source_line.lstrip(" \t"))]
        if "\t" in indent:
            return ConfigError(
                path, line, None, "tab used for indentation; YAML needs spaces, replace the tab with spaces"
            )
        return ConfigError(path, line, None, "tab character where YAML expects spaces; replace it with spaces")
    detail = problem
    if error.context:
        context = error.context
        if error.context_mark is not None and error.context_mark.line + 1 != line:
            context += f" started on line {error.context_mark.line + 1}"
        detail = f"{context}: {problem}"
    detail = " ".join(detail.split())
    return ConfigError(path, line, None, f"YAML syntax error ({detail}); check indentation, colons and brackets")


def _convert(path: str | Path, node: yaml.Node, constructor: SafeConstructor, ancestors: set[int]) -> YamlNode:
    line = node.start_mark.line + 1
    if id(node) in ancestors:
        raise ConfigError(path, line, None, "an alias (*name) refers to a value that contains it; remove the loop")
    ancestors = ancestors | {id(node)}
    if isinstance(node, yaml.MappingNode):
        values: dict[str, YamlNode] = {}
        key_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(path, key_line, None, "a key must be a single word, not a list or mapping")
            # Use the key as written: YAML 1.1 would turn keys like `on` into booleans.
            key = key_node.value
            if not key.isprintable() or len(key) > _SHOWN_CHARS:
                raise ConfigError(
                    path,
                    key_line,
                    None,
                    f"key {shorten(key)!r} is not a setting name; keys are short words such as refresh_hz",
                )
            if key == "<<" and key_node.tag == "tag:yaml.org,2002:merge":
                raise ConfigError(path, key_line, None, "YAML merge keys (<<) are not supported; write the keys out")
            if key in values:
                raise ConfigError(
                    path,
                    key_line,
                    key,
                    f"duplicate key (first defined on line {key_lines[key]}, again on line {key_line}); keep only one",
                )
            key_lines[key] = key_line
            values[key] = _convert(path, value_node, constructor, ancestors)
        return YamlNode("mapping", values, line, key_lines=key_lines)
    if isinstance(node, yaml.SequenceNode):
        return YamlNode("sequence", [_convert(path, item, constructor, ancestors) for item in node.value], line)
    try:
        value = constructor.construct_object(node, deep=True)
    except yaml.YAMLError as error:  # e.g. an unknown !tag
        problem = " ".join(str(getattr(error, "problem", None) or error).split())
        raise ConfigError(path, line, None, f"cannot read this value: {problem}") from None
    if not isinstance(value, (str, int, float, bool, type(None))):
        # Timestamps, binary and other YAML extras: keep the text the user wrote.
        value = node.value
    return YamlNode("scalar", value, line, raw=node.value, plain=node.style is None)
