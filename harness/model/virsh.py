"""virsh-like commands of scenario steps: parsing and the XML virsh builds.

:func:`parse_command` splits a step such as ``attach-disk testvm --target vdb --source
/nfs/vdb.img --persistent`` with :mod:`shlex` and reads it as virsh does: named options
(``--target vdb`` or ``--target=vdb``), boolean flags, and bare words filling the
command's positional options in order (``attach-disk DOMAIN SOURCE TARGET``). The result
is a :class:`Command` (command name plus typed option values). Errors use virsh's wording.

:func:`disk_xml` and :func:`interface_xml` build the device XML that ``virsh attach-disk``
and ``virsh attach-interface`` send to libvirt, element for element (virsh-domain.c:
``cmdAttachDisk``, ``cmdAttachInterface``): ``--address pci:D.B.S.F`` is four hexadecimal
fields, each followed by any one separator character, not range-checked (libvirt's XML
parser does that), and written as ``<address type='pci' domain='0x%04x' bus='0x%02x'
slot='0x%02x' function='0x%x'/>``.
"""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass, field

from lxml import etree

from harness.errors import HarnessError
from harness.model.domain import Device, Domain

__all__ = [
    "COMMANDS",
    "FILE_ARGUMENTS",
    "Command",
    "CommandSpec",
    "VirshError",
    "disk_xml",
    "interface_xml",
    "parse_command",
    "parse_virsh_address",
]


class VirshError(HarnessError):
    """virsh would reject the command line before talking to libvirt."""


@dataclass(frozen=True)
class CommandSpec:
    """One command's options: positional ones in order, then named strings and flags."""

    name: str
    positional: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    strings: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    help: str = ""


_DEVICE_FLAGS = ("persistent", "config", "live", "current")

COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        CommandSpec("define", ("file",), ("file",), help="define a persistent domain from XML"),
        CommandSpec("undefine", ("domain",), ("domain",), help="remove a persistent definition"),
        CommandSpec("create", ("file",), ("file",), help="start a transient domain from XML"),
        CommandSpec("start", ("domain",), ("domain",), help="start a defined domain"),
        CommandSpec("destroy", ("domain",), ("domain",), help="stop a domain at once"),
        CommandSpec("shutdown", ("domain",), ("domain",), help="shut a domain down"),
        CommandSpec("reboot", ("domain",), ("domain",), help="reboot a domain"),
        CommandSpec("managedsave", ("domain",), ("domain",), help="save; the next start restores"),
        CommandSpec(
            "attach-device",
            ("domain", "file"),
            ("domain", "file"),
            flags=_DEVICE_FLAGS,
            help="attach a device from an XML document",
        ),
        CommandSpec(
            "detach-device",
            ("domain", "file"),
            ("domain", "file"),
            flags=_DEVICE_FLAGS,
            help="detach the device an XML document describes",
        ),
        CommandSpec(
            "attach-disk",
            ("domain", "source", "target"),
            ("domain", "source", "target"),
            strings=(
                "targetbus",
                "driver",
                "subdriver",
                "iothread",
                "cache",
                "io",
                "type",
                "mode",
                "sourcetype",
                "serial",
                "wwn",
                "alias",
                "address",
            ),
            flags=("rawio", "multifunction", *_DEVICE_FLAGS),
            help="attach a disk (XML built as virsh does)",
        ),
        CommandSpec(
            "detach-disk",
            ("domain", "target"),
            ("domain", "target"),
            flags=_DEVICE_FLAGS,
            help="detach the disk with a target name",
        ),
        CommandSpec(
            "attach-interface",
            ("domain", "type", "source"),
            ("domain", "type", "source"),
            strings=("target", "mac", "script", "model", "alias"),
            flags=("managed", *_DEVICE_FLAGS),
            help="attach a network interface (XML built as virsh does)",
        ),
        CommandSpec(
            "detach-interface",
            ("domain", "type"),
            ("domain", "type"),
            strings=("mac",),
            flags=_DEVICE_FLAGS,
            help="detach the interface with a type and MAC",
        ),
        CommandSpec("save", ("domain", "file"), ("domain", "file"), help="save a domain to a file"),
        CommandSpec("restore", ("file",), ("file",), help="restore a domain from a save file"),
        CommandSpec("daemon-restart", help="restart the management daemon"),
        CommandSpec(
            "migrate",
            ("domain", "desturi"),
            ("domain", "desturi"),
            strings=("parallel-connections", "migrateuri"),
            flags=("live", "p2p", "persistent", "undefinesource", "parallel", "offline"),
            help="migrate a domain to another host of the scenario",
        ),
    )
}

