"""Domain XML (libvirt) as the reference driver sees it: the devices CHV creates as PCI devices.

Which ``<devices>`` children count, and the CHV ``VmConfig`` key each becomes:

=================  =========================================================  ============
class              libvirt element                                            CHV key
=================  =========================================================  ============
``DISK``           ``<disk>`` whose ``<target bus='virtio'>``, or with no     ``disks``
                   ``bus`` and a ``vd*`` target ``dev``
``INTERFACE``      ``<interface>`` of any type except ``vdpa``                ``net``
``VDPA``           ``<interface type='vdpa'>``                                ``vdpa``
``RNG``            ``<rng>`` (libvirt's only model is ``virtio``)             ``rng``
``FILESYSTEM``     ``<filesystem>`` (virtiofs)                                ``fs``
``VSOCK``          ``<vsock>`` unless ``model`` is set to something else      ``vsock``
                   than ``virtio``
``MEMBALLOON``     ``<memballoon model='virtio'>`` (``model='none'`` is no    ``balloon``
                   device)
``WATCHDOG``       ``<watchdog>`` (CHV has one watchdog device, whatever      ``watchdog``
                   the model)
``HOSTDEV``        ``<hostdev mode='subsystem' type='pci'>`` (VFIO)           ``devices``
``CONSOLE``        ``<console>`` or ``<serial>`` whose ``<target              ``console``
                   type='virtio'>``
``PMEM``           ``<memory model='nvdimm'>``                                ``pmem``
``SHMEM``          ``<shmem>`` (ivshmem, any ivshmem model)                   ``ivshmem``
``PANIC``          ``<panic model='pvpanic'>``                                ``pvpanic``
=================  =========================================================  ============

Everything else (a serial port on ``isa-serial``, a SATA disk, ``<input>``, graphics,
controllers ...) is not a CHV PCI device and is ignored by :meth:`Domain.devices`.

Identity (:attr:`Device.key`) across the live and persistent definitions: disks by target
``dev``, interfaces (and vDPA interfaces) by MAC address (lower case), every other class by
alias. Aliases are also the ``id`` the driver sends to CHV.

Aliases (:meth:`Domain.assign_aliases`): the implicit rng is ``implicit-rng-device`` (the
alias the Cyberus CH driver uses); any other device without an alias gets libvirt's QEMU-style
alias for its class: ``virtio-disk<N>`` (``N`` = the index of its ``vd*`` name, ``vda`` = 0),
``net<N>``, ``rng<N>``, ``fs<N>``, ``vsock<N>``, ``balloon<N>``, ``watchdog<N>``,
``hostdev<N>``, ``console<N>``, ``nvdimm<N>``, ``shmem<N>``, ``panic<N>``, with the lowest
``N`` unused in the domain. Aliases are kept in the persistent definition so that every
class keeps its identity; user aliases (libvirt's ``ua-`` prefix or any other) are kept as
given, but an alias starting with ``__`` (reserved by CHV) or used twice is an error.

Console: CHV creates a virtio-console PCI device unless its console mode is ``Off``. The
reference driver maps the domain to a console mode with :meth:`Domain.console_mode`: a
domain **without** a ``<console>`` whose target type is ``virtio`` has console mode ``Off``
(this is how a domain switches the PCI console off); with one, the mode follows its
``type`` (``pty`` -> ``Pty``, ``file`` -> ``File``, ``unix`` -> ``Socket``, ``null`` ->
``Null``, ``tty``/``dev`` -> ``Tty``).
"""

from __future__ import annotations

import copy
import enum
import functools
import os
import re
import tempfile
import uuid as uuidlib
from collections.abc import Iterable
from pathlib import Path

from lxml import etree

from harness.errors import AddressError, DomainError
from harness.model.address import PciAddress
from harness.model.readcache import ReadCache, changed
from harness.model.xmlwrite import element_to_xml

__all__ = [
    "CHV_CONFIG_KEYS",
    "DEVICE_ORDER",
    "IMPLICIT_RNG_ALIAS",
    "Device",
    "DeviceClass",
    "Domain",
    "classify",
    "generate_alias",
]

