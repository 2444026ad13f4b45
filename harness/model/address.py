"""PCI addresses as libvirt writes them and as Cloud Hypervisor (CHV) understands them.

A :class:`PciAddress` is libvirt's ``<address type='pci' domain= bus= slot= function=/>``.
Its ``domain`` is CHV's ``pci_segment`` and its ``slot`` is CHV's ``pci_device_id``; CHV has
one bus (0) per segment and no multi-function devices, see :func:`validate_for_chv`.

Parsers follow libvirt's rules (libvirt-pci-rules.md section 1):

* XML numbers are read like ``strtoul(..., 0)`` plus libvirt's checks: decimal, ``0x`` hex,
  leading-``0`` octal (``010`` is 8), leading white space and ``+`` are accepted; a ``-``,
  trailing junk, an empty value and values above ``UINT_MAX`` are rejected.
* A missing number is 0; domain, bus and slot all 0 means *no address* (whatever the
  function): the parser returns ``None`` and the device is auto-assigned.
* Range checks (bus <= 0xFF, slot <= 0x1F, function <= 7) only apply to a real address.
* virsh's ``attach-disk --address pci:D.B.S.F`` reads four hex fields, each followed by any
  one separator character; trailing junk after the function is ignored.

Every error is an :class:`~harness.errors.AddressError` whose message names the value and
the rule; libvirt's own wording is kept where libvirt has one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.errors import AddressError

if TYPE_CHECKING:  # pragma: no cover
    from lxml import etree

__all__ = [
    "MAX_BUS",
    "MAX_FUNCTION",
    "MAX_SEGMENT",
    "MAX_SLOT",
    "UINT_MAX",
    "PciAddress",
    "parse_uint",
    "validate_for_chv",
]

UINT_MAX = 0xFFFFFFFF
MAX_BUS = 0xFF
MAX_SLOT = 0x1F
MAX_FUNCTION = 7
#: CHV's ``pci_segment`` is a u16.
MAX_SEGMENT = 0xFFFF

#: Address types libvirt knows besides ``pci`` (virDomainDeviceAddressType).
_NON_PCI_TYPES = frozenset(
    {
        "drive",
        "virtio-serial",
        "ccid",
        "usb",
        "spapr-vio",
        "virtio-s390",
        "ccw",
        "virtio-mmio",
        "isa",
        "dimm",
        "unassigned",
    }
)

_C_SPACE = " \t\n\v\f\r"
_HEX = "0123456789abcdefABCDEF"
_CHV_BDF = re.compile(r"([0-9a-fA-F]{4}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-9a-fA-F])")


def _strtoul(text: str, pos: int, base: int) -> tuple[int, int, bool] | None:
    """C ``strtoul`` from ``pos``: (value, end position, saw a minus sign), or None if no digits.

    ``base`` is 0 (auto: ``0x`` hex, leading-0 octal, else decimal) or 16.
    """
    i = pos
    n = len(text)
    while i < n and text[i] in _C_SPACE:
        i += 1
    minus = False
    if i < n and text[i] in "+-":
        minus = text[i] == "-"
        i += 1
    if text[i : i + 2] in ("0x", "0X") and i + 2 < n and text[i + 2] in _HEX:
        base = 16
        i += 2
    elif base == 0:
        base = 8 if i < n and text[i] == "0" else 10
    digits = _HEX if base == 16 else "0123456789"[:base]
    start = i
    while i < n and text[i] in digits:
        i += 1
    if i == start:
        return None
    return int(text[start:i], base), i, minus


def parse_uint(value: str, *, base: int = 0) -> int | None:
    """libvirt's ``virStrToLong_uip(value, NULL, base)``: the number, or None if rejected.

    Rejected: no digits, any ``-``, trailing characters, a value above ``UINT_MAX``.
    """
    parsed = _strtoul(value, 0, base)
    if parsed is None:
        return None
    number, end, minus = parsed
    if minus or end != len(value) or number > UINT_MAX:
        return None
    return number


def _attr_error(attr: str, value: str) -> str:
    return (
        f"Invalid value for attribute '{attr}' in element 'address': '{value}'. "
        "Expected non-negative integer value"
    )


def _range_error(bus: int, slot: int, function: int) -> str | None:
    if bus > MAX_BUS:
        return f"Invalid PCI address bus='0x{bus:x}', must be <= 0xFF"
    if slot > MAX_SLOT:
        return f"Invalid PCI address slot='0x{slot:x}', must be <= 0x1F"
    if function > MAX_FUNCTION:
        return f"Invalid PCI address function=0x{function:x}, must be <= 7"
    return None


def _prefix(context: str, message: str) -> str:
    return f"{context}: {message}" if context else message


@dataclass(frozen=True, order=True)
class PciAddress:
    """A PCI address: ``domain`` (CHV ``pci_segment``), ``bus``, ``slot``, ``function``.

    Instances always satisfy libvirt's parse-time ranges (domain <= UINT_MAX, bus <= 0xFF,
    slot <= 0x1F, function <= 7); whether CHV can honour them is :func:`validate_for_chv`.
    ``multifunction`` is libvirt's ``multifunction='on'``.
    """

    domain: int
    bus: int
    slot: int
    function: int = 0
    multifunction: bool = False

    def __post_init__(self) -> None:
        for name in ("domain", "bus", "slot", "function"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise AddressError(f"PCI address {name} must be an integer, not {value!r}")
            if value < 0:
                raise AddressError(f"PCI address {name} must be non-negative, not {value}")
        if self.domain > UINT_MAX:
            raise AddressError(f"Invalid PCI address domain='0x{self.domain:x}', too large")
        error = _range_error(self.bus, self.slot, self.function)
        if error:
            raise AddressError(error)
        if not isinstance(self.multifunction, bool):
            raise AddressError(
                f"PCI address multifunction must be a boolean, not {self.multifunction!r}"
            )

    # ----------------------------------------------------------------- parsers
    @classmethod
    def from_xml_attrs(cls, attrs: Mapping[str, str], *, context: str = "") -> PciAddress | None:
        """Parse the attributes of an ``<address>`` element with libvirt's rules.

        Returns None when domain, bus and slot are all 0 (no address: libvirt auto-assigns
        the device and resets the function to 0). ``context`` (e.g. ``"device 'disk vdb'"``)
        prefixes every error message.
        """
        addr_type = attrs.get("type")
        if addr_type is None:
            raise AddressError(_prefix(context, "No type specified for device address"))
        if addr_type != "pci":
            if addr_type in _NON_PCI_TYPES:
                raise AddressError(
                    _prefix(
                        context,
                        f"address type '{addr_type}' is not supported: Cloud Hypervisor only "
                        "supports PCI devices (type='pci')",
                    )
                )
            raise AddressError(_prefix(context, f"unknown address type '{addr_type}'"))
        numbers: dict[str, int] = {}
        for name in ("domain", "bus", "slot", "function"):
            raw = attrs.get(name)
            if raw is None:
                numbers[name] = 0
                continue
            number = parse_uint(raw)
            if number is None:
                raise AddressError(_prefix(context, _attr_error(name, raw)))
            numbers[name] = number
        multi_raw = attrs.get("multifunction")
        multifunction = False
        if multi_raw is not None:
            if multi_raw not in ("on", "off"):
                raise AddressError(
                    _prefix(
                        context,
                        "Invalid value for attribute 'multifunction' in element 'address': "
                        f"'{multi_raw}'.",
                    )
                )
            multifunction = multi_raw == "on"
        if numbers["domain"] == 0 and numbers["bus"] == 0 and numbers["slot"] == 0:
            return None
        error = _range_error(numbers["bus"], numbers["slot"], numbers["function"])
        if error:
            raise AddressError(_prefix(context, error))
        return cls(
            numbers["domain"],
            numbers["bus"],
            numbers["slot"],
            numbers["function"],
            multifunction,
        )

    @classmethod
    def from_xml(cls, element: etree._Element, *, context: str = "") -> PciAddress | None:
        """Parse an lxml ``<address>`` element (see :meth:`from_xml_attrs`)."""
        attrs: dict[str, str] = {str(k): str(v) for k, v in element.attrib.items()}
        return cls.from_xml_attrs(attrs, context=context)

    @classmethod
    def from_virsh(cls, text: str) -> PciAddress:
        """Parse virsh's ``attach-disk --address pci:D.B.S.F`` (four hex fields).

        As virsh does, each field may be followed by any one separator character and
        anything after the function is ignored; the fields are not range-checked by virsh,
        but libvirt's parser then applies bus/slot/function ranges, which are applied here.
        """
        prefix, sep, rest = text.partition(":")
        if not sep or prefix != "pci":
            raise AddressError(
                f"Invalid address. '{text}' is not a PCI address of the form pci:D.B.S.F"
            )
        values: list[int] = []
        pos = 0
        for index, name in enumerate(("domain", "bus", "slot", "function")):
            parsed = _strtoul(rest, pos, 16)
            if parsed is None or parsed[2] or parsed[0] > UINT_MAX:
                raise AddressError(
                    f"Invalid address. '{text}': the {name} field is not a hexadecimal number"
                )
            values.append(parsed[0])
            pos = parsed[1]
            if index < 3:
                if pos >= len(rest):
                    raise AddressError(
                        f"Invalid address. '{text}': expected 4 fields (pci:D.B.S.F)"
                    )
                pos += 1  # virsh skips exactly one separator character, whatever it is
        error = _range_error(values[1], values[2], values[3])
        if error:
            raise AddressError(f"{error} (from '{text}')")
        return cls(values[0], values[1], values[2], values[3])

    @classmethod
    def from_chv_bdf(cls, text: str) -> PciAddress:
        """Parse CHV's ``bdf`` / ``pci_bdf`` string, e.g. ``0000:00:05.0``."""
        match = _CHV_BDF.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise AddressError(
                f"Invalid CHV PCI BDF {text!r}: expected SSSS:BB:DD.F in hexadecimal "
                "(e.g. 0000:00:05.0)"
            )
        segment, bus, slot, function = (int(g, 16) for g in match.groups())
        error = _range_error(bus, slot, function)
        if error:
            raise AddressError(f"Invalid CHV PCI BDF {text!r}: {error}")
        return cls(segment, bus, slot, function)

    @classmethod
    def from_chv(cls, pci_segment: int, pci_device_id: int) -> PciAddress:
        """The address of CHV's ``pci_segment``/``pci_device_id`` pair (bus 0, function 0)."""
        for name, value, top in (
            ("pci_segment", pci_segment, MAX_SEGMENT),
            ("pci_device_id", pci_device_id, MAX_SLOT),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
                raise AddressError(f"Invalid CHV {name} {value!r}: must be an integer 0..{top}")
        return cls(pci_segment, 0, pci_device_id, 0)

    # -------------------------------------------------------------- formatters
    def to_xml_attrs(self) -> dict[str, str]:
        """libvirt's output attributes (``domain='0x%04x' bus='0x%02x' ...``)."""
        attrs = {
            "type": "pci",
            "domain": f"0x{self.domain:04x}",
            "bus": f"0x{self.bus:02x}",
            "slot": f"0x{self.slot:02x}",
            "function": f"0x{self.function:d}",
        }
        if self.multifunction:
            attrs["multifunction"] = "on"
        return attrs

    def to_chv_bdf(self) -> str:
        """CHV's BDF string (``%04x:%02x:%02x.%x``)."""
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:x}"

    def to_virsh(self) -> str:
        """The ``virsh attach-disk --address`` form, ``pci:%04x.%02x.%02x.%x``."""
        return f"pci:{self.domain:04x}.{self.bus:02x}.{self.slot:02x}.{self.function:x}"

    def chv_fields(self) -> tuple[int, int]:
        """``(pci_segment, pci_device_id)`` as sent to CHV."""
        return self.domain, self.slot

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:d}"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (for reports)."""
        return {
            "domain": self.domain,
            "bus": self.bus,
            "slot": self.slot,
            "function": self.function,
            "multifunction": self.multifunction,
        }


