"""The fakechv command, started the way libvirt and people start cloud-hypervisor."""

from __future__ import annotations

import array
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import child_env, fakechv_command, unix_http, wait_for_ping

from fakechv.profiles import PROFILES, get_profile

pytestmark = pytest.mark.slow


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        fakechv_command(*args),
        capture_output=True,
        text=True,
        env=child_env(env),
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _libvirt_version(stdout: str) -> tuple[int, int]:
    """What libvirt's chExtractVersion reads: 'cloud-hypervisor v<major>.<minor>...'."""
    m = re.match(r"cloud-hypervisor v(\d+)\.(\d+)", stdout)
    assert m, f"libvirt could not parse {stdout!r}"
    return int(m.group(1)), int(m.group(2))


def _release(profile: str) -> tuple[int, int]:
    major, minor = get_profile(profile).build_version.lstrip("v").split(".")[:2]
    return int(major), int(re.match(r"\d+", minor).group(0))  # type: ignore[union-attr]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_version_banner_per_profile(profile: str) -> None:
    res = _run("--version", "--profile", profile)
    assert res.returncode == 0, res.stderr
    assert _libvirt_version(res.stdout) == _release(profile)
    migration_line = "Migration Protocol Versions: 0" in res.stdout
    assert migration_line == get_profile(profile).migration_protocol_line
    assert "Enabled features" not in res.stdout
    verbose = _run("--version", "-v", "--profile", profile)
    assert "Enabled features: [" in verbose.stdout


def test_profile_from_environment_and_option_precedence() -> None:
    from_env = _run("--version", env={"FAKECHV_PROFILE": "v51"})
    assert _libvirt_version(from_env.stdout) == _release("v51")
    assert "Migration Protocol Versions" not in from_env.stdout
    overridden = _run("--version", "--profile", "v52", env={"FAKECHV_PROFILE": "v51"})
    assert _libvirt_version(overridden.stdout) == _release("v52")
    default = _run("--version")
    assert _libvirt_version(default.stdout) == _release("v53")


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--profile", "v99", "--api-socket", "/tmp/x.sock"], None, "'v99'"),
        (["--api-socket", "/tmp/x.sock"], {"FAKECHV_PROFILE": "v7"}, "'v7'"),
        (["--api-socket", "fd=abc"], None, "fd='abc'"),
        (["--api-socket", "path="], None, "empty path"),
        (["--api-socket", "/tmp/x.sock", "--eject-delay-ms", "soon"], None, "'soon'"),
        (["--api-socket", "/tmp/x.sock", "--eject-delay-ms", "-5"], None, "'-5'"),
        (["--api-socket", "/tmp/x.sock", "--eject", "sometimes"], None, "'sometimes'"),
        (["--api-socket", "/tmp/x.sock", "--event-monitor", "nowhere"], None, "'nowhere'"),
        (["--api-socket", "/tmp/x.sock", "--event-monitor", "fd=x"], None, "fd='x'"),
        (["--api-socket", "/tmp/x.sock", "--fault", "vm.add-disk:x"], None, "vm.add-disk:x"),
        ([], None, "--api-socket is required"),
        (["--api-socket"], None, "--api-socket"),
    ],
)
def test_bad_values_exit_2_with_clear_message(
    args: list[str], env: dict[str, str] | None, needle: str
) -> None:
    res = _run(*args, env=env)
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert needle in res.stderr
    assert "Traceback" not in res.stderr


def test_help_documents_options() -> None:
    res = _run("--help")
    assert res.returncode == 0
    for word in (
        "--api-socket",
        "--event-monitor",
        "--profile",
        "--eject-delay-ms",
        "--fault",
        "FAKECHV_PROFILE",
        "examples:",
    ):
        assert word in res.stdout


def test_path_socket_mode_0600_and_shutdown_exits_0(spawn_fakechv: Any) -> None:
    child = spawn_fakechv()
    assert stat.S_IMODE(os.stat(child.path).st_mode) == 0o600
    res = child.put("vmm.shutdown")
    assert res.status == 200
    assert child.wait() == 0
    assert not os.path.exists(child.path)


def test_bare_path_and_sigterm(spawn_fakechv: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "bare.sock")
    child = spawn_fakechv("--api-socket", path, api_socket=None, ping_path=path)
    assert child.get("vmm.ping").status == 200
    child.proc.send_signal(signal.SIGTERM)
    assert child.wait() == 0
    assert not os.path.exists(path)