IMPLICIT_RNG_ALIAS = "implicit-rng-device"


class DeviceClass(enum.StrEnum):
    """A kind of device that CHV creates as a PCI device."""

    DISK = "disk"
    INTERFACE = "interface"
    RNG = "rng"
    FILESYSTEM = "filesystem"
    VSOCK = "vsock"
    MEMBALLOON = "memballoon"
    WATCHDOG = "watchdog"
    HOSTDEV = "hostdev"
    CONSOLE = "console"
    PMEM = "pmem"
    VDPA = "vdpa"
    SHMEM = "shmem"
    PANIC = "panic"

    @property
    def chv_key(self) -> str:
        """The ``VmConfig`` key of CHV's ``vm.create`` body for this class."""
        return CHV_CONFIG_KEYS[self]


#: DeviceClass -> CHV's VmConfig key.
CHV_CONFIG_KEYS: dict[DeviceClass, str] = {
    DeviceClass.DISK: "disks",
    DeviceClass.INTERFACE: "net",
    DeviceClass.RNG: "rng",
    DeviceClass.FILESYSTEM: "fs",
    DeviceClass.VSOCK: "vsock",
    DeviceClass.MEMBALLOON: "balloon",
    DeviceClass.WATCHDOG: "watchdog",
    DeviceClass.HOSTDEV: "devices",
    DeviceClass.CONSOLE: "console",
    DeviceClass.PMEM: "pmem",
    DeviceClass.VDPA: "vdpa",
    DeviceClass.SHMEM: "ivshmem",
    DeviceClass.PANIC: "pvpanic",
}

#: Prefix of generated aliases per class.
ALIAS_PREFIX: dict[DeviceClass, str] = {
    DeviceClass.DISK: "virtio-disk",
    DeviceClass.INTERFACE: "net",
    DeviceClass.VDPA: "net",
    DeviceClass.RNG: "rng",
    DeviceClass.FILESYSTEM: "fs",
    DeviceClass.VSOCK: "vsock",
    DeviceClass.MEMBALLOON: "balloon",
    DeviceClass.WATCHDOG: "watchdog",
    DeviceClass.HOSTDEV: "hostdev",
    DeviceClass.CONSOLE: "console",
    DeviceClass.PMEM: "nvdimm",
    DeviceClass.SHMEM: "shmem",
    DeviceClass.PANIC: "panic",
}

#: Order of ``<devices>`` children in libvirt's output (virDomainDefFormatInternal).
DEVICE_ORDER: tuple[str, ...] = (
    "emulator",
    "disk",
    "controller",
    "lease",
    "filesystem",
    "interface",
    "smartcard",
    "serial",
    "parallel",
    "console",
    "channel",
    "input",
    "tpm",
    "graphics",
    "sound",
    "audio",
    "video",
    "hostdev",
    "redirdev",
    "redirfilter",
    "hub",
    "watchdog",
    "memballoon",
    "rng",
    "nvram",
    "panic",
    "shmem",
    "memory",
    "iommu",
    "vsock",
    "crypto",
    "pstore",
)

_CONSOLE_MODES = {
    "pty": "Pty",
    "file": "File",
    "unix": "Socket",
    "null": "Null",
    "tty": "Tty",
    "dev": "Tty",
}


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        remove_blank_text=True, resolve_entities=False, no_network=True, huge_tree=False
    )


def _child(element: etree._Element, tag: str) -> etree._Element | None:
    """``element.find(tag)`` for a plain tag name: its first child of that tag (lxml's
    ``find`` goes through its path language, twice as slow)."""
    return next(element.iterchildren(tag), None)


def _attr(element: etree._Element | None, name: str) -> str | None:
    if element is None:
        return None
    value = element.get(name)
    return None if value is None else str(value)


#: device elements CHV always makes a PCI device, whatever their attributes
_ALWAYS_PCI: dict[object, DeviceClass] = {
    "rng": DeviceClass.RNG,
    "filesystem": DeviceClass.FILESYSTEM,
    "watchdog": DeviceClass.WATCHDOG,
    "shmem": DeviceClass.SHMEM,
}


