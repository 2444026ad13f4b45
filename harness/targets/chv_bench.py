"""Figures of real CHV against fakechv (``tox -e bench``; skips without KVM).

- start-up: from spawning the process to its first ``vmm.ping`` answer, for fakechv
  (``python -m fakechv``) and the real binary (median of a few);
- one fixed scenario without a guest boot (B9: define, start, hot-plugs) and one that
  waits for the guest (A4: a live detach needs the booted guest to eject), on the
  in-process reference target, on fakechv processes and on real CHV, with the ratio;
- the real guest: boot to its ready marker, and eject latency (``vm.remove-device``
  answered until the device left ``vm.info``), a few times.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness
from fakechv.loadavg import load_average
from harness.chv.binary import READY_MARKER, Guest, NotRealChv, find_binary, identify

__all__ = ["main"]

ROOT = Path(harness.__file__).resolve().parents[1]
WITHOUT_GUEST = ROOT / "scenarios" / "hotplug" / "b9-many-devices-without-explicit-bdf.yaml"
WITH_GUEST = ROOT / "scenarios" / "hotplug" / "a4-defs-in-sync-after-transient-unplug.yaml"


async def _startup(command: list[str], run_dir: Path, private_net: bool) -> float:
    from harness.driver.launcher import ProcessLauncher

    launcher = ProcessLauncher("v53", run_dir=run_dir, command=command, private_net=private_net)
    started = time.perf_counter()
    hv = await launcher.launch("bench")
    seconds = time.perf_counter() - started
    await launcher.terminate(hv)
    return seconds


def _scenario(path: Path, target: str) -> float:
    from harness.scenario.batch import run_paths

    started = time.perf_counter()
    run = run_paths([path], target=target, profile="v53", jobs=1)
    seconds = time.perf_counter() - started
    statuses = {s.status for s in run.scenarios}
    if statuses != {"passed"}:
        raise SystemExit(f"{path.name} on {target}: {statuses}: {run.scenarios[0].failure}")
    return seconds


async def _guest(binary: Path, guest: Guest, run_dir: Path, ejects: int) -> dict[str, Any]:
    from harness.chv.client import ChvClient
    from harness.chv.info import chv_bdfs
    from harness.driver.launcher import ProcessLauncher

    launcher = ProcessLauncher("v53", run_dir=run_dir, command=[str(binary)], private_net=True)
    hv = await launcher.launch("guest")
    client = ChvClient(hv.transport)
    serial = run_dir / "serial.log"
    images = []
    for i in range(ejects + 1):
        image = run_dir / f"disk{i}.img"
        with image.open("wb") as f:
            f.truncate(64 << 20)
        images.append(image)
    config = {
        "payload": {"kernel": str(guest.kernel), "cmdline": guest.cmdline},
        "cpus": {"boot_vcpus": 1, "max_vcpus": 1},
        "memory": {"size": 512 << 20},
        "serial": {"mode": "File", "file": str(serial)},
        "console": {"mode": "Off"},
        "disks": [{"path": str(images[0]), "id": "vda"}],
    }
    try:
        await client.call("PUT", "vm.create", config)
        started = time.perf_counter()
        await client.call("PUT", "vm.boot", None)
        while not (serial.exists() and READY_MARKER.encode() in serial.read_bytes()):
            await asyncio.sleep(0.2)
            if time.perf_counter() - started > 300:
                raise SystemExit("the guest printed no ready marker within 300 s")
        boot = time.perf_counter() - started
        latencies = []
        for i in range(1, ejects + 1):
            ident = f"vd{i}"
            await client.call("PUT", "vm.add-disk", {"path": str(images[i]), "id": ident})
            await asyncio.sleep(1.0)  # the guest takes the new device
            sent = time.perf_counter()
            await client.call("PUT", "vm.remove-device", {"id": ident})
            while ident in chv_bdfs(await client.info() or {}):
                await asyncio.sleep(0.05)
            latencies.append(time.perf_counter() - sent)
        return {"boot": boot, "ejects": latencies}
    finally:
        await launcher.terminate(hv)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.targets.chv_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--chv-binary", help="the real binary (default: as --target chv)")
    parser.add_argument("--ejects", type=int, default=3, help="eject latencies to measure")
    parser.add_argument("--no-guest", action="store_true", help="leave out what boots a guest")
    args = parser.parse_args(argv)
    try:
        binary = identify(find_binary(args.chv_binary))
        guest = Guest.find()
    except NotRealChv as exc:
        print(f"chv bench: SKIPPED: {exc}")
        return 0
    if os.geteuid() != 0 or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("chv bench: SKIPPED: needs root and a usable /dev/kvm")
        return 0
    os.environ["CHV_BINARY"] = str(binary.path)
    print(f"chv bench: {binary.describe()}, load average {load_average()}")
    with tempfile.TemporaryDirectory(prefix="chv-bench-") as tmp:
        fake = [
            asyncio.run(_startup([sys.executable, "-m", "fakechv"], Path(tmp) / "f", False))
            for _ in range(5)
        ]
        real = [asyncio.run(_startup([str(binary.path)], Path(tmp) / "r", True)) for _ in range(5)]
        print(
            f"start-up to first vmm.ping: fakechv {statistics.median(fake) * 1000:.0f} ms, "
            f"real CHV {statistics.median(real) * 1000:.1f} ms (median of 5)"
        )
        scenarios = [(WITHOUT_GUEST, "without a guest boot")]
        if not args.no_guest:
            scenarios.append((WITH_GUEST, "waiting for the guest (boot + eject)"))
        for path, what in scenarios:
            times = {t: _scenario(path, t) for t in ("reference", "reference-process", "chv")}
            print(
                f"{path.stem} ({what}): reference {times['reference']:.2f} s, "
                f"fakechv processes {times['reference-process']:.2f} s, "
                f"real CHV {times['chv']:.2f} s "
                f"(x{times['chv'] / times['reference-process']:.0f} of fakechv processes)"
            )
        if not args.no_guest:
            found = asyncio.run(_guest(binary.path, guest, Path(tmp), args.ejects))
            ejects = ", ".join(f"{s:.1f}" for s in found["ejects"])
            print(f"real guest: boot to {READY_MARKER} {found['boot']:.1f} s; eject {ejects} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
