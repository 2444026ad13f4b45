"""Migration and snapshot/restore between two real fakechv processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakechv import migration

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tcp_listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (read from /proc, without
    connecting: a connection would be taken as the migration sender)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":
                return True
    return False


def _wait(cond: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _vm_config(tmp_path: Path) -> dict[str, Any]:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\0")
    return {
        "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
        "memory": {"size": 268435456},
        "payload": {"kernel": str(kernel)},
        "disks": [{"path": str(tmp_path / f"d{i}.img"), "id": f"disk{i}"} for i in range(3)],
        "net": [{"id": "net0", "mac": "52:54:00:00:00:01"}],
    }


def _booted_source_with_hole(
    spawn_fakechv: Any, tmp_path: Path, profile: str | None = None
) -> tuple[Any, dict[str, Any]]:
    """A running VM with a hot-added pmem whose middle disk was then removed (its
    slot is now a hole); returns the child and its vm.info."""
    src = spawn_fakechv(profile=profile)
    assert src.put("vm.create", _vm_config(tmp_path)).status == 204
    assert src.put("vm.boot").status == 204
    res = src.put("vm.add-pmem", {"file": str(tmp_path / "pm.img"), "id": "pmem0"})
    assert res.status == 200
    assert src.put("vm.remove-device", {"id": "disk1"}).status == 204
    info = src.get("vm.info").json
    assert "disk1" not in info["device_tree"]
    return src, info


def _bdfs(info: dict[str, Any]) -> dict[str, str]:
    return {
        node_id: node["pci_bdf"]
        for node_id, node in info["device_tree"].items()
        if node.get("pci_bdf") is not None
    }


def _hole_kept(info: dict[str, Any]) -> None:
    """The removed disk's slot stays free: the BDF slots in use are not a
    contiguous run from the first one."""
    slots = sorted(int(bdf.split(":")[2].split(".")[0], 16) for bdf in _bdfs(info).values())
    assert slots != list(range(slots[0], slots[0] + len(slots))), slots


class _Background:
    """Runs one blocking request in a thread and keeps its result."""

    def __init__(self, fn: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self._t = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._t.start()

    def _run(self, fn: Any) -> None:
        try:
            self.result = fn()
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 30.0) -> Any:
        self._t.join(timeout)
        assert not self._t.is_alive(), "request did not finish"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.mark.parametrize("scheme", ["unix", "tcp"])
def test_live_migration_keeps_bdfs_and_holes(
    spawn_fakechv: Any, tmp_path: Path, scheme: str
) -> None:
    src, before = _booted_source_with_hole(spawn_fakechv, tmp_path)
    _hole_kept(before)
    dst = spawn_fakechv()
    if scheme == "unix":
        mig_path = tmp_path / "mig.sock"
        url = f"unix:{mig_path}"
        listening = mig_path.exists
    else:
        port = _free_port()
        url = f"tcp:127.0.0.1:{port}"

        def listening() -> bool:
            return _tcp_listening(port)

    recv = _Background(lambda: dst.put("vm.receive-migration", {"receiver_url": url}, timeout=60))
    _wait(listening, f"the destination to listen on {url}")
    sent = src.put("vm.send-migration", {"destination_url": url}, timeout=60)
    assert sent.status in (200, 204), sent.json
    got = recv.join()
    assert got.status in (200, 204), got.json

    after = dst.get("vm.info").json
    assert after["device_tree"] == before["device_tree"]
    assert _bdfs(after) == _bdfs(before)
    assert [d["id"] for d in after["config"]["disks"]] == ["disk0", "disk2"]
    assert after["state"] == "Running"
    _hole_kept(after)
    # the destination keeps allocating from the migrated state: a new disk
    # takes the hole left by disk1
    new = dst.put("vm.add-disk", {"path": str(tmp_path / "new.img"), "id": "disk9"})
    assert new.status == 200
    hole_bdf = next(bdf for bdf in sorted(set(_all_slots(before)) - set(_bdfs(before).values())))
    assert new.json["bdf"] == hole_bdf

    # the source VM is gone: CHV's VMM exits after a successful migration
    assert src.wait(15) == 0
    assert not os.path.exists(src.path)


def _all_slots(info: dict[str, Any]) -> list[str]:
    """Every BDF from the lowest to the highest one in use, on segment 0 bus 0."""
    used = sorted(_bdfs(info).values())
    lo = int(used[0].split(":")[2].split(".")[0], 16)
    hi = int(used[-1].split(":")[2].split(".")[0], 16)
    return [f"0000:00:{slot:02x}.0" for slot in range(lo, hi + 1)]


def _assert_source_untouched(src: Any, before: dict[str, Any]) -> None:
    assert src.proc.poll() is None, "the source VMM exited after a failed migration"
    after = src.get("vm.info").json
    assert after["device_tree"] == before["device_tree"]
    assert after["config"] == before["config"]
    assert after["state"] == "Running"


def _send_fails(src: Any, url: str, expected: str, *, worker: bool = True) -> None:
    """vm.send-migration to ``url`` fails with ``expected`` in its error: in the answer
    (v52), or, from v53, after a 204 in the worker (the migration-failed event; the
    reason goes to the log, as CHV's worker logs it)."""
    res = src.put("vm.send-migration", {"destination_url": url}, timeout=60)
    if not worker:
        assert res.status >= 400
        assert expected in res.json[-1]
        return
    assert res.status == 204, res.body
    assert src.get("vm.info").status == 200  # waits for the worker
    assert expected in src.log


@pytest.mark.parametrize("profile", ["v52", "v53"])
def test_send_to_nothing_leaves_source_untouched(
    spawn_fakechv: Any, tmp_path: Path, profile: str
) -> None:
    src, before = _booted_source_with_hole(spawn_fakechv, tmp_path, profile)
    worker = profile != "v52"
    for url in (f"unix:{tmp_path}/nobody.sock", f"tcp:127.0.0.1:{_free_port()}"):
        _send_fails(src, url, "Error connecting to ", worker=worker)  # UNIX or TCP socket
        _assert_source_untouched(src, before)
    _send_fails(src, "tcp:192.0.2.1:6000", "non-loopback", worker=worker)
    _assert_source_untouched(src, before)


def test_destination_with_a_vm_refuses(spawn_fakechv: Any, tmp_path: Path) -> None:
    src, before = _booted_source_with_hole(spawn_fakechv, tmp_path)
    dst = spawn_fakechv()
    assert dst.put("vm.create", _vm_config(tmp_path)).status == 204
    url = f"unix:{tmp_path}/busy.sock"
    res = dst.put("vm.receive-migration", {"receiver_url": url})
    assert res.status >= 400
    assert not (tmp_path / "busy.sock").exists()
    _send_fails(src, url, "Error connecting to ")
    _assert_source_untouched(src, before)


@contextlib.contextmanager
def _rogue_receiver(path: str, behaviour: str) -> Iterator[None]:
    """A fake destination in a thread: 'refuse' answers a negative ack, 'cut'
    reads a few bytes and hangs up."""
    ready = threading.Event()
    stop: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if behaviour == "refuse":
                await reader.readexactly(len(migration.MAGIC))
                size = int.from_bytes(await reader.readexactly(8), "big")
                await reader.readexactly(size)
                payload = b'{"ok":false,"error":"destination out of slots"}'
                writer.write(migration.MAGIC + len(payload).to_bytes(8, "big") + payload)
                await writer.drain()
            else:
                await reader.read(16)
            writer.close()

        server = await asyncio.start_unix_server(on_conn, path)
        stop.append(asyncio.get_running_loop())
        ready.set()
        async with server:
            await asyncio.Event().wait()

    t = threading.Thread(target=lambda: _run_until_cancelled(serve()), daemon=True)
    t.start()
    assert ready.wait(10)
    try:
        yield
    finally:
        loop = stop[0]
        for task in asyncio.all_tasks(loop):
            loop.call_soon_threadsafe(task.cancel)
        t.join(10)


def _run_until_cancelled(coro: Any) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(coro)


@pytest.mark.parametrize("behaviour", ["refuse", "cut"])
def test_refused_or_cut_transfer_leaves_source_untouched(
    spawn_fakechv: Any, tmp_path: Path, behaviour: str
) -> None:
    src, before = _booted_source_with_hole(spawn_fakechv, tmp_path)
    path = str(tmp_path / f"{behaviour}.sock")
    expected = "destination out of slots" if behaviour == "refuse" else "connection closed"
    with _rogue_receiver(path, behaviour):
        _send_fails(src, f"unix:{path}", expected)
    _assert_source_untouched(src, before)


def test_partial_state_fails_the_destination(spawn_fakechv: Any, tmp_path: Path) -> None:
    dst = spawn_fakechv()
    mig_path = tmp_path / "partial.sock"
    recv = _Background(
        lambda: dst.put("vm.receive-migration", {"receiver_url": f"unix:{mig_path}"}, timeout=60)
    )
    _wait(mig_path.exists, "the destination to listen")
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(mig_path))
        s.sendall(migration.MAGIC + (5000).to_bytes(8, "big") + b'{"config": {')
    res = recv.join()
    assert res.status >= 400
    assert "connection closed" in res.json[-1]
    info = dst.get("vm.info")
    assert info.status >= 400  # no VM was created from half a state
    assert dst.proc.poll() is None


def test_snapshot_restore_between_processes_keeps_holes(spawn_fakechv: Any, tmp_path: Path) -> None:
    src, before = _booted_source_with_hole(spawn_fakechv, tmp_path)
    snap_dir = tmp_path / "snap"
    snap_dir.mkdir()
    assert src.put("vm.pause").status == 204
    res = src.put("vm.snapshot", {"destination_url": f"file://{snap_dir}"})
    assert res.status == 204, res.json
    assert src.put("vmm.shutdown").status == 200
    assert src.wait(15) == 0

    dst = spawn_fakechv()
    res = dst.put("vm.restore", {"source_url": f"file://{snap_dir}"})
    assert res.status == 204, res.json
    after = dst.get("vm.info").json
    assert after["device_tree"] == before["device_tree"]
    assert _bdfs(after) == _bdfs(before)
    _hole_kept(after)
    assert dst.put("vm.resume").status == 204
    assert dst.get("vm.info").json["state"] == "Running"
