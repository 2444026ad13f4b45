"""Driver quirks (harness.driver.quirks) and the catch matrix (harness.scenario.catch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.driver import quirks
from harness.driver.quirks import PRESETS, QUIRKS, QuirkError, parse_quirks
from harness.scenario.batch import run_paths
from harness.scenario.catch import Row, format_markdown

REPO = Path(__file__).resolve().parents[3]


def test_names_presets_and_unknown_names() -> None:
    assert parse_quirks("detach-frees-early, hotplug-live-only") == {
        "detach-frees-early",
        "hotplug-live-only",
    }
    assert parse_quirks("cyberus-libvirt") == set(QUIRKS) == set(PRESETS["cyberus-libvirt"])
    assert parse_quirks(None) == frozenset() and parse_quirks("") == frozenset()
    with pytest.raises(QuirkError, match=r"'detach-late'.*detach-frees-early"):
        parse_quirks("detach-late")
    for quirk in QUIRKS.values():  # each names what it does and where the fork does it
        assert quirk.summary and quirk.source.startswith("src/ch/")


def test_no_quirk_changes_nothing() -> None:
    body = {"disks": [{"path": "/a", "pci_segment": 1, "pci_device_id": 3}]}
    assert quirks.rewrite_body(frozenset(), "vm.create", body) is body
    view = quirks.address_inputs(
        frozenset(), affect_live=True, affect_config=True, live="L", persistent="P", saved=["S"]
    )
    assert view == ("L", "P", ["S"])
    assert quirks.waits_for_eject(frozenset()) and not quirks.keeps_refused(frozenset(), "net")


def test_bdf_device_field_is_the_forks_wire_format() -> None:
    q = frozenset({"bdf-device-field"})
    body = {
        "disks": [{"path": "/a", "pci_segment": 1, "pci_device_id": 3}],
        "rng": {"src": "/dev/urandom", "pci_segment": 0, "pci_device_id": 2},
        "cpus": {"boot_vcpus": 1},
    }
    out = quirks.rewrite_body(q, "vm.create", body)
    assert out == {
        "disks": [{"path": "/a", "bdf_device": 3}],
        "rng": {"src": "/dev/urandom", "bdf_device": 2},
        "cpus": {"boot_vcpus": 1},
    }
    assert body["disks"][0]["pci_segment"] == 1  # the caller's body is not changed
    add = quirks.rewrite_body(q, "vm.add-net", {"id": "n", "pci_segment": 0, "pci_device_id": 5})
    assert add == {"id": "n", "bdf_device": 5}


@pytest.mark.parametrize(
    ("quirk", "live", "config", "expected"),
    [
        ("hotplug-live-only", True, False, ("L", None, [])),
        ("hotplug-live-only", True, True, ("L", "P", ["S"])),
        ("live-config-copy-unchecked", True, True, ("L", None, [])),
        ("live-config-copy-unchecked", True, False, ("L", "P", ["S"])),
        ("config-attach-persistent-only", False, True, (None, "P", ["S"])),
        ("config-attach-persistent-only", True, True, ("L", "P", ["S"])),
    ],
)
def test_which_definitions_an_attach_looks_at(
    quirk: str, live: bool, config: bool, expected: tuple[object, ...]
) -> None:
    got = quirks.address_inputs(
        frozenset({quirk}),
        affect_live=live,
        affect_config=config,
        live="L",
        persistent="P",
        saved=["S"],
    )
    assert got == expected


def test_a_quirk_fails_a_scenario_the_clean_driver_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = REPO / "scenarios"
    files = sorted(path.rglob("*.yaml"))
    chosen = [f for f in files if "detach" in f.read_text() and "eject" in f.read_text()]
    assert chosen, "the suite has a detach-and-eject scenario"
    clean = run_paths(chosen, jobs=1)
    monkeypatch.setenv(quirks.ENV, "detach-frees-early")
    quirky = run_paths(chosen, jobs=1)
    passed = {(r.file, r.profile) for r in clean.scenarios if r.status == "passed"}
    failed = {(r.file, r.profile) for r in quirky.scenarios if r.status in ("failed", "error")}
    assert passed & failed, "detach-frees-early is caught by a detach scenario"


def test_run_refuses_quirks_for_another_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "scenarios", "--target", "libvirt", "--quirks", "hotplug-live-only"]) == 2
    assert "--quirks changes the reference driver" in capsys.readouterr().err
    assert main(["run", "scenarios", "--quirks", "nope"]) == 2
    assert "unknown driver quirk 'nope'" in capsys.readouterr().err


def test_the_table_says_what_caught_what_and_what_nothing_caught() -> None:
    rows = [
        Row("a", "does a", "src/ch/x.c", caught_by=["s.yaml [v53]"], example="s: vda at 00:03"),
        Row("b", "does b", "src/ch/y.c"),
    ]
    text = format_markdown(rows, [])
    assert "Caught: 1/2 quirks." in text and "**nothing**" in text
    assert "s.yaml [v53]" in text and "vda at 00:03" in text


def test_the_property_machine_runs_the_driver_with_its_quirks() -> None:
    from harness.explore.run import machine_class
    from harness.explore.soak import main as soak_main

    machine = machine_class("v53", quirks=frozenset({"refused-nic-stays"}))
    assert machine.quirks == {"refused-nic-stays"}
    instance = machine()
    try:
        assert instance.driver.quirks == {"refused-nic-stays"}
    finally:
        instance.teardown()
    assert soak_main(["--seconds", "1", "--quirks", "nope"]) == 2


def _view(q: frozenset[str], state: quirks.ForkState, *, live: bool, config: bool) -> tuple:
    """What an attach of the domain "vm" with definitions "L" and "P" chooses from."""
    return quirks.address_inputs(
        q, affect_live=live, affect_config=config, live="L" if live else None,
        persistent="P", saved=[], state=state, name="vm",
    )  # fmt: skip


def test_the_forks_memory_leaks_slots_until_the_domain_stops() -> None:
    state = quirks.ForkState()
    from harness.model.address import PciAddress

    state.leak("vm", PciAddress(0, 0, 5, 0))
    # a config attach does not see the live set
    assert _view(frozenset(), state, live=False, config=True) == (None, "P", [])
    _live, _pers, saved = _view(frozenset(), state, live=True, config=False)
    (phantom,) = saved
    assert [(d.address.domain, d.address.slot) for d in phantom.devices()] == [(0, 5)]
    state.reattached.add("vm")
    view = _view(frozenset({"restart-rebuild-from-live"}), state, live=True, config=False)
    assert view[:2] == ("L", None)
    state.forget("vm")
    assert state.phantom("vm") == [] and "vm" not in state.reattached


def test_nic_lookup_by_name_and_the_queue_of_ten() -> None:
    from harness.model.domain import Device, Domain

    dom = Domain.from_xml(
        "<domain type='kvm'><name>t</name><devices>"
        "<interface type='ethernet'><mac address='52:54:00:00:00:01'/><target dev='tap1'/>"
        "<model type='virtio'/></interface>"
        "<interface type='network'><mac address='52:54:00:00:00:02'/><target dev='vnet2'/>"
        "<model type='virtio'/></interface>"
        + "".join(
            f"<disk type='file'><target dev='vd{c}' bus='virtio'/></disk>" for c in "bcdefghijk"
        )
        + "</devices></domain>"
    )
    q = frozenset({"nic-match-by-ifname"})
    tap1 = Device.from_xml("<interface type='ethernet'><target dev='tap1'/></interface>")
    vnet2 = Device.from_xml("<interface type='network'><target dev='vnet2'/></interface>")
    nameless = Device.from_xml(
        "<interface type='network'><mac address='52:54:00:00:00:02'/></interface>"
    )
    assert quirks.find_live_nic(q, dom, tap1)[1].mac == "52:54:00:00:00:01"
    assert quirks.find_live_nic(q, dom, vnet2) == (True, None, "net vnet2 not found")
    assert quirks.find_live_nic(q, dom, nameless) == (True, None, "no interface name specified")
    assert quirks.find_live_nic(frozenset(), dom, tap1) == (False, None, "")
    overrun = quirks.check_queue(frozenset({"define-queue-overrun"}), dom, lambda d: True)
    assert "12 devices without a PCI address overrun the driver's queue of 10" in overrun
    assert quirks.check_queue(frozenset(), dom, lambda d: True) == ""
    quirks.boot_net_ids(frozenset({"net-id-count"}), dom)
    assert [d.alias for d in dom.devices() if d.tag == "interface"] == ["net_0", "net_1"]
    new = Device.from_xml(
        "<interface type='network'><mac address='52:54:00:00:00:03'/></interface>"
    )
    quirks.hotplug_net_id(frozenset({"net-id-count"}), new, dom)
    assert new.alias == "net_2"
