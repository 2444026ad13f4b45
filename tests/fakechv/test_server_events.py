"""fakechv.events (CHV's event-monitor stream) and the in-process server fixture
with the real API."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import unix_http

from fakechv.events import MAX_PENDING_BYTES, EventWriter, format_event, open_event_monitor


def _records(data: bytes) -> list[dict[str, Any]]:
    text = data.decode()
    assert text.endswith("\n\n")
    return [json.loads(chunk) for chunk in text.split("\n\n") if chunk]


def test_format_matches_serde_pretty_layout() -> None:
    text = format_event(
        {"source": "vm", "event": "device-removed", "properties": {"id": "disk1", "n": 3}},
        elapsed=1.5,
    )
    assert text.splitlines() == [
        "{",
        '  "timestamp": {',
        '    "secs": 1,',
        '    "nanos": 500000000',
        "  },",
        '  "source": "vm",',
        '  "event": "device-removed",',
        '  "properties": {',
        '    "id": "disk1",',
        '    "n": "3"',
        "  }",
        "}",
    ]
    bare = json.loads(format_event({"source": "vmm", "event": "starting"}, elapsed=0.25))
    assert bare == {
        "timestamp": {"secs": 0, "nanos": 250000000},
        "source": "vmm",
        "event": "starting",
        "properties": None,
    }
    stamped = {"source": "vm", "event": "booted", "timestamp": {"secs": 7, "nanos": 9}}
    assert json.loads(format_event(stamped, elapsed=99))["timestamp"] == {"secs": 7, "nanos": 9}
    with pytest.raises(ValueError, match="'source' and 'event'"):
        format_event({"event": "x"}, elapsed=0)


def test_writer_to_pipe_fd() -> None:
    r, w = os.pipe()
    ticks = iter([10.0, 10.25, 11.0])
    writer = EventWriter(w, clock=lambda: next(ticks))
    assert fcntl.fcntl(w, fcntl.F_GETFL) & os.O_NONBLOCK
    writer.emit({"source": "vmm", "event": "starting"})
    writer.emit({"source": "vm", "event": "booted"})
    writer.close()
    with os.fdopen(r, "rb") as f:
        events = _records(f.read())
    assert [(e["source"], e["event"]) for e in events] == [("vmm", "starting"), ("vm", "booted")]
    assert [e["timestamp"] for e in events] == [
        {"secs": 0, "nanos": 250000000},
        {"secs": 1, "nanos": 0},
    ]


def test_slow_reader_never_blocks_and_gets_everything_later() -> None:
    r, w = os.pipe()
    capacity = fcntl.fcntl(w, 1032)  # F_GETPIPE_SZ
    writer = EventWriter(w)
    big = {"source": "vm", "event": "x", "properties": {"pad": "y" * 4000}}
    n = capacity // 4000 + 10  # more than the pipe holds

    async def scenario() -> bytes:
        for _ in range(n):
            writer.emit(big)  # returns at once although nobody reads yet
        assert writer.pending_bytes > 0
        os.set_blocking(r, False)
        data = bytearray()
        for _ in range(20000):  # bounded: the reader drains, the loop refills
            await asyncio.sleep(0)
            try:
                data += os.read(r, 1 << 16)
            except BlockingIOError:
                if writer.pending_bytes == 0:
                    break
        return bytes(data)

    data = asyncio.run(scenario())
    writer.close()
    os.close(r)
    assert len(_records(data)) == n
    assert writer.dropped == 0


def test_buffer_bounded_when_reader_never_reads() -> None:
    r, w = os.pipe()
    writer = EventWriter(w)
    big = {"source": "vm", "event": "x", "properties": {"pad": "z" * 65536}}
    for _ in range(MAX_PENDING_BYTES // 65536 + 40):
        writer.emit(big)
    assert writer.pending_bytes <= MAX_PENDING_BYTES
    assert writer.dropped > 0
    writer.close(flush_timeout=0)
    os.close(r)


def test_reader_gone_is_not_an_error() -> None:
    r, w = os.pipe()
    os.close(r)
    writer = EventWriter(w)
    writer.emit({"source": "vm", "event": "booted"})  # EPIPE: logged, not raised
    writer.emit({"source": "vm", "event": "shutdown"})
    assert writer.dropped == 2  # neither reached a reader
    writer.close()


def test_open_event_monitor_specs(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_text("old content that must be truncated")
    writer = open_event_monitor(f"path={path}")
    writer.emit({"source": "vmm", "event": "starting"})
    writer.close()
    assert [e["event"] for e in _records(path.read_bytes())] == ["starting"]
    for bad, message in [
        ("events.json", "expected path=<file> or fd=<number>"),
        ("fd=", "expected path=<file> or fd=<number>"),
        ("fd=abc", "not a number"),
        ("socket=/x", "expected path=<file> or fd=<number>"),
    ]:
        with pytest.raises(ValueError, match=message):
            open_event_monitor(bad)
    with pytest.raises(OSError, match="fd=987654"):
        open_event_monitor("fd=987654")
    with pytest.raises(OSError, match="nodir"):
        open_event_monitor(f"path={tmp_path}/nodir/ev")


def test_fixture_runs_real_api_checked_against_spec(fakechv_server: Any, tmp_path: Path) -> None:
    srv = fakechv_server("v53")
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\0")
    config = {
        "cpus": {"boot_vcpus": 2, "max_vcpus": 2},  # a queue pair per vCPU
        "memory": {"size": 268435456},
        "payload": {"kernel": str(kernel)},
        "disks": [{"path": str(tmp_path / "a.img"), "id": "disk0"}],
    }
    ping = srv.get("vmm.ping")
    assert ping.status == 200 and ping.json["pid"] == os.getpid()
    assert ping.headers["Server"] == "Cloud Hypervisor API"
    assert srv.put("vm.create", config).status == 204
    assert srv.put("vm.boot").status == 204
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    inodes = [os.fstat(r1).st_ino, os.fstat(r2).st_ino]
    try:
        net = srv.put("vm.add-net", {"id": "net0", "num_queues": 4}, fds=[r1, r2])
    finally:
        for fd in (r1, w1, r2, w2):
            os.close(fd)
    assert net.status == 200
    assert net.json["id"] == "net0"
    assert srv.vmm.net_fds["net0"] == 2
    assert srv.server.fds_received == 2
    held = {
        os.readlink(f"/proc/self/fd/{n}")
        for n in os.listdir("/proc/self/fd")
        if os.path.exists(f"/proc/self/fd/{n}")
    }
    assert {f"pipe:[{i}]" for i in inodes} <= held  # the device keeps its taps
    info = srv.get("vm.info")
    assert info.json["device_tree"]["_virtio-pci-net0"]["pci_bdf"] == net.json["bdf"]
    assert [(e["source"], e["event"]) for e in srv.events] == [("vm", "booting"), ("vm", "booted")]
    # a deliberately wrong request still gets CHV's error array
    bad = unix_http(srv.path, "PUT", "/api/v1/vm.add-disk", b"{not json")
    assert bad.status == 400
    assert bad.json[0] == "Failed to deserialize JSON"


def test_writer_never_raises_on_write_errors(tmp_path: Path) -> None:
    """/dev/full (ENOSPC), a closed reader (EPIPE): the event is logged and dropped."""
    full = os.open("/dev/full", os.O_WRONLY)
    writer = EventWriter(full)
    for _ in range(3):
        writer.emit({"source": "vm", "event": "booted"})
    assert writer.dropped == 3 and writer.pending_bytes == 0
    writer.close()
    fifo = tmp_path / "ev"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = EventWriter(os.open(fifo, os.O_WRONLY))
    os.close(reader)  # the reader goes away: EPIPE (SIGPIPE is ignored by Python)
    writer.emit({"source": "vm", "event": "booted"})
    writer.emit({"source": "vm", "event": "shutdown"})
    assert writer.dropped == 2
    writer.close()


def _api_sequence(path: str) -> list[int]:
    """Statuses of a create / boot / hotplug / remove / info / delete sequence."""
    config = json.dumps(
        {
            "payload": {"kernel": "/k"},
            "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
            "memory": {"size": 268435456},
        }
    ).encode()
    out = [unix_http(path, "PUT", "/api/v1/vm.create", config).status]
    out.append(unix_http(path, "PUT", "/api/v1/vm.boot").status)
    for n in range(20):
        body = json.dumps({"path": f"/d{n}", "id": f"d{n}"}).encode()
        out.append(unix_http(path, "PUT", "/api/v1/vm.add-disk", body).status)
        body = json.dumps({"id": f"d{n}"}).encode()
        out.append(unix_http(path, "PUT", "/api/v1/vm.remove-device", body).status)
    out.append(unix_http(path, "GET", "/api/v1/vm.info").status)
    out.append(unix_http(path, "PUT", "/api/v1/vm.delete").status)
    return out


@pytest.mark.parametrize("sink", ["dev-full", "closed-reader", "stalled-reader"])
def test_event_monitor_errors_never_fail_the_api(
    spawn_fakechv: Any, tmp_path: Path, sink: str
) -> None:
    expected = _api_sequence(spawn_fakechv().path)  # the same calls without a monitor
    reader = None
    if sink == "dev-full":
        target = "/dev/full"
    else:
        fifo = tmp_path / "events"
        os.mkfifo(fifo)
        target = str(fifo)
        # a FIFO's open for writing waits for a reader: open ours first
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        fcntl.fcntl(reader, 1031, 4096)  # F_SETPIPE_SZ: a page, so a stalled reader shows
    child = spawn_fakechv("--event-monitor", f"path={target}")
    if sink == "closed-reader" and reader is not None:
        os.close(reader)
        reader = None
    try:
        assert _api_sequence(child.path) == expected
        assert unix_http(child.path, "GET", "/api/v1/vmm.ping").status == 200
    finally:
        if reader is not None:
            os.close(reader)
    child.proc.terminate()
    assert child.wait() == 0
    assert "Traceback" not in child.log
    if sink != "stalled-reader":
        assert "event monitor: write failed" in child.log  # logged, then dropped