def classify(element: etree._Element) -> DeviceClass | None:
    """The DeviceClass of a ``<devices>`` child, or None if CHV does not make it a PCI device."""
    tag = element.tag
    if tag == "disk":
        target = _child(element, "target")
        bus = _attr(target, "bus")
        dev = _attr(target, "dev") or ""
        if bus == "virtio" or (bus is None and dev.startswith("vd")):
            return DeviceClass.DISK
        return None
    if tag == "interface":
        return DeviceClass.VDPA if element.get("type") == "vdpa" else DeviceClass.INTERFACE
    always = _ALWAYS_PCI.get(tag)
    if always is not None:
        return always
    if tag == "vsock":
        return DeviceClass.VSOCK if element.get("model", "virtio") == "virtio" else None
    if tag == "memballoon":
        return DeviceClass.MEMBALLOON if element.get("model") == "virtio" else None
    if tag == "hostdev":
        if element.get("mode", "subsystem") == "subsystem" and element.get("type") == "pci":
            return DeviceClass.HOSTDEV
        return None
    if tag in ("console", "serial"):
        return DeviceClass.CONSOLE if _attr(_child(element, "target"), "type") == "virtio" else None
    if tag == "memory":
        return DeviceClass.PMEM if element.get("model") == "nvdimm" else None
    if tag == "panic":
        return DeviceClass.PANIC if element.get("model") == "pvpanic" else None
    return None


def _syntax_error(source: str, exc: etree.XMLSyntaxError) -> DomainError:
    line = exc.lineno if exc.lineno is not None else "?"
    message = str(exc.msg if getattr(exc, "msg", None) else exc)
    return DomainError(f"{source}:{line}: malformed XML: {message}")


@functools.lru_cache(maxsize=4096)
def _parsed_address(attrs: tuple[tuple[str, str], ...]) -> PciAddress | None:
    """Parsed ``<address>`` attributes (cached: definitions are read far more than written)."""
    return PciAddress.from_xml_attrs(dict(attrs))


