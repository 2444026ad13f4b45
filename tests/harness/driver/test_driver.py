"""The reference driver against fakechv: lifecycle, hotplug, restart, save/restore, faults."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from driver_support import NIC2, disk, make_launcher, nic, run, xml

from fakechv.wire import ApiRequest
from harness.checks.invariants import Violation, addresses
from harness.driver.daemon import Driver
from harness.driver.records import AttachFlags, DriverError
from harness.driver.selfcheck import check_domain
from harness.model.virtxml import have_virt_xml_validate, validate_domain_xml

LIVE = AttachFlags(live=True)
CONFIG = AttachFlags(config=True)
PERSISTENT = AttachFlags(persistent=True)


def bdf(driver: Driver, name: str, key: tuple[str, str], side: str = "live") -> str | None:
    dom = driver.live(name) if side == "live" else driver.persistent(name)
    assert dom is not None, f"no {side} definition"
    dev = dom.find(key)
    if dev is None or dev.address is None:
        return None
    return dev.address.to_chv_bdf()


async def chv_map(driver: Driver, name: str) -> dict[str, str]:
    from harness.chv.info import chv_bdfs

    info = await driver.chv_info(name)
    assert info is not None
    return chv_bdfs(info)


async def assert_in_sync(driver: Driver, name: str) -> None:
    violations: list[Violation] = await check_domain(driver, name)
    assert not violations, "\n".join(v.message for v in violations)


@asynccontextmanager
async def host(
    tmp: Path,
    *,
    profile: str = "v53",
    kind: str = "inproc",
    eject: str = "immediate",
    detach_timeout: float = 2.0,
) -> AsyncIterator[Driver]:
    launcher = make_launcher(kind, tmp, profile, eject=eject)
    holder: dict[str, Driver] = {}
    holder["d"] = await Driver.open(tmp / "root", launcher, detach_timeout=detach_timeout)
    try:
        yield holder["d"]
    finally:
        # a restart inside the test replaces the driver: tear down the newest one
        driver = holder["d"]
        for name, state in driver.list_domains().items():
            if state != "shut off":
                await driver.destroy(name)
        await driver.close()


async def restart(driver: Driver) -> Driver:
    """Daemon restart: drop the driver object, open a new one on the same state."""
    root, launcher = driver.state.root, driver.launcher
    await driver.close()
    return await Driver.open(root, launcher, detach_timeout=driver.detach_timeout)


async def fault(driver: Driver, name: str, endpoint: str, count: int = 1) -> None:
    rec = driver.domains[name]
    assert rec.hypervisor is not None
    body = json.dumps([{"endpoint": endpoint, "count": count}]).encode()
    resp = await rec.hypervisor.transport.send(ApiRequest("PUT", "/fakechv/v1/faults", body))
    assert resp.status < 300, resp.body


async def snapshot_state(driver: Driver, name: str) -> tuple[str, str | None, str]:
    info = await driver.chv_info(name)
    return (
        driver.dumpxml(name, inactive=True) if driver.persistent(name) else "",
        driver.dumpxml(name) if driver.live(name) else None,
        json.dumps(info, sort_keys=True),
    )


KINDS = ["inproc", "process"]


# -- define ---------------------------------------------------------------------


def test_define_assigns_rng_net_disk_in_reference_order(tmp_path: Path) -> None:
    async def body() -> None:
        async with host(tmp_path) as d:
            name = await d.define(xml("domain-chv.xml"))
            pers = d.persistent(name)
            assert pers is not None
            got = {dev.label: dev.address.to_chv_bdf() for dev in pers.devices() if dev.address}
            assert got == {
                "rng implicit-rng-device": "0000:00:01.0",
                "interface 52:54:00:e5:b8:01": "0000:00:02.0",
                "disk vda": "0000:00:03.0",
            }
            # the file on disk is the definition, in libvirt's layout
            on_disk = (tmp_path / "root/var/lib/libvirt/ch" / f"{name}.xml").read_text()
            assert "slot='0x03'" in on_disk

    run(body())


def test_define_with_function_fails_and_writes_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        async with host(tmp_path) as d:
            with pytest.raises(DriverError, match="function"):
                await d.define(xml("domain-chv-static-bdf-with-function.xml"))
            assert d.list_domains() == {}
            assert not list((tmp_path / "root/var/lib/libvirt/ch").glob("*.xml"))

    run(body())


# -- start, hotplug, detach --------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_start_attach_detach_destroy_start(tmp_path: Path, kind: str) -> None:
    async def body() -> None:
        async with host(tmp_path, kind=kind) as d:
            name = await d.define(xml("domain-chv.xml"))
            await d.start(name)
            await assert_in_sync(d, name)
            assert (await chv_map(d, name))["implicit-rng-device"] == "0000:00:01.0"
            await d.attach_device(name, disk("vdb"), LIVE)
            assert bdf(d, name, ("disk", "vdb")) == "0000:00:04.0"
            assert bdf(d, name, ("disk", "vdb"), "persistent") is None
            await d.attach_device(name, nic(NIC2), PERSISTENT)
            assert bdf(d, name, ("interface", NIC2)) == "0000:00:05.0"
            assert bdf(d, name, ("interface", NIC2), "persistent") == "0000:00:05.0"
            await assert_in_sync(d, name)
            await d.detach_device(name, disk("vdb"), LIVE)
            assert "virtio-disk1" not in await chv_map(d, name)
            await d.destroy(name)
            await d.start(name)
            # live-only vdb is gone, the persistent NIC is back at its slot
            assert bdf(d, name, ("disk", "vdb")) is None
            assert bdf(d, name, ("interface", NIC2)) == "0000:00:05.0"
            await assert_in_sync(d, name)

    run(body())


def test_hotplug_takes_lowest_slot_free_in_both_definitions_a4(tmp_path: Path) -> None:
    async def body() -> None:
        async with host(tmp_path) as d:
            name = await d.define(xml("domain-chv.xml"))
            await d.start(name)
            await d.attach_device(name, disk("vdb"), PERSISTENT)
            assert bdf(d, name, ("disk", "vdb")) == "0000:00:04.0"
            await d.detach_device(name, disk("vdb"), LIVE)
            assert bdf(d, name, ("disk", "vdb")) is None
            assert bdf(d, name, ("disk", "vdb"), "persistent") == "0000:00:04.0"
            await d.attach_device(name, nic(NIC2), PERSISTENT)
            assert bdf(d, name, ("interface", NIC2)) == "0000:00:05.0"
            assert bdf(d, name, ("interface", NIC2), "persistent") == "0000:00:05.0"
            # re-attaching vdb live gets back its persistent slot
            await d.attach_device(name, disk("vdb"), LIVE)
            assert bdf(d, name, ("disk", "vdb")) == "0000:00:04.0"
            await assert_in_sync(d, name)

    run(body())


def test_live_only_hotplug_is_not_reused_by_persistent_a5(tmp_path: Path) -> None:
    async def body() -> None:
        async with host(tmp_path) as d:
            name = await d.define(xml("domain-chv.xml"))
            await d.start(name)
            await d.attach_device(name, disk("vdb"), LIVE)
            await d.attach_device(name, nic(NIC2), CONFIG)
            assert bdf(d, name, ("interface", NIC2), "persistent") == "0000:00:05.0"
            await d.attach_device(name, disk("vdc"), PERSISTENT)
            assert bdf(d, name, ("disk", "vdc")) == "0000:00:06.0"
            await assert_in_sync(d, name)
            # the config-only NIC keeps its slot when it is attached live later
            await d.attach_device(name, nic(NIC2), LIVE)
            assert bdf(d, name, ("interface", NIC2)) == "0000:00:05.0"
            await assert_in_sync(d, name)

    run(body())


def test_flags_follow_virsh(tmp_path: Path) -> None:
    async def body() -> None:
        async with host(tmp_path) as d:
            name = await d.define(xml("domain-chv.xml"))
            with pytest.raises(DriverError, match="not running"):
                await d.attach_device(name, disk("vdb"), LIVE)
            with pytest.raises(DriverError, match="not running"):
                await d.attach_device(name, disk("vdb"))  # no flag = live
            await d.attach_device(name, disk("vdb"), AttachFlags(current=True))
            assert bdf(d, name, ("disk", "vdb"), "persistent") == "0000:00:04.0"
            with pytest.raises(DriverError, match="exclusive"):
                await d.attach_device(name, disk("vdc"), AttachFlags(current=True, live=True))
            await d.start(name)
            await d.attach_device(name, disk("vdc"), AttachFlags(current=True))
            assert bdf(d, name, ("disk", "vdc")) == "0000:00:05.0"
            assert bdf(d, name, ("disk", "vdc"), "persistent") is None
            with pytest.raises(DriverError, match="already exists"):
                await d.attach_device(name, disk("vdc"), LIVE)

    run(body())


def test_transient_domain_frees_slots_on_detach(tmp_path: Path) -> None:
    async def body() -> None:
        async with host(tmp_path) as d:
            name = await d.create(xml("domain-chv.xml"))
            with pytest.raises(DriverError, match="transient"):
                await d.attach_device(name, disk("vdb"), CONFIG)
            for _ in range(40):  # more than the 31 slots: nothing leaks
                await d.attach_device(name, disk("vdb"), LIVE)
                assert bdf(d, name, ("disk", "vdb")) == "0000:00:04.0"
                await d.detach_device(name, disk("vdb"), LIVE)
            await d.destroy(name)
            assert d.list_domains() == {}

    run(body())


def test_explicit_address_conflicts_and_validation(tmp_path: Path) -> None:
    async def body() -> None:
        async with host(tmp_path) as d:
            name = await d.define(xml("domain-chv-static-bdf.xml"))
            await d.start(name)
            before = await snapshot_state(d, name)
            for slot, fragment in ((0x05, "double use"), (0x20, "slot")):
                with pytest.raises(DriverError) as err:
                    await d.attach_device(name, disk("vdb", slot), PERSISTENT)
                if fragment:
                    assert fragment in str(err.value)
                assert await snapshot_state(d, name) == before
            await d.attach_device(name, disk("vdb", 0x17), PERSISTENT)
            assert bdf(d, name, ("disk", "vdb")) == "0000:00:17.0"
            await d.attach_device(name, disk("vdc"), PERSISTENT)
            assert bdf(d, name, ("disk", "vdc")) == "0000:00:03.0"  # I3
            # an all-zero XML address is libvirt's "no address": auto-assigned
            await d.attach_device(name, disk("vdd", 0x00), PERSISTENT)
            assert bdf(d, name, ("disk", "vdd")) == "0000:00:04.0"
            await assert_in_sync(d, name)

    run(body())


# -- failures change nothing ----------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["vm.add-disk", "vm.add-net"])
def test_injected_chv_failure_changes_nothing(tmp_path: Path, endpoint: str) -> None:
    async def body() -> None:
        async with host(tmp_path) as d:
            name = await d.define(xml("domain-chv.xml"))
            await d.start(name)
            before = await snapshot_state(d, name)
            await fault(d, name, endpoint)
            device = disk("vdb") if endpoint == "vm.add-disk" else nic(NIC2)
            with pytest.raises(DriverError, match="failed to attach"):
                await d.attach_device(name, device, PERSISTENT)
            assert await snapshot_state(d, name) == before
            # no reservation leaked: the retry gets the slot the failed call would have had
            dev = await d.attach_device(name, device, PERSISTENT)
            assert dev.address is not None and dev.address.slot == 4
            await assert_in_sync(d, name)

    run(body())


# -- eject timing ----------------------------------------------------------------


def test_late_eject_detach_waits(tmp_path: Path) -> None:
    async def body() -> None:
        async with host(tmp_path, eject="80") as d:
            name = await d.define(xml("domain-chv.xml"))
            await d.start(name)
            await d.attach_device(name, disk("vdb"), LIVE)
            await d.detach_device(name, disk("vdb"), LIVE)
            assert "virtio-disk1" not in await chv_map(d, name)
            await d.attach_device(name, disk("vdc"), LIVE)
            assert bdf(d, name, ("disk", "vdc")) == "0000:00:04.0"
            await assert_in_sync(d, name)

    run(body())


def test_eject_that_never_comes_keeps_the_slot(tmp_path: Path) -> None:
    async def body() -> None:
        async with host(tmp_path, eject="never", detach_timeout=0.2) as d:
            name = await d.define(xml("domain-chv.xml"))
            await d.start(name)
            await d.attach_device(name, disk("vdb"), LIVE)
            with pytest.raises(DriverError, match="timed out"):
                await d.detach_device(name, disk("vdb"), LIVE)
            assert bdf(d, name, ("disk", "vdb")) == "0000:00:04.0"
            await d.attach_device(name, disk("vdc"), LIVE)
            assert bdf(d, name, ("disk", "vdc")) == "0000:00:05.0"
            await assert_in_sync(d, name)

    run(body())


def test_a_detach_waits_no_longer_than_its_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The waits between two looks at CHV's device tree end at the deadline: their sum
    is at most the timeout (doubling waits of 1, 2, 4 ... ms would overshoot it)."""
    import harness.driver.daemon as daemon

    waits: list[float] = []
    sleep = asyncio.sleep

    async def recorded(delay: float) -> None:
        waits.append(delay)
        await sleep(delay)

    async def body() -> None:
        async with host(tmp_path, eject="never", detach_timeout=0.05) as d:
            name = await d.define(xml("domain-chv.xml"))
            await d.start(name)
            await d.attach_device(name, disk("vdb"), LIVE)
            monkeypatch.setattr(daemon.asyncio, "sleep", recorded)
            with pytest.raises(DriverError, match="timed out"):
                await d.detach_device(name, disk("vdb"), LIVE)
            monkeypatch.setattr(daemon.asyncio, "sleep", sleep)

    run(body())
    assert len(waits) > 3 and sum(waits) <= 0.05


