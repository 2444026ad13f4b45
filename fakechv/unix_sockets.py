"""The Unix sockets fakechv listens on: a new one bound at a path (mode 0600, a stale
socket replaced or not), the API socket's lock file, an inherited bound socket.

The API socket itself (``--api-socket path=P``) follows CHV v53: an exclusive
lock on ``P.lock`` says a live instance serves ``P``; with the lock held a
leftover socket at ``P`` is stale and replaced. fakechv is stricter than CHV in
two ways: it also refuses to replace a socket at which something answers (a
process that does not take the lock), and on exit it removes ``P`` only if ``P``
is still the socket it bound.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import stat
import struct
from collections.abc import Iterator

__all__ = [
    "SocketInUse",
    "bind_unix",
    "listen_on_fd",
    "socket_answers",
    "take_socket_lock",
    "umask",
    "unlink_if_ours",
]


class SocketInUse(OSError):
    """The API socket path is served by a live process."""


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def umask(mask: int) -> contextlib.AbstractContextManager[None]:
    """Create files (sockets) under ``mask`` (0o177: mode 0600)."""
    return _umask(mask)


def socket_answers(path: str, timeout: float = 0.5) -> bool:
    """Whether a process accepts connections on the Unix socket ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def unlink_if_ours(path: str, owned: tuple[int, int]) -> None:
    """Remove ``path`` only if it is still the socket file we bound."""
    if _identity(path) == owned:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def bind_unix(
    path: str, what: str, *, replace_stale: bool
) -> tuple[socket.socket, tuple[int, int]]:
    """A listening socket bound at ``path`` (mode 0600) and the bound file's identity.

    A socket file already at ``path`` is replaced when ``replace_stale`` and nothing
    answers on it (:class:`SocketInUse` when something does); otherwise binding
    fails as CHV's ``UnixListener::bind`` does. Any other kind of file is refused.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EEXIST, f"{what} {path} exists and is not a socket")
        if socket_answers(path):
            raise SocketInUse(
                errno.EADDRINUSE, f"{what} {path} is already in use by another running instance"
            )
        if replace_stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _umask(0o177):
            sock.bind(path)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"{what} {path}: {exc.strerror or exc}") from None
    identity = _identity(path)
    assert identity is not None
    return sock, identity


def take_socket_lock(path: str) -> int:
    """CHV v53's ``P.lock``: an exclusive OFD lock while the API socket is served."""
    lock_path = f"{path}.lock"
    try:
        fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise OSError(
            exc.errno, f"API socket {path}: {exc.strerror} (lock file {lock_path})"
        ) from None
    try:
        _ofd_write_lock(fd)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise SocketInUse(
                errno.EADDRINUSE,
                f"API socket {path!r} is already in use by another running instance",
            ) from None
        raise OSError(
            exc.errno, f"API socket {path}: {exc.strerror} (lock file {lock_path})"
        ) from None
    return fd


#: ``F_OFD_SETLK`` (Linux): a lock owned by the open file, as CHV takes it
_F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)


def _ofd_write_lock(fd: int) -> None:
    """A whole-file write lock on ``fd`` (``struct flock`` with l_start = l_len = 0)."""
    flock = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    try:
        fcntl.fcntl(fd, _F_OFD_SETLK, flock)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a kernel without OFD locks


def listen_on_fd(fd: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise OSError(f"API socket fd {fd} is not usable: {exc.strerror or exc}") from None
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise OSError(f"API socket fd {fd} is not a Unix stream socket")
    try:
        sock.listen(128)  # no-op when already listening; required when only bound
    except OSError as exc:
        sock.detach()
        raise OSError(f"API socket fd {fd} cannot listen: {exc.strerror or exc}") from None
    return sock
