"""Live migration between two simulated hosts keeps every BDF (catalogue A1, A2, C1-C5, I1, I2)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from driver_support import NIC2, disk, make_launcher, run, xml

from harness.chv.info import chv_bdfs
from harness.driver.daemon import Driver
from harness.driver.records import AttachFlags, DriverError
from harness.driver.selfcheck import check_domain

LIVE = AttachFlags(live=True)
PERSISTENT = AttachFlags(persistent=True)


class Hosts:
    """Two daemons with their own state directories and hypervisors."""

    def __init__(self, src: Driver, dst: Driver) -> None:
        self.src, self.dst = src, dst

    async def restart(self, which: str) -> Driver:
        old = getattr(self, which)
        await old.close()
        new = await Driver.open(old.state.root, old.launcher)
        setattr(self, which, new)
        return new


@asynccontextmanager
async def two_hosts(
    tmp: Path,
    *,
    profile: str = "v53",
    kind: str = "inproc",
    dst_faults: list[str] | None = None,
    src_faults: list[str] | None = None,
) -> AsyncIterator[Hosts]:
    src = await Driver.open(
        tmp / "src", make_launcher(kind, tmp / "src", profile, faults=src_faults)
    )
    dst = await Driver.open(
        tmp / "dst", make_launcher(kind, tmp / "dst", profile, faults=dst_faults)
    )
    hosts = Hosts(src, dst)
    try:
        yield hosts
    finally:
        for d in (hosts.src, hosts.dst):
            for name, state in d.list_domains().items():
                if state != "shut off":
                    await d.destroy(name)
            await d.close()


async def maps(d: Driver, name: str) -> tuple[dict[str, str], dict[str, str]]:
    """(live definition: alias -> BDF, CHV: id -> BDF)"""
    live = d.live(name)
    assert live is not None
    defs = {dev.alias or "": dev.address.to_chv_bdf() for dev in live.devices() if dev.address}
    info = await d.chv_info(name)
    assert info is not None
    return defs, chv_bdfs(info)


async def in_sync(d: Driver, name: str) -> None:
    violations = await check_domain(d, name)
    assert not violations, "\n".join(v.message for v in violations)


def state_files(d: Driver) -> list[str]:
    return sorted(str(p.relative_to(d.state.root)) for p in d.state.root.rglob("*") if p.is_file())


async def frozen(d: Driver, name: str) -> tuple[str, str, str]:
    info = await d.chv_info(name)
    pers = d.persistent(name)
    return (
        pers.to_xml() if pers else "",
        d.dumpxml(name),
        json.dumps(info, sort_keys=True),
    )


# -- catalogue scenarios ------------------------------------------------------------


@pytest.mark.parametrize(("kind", "transport"), [("inproc", "unix"), ("process", "tcp")])
def test_a1_implicit_assignment_reuse_and_migration(
    tmp_path: Path, kind: str, transport: str
) -> None:
    async def body() -> None:
        async with two_hosts(tmp_path, kind=kind) as h:
            name = await h.src.define(xml("domain-chv.xml"))
            await h.src.start(name)
            await h.src.attach_device(name, xml("new_interface_explicit_bdf.xml"))
            await h.src.attach_device(name, disk("vdb"))
            await h.src.attach_device(name, disk("vdc"))
            await h.src.detach_device(name, disk("vdb"))
            await h.src.attach_device(name, disk("vdb"))
            await h.src.detach_device(name, xml("new_interface_explicit_bdf.xml"))
            await h.src.detach_device(name, disk("vdb"))
            await h.src.attach_device(name, disk("vdb"))
            before = await maps(h.src, name)
            assert sorted(before[1].values()) == [
                "0000:00:01.0",
                "0000:00:02.0",
                "0000:00:03.0",
                "0000:00:04.0",
                "0000:00:06.0",
            ]
            await h.src.migrate(name, h.dst, transport=transport)
            assert await maps(h.dst, name) == before
            assert h.src.list_domains() == {name: "shut off"}
            await in_sync(h.dst, name)

    run(body())


def test_a2_explicit_assignment_then_migration(tmp_path: Path) -> None:
    async def body() -> None:
        async with two_hosts(tmp_path) as h:
            name = await h.src.define(xml("domain-chv-static-bdf.xml"))
            await h.src.start(name)
            await h.src.attach_device(name, xml("new_interface_explicit_bdf.xml"))
            await h.src.attach_device(name, disk("vdb", 0x17))
            await h.src.detach_device(name, xml("new_interface_explicit_bdf.xml"))
            await h.src.detach_device(name, disk("vdb"))
            await h.src.attach_device(name, disk("vdb", 0x04))
            with pytest.raises(DriverError, match="double use"):
                await h.src.attach_device(name, xml("new_interface_explicit_bdf.xml"))
            before = await maps(h.src, name)
            await h.src.migrate(name, h.dst)
            assert await maps(h.dst, name) == before
            await in_sync(h.dst, name)

    run(body())


def test_i1_removed_middle_device_stays_a_hole(tmp_path: Path) -> None:
    async def body() -> None:
        async with two_hosts(tmp_path, kind="process") as h:
            name = await h.src.define(xml("domain-chv.xml"))
            await h.src.start(name)
            await h.src.attach_device(name, disk("vdb"), PERSISTENT)  # 04
            await h.src.attach_device(name, xml("new_interface.xml"), PERSISTENT)  # 05
            await h.src.detach_device(name, disk("vdb"), LIVE)
            await h.src.migrate(name, h.dst, persistent=True)
            _live, chv = await maps(h.dst, name)
            assert "0000:00:04.0" not in chv.values()
            net = h.dst.live(name).find(("interface", NIC2))  # type: ignore[union-attr]
            assert net is not None and net.address is not None
            assert chv[net.alias or ""] == "0000:00:05.0" == net.address.to_chv_bdf()
            await in_sync(h.dst, name)

    run(body())


def test_i2_nic_hotplugged_before_disk_keeps_lower_slot(tmp_path: Path) -> None:
    async def body() -> None:
        async with two_hosts(tmp_path) as h:
            name = await h.src.define(xml("domain-chv.xml"))
            await h.src.start(name)
            await h.src.attach_device(name, xml("new_interface.xml"))  # 04
            await h.src.attach_device(name, disk("vdb"))  # 05
            await h.src.migrate(name, h.dst)
            live = h.dst.live(name)
            assert live is not None
            got = {d.label: d.address.to_chv_bdf() for d in live.devices() if d.address}
            assert got[f"interface {NIC2}"] == "0000:00:04.0"
            assert got["disk vdb"] == "0000:00:05.0"
            await in_sync(h.dst, name)
            await h.dst.reboot(name)  # CHV would sort disks first; explicit ids hold
            await in_sync(h.dst, name)

    run(body())


def test_c1_hotplug_daemon_restarts_and_migrating_back(tmp_path: Path) -> None:
    async def body() -> None:
        async with two_hosts(tmp_path) as h:
            name = await h.src.define(xml("domain-chv.xml"))
            await h.src.start(name)
            await h.src.attach_device(name, xml("new_interface.xml"))  # transient, 04
            await h.src.migrate(name, h.dst, persistent=True)
            await h.restart("src")
            await h.restart("dst")
            assert h.dst.list_domains() == {name: "running"}
            assert h.src.list_domains() == {name: "shut off"}  # its persistent definition stays
            await h.dst.detach_device(name, xml("new_interface.xml"))  # live only
            await h.dst.attach_device(name, disk("vdb"), PERSISTENT)
            # --persistent made the NIC part of the destination's persistent definition,
            # so its slot 04 stays reserved there and vdb takes 05 (the catalogue's
            # "vdb at 04" ignores that reservation)
            assert (await maps(h.dst, name))[1]["virtio-disk1"] == "0000:00:05.0"
            await h.dst.migrate(name, h.src, persistent=True)
            await h.restart("src")
            await h.restart("dst")
            await h.src.detach_device(name, disk("vdb"))
            await in_sync(h.src, name)

    run(body())


def test_c2_persistent_definition_travels(tmp_path: Path) -> None:
    async def body() -> None:
        async with two_hosts(tmp_path) as h:
            name = await h.src.define(xml("domain-chv.xml"))
            await h.src.start(name)
            await h.src.attach_device(name, xml("new_interface.xml"), PERSISTENT)  # 04
            await h.src.migrate(name, h.dst, persistent=True)
            pers = h.dst.persistent(name)
            assert pers is not None and pers.find(("interface", NIC2)) is not None
            await h.dst.detach_device(name, xml("new_interface.xml"), LIVE)
            await h.dst.migrate(name, h.src)
            await h.src.destroy(name)
            await h.src.start(name)  # the source's persistent definition has both NICs
            live = h.src.live(name)
            assert live is not None
            nic = live.find(("interface", NIC2))
            assert nic is not None and nic.address is not None
            assert nic.address.to_chv_bdf() == "0000:00:04.0"
            await in_sync(h.src, name)

    run(body())


def test_c3_round_trips_and_stale_source(tmp_path: Path) -> None:
    async def body() -> None:
        async with two_hosts(tmp_path) as h:
            with pytest.raises(DriverError, match="no domain"):
                await h.src.migrate("nosuchvm", h.dst)
            name = await h.src.define(xml("domain-chv.xml"))
            await h.src.start(name)
            await h.src.attach_device(name, xml("new_interface.xml"))  # 04
            await h.src.attach_device(name, disk("vdb"), PERSISTENT)  # 05
            first = await maps(h.src, name)
            for _ in range(2):
                await h.src.migrate(name, h.dst)
                with pytest.raises(DriverError, match="not running"):
                    await h.src.migrate(name, h.dst)
                assert await maps(h.dst, name) == first
                await h.dst.migrate(name, h.src)
                assert await maps(h.src, name) == first
            await in_sync(h.src, name)

    run(body())


def test_c5_detach_and_reattach_after_migration(tmp_path: Path) -> None:
    async def body() -> None:
        async with two_hosts(tmp_path) as h:
            name = await h.src.define(xml("domain-chv.xml"))
            await h.src.start(name)
            await h.src.attach_device(name, disk("vdb"), PERSISTENT)
            await h.src.migrate(name, h.dst, persistent=True, undefinesource=True)
            assert h.src.list_domains() == {}
            await h.dst.detach_device(name, disk("vdb"), PERSISTENT)
            await h.dst.attach_device(name, disk("vdb"), PERSISTENT)
            assert (await maps(h.dst, name))[1]["virtio-disk1"] == "0000:00:04.0"
            await h.dst.destroy(name)
            await h.dst.start(name)  # the destination's persistent definition
            assert (await maps(h.dst, name))[1]["virtio-disk1"] == "0000:00:04.0"
            await in_sync(h.dst, name)

    run(body())


def test_back_and_forth_keeps_every_bdf(tmp_path: Path) -> None:
    async def body() -> None:
        async with two_hosts(tmp_path) as h:
            name = await h.src.define(xml("domain-chv.xml"))
            await h.src.start(name)
            await h.src.attach_device(name, disk("vdb"), PERSISTENT)
            await h.src.attach_device(name, xml("new_interface.xml"))
            await h.src.detach_device(name, disk("vdb"), LIVE)
            first = await maps(h.src, name)
            a, b = h.src, h.dst
            for _ in range(6):
                await a.migrate(name, b)
                assert await maps(b, name) == first
                await in_sync(b, name)
                a, b = b, a
            # hotplug on the current host follows the same rules (04 is reserved)
            await a.attach_device(name, disk("vdc"))
            assert (await maps(a, name))[1]["virtio-disk2"] == "0000:00:06.0"

    run(body())


# -- refusals and failures ---------------------------------------------------------------


def test_same_host_and_non_p2p_are_refused(tmp_path: Path) -> None:
    async def body() -> None:
        async with two_hosts(tmp_path) as h:
            name = await h.src.define(xml("domain-chv.xml"))
            await h.src.start(name)
            with pytest.raises(DriverError, match="same host"):
                await h.src.migrate(name, h.src)
            with pytest.raises(DriverError, match="--p2p"):
                await h.src.migrate(name, h.dst, p2p=False)

    run(body())


def test_second_migration_in_flight_is_refused(tmp_path: Path) -> None:
    async def body() -> None:
        async with two_hosts(tmp_path) as h:
            name = await h.src.define(xml("domain-chv.xml"))
            await h.src.start(name)
            results = await asyncio.gather(
                h.src.migrate(name, h.dst), h.src.migrate(name, h.dst), return_exceptions=True
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            assert len(errors) == 1 and "already running" in str(errors[0])
            await in_sync(h.dst, name)

    run(body())


async def _assert_failed_cleanly(
    h: Hosts, name: str, before: tuple[str, str, str], dst_files: list[str]
) -> None:
    assert await frozen(h.src, name) == before
    assert h.src.list_domains() == {name: "running"}
    assert h.dst.list_domains() == {}
    assert state_files(h.dst) == dst_files
    running = getattr(h.dst.launcher, "running", None)
    if running is not None:
        assert running() == []
    await in_sync(h.src, name)


@pytest.mark.parametrize(
    "stage",
    ["destination-active", "cookie", "receive-refused", "transfer-broken", "bad-xml"],
)
def test_failed_migration_leaves_source_running_and_destination_empty(
    tmp_path: Path, stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body() -> None:
        dst_faults = ["vm.receive-migration:1"] if stage == "receive-refused" else None
        src_faults = ["vm.send-migration:1"] if stage == "transfer-broken" else None
        async with two_hosts(tmp_path, dst_faults=dst_faults, src_faults=src_faults) as h:
            name = await h.src.define(xml("domain-chv.xml"))
            await h.src.start(name)
            await h.src.attach_device(name, disk("vdb"))
            dst_files = state_files(h.dst)
            if stage == "destination-active":
                await h.dst.create(xml("domain-chv.xml"))
            before = await frozen(h.src, name)
            if stage == "cookie":
                import harness.driver.migration as drv

                monkeypatch.setattr(drv, "migration_cookie", lambda live: {"network-aliases": []})
            if stage == "bad-xml":
                monkeypatch.setattr(h.src.domains[name].live, "to_xml", lambda: "<domain><name>x")
            with pytest.raises(DriverError) as err:
                await h.src.migrate(name, h.dst)
            expected = {
                "destination-active": "already active",
                "cookie": "migration cookie",
                "receive-refused": "receive",
                "transfer-broken": "migration of",
                "bad-xml": "migration XML",
            }[stage]
            assert expected in str(err.value)
            monkeypatch.undo()
            if stage == "destination-active":
                await h.dst.destroy(name)
            await _assert_failed_cleanly(h, name, before, dst_files)
            # and a retry without the fault works
            h.dst.launcher.faults = []  # type: ignore[attr-defined]
            await h.src.migrate(name, h.dst)
            await in_sync(h.dst, name)

    run(body())


def test_failed_migration_between_processes_kills_nothing_on_the_source(tmp_path: Path) -> None:
    async def body() -> None:
        async with two_hosts(tmp_path, kind="process", dst_faults=["vm.receive-migration:1"]) as h:
            name = await h.src.define(xml("domain-chv.xml"))
            await h.src.start(name)
            before = await frozen(h.src, name)
            with pytest.raises(DriverError):
                await h.src.migrate(name, h.dst)
            assert await frozen(h.src, name) == before
            assert h.dst.list_domains() == {}
            assert not list((tmp_path / "dst" / "hv").glob("*.sock"))

    run(body())


# -- v51: CHV recomputes slots on reboot ----------------------------------------------------


def test_v51_reboot_after_migration_is_detected_as_desync(tmp_path: Path) -> None:
    async def body() -> None:
        async with two_hosts(tmp_path, profile="v51") as h:
            plain = xml("domain-chv.xml").replace(
                "<address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>", ""
            )
            name = await h.src.define(plain)
            await h.src.start(name)
            await h.src.attach_device(name, xml("new_interface.xml"))
            await h.src.attach_device(name, disk("vdb"))
            await h.src.migrate(name, h.dst)
            await in_sync(h.dst, name)  # migration itself keeps CHV's tree
            await h.dst.reboot(name)
            rules = {v.rule for v in await check_domain(h.dst, name)}
            assert "live-vs-chv" in rules

    run(body())


def test_destination_that_cannot_take_the_state_refuses_before_the_ack(tmp_path: Path) -> None:
    """The receiver imports the state before acknowledging it: if the import fails the
    sender is told, and the source VM is kept (CHV drops it only after the ack)."""
    from fakechv.api import Api
    from fakechv.errors import ApiError
    from fakechv.profiles import get_profile
    from fakechv.vmm import Vmm
    from fakechv.wire import ApiRequest

    async def body() -> None:
        src, dst = Api(Vmm(get_profile("v53"))), Api(Vmm(get_profile("v53")))

        def refuse(state: dict[str, object]) -> None:
            raise ApiError(["Error from API", "cannot take this state"])

        dst.vmm.import_migration_state = refuse  # type: ignore[method-assign]

        async def put(api: Api, name: str, body: object = None) -> int:
            raw = json.dumps(body).encode() if body is not None else b""
            return (await api.handle(ApiRequest("PUT", f"/api/v1/{name}", raw))).status

        assert await put(src, "vm.create", {"payload": {"kernel": "k"}}) == 204
        assert await put(src, "vm.boot") == 204
        info = await src.handle(ApiRequest("GET", "/api/v1/vm.info"))
        url = f"unix:{tmp_path}/m.sock"
        receiving = asyncio.create_task(put(dst, "vm.receive-migration", {"receiver_url": url}))
        while not (tmp_path / "m.sock").exists():
            await asyncio.sleep(0.005)
        # v53's worker: the send is answered 204, the refusal is the worker's failure
        assert await put(src, "vm.send-migration", {"destination_url": url}) == 204
        assert await receiving == 500
        assert (await src.handle(ApiRequest("GET", "/api/v1/vm.info"))).body == info.body
        assert not src.shutdown_requested.is_set()

    run(body())