#: command -> the options naming an XML document (a scenario's ``documents:`` entry)
FILE_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "define": ("file",),
    "create": ("file",),
    "attach-device": ("file",),
    "detach-device": ("file",),
}


@dataclass(frozen=True)
class Command:
    """A parsed command line: the command and its option values."""

    name: str
    args: dict[str, str | bool] = field(default_factory=dict)
    text: str = ""

    def get(self, option: str) -> str | None:
        value = self.args.get(option)
        return value if isinstance(value, str) else None

    def flag(self, option: str) -> bool:
        return self.args.get(option) is True

    @property
    def domain(self) -> str | None:
        return self.get("domain")

    def device_flags(self) -> dict[str, bool]:
        """``--live/--config/--current/--persistent`` as keyword arguments."""
        return {name: self.flag(name) for name in _DEVICE_FLAGS}


def parse_command(text: str) -> Command:
    """Parse one virsh-like command line (see the module doc); VirshError if invalid.

    The same line gives the same (shared, never changed) :class:`Command`: a property
    run or a scenario suite parses a small vocabulary of lines over and over."""
    if not isinstance(text, str):
        raise VirshError(f"a command must be text, not {text!r}")
    return _parse(text)


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> Command:
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise VirshError(f"cannot parse command {text!r}: {exc}") from None
    if words and words[0] == "virsh":
        words = words[1:]
    if not words:
        raise VirshError("empty command")
    name, rest = words[0], words[1:]
    spec = COMMANDS.get(name)
    if spec is None:
        known = ", ".join(sorted(COMMANDS))
        raise VirshError(f"unknown command: '{name}' (known: {known})")
    args: dict[str, str | bool] = {}
    i = 0
    while i < len(rest):
        word = rest[i]
        i += 1
        if word.startswith("--") and len(word) > 2:
            option, eq, value = word[2:].partition("=")
            if option in spec.flags:
                if eq:
                    raise VirshError(f"option --{option} of command '{name}' takes no value")
                args[option] = True
                continue
            if option not in spec.strings and option not in spec.positional:
                raise VirshError(f"command '{name}' doesn't support option --{option}")
            if not eq:
                if i >= len(rest):
                    raise VirshError(f"command '{name}': option --{option} requires an argument")
                value = rest[i]
                i += 1
            if option in args:
                raise VirshError(f"command '{name}': option --{option} given twice")
            args[option] = value
            continue
        slot = next((p for p in spec.positional if p not in args), None)
        if slot is None:
            raise VirshError(f"command '{name}': unexpected data '{word}'")
        args[slot] = word
    for option in spec.required:
        if option not in args:
            raise VirshError(f"command '{name}' requires <{option}> option")
    for option in spec.required:
        if args[option] == "" and not (name == "attach-disk" and option == "source"):
            raise VirshError(f"command '{name}': <{option}> must not be empty")
    for a, b in (("persistent", "current"), ("current", "live"), ("current", "config")):
        if args.get(a) is True and args.get(b) is True:
            raise VirshError(f"Options --{a} and --{b} are mutually exclusive")
    return Command(name, args, text.strip())


# --------------------------------------------------------------------------- XML builders
def _esc(value: str) -> str:
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("'", "&apos;")
        .replace('"', "&quot;")
    )