def test_inherited_listening_fd_like_libvirt(spawn_fakechv: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "vm-socket")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    fd = listener.fileno()
    try:
        child = spawn_fakechv(
            "--api-socket",
            f"fd={fd}",
            "--seccomp",
            "false",
            api_socket=None,
            ping_path=path,
            pass_fds=[fd],
        )
    finally:
        listener.close()  # VIR_COMMAND_PASS_FD_CLOSE_PARENT
    res = child.get("vmm.ping")
    assert res.status == 200
    assert res.json["pid"] == child.proc.pid
    assert child.put("vmm.shutdown").status == 200
    assert child.wait() == 0


def test_unknown_chv_flags_are_ignored_with_warning(spawn_fakechv: Any) -> None:
    child = spawn_fakechv(
        "--kernel",
        "/boot/vmlinux",
        "--cpus",
        "boot=2",
        "--seccomp",
        "false",
        "--disk",
        "path=/a.img",
        "path=/b.img",
        "--landlock",
        "-v",
    )
    assert child.get("vmm.ping").status == 200
    log = child.log
    for flag in (
        "--kernel /boot/vmlinux",
        "--cpus boot=2",
        "--seccomp false",
        "--disk path=/a.img path=/b.img",
        "--landlock",
    ):
        assert f"ignoring cloud-hypervisor option not emulated: {flag}" in log


def test_log_file_option(spawn_fakechv: Any, tmp_path: Path) -> None:
    log_file = tmp_path / "chv.log"
    child = spawn_fakechv("--log-file", str(log_file), "-vv", "--kernel", "k")
    child.get("vmm.ping")
    child.put("vmm.shutdown")
    child.wait()
    text = log_file.read_text()
    assert "ignoring cloud-hypervisor option not emulated: --kernel k" in text
    assert "Traceback" not in text


# ---------------------------------------------------------------- event monitor


def _parse_events(stream: str) -> list[dict[str, Any]]:
    """Split CHV's stream: pretty JSON records each followed by a blank line."""
    assert stream.endswith("\n\n") or stream == "", stream[-50:]
    records = [chunk for chunk in stream.split("\n\n") if chunk]
    events = [json.loads(chunk) for chunk in records]
    for ev, raw in zip(events, records, strict=True):
        assert set(ev) == {"timestamp", "source", "event", "properties"}
        assert set(ev["timestamp"]) == {"secs", "nanos"}
        assert raw == json.dumps(ev, indent=2)  # serde_json's pretty layout
    return events


def _create_vm(child: Any, tmp_path: Path, vcpus: int = 1, max_vcpus: int | None = None) -> None:
    """vm.create of a small VM whose kernel file exists."""
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\0")
    config = {
        "cpus": {"boot_vcpus": vcpus, "max_vcpus": max_vcpus or vcpus},
        "memory": {"size": 268435456},
        "payload": {"kernel": str(kernel)},
    }
    assert child.put("vm.create", config).status == 204


def _boot_minimal_vm(child: Any, tmp_path: Path) -> None:
    _create_vm(child, tmp_path)
    assert child.put("vm.boot").status == 204


def _check_lifecycle_events(events: list[dict[str, Any]]) -> None:
    names = [(e["source"], e["event"]) for e in events]
    assert names[0] == ("vmm", "starting")
    assert ("vm", "booted") in names
    assert names.index(("vm", "booting")) < names.index(("vm", "booted"))
    assert names[-1] == ("vmm", "shutdown")
    stamps = [e["timestamp"]["secs"] * 10**9 + e["timestamp"]["nanos"] for e in events]
    assert stamps == sorted(stamps)


def test_event_monitor_fifo_releases_blocked_reader(spawn_fakechv: Any, tmp_path: Path) -> None:
    fifo = tmp_path / "vm-event-monitor-fifo"
    os.mkfifo(fifo, 0o600)
    child = spawn_fakechv("--event-monitor", f"path={fifo}", wait=False)
    opened = threading.Event()
    chunks: list[bytes] = []

    def reader() -> None:
        with open(fifo, "rb") as f:  # blocks until fakechv opens the FIFO for writing
            opened.set()
            while True:
                data = f.read1(65536)
                if not data:
                    return
                chunks.append(data)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    assert opened.wait(20), "fakechv never opened the event monitor FIFO"
    wait_for_ping(child.path, child.proc, log_path=child.log_path)
    _boot_minimal_vm(child, tmp_path)
    assert child.put("vmm.shutdown").status == 200
    assert child.wait() == 0
    t.join(10)
    assert not t.is_alive()
    _check_lifecycle_events(_parse_events(b"".join(chunks).decode()))


