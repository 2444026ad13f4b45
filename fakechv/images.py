"""Disk images as CHV's block layer opens, types and locks them.

A virtio-block device of a booted VM holds its image open for its whole life, as CHV's
``virtio_devices::Block`` does, and takes CHV's advisory lock on it:

* open: ``block::open_disk`` (block/src/factory.rs@v53.0:85) opens the path read-only or
  read-write (``O_DIRECT`` with ``direct``); a failure is the device manager's
  ``Cannot open disk path`` with the block error ``I/O error (path=P op=open)`` and the
  OS error, as Rust prints it (``No such file or directory (os error 2)``);
* type: ``detect_image_type`` (block/src/lib.rs@v53.0:540) reads the first block (a
  file shorter than that cannot be typed: ``op=detect_image_type``); the QCOW2 magic,
  a fixed VHD footer, the VHDX signature, else raw. A disk without ``image_type`` gets
  the detected one written into its config (device_manager.rs@v53.0:2755-2785); a
  different explicit one is ``Disk image type does not match expected type``;
* lock: an OFD lock (``F_OFD_SETLK``, block/src/io/fcntl.rs@v53.0:143), a read lock for
  a read-only disk, else a write lock, over ``[0, max(logical, physical size))`` (an
  empty range is the whole file) or the whole file with ``lock_granularity: Full``
  (virtio-devices/src/block.rs@v53.0:986-1011). ``EAGAIN``/``EACCES`` is ``The file
  is already locked``. The locks are real, so a fakechv and a real CHV (or two
  fakechv) sharing an image refuse each other as two CHV do. A hot-added disk is
  locked when it is created; the disks of a boot together after the devices are made
  (``try_lock_disks``). Closing the image releases its lock.

For drivers whose domains name images this machine does not have (the harness's own
scenarios), two other modes (fakechv ``--images MODE``; the default is ``check``, CHV's):

* ``create``: every image is a sparse file under ``root`` (the path kept below it, so a
  host path is never touched), made empty when missing, then opened, typed and locked
  like any other; processes sharing ``root`` share the images, as hosts share storage;
* ``virtual``: no file at all: every image is an empty raw image of ``DEFAULT_SIZE``,
  and the locks are kept in a table the VMMs of one process share (the in-process
  targets), with the same conflicts as the OFD locks.
"""

from __future__ import annotations

import errno as errno_mod
import fcntl
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from fakechv.errors import ChainError, io_error_text

__all__ = ["BLOCK_SIZE", "DEFAULT_SIZE", "MODES", "Image", "ImageError", "Images", "LockTable"]

#: what ``detect_image_type`` reads first (the alignment of an ``O_DIRECT`` read)
BLOCK_SIZE = 512
#: the size of an image ``--images create`` makes
DEFAULT_SIZE = 64 << 20
MODES = ("check", "create", "virtual")

_QCOW_MAGIC = 0x514649FB
_VHDX_SIGN = 0x656C_6966_7864_6876
_VHD_COOKIE = b"conectix"
_VHD_FIXED = 2


class ImageError(ChainError):
    """An image could not be opened, typed or locked (CHV's chain below the device
    manager's message)."""


_os_error = io_error_text


def _flock(lock_type: int, start: int, length: int) -> bytes:
    # struct flock on Linux x86_64/aarch64: short l_type, short l_whence, off_t l_start,
    # off_t l_len, pid_t l_pid (natively aligned, padded to 32 bytes)
    return struct.pack("@hhqqi4x", lock_type, os.SEEK_SET, start, length, 0)


class LockTable:
    """The locks of ``virtual`` images: path -> {holder: read-only}."""

    def __init__(self) -> None:
        self.holders: dict[str, dict[int, bool]] = {}

    def acquire(self, path: str, holder: int, readonly: bool) -> bool:
        others = {h: ro for h, ro in self.holders.get(path, {}).items() if h != holder}
        if others and (not readonly or not all(others.values())):
            return False
        self.holders.setdefault(path, {})[holder] = readonly
        return True

    def release(self, path: str, holder: int) -> None:
        held = self.holders.get(path)
        if held is not None:
            held.pop(holder, None)
            if not held:
                del self.holders[path]