# -- restarts keep addresses --------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_daemon_restart_between_steps(tmp_path: Path, kind: str) -> None:
    async def body() -> None:
        async with host(tmp_path, kind=kind) as first:
            d = first
            name = await d.define(xml("domain-chv.xml"))
            d = await restart(d)
            await d.start(name)
            d = await restart(d)
            await d.attach_device(name, disk("vdb"), PERSISTENT)
            before = addresses(d.live(name)), await chv_map(d, name)
            d = await restart(d)
            assert (addresses(d.live(name)), await chv_map(d, name)) == before
            await d.detach_device(name, disk("vdb"), LIVE)
            d = await restart(d)
            await d.attach_device(name, nic(NIC2), LIVE)
            assert bdf(d, name, ("interface", NIC2)) == "0000:00:05.0"
            await assert_in_sync(d, name)
            await d.destroy(name)
            await d.close()

    run(body())


def test_daemon_restart_forgets_a_dead_hypervisor(tmp_path: Path) -> None:
    async def body() -> None:
        async with host(tmp_path) as d:
            name = await d.define(xml("domain-chv.xml"))
            await d.start(name)
            rec = d.domains[name]
            assert rec.hypervisor is not None
            await d.launcher.terminate(rec.hypervisor)  # the hypervisor died
            d2 = await restart(d)
            assert d2.list_domains() == {name: "shut off"}
            await d2.start(name)
            await assert_in_sync(d2, name)
            await d2.destroy(name)
            await d2.close()

    run(body())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["save", "managedsave"])
