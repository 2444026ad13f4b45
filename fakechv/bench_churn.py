"""``python -m fakechv.bench_churn``: connection churn against one fakechv process.

Starts ``fakechv`` as a child process and opens N connections one after the
other, each sending one ``vmm.ping`` and closing right after the answer (what curl
does). Prints connections per second, the median and p99 latency of the first and
of the last thousand connections (they must not grow), and fakechv's descriptor
count (``/proc/PID/fd``) before and after: they must be equal.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from fakechv.loadavg import load_average

__all__ = ["main", "run_churn"]

PING = b"GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n"


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _one(path: str) -> float:
    started = time.perf_counter()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        sock.sendall(PING)
        data = b""
        while not data.endswith(b"]}"):
            chunk = sock.recv(4096)
            if not chunk:
                raise RuntimeError("fakechv closed the connection before answering")
            data += chunk
    finally:
        sock.close()
    return time.perf_counter() - started


def _wait_ready(path: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fakechv exited with {proc.returncode}")
        try:
            _one(path)
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("fakechv did not answer vmm.ping")


def _settled_fds(pid: int) -> int:
    lowest = _fds(pid)
    for _ in range(25):
        time.sleep(0.02)
        lowest = min(lowest, _fds(pid))
    return lowest


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99


def run_churn(connections: int, profile: str = "v53") -> dict[str, float]:
    """The churn figures (seconds, counts) for ``connections`` connections."""
    with tempfile.TemporaryDirectory(prefix="bdf-churn-") as tmp:
        path = os.path.join(tmp, "api.sock")
        proc = subprocess.Popen(
            [sys.executable, "-m", "fakechv", "--profile", profile, "--api-socket", path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_ready(path, proc)
            before = _settled_fds(proc.pid)
            latencies = []
            started = time.perf_counter()
            for _ in range(connections):
                latencies.append(_one(path))
            elapsed = time.perf_counter() - started
            after = _settled_fds(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
    window = min(1000, max(1, connections // 2))
    first_median, first_p99 = _percentiles(latencies[:window])
    last_median, last_p99 = _percentiles(latencies[-window:])
    return {
        "connections": connections,
        "seconds": elapsed,
        "rate": connections / elapsed if elapsed > 0 else 0.0,
        "window": window,
        "first_median": first_median,
        "first_p99": first_p99,
        "last_median": last_median,
        "last_p99": last_p99,
        "fds_before": before,
        "fds_after": after,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fakechv.bench_churn",
        description="Open N connections to one fakechv process, one request each, and "
        "print the rate, first/last latency and fakechv's descriptor count before/after.",
    )
    parser.add_argument("--connections", type=int, default=100_000, help="default 100000")
    parser.add_argument("--profile", default="v53", help="CHV release to emulate (default v53)")
    args = parser.parse_args(argv)
    if args.connections < 2:
        parser.error(f"--connections {args.connections}: must be at least 2")
    try:
        r = run_churn(args.connections, args.profile)
    except (OSError, RuntimeError) as exc:
        print(f"fakechv.bench_churn: error: {exc}", file=sys.stderr)
        return 1
    load = load_average()
    w = int(r["window"])
    print(f"fakechv connection churn, profile {args.profile} (load average {load})")
    print(
        f"  {int(r['connections'])} connections in {r['seconds']:.1f} s: "
        f"{r['rate']:.0f} connections/s, one vmm.ping each"
    )
    print(
        f"  first {w}: median {r['first_median'] * 1e3:.2f} ms, p99 {r['first_p99'] * 1e3:.2f} ms"
    )
    print(f"  last {w}: median {r['last_median'] * 1e3:.2f} ms, p99 {r['last_p99'] * 1e3:.2f} ms")
    print(f"  fakechv descriptors: {int(r['fds_before'])} before, {int(r['fds_after'])} after")
    return 0 if r["fds_after"] <= r["fds_before"] else 1


if __name__ == "__main__":
    sys.exit(main())
