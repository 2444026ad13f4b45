"""The command rules the property machine checks besides the invariants."""

from __future__ import annotations

from harness.explore.oracles import command_violations, mark_step
from harness.explore.trace import TraceStep
from harness.model.domain import Domain
from harness.model.virsh import parse_command


def _dom(*disks: tuple[str, int]) -> Domain:
    """A domain whose slots 01 and 02 are taken, with ``disks`` at their slots."""
    disks = (("vdr", 1), ("vds", 2), *disks)
    parts = "".join(
        f"<disk type='file'><target dev='{dev}' bus='virtio'/><address type='pci' "
        f"domain='0x0000' bus='0x00' slot='{slot:#04x}' function='0x0'/></disk>"
        for dev, slot in disks
    )
    return Domain.from_xml(
        f"<domain type='kvm'><name>testvm</name><devices>{parts}</devices></domain>"
    )


def _check(text: str, ok: bool, error: str, before: tuple, after: tuple, saved=()) -> list:
    return command_violations(
        parse_command(text), ok=ok, error=error, before=before, after=after,
        saved=lambda: list(saved), active=True, can_address=lambda kind: True,
    )  # fmt: skip


ATTACH = "attach-disk testvm --target vdb --source /nfs/vdb.img --live"


def test_a_hotplug_takes_the_lowest_slot_free_in_both_definitions() -> None:
    live, pers = _dom(("vda", 3)), _dom(("vda", 3), ("vdx", 4))  # 04: persistent only
    right = (_dom(("vda", 3), ("vdb", 5)), pers)
    assert _check(ATTACH, True, "", (live, pers), right) == []
    wrong = (_dom(("vda", 3), ("vdb", 4)), pers)  # took the persistent-only device's slot
    (v,) = _check(ATTACH, True, "", (live, pers), wrong)
    assert (v.rule, v.device, v.expected, v.actual) == (
        "hotplug-slot", "disk vdb", "0000:00:05.0", "0000:00:04.0"
    )  # fmt: skip
    saved = [_dom(("vdb", 4))]  # a save image's twin keeps its slot
    assert _check(ATTACH, True, "", (live, pers), wrong, saved) == []
    step = TraceStep("run", ATTACH)
    mark_step(step, [v])
    assert step.expect == '{device: "disk vdb", live: "0000:00:05.0"}'


def test_a_refused_id_a_lost_device_and_a_refused_define_are_the_drivers() -> None:
    dom = _dom(("vda", 3), ("vdb", 4))
    (v,) = _check(
        ATTACH, False, "Invalid identifier as it is not unique: net_1", (dom, dom), (dom, dom)
    )
    assert (v.rule, v.actual) == ("id-reused", "net_1")
    config_check = "Failed to validate config: Identifier net_2 is not unique"
    (v,) = _check(ATTACH, False, config_check, (dom, dom), (dom, dom))
    assert (v.rule, v.actual) == ("id-reused", "net_2")
    detach = "detach-disk testvm vdb --live"
    (v,) = _check(
        detach, False, "disk vdb not found in the live definition", (dom, dom), (dom, dom)
    )
    assert v.rule == "device-lost"
    gone = _dom(("vda", 3))  # really not there: the refusal is right
    assert _check(detach, False, "disk vdb not found", (gone, dom), (gone, dom)) == []
    (v,) = _check("define domain", False, "too many devices", (None, None), (None, None))
    assert v.rule == "define-refused"
    step = TraceStep("fail", "define domain")
    mark_step(step, [v])
    assert step.kind == "run"  # the reproducer says the define must succeed
