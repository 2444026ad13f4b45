"""Copies of JSON values (what the API reads and writes: dicts, lists, scalars).

:func:`copy_json` is :func:`copy.deepcopy` for that shape, several times faster: the
VMM copies its config on every request that may fail (to roll it back) and every
``vm.info`` copies the device tree. Anything else inside falls back to ``deepcopy``.
"""

from __future__ import annotations

import copy
from typing import TypeVar

__all__ = ["copy_json"]

T = TypeVar("T")

_SCALARS = (str, int, float, bool, type(None))


def copy_json(value: T) -> T:
    """A deep copy of ``value``; scalars are immutable and returned as they are."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [copy_json(v) for v in value]  # type: ignore[return-value]
    if isinstance(value, _SCALARS):
        return value
    return copy.deepcopy(value)
