"""Read a YAML file into plain values that remember where they were written.

PyYAML's `load` forgets line numbers and silently keeps the last of two duplicate keys; every
config error must name a line, and a duplicate key is almost always a mistake. So we `compose`
the file into nodes and convert them ourselves into `Item`s: the plain value plus its line and
key path. Scalars are still built by PyYAML's SafeConstructor, so `1`, `1.5`, `true` and
quoted strings mean exactly what they mean in YAML.
"""

from __future__ import annotations

import datetime
import errno
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bindingd.config.errors import ConfigError

try:  # The C loader is ~10x faster; fall back to pure Python where libyaml is missing.
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# Values an alias may add by repeating what it refers to, all aliases of the file together. A
# few hundred bytes of nested aliases would otherwise expand to gigabytes (a "billion laughs"
# alias bomb); a hand-written config repeats far less than this.
MAX_ALIAS_VALUES = 10_000
# Nesting deeper than this is refused before Python's recursion limit is reached (a config
# nests a handful of levels; libyaml itself allows 1000).
MAX_DEPTH = 64


@dataclass(frozen=True)
class Item:
    """One value of the file: a scalar, `dict[str, Item]` or `list[Item]`, with its origin.

    `line` is the (1-based) line of the key that holds the value, which is where a reader
    looks first; `path` is the chain of keys from the top of the file.
    """

    value: Any
    line: int
    path: tuple[str, ...]

    @property
    def key_path(self) -> str:
        return ".".join(self.path)


def describe(value: Any) -> str:
    """'a string', 'a list', ... for "expected X, got Y" messages (never the value itself)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, datetime.date):
        return "a date"
    if isinstance(value, bytes):
        return "binary data"
    return type(value).__name__


def read_regular_file(path: Path) -> str:
    """The UTF-8 text of a regular file. Anything else (a FIFO, a device) is refused before it
    is opened: reading one could block the daemon, reloads included, forever."""
    if not stat.S_ISREG(path.stat().st_mode):
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return path.read_text(encoding="utf-8")


def read_yaml(file: Path) -> Item | None:
    """The file's single document as an `Item` tree, or None when it holds no document."""
    try:
        text = read_regular_file(file)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=file) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", file=file) from exc
    return parse_yaml(text, file)


def parse_yaml(text: str, file: Path) -> Item | None:
    """Parse YAML text; `file` is only used to name the source in errors."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "syntax error"
        if exc.context:
            # e.g. "while parsing a flow mapping": say where that construct started.
            started = f" on line {exc.context_mark.line + 1}" if exc.context_mark else ""
            if problem.startswith("but "):  # "expected a single document…, but found another"
                problem = f"{exc.context}{started}, {problem}"
            else:
                problem = f"{problem} ({exc.context}{started})"
        raise ConfigError(
            f"invalid YAML: {problem}", file=file, line=mark.line + 1 if mark else None
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=file) from exc
    if node is None:
        return None
    return _Converter(file).convert(node, (), node.start_mark.line + 1)


class _Converter:
    def __init__(self, file: Path) -> None:
        self._file = file
        self._constructor = SafeConstructor()
        # Nodes being converted, to refuse an alias that contains itself (`&a [*a]`).
        self._active: set[int] = set()
        # Nodes converted once, and how many values were converted again through an alias.
        self._seen: set[int] = set()
        self._repeated = 0

    def _error(self, message: str, line: int, path: tuple[str, ...]) -> ConfigError:
        return ConfigError(message, file=self._file, line=line, key_path=".".join(path))

    def convert(self, node: Node, path: tuple[str, ...], line: int) -> Item:
        if id(node) in self._active:
            raise self._error("a YAML alias refers to a value that contains it", line, path)
        if len(path) > MAX_DEPTH:
            raise self._error(f"values nested more than {MAX_DEPTH} levels deep", line, path[:3])
        if id(node) in self._seen:
            self._repeated += 1
            if self._repeated > MAX_ALIAS_VALUES:
                raise self._error(
                    f"YAML aliases repeat more than {MAX_ALIAS_VALUES} values in this file; "
                    "write the values out or use fewer, smaller aliases",
                    line,
                    path,
                )
        self._seen.add(id(node))
        self._active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return Item(self._mapping(node, path, line), line, path)
            if isinstance(node, SequenceNode):
                if node.tag != _SEQ_TAG:
                    raise self._error(f"unsupported YAML tag {node.tag}", line, path)
                items = [
                    self.convert(child, (*path, str(index)), child.start_mark.line + 1)
                    for index, child in enumerate(node.value)
                ]
                return Item(items, line, path)
            return Item(self._scalar(node, path), line, path)
        finally:
            self._active.discard(id(node))

    def _scalar(self, node: Node, path: tuple[str, ...]) -> Any:
        try:
            return self._constructor.construct_object(node, deep=True)
        except ConstructorError as exc:
            raise self._error(
                f"unsupported YAML value: {exc.problem}", node.start_mark.line + 1, path
            ) from exc

    def _mapping(self, node: MappingNode, path: tuple[str, ...], line: int) -> dict[str, Item]:
        if node.tag != _MAP_TAG:
            raise self._error(f"unsupported YAML tag {node.tag}", line, path)
        out: dict[str, Item] = {}
        explicit: dict[str, int] = {}  # key -> line, to report duplicates
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                # `<<: *defaults`: merged keys never override keys written in this mapping.
                for key, item in self._merged(value_node, path, key_line).items():
                    if key not in out:
                        out[key] = item
                continue
            if not isinstance(key_node, ScalarNode):
                raise self._error(f"a mapping key must be a plain string, got {key_node.id}", key_line, path)
            key = str(key_node.value)
            if key in explicit:
                raise self._error(
                    f'duplicate key "{key}" (first written on line {explicit[key]}); keep one',
                    key_line,
                    (*path, key),
                )
            explicit[key] = key_line
            out[key] = self.convert(value_node, (*path, key), key_line)
        return out

    def _merged(self, node: Node, path: tuple[str, ...], line: int) -> dict[str, Item]:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        merged: dict[str, Item] = {}
        for source in sources:
            if not isinstance(source, MappingNode):
                raise self._error("a YAML merge key (<<) needs a mapping or a list of mappings", line, path)
            for key, item in self._mapping(source, path, line).items():
                merged.setdefault(key, item)  # earlier sources win, as in YAML
        return merged