_HEX_FIELD = re.compile(r"[ \t\n\v\f\r]*\+?(?:0[xX](?=[0-9a-fA-F]))?([0-9a-fA-F]+)")


def _hex_fields(text: str, count: int) -> list[int] | None:
    """virsh's ``virStrToLong_uip(++a, &a, 16, ...)`` chain: ``count`` hex fields."""
    values: list[int] = []
    pos = 0
    for index in range(count):
        match = _HEX_FIELD.match(text, pos)
        if match is None:
            return None
        value = int(match.group(1), 16)
        if value > 0xFFFFFFFF:
            return None
        values.append(value)
        pos = match.end()
        if index < count - 1:
            if pos >= len(text):
                return None
            pos += 1  # the separator: any one character
    return values


def parse_virsh_address(text: str, *, multifunction: bool = False) -> tuple[str, str]:
    """``--address`` of attach-disk -> (address type, ``<address .../>`` element text).

    Supports ``pci:D.B.S.F`` and ``ccw:C.S.D`` (hex fields). Anything else: VirshError
    "Invalid address." as virsh reports it.
    """
    kind, sep, rest = text.partition(":")
    if not sep or kind not in ("pci", "ccw", "scsi", "ide", "sata", "usb"):
        raise VirshError(f"Invalid address. ({text!r})")
    if kind == "pci":
        fields = _hex_fields(rest, 4)
        if fields is None:
            raise VirshError(f"Invalid address. ({text!r} is not pci:D.B.S.F in hexadecimal)")
        d, b, s, f = fields
        xml = (
            f"<address type='pci' domain='0x{d:04x}' bus='0x{b:02x}' slot='0x{s:02x}' "
            f"function='0x{f:x}'"
        )
        if multifunction:
            xml += " multifunction='on'"
        return kind, xml + "/>"
    if kind == "ccw":
        fields = _hex_fields(rest, 3)
        if fields is None:
            raise VirshError(f"Invalid address. ({text!r} is not ccw:C.S.D in hexadecimal)")
        c, s, d = fields
        return kind, f"<address type='ccw' cssid='0x{c:02x}' ssid='0x{s:01x}' devno='0x{d:04x}'/>"
    return kind, ""


def disk_xml(cmd: Command) -> str:
    """The ``<disk>`` element ``virsh attach-disk`` sends for ``cmd``."""
    if cmd.name != "attach-disk":
        raise ValueError(f"disk_xml needs an attach-disk command, not {cmd.name}")
    source = cmd.get("source") or ""
    target = cmd.get("target") or ""
    stype = cmd.get("sourcetype")
    if stype is not None and stype not in ("file", "block", "network"):
        raise VirshError(f"Unknown source type: '{stype}'")
    if stype == "network":
        raise VirshError("--source-protocol option requires --sourcetype network")
    kind = stype or "file"  # virsh stats the source; scenario sources are files
    mode = cmd.get("mode")
    if mode is not None and mode not in ("readonly", "shareable"):
        raise VirshError(f"No support for {mode} in command 'attach-disk'")
    attrs = f" type='{kind}'"
    if cmd.get("type") is not None:
        attrs += f" device='{_esc(cmd.get('type') or '')}'"
    if cmd.flag("rawio"):
        attrs += " rawio='yes'"
    lines = []
    driver = ""
    for option, attr in (
        ("driver", "name"),
        ("subdriver", "type"),
        ("iothread", "iothread"),
        ("cache", "cache"),
        ("io", "io"),
    ):
        value = cmd.get(option)
        if value is not None:
            driver += f" {attr}='{_esc(value)}'"
    if driver:
        lines.append(f"<driver{driver}/>")
    src_attr = "dev" if kind == "block" else "file"
    if source:  # virXMLFormatElement drops an element without attributes
        lines.append(f"<source {src_attr}='{_esc(source)}'/>")
    bus = cmd.get("targetbus")
    lines.append(f"<target dev='{target}'" + (f" bus='{bus}'" if bus else "") + "/>")
    if mode:
        lines.append(f"<{mode}/>")
    if cmd.get("serial") is not None:
        lines.append(f"<serial>{cmd.get('serial')}</serial>")
    if cmd.get("alias") is not None:
        lines.append(f"<alias name='{cmd.get('alias')}'/>")
    if cmd.get("wwn") is not None:
        lines.append(f"<wwn>{cmd.get('wwn')}</wwn>")
    address = cmd.get("address")
    if address is not None:
        addr_type, element = parse_virsh_address(address, multifunction=cmd.flag("multifunction"))
        if target.startswith("vd") and addr_type not in ("pci", "ccw"):
            raise VirshError("expecting a pci:0000.00.00.00 or ccw:00.0.0000 address.")
        if element:
            lines.append(element)
    body = "".join(f"  {line}\n" for line in lines)
    return f"<disk{attrs}>\n{body}</disk>\n"