class Device:
    """A view on one device element of a domain (or a detached one, as given to attach)."""

    def __init__(self, element: etree._Element, cls: DeviceClass | None = None) -> None:
        found = classify(element) if cls is None else cls
        if found is None:
            raise DomainError(
                f"<{element.tag}> is not a device Cloud Hypervisor creates as a PCI device"
            )
        self.element = element
        self.cls: DeviceClass = found
        #: what was read from the element (harness.model.readcache)
        self._reads = ReadCache()

    def __repr__(self) -> str:
        return f"Device({self.label!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.element is self.element

    def __hash__(self) -> int:
        return id(self.element)

    @classmethod
    def from_xml(cls, text: str, *, source: str = "<string>") -> Device:
        """Parse one device element (the XML given to ``attach-device``)."""
        try:
            element = etree.fromstring(text.encode("utf-8"), _parser())
        except etree.XMLSyntaxError as exc:
            raise _syntax_error(source, exc) from None
        found = classify(element)
        if found is None:
            raise DomainError(
                f"{source}: <{element.tag}> is not a device Cloud Hypervisor creates as a "
                "PCI device"
            )
        device = cls(element, found)
        device.address  # noqa: B018 - validate the address now, naming the source
        return device

    # ------------------------------------------------------------- accessors
    @property
    def tag(self) -> str:
        return str(self.element.tag)

    @property
    def alias(self) -> str | None:
        return self._reads.get("alias", lambda: _attr(_child(self.element, "alias"), "name"))

    def set_alias(self, name: str) -> None:
        """Set (or replace) the ``<alias name=...>`` of the device."""
        if not name:
            raise DomainError(f"{self.label}: an alias cannot be empty")
        alias = _child(self.element, "alias")
        if alias is None:
            alias = etree.Element("alias")
            address = _child(self.element, "address")
            if address is not None:
                address.addprevious(alias)
            else:
                self.element.append(alias)
        alias.set("name", name)
        changed()

    @property
    def address(self) -> PciAddress | None:
        """The device's PCI address (None if it has none or an all-zero one)."""
        return self._reads.get("address", self._read_address)

    def _read_address(self) -> PciAddress | None:
        element = _child(self.element, "address")
        if element is None:
            return None
        try:
            return _parsed_address(tuple(element.attrib.items()))
        except AddressError:  # parse again to name the device in the message
            return PciAddress.from_xml(element, context=f"device '{self.label}'")

    @property
    def has_empty_address(self) -> bool:
        """True if the XML has an ``<address type='pci'>`` whose domain, bus and slot are 0.

        libvirt reads it as "no address" (:attr:`address` is None); a driver that wants to
        refuse device id 0 (catalogue I4) can tell it from a device with no ``<address>``.
        """
        element = _child(self.element, "address")
        return element is not None and element.get("type") == "pci" and self.address is None

    def set_address(self, addr: PciAddress | None) -> None:
        """Replace the device's ``<address>`` (None removes it)."""
        changed()
        old = _child(self.element, "address")
        if addr is None:
            if old is not None:
                self.element.remove(old)
            return
        new = etree.Element("address", attrib=addr.to_xml_attrs())
        if old is not None:
            old.addnext(new)
            self.element.remove(old)
        else:
            self.element.append(new)

    @property
    def target_dev(self) -> str | None:
        return self._reads.get("target", lambda: _attr(_child(self.element, "target"), "dev"))

    @property
    def mac(self) -> str | None:
        return self._reads.get("mac", self._read_mac)

    def _read_mac(self) -> str | None:
        mac = _attr(_child(self.element, "mac"), "address")
        return mac.lower() if mac else None

    @property
    def key(self) -> tuple[str, str]:
        """Identity across definitions: (class, target dev | MAC | alias)."""
        return self._reads.get("key", self._read_key)

    def _read_key(self) -> tuple[str, str]:
        cls = self.cls
        if cls is DeviceClass.DISK:
            return (cls.value, self.target_dev or "")
        if cls is DeviceClass.INTERFACE or cls is DeviceClass.VDPA:
            mac = self.mac
            if mac:
                return (cls.value, mac)
        return (cls.value, self.alias or "")

    @property
    def label(self) -> str:
        """Human name for messages: ``disk vdb``, ``interface 52:54:00:e5:b8:02``, ..."""
        return self._reads.get("label", self._read_label)

    def _read_label(self) -> str:
        cls = self.cls
        if cls is DeviceClass.DISK:
            dev = self.target_dev
            if dev:
                return f"disk {dev}"
        elif cls is DeviceClass.INTERFACE or cls is DeviceClass.VDPA:
            mac = self.mac
            if mac:
                return f"{self.tag} {mac}"
        alias = self.alias
        return f"{cls.value} {alias}" if alias else cls.value

    @property
    def descriptor(self) -> str:
        """The catalogue's helper descriptor (libvirt-tests ``parse_devices_from_dom_def``)."""
        if self.tag == "disk":
            source = _child(self.element, "source")
            src = ""
            if source is not None:
                src = str(source.get("file") or source.get("dev") or source.get("name") or "")
            return f"disk:{src}:{self.target_dev or ''}"
        if self.tag == "interface":
            return (
                f"interface:{self.element.get('type') or ''}:{self.mac or ''}:"
                f"{self.target_dev or ''}"
            )
        if self.tag == "rng":
            backend = _child(self.element, "backend")
            text = (backend.text or "") if backend is not None else ""
            return f"rng:{text.strip()}"
        return self.tag


