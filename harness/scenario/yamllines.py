"""Scenario YAML with line numbers: a bounded safe loader whose mappings and lists
(:class:`YamlMap`, :class:`YamlSeq`) remember the line of every key, value and item, so
every problem :mod:`harness.scenario.load` finds can say ``FILE:LINE``.

Bounded before anything is built: no aliases, nesting at most :data:`MAX_NESTING`, at
most :data:`MAX_NODES` values, integers of at most :data:`MAX_NUMBER_DIGITS` digits.

A file that parsed is kept in the user's cache (:mod:`fakechv.filecache`, kind
``scenarios``), named by its bytes, PyYAML's version and this module's source, so a
run does not parse an unchanged file again; a file that fails is parsed every time
(its message names the file it was read from).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import yaml

from fakechv import filecache
from fakechv.errors import brief
from harness.scenario.model import ScenarioError

__all__ = [
    "MAX_NESTING",
    "MAX_NODES",
    "MAX_NUMBER_DIGITS",
    "YamlMap",
    "YamlSeq",
    "parse_yaml",
]

#: deepest YAML nesting, most YAML values, longest integer in a scenario file
MAX_NESTING = 32
MAX_NODES = 200_000
MAX_NUMBER_DIGITS = 20


class YamlMap(dict[Any, Any]):
    """A YAML mapping that remembers where it and each key/value were written."""

    line: int = 0
    key_lines: dict[Any, int]
    value_lines: dict[Any, int]
    plain_keys: dict[Any, str]  # key -> source text when the key was an unquoted scalar


class YamlSeq(list[Any]):
    line: int = 0
    item_lines: list[int]


_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> YamlMap:
    loader.flatten_mapping(node)
    out = YamlMap()
    out.line = node.start_mark.line + 1
    out.key_lines, out.value_lines, out.plain_keys = {}, {}, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            ) from None
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {brief(key)}", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
        out.value_lines[key] = value_node.start_mark.line + 1
        if isinstance(key_node, yaml.ScalarNode) and not key_node.style:  # plain (libyaml says "")
            out.plain_keys[key] = str(key_node.value)
    return out


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> YamlSeq:
    out = YamlSeq(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


def _construct_number(loader: _Loader, node: yaml.ScalarNode) -> Any:
    # YAML 1.1 reads 00:04.0 as a base-60 number; in a scenario it is a BDF
    if ":" in str(node.value):
        return str(node.value)
    if sum(ch.isdigit() for ch in str(node.value)) > MAX_NUMBER_DIGITS:
        raise yaml.constructor.ConstructorError(
            None, None, f"number {brief(node.value)} is too large", node.start_mark
        )
    if node.tag.endswith(":int"):
        return loader.construct_yaml_int(node)
    return loader.construct_yaml_float(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_number)  # type: ignore[arg-type, unused-ignore]
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_number)  # type: ignore[arg-type, unused-ignore]
_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)  # type: ignore[arg-type, unused-ignore]
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)  # type: ignore[arg-type, unused-ignore]


def _check_shape(text: str, where: str) -> None:
    """Refuse what could make loading blow up before anything is built: aliases
    (an alias bomb), nesting deeper than :data:`MAX_NESTING`, too many nodes."""
    depth = nodes = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            line = event.start_mark.line + 1 if event.start_mark is not None else 1
            if isinstance(event, yaml.AliasEvent):
                raise ScenarioError(
                    f"{where}:{line}: YAML aliases (*{brief(event.anchor)}) "
                    "are not supported in scenario files"
                )
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_NESTING:
                    raise ScenarioError(f"{where}:{line}: nested deeper than {MAX_NESTING} levels")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            if isinstance(event, yaml.NodeEvent):
                nodes += 1
                if nodes > MAX_NODES:
                    raise ScenarioError(f"{where}:{line}: more than {MAX_NODES} YAML values")
    except yaml.MarkedYAMLError:
        return  # reported with its line by the loader


def parse_yaml(text: str, where: str) -> Any:
    """The YAML document ``text`` (read from ``where``) with line numbers;
    :class:`ScenarioError` ``WHERE:LINE: reason`` if it is not one we take."""
    return filecache.kept(
        "scenarios", text.encode("utf-8"), _stamp(), lambda: _load(text, where), _encode, _decode
    )


def _load(text: str, where: str) -> Any:
    _check_shape(text, where)
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "malformed YAML"
        raise ScenarioError(f"{where}:{line}: YAML error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{where}:1: YAML error: {exc}") from None


@functools.cache
def _stamp() -> str:
    """What a kept parse depends on besides the file: PyYAML and this loader."""
    source = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    return f"yaml{yaml.__version__}-loader{source}"


# a kept parse is plain data for marshal: a mapping is ("m", line, items, key lines,
# value lines, plain keys), a list ("s", line, items, item lines); YAML's safe loader
# makes no tuples, so a tuple is always one of these
def _encode(value: Any) -> Any:
    if isinstance(value, YamlMap):
        items = [(key, _encode(item)) for key, item in value.items()]
        return ("m", value.line, items, value.key_lines, value.value_lines, value.plain_keys)
    if isinstance(value, YamlSeq):
        return ("s", value.line, [_encode(item) for item in value], value.item_lines)
    return value


def _decode(value: Any) -> Any:
    if type(value) is not tuple:
        return value
    if value[0] == "m":
        _tag, line, items, key_lines, value_lines, plain_keys = value
        out = YamlMap((key, _decode(item)) for key, item in items)
        out.line, out.key_lines, out.value_lines, out.plain_keys = (
            line,
            key_lines,
            value_lines,
            plain_keys,
        )
        return out
    _tag, line, items, item_lines = value
    seq = YamlSeq(_decode(item) for item in items)
    seq.line, seq.item_lines = line, item_lines
    return seq
