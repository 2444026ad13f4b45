"""Running one sequence on both sides, step by step, and keeping what each said.

Both sides get a fresh process and a directory of their own
(:class:`harness.differential.sides.Side`) with the sequence's placeholders made
(:mod:`harness.differential.environment`). Every step goes to both at once; each
side's answers are kept as received (:class:`SideResult`), with whether the server
closed the connection and whether the process ended. After the last step a side still
running gets ``PUT vmm.shutdown`` (compared like any step: it ends the VM, its events
and the process), and the exit statuses and event-monitor records are collected.

Nothing here compares: :mod:`harness.differential.compare` does, after
:mod:`harness.differential.normalise`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.chv.binary import READY_MARKER, Guest
from harness.differential.environment import SideEnvironment, placeholders_in, token
from harness.differential.sequence import (
    RAW,
    REQUEST,
    WAIT_EJECT,
    WAIT_GUEST,
    Sequence,
    Step,
    api,
)
from harness.differential.sides import FAKE, REAL, Side, SideSpec, read_events
from harness.differential.wire import HttpAnswer, WireError, build_request

__all__ = [
    "EJECT_TIMEOUT",
    "GUEST_TIMEOUT",
    "REQUEST_TIMEOUT",
    "SequenceRun",
    "SideResult",
    "StepRun",
    "run_sequence",
]

#: how long a side may take to answer one request (CHV waits 60 s for a vhost-user
#: backend that is not there)
REQUEST_TIMEOUT = 75.0
#: how long a wait for an eject lasts (a real guest takes 2-10 s here)
EJECT_TIMEOUT = 30.0
#: how long a wait for the guest's ready marker lasts (40-50 s here, more under load)
GUEST_TIMEOUT = 240.0
#: how long a raw step waits for more answers once the side went quiet
RAW_IDLE = 0.3


@dataclass
class SideResult:
    """What one side did at one step."""

    answers: list[HttpAnswer] = field(default_factory=list)
    #: the server closed the connection during the step
    closed: bool = False
    #: the process's exit status, if it ended during the step
    exit: int | None = None
    #: what a wait step found (``ejected``, ``not ejected``, ``ready``) or why nothing came
    outcome: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "answers": [a.to_json() for a in self.answers],
            "closed": self.closed,
            "exit": self.exit,
            "outcome": self.outcome,
            "seconds": round(self.seconds, 4),
        }


@dataclass
class StepRun:
    """One step and what each side did."""

    index: int
    step: Step
    sides: dict[str, SideResult]
    #: added by the runner (the closing ``vmm.shutdown``), not part of the sequence
    implicit: bool = False


@dataclass
class SequenceRun:
    """A sequence on one profile: every step on both sides, exits, events."""

    sequence: Sequence
    profile: str
    steps: list[StepRun] = field(default_factory=list)
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    exits: dict[str, int | None] = field(default_factory=dict)
    #: each side's paths -> placeholders (for :mod:`harness.differential.normalise`)
    paths: dict[str, dict[str, str]] = field(default_factory=dict)
    #: a side that could not start, or why the sequence stopped early
    error: str | None = None
    stopped_at: int | None = None
    seconds: float = 0.0


async def _request(side: Side, step: Step, env: SideEnvironment) -> SideResult:
    result = SideResult()
    conn = side.conn
    if conn is None:
        result.outcome = "no connection"
        return result
    body = None if step.body is None else env.resolve(step.body)
    if step.kind == RAW:
        data = (body or "").encode("latin-1", "replace")
    else:
        payload = None if body is None else body.encode("utf-8", "surrogateescape")
        data = build_request(step.method, env.resolve(step.path), payload)
    fds: list[int] = []
    for _ in range(step.fds):
        r, w = os.pipe()
        fds += [r, w]
    try:
        if not conn.is_open:
            await conn.connect()
        await conn.send(data, tuple(fds[: step.fds]))
    except WireError as exc:
        result.outcome = str(exc)
        result.closed = True
        return result
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
    if step.kind == RAW:
        result.answers = await conn.read_answers(RAW_IDLE, REQUEST_TIMEOUT)
    else:
        answer = await conn.read_answer(REQUEST_TIMEOUT)
        if answer is not None:
            result.answers = [answer]
        else:
            result.outcome = (
                "connection closed without an answer"
                if not conn.is_open
                else f"no answer within {REQUEST_TIMEOUT:g}s"
            )
    result.closed = not conn.is_open
    return result


async def _wait_eject(side: Side, device: str) -> SideResult:
    """Poll vm.info until ``device`` left the device tree (these polls are not kept)."""
    result = SideResult()
    loop = asyncio.get_running_loop()
    end = loop.time() + EJECT_TIMEOUT
    info = api("GET", "vm.info")
    env = SideEnvironment(side.root, Path("/"), "")
    while True:
        polled = await _request(side, info, env)
        tree: Any = None
        if polled.answers:
            with contextlib.suppress(ValueError):
                tree = json.loads(polled.answers[0].body).get("device_tree")
        if isinstance(tree, dict) and device not in tree:
            result.outcome = "ejected"
            return result
        if not polled.answers or loop.time() > end:
            result.outcome = "not ejected" if polled.answers else polled.outcome
            return result
        await asyncio.sleep(0.1)


async def _wait_guest(side: Side, serial: str) -> SideResult:
    result = SideResult()
    if side.kind == FAKE:  # fakechv's guest model has no boot to wait for
        result.outcome = "ready"
        return result
    loop = asyncio.get_running_loop()
    end = loop.time() + GUEST_TIMEOUT
    path = Path(serial)
    while loop.time() < end:
        with contextlib.suppress(OSError):
            if READY_MARKER.encode() in path.read_bytes():
                result.outcome = "ready"
                return result
        if side.returncode() is not None:
            break
        await asyncio.sleep(0.25)
    result.outcome = "not ready"
    return result


async def _step(side: Side, step: Step, env: SideEnvironment) -> SideResult:
    started = time.monotonic()
    if side.returncode() is not None:
        result = SideResult(outcome="process ended before the step", exit=side.returncode())
    elif step.kind in (REQUEST, RAW):
        result = await _request(side, step, env)
    elif step.kind == WAIT_EJECT:
        result = await _wait_eject(side, step.arg)
    elif step.kind == WAIT_GUEST:
        result = await _wait_guest(side, env.resolve(step.arg or token("new", "serial")))
    else:
        await asyncio.sleep(int(step.arg or 0) / 1000)
        result = SideResult(outcome="slept")
    if step.kind in (REQUEST, RAW) and not result.answers:
        # an answer that did not come may be a process that died: give it a moment
        await side.wait_exit(0.3)
    result.exit = side.returncode()
    result.seconds = time.monotonic() - started
    return result


async def run_sequence(
    sequence: Sequence,
    profile: str,
    specs: dict[str, SideSpec],
    workdir: Path,
    guest: Guest,
    *,
    on_step: Callable[[StepRun], None] | None = None,
) -> SequenceRun:
    """Run ``sequence`` on the two sides of ``specs`` (``fake`` and ``real``) under
    ``workdir`` (one directory per side, names of equal length)."""
    run = SequenceRun(sequence, profile)
    started = time.monotonic()
    envs = {
        kind: SideEnvironment(workdir / kind, guest.kernel, guest.cmdline) for kind in (FAKE, REAL)
    }
    texts = (
        [s.body for s in sequence.steps]
        + [s.arg for s in sequence.steps]
        + [s.endpoint for s in sequence.steps]
    )
    tokens = placeholders_in(texts)
    for env in envs.values():
        env.prepare(tokens)
    sides = {kind: Side(specs[kind], envs[kind].root) for kind in (FAKE, REAL)}
    try:
        ok = await asyncio.gather(*(side.start() for side in sides.values()))
        if not all(ok):
            run.error = "; ".join(s.start_error or "" for s in sides.values() if s.start_error)
            return run
        steps = list(sequence.steps)
        for index, step in enumerate(steps, 1):
            results = await asyncio.gather(*(_step(sides[k], step, envs[k]) for k in (FAKE, REAL)))
            done = StepRun(index, step, {FAKE: results[0], REAL: results[1]})
            run.steps.append(done)
            if on_step is not None:
                on_step(done)
            ended = [k for k in (FAKE, REAL) if sides[k].returncode() is not None]
            if ended and index < len(steps):
                run.stopped_at = index
                break
        shut_down = any(
            r.step.endpoint == "vmm.shutdown"
            and any(a.status == 200 for a in r.sides[REAL].answers)
            for r in run.steps
        )
        if not shut_down and all(s.returncode() is None for s in sides.values()):
            # (after a vmm.shutdown the real process is on its way out: a request then
            # races its exit)
            closing = api("PUT", "vmm.shutdown")
            results = await asyncio.gather(
                *(_step(sides[k], closing, envs[k]) for k in (FAKE, REAL))
            )
            run.steps.append(
                StepRun(len(run.steps) + 1, closing, {FAKE: results[0], REAL: results[1]}, True)
            )
        codes = await asyncio.gather(*(s.wait_exit(3.0) for s in sides.values()))
        run.exits = dict(zip(sides, codes, strict=True))
    finally:
        await asyncio.gather(*(s.stop() for s in sides.values()))
        run.events = {k: read_events(s.events_path) for k, s in sides.items()}
        run.paths = {k: {v: t for t, v in envs[k].made.items()} for k in sides}
        run.seconds = time.monotonic() - started
    return run