def test_event_monitor_inherited_fd(spawn_fakechv: Any, tmp_path: Path) -> None:
    r, w = os.pipe()
    try:
        child = spawn_fakechv("--event-monitor", f"fd={w}", pass_fds=[w])
    finally:
        os.close(w)
    _boot_minimal_vm(child, tmp_path)
    assert child.put("vmm.shutdown").status == 200
    assert child.wait() == 0
    with os.fdopen(r, "rb") as f:
        stream = f.read().decode()
    _check_lifecycle_events(_parse_events(stream))


# ---------------------------------------------------------------- SCM_RIGHTS


def _pipe_holders(pid: int, inode: int) -> list[str]:
    out = []
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") == f"pipe:[{inode}]":
                out.append(name)
        except OSError:
            continue
    return out


def _send_add_net(path: str, body: bytes, fds: list[int]) -> bytes:
    """libvirt's chProcessAddNetworkDevices: head and body in one sendmsg with the
    tap fds, then a single recv of the answer."""
    head = (
        "PUT /api/v1/vm.add-net HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    try:
        sock.connect(path)
        sock.sendmsg(
            [head + body], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        )
        return sock.recv(1023)
    finally:
        sock.close()


def test_tap_fds_received_and_kept_as_chv_keeps_them(spawn_fakechv: Any, tmp_path: Path) -> None:
    """Over a real socket, as libvirt sends them: a net's fds stay open once the add
    got as far as the VMM (succeeded, or failed validation: CHV drops them unclosed),
    and are closed when the body does not parse; vm.delete of a VM that never booted
    leaves them all open (real v52/v53 do the same; the rules: ``fakechv.fds``)."""
    child = spawn_fakechv()
    _create_vm(child, tmp_path, vcpus=2)  # a queue pair per vCPU
    cases = [
        (b'{"id":"net_0","mac":"52:54:00:00:00:01","num_queues":4}', 2, (204,), True),
        (b'{"id":"net_1",', 1, (400,), False),  # bad JSON: the files are dropped
        (b'{"id":"__bad","num_queues":2}', 1, (500,), True),  # refused by validation
    ]
    kept: list[int] = []
    for body, nfds, statuses, held in cases:
        pipes = [os.pipe() for _ in range(nfds)]
        inodes = [os.fstat(r).st_ino for r, _ in pipes]
        try:
            answer = _send_add_net(child.path, body, [r for r, _ in pipes])
        finally:
            for r, w in pipes:
                os.close(r)
                os.close(w)
        status = int(answer.split(b" ", 2)[1])
        assert status in statuses, answer
        for inode in inodes:
            if held:
                assert len(_pipe_holders(child.proc.pid, inode)) == 1, body
                kept.append(inode)
            else:
                assert _wait_until(lambda ino=inode: not _pipe_holders(child.proc.pid, ino)), (
                    f"fakechv still holds a received fd after {body!r}"
                )
    info = child.get("vm.info").json
    assert [n["id"] for n in info["config"].get("net") or []] == ["net_0"]
    assert child.put("vm.delete").status == 204
    assert [len(_pipe_holders(child.proc.pid, ino)) for ino in kept] == [1] * len(kept)


def _wait_until(cond: Any, timeout: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


def test_malformed_http_against_child(spawn_fakechv: Any) -> None:
    child = spawn_fakechv()
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    try:
        sock.connect(child.path)
        sock.sendall(b"GARBAGE\r\n\r\n")
        answer = sock.recv(4096)
    finally:
        sock.close()
    assert answer.split(b" ")[1] == b"400"
    assert answer.endswith(b'\nAll previous unanswered requests will be dropped." }')
    assert child.get("vmm.ping").status == 200
    missing = unix_http(child.path, "GET", "/api/v1/vm.nothing")
    assert (missing.status, missing.json) == (404, ["Not Found"])


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_by_hand(spawn_fakechv: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "curl.sock")
    child = spawn_fakechv("--api-socket", path, api_socket=None, ping_path=path)
    out = subprocess.run(
        ["curl", "-s", "--unix-socket", path, "http://localhost/api/v1/vmm.ping"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    ping = json.loads(out.stdout)
    assert ping["pid"] == child.proc.pid
    assert ping["build_version"] == get_profile("v53").build_version
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PUT",
            "--unix-socket",
            path,
            "http://localhost/api/v1/vmm.shutdown",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert out.stdout == "200"
    assert child.wait() == 0


def test_split_chv_args_groups_values_of_unknown_options() -> None:
    from fakechv.cli import build_parser, split_chv_args

    split = split_chv_args(
        [
            "--api-socket=path=/tmp/a.sock",
            "-vvv",
            "--cpus",
            "boot=2",
            "--kernel=/k",
            "--disk",
            "path=/a",
            "path=/b",
            "--landlock",
            "--event-monitor",
            "fd=3",
        ]
    )
    assert split.ignored == [
        ["--cpus", "boot=2"],
        ["--kernel=/k"],
        ["--disk", "path=/a", "path=/b"],
        ["--landlock"],
    ]
    args = build_parser().parse_args(split.own)
    assert (args.api_socket, args.verbose, args.event_monitor) == ("path=/tmp/a.sock", 3, "fd=3")


def test_unusable_api_socket_is_a_clear_error(tmp_path: Path) -> None:
    not_socket = _run("--api-socket", "fd=0")  # stdin is /dev/null
    assert not_socket.returncode == 1
    assert "API socket fd 0" in not_socket.stderr
    no_dir = _run("--api-socket", str(tmp_path / "missing" / "api.sock"))
    assert no_dir.returncode == 1
    assert f"cannot serve the API: API socket {tmp_path}/missing/api.sock" in no_dir.stderr
    for res in (not_socket, no_dir):
        assert "Traceback" not in res.stderr


def test_fakechv_needs_no_spec_at_run_time(tmp_path: Path) -> None:
    """CHV's types come from its source (fakechv.configtypes): the OpenAPI specs are
    for checking exchanges, fakechv runs without them."""
    env = dict(os.environ, CHV_REFERENCE_DIR=str(tmp_path / "nowhere"))
    sock = str(tmp_path / "s.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakechv", "--api-socket", sock],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        wait_for_ping(sock, proc)
        body = b'{"cpus":{"boot_vcpus":1,"max_vcpus":1},"payload":{"kernel":"/k"}}'
        assert unix_http(sock, "PUT", "/api/v1/vm.create", body).status == 204
        info = unix_http(sock, "GET", "/api/v1/vm.info")
        assert info.status == 200 and info.json["config"]["cpus"]["core_scheduling"] == "Vm"
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and b"Traceback" not in err


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("nonsense", ["'nonsense' is not an endpoint of CHV v53", "ENDPOINT[:COUNT[:STATUS]]"]),
        ("vm.add-dsk:1", ["did you mean vm.add-disk?"]),
        ("vm.add-disk:x", ["COUNT and STATUS must be integers"]),
    ],
)
def test_a_bad_fault_is_refused_with_its_syntax(
    spec: str, words: list[str], tmp_path: Path
) -> None:
    sock = tmp_path / "api.sock"
    r = _run("--fault", spec, "--api-socket", str(sock))
    assert r.returncode == 2
    assert all(w in r.stderr for w in words), r.stderr
    assert "Traceback" not in r.stderr and not sock.exists()


def test_help_explains_the_fault_and_image_options() -> None:
    out = _run("--help").stdout
    assert "--fault ENDPOINT[:COUNT[:STATUS]]" in out and "vm.add-net:2:500" in out
    assert "--images check|create|virtual" in out


def _vcpu_threads(pid: int) -> list[str]:
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        if name.startswith("vcpu"):
            names.append(name)
    return sorted(names)


def test_vcpu_threads_named_like_chv_from_boot_to_shutdown(
    spawn_fakechv: Any, tmp_path: Path
) -> None:
    """A parent that counts the ``vcpu*`` threads (libvirt does) sees the boot vCPUs
    of a booted VM, paused or not, and none before the boot or after the shutdown."""
    child = spawn_fakechv()
    pid = child.proc.pid
    _create_vm(child, tmp_path, vcpus=3, max_vcpus=4)
    assert _vcpu_threads(pid) == []
    assert child.put("vm.boot").status == 204
    assert _vcpu_threads(pid) == ["vcpu0", "vcpu1", "vcpu2"]
    assert child.put("vm.pause").status == 204
    assert _vcpu_threads(pid) == ["vcpu0", "vcpu1", "vcpu2"]
    assert child.put("vm.resume").status == 204
    assert _vcpu_threads(pid) == ["vcpu0", "vcpu1", "vcpu2"]
    assert child.put("vm.shutdown").status == 204
    assert _wait_until(lambda: _vcpu_threads(pid) == [])
