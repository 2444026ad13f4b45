"""What the differential sends: sequences of steps, the same for both sides.

A :class:`Sequence` is a list of :class:`Step` values with where it comes from (its
``source``: ``rules``, ``scenarios``, ``generated``; its ``origin``: a test, a scenario
step, a seed) and which rule sections of chv-pci-rules.md it exercises. A step is one
API request (method, endpoint, body text, how many file descriptors ride with it), raw
bytes sent as they are, or a wait (for the guest's ready marker, for a device's eject, a
pause).

Bodies are text with environment placeholders (``@{disk:a}``, ``@{kernel}``, see
:mod:`harness.differential.environment`) that each side resolves to its own files, so
a sequence is data: it is written to and read from JSON as it is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from harness.errors import HarnessError

__all__ = [
    "RAW",
    "REQUEST",
    "SLEEP",
    "STEP_KINDS",
    "WAIT_EJECT",
    "WAIT_GUEST",
    "Sequence",
    "SequenceError",
    "Step",
    "api",
    "dedupe",
    "raw",
]

REQUEST = "request"
RAW = "raw"
WAIT_GUEST = "wait-guest"
WAIT_EJECT = "wait-eject"
SLEEP = "sleep"
STEP_KINDS = (REQUEST, RAW, WAIT_GUEST, WAIT_EJECT, SLEEP)


class SequenceError(HarnessError):
    """A sequence file or value that is not a sequence (names what is wrong)."""


@dataclass(frozen=True)
class Step:
    """One step of a sequence.

    ``request``: ``method`` on ``endpoint`` (``vm.info``, or a whole path starting with
    ``/``) with ``body`` (text, or None for no body) and ``fds`` descriptors (fresh pipe
    ends, as SCM_RIGHTS); ``raw``: ``body`` is the whole request, sent byte for byte
    (latin-1); ``wait-guest``: until the guest printed its ready marker; ``wait-eject``:
    until the device ``arg`` left ``vm.info``; ``sleep``: ``arg`` milliseconds.
    """

    kind: str = REQUEST
    method: str = "GET"
    endpoint: str = ""
    body: str | None = None
    fds: int = 0
    arg: str = ""

    @property
    def path(self) -> str:
        return self.endpoint if self.endpoint.startswith("/") else "/api/v1/" + self.endpoint

    @property
    def json(self) -> Any:
        """The body as JSON (None when there is none or it is not JSON)."""
        if self.body is None:
            return None
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            return None

    def describe(self) -> str:
        """One line: ``PUT vm.add-disk {"path": "@{disk:a}"}``."""
        if self.kind == REQUEST:
            text = f"{self.method} {self.endpoint}"
            if self.body is not None:
                body = self.body if len(self.body) <= 300 else self.body[:297] + "..."
                text += f" {body}"
            if self.fds:
                text += f" (+{self.fds} fd)"
            return text
        if self.kind == RAW:
            shown = (self.body or "").encode("latin-1").decode("ascii", "backslashreplace")
            return f"raw {shown[:200]!r}"
        if self.kind == WAIT_EJECT:
            return f"wait until {self.arg} is ejected"
        if self.kind == SLEEP:
            return f"sleep {self.arg} ms"
        return "wait for the guest's ready marker"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind in (REQUEST, RAW):
            if self.kind == REQUEST:
                out["method"] = self.method
                out["endpoint"] = self.endpoint
            out["body"] = self.body
            if self.fds:
                out["fds"] = self.fds
        if self.arg:
            out["arg"] = self.arg
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "step") -> Step:
        if not isinstance(data, dict):
            raise SequenceError(f"{where}: a step is an object, not {type(data).__name__}")
        kind = data.get("kind", REQUEST)
        if kind not in STEP_KINDS:
            raise SequenceError(f"{where}: unknown step kind {kind!r} (known: {STEP_KINDS})")
        body = data.get("body")
        if body is not None and not isinstance(body, str):
            raise SequenceError(f"{where}: body must be text or null")
        fds = data.get("fds", 0)
        if not isinstance(fds, int) or isinstance(fds, bool) or not 0 <= fds <= 16:
            raise SequenceError(f"{where}: fds must be a count from 0 to 16, not {fds!r}")
        method = data.get("method", "GET")
        endpoint = data.get("endpoint", "")
        if kind == REQUEST and (not isinstance(method, str) or not isinstance(endpoint, str)):
            raise SequenceError(f"{where}: method and endpoint must be text")
        if kind == REQUEST and not endpoint:
            raise SequenceError(f"{where}: a request needs an endpoint")
        return cls(kind, str(method), str(endpoint), body, fds, str(data.get("arg", "")))


def api(method: str, endpoint: str, body: Any = None, *, fds: int = 0) -> Step:
    """A request step; ``body`` is JSON (serialized as a plain client does) or text."""
    text = body if isinstance(body, str) or body is None else json.dumps(body)
    return Step(REQUEST, method, endpoint, text, fds)


def raw(data: bytes | str) -> Step:
    """A step that sends ``data`` as it is."""
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    return Step(RAW, body=text)


@dataclass(frozen=True)
class Sequence:
    """Steps sent to both sides, one fresh process each."""

    name: str
    source: str
    steps: tuple[Step, ...]
    #: where it comes from: a test's node id, a scenario's file and profile, a seed
    origin: str = ""
    #: the chv-pci-rules.md sections it exercises ("2", "5", ...)
    sections: tuple[str, ...] = ()
    #: it waits for a booted guest (slow: a boot takes about 45 s here)
    guest: bool = False
    #: the profiles it is meant for (empty: every profile)
    profiles: tuple[str, ...] = ()
    #: what was left out when it was made (fakechv-only requests, ...)
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def key(self) -> str:
        """A digest of what is sent: equal sequences are run once."""
        text = json.dumps([s.to_json() for s in self.steps], sort_keys=True)
        return hashlib.sha256(f"{self.guest}:{text}".encode()).hexdigest()[:16]

    def for_profile(self, profile: str) -> bool:
        return not self.profiles or profile in self.profiles

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "origin": self.origin,
            "sections": list(self.sections),
            "guest": self.guest,
            "steps": [s.to_json() for s in self.steps],
        }
        if self.profiles:
            out["profiles"] = list(self.profiles)
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "sequence") -> Sequence:
        if not isinstance(data, dict):
            raise SequenceError(f"{where}: a sequence is an object")
        name = data.get("name")
        steps = data.get("steps")
        if not isinstance(name, str) or not name:
            raise SequenceError(f"{where}: a sequence needs a name")
        if not isinstance(steps, list):
            raise SequenceError(f"{where} ({name}): steps must be a list")

        def texts(key: str) -> tuple[str, ...]:
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SequenceError(f"{where} ({name}): {key} must be a list of text")
            return tuple(value)

        return cls(
            name=name,
            source=str(data.get("source", "")),
            steps=tuple(
                Step.from_json(s, f"{where} ({name}) step {i + 1}") for i, s in enumerate(steps)
            ),
            origin=str(data.get("origin", "")),
            sections=texts("sections"),
            guest=bool(data.get("guest", False)),
            profiles=texts("profiles"),
            notes=texts("notes"),
        )

    def with_steps(self, steps: Iterable[Step]) -> Sequence:
        return replace(self, steps=tuple(steps))


def dedupe(sequences: Iterable[Sequence]) -> tuple[list[Sequence], int]:
    """The sequences with equal steps run once (the first kept, with the sections and
    profiles of all): the unique ones and how many were dropped."""
    kept: dict[str, Sequence] = {}
    dropped = 0
    for seq in sequences:
        old = kept.get(seq.key)
        if old is None:
            kept[seq.key] = seq
            continue
        dropped += 1
        sections = tuple(sorted(set(old.sections) | set(seq.sections)))
        profiles: tuple[str, ...] = ()
        if old.profiles and seq.profiles:  # empty: every profile
            profiles = tuple(sorted(set(old.profiles) | set(seq.profiles)))
        kept[seq.key] = replace(old, sections=sections, profiles=profiles)
    return list(kept.values()), dropped
