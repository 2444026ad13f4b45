"""How the reference driver scales: devices per domain and domains per host.

``python -m harness.driver.bench_scale`` (part of ``tox -e bench``) drives the reference
driver on in-process fakechv VMMs and prints the time per operation:

- one domain with 10, 100 and 1,000 disks, spread over 1, 10 and 96 PCI segments
  (explicit addresses, as a driver pins them): define, start, a hot-plug, a detach,
  destroy; with the time per device, which must not grow with the size (linear);
- 1, 10 and 100 domains of 10 devices on one host: define and start each, then a
  hot-plug into each; the time per domain.

Figures are printed with the machine's load average, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from fakechv.loadavg import load_average
from harness.driver.daemon import Driver
from harness.driver.launcher import InProcessLauncher
from harness.driver.records import AttachFlags

__all__ = ["main"]

#: (disks, PCI segments) of the per-domain sizes
SIZES = ((10, 1), (100, 10), (1000, 96))
HOSTS = (1, 10, 100)


def _dev_name(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return "vd" + letters


def _disk(index: int, segment: int | None = None, slot: int | None = None) -> str:
    address = ""
    if segment is not None and slot is not None:
        address = (
            f"<address type='pci' domain='{segment:#06x}' bus='0x00' slot='{slot:#04x}' "
            "function='0x0'/>"
        )
    return (
        f"<disk type='file' device='disk'><source file='/images/d{index}.img'/>"
        f"<target dev='{_dev_name(index)}' bus='virtio'/>{address}</disk>"
    )


def domain_xml(name: str, disks: int, segments: int) -> str:
    """A domain with ``disks`` disks spread evenly over ``segments`` segments (slots
    from 2 up on segment 0, which keeps 1 for the rng; from 1 on the others)."""
    parts = []
    for i in range(disks):
        seg = i % segments
        slot = i // segments + (2 if seg == 0 else 1)
        parts.append(_disk(i, seg, slot))
    return (
        f"<domain type='kvm'><name>{name}</name><memory unit='KiB'>1048576</memory>"
        "<vcpu>2</vcpu><os><type arch='x86_64'>hvm</type><kernel>/k</kernel></os>"
        f"<devices>{''.join(parts)}</devices></domain>"
    )


async def _timed(what: dict[str, float], key: str, coro: object) -> None:
    started = time.perf_counter()
    await coro  # type: ignore[misc]
    what[key] = time.perf_counter() - started


async def per_domain(disks: int, segments: int, root: Path) -> dict[str, float]:
    """Seconds per operation on one domain of ``disks`` disks."""
    launcher = InProcessLauncher("v53")
    driver = await Driver.open(root, launcher, segments=segments, check_spec=False)
    out: dict[str, float] = {}
    await _timed(out, "define", driver.define(domain_xml("big", disks, segments)))
    await _timed(out, "start", driver.start("big"))
    extra = _disk(disks)
    await _timed(out, "hot-plug", driver.attach_device("big", extra, AttachFlags(live=True)))
    await _timed(out, "detach", driver.detach_device("big", extra, AttachFlags(live=True)))
    await _timed(out, "destroy", driver.destroy("big"))
    await driver.close()
    return out


async def per_host(domains: int, root: Path) -> dict[str, float]:
    """Seconds per domain for ``domains`` domains of 10 disks on one host."""
    launcher = InProcessLauncher("v53")
    driver = await Driver.open(root, launcher, check_spec=False)
    names = [f"vm{n}" for n in range(domains)]
    started = time.perf_counter()
    for name in names:
        await driver.define(domain_xml(name, 10, 1))
        await driver.start(name)
    up = time.perf_counter() - started
    started = time.perf_counter()
    for name in names:
        await driver.attach_device(name, _disk(10), AttachFlags(live=True))
    plug = time.perf_counter() - started
    for name in names:
        await driver.destroy(name)
    await driver.close()
    return {"define+start": up / domains, "hot-plug": plug / domains}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.driver.bench_scale", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    args = parser.parse_args(argv)
    load = load_average()
    print(f"scale bench: reference driver on in-process fakechv v53, load average {load}")
    tmp = Path(tempfile.mkdtemp(prefix="bdf-scale-"))
    try:
        per_device: list[float] = []
        plug_per_device: list[float] = []
        for disks, segments in SIZES:
            best: dict[str, float] = {}
            for r in range(max(1, args.repeat)):
                got = asyncio.run(per_domain(disks, segments, tmp / f"d{disks}-{r}"))
                best = {k: min(v, best.get(k, v)) for k, v in got.items()}
            cost = best["define"] + best["start"]
            per_device.append(cost / disks)
            plug_per_device.append(best["hot-plug"] / disks)
            ops = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in best.items())
            print(
                f"  {disks:5d} devices on {segments:2d} segment(s): {ops}; "
                f"define+start {cost / disks * 1e6:.0f} us per device"
            )
        for what, costs in (("define+start", per_device), ("hot-plug", plug_per_device)):
            growth = costs[-1] / costs[0] if costs[0] > 0 else 0.0
            print(
                f"  {what} per device, 1,000 devices against 10: x{growth:.2f} "
                "(1.0 or less: linear or better)"
            )
        for domains in HOSTS:
            best = {}
            for r in range(max(1, args.repeat)):
                got = asyncio.run(per_host(domains, tmp / f"h{domains}-{r}"))
                best = {k: min(v, best.get(k, v)) for k, v in got.items()}
            ops = ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in best.items())
            print(f"  {domains:3d} domain(s) of 10 devices on one host, per domain: {ops}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
