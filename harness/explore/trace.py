"""What one example of the state machine did: its steps (:class:`TraceStep`) and
documents in a :class:`Trace`, and the :class:`InvariantFailure` that ends it. A trace
is what :mod:`harness.explore.reproducer` writes out as a scenario file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.checks.invariants import Violation

__all__ = ["InvariantFailure", "Trace", "TraceStep"]


class InvariantFailure(AssertionError):
    """An invariant broke after a step: carries the violations and the step."""

    def __init__(self, step: str, violations: list[Violation]) -> None:
        self.step = step
        self.violations = violations
        lines = "\n  ".join(v.message for v in violations)
        super().__init__(f"after `{step}`:\n  {lines}")

    @property
    def rules(self) -> list[str]:
        return sorted({v.rule for v in self.violations})


@dataclass
class TraceStep:
    """One executed step: ``kind`` is run, fail or fault (as in a scenario file)."""

    kind: str
    text: str
    fault: dict[str, Any] | None = None
    error: str = ""
    #: invariant rules the step is known to break (a timed-out detach leaves CHV changed)
    violations: tuple[str, ...] = ()
    #: the host the step runs on ("" or the first host: the scenario's default)
    host: str = ""
    #: an expectation the step's outcome must meet, written after it as ``- expect:``
    #: (a command rule of :mod:`harness.explore.oracles`, which a replay then checks)
    expect: str = ""


@dataclass
class Trace:
    """The steps of one example, the documents they use, and the failure if any."""

    profile: str
    eject: str = "immediate"
    steps: list[TraceStep] = field(default_factory=list)
    hosts: list[str] = field(default_factory=lambda: ["host"])
    documents: dict[str, str] = field(default_factory=dict)
    failure: str | None = None
    rules: list[str] = field(default_factory=list)
    failed_step: int | None = None  # index into steps