@dataclass(eq=False)
class Image:
    """One open disk image (what a block device holds). Shared, never copied, by the
    checkpoint copies of a VM (it is an open file, not state)."""

    path: str
    #: the open file (-1 for a virtual image, or once closed)
    fd: int
    readonly: bool
    image_type: str
    #: lock range ``(start, length)``; length 0 is the whole file
    lock_range: tuple[int, int] = (0, 0)
    locked: bool = field(default=False)
    #: the lock table of a virtual image
    table: LockTable | None = None
    closed: bool = False

    def __deepcopy__(self, memo: dict[int, object]) -> Image:
        return self

    def lock(self) -> None:
        """``Block::try_lock_image``; ImageError when another holder has it."""
        kind = "Read" if self.readonly else "Write"
        already = ImageError(
            [f"Failed to get {kind} lock for disk image: {self.path}", "The file is already locked"]
        )
        if self.table is not None:
            if not self.table.acquire(self.path, id(self), self.readonly):
                raise already
            self.locked = True
            return
        lock_type = fcntl.F_RDLCK if self.readonly else fcntl.F_WRLCK
        try:
            fcntl.fcntl(self.fd, fcntl.F_OFD_SETLK, _flock(lock_type, *self.lock_range))
        except OSError as exc:
            if exc.errno in (errno_mod.EAGAIN, errno_mod.EACCES):
                raise already from None
            raise ImageError(
                [
                    f"Failed to get {kind} lock for disk image: {self.path}",
                    "The lock state could not be checked or set",
                ]
            ) from None
        self.locked = True

    def close(self) -> None:
        """Close the image (its lock goes with it)."""
        if self.closed:
            return
        self.closed = True
        if self.table is not None:
            self.table.release(self.path, id(self))
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
        self.locked = False


def _detect(fd: int) -> str:
    head = os.pread(fd, BLOCK_SIZE, 0)
    if len(head) < BLOCK_SIZE:
        raise ImageError(["I/O error (op=detect_image_type)", "failed to fill whole buffer"])
    if struct.unpack(">I", head[:4])[0] == _QCOW_MAGIC:
        return "Qcow2"
    size = os.fstat(fd).st_size
    if size >= BLOCK_SIZE:
        footer = os.pread(fd, BLOCK_SIZE, size - BLOCK_SIZE)
        if footer[:8] == _VHD_COOKIE and struct.unpack(">I", footer[60:64])[0] == _VHD_FIXED:
            return "FixedVhd"
    if struct.unpack("<Q", head[:8])[0] == _VHDX_SIGN:
        return "Vhdx"
    return "Raw"


class Images:
    """Opens the images of one VMM process (see the module doc for ``mode``)."""

    def __init__(
        self, mode: str = "check", *, root: Path | None = None, table: LockTable | None = None
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown images mode {mode!r} (known: {', '.join(MODES)})")
        if mode == "create" and root is None:
            raise ValueError("images mode 'create' needs a root directory")
        self.mode = mode
        self.root = root
        self.table = table if table is not None else LockTable()
        #: every image opened and not closed yet
        self.open_images: dict[int, Image] = {}

    def __deepcopy__(self, memo: dict[int, object]) -> Images:
        return self

    def _local(self, path: str) -> str:
        """Under ``create``: the file standing for ``path`` (made empty if missing)."""
        assert self.root is not None
        local = self.root / path.lstrip("/")
        if not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            with local.open("wb") as f:
                f.truncate(DEFAULT_SIZE)
        return str(local)

    def open(self, path: str, *, readonly: bool, direct: bool, granularity: str) -> Image:
        """``open_disk``: the open, typed image; ImageError with CHV's chain."""
        if self.mode == "virtual":
            image = Image(path, -1, readonly, "Raw", table=self.table)
            self.open_images[id(image)] = image
            return image
        real = self._local(path) if self.mode == "create" else path
        flags = os.O_RDONLY if readonly else os.O_RDWR
        if direct:
            flags |= os.O_DIRECT
        try:
            fd = os.open(real, flags | os.O_CLOEXEC)
        except OSError as exc:
            raise ImageError([f"I/O error (path={path} op=open)", _os_error(exc)]) from None
        try:
            image_type = _detect(fd)
            st = os.fstat(fd)
        except ImageError:
            os.close(fd)
            raise
        except OSError as exc:
            os.close(fd)
            raise ImageError(["I/O error (op=detect_image_type)", _os_error(exc)]) from None
        length = 0 if granularity == "Full" else max(st.st_size, st.st_blocks * 512)
        image = Image(path, fd, readonly, image_type, (0, length))
        self.open_images[id(image)] = image
        return image

    def close_unreferenced(self, keep: set[int]) -> None:
        """Close every open image whose id is not in ``keep`` (after a rollback)."""
        for key, image in list(self.open_images.items()):
            if image.closed:
                del self.open_images[key]
            elif key not in keep:
                image.close()
                del self.open_images[key]