def test_save_restore_keeps_holes(tmp_path: Path, kind: str, how: str) -> None:
    async def body() -> None:
        async with host(tmp_path, kind=kind) as d:
            name = await d.define(xml("domain-chv.xml"))
            await d.start(name)
            await d.attach_device(name, disk("vdb"), PERSISTENT)  # 04
            await d.attach_device(name, nic(NIC2), PERSISTENT)  # 05
            await d.detach_device(name, disk("vdb"), LIVE)  # hole at 04 (live)
            before_live, before_chv = addresses(d.live(name)), await chv_map(d, name)
            image = tmp_path / "testvm.save"
            if how == "save":
                await d.save(name, image)
                assert d.list_domains() == {name: "shut off"}
                await d.restore(image)
            else:
                await d.managedsave(name)
                assert d.state.managed_save_path(name).exists()
                await d.start(name)
                assert not d.state.managed_save_path(name).exists()
            assert addresses(d.live(name)) == before_live
            assert await chv_map(d, name) == before_chv
            assert "0000:00:04.0" not in (await chv_map(d, name)).values()
            await assert_in_sync(d, name)

    run(body())


def test_reboot_keeps_explicit_addresses(tmp_path: Path) -> None:
    async def body() -> None:
        async with host(tmp_path) as d:
            name = await d.define(xml("domain-chv.xml"))
            await d.start(name)
            await d.attach_device(name, nic(NIC2), LIVE)  # 04: a NIC hot-added before a disk
            await d.attach_device(name, disk("vdb"), LIVE)  # 05
            before = await chv_map(d, name)
            await d.reboot(name)
            assert await chv_map(d, name) == before
            await assert_in_sync(d, name)

    run(body())