class Domain:
    """A libvirt domain definition (one XML document)."""

    def __init__(self, root: etree._Element, *, source: str = "<string>") -> None:
        self.root = root
        self.source = source
        #: the device list, while nothing changes (harness.model.readcache)
        self._reads = ReadCache()

    # ------------------------------------------------------------- loading
    @classmethod
    def from_xml(cls, text: str, *, source: str = "<string>") -> Domain:
        """Parse a domain document; DomainError names ``source`` (and the line) on failure."""
        try:
            root = etree.fromstring(text.encode("utf-8"), _parser())
        except etree.XMLSyntaxError as exc:
            raise _syntax_error(source, exc) from None
        if root.tag != "domain":
            raise DomainError(
                f"{source}:{root.sourceline}: expected a <domain> document, found <{root.tag}>"
            )
        name = _child(root, "name")
        if name is None or not (name.text or "").strip():
            raise DomainError(f"{source}:{root.sourceline}: the domain has no <name>")
        domain = cls(root, source=source)
        for device in domain.devices():
            device.address  # noqa: B018 - report bad addresses at load, naming the device
        return domain

    @classmethod
    def load(cls, path: Path) -> Domain:
        """Read a domain XML file."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DomainError(f"{path}: cannot read domain XML: {exc}") from None
        return cls.from_xml(text, source=str(path))

    def save(self, path: Path) -> None:
        """Write the XML atomically (temporary file in the same directory, then rename)."""
        path = Path(path)
        data = self.to_xml().encode("utf-8")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            raise DomainError(f"{path}: cannot write domain XML: {exc}") from None
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise DomainError(f"{path}: cannot write domain XML: {exc}") from None

    def to_xml(self) -> str:
        """Pretty-printed XML in libvirt's layout (two-space indent, single-quoted attributes).

        Stable: loading the output and writing it again gives the same text.
        """
        etree.indent(self.root, space="  ")
        return element_to_xml(self.root)

    def copy(self) -> Domain:
        """A copy of the definition (lxml copies the tree in C: a third of the time of
        writing it out and parsing it back)."""
        return Domain(copy.deepcopy(self.root), source=self.source)

    # ---------------------------------------------------------- properties
    @property
    def name(self) -> str:
        element = _child(self.root, "name")
        return (element.text or "").strip() if element is not None else ""

    @property
    def uuid(self) -> str | None:
        element = _child(self.root, "uuid")
        text = (element.text or "").strip() if element is not None else ""
        return text or None

    def ensure_uuid(self) -> str:
        """Return the domain's UUID, generating one (after ``<name>``) if it has none."""
        existing = self.uuid
        if existing:
            return existing
        value = str(uuidlib.uuid4())
        element = _child(self.root, "uuid")
        if element is None:
            element = etree.Element("uuid")
            name = _child(self.root, "name")
            if name is not None:
                name.addnext(element)
            else:  # pragma: no cover - from_xml requires a name
                self.root.insert(0, element)
        element.text = value
        return value

    def _devices_element(self, *, create: bool = False) -> etree._Element | None:
        devices = _child(self.root, "devices")
        if devices is None and create:
            devices = etree.SubElement(self.root, "devices")
        return devices

    def devices(self) -> list[Device]:
        """The PCI-relevant devices, in XML order."""
        found: tuple[Device, ...] = self._reads.get("devices", self._read_devices, _same_devices)
        return list(found)

    def _read_devices(self) -> tuple[Device, ...]:
        container = self._devices_element()
        if container is None:
            return ()
        found: list[Device] = []
        for child in container:
            cls = classify(child)
            if cls is not None:
                found.append(Device(child, cls))
        return tuple(found)

    def find(self, key: tuple[str, str]) -> Device | None:
        for device in self.devices():
            if device.cls.value == key[0] and device.key == key:
                return device
        return None

    # ------------------------------------------------------------ changes
    def add_device(self, device: Device) -> Device:
        """Insert a copy of ``device`` at libvirt's place for its element; return the new view.

        A device whose key is already present is refused (DomainError).
        """
        if device.key[1] and self.find(device.key) is not None:
            raise DomainError(f"{self.name}: {device.label} already exists in the domain")
        element = etree.fromstring(etree.tostring(device.element), _parser())
        container = self._devices_element(create=True)
        assert container is not None
        rank = _rank(str(element.tag))
        anchor: etree._Element | None = None
        for child in container:
            if isinstance(child.tag, str) and _rank(child.tag) <= rank:
                anchor = child
        if anchor is None:
            container.insert(0, element)
        else:
            anchor.addnext(element)
        changed()
        return Device(element, device.cls)

    def remove_device(self, key: tuple[str, str]) -> Device:
        """Remove the device with ``key``; return it (detached from the document)."""
        device = self.find(key)
        if device is None:
            raise DomainError(f"{self.name}: no {key[0]} '{key[1]}' in the domain")
        parent = device.element.getparent()
        assert parent is not None
        parent.remove(device.element)
        changed()
        return device

    def ensure_implicit_rng(self) -> Device | None:
        """Add CHV's implicit rng (``/dev/urandom``) if the domain has none; return it."""
        if any(d.cls is DeviceClass.RNG for d in self.devices()):
            return None
        element = etree.Element("rng", model="virtio")
        backend = etree.SubElement(element, "backend", model="random")
        backend.text = "/dev/urandom"
        etree.SubElement(element, "alias", name=IMPLICIT_RNG_ALIAS)
        return self.add_device(Device(element, DeviceClass.RNG))

    def aliases(self) -> list[str]:
        """Every alias in the document (any device), in XML order."""
        return [str(a.get("name")) for a in self.root.iter("alias") if a.get("name")]

    def check_aliases(self) -> None:
        """DomainError for an alias CHV would refuse (``__`` prefix) or a repeated alias."""
        seen: set[str] = set()
        for device in self.devices():
            alias = device.alias
            if alias is None:
                continue
            if alias.startswith("__"):
                raise DomainError(
                    f"{self.name}: {device.label}: alias '{alias}' is not valid "
                    "(identifiers starting with '__' are reserved by Cloud Hypervisor)"
                )
            if alias in seen:
                raise DomainError(f"{self.name}: alias '{alias}' is used by more than one device")
            seen.add(alias)

    def assign_aliases(self, *, reserved: Iterable[str] = ()) -> None:
        """Give every device without an alias a deterministic unique one (see module doc).

        ``reserved`` names aliases that must not be generated (e.g. those of the other
        definition). Raises DomainError, changing nothing, if existing aliases are invalid.
        """
        self.check_aliases()
        taken = set(self.aliases()) | set(reserved)
        for device in self.devices():
            if device.alias is not None:
                continue
            name = generate_alias(device, taken)
            device.set_alias(name)
            taken.add(name)

    def has_virtio_console(self) -> bool:
        return any(d.cls is DeviceClass.CONSOLE for d in self.devices())

    def console_mode(self) -> str:
        """CHV's console mode for this domain: ``Off`` unless a virtio console exists."""
        for device in self.devices():
            if device.cls is DeviceClass.CONSOLE:
                kind = device.element.get("type") or "pty"
                return _CONSOLE_MODES.get(str(kind), "Pty")
        return "Off"


