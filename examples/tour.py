"""A tour of the reference driver on fakechv, printed as BDF tables.

Part 1: define the catalogue's default domain, start it, hot-plug a disk and a NIC
with and without --persistent, restart the daemon, and print what the live
definition, the persistent definition and CHV say. Part 2: migrate the domain to a
second host and back. Run: ``python examples/tour.py``.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from harness.driver.daemon import Driver
from harness.driver.launcher import InProcessLauncher
from harness.driver.records import AttachFlags
from harness.driver.selfcheck import check_domain
from harness.driver.table import bdf_table

DOMAINS = Path(__file__).resolve().parents[1] / "tests" / "data" / "domains"

DISK = """<disk type='file' device='disk'>
  <source file='/nfs/{t}.img'/><target dev='{t}' bus='virtio'/>
</disk>"""


async def tour(root: Path) -> None:
    src = await Driver.open(root / "host-a", InProcessLauncher("v53"))
    name = await src.define((DOMAINS / "domain-chv.xml").read_text())
    await src.start(name)
    await src.attach_device(name, DISK.format(t="vdb"), AttachFlags(persistent=True))
    await src.attach_device(name, (DOMAINS / "new_interface.xml").read_text())  # live only
    await src.attach_device(name, DISK.format(t="vdc"))  # live only
    await src.detach_device(name, DISK.format(t="vdb"), AttachFlags(live=True))

    # daemon restart: a new driver object reloads everything from its state directory
    launcher = src.launcher
    await src.close()
    src = await Driver.open(root / "host-a", launcher)
    print("after hotplug, live detach of vdb and a daemon restart (host-a):")
    print(await bdf_table(src, name))
    print("violations:", len(await check_domain(src, name)))

    dst = await Driver.open(root / "host-b", InProcessLauncher("v53"))
    await src.migrate(name, dst, persistent=True)
    print("\nafter migrate --live --p2p --persistent to host-b:")
    print(await bdf_table(dst, name))
    await dst.migrate(name, src)
    print("\nafter migrating back to host-a:")
    print(await bdf_table(src, name))
    print("violations:", len(await check_domain(src, name)))
    await src.destroy(name)
    await src.close()
    await dst.close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bdf-tour-") as tmp:
        asyncio.run(tour(Path(tmp)))


if __name__ == "__main__":
    main()