# -- CHV releases ---------------------------------------------------------------------


def test_v51_adopts_chv_placement_and_refuses_explicit_addresses(tmp_path: Path) -> None:
    async def body() -> None:
        async with host(tmp_path, profile="v51") as d:
            with pytest.raises(DriverError, match="cannot place a device at a chosen"):
                await d.define(xml("domain-chv.xml"))  # its NIC asks for slot 2
            plain = xml("domain-chv.xml").replace(
                "<address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>", ""
            )
            name = await d.define(plain)
            await d.start(name)
            await assert_in_sync(d, name)  # adopted: CHV's disks-before-nets order
            assert bdf(d, name, ("disk", "vda")) == "0000:00:01.0"
            await d.attach_device(name, nic(NIC2), LIVE)
            await d.attach_device(name, disk("vdb"), LIVE)
            await assert_in_sync(d, name)
            await d.reboot(name)  # CHV recomputes: the hot-added disk sorts before the NICs
            rules = {v.rule for v in await check_domain(d, name)}
            assert "live-vs-chv" in rules

    run(body())


def test_v53_reboot_after_hotplug_stays_in_sync(tmp_path: Path) -> None:
    async def body() -> None:
        async with host(tmp_path, profile="v53") as d:
            name = await d.define(xml("domain-chv.xml"))
            await d.start(name)
            await d.attach_device(name, nic(NIC2), LIVE)
            await d.attach_device(name, disk("vdb"), LIVE)
            await d.reboot(name)
            await assert_in_sync(d, name)

    run(body())


