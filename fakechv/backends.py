"""The back ends CHV reaches when it makes a device, other than disk images.

Under ``--images check`` (CHV's behaviour) a device whose back end is not there fails
as on CHV, with CHV's error chain below the device manager's message:

* a vhost-user device (generic vhost-user, virtio-fs, a vhost-user disk or net)
  connects to its socket first: ``Connection to socket failed`` and the vhost-user
  crate's ``vhost-user: can't connect to peer: <OS error>``;
* a VFIO device opens the container ``/dev/vfio/vfio`` first (vfio-ioctls):
  ``failed to open /dev/vfio/vfio container: <OS error>`` and the OS error again.

A back end that answers is taken as working: fakechv speaks no vhost-user protocol and
maps no VFIO device, so what CHV would do next is not emulated.
"""

from __future__ import annotations

import os
import socket

from fakechv.errors import ChainError, io_error_text

__all__ = ["VFIO_CONTAINER", "BackendError", "connect_vhost_user", "open_vfio_container"]

VFIO_CONTAINER = "/dev/vfio/vfio"


class BackendError(ChainError):
    """A back end is missing (CHV's chain below the device manager's message)."""


_os_error = io_error_text


def connect_vhost_user(path: str) -> None:
    """Connect to (and let go of) the vhost-user socket ``path``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(1.0)
        sock.connect(path)
    except OSError as exc:
        raise BackendError(
            ["Connection to socket failed", f"vhost-user: can't connect to peer: {_os_error(exc)}"]
        ) from None
    finally:
        sock.close()


def open_vfio_container() -> None:
    """Open (and close) the VFIO container a VFIO device needs."""
    try:
        fd = os.open(VFIO_CONTAINER, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        text = _os_error(exc)
        raise BackendError([f"failed to open {VFIO_CONTAINER} container: {text}", text]) from None
    os.close(fd)
