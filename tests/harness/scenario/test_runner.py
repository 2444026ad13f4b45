"""The scenario runner: expectations, automatic checks, traces, parallel runs."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

import harness.driver.daemon
from harness.driver.allocator import SlotMap
from harness.driver.daemon import Driver
from harness.driver.records import AttachFlags, DriverError
from harness.model.address import PciAddress
from harness.model.domain import Device, Domain
from harness.scenario.batch import run_paths, run_scenario_sync
from harness.scenario.load import load_scenario
from harness.scenario.results import FAILED, PASSED, SKIPPED, UNSUPPORTED, ScenarioResult
from harness.scenario.run import run_scenario
from harness.targets.reference import ReferenceTarget

ROOT = Path(__file__).resolve().parents[3]
DOMAINS = ROOT / "scenarios" / "domains"
SCENARIOS = ROOT / "scenarios"

HEADER = f"""\
name: runner test
source: tests
documents:
  domain: {{file: {DOMAINS / "domain-chv.xml"}}}
  nic: {{file: {DOMAINS / "new_interface.xml"}}}
"""


def run_text(tmp_path: Path, steps: str, *, header: str = HEADER) -> ScenarioResult:
    path = tmp_path / "scenario.yaml"
    path.write_text(header + "steps:\n" + steps)
    results = run_scenario_sync(path)
    assert len(results) == 1
    return results[0]


def test_passing_scenario_records_steps_exchanges_changes_and_maps(tmp_path: Path) -> None:
    result = run_text(
        tmp_path,
        "  - run: define domain\n"
        "  - run: start testvm\n"
        "  - run: attach-disk testvm /nfs/vdb.img vdb --persistent\n"
        "  - expect: {device: disk vdb, live: 00:04.0, persistent: 00:04.0, chv: 00:04.0}\n",
    )
    assert result.status == PASSED, result.failure
    attach = result.steps[2]
    endpoints = [ex["endpoint"] for ex in attach.exchanges]
    assert endpoints == ["vm.add-disk"]  # the runner's own vm.info reads are not traced
    assert attach.exchanges[0]["request"]["pci_device_id"] == 4
    assert attach.exchanges[0]["response"]["bdf"] == "0000:00:04.0"
    assert "testvm live: + disk vdb at 0000:00:04.0" in attach.changes
    assert "testvm persistent: + disk vdb at 0000:00:04.0" in attach.changes
    for side in ("live", "persistent", "chv"):
        entry = attach.maps[side]["testvm"]["0000:00:04.0"]
        assert (entry.device, entry.cls) == ("disk vdb", "disk")
    assert attach.differences == []


def test_wrong_expectation_names_device_bdf_and_side(tmp_path: Path) -> None:
    result = run_text(
        tmp_path,
        "  - run: define domain\n"
        "  - run: start testvm\n"
        "  - run: attach-disk testvm /nfs/vdb.img vdb --persistent\n"
        "  - expect: {device: disk vdb, live: 00:05.0}\n"
        "  - run: destroy testvm\n",
    )
    assert result.status == FAILED
    failed = result.failed_step
    assert failed is not None and failed.index == 4
    assert failed.error is not None
    for part in ("disk vdb", "live", "0000:00:04.0", "0000:00:05.0"):
        assert part in failed.error, failed.error
    assert result.failure is not None and "scenario.yaml:" in result.failure
    assert result.steps[4].status == SKIPPED


def test_wrong_slot_map_names_slot_and_side(tmp_path: Path) -> None:
    result = run_text(
        tmp_path,
        "  - run: define domain\n"
        "  - run: start testvm\n"
        '  - expect: {chv: {"01": rng, "02": interface, "03": disk vdb}}\n',
    )
    assert result.status == FAILED
    error = result.steps[2].error or ""
    assert "chv slot 0000:00:03.0" in error and "expected disk vdb" in error
    assert "found disk vda" in error


def test_command_that_should_fail_but_succeeds(tmp_path: Path) -> None:
    result = run_text(
        tmp_path,
        "  - run: define domain\n  - run: start testvm\n  - fail: attach-device testvm nic\n",
    )
    assert result.status == FAILED
    assert "expected the command to fail" in (result.steps[2].error or "")


def test_failing_step_that_changes_something_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Driver.attach_device

    async def leaky(
        self: Driver,
        name: str,
        xml: str,
        flags: AttachFlags = AttachFlags(),
        *,
        source: str = "<string>",
    ) -> Device:
        await original(self, name, xml, flags, source=source)
        raise DriverError("simulated failure after the definitions were changed")

    monkeypatch.setattr(Driver, "attach_device", leaky)
    result = run_text(
        tmp_path,
        "  - run: define domain\n"
        "  - run: start testvm\n"
        "  - fail: attach-disk testvm /nfs/vdb.img vdb --persistent\n",
    )
    assert result.status == FAILED
    step = result.steps[2]
    assert step.error is not None
    assert "[changed-after-failure]" in step.error
    assert "disk vdb" in step.error and "0000:00:04.0" in step.error
    rules = {v["rule"] for v in step.violations}
    assert rules == {"changed-after-failure"}
    sides = {v["side"] for v in step.violations}
    assert {"live", "persistent", "chv"} <= sides


def test_failing_step_without_change_passes_and_checks_the_message(tmp_path: Path) -> None:
    steps = (
        "  - run: define domain\n"
        "  - run: start testvm\n"
        "  - fail: attach-disk testvm /nfs/vdb.img vdb --address pci:0.0.20.0\n"
        '    message: "{}"\n'
    )
    assert run_text(tmp_path, steps.format("must be <= 0x1F")).status == PASSED
    result = run_text(tmp_path, steps.format("some other reason"))
    assert result.status == FAILED
    assert "does not contain 'some other reason'" in (result.steps[2].error or "")


def test_daemon_restart_keeps_everything(tmp_path: Path) -> None:
    result = run_text(
        tmp_path,
        "  - run: define domain\n"
        "  - run: start testvm\n"
        "  - run: attach-disk testvm /nfs/vdb.img vdb --persistent\n"
        "  - run: attach-device testvm nic\n"
        "  - run: detach-disk testvm vdb --live\n"
        "  - run: daemon-restart\n"
        "  - run: attach-disk testvm /nfs/vdc.img vdc\n",
    )
    assert result.status == PASSED, result.failure
    before, restart, after = result.steps[4], result.steps[5], result.steps[6]
    assert restart.maps == before.maps
    assert restart.changes == []
    # the rebuilt reservations: 04 is held by the persistent vdb, 05 by the live NIC
    assert after.maps["live"]["testvm"]["0000:00:06.0"].device == "disk vdc"


def test_daemon_restart_that_loses_an_address_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Driver._load

    async def forgetful(self: Driver) -> None:
        await original(self)
        for rec in self.domains.values():
            if rec.persistent is not None:
                device = rec.persistent.find(("disk", "vdb"))
                if device is not None:
                    device.set_address(PciAddress(0, 0, 9))

    monkeypatch.setattr(Driver, "_load", forgetful)
    result = run_text(
        tmp_path,
        "  - run: define domain\n"
        "  - run: start testvm\n"
        "  - run: attach-disk testvm /nfs/vdb.img vdb --persistent\n"
        "  - run: daemon-restart\n",
    )
    assert result.status == FAILED
    error = result.steps[3].error or ""
    assert "[moved] disk vdb: persistent has 0000:00:09.0, expected 0000:00:04.0" in error


def test_declared_violations_are_required_and_carried(tmp_path: Path) -> None:
    header = HEADER.replace("name: runner test", "name: runner test\nprofile: v51")
    domain = (DOMAINS / "domain-chv.xml").read_text()
    stripped = domain.replace(
        "      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>\n",
        "",
    )
    (tmp_path / "plain.xml").write_text(stripped)
    steps = (
        "  - run: define plain.xml\n"
        "  - run: start testvm\n"
        "  - run: attach-device testvm nic\n"
        "  - run: attach-disk testvm /nfs/vdb.img vdb\n"
        "  - run: reboot testvm\n"
        "{}"
        "  - expect: {{device: disk vdb, live: 00:05.0, chv: 00:02.0}}\n"
    )
    declared = run_text(
        tmp_path, steps.format("    violations: [live-vs-chv, moved]\n"), header=header
    )
    assert declared.status == PASSED, declared.failure
    recorded = {(v["rule"], v["device"]) for v in declared.steps[4].violations}
    assert ("live-vs-chv", "disk vdb") in recorded
    assert all(v["expected"] for v in declared.steps[5].violations)
    undeclared = run_text(tmp_path, steps.format(""), header=header)
    assert undeclared.status == FAILED
    assert undeclared.failed_step is not None and undeclared.failed_step.index == 5
    assert "[moved] interface 52:54:00:e5:b8:01: chv has 0000:00:03.0" in (undeclared.failure or "")
    step = undeclared.failed_step
    assert ("live-vs-chv", "disk vdb") in {(v["rule"], v["device"]) for v in step.violations}
    missing = run_text(tmp_path, steps.format("    violations: [duplicate]\n"), header=header)
    assert missing.status == FAILED
    assert "[moved]" in (missing.failure or "")


def test_unsupported_scenario_is_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a target without migration (the reference has it; stock libvirt's CH driver has not)
    monkeypatch.setattr(ReferenceTarget, "features", frozenset({"faults"}))
    result = run_text(
        tmp_path,
        "  - run: define domain\n  - run: migrate testvm --desturi dst --live --p2p\n",
        header=HEADER + "hosts: [src, dst]\nrequires: [migration]\n",
    )
    assert result.status == UNSUPPORTED
    assert "requires migration" in (result.failure or "")
    assert all(step.status == SKIPPED for step in result.steps)


def test_fault_step_makes_the_next_call_fail(tmp_path: Path) -> None:
    result = run_text(
        tmp_path,
        "  - run: define domain\n"
        "  - run: start testvm\n"
        "  - fault: {endpoint: vm.add-net, messages: [Error from API, injected by a test]}\n"
        "  - fail: attach-device testvm nic\n"
        '    message: "injected by a test"\n'
        "  - run: attach-device testvm nic\n",
    )
    assert result.status == PASSED, result.failure
    failed_call = result.steps[3].exchanges[-1]
    assert failed_call["endpoint"] == "vm.add-net" and failed_call["status"] == 500


def _strip(result: ScenarioResult) -> dict[str, Any]:
    data = asdict(result)
    data["seconds"] = 0
    for step in data["steps"]:
        step["seconds"] = 0
    return data


def test_parallel_run_gives_the_same_results_as_serial() -> None:
    paths = [
        SCENARIOS / "hotplug" / "a4-defs-in-sync-after-transient-unplug.yaml",
        SCENARIOS / "hotplug" / "a5-defs-in-sync-after-transient-hotplug.yaml",
        SCENARIOS / "lifecycle" / "i1-save-restore-keeps-hole.yaml",
        SCENARIOS / "migration" / "i2-disk-after-nic-stays-after-migration.yaml",
    ]
    serial = run_paths(paths, jobs=1)
    parallel = run_paths(paths, jobs=2)
    assert [s.status for s in serial.scenarios].count(PASSED) == 12
    assert [_strip(s) for s in serial.scenarios] == [_strip(s) for s in parallel.scenarios]


def test_a_run_reads_each_file_once_whatever_its_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.scenario import batch

    reads: list[str] = []
    original = batch.load_scenario

    def counting(path: Path | str, access: object = None) -> object:
        reads.append(str(path))
        return original(path, access)  # type: ignore[arg-type]

    monkeypatch.setattr(batch, "load_scenario", counting)
    path = SCENARIOS / "hotplug" / "a4-defs-in-sync-after-transient-unplug.yaml"
    run = run_paths([path], jobs=1)
    assert len(run.scenarios) > 1 and {s.status for s in run.scenarios} == {PASSED}
    assert reads == [str(path)]  # the plan's read; the runs under each profile reuse it
    assert batch._PLANNED == {}  # nothing kept after the run


def test_process_target_runs_a_scenario() -> None:
    scenario = load_scenario(SCENARIOS / "hotplug" / "a4-defs-in-sync-after-transient-unplug.yaml")
    result = asyncio.run(run_scenario(scenario, "v53", ReferenceTarget(processes=True)))
    assert result.status == PASSED, result.failure
    assert result.target == "reference-process"


@pytest.mark.parametrize(
    ("ignore", "scenario", "device"),
    [
        # A4: the NIC reuses 04, which the persistent definition still gives to vdb
        (
            "persistent",
            "a4-defs-in-sync-after-transient-unplug.yaml",
            "interface 52:54:00:e5:b8:02",
        ),
        # A5: the persistent NIC takes 04 in the persistent definition, where the live-only
        # vdb sits in the live one
        ("live", "a5-defs-in-sync-after-transient-hotplug.yaml", "interface de:ad:be:ef:13:37"),
    ],
)
def test_breaking_the_hotplug_rule_fails_named_scenarios(
    monkeypatch: pytest.MonkeyPatch, ignore: str, scenario: str, device: str
) -> None:
    """An allocator that looks at one definition only makes the catalogue scenario fail."""
    original = harness.driver.daemon.choose_hotplug_address

    def one_sided(
        device: Device,
        *,
        live: Domain | None,
        persistent: Domain | None,
        segments: int = 1,
        saved: tuple[Domain, ...] = (),
        host_bridge_all_segments: bool = True,
    ) -> PciAddress:
        seen = persistent if ignore == "live" else live
        if device.address is not None or seen is None:
            return original(
                device, live=live, persistent=persistent, segments=segments, saved=saved
            )
        return SlotMap.from_domains(seen).lowest_free(0)

    monkeypatch.setattr(harness.driver.daemon, "choose_hotplug_address", one_sided)
    run = run_paths([SCENARIOS / "hotplug" / scenario], profile="v53", jobs=1)
    (result,) = run.scenarios
    assert result.status == FAILED
    assert not run.ok
    failure = result.failure or ""
    assert device in failure, failure
    assert "0000:00:04.0" in failure, failure
    assert any(side in failure for side in ("live", "persistent", "chv")), failure
