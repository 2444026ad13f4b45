"""Reads of domain definitions, kept until the next change.

The checks read every device of every definition several times after each step (the
invariants, the slot maps, the snapshots), and nothing changes in between. A
:class:`~harness.model.domain.Domain` keeps its device list, and a
:class:`~harness.model.domain.Device` what it read from its element, while
:data:`CHANGES` has not moved. Every change :mod:`harness.model.domain` makes to a
definition moves it (:func:`changed`); nothing else changes a definition's devices
(the drivers, the targets and the checks go through those methods, or parse a tree of
their own).

A change made around those methods, straight on the lxml tree, would leave a stale
read. :func:`verify` makes every cached read compute the value again and compare:
the test suite turns it on, so a change that slips past :func:`changed` fails there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["CHANGES", "ReadCache", "StaleRead", "changed", "verify"]

T = TypeVar("T")


class StaleRead(AssertionError):
    """A cached read differs from the definition (a change bypassed :func:`changed`)."""


class _Changes:
    __slots__ = ("count", "verify")

    def __init__(self) -> None:
        #: moves on every change made through harness.model.domain
        self.count = 0
        #: recompute every cached read and compare (tests)
        self.verify = False


CHANGES = _Changes()


def changed() -> None:
    """A definition changed: every cached read is dropped."""
    CHANGES.count += 1


def verify(on: bool = True) -> None:
    """Check every cached read against a fresh one (slow: for tests)."""
    CHANGES.verify = on


class ReadCache:
    """Values read from one element (or document), valid until the next change."""

    __slots__ = ("_at", "_values")

    def __init__(self) -> None:
        self._at = -1
        self._values: dict[str, Any] = {}

    def get(
        self, name: str, compute: Callable[[], T], same: Callable[[T, T], bool] | None = None
    ) -> T:
        """``compute()``'s value, computed once per state of the definitions (``same``
        compares a fresh value with the kept one when verifying; default ``==``)."""
        values = self._values
        if self._at != CHANGES.count:
            values.clear()
            self._at = CHANGES.count
        elif name in values:
            value: T = values[name]
            if CHANGES.verify:
                fresh = compute()
                if not (same(fresh, value) if same is not None else fresh == value):
                    raise StaleRead(f"cached {name} {value!r} is now {fresh!r}")
            return value
        value = values[name] = compute()
        return value
