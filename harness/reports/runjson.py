"""The text of ``run.json``: ``json.dumps(run.to_json(), indent=2, sort_keys=True)``, made faster.

A suite's run holds thousands of steps whose slot maps and CHV exchanges repeat
(a step mostly leaves the maps as they were, ``vm.info`` answers recur), and the
standard encoder walks every one of them in Python once more. This writer walks
the records (the run, its scenarios, their steps) itself, and encodes each other
value once per content: a value's ``marshal`` bytes name its content exactly, and a
JSON text nested ``depth`` levels down is its top-level text with ``2 * depth``
more spaces after each newline (a JSON text has no raw newline inside a string).
The result is the same text, byte for byte; ``tests/harness/reports/test_runjson.py``
holds it to the standard encoder.
"""

from __future__ import annotations

import json
import marshal
from dataclasses import fields, is_dataclass
from json.encoder import encode_basestring_ascii as _key
from typing import Any

from harness.scenario.results import RunResult

__all__ = ["content_key", "run_json_text"]

#: marshal bytes of a value -> its JSON text at the top level
_Texts = dict[bytes, str]


def run_json_text(run: RunResult) -> str:
    """``run.json``'s text for ``run``, ending in a newline."""
    texts: _Texts = {}
    return _record(run, 0, texts) + "\n"


def _is_record(value: object) -> bool:
    return _names(type(value)) is not None


def _names(cls: type) -> tuple[str, ...] | None:
    """The field names of a record class, sorted; None for a class that is no dataclass."""
    try:
        return _NAMES[cls]
    except KeyError:
        names = tuple(sorted(f.name for f in fields(cls))) if is_dataclass(cls) else None
        _NAMES[cls] = names
        return names


_NAMES: dict[type, tuple[str, ...] | None] = {}


def _record(record: Any, depth: int, texts: _Texts) -> str:
    names = _names(type(record))
    if not names:
        return "{}"
    return _joined(
        "{}",
        [f"{_key(name)}: {_field(getattr(record, name), depth + 1, texts)}" for name in names],
        depth,
    )


def _joined(brackets: str, items: list[str], depth: int) -> str:
    """``items`` as the standard encoder lays out a container's members ``depth`` levels down."""
    inner = "\n" + "  " * (depth + 1)
    return brackets[0] + inner + ("," + inner).join(items) + "\n" + "  " * depth + brackets[1]


def _field(value: object, depth: int, texts: _Texts) -> str:
    """One field of a record: a list of records is walked, anything else encoded as a value."""
    if isinstance(value, (list, tuple)) and value and all(_is_record(v) for v in value):
        return _joined("[]", [_record(v, depth + 1, texts) for v in value], depth)
    return _value(value, depth, texts)


def _plain(value: object) -> object:
    """``value`` with every record in it made a dict of its fields, as ``asdict`` does."""
    if type(value) in _ATOMS:
        return value
    names = _names(type(value))
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in names}
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_ATOMS = frozenset((str, int, float, bool, type(None)))


def _value(value: object, depth: int, texts: _Texts) -> str:
    """A value that is no record, encoded once per content (records in it made dicts).

    A value seen before is its kept text; a new container is laid out from its members,
    each of them a value again: an exchange that differs only in its timing still finds
    its request and response bodies kept.
    """
    if type(value) in _ATOMS:  # the same text at any depth and indent: the C encoder's
        return _key(value) if type(value) is str else json.dumps(value)
    key = content_key(value)
    if key is None:  # records inside (a step's slot maps), or no plain data at all
        value = _plain(value)
        key = content_key(value)
    if key is None:  # no content name: encoded as it is (or refused, as the encoder does)
        text = json.dumps(value, indent=2, sort_keys=True)
    else:
        got = texts.get(key)
        if got is None:
            got = texts[key] = _members(value, texts)
        text = got
    return text.replace("\n", "\n" + "  " * depth) if depth else text


def _members(value: object, texts: _Texts) -> str:
    """The top-level text of plain data (exact types: it has a content key): a list, or a
    dict with text keys, member by member."""
    if isinstance(value, (list, tuple)) and value:
        return _joined("[]", [_value(v, 1, texts) for v in value], 0)
    if isinstance(value, dict) and value and all(type(k) is str for k in value):
        return _joined(
            "{}", [f"{_key(k)}: {_value(v, 1, texts)}" for k, v in sorted(value.items())], 0
        )
    return json.dumps(value, indent=2, sort_keys=True)  # empty, or keys the encoder converts


def content_key(value: object) -> bytes | None:
    """``value``'s marshal bytes, which name its content exactly; None if it has none.

    Equal bytes mean equal values of the same types (``1``, ``1.0`` and ``True`` differ),
    so they encode to the same JSON text; equal values may still have other bytes.
    """
    try:
        return marshal.dumps(value)  # type: ignore[arg-type]
    except ValueError:
        return None
