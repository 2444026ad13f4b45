"""Translate libvirt domain XML into Cloud Hypervisor API bodies.

``vm_config(domain, caps)`` builds the ``vm.create`` body and
``device_body(device, caps)`` the body of a ``vm.add-*`` call. Every device
gets ``id`` = its libvirt alias and, where the CHV release can take it,
``pci_segment`` + ``pci_device_id`` from its PCI address, so CHV places it
where libvirt says. :class:`~harness.chv.capabilities.ChvCapabilities` says what each
release can address; a device whose address cannot be sent is reported by
:func:`unaddressable` so the driver can refuse it rather than pretend.
"""

from __future__ import annotations

import re
from typing import Any

from lxml import etree

from harness.chv.capabilities import KIND_OF_CONFIG_KEY, KINDS, ChvCapabilities
from harness.errors import HarnessError
from harness.model.domain import Device, Domain

__all__ = [
    "TranslationError",
    "chv_id",
    "chv_kind",
    "device_body",
    "unaddressable",
    "vm_config",
]


class TranslationError(HarnessError):
    """A domain or device that cannot be expressed in CHV's API."""


def chv_kind(device: Device) -> str:
    """CHV's name for the device's kind: ``disk``, ``net``, ``rng``, ``device`` ..."""
    return KIND_OF_CONFIG_KEY[device.cls.chv_key]


def chv_id(device: Device, caps: ChvCapabilities) -> str:
    """The id CHV knows this device by (its alias where CHV takes one)."""
    kind = chv_kind(device)
    fixed = KINDS[kind].fixed_id
    if kind in ("watchdog", "pvpanic"):
        return fixed or ""
    if kind in ("rng", "console") and not caps.rng_console_ids:
        return fixed or ""
    if kind == "balloon" and not caps.can_address(kind):
        return fixed or ""
    if device.alias:
        return device.alias
    return fixed or ""


def unaddressable(device: Device, caps: ChvCapabilities) -> bool:
    """True when CHV will place this device itself (no pci_device_id possible)."""
    return not caps.can_address(chv_kind(device))


def _text(el: etree._Element, path: str, attr: str | None = None) -> str | None:
    found = el.find(path)
    if found is None:
        return None
    if attr is None:
        return (found.text or "").strip() or None
    value = found.get(attr)
    return value if value else None


def _pci_fields(device: Device, caps: ChvCapabilities, body: dict[str, Any]) -> None:
    kind = chv_kind(device)
    alias = device.alias
    if kind in ("rng", "console") and not caps.rng_console_ids:
        return
    if kind == "balloon" and not caps.can_address(kind):
        return
    if alias:
        body["id"] = alias
    addr = device.address
    if addr is not None and caps.can_address(kind):
        segment, slot = addr.chv_fields()
        body["pci_segment"] = segment
        body["pci_device_id"] = slot


def _memory_bytes(value: str, unit: str | None) -> int:
    scale = {
        None: 1024,
        "b": 1,
        "bytes": 1,
        "k": 1024,
        "kib": 1024,
        "kb": 1000,
        "m": 1024**2,
        "mib": 1024**2,
        "mb": 1000**2,
        "g": 1024**3,
        "gib": 1024**3,
        "gb": 1000**3,
    }
    key = unit.lower() if unit else None
    if key not in scale:
        raise TranslationError(f"unsupported memory unit {unit!r}")
    return int(value) * scale[key]


_CONSOLE_MODES = {"pty": "Pty", "file": "File", "unix": "Socket", "null": "Null", "tty": "Tty"}

_SIZE = re.compile(r"^\s*\d+\s*$")