def validate_for_chv(
    addr: PciAddress, *, segments: int, device: str, host_bridge_all_segments: bool = True
) -> None:
    """Check that CHV can create ``device`` at ``addr``; raise AddressError otherwise.

    Rules: the domain is an existing PCI segment (< ``segments``), bus 0, slot 1..31
    (slot 0 is the host bridge: of every segment up to v53, of segment 0 only at HEAD,
    ``host_bridge_all_segments`` False; chv-pci-rules.md sections 1 and 4), function 0
    and no ``multifunction='on'`` (CHV has no multi-function devices).
    """
    head = f"device '{device}': PCI address {addr}"
    if addr.domain >= segments:
        if segments == 1:
            rule = "only PCI domain 0 is available (CHV has 1 PCI segment)"
        else:
            rule = (
                f"only PCI domains 0..{segments - 1} are available "
                f"(CHV has {segments} PCI segments)"
            )
        raise AddressError(f"{head} is not usable: {rule}")
    if addr.bus != 0:
        raise AddressError(f"{head} is not usable: only PCI bus 0 is available")
    if addr.slot < 1 and (addr.domain == 0 or host_bridge_all_segments):
        raise AddressError(f"{head} is not usable: slot must be >= 1 (slot 0 is the host bridge)")
    if addr.slot > MAX_SLOT:  # pragma: no cover - excluded by PciAddress itself
        raise AddressError(f"{head} is not usable: slot must be <= {MAX_SLOT}")
    if addr.function != 0:
        raise AddressError(
            f"{head} is not usable: function must be 0 "
            "(Cloud Hypervisor does not support multi-function devices)"
        )
    if addr.multifunction:
        raise AddressError(
            f"{head} is not usable: multifunction='on' is not supported "
            "(Cloud Hypervisor does not support multi-function devices)"
        )
