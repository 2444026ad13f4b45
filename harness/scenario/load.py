"""Scenario files: load, validate and represent them (format: ``docs/scenario-format.md``).

A scenario file is YAML. :func:`load_scenario` reads it with a loader that records the
line of every mapping, key and list item (:mod:`harness.scenario.yamllines`), checks it
against the format (keys, step kinds, commands, documents, expectations) and returns a
:class:`Scenario`. Any problem is a
:class:`ScenarioError` whose message starts with ``FILE:LINE:`` and names the offending key
or value, so a command-line front end can print it as is.

Nothing here runs anything: commands are parsed by :mod:`harness.model.virsh`, run by
:mod:`harness.scenario.run`. The loader is bounded (:data:`MAX_STEPS` and the limits
below, :mod:`harness.scenario.files` for the files it reads).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from lxml import etree

from fakechv.errors import brief
from fakechv.profiles import PROFILES
from harness.model.address import AddressError, PciAddress
from harness.model.virsh import FILE_ARGUMENTS, Command, VirshError, parse_command
from harness.scenario.files import DocumentAccess, Unreadable, read_text_file, why_unreadable
from harness.scenario.model import (
    _BDF_FULL,
    DEFAULT_PROFILE,
    DEVICE_CLASSES,
    DOMAIN_STATES,
    FEATURES,
    KNOWN_PROFILES,
    SIDES,
    VIOLATION_RULES,
    Document,
    Expectation,
    Scenario,
    ScenarioError,
    SlotSpec,
    Step,
    normalise_bdf,
)
from harness.scenario.yamllines import (
    MAX_NESTING,
    MAX_NODES,
    MAX_NUMBER_DIGITS,
    YamlMap,
    parse_yaml,
)

__all__ = [
    "MAX_DOCUMENTS",
    "MAX_HOSTS",
    "MAX_NESTING",
    "MAX_NODES",
    "MAX_NUMBER_DIGITS",
    "MAX_STEPS",
    "find_scenarios",
    "iter_loaded",
    "load_scenario",
    "parse_scenario",
]


#: most steps in one scenario
MAX_STEPS = 10_000
#: most hosts and documents in one scenario
MAX_HOSTS = 16
MAX_DOCUMENTS = 256


_TOP_KEYS = (
    "name",
    "source",
    "description",
    "profile",
    "profiles",
    "hosts",
    "requires",
    "segments",
    "eject",
    "tags",
    "documents",
    "steps",
)
_STEP_KINDS = ("run", "fail", "expect", "snapshot", "fault")
_MODIFIERS: dict[str, tuple[str, ...]] = {
    "run": ("host", "violations"),
    "fail": ("host", "message", "violations"),
    "expect": ("host",),
    "snapshot": ("host",),
    "fault": ("host",),
}
_EXPECT_KEYS = ("domain", "device", "live", "persistent", "chv", "exact", "state")
_FAULT_KEYS = ("endpoint", "count", "status", "messages", "domain")
_SLOT_KEY = re.compile(r"[0-9a-fA-F]{2}")
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


# --------------------------------------------------------------------------- validation
class _Checker:
    def __init__(self, path: Path, access: DocumentAccess) -> None:
        self.path = path
        self.access = access

    def fail(self, line: int, message: str) -> ScenarioError:
        return ScenarioError(f"{self.path}:{line}: {message}")

    def expect_type(self, value: Any, kinds: type | tuple[type, ...], line: int, what: str) -> None:
        if isinstance(value, bool) and bool not in (
            kinds if isinstance(kinds, tuple) else (kinds,)
        ):
            raise self.fail(line, f"{what} must be {_kind_name(kinds)}, not {brief(value)}")
        if not isinstance(value, kinds):
            raise self.fail(line, f"{what} must be {_kind_name(kinds)}, not {brief(value)}")

    def unknown_keys(self, data: YamlMap, allowed: Iterable[str], what: str) -> None:
        allowed = tuple(allowed)
        for key in data:
            if key not in allowed:
                raise self.fail(
                    data.key_lines[key],
                    f"unknown {what} key {brief(key)} (expected one of: {', '.join(allowed)})",
                )

    def str_list(self, data: YamlMap, key: str) -> list[str]:
        value = data[key]
        line = data.value_lines[key]
        if isinstance(value, str):
            return [value]
        self.expect_type(value, list, line, f"'{key}'")
        for item, item_line in zip(value, value.item_lines, strict=True):
            self.expect_type(item, str, item_line, f"an item of '{key}'")
        return list(value)


def _kind_name(kinds: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list"}
    names[dict] = "a mapping"
    items = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(names.get(k, k.__name__) for k in items)


def load_scenario(path: Path | str, access: DocumentAccess | None = None) -> Scenario:
    """Read and validate one scenario file; ScenarioError (FILE:LINE: reason) if it is bad.

    Bounded: files of at most :data:`MAX_FILE_BYTES`, no YAML aliases, at most
    :data:`MAX_NESTING` levels and :data:`MAX_STEPS` steps; documents only from the
    folders ``access`` allows."""
    path = Path(path)
    try:
        text = read_text_file(path)
    except Unreadable as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc}") from None
    return parse_scenario(text, path, access)


def parse_scenario(text: str, path: Path, access: DocumentAccess | None = None) -> Scenario:
    """Validate the YAML ``text`` of a scenario file named ``path``."""
    chk = _Checker(path, access or DocumentAccess())
    data = parse_yaml(text, str(path))
    if not isinstance(data, YamlMap):
        raise chk.fail(1, "a scenario must be a YAML mapping with at least 'name' and 'steps'")
    chk.unknown_keys(data, _TOP_KEYS, "top-level")
    for key in ("name", "steps"):
        if key not in data:
            raise chk.fail(data.line, f"missing required key '{key}'")
    for key in ("name", "source", "description"):
        if key in data:
            chk.expect_type(data[key], str, data.value_lines[key], f"'{key}'")
            data[key] = _uncut(text, data, key)
    name = str(data["name"]).strip()
    if not name:
        raise chk.fail(data.value_lines["name"], "'name' must not be empty")

    profiles = _profiles(chk, data)
    hosts = ["host"]
    if "hosts" in data:
        hosts = chk.str_list(data, "hosts")
        if not hosts:
            raise chk.fail(data.value_lines["hosts"], "'hosts' must name at least one host")
        if len(hosts) > MAX_HOSTS:
            raise chk.fail(data.value_lines["hosts"], f"more than {MAX_HOSTS} hosts")
        for host in hosts:
            if not _NAME.fullmatch(host):
                raise chk.fail(data.value_lines["hosts"], f"host name {brief(host)} is not valid")
        if len(set(hosts)) != len(hosts):
            raise chk.fail(data.value_lines["hosts"], "'hosts' names a host twice")
    requires: list[str] = []
    if "requires" in data:
        requires = chk.str_list(data, "requires")
        for feature in requires:
            if feature not in FEATURES:
                raise chk.fail(
                    data.value_lines["requires"],
                    f"unknown feature {brief(feature)} in 'requires' "
                    f"(known: {', '.join(FEATURES)})",
                )
    tags = chk.str_list(data, "tags") if "tags" in data else []
    segments = 1
    if "segments" in data:
        segments = data["segments"]
        chk.expect_type(segments, int, data.value_lines["segments"], "'segments'")
        if not 1 <= segments <= 96:
            raise chk.fail(data.value_lines["segments"], "'segments' must be 1..96")

    eject = "immediate"
    if "eject" in data:
        value = data["eject"]
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            eject = str(value)
        elif value in ("immediate", "never"):
            eject = value
        else:
            raise chk.fail(
                data.value_lines["eject"],
                f"'eject' must be immediate, never or a delay in milliseconds, not {brief(value)}",
            )
    documents = _documents(chk, data)
    scenario = Scenario(
        path=path,
        name=name,
        source=str(data.get("source", "")).strip(),
        description=str(data.get("description", "")).strip(),
        profiles=profiles,
        hosts=hosts,
        documents=documents,
        steps=[],
        requires=requires,
        segments=segments,
        eject=eject,
        tags=tags,
        access=chk.access,
    )
    scenario.steps = _steps(chk, data, scenario)
    return scenario


def _uncut(text: str, data: YamlMap, key: str) -> str:
    """A free-text value (``source: issue #12``) with what YAML read as a comment: in an
    unquoted one-line ``name``, ``source`` or ``description``, `` #`` is part of the text."""
    value = str(data[key])
    line_no = data.value_lines[key]
    if data.key_lines.get(key) != line_no:
        return value  # a block or multi-line value: YAML's rules, as written
    lines = text.splitlines()
    line = lines[line_no - 1] if 0 < line_no <= len(lines) else ""
    match = re.match(rf"^\s*{re.escape(key)}\s*:\s*(?P<rest>.*)$", line)
    if match is None:
        return value
    rest = match.group("rest").rstrip()
    if rest[:1] in ("'", '"', "|", ">", "&", "!", "*") or " #" not in rest:
        return value
    if rest.split(" #", 1)[0].strip() != value.strip():
        return value
    return rest


def _profiles(chk: _Checker, data: YamlMap) -> list[str]:
    if "profile" in data and "profiles" in data:
        raise chk.fail(data.key_lines["profiles"], "give either 'profile' or 'profiles', not both")
    if "profile" in data:
        chk.expect_type(data["profile"], str, data.value_lines["profile"], "'profile'")
        profiles = [data["profile"]]
        line = data.value_lines["profile"]
    elif "profiles" in data:
        profiles = chk.str_list(data, "profiles")
        line = data.value_lines["profiles"]
        if not profiles:
            raise chk.fail(line, "'profiles' must name at least one CHV profile")
    else:
        return [DEFAULT_PROFILE]
    for profile in profiles:
        if profile not in KNOWN_PROFILES:
            raise chk.fail(
                line,
                f"unknown CHV profile {brief(profile)} (known: {', '.join(KNOWN_PROFILES)})",
            )
    if len(set(profiles)) != len(profiles):
        raise chk.fail(line, "a profile is listed twice")
    return profiles


def _documents(chk: _Checker, data: YamlMap) -> dict[str, Document]:
    if "documents" not in data:
        return {}
    docs = data["documents"]
    chk.expect_type(docs, dict, data.value_lines["documents"], "'documents'")
    if len(docs) > MAX_DOCUMENTS:
        raise chk.fail(data.value_lines["documents"], f"more than {MAX_DOCUMENTS} documents")
    out: dict[str, Document] = {}
    for name, value in docs.items():
        line = docs.key_lines[name]
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise chk.fail(line, f"document name {brief(name)} is not valid (letters, digits, -_.)")
        if isinstance(value, str):
            out[name] = Document(name, value)
            continue
        if not isinstance(value, YamlMap) or set(value) != {"file"}:
            raise chk.fail(
                docs.value_lines[name],
                f"document '{name}' must be inline XML text or {{file: PATH}}",
            )
        ref = value["file"]
        chk.expect_type(ref, str, value.value_lines["file"], f"'file' of document '{name}'")
        file = chk.path.parent / ref
        refusal = chk.access.refusal(chk.path, ref)
        if refusal is not None:
            raise chk.fail(value.value_lines["file"], f"document '{name}': {refusal}")
        try:
            text = read_text_file(file)
        except Unreadable as exc:
            raise chk.fail(
                value.value_lines["file"], f"document '{name}': {why_unreadable(ref, exc)}"
            ) from None
        out[name] = Document(name, text, file.resolve())
    return out


def _steps(chk: _Checker, data: YamlMap, scenario: Scenario) -> list[Step]:
    raw = data["steps"]
    chk.expect_type(raw, list, data.value_lines["steps"], "'steps'")
    if not raw:
        raise chk.fail(data.value_lines["steps"], "'steps' is empty")
    if len(raw) > MAX_STEPS:
        raise chk.fail(
            data.value_lines["steps"], f"{len(raw)} steps, more than the limit of {MAX_STEPS}"
        )
    steps: list[Step] = []
    snapshots: set[str] = set()
    for index, (item, line) in enumerate(zip(raw, raw.item_lines, strict=True), start=1):
        if isinstance(item, str) and item == "in-sync":
            item = YamlMap({"expect": "in-sync"})
            item.line, item.key_lines = line, {"expect": line}
            item.value_lines, item.plain_keys = {"expect": line}, {}
        if not isinstance(item, YamlMap):
            raise chk.fail(
                line,
                f"step {index} must be a mapping with one of: {', '.join(_STEP_KINDS)}",
            )
        kinds = [k for k in item if k in _STEP_KINDS]
        if not kinds:
            first = next(iter(item), None)
            where = item.key_lines.get(first, line) if first is not None else line
            raise chk.fail(
                where,
                f"unknown step key {brief(first)} (a step has one of: {', '.join(_STEP_KINDS)})",
            )
        if len(kinds) > 1:
            raise chk.fail(line, f"step {index} has both '{kinds[0]}' and '{kinds[1]}'")
        kind = kinds[0]
        allowed = (kind, *_MODIFIERS[kind])
        for key in item:
            if key not in allowed:
                raise chk.fail(
                    item.key_lines[key],
                    f"unknown step key {brief(key)} in a '{kind}' step "
                    f"(allowed: {', '.join(allowed)})",
                )
        host = scenario.hosts[0]
        if "host" in item:
            host = item["host"]
            if not isinstance(host, str) or host not in scenario.hosts:
                raise chk.fail(
                    item.value_lines["host"],
                    f"host {brief(host)} is not one of the scenario's hosts "
                    f"({', '.join(scenario.hosts)})",
                )
        vline = item.value_lines[kind]
        step = Step(index=index, line=line, kind=kind, text="", host=host)
        if kind in ("run", "fail"):
            cmd_text = item[kind]
            chk.expect_type(cmd_text, str, vline, f"'{kind}'")
            try:
                step.command = parse_command(cmd_text)
            except VirshError as exc:
                raise chk.fail(vline, str(exc)) from None
            _check_command(chk, vline, step.command, scenario, must_work=kind == "run")
            step.text = cmd_text.strip() if kind == "run" else f"fail: {cmd_text.strip()}"
            if "message" in item:
                chk.expect_type(item["message"], str, item.value_lines["message"], "'message'")
                step.message = item["message"]
            if "violations" in item:
                rules = chk.str_list(item, "violations")
                for rule in rules:
                    if rule not in VIOLATION_RULES:
                        raise chk.fail(
                            item.value_lines["violations"],
                            f"unknown invariant rule {brief(rule)} in 'violations' "
                            f"(known: {', '.join(VIOLATION_RULES)})",
                        )
                step.violations = tuple(rules)
        elif kind == "expect":
            body = item[kind]
            if isinstance(body, YamlMap) and "host" in body:  # `expect: {host: dst, ...}`
                if "host" in item:
                    raise chk.fail(body.key_lines["host"], "the host is given twice")
                step.host = body["host"]
                if not isinstance(step.host, str) or step.host not in scenario.hosts:
                    raise chk.fail(
                        body.value_lines["host"],
                        f"host {brief(step.host)} is not one of the scenario's hosts "
                        f"({', '.join(scenario.hosts)})",
                    )
                rest = YamlMap({k: v for k, v in body.items() if k != "host"})
                rest.line, rest.plain_keys = body.line, body.plain_keys
                rest.key_lines, rest.value_lines = body.key_lines, body.value_lines
                body = rest
            step.expect = _expectation(chk, body, vline, snapshots)
            step.text = "expect " + _expect_text(item[kind])
        elif kind == "snapshot":
            snap = item[kind]
            chk.expect_type(snap, str, vline, "'snapshot'")
            if not _NAME.fullmatch(snap):
                raise chk.fail(vline, f"snapshot name {brief(snap)} is not valid")
            snapshots.add(snap)
            step.snapshot = snap
            step.text = f"snapshot {snap}"
        else:
            step.fault = _fault(chk, item[kind], vline, scenario.profiles)
            step.text = "fault " + ", ".join(f"{k}={v}" for k, v in step.fault.items())
        steps.append(step)
    return steps


#: AddressError wording of a malformed ``--address`` (not of one out of libvirt's ranges)
_MALFORMED_ADDRESS = ("not a hexadecimal number", "expected 4 fields", "is not a PCI address")


def _check_command(
    chk: _Checker, line: int, command: Command, scenario: Scenario, *, must_work: bool
) -> None:
    """What can be known before a run: documents exist and parse, ``--address`` is an
    address (a ``run:`` step's is also in libvirt's ranges; a ``fail:`` step may give one
    that is not, the refusal being the point)."""
    address = command.args.get("address")
    if isinstance(address, str) and address.startswith("pci:"):
        try:
            PciAddress.from_virsh(address)
        except AddressError as exc:
            if must_work or any(word in str(exc) for word in _MALFORMED_ADDRESS):
                raise chk.fail(line, f"--address {address}: {exc}") from None
    for arg in FILE_ARGUMENTS.get(command.name, ()):
        ref = command.args.get(arg)
        if not isinstance(ref, str):
            continue
        if ref in scenario.documents:
            _check_xml(chk, line, scenario.documents[ref], ref)
            continue
        refusal = scenario.access.refusal(scenario.path, ref)
        if refusal is not None:
            raise chk.fail(line, f"document {brief(ref)}: {refusal}")
        if not (scenario.path.parent / ref).is_file():
            known = ", ".join(sorted(scenario.documents)) or "none"
            raise chk.fail(
                line,
                f"missing document '{ref}': not in 'documents' (known: {known}) "
                f"and no such file next to the scenario",
            )
        _check_xml(chk, line, scenario.document(ref), ref)
    if command.name == "migrate":
        dest = command.args.get("desturi")
        if dest not in scenario.hosts:
            raise chk.fail(
                line,
                f"migrate --desturi {brief(dest)} is not one of the scenario's hosts "
                f"({', '.join(scenario.hosts)})",
            )
        if "migration" not in scenario.requires:
            raise chk.fail(line, "a scenario that migrates must say 'requires: [migration]'")


def _check_xml(chk: _Checker, line: int, doc: Document, ref: str) -> None:
    """A document a command gives libvirt is well-formed XML (its schema is checked by
    :func:`schema_problems`, which needs libvirt's tools)."""
    try:
        etree.fromstring(doc.text.encode("utf-8"))
    except etree.XMLSyntaxError as exc:
        raise chk.fail(line, f"document {brief(ref)} ({doc.source}) is not XML: {exc}") from None


def _expect_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        parts = []
        for key, val in value.items():
            if isinstance(val, dict):
                val = "{" + ", ".join(f"{k}: {v}" for k, v in val.items()) + "}"
            parts.append(f"{key}: {val}")
        return ", ".join(parts)
    return repr(value)


def _expectation(chk: _Checker, value: Any, line: int, snapshots: set[str]) -> Expectation:
    if value == "in-sync":
        return Expectation(in_sync=True)
    if not isinstance(value, YamlMap):
        raise chk.fail(line, "'expect' must be 'in-sync' or a mapping (see the format)")
    chk.unknown_keys(value, _EXPECT_KEYS, "expect")
    exp = Expectation()
    for key in ("domain", "device", "state"):
        if key in value:
            chk.expect_type(value[key], str, value.value_lines[key], f"'{key}'")
    exp.domain = value.get("domain")
    exp.device = value.get("device")
    if exp.device is not None:
        first = exp.device.split(" ", 1)[0]
        if first not in DEVICE_CLASSES:
            raise chk.fail(
                value.value_lines["device"],
                f"device {brief(exp.device)} is not a device label (e.g. 'disk vdb', "
                f"'interface 52:54:00:e5:b8:02', 'rng')",
            )
    if "state" in value:
        if value["state"] not in DOMAIN_STATES:
            raise chk.fail(
                value.value_lines["state"],
                f"unknown domain state {brief(value['state'])} (known: {', '.join(DOMAIN_STATES)})",
            )
        exp.state = value["state"]
    if "exact" in value:
        chk.expect_type(value["exact"], bool, value.value_lines["exact"], "'exact'")
        exp.exact = value["exact"]
    for side in SIDES:
        if side not in value:
            continue
        raw = value[side]
        vline = value.value_lines[side]
        if exp.device is not None:
            if raw == "absent":
                exp.sides[side] = "absent"
                continue
            if not isinstance(raw, str) or normalise_bdf(raw) is None:
                raise chk.fail(
                    vline,
                    f"'{side}' of device {brief(exp.device)} must be a BDF like 00:04.0 or "
                    f"0000:00:04.0, or 'absent', not {brief(raw)}",
                )
            exp.sides[side] = str(normalise_bdf(raw))
            continue
        if isinstance(raw, str):
            if raw.startswith("same-as-"):
                other = raw[len("same-as-") :]
                if other not in SIDES or other == side:
                    raise chk.fail(vline, f"'{side}: {raw}' must name another side")
                exp.sides[side] = raw
                continue
            if raw.startswith("snapshot "):
                snap = raw[len("snapshot ") :].strip()
                if snap not in snapshots:
                    raise chk.fail(vline, f"no snapshot named {brief(snap)} was taken before")
                exp.sides[side] = f"snapshot {snap}"
                continue
            raise chk.fail(
                vline,
                f"'{side}' must be a slot map, 'same-as-<side>' or 'snapshot NAME' "
                f"(or give 'device:' to check one device), not {brief(raw)}",
            )
        if not isinstance(raw, YamlMap):
            raise chk.fail(vline, f"'{side}' must be a slot map, not {brief(raw)}")
        exp.sides[side] = _slot_map(chk, raw, side)
    if not exp.sides and exp.state is None:
        raise chk.fail(line, "'expect' checks nothing: give live, persistent, chv or state")
    if exp.exact and not any(isinstance(v, list) for v in exp.sides.values()):
        raise chk.fail(value.key_lines["exact"], "'exact' only applies to slot maps")
    return exp


def _slot_map(chk: _Checker, raw: YamlMap, side: str) -> list[SlotSpec]:
    out: list[SlotSpec] = []
    for key, value in raw.items():
        kline = raw.key_lines[key]
        if not isinstance(key, str):
            text = raw.plain_keys.get(key, repr(key))
            raise chk.fail(
                kline,
                f"slot key {text} in '{side}' must be a quoted string such as \"{text}\" "
                "(YAML reads unquoted numbers as integers, and 010 as octal 8)",
            )
        if _SLOT_KEY.fullmatch(key):
            slot = int(key, 16)
            if slot > 0x1F:
                raise chk.fail(kline, f"slot key {brief(key)} in '{side}' is above 1f")
            bdf = f"0000:00:{slot:02x}.0"
        else:
            norm = normalise_bdf(key)
            if norm is None or _BDF_FULL.fullmatch(key) is None:
                raise chk.fail(
                    kline,
                    f"slot key {brief(key)} in '{side}' must be a hex slot like \"04\" or a full "
                    'BDF like "0000:00:04.0"',
                )
            bdf = norm
        if not isinstance(value, str):
            raise chk.fail(
                raw.value_lines[key], f"slot {brief(key)} in '{side}' must name a device or 'empty'"
            )
        value = value.strip()
        if value != "empty" and value.split(" ", 1)[0] not in (*DEVICE_CLASSES, "CHV"):
            raise chk.fail(
                raw.value_lines[key],
                f"slot {brief(key)} in '{side}': {brief(value)} is not 'empty', a device class "
                f"({', '.join(DEVICE_CLASSES)}) or a device label",
            )
        if any(s.bdf == bdf for s in out):
            raise chk.fail(kline, f"slot {bdf} is listed twice in '{side}'")
        out.append(SlotSpec(bdf, value))
    return out


def _fault(chk: _Checker, value: Any, line: int, profiles: list[str]) -> dict[str, Any]:
    if not isinstance(value, YamlMap):
        raise chk.fail(line, "'fault' must be a mapping with at least 'endpoint'")
    chk.unknown_keys(value, _FAULT_KEYS, "fault")
    if "endpoint" not in value:
        raise chk.fail(line, "'fault' needs an 'endpoint' (e.g. vm.add-disk)")
    endpoint = value["endpoint"]
    chk.expect_type(endpoint, str, value.value_lines["endpoint"], "'endpoint'")
    if not re.fullmatch(r"vmm?\.[a-z-]+", endpoint):
        raise chk.fail(
            value.value_lines["endpoint"],
            f"'endpoint' {brief(endpoint)} is not a CHV endpoint name like vm.add-disk",
        )
    for profile in profiles:
        routes = PROFILES[profile].routes if profile in PROFILES else {}
        if routes and endpoint not in routes:
            near = difflib.get_close_matches(endpoint, list(routes), n=3)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise chk.fail(
                value.value_lines["endpoint"],
                f"'endpoint' {brief(endpoint)} is not an endpoint of CHV {profile}{hint}",
            )
    out: dict[str, Any] = {"endpoint": endpoint, "count": 1}
    if "count" in value:
        chk.expect_type(value["count"], int, value.value_lines["count"], "'count'")
        if value["count"] < 1:
            raise chk.fail(value.value_lines["count"], "'count' must be at least 1")
        out["count"] = value["count"]
    if "status" in value:
        chk.expect_type(value["status"], int, value.value_lines["status"], "'status'")
        if not 400 <= value["status"] <= 599:
            raise chk.fail(value.value_lines["status"], "'status' must be 400..599")
        out["status"] = value["status"]
    if "messages" in value:
        out["messages"] = chk.str_list(value, "messages")
    if "domain" in value:
        chk.expect_type(value["domain"], str, value.value_lines["domain"], "'domain'")
        out["domain"] = value["domain"]
    return out


# --------------------------------------------------------------------------- discovery
def find_scenarios(paths: Iterable[Path | str]) -> list[Path]:
    """Scenario files under ``paths`` (files as given, directories searched for *.yaml).

    A path that does not exist is a ScenarioError.
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*.yaml") if p.is_file()))
            out.extend(sorted(p for p in path.rglob("*.yml") if p.is_file()))
        elif path.is_file():
            out.append(path)
        else:
            raise ScenarioError(f"{path}: no such scenario file or directory")
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def iter_loaded(
    paths: Iterable[Path], access: DocumentAccess | None = None
) -> Iterator[Scenario | ScenarioError]:
    """Load every path, yielding a Scenario or the ScenarioError that rejected it."""
    for path in paths:
        try:
            yield load_scenario(path, access)
        except ScenarioError as exc:
            yield exc