def device_body(device: Device, caps: ChvCapabilities) -> dict[str, Any]:
    """The CHV config entry (and ``vm.add-*`` body) for one device."""
    el = device.element
    kind = chv_kind(device)
    body: dict[str, Any] = {}
    if kind == "disk":
        path = _text(el, "source", "file") or _text(el, "source", "dev")
        if path is None:
            raise TranslationError(f"{device.label}: CHV needs a <source file=...> path")
        body["path"] = path
        if el.find("readonly") is not None:
            body["readonly"] = True
        serial = _text(el, "serial")
        if serial:
            body["serial"] = serial
    elif kind == "net":
        mac = _text(el, "mac", "address")
        if mac:
            body["mac"] = mac.lower()
        tap = _text(el, "target", "dev")
        if tap:
            body["tap"] = tap
        if el.get("type") == "vhostuser":
            sock = _text(el, "source", "path")
            if sock is None:
                raise TranslationError(f"{device.label}: vhostuser needs <source path=...>")
            body["vhost_user"] = True
            body["vhost_socket"] = sock
    elif kind == "rng":
        body["src"] = _text(el, "backend") or "/dev/urandom"
    elif kind == "fs":
        tag = _text(el, "target", "dir")
        sock = _text(el, "source", "socket") or f"/run/virtiofsd-{tag or 'fs'}.sock"
        if tag is None:
            raise TranslationError(f"{device.label}: CHV needs <target dir=...> as the fs tag")
        body.update({"tag": tag, "socket": sock, "num_queues": 1, "queue_size": 1024})
    elif kind == "vsock":
        cid = _text(el, "cid", "address")
        if cid is None or not cid.isdigit() or int(cid) < 3:
            raise TranslationError(f"{device.label}: CHV needs <cid address='N'/> with N >= 3")
        body.update({"cid": int(cid), "socket": f"/run/vsock-{cid}.sock"})
    elif kind == "balloon":
        body["size"] = 0
    elif kind == "device":
        src = el.find("source/address")
        if src is None:
            raise TranslationError(f"{device.label}: hostdev needs <source><address .../>")

        def num(name: str) -> int:
            return int(src.get(name, "0"), 0)

        body["path"] = (
            f"/sys/bus/pci/devices/{num('domain'):04x}:{num('bus'):02x}:"
            f"{num('slot'):02x}.{num('function'):x}/"
        )
    elif kind == "console":
        body["mode"] = _CONSOLE_MODES.get(el.get("type") or "pty", "Pty")
    elif kind == "pmem":
        path = _text(el, "source/path") or _text(el, "source", "path")
        if path is None:
            raise TranslationError(f"{device.label}: nvdimm needs <source><path>")
        body["file"] = path
        size = el.find("target/size")
        if size is not None and size.text and _SIZE.match(size.text):
            body["size"] = _memory_bytes(size.text.strip(), size.get("unit"))
    elif kind == "vdpa":
        path = _text(el, "source", "dev")
        if path is None:
            raise TranslationError(f"{device.label}: vdpa needs <source dev=...>")
        body.update({"path": path, "num_queues": 1})
    else:
        raise TranslationError(f"{device.label}: CHV has no API body for {kind}")
    _pci_fields(device, caps, body)
    return body


def _serial(root: etree._Element) -> dict[str, Any]:
    """CHV's legacy serial port: a ``<serial type='file'>`` on the ISA serial port goes to
    its file (``File`` mode), anything else is ``Null``. It is no PCI device."""
    for serial in root.findall("devices/serial"):
        target = serial.find("target")
        if target is not None and target.get("type") == "virtio":
            continue  # a virtio console, translated as a device
        path = _text(serial, "source", "path")
        if serial.get("type") == "file" and path:
            return {"mode": "File", "file": path}
    return {"mode": "Null"}


def vm_config(domain: Domain, caps: ChvCapabilities, *, segments: int = 1) -> dict[str, Any]:
    """The ``vm.create`` body for a domain whose devices all carry addresses."""
    root = domain.root
    config: dict[str, Any] = {}
    kernel = root.findtext("os/kernel")
    loader = root.findtext("os/loader")
    payload: dict[str, Any] = {}
    if kernel:
        payload["kernel"] = kernel.strip()
        cmdline = root.findtext("os/cmdline")
        if cmdline:
            payload["cmdline"] = cmdline.strip()
        initrd = root.findtext("os/initrd")
        if initrd:
            payload["initramfs"] = initrd.strip()
    elif loader:
        payload["firmware"] = loader.strip()
    else:
        payload["kernel"] = "/var/lib/libvirt/boot/vmlinux"
    config["payload"] = payload
    vcpus = int((root.findtext("vcpu") or "1").strip())
    config["cpus"] = {"boot_vcpus": vcpus, "max_vcpus": vcpus}
    mem = root.find("memory")
    if mem is not None and mem.text:
        config["memory"] = {"size": _memory_bytes(mem.text.strip(), mem.get("unit"))}
    if segments > 1:
        config["platform"] = {"num_pci_segments": segments}
    config["serial"] = _serial(root)
    config["console"] = {"mode": "Off"}
    lists: dict[str, list[dict[str, Any]]] = {}
    for device in domain.devices():
        kind = KINDS[chv_kind(device)]
        if kind.create_as == "list":
            lists.setdefault(kind.config_key, []).append(device_body(device, caps))
        elif kind.create_as == "object":
            config[kind.config_key] = device_body(device, caps)
        elif kind.create_as == "flag":
            config[kind.config_key] = True
        else:
            raise TranslationError(
                f"{device.label}: {kind.name} is not part of CHV's API spec; "
                "the reference driver cannot create it"
            )
    config.update(lists)
    return config
