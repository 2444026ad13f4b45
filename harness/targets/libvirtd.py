"""Stock libvirt's ``virtchd``, run privately for the ``libvirt`` target.

Stock libvirt 11.3.0 is built by ``tools/build-libvirt.sh`` into ``.cache/libvirt/inst``
(``LIBVIRT_PREFIX`` overrides). Each host of a scenario is one private ``virtchd`` (plus
the ``virtlogd`` it logs through), run as root inside new mount, network and PID
namespaces:

* the build's compiled-in ``run/``, ``var/`` and ``etc/`` directories are bind-mounted
  from the host's work directory, so sockets, pid files, domain state and persistent
  definitions all live under that directory and the system's ``/run/libvirt`` is never
  touched; several daemons can run side by side;
* tap devices (libvirt's CH driver opens the ``<target dev>`` of an ``ethernet``
  interface, which must exist when ``managed='no'``) are created in the private network
  namespace, so nothing appears on the machine's network;
* ``cloud-hypervisor`` on the daemon's ``PATH`` is a small script that runs
  ``python -m fakechv`` with the host's profile (libvirt clears the environment of the
  processes it starts, so ``FAKECHV_PROFILE`` is written into the script);
* the cgroup file systems are unmounted in there, so libvirt sets up no cgroups for
  domains (it would otherwise create them in the machine's hierarchy);
* ending the namespace's first process ends every process in it, also a hypervisor
  libvirt failed to reap.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

import harness
from fakechv.openapi import reference_dir
from harness.errors import HarnessError
from harness.targets.base import OperationFailed, UnsupportedOperation

__all__ = [
    "LIBVIRT_VERSION",
    "NO_SUPPORT",
    "LibvirtDaemon",
    "LibvirtUnavailable",
    "libvirt_prefix",
    "unavailable_reason",
]

LIBVIRT_VERSION = "11.3.0"
REPO_ROOT = Path(harness.__file__).resolve().parents[1]
_STAMP = ".bdf-harness-build"
#: what libvirt says when its driver lacks an entry point (VIR_ERR_NO_SUPPORT)
NO_SUPPORT = "this function is not supported by the connection driver"
_START_TIMEOUT = 30.0


class LibvirtUnavailable(HarnessError):
    """The built libvirt, or what running it needs (root, namespaces), is not there."""


def libvirt_prefix() -> Path:
    """Where ``tools/build-libvirt.sh`` installed libvirt (``LIBVIRT_PREFIX`` overrides)."""
    env = os.environ.get("LIBVIRT_PREFIX")
    if env:
        return Path(env).resolve()
    return REPO_ROOT / ".cache" / "libvirt" / "inst"


def unavailable_reason(prefix: Path | None = None) -> str | None:
    """Why the libvirt target cannot run here, or None when it can."""
    prefix = prefix or libvirt_prefix()
    stamp = prefix / _STAMP
    if not (prefix / "sbin" / "virtchd").is_file() or not stamp.is_file():
        return f"no libvirt build in {prefix} (run tools/build-libvirt.sh)"
    stamp_text = stamp.read_text()
    if f"version={LIBVIRT_VERSION} " not in stamp_text:
        return f"{prefix} holds another libvirt version than {LIBVIRT_VERSION}"
    built = re.search(r"\bprefix=(\S+)", stamp_text)
    if built and Path(built.group(1)).resolve() != prefix.resolve():
        return (
            f"the libvirt in {prefix} was built for {built.group(1)} (libvirt compiles its "
            "paths in): point LIBVIRT_PREFIX there or rebuild with tools/build-libvirt.sh"
        )
    if os.geteuid() != 0:
        return "the libvirt target runs virtchd as root in private namespaces; not root"
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} (util-linux/iproute2) is not installed"
    return None


# --------------------------------------------------------------------------- the daemon
_INIT_SCRIPT = """\
set -e
P={prefix}
R={root}
for d in run var etc; do mount --bind "$R/$d" "$P/$d"; done
ip link set lo up
# no cgroup hierarchy in here: libvirt then creates no cgroups on the machine's
umount -R -l /sys/fs/cgroup 2>/dev/null || true
export PATH="$R/bin:$P/bin:$P/sbin:/usr/sbin:/usr/bin:/sbin:/bin"
LIBVIRT_LOG_OUTPUTS="3:file:$R/virtlogd.log" "$P/sbin/virtlogd" -d
set +e
export LIBVIRT_LOG_OUTPUTS="3:file:$R/virtchd.log"
while [ ! -e "$R/stopping" ]; do
    "$P/sbin/virtchd" >>"$R/virtchd.out" 2>&1
    echo "virtchd exited with status $?" >>"$R/virtchd.out"
