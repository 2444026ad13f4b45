"""Copies of JSON values (what the API reads and writes: dicts, lists, scalars).

:func:`copy_json` is :func:`copy.deepcopy` for that shape, several times faster: the
VMM copies its config on every request that may fail (to roll it back). Plain values
go through :mod:`marshal` (in C); a value holding anything marshal does not take (a
subclass, an object) is copied item by item, anything else inside by ``deepcopy``.
"""

from __future__ import annotations

import copy
import marshal
from typing import TypeVar

__all__ = ["copy_json"]

T = TypeVar("T")

_SCALARS = (str, int, float, bool, type(None))


def copy_json(value: T) -> T:
    """A deep copy of ``value``; scalars are immutable and returned as they are."""
    if isinstance(value, dict | list) and type(value) in (dict, list):
        try:  # marshal copies plain values in C, several times faster again
            copied: T = marshal.loads(marshal.dumps(value))
            return copied
        except ValueError:  # something inside that marshal does not take
            pass
    return _copy(value)


def _copy(value: T) -> T:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [_copy(v) for v in value]  # type: ignore[return-value]
    if isinstance(value, _SCALARS):
        return value
    return copy.deepcopy(value)
