"""Domain and device XML as a real Cloud Hypervisor on this machine can run it.

A scenario's domains name a firmware, disk images and back ends that exist only on the
machine they were written for. :class:`ChvXml` rewrites them for a real CHV here: the
guest's ``<kernel>`` and ``<cmdline>``, a sparse file in the run's directory for every
disk and persistent-memory image (the original path kept in its name), optionally a
``<serial type='file'>`` the guest writes its ready marker to; :func:`unbackable` says
which devices this machine cannot back at all (the step is then ``unsupported``).
Used by the ``chv`` target and by the ``libvirt`` target on a real binary.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from lxml import etree

from harness.chv.binary import Guest
from harness.model.domain import Device, DeviceClass, classify
from harness.targets.base import UnsupportedOperation

__all__ = ["DEFAULT_IMAGE_SIZE", "ChvXml", "unbackable"]

#: disks and persistent memory without a size: a sparse file of this many bytes
DEFAULT_IMAGE_SIZE = 64 << 20


def unbackable(device: Device) -> str | None:
    """Why this machine cannot back ``device`` for a real CHV, or None if it can."""
    cls = device.cls
    el = device.element
    if cls is DeviceClass.FILESYSTEM:
        return f"{device.label}: virtio-fs needs a virtiofsd back end, which this host does not run"
    if cls is DeviceClass.VSOCK and not Path("/dev/vhost-vsock").exists():
        return f"{device.label}: vsock needs /dev/vhost-vsock, which this machine does not have"
    if cls is DeviceClass.HOSTDEV:
        return f"{device.label}: a VFIO device needs a real PCI device bound to vfio-pci"
    if cls is DeviceClass.VDPA:
        return f"{device.label}: vDPA needs a /dev/vhost-vdpa-N device"
    if cls is DeviceClass.SHMEM:
        return f"{device.label}: ivshmem is not in this CHV build"
    if cls is DeviceClass.INTERFACE and el.get("type") == "vhostuser":
        return f"{device.label}: a vhost-user interface needs a back end on its socket"
    return None


class ChvXml:
    """Rewrites XML for a real CHV: images under ``images``, consoles under ``serials``
    (None: consoles left as written)."""

    def __init__(self, guest: Guest, images: Path, serials: Path | None) -> None:
        self.guest = guest
        self.images = images
        self.serials = serials

    def serial_path(self, domain: str) -> Path:
        """Where the guest of ``domain`` writes its console (with ``serials``)."""
        assert self.serials is not None
        return self.serials / f"{domain}.log"

    def image(self, original: str, size: int = DEFAULT_IMAGE_SIZE) -> str:
        """A sparse file standing for ``original`` (created once, reused after)."""
        self.images.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", original.strip("/"))[-80:] or "image"
        digest = hashlib.sha256(original.encode()).hexdigest()[:8]
        path = self.images / f"{digest}-{stem}"
        if not path.exists():
            with path.open("wb") as f:
                f.truncate(size)
        return str(path)

    def _device(self, el: etree._Element) -> None:
        """Point a device element at what this host backs it with (in place)."""
        cls = classify(el)
        if cls is None:  # not a PCI device of CHV's: left as written
            return
        device = Device(el, cls)
        reason = unbackable(device)
        if reason:
            raise UnsupportedOperation(reason)
        if device.cls is DeviceClass.DISK:
            source = el.find("source")
            if source is None:
                return
            original = source.get("file") or source.get("dev")
            if original:
                if "dev" in source.attrib:
                    del source.attrib["dev"]
                source.set("file", self.image(original))
                el.set("type", "file")
        elif device.cls is DeviceClass.PMEM:
            path = el.find("source/path")
            if path is not None and path.text:
                size = DEFAULT_IMAGE_SIZE
                target = el.find("target/size")
                text = (target.text or "").strip() if target is not None else ""
                if target is not None and text.isdigit():
                    unit = (target.get("unit") or "KiB").lower()
                    scale = {"b": 1, "bytes": 1, "kib": 1024, "k": 1024, "mib": 1 << 20}
                    size = int(text) * scale.get(unit, 1024)
                path.text = self.image(path.text.strip(), size)

    def domain(self, xml: str) -> str:
        try:
            root = etree.fromstring(xml.encode())
        except etree.XMLSyntaxError:
            return xml  # the driver reports it
        name = (root.findtext("name") or "domain").strip()
        os_el = root.find("os")
        if os_el is None:
            os_el = etree.SubElement(root, "os")
        for tag in ("kernel", "cmdline", "initrd", "loader", "nvram"):
            for old in os_el.findall(tag):
                os_el.remove(old)
        etree.SubElement(os_el, "kernel").text = str(self.guest.kernel)
        etree.SubElement(os_el, "cmdline").text = self.guest.cmdline
        devices = root.find("devices")
        if devices is None:
            devices = etree.SubElement(root, "devices")
        if self.serials is not None:
            for serial in devices.findall("serial"):
                target = serial.find("target")
                if target is None or target.get("type") != "virtio":
                    devices.remove(serial)
            self.serials.mkdir(parents=True, exist_ok=True)
            serial = etree.SubElement(devices, "serial", type="file")
            etree.SubElement(serial, "source", path=str(self.serial_path(name)))
        for el in list(devices):
            self._device(el)
        return etree.tostring(root, encoding="unicode")

    def device(self, xml: str) -> str:
        try:
            el = etree.fromstring(xml.encode())
        except etree.XMLSyntaxError:
            return xml
        self._device(el)
        return etree.tostring(el, encoding="unicode")