# -- XML written is valid libvirt XML ----------------------------------------------------


def test_every_written_definition_validates(tmp_path: Path) -> None:
    import os

    if not have_virt_xml_validate():
        if os.environ.get("CI"):
            pytest.fail("virt-xml-validate is required in CI (apt-get install libvirt-clients)")
        pytest.skip("virt-xml-validate not installed (Debian package libvirt-clients)")

    async def body() -> int:
        async with host(tmp_path) as d:
            name = await d.define(xml("domain-chv.xml"))
            await d.start(name)
            await d.attach_device(name, disk("vdb"), PERSISTENT)
            await d.attach_device(name, nic(NIC2), LIVE)
            files = sorted((tmp_path / "root").rglob("*.xml"))
            for path in files:
                validate_domain_xml(path.read_text(), source=str(path))
            return len(files)

    assert run(body()) == 2  # persistent + live


def test_aliases_chv_would_refuse_are_refused_at_attach(tmp_path: Path) -> None:
    async def body() -> None:
        async with host(tmp_path) as d:
            name = await d.define(xml("domain-chv.xml"))
            before = d.dumpxml(name, inactive=True)
            reserved = disk("vdb").replace("</disk>", "<alias name='__disk9'/></disk>")
            with pytest.raises(DriverError, match="reserved by Cloud Hypervisor"):
                await d.attach_device(name, reserved, CONFIG)
            taken = disk("vdb").replace("</disk>", "<alias name='net0'/></disk>")
            with pytest.raises(DriverError, match="already used by interface"):
                await d.attach_device(name, taken, CONFIG)
            assert d.dumpxml(name, inactive=True) == before
            await d.start(name)  # the definition stayed startable
            await assert_in_sync(d, name)

    run(body())