done
"""

_WRAPPER = """\
#!/bin/sh
# cloud-hypervisor for libvirt: fakechv with profile {profile}
F={faults}
if [ "$1" != "--version" ] && [ -s "$F" ]; then
    for spec in $(cat "$F"); do set -- "$@" --fault "$spec"; done
    rm -f "$F"
fi
export FAKECHV_PROFILE={profile} PYTHONPATH={pythonpath} CHV_REFERENCE_DIR={refdir}
exec {python} -m fakechv --profile {profile} --eject {eject} --images virtual "$@"
"""


_REAL_WRAPPER = """\
#!/bin/sh
# cloud-hypervisor for libvirt: a real one
exec {binary} "$@"
"""


class LibvirtDaemon:
    """A private ``virtchd`` whose state lives under ``root``."""

    def __init__(
        self,
        prefix: Path,
        root: Path,
        profile: str,
        *,
        eject: str = "immediate",
        chv_binary: Path | None = None,
    ) -> None:
        """``chv_binary``: libvirt spawns this real ``cloud-hypervisor`` instead of fakechv."""
        self.prefix = prefix
        self.root = root
        self.profile = profile
        self.eject = eject
        self.chv_binary = chv_binary
        self.proc: asyncio.subprocess.Process | None = None

    # paths ------------------------------------------------------------------
    @property
    def socket(self) -> Path:
        return self.root / "run" / "libvirt" / "virtchd-sock"

    @property
    def uri(self) -> str:
        return f"ch:///system?socket={self.socket}"

    @property
    def log(self) -> Path:
        """virtchd's own log (warnings and errors)."""
        return self.root / "virtchd.log"

    def chv_socket(self, domain: str) -> Path:
        return self.root / "run" / "libvirt" / "ch" / f"{domain}-socket"

    def domain_log(self, domain: str) -> Path:
        """What the hypervisor printed (libvirt's per-domain log)."""
        return self.root / "var" / "log" / "libvirt" / "ch" / f"{domain}.log"

    # life cycle -------------------------------------------------------------
    async def start(self) -> None:
        reason = unavailable_reason(self.prefix)
        if reason:
            raise LibvirtUnavailable(reason)
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("run", "var", "etc"):
            dest = self.root / sub
            if not dest.exists():
                shutil.copytree(self.prefix / sub, dest, symlinks=True)
        bindir = self.root / "bin"
        bindir.mkdir(exist_ok=True)
        wrapper = bindir / "cloud-hypervisor"
        wrapper.write_text(
            _REAL_WRAPPER.format(binary=shlex.quote(str(self.chv_binary)))
            if self.chv_binary is not None
            else _WRAPPER.format(
                profile=shlex.quote(self.profile),
                eject=shlex.quote(self.eject),
                faults=shlex.quote(str(self.root / "pending-faults")),
                pythonpath=shlex.quote(str(REPO_ROOT)),
                refdir=shlex.quote(str(reference_dir())),
                python=shlex.quote(sys.executable),
            )
        )
        wrapper.chmod(0o755)
        script = self.root / "init.sh"
        script.write_text(
            _INIT_SCRIPT.format(
                prefix=shlex.quote(str(self.prefix)), root=shlex.quote(str(self.root))
            )
        )
        self.proc = await asyncio.create_subprocess_exec(
            "unshare",
            "--mount",
            "--net",
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            "sh",
            str(script),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=open(self.root / "init.err", "wb"),
        )
        try:
            await self._wait_ready(None)
        except BaseException:
            await self.stop()  # a daemon that did not come up is not left running
            raise

    def _ns_init(self) -> int | None:
        """The namespace's first process (outside pid), child of ``unshare``."""
        if self.proc is None:
            return None
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return None
        pids = [int(p) for p in text.split()]
        return pids[0] if pids else None

    def _virtchd_pid(self) -> int | None:
        init = self._ns_init()
        if init is None:
            return None
        try:
            text = Path(f"/proc/{init}/task/{init}/children").read_text()
        except OSError:
            return None
        for pid in text.split():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if cmd.endswith(b"/virtchd"):
                return int(pid)
        return None

    async def _wait_ready(self, old_pid: int | None) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.returncode is not None:
                break
            pid = self._virtchd_pid()
            if pid is not None and pid != old_pid and self.socket.exists():
                rc, _out, err = await self._virsh_raw("version")
                if rc == 0:
                    return
                last = err.strip()
            await asyncio.sleep(0.05)
        detail = ""
        for name in ("init.err", "virtchd.out", "virtchd.log"):
            path = self.root / name
            if path.exists() and path.read_text().strip():
                detail += f"\n{name}: {path.read_text().strip()[-800:]}"
        raise LibvirtUnavailable(f"virtchd in {self.root} did not come up: {last}{detail}")

    async def restart(self) -> None:
        """Stop virtchd (SIGTERM, as systemctl restart does) and wait for a new one."""
        pid = self._virtchd_pid()
        if pid is None:
            raise OperationFailed(f"virtchd in {self.root} is not running")
        os.kill(pid, signal.SIGTERM)
        await self._wait_ready(pid)

    async def stop(self) -> None:
        if self.proc is None:
            return
        (self.root / "stopping").touch()
        init = self._ns_init()
        if init is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGKILL)  # ends every process of the namespace
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:  # pragma: no cover - unshare should follow its child
            self.proc.kill()
            await self.proc.wait()
        self.proc = None

    def netns_exec(self, *argv: str) -> list[str]:
        init = self._ns_init()
        if init is None:
            raise OperationFailed(f"virtchd's namespace in {self.root} is gone")
        return ["nsenter", "-t", str(init), "-n", *argv]

    async def ensure_tap(self, name: str) -> None:
        """Create tap ``name`` in the daemon's network namespace unless it exists."""
        proc = await asyncio.create_subprocess_exec(
            *self.netns_exec("ip", "link", "show", name),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        if await proc.wait() == 0:
            return
        proc = await asyncio.create_subprocess_exec(
            *self.netns_exec("ip", "tuntap", "add", "dev", name, "mode", "tap"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _out, err = await proc.communicate()
        if proc.returncode != 0:
            raise OperationFailed(f"cannot create tap device {name!r}: {err.decode().strip()}")

    # virsh ------------------------------------------------------------------
    async def _virsh_raw(self, *args: str) -> tuple[int, str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIBVIRT_")}
        env["LC_ALL"] = "C"
        proc = await asyncio.create_subprocess_exec(
            str(self.prefix / "bin" / "virsh"),
            "-q",
            "-c",
            self.uri,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def virsh(self, *args: str) -> str:
        """Run virsh; OperationFailed with virsh's message, UnsupportedOperation for
        libvirt's "not supported by the connection driver"."""
        rc, out, err = await self._virsh_raw(*args)
        if rc != 0:
            message = " ".join(
                line.removeprefix("error: ").strip() for line in err.splitlines() if line.strip()
            )
            if NO_SUPPORT in message:
                raise UnsupportedOperation(
                    f"libvirt {LIBVIRT_VERSION}'s CH driver: virsh {args[0]}: {message}"
                )
            raise OperationFailed(message or f"virsh {args[0]} exited with status {rc}")
        return out