#: interface types virsh attach-interface can build (others: "No support for T ...")
_IFACE_SOURCES = {"network": "network", "bridge": "bridge", "direct": "dev"}


def interface_xml(cmd: Command) -> str:
    """The ``<interface>`` element ``virsh attach-interface`` sends for ``cmd``."""
    if cmd.name != "attach-interface":
        raise ValueError(f"interface_xml needs an attach-interface command, not {cmd.name}")
    kind = cmd.get("type") or ""
    source = cmd.get("source") or ""
    if kind not in _IFACE_SOURCES:
        raise VirshError(f"No support for {kind} in command 'attach-interface'")
    head = f"<interface type='{kind}'" + (" managed='yes'>" if cmd.flag("managed") else ">")
    lines = [f"<source {_IFACE_SOURCES[kind]}='{source}'/>"]
    for option, fmt in (
        ("target", "<target dev='{}'/>"),
        ("mac", "<mac address='{}'/>"),
        ("script", "<script path='{}'/>"),
        ("model", "<model type='{}'/>"),
        ("alias", "<alias name='{}'/>"),
    ):
        value = cmd.get(option)
        if value is not None:
            lines.append(fmt.format(value))
    body = "".join(f"  {line}\n" for line in lines)
    return f"{head}\n{body}</interface>\n"


def detach_target_xml(cmd: Command, *, live: Domain | None, persistent: Domain | None) -> str:
    """The device XML virsh detach-disk / detach-interface look up in the domain XML.

    virsh reads the live definition, or the persistent one for ``--config`` without
    ``--live`` (or when the domain is not running); a disk matches by target or source
    path, an interface by type and MAC (the MAC may be left out when only one interface
    of the type exists).
    """
    flags = cmd.device_flags()
    use_config = (flags["config"] and not flags["live"]) or live is None
    dom = persistent if use_config else live
    if dom is None:
        raise VirshError(f"domain '{cmd.domain}' has no definition to search")
    devices: list[Device] = []
    if cmd.name == "detach-disk":
        target = cmd.get("target") or ""
        for d in dom.devices():
            if d.tag != "disk":
                continue
            src = d.element.find("source")
            path = src.get("file") if src is not None else None
            if d.target_dev == target or path == target:
                devices.append(d)
        if not devices:
            raise VirshError(f"No disk found whose source path or target is {target}")
    else:
        kind = cmd.get("type") or ""
        mac = (cmd.get("mac") or "").lower()
        candidates = [
            d for d in dom.devices() if d.tag == "interface" and d.element.get("type") == kind
        ]
        if mac:
            devices = [d for d in candidates if d.mac == mac]
            if not devices:
                raise VirshError(f"No interface with MAC address {cmd.get('mac')} was found")
        else:
            if len(candidates) > 1:
                raise VirshError(
                    f"Domain has {len(candidates)} interfaces. "
                    "Please specify which one to detach using --mac"
                )
            if not candidates:
                raise VirshError(f"No interface found whose type is {kind}")
            devices = candidates
    return str(etree.tostring(devices[0].element, encoding="unicode"))
