"""``python -m fakechv.bench``: throughput and latency of fakechv over its Unix socket.

Starts the real server (``fakechv.server`` with ``Api(Vmm(...))``) in a
background thread on a temporary socket, then drives it from this thread with a
keep-alive HTTP/1.1 connection, as libvirt's curl handle does:

* ``vm.info`` on a booted VM with a few devices;
* an ``vm.add-disk`` / ``vm.remove-device`` loop (each pair is one iteration;
  the guest ejects at once, so slots are reused).

Prints requests per second and median/p99 latency per phase.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fakechv.loadavg import load_average

__all__ = ["PhaseResult", "UnixHTTPConnection", "main", "run_bench"]


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over an AF_UNIX socket (keep-alive)."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._unix_path)
        self.sock = sock


@dataclass
class PhaseResult:
    """Timings of one phase (latencies in seconds, one per measured operation)."""

    name: str
    requests: int
    elapsed: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, q: float) -> float:
        data = sorted(self.latencies)
        if not data:
            return 0.0
        idx = min(len(data) - 1, max(0, round(q * (len(data) - 1))))
        return data[idx]

    @property
    def median(self) -> float:
        return statistics.median(self.latencies) if self.latencies else 0.0

    def line(self) -> str:
        return (
            f"{self.name:<28} {self.requests:>7} req  {self.rate:>9.1f} req/s  "
            f"median {self.median * 1e3:7.3f} ms  p99 {self.percentile(0.99) * 1e3:7.3f} ms"
        )


class _Client:
    def __init__(self, path: str) -> None:
        self.conn = UnixHTTPConnection(path)

    def call(self, method: str, name: str, body: object = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        self.conn.request(method, "/api/v1/" + name, body=data, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def expect(self, method: str, name: str, body: object, statuses: Sequence[int]) -> bytes:
        status, raw = self.call(method, name, body)
        if status not in statuses:
            raise RuntimeError(f"{method} {name} answered {status}: {raw[:200]!r}")
        return raw

    def close(self) -> None:
        self.conn.close()


def _phase(name: str, duration: float, count: int | None, op: Callable[[], int]) -> PhaseResult:
    """Run ``op`` (which returns how many requests it made) until ``duration``
    seconds passed or ``count`` operations ran."""
    latencies: list[float] = []
    requests = 0
    start = time.perf_counter()
    deadline = start + duration
    while True:
        t0 = time.perf_counter()
        requests += op()
        t1 = time.perf_counter()
        latencies.append(t1 - t0)
        if count is not None and len(latencies) >= count:
            break
        if count is None and t1 >= deadline:
            break
    return PhaseResult(name, requests, time.perf_counter() - start, latencies)


class _ServerThread:
    def __init__(self, profile: str, path: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: Any = None
        fut = asyncio.run_coroutine_threadsafe(self._start(profile, path), self.loop)
        try:
            self.server = fut.result(30)
        except BaseException:
            self._stop_loop()
            raise

    async def _start(self, profile_name: str, path: str) -> Any:
        from fakechv.api import Api
        from fakechv.profiles import get_profile
        from fakechv.server import server_options, start_server
        from fakechv.vmm import Vmm

        vmm = Vmm(get_profile(profile_name))
        return await start_server(Api(vmm), path=path, **server_options(profile_name))

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self._stop_loop()


def run_bench(
    *, profile: str = "v53", duration: float = 5.0, count: int | None = None
) -> list[PhaseResult]:
    """Run both phases against a fresh in-process fakechv; ``count`` (when given)
    fixes the number of operations per phase instead of the duration."""
    tmp = tempfile.mkdtemp(prefix="fakechv-bench-")
    path = os.path.join(tmp, "api.sock")
    try:
        server = _ServerThread(profile, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    client = _Client(path)
    try:
        kernel = os.path.join(tmp, "vmlinux")
        with open(kernel, "wb") as f:
            f.write(b"\0")
        config = {
            "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
            "memory": {"size": 268435456},
            "payload": {"kernel": kernel},
            "disks": [
                {"path": os.path.join(tmp, f"boot{i}.img"), "id": f"boot{i}"} for i in range(3)
            ],
            "net": [{"id": "net0", "mac": "52:54:00:00:00:01"}],
        }
        client.expect("PUT", "vm.create", config, (204,))
        client.expect("PUT", "vm.boot", None, (204,))

        def info() -> int:
            client.expect("GET", "vm.info", None, (200,))
            return 1

        counter = [0]

        def add_remove() -> int:
            counter[0] += 1
            dev_id = f"bench{counter[0]}"
            disk = {"path": os.path.join(tmp, f"{dev_id}.img"), "id": dev_id}
            client.expect("PUT", "vm.add-disk", disk, (200,))
            client.expect("PUT", "vm.remove-device", {"id": dev_id}, (204,))
            return 2

        return [
            _phase("vm.info", duration, count, info),
            _phase("vm.add-disk+remove-device", duration, count, add_remove),
        ]
    finally:
        client.close()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fakechv.bench",
        description="Requests/s and median/p99 latency of fakechv over its Unix socket "
        "(vm.info; vm.add-disk + vm.remove-device on a booted VM).",
    )
    parser.add_argument("--profile", default="v53", help="CHV release to emulate (default v53)")
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds per phase (default 5; 2 phases)"
    )
    parser.add_argument(
        "--count", type=int, default=None, help="operations per phase instead of a duration"
    )
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error(f"--duration {args.duration}: must be > 0")
    if args.count is not None and args.count <= 0:
        parser.error(f"--count {args.count}: must be > 0")
    try:
        results = run_bench(profile=args.profile, duration=args.duration, count=args.count)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"fakechv.bench: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"fakechv bench, profile {args.profile}, over a Unix socket (keep-alive), "
        f"load average {load_average()}"
    )
    for res in results:
        print(res.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
