"""fakechv's start-up: from exec to its first answered ``vmm.ping``.

``python -m fakechv.bench_startup [--runs N]`` (part of ``tox -e bench``) starts
``python -m fakechv`` N times and prints the median time until a ``vmm.ping`` is
answered on its API socket, beside the median of a bare ``python3 -c pass`` measured in
the same run, and their ratio, with the machine's load average. A real
``cloud-hypervisor`` needs a few milliseconds.

The package's bytecode is compiled first, as an installed package has it: a checkout
run with ``PYTHONDONTWRITEBYTECODE`` would otherwise recompile every edited module at
each start and measure the compiler.
"""

from __future__ import annotations

import argparse
import compileall
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from fakechv.loadavg import load_average

__all__ = ["main"]

_PING = b"GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\n\r\n"


def _answered(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1)
            sock.connect(path)
            sock.sendall(_PING)
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def fakechv_startup(workdir: Path, index: int) -> float:
    """Seconds from exec to the first answered ping of one fakechv process."""
    path = str(workdir / f"api-{index}.sock")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakechv", "--api-socket", f"path={path}", "--images", "virtual"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not _answered(path):
            if proc.poll() is not None:
                raise RuntimeError(f"fakechv exited with {proc.returncode} before answering")
            time.sleep(0.001)
        return time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(10)


def bare_python() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fakechv.bench_startup", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=10, help="processes to start (default 10)")
    args = parser.parse_args(argv)
    runs = max(1, args.runs)
    compileall.compile_dir(str(Path(__file__).resolve().parent), quiet=1)
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="fakechv-startup-") as tmp:
        fake = [fakechv_startup(Path(tmp), n) for n in range(runs)]
    bare = [bare_python() for _ in range(runs)]
    f, b = statistics.median(fake), statistics.median(bare)
    print(
        f"fakechv start-up (exec to first vmm.ping answer, bytecode compiled), load average {load}"
    )
    print(f"  python -m fakechv: median {f * 1000:.0f} ms (min {min(fake) * 1000:.0f} ms)")
    print(f"  python3 -c pass:   median {b * 1000:.0f} ms")
    print(f"  ratio: x{f / b:.1f} of a bare interpreter")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