def _same_devices(a: tuple[Device, ...], b: tuple[Device, ...]) -> bool:
    return [(d.element, d.cls) for d in a] == [(d.element, d.cls) for d in b]


def _rank(tag: str) -> int:
    try:
        return DEVICE_ORDER.index(tag)
    except ValueError:
        return len(DEVICE_ORDER)


_VD_NAME = re.compile(r"vd([a-z]+)")


def _disk_index(name: str) -> int | None:
    """libvirt's virDiskNameToIndex for ``vd*`` names: vda=0, vdz=25, vdaa=26."""
    match = _VD_NAME.fullmatch(name)
    if match is None:
        return None
    index = 0
    for char in match.group(1):
        index = index * 26 + (ord(char) - ord("a") + 1)
    return index - 1


def generate_alias(device: Device, taken: set[str]) -> str:
    """The alias :meth:`Domain.assign_aliases` gives ``device``, avoiding ``taken``."""
    prefix = ALIAS_PREFIX[device.cls]
    if device.cls is DeviceClass.DISK:
        index = _disk_index(device.target_dev or "")
        if index is not None and f"{prefix}{index}" not in taken:
            return f"{prefix}{index}"
    n = 0
    while f"{prefix}{n}" in taken:
        n += 1
    return f"{prefix}{n}"
