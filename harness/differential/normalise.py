"""The one table of what the differential does not count as a difference.

Each row of :data:`NORMALISATIONS` removes one thing that comes from the environment
only (the two sides' files, process ids, HashMap order, the host's address space,
random MACs, time, the guest's timing, what this host cannot do), with the reason,
and is applied to both sides alike. Everything else in which the two sides differ is a
difference to fix in fakechv. ``bdf-harness diff --list-normalisations`` prints the
table.

:func:`observe` turns what one side did at one step (:class:`SideResult`) into the
normalised :class:`Observed` value that :mod:`harness.differential.compare` compares;
:func:`observe_events` does the same for the event-monitor records; :func:`cut_at`
says where the comparison of a sequence must stop because of this host.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.differential.runner import SequenceRun, SideResult, StepRun
from harness.differential.sides import exit_text

__all__ = [
    "NORMALISATIONS",
    "Normalisation",
    "Observed",
    "cut_at",
    "format_table",
    "observe",
    "observe_events",
]

#: a MAC address CHV made up (``MacAddr::local_random``: first byte 0x2e)
_RANDOM_MAC = re.compile(r"^2e(:[0-9a-f]{2}){5}$")
_ANY_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_PTY = re.compile(r"^/dev/pts/\d+$")
_NO_VCPU_STATE = re.compile(r"GetNestedState|Could not get vCPU state")


@dataclass
class Context:
    """What a row may look at: the run, the step (None for events), the side."""

    run: SequenceRun
    step: StepRun | None
    side: str
    #: every MAC address the sequence's requests name (lower case)
    requested_macs: set[str] = field(default_factory=set)

    @property
    def endpoint(self) -> str:
        return self.step.step.endpoint if self.step is not None else ""


@dataclass
class Observed:
    """One side at one step, normalised."""

    answers: list[dict[str, Any]]
    closed: bool
    exit: str
    outcome: str


@dataclass(frozen=True)
class Normalisation:
    """One row: ``name``, what it touches, why it is the environment, the function
    (it changes an answer ``{"status_line", "headers", "body", "json"}``, a list of
    events, or nothing: a ``cut`` row is applied by :func:`cut_at`)."""

    name: str
    scope: str
    reason: str
    answer: Callable[[dict[str, Any], Context], None] | None = None
    events: Callable[[list[dict[str, Any]], Context], list[dict[str, Any]]] | None = None


# ----------------------------------------------------------------------------- helpers


def _walk(value: Any, fn: Callable[[str, Any], Any], key: str = "") -> Any:
    """``value`` with every leaf replaced by ``fn(key, leaf)`` (key: its object key)."""
    if isinstance(value, dict):
        return {k: _walk(v, fn, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, fn, key) for v in value]
    return fn(key, value)


def _replace_paths(text: str, ctx: Context) -> str:
    pairs = sorted(ctx.run.paths.get(ctx.side, {}).items(), key=lambda kv: -len(kv[0]))
    for path, placeholder in pairs:
        if path:
            text = text.replace(path, placeholder)
    return text


# ----------------------------------------------------------------------------- rows


def _paths(answer: dict[str, Any], ctx: Context) -> None:
    answer["headers"] = [[n, _replace_paths(v, ctx)] for n, v in answer["headers"]]
    if answer["json"]:
        answer["body"] = _walk(
            answer["body"], lambda _k, v: _replace_paths(v, ctx) if isinstance(v, str) else v
        )
    else:
        answer["body"] = _replace_paths(answer["body"], ctx)


def _content_length(answer: dict[str, Any], ctx: Context) -> None:
    length = answer.pop("raw_length")
    for pair in answer["headers"]:
        if pair[0].lower() == "content-length":
            pair[1] = "<body length>" if pair[1] == str(length) else f"{pair[1]} (body: {length})"


def _pid(answer: dict[str, Any], ctx: Context) -> None:
    body = answer["body"]
    if ctx.endpoint == "vmm.ping" and isinstance(body, dict) and isinstance(body.get("pid"), int):
        body["pid"] = "<pid>"


def _hashmap_order(answer: dict[str, Any], ctx: Context) -> None:
    body = answer["body"]
    if not isinstance(body, dict):
        return
    if ctx.endpoint == "vm.info" and isinstance(body.get("device_tree"), dict):
        body["device_tree"] = dict(sorted(body["device_tree"].items()))
    elif ctx.endpoint == "vm.counters":
        answer["body"] = {
            k: dict(sorted(v.items())) if isinstance(v, dict) else v
            for k, v in sorted(body.items())
        }


def _addresses(answer: dict[str, Any], ctx: Context) -> None:
    body = answer["body"]
    tree = body.get("device_tree") if isinstance(body, dict) else None
    if ctx.endpoint != "vm.info" or not isinstance(tree, dict):
        return
    for node in tree.values():
        for resource in (node.get("resources") or []) if isinstance(node, dict) else []:
            if not isinstance(resource, dict):
                continue
            for value in resource.values():
                if isinstance(value, dict) and "base" in value:
                    value["base"] = "<address>"


def _random_macs(answer: dict[str, Any], ctx: Context) -> None:
    def sub(key: str, value: Any) -> Any:
        if not isinstance(value, str) or value.lower() in ctx.requested_macs:
            return value
        if key == "mac" and _RANDOM_MAC.match(value):
            return "<random 2e: mac>"
        if key == "host_mac" and _ANY_MAC.match(value):
            return "<tap mac>"
        return value

    if answer["json"]:
        answer["body"] = _walk(answer["body"], sub)


def _guest_io(answer: dict[str, Any], ctx: Context) -> None:
    body = answer["body"]
    if ctx.endpoint != "vm.counters" or not ctx.run.sequence.guest or not isinstance(body, dict):
        return
    answer["body"] = {
        device: {k: "<guest I/O>" for k in counters} if isinstance(counters, dict) else counters
        for device, counters in body.items()
    }


def _fd_numbers(answer: dict[str, Any], ctx: Context) -> None:
    body = answer["body"]
    config = body.get("config") if isinstance(body, dict) else None
    if ctx.endpoint != "vm.info" or not isinstance(config, dict):
        return
    for net in config.get("net") or []:
        if isinstance(net, dict) and isinstance(net.get("fds"), list):
            net["fds"] = ["<fd>" if isinstance(fd, int) else fd for fd in net["fds"]]


def _pty(answer: dict[str, Any], ctx: Context) -> None:
    def sub(key: str, value: Any) -> Any:
        return "<pty>" if key == "file" and isinstance(value, str) and _PTY.match(value) else value

    if ctx.endpoint == "vm.info" and answer["json"]:
        answer["body"] = _walk(answer["body"], sub)


def _event_timestamps(events: list[dict[str, Any]], ctx: Context) -> list[dict[str, Any]]:
    out = []
    for event in events:
        event = {k: v for k, v in event.items() if k != "timestamp"}
        props = event.get("properties")
        if isinstance(props, dict):
            event["properties"] = {
                k: _replace_paths(v, ctx) if isinstance(v, str) else v for k, v in props.items()
            }
        out.append(event)
    return out


def _guest_events(events: list[dict[str, Any]], ctx: Context) -> list[dict[str, Any]]:
    return [e for e in events if e.get("source") != "virtio-device"]


#: the VM's and the VMM's own life-cycle events, the ones an exit can lose
LIFECYCLE_EVENTS = frozenset(
    {
        ("vm", "booting"),
        ("vm", "booted"),
        ("vm", "rebooting"),
        ("vm", "rebooted"),
        ("vm", "shutdown"),
        ("vm", "deleted"),
        ("vmm", "shutdown"),
    }
)


def lost_at_exit(
    fake: list[dict[str, Any]], real: list[dict[str, Any]], ended: bool
) -> list[dict[str, Any]]:
    """``fake`` without the tail the real side's exit lost: when the process ended at
    the end of the sequence, the real events are a prefix of fake's and the rest are
    life-cycle events (the ``lost-at-exit`` row)."""
    if not ended or len(real) >= len(fake) or fake[: len(real)] != real:
        return fake
    tail = fake[len(real) :]
    if all((e.get("source"), e.get("event")) in LIFECYCLE_EVENTS for e in tail):
        return fake[: len(real)]
    return fake


NORMALISATIONS: tuple[Normalisation, ...] = (
    Normalisation(
        "paths",
        "headers and bodies of every answer; event properties",
        "each side runs on files of its own (images, sockets, serial files in its own "
        "directory): every path of a side is put back to the sequence's placeholder",
        answer=_paths,
    ),
    Normalisation(
        "content-length",
        "the Content-Length header",
        "a body's length follows the side's path lengths and pid: each side's "
        "Content-Length is checked against its own body, the bodies are compared",
        answer=_content_length,
    ),
    Normalisation(
        "pid",
        "vmm.ping: pid",
        "the two sides are different processes",
        answer=_pid,
    ),
    Normalisation(
        "hashmap-order",
        "vm.info: the order of device_tree's nodes; vm.counters: the order of devices "
        "and of each device's counters",
        "CHV keeps them in Rust HashMaps (vmm/src/device_tree.rs DeviceTree, "
        "DeviceManager::counters), whose iteration order is random per process",
        answer=_hashmap_order,
    ),
    Normalisation(
        "addresses",
        "vm.info: the base address of each device_tree resource (BARs, MMIO ranges)",
        "where CHV places BARs follows the host's physical address width and the memory "
        "layout; sizes, kinds and order are compared",
        answer=_addresses,
    ),
    Normalisation(
        "random-mac",
        "a mac 2e:xx:xx:xx:xx:xx, or any host_mac, that no request of the sequence names",
        "CHV makes up a random locally administered MAC for a net without one "
        "(net_util MacAddr::local_random); a host_mac is the MAC the kernel gave the tap "
        "CHV opened (its presence is compared)",
        answer=_random_macs,
    ),
    Normalisation(
        "guest-io",
        "vm.counters of a sequence with a booted guest: the values (devices and counter "
        "names are compared)",
        "the guest reads and writes its disks and nets as it boots (a partition scan, "
        "DHCP); fakechv has no guest, so its counters stay at their start values",
        answer=_guest_io,
    ),
    Normalisation(
        "fd-numbers",
        "vm.info: the numbers in a net's fds",
        "the descriptor numbers the receiving process gave the tap fds it was passed "
        "(their count is compared)",
        answer=_fd_numbers,
    ),
    Normalisation(
        "pty",
        "vm.info: a serial or console file /dev/pts/N",
        "the pty the kernel hands out",
        answer=_pty,
    ),
    Normalisation(
        "event-timestamps",
        "event records: timestamp",
        "time since the VMM started",
        events=_event_timestamps,
    ),
    Normalisation(
        "guest-events",
        "event records of source virtio-device (activated, reset)",
        "the guest's drivers activate and reset devices when the guest gets there (a "
        "real guest boots for a minute here; fakechv has none): left out on both sides",
        events=_guest_events,
    ),
    Normalisation(
        "lost-at-exit",
        "the last event records, when the real side's are a prefix of fakechv's, the "
        "missing ones are VM or VMM life-cycle events and the process exited at the end",
        "CHV writes events from a thread of their own and exits without joining it "
        "(cloud-hypervisor/src/main.rs@v53.0:722 drops the JoinHandle): the records of "
        "the last moments before the exit are lost or not, by timing",
    ),
    Normalisation(
        "eject-timing",
        "wait-eject steps: how long the eject took, and the vm.info polls while waiting",
        "a real guest ejects 2-10 s after vm.remove-device; whether it ejected is compared",
    ),
    Normalisation(
        "vmm-gone",
        "the rest of a sequence after the real side answered 'API response receive error' "
        "or 'API request send error' (its VMM thread panicked or ended); the step of a "
        "panic the real process exited on before answering",
        "CHV's HTTP thread answers with channel errors until the process exits, a race "
        "of threads: what a request after the panic gets is timing (the step itself is "
        "compared)",
    ),
    Normalisation(
        "vcpu-timeout",
        "a step the real side failed with 'Error from CPU manager' ... 'Timeout', and the "
        "rest of its sequence",
        "CHV waits a fixed time for its vCPU threads to stop; on this loaded 2-core host a "
        "guest's vCPU can miss it (host timing, not an answer of CHV's rules)",
    ),
    Normalisation(
        "migration-window",
        "a step the real side answered 'VM is currently migrating and can't be modified' "
        "(or, for another vm.send-migration, 'There is already an ongoing migration') "
        "after a vm.send-migration it answered 204, and the rest of its sequence",
        "from v53 CHV's migration worker holds the VM until the send is over; how long "
        "that is depends on the transport and the host. A request that comes meanwhile "
        "is refused on the real side and waits for the worker on fakechv's, which is "
        "deterministic (vmm/src/lib.rs@v53.0:640-670, vm.rs:201-202)",
    ),
    Normalisation(
        "guest-nmi",
        "the rest of a sequence after vm.nmi (the step itself is compared)",
        "a booted guest answers an NMI as its kernel does (here: it panics and reboots, "
        "CHV emits rebooting/rebooted), when it gets there; fakechv has no guest",
    ),
    Normalisation(
        "host-limits",
        "the rest of a sequence after the real side answered vm.snapshot, "
        "vm.send-migration or vm.receive-migration with GetNestedState",
        "this host's nested KVM refuses CHV the vCPU state a snapshot or migration needs "
        "(../shared/chv/README.md): the rest is not possible here, and not compared",
    ),
)


def format_table() -> str:
    """The table, for ``--list-normalisations``: the normalisations, then the known gaps."""
    lines = []
    for i, row in enumerate(NORMALISATIONS, 1):
        lines.append(f"{i:2}. {row.name}")
        lines.append(f"    applies to: {row.scope}")
        lines.append(f"    reason:     {row.reason}")
    lines += ["", "known gaps (fakechv's, open: compared up to them, counted, not failed):"]
    for gap in KNOWN_GAPS:
        lines.append(f"  - {gap.name}")
        lines.append(f"    applies to: {gap.scope}")
        lines.append(f"    why open:   {gap.reason}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- applying


def requested_macs(run: SequenceRun) -> set[str]:
    found: set[str] = set()
    for step in run.sequence.steps:
        found |= {
            m.lower() for m in re.findall(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}", step.body or "")
        }
    return found


def observe(run: SequenceRun, step: StepRun, side: str, macs: set[str]) -> Observed:
    """What ``side`` did at ``step``, with every row applied."""
    result: SideResult = step.sides[side]
    ctx = Context(run, step, side, macs)
    answers = []
    for a in result.answers:
        answer: dict[str, Any] = {
            "status_line": a.status_line,
            "headers": [list(h) for h in a.headers],
            "raw_length": len(a.body),
        }
        text = a.body.decode("utf-8", "backslashreplace")
        try:
            answer["body"], answer["json"] = json.loads(text), True
        except (ValueError, RecursionError):
            answer["body"], answer["json"] = text, False
        for row in NORMALISATIONS:
            if row.answer is not None:
                row.answer(answer, ctx)
        answer.pop("raw_length", None)
        answers.append(answer)
    outcome = result.outcome
    if outcome and step.step.kind in ("request", "raw"):
        outcome = _replace_paths(outcome, ctx)
    # the process ending is compared where it took the place of an answer (a crash);
    # how soon it exits after answering is timing, and its final status is compared
    # at the end of the sequence
    ended = exit_text(result.exit) if not result.answers else ""
    return Observed(answers, result.closed, ended, outcome)


def observe_events(run: SequenceRun, side: str) -> list[dict[str, Any]]:
    ctx = Context(run, None, side)
    events = list(run.events.get(side, []))
    for row in NORMALISATIONS:
        if row.events is not None:
            events = row.events(events, ctx)
    return events


#: what CHV's HTTP thread answers once the VMM thread is gone (vmm/src/api/mod.rs)
_VMM_GONE = re.compile(r"API response receive error|API request send error")
#: CHV gave up waiting for a vCPU thread (a loaded host, a guest mid-boot)
_VCPU_TIMEOUT = re.compile(r"Error from CPU manager.*Timeout", re.S)
#: the real migration worker still runs (v53 and head carry both texts: vmm/src/lib.rs)
_MIGRATING = re.compile(
    r"VM is currently migrating and can't be modified|There is already an ongoing migration"
)


@dataclass(frozen=True)
class KnownGap:
    """A difference that is fakechv's, known and open: not the environment, so not a
    normalisation; the sequence is compared up to it and counted as a known gap, so
    that it stays visible without failing the check. Each row is a fakechv fix to make."""

    name: str
    scope: str
    reason: str
    #: the index of the step the gap starts at in a run, or None where it does not show
    starts: Callable[[SequenceRun], int | None] = lambda run: None


#: fakechv's open differences (each is a fix still to make in fakechv); none is open
#: now: the former two, the v53+ migration worker and the slot of a failed VFIO hot-add,
#: are modelled
KNOWN_GAPS: tuple[KnownGap, ...] = ()


def known_gap(run: SequenceRun) -> tuple[int, str] | None:
    """The step from which a known gap stops the comparison, and the gap's name."""
    for gap in KNOWN_GAPS:
        index = gap.starts(run)
        if index is not None:
            return index, gap.name
    return None


def cut_at(run: SequenceRun) -> int | None:
    """The index of the step from which nothing is compared (this host's limits, or
    the steps after the real VMM thread died)."""
    for step in run.steps:
        real = step.sides["real"]
        if any(_VMM_GONE.search(a.body.decode("utf-8", "replace")) for a in real.answers):
            return step.index + 1
        fake_panicked = any(
            "API response receive error" in a.body.decode("utf-8", "replace")
            for a in step.sides["fake"].answers
        )
        if fake_panicked and not real.answers and (real.closed or real.exit is not None):
            return step.index  # the real process exited before its HTTP thread answered
        if any(
            _VCPU_TIMEOUT.search(a.body.decode("utf-8", "replace"))
            for a in step.sides["real"].answers
        ):
            return step.index
        if any(_MIGRATING.search(a.body.decode("utf-8", "replace")) for a in real.answers):
            return step.index
        if step.step.endpoint == "vm.nmi" and step.sides["real"].answers:
            return step.index + 1
        if step.step.endpoint not in ("vm.snapshot", "vm.send-migration", "vm.receive-migration"):
            continue
        for answer in step.sides["real"].answers:
            if _NO_VCPU_STATE.search(answer.body.decode("utf-8", "replace")):
                return step.index
    return None
