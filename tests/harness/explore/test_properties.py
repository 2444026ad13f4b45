"""Property tests: random virsh-like sequences keep BDFs stable and in sync.

The state machine (:mod:`harness.explore.machine`) runs random define / start / hotplug / detach /
save / restore / managedsave / reboot / daemon-restart / fault sequences against the
reference driver on in-process fakechv VMMs and checks every invariant after every step.
Budgets come from the hypothesis settings profiles of :func:`register_profiles`
(``HYPOTHESIS_PROFILE=ci`` is derandomized; the default is ``dev``).
"""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

import harness.driver.daemon
from harness.explore.machine import BdfMachine
from harness.explore.oracles import COMMAND_RULES
from harness.explore.reproducer import replay, scenario_text, write_reproducer
from harness.explore.run import (
    MachineRun,
    close_loop,
    machine_class,
    register_profiles,
    run_machine,
)
from harness.explore.trace import Trace, TraceStep
from harness.explore.vocabulary import DOMAIN_XML, KNOWN_DESYNCS, OPEN_DESYNCS, OTHER_DEVICES
from harness.scenario.load import load_scenario

register_profiles()
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
#: searches that must find something are derandomized: they find it on every run
FIND = settings(settings.get_profile("ci"), max_examples=100, stateful_step_count=20)


@pytest.fixture(autouse=True)
def _loop() -> Iterator[None]:
    yield
    close_loop()


def counting(machine: type[BdfMachine]) -> collections.Counter[str]:
    """Count succeeded (``run``) and refused (``fail``) steps per command of ``machine``."""
    seen: collections.Counter[str] = collections.Counter()
    orig = machine._step

    def step(self: BdfMachine, text: str, op: Callable[[], Any]) -> bool:
        ok = orig(self, text, op)
        seen[f"{'run' if ok else 'fail'} {text.split()[0]}"] += 1
        return ok

    machine._step = step  # type: ignore[method-assign]
    return seen


def check_replay(run: MachineRun) -> None:
    """The exported reproducer fails in the scenario runner at the same step, same rule."""
    assert run.failure is not None and run.reproducer is not None
    load_scenario(run.reproducer)  # a valid scenario file
    result = replay(run.reproducer)
    assert result.status == "failed", result
    assert run.failure.failed_step is not None
    if set(run.failure.rules) <= COMMAND_RULES:
        # a rule of a command's outcome: the replay fails at that step, or at the
        # expectation the reproducer writes after it
        steps = (run.failure.failed_step + 1, run.failure.failed_step + 2)
        assert result.failed_step in steps, (result, run.failure.failure)
        return
    assert result.failed_step == run.failure.failed_step + 1, (result, run.failure.failure)
    assert set(run.failure.rules) & set(result.rules), (run.failure.rules, result)


# -- v53: nothing to find ---------------------------------------------------------------


@pytest.mark.parametrize("search", ["profile", "derandomized"])
def test_v53_random_sequences_stay_in_sync(tmp_path: Path, search: str) -> None:
    machine = machine_class("v53", avoid=OPEN_DESYNCS)
    seen = counting(machine)
    # "profile": random in dev, derandomized in CI; "derandomized": the same examples on
    # every run, so that the coverage below is checked on a known set of sequences
    config = settings.get_profile(PROFILE if search == "profile" else "ci")
    if search == "derandomized":  # enough examples that the rarer operations all come up
        config = settings(config, max_examples=150)
    run = run_machine(machine, settings_=config, report_dir=tmp_path)
    assert run.failure is None, (run.failure.failure if run.failure else "", run.reproducer)
    assert run.steps >= 300
    core = ["define", "start", "attach-disk", "detach-disk", "reboot", "daemon-restart"]
    rarer = ["attach-interface", "managedsave", "save", "restore", "fault"]
    # the run explored the interesting operations, successfully
    for op in core + (rarer if search == "derandomized" else []):
        assert seen[f"run {op}"] > 0, (op, seen)
    assert seen["fail attach-disk"] > 0  # refused attaches (bad addresses, faults) ran too


def test_v53_never_ejecting_guest_stays_in_sync(tmp_path: Path) -> None:
    machine = machine_class("v53", eject="never", avoid=OPEN_DESYNCS, other_devices={})
    seen = counting(machine)
    run = run_machine(
        machine,
        settings_=settings(settings.get_profile(PROFILE), max_examples=10, stateful_step_count=15),
        report_dir=tmp_path,
    )
    assert run.failure is None, (run.failure.failure if run.failure else "", run.reproducer)
    assert seen["fail detach-disk"] > 0


# -- v51: CHV recomputes implicit slots on reboot ---------------------------------------


def test_v51_machine_finds_the_reboot_desync(tmp_path: Path) -> None:
    # a wider budget than FIND: the desync needs a hot-plug, a hole and a reboot in one
    # example, and a full run's examples (CI) sometimes found it only past 100
    wide = settings(FIND, max_examples=300)
    run = run_machine(machine_class("v51"), settings_=wide, report_dir=tmp_path)
    assert run.failure is not None, "the v51 desync was not found"
    assert {"moved", "live-vs-chv"} & set(run.failure.rules), run.failure.failure
    commands = [s.text.split()[0] for s in run.failure.steps]
    assert commands[-1] in ("reboot", "start"), commands  # recomputed by CHV
    assert len(run.failure.steps) <= 6, commands  # shrunk
    check_replay(run)


# -- a deliberately broken allocator is found, shrunk, exported, replayed -----------------


def test_broken_allocator_is_found_and_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    orig = harness.driver.daemon.choose_hotplug_address

    def ignores_persistent(
        device: Any, *, live: Any, persistent: Any, segments: int = 1, saved: Any = (), **_: Any
    ) -> Any:
        return orig(device, live=live, persistent=None, segments=segments)

    monkeypatch.setattr(harness.driver.daemon, "choose_hotplug_address", ignores_persistent)
    run = run_machine(machine_class("v53", avoid=OPEN_DESYNCS), settings_=FIND, report_dir=tmp_path)
    assert run.failure is not None, "the broken allocator was not caught"
    assert run.failure.rules and run.failure.rules != ["error"], run.failure.failure
    assert len(run.failure.steps) <= 8, [s.text for s in run.failure.steps]
    assert run.reproducer is not None and run.reproducer.parent == tmp_path
    check_replay(run)
    # `bdf-harness replay FILE --trace` fails the same way
    from harness.cli import main as bdf_harness

    capsys.readouterr()
    assert bdf_harness(["replay", str(run.reproducer), "--trace"]) == 1
    out = capsys.readouterr().out
    assert "status: failed" in out
    if not set(run.failure.rules) <= COMMAND_RULES:  # (those the runner sees otherwise)
        assert any(f"[{rule}]" in out for rule in run.failure.rules), out
    # with the right allocator the same file passes
    monkeypatch.setattr(harness.driver.daemon, "choose_hotplug_address", orig)
    assert replay(run.reproducer).status == "passed"


# -- the reproducer format ----------------------------------------------------------------


def _trace(*steps: tuple[str, str], eject: str = "immediate") -> Trace:
    trace = Trace("v53", eject, documents={"domain": DOMAIN_XML})
    # "fail!": a refused step that declares the change it leaves (a timed-out detach)
    trace.steps = [
        TraceStep("fail", text, violations=("changed-after-failure",))
        if kind == "fail!"
        else TraceStep(kind, text)
        for kind, text in steps
    ]
    return trace


def test_reproducer_writes_documents_faults_and_failures(tmp_path: Path) -> None:
    trace = _trace(("run", "define domain"), ("run", "start testvm"))
    trace.steps.append(TraceStep("fault", "fault vm.add-disk", {"endpoint": "vm.add-disk"}))
    trace.steps.append(TraceStep("fail", "attach-disk testvm --target vdb --source /x.img"))
    trace.failure, trace.rules, trace.failed_step = "after `x`: [duplicate] ...", ["duplicate"], 3
    text = scenario_text(trace)
    assert "requires: [faults]" in text and "  domain: |\n    <domain type='kvm'>" in text
    path = write_reproducer(trace, tmp_path / "reports")
    assert path.name.startswith("repro-v53-duplicate-")
    scenario = load_scenario(path)
    assert [s.kind for s in scenario.steps] == ["run", "run", "fault", "fail"]
    assert scenario.steps[2].fault == {"endpoint": "vm.add-disk", "count": 1}
    assert "[duplicate]" in scenario.description
    # the steps pass as recorded: the fault makes the attach fail and nothing changes
    assert replay(path).status == "passed"


def test_reproducer_refuses_a_step_it_cannot_express(tmp_path: Path) -> None:
    trace = _trace(("run", "define domain"), ("pause", "pause testvm"))
    with pytest.raises(ValueError, match="no scenario form: pause testvm"):
        write_reproducer(trace, tmp_path)
    assert not list(tmp_path.iterdir())


# -- desyncs of the reference driver the machine found ------------------------------------

RESTORE_CONFLICT = [
    ("run", "define domain"),
    ("run", "start testvm"),
    ("run", "attach-disk testvm --target vdc --source /nfs/vdc.img --live"),
    ("run", "attach-disk testvm --target vdb --source /nfs/vdb.img --live"),
    ("run", "managedsave testvm"),
    # the managed save image holds vdc at 04 and vdb at 05: the config attach keeps 05
    ("run", "attach-disk testvm --target vdb --source /nfs/vdb.img --config"),
    ("run", "start testvm"),
]
RESTORE_AGAIN = [
    ("run", "define domain"),
    ("run", "start testvm"),
    ("run", "attach-interface testvm --type bridge --source br0 --mac 52:54:00:00:00:03 --live"),
    ("run", "save testvm img1"),  # the image holds the NIC at 04
    ("run", "restore img1"),
    ("run", "destroy testvm"),
    ("run", "attach-device testvm balloon --config"),  # the image still reserves 04
    ("run", "attach-interface testvm --type bridge --source br0 --mac 52:54:00:00:00:03 --config"),
    ("run", "restore img1"),  # live and persistent agree on the NIC's slot
]
EXPLICIT_VS_TWIN = [
    ("run", "define domain"),
    ("run", "start testvm"),
    ("run", "attach-disk testvm --target vdb --source /nfs/vdb.img --config"),
    # vdb is at 04 in the persistent definition: another explicit slot is refused
    ("fail", "attach-disk testvm --target vdb --source /nfs/vdb.img --address pci:0.0.06.0"),
    ("run", "attach-disk testvm --target vdb --source /nfs/vdb.img --address pci:0.0.04.0"),
]
PENDING_EJECT_REBUILD = [
    ("run", "define domain"),
    ("run", "start testvm"),
    ("run", "attach-disk testvm --target vdb --source /nfs/vdb.img --live"),
    ("fail!", "detach-disk testvm vdb --live"),
    # CHV rebuilds without the device: the driver drops it from the live definition
    ("run", "reboot testvm"),
]
PENDING_EJECT_MIGRATE = [
    ("run", "define domain"),
    ("run", "start testvm"),
    ("fail!", "detach-disk testvm vda --live"),  # the guest never ejects: vda stays live
    ("fail", "migrate testvm --desturi dst --live --p2p"),  # refused while it is pending
]
CONFIG_UNADDRESSABLE = [
    ("run", "define domain"),
    ("run", "attach-device testvm balloon --config"),  # v52 cannot place a balloon itself
    ("run", "start testvm"),
]
PENDING_EJECT_RESTORE = [
    ("run", "define domain"),
    ("run", "start testvm"),
    ("fail!", "detach-disk testvm vda"),  # the guest never ejects: vda stays live
    ("run", "managedsave testvm"),
    ("run", "start testvm"),  # the pending removal travels with the image and is settled
]
UNADDRESSABLE_AFTER_DETACH = [
    ("run", "define domain"),
    ("run", "attach-device testvm balloon --config"),  # predicted 04
    ("run", "detach-disk testvm vda --config"),  # frees 03
    ("run", "start testvm"),  # CHV v52 places the balloon itself, in the hole
]
UNPINNABLE_ORDER = [
    ("run", "define domain"),
    ("run", "attach-device testvm watchdog --config"),  # predicted 04
    ("run", "attach-device testvm balloon --config"),  # predicted 05
    ("run", "start testvm"),  # CHV v52 creates the balloon first: 04, the watchdog 05
]
UNPINNABLE_REPREDICT = [
    ("run", "define domain"),
    ("run", "attach-device testvm balloon --config"),  # v52 places it itself: 04
    ("run", "start testvm"),
    # frees 02 in the persistent definition; the balloon is re-predicted there, live at 04
    ("run", "detach-interface testvm --type ethernet --mac 52:54:00:00:00:01 --config"),
]
UNPINNABLE_REPREDICT_SAVED = [
    ("run", "define domain"),
    ("run", "attach-device testvm balloon --config"),  # v52 places it itself: 04
    ("run", "start testvm"),
    ("run", "managedsave testvm"),  # the image has the balloon at 04
    ("run", "detach-disk testvm vda --config"),  # re-predicted into vda's slot 03
    ("run", "start testvm"),  # restored: live 04, persistent 03
]
UNPINNABLE_REBOOT = [
    ("run", "define domain"),
    ("run", "attach-device testvm watchdog --config"),  # predicted 04
    ("run", "start testvm"),
    ("run", "detach-interface testvm --type ethernet --mac 52:54:00:00:00:01"),  # frees 02
    ("run", "reboot testvm"),  # CHV recomputes: the watchdog moves to 02
]
UNADDRESSABLE_VS_SAVED = [
    ("run", "define domain"),
    ("run", "start testvm"),
    ("run", "attach-disk testvm --target vdb --source /nfs/vdb.img --live"),  # 04
    ("run", "save testvm img1"),  # the image reserves 04
    ("run", "attach-device testvm balloon --config"),  # predicted where CHV will put it
    ("run", "start testvm"),  # CHV v52 places the balloon itself
]


def _case(
    steps: list[tuple[str, str]], profile: str, eject: str, hosts: list[str], tmp: Path
) -> Path:
    trace = _trace(*steps, eject=eject)
    trace.profile, trace.hosts = profile, hosts
    trace.documents.update(OTHER_DEVICES)
    return write_reproducer(trace, tmp)


@pytest.mark.parametrize(
    "name, steps, profile, eject, hosts",
    [
        pytest.param(*case, id=str(case[0]))
        for case in [
            ("restore-conflict", RESTORE_CONFLICT, "v53", "immediate", ["host"]),
            ("restore-conflict", RESTORE_AGAIN, "v53", "immediate", ["host"]),
            ("explicit-vs-twin", EXPLICIT_VS_TWIN, "v53", "immediate", ["host"]),
            ("pending-eject-rebuild", PENDING_EJECT_REBUILD, "v53", "never", ["host"]),
            ("pending-eject-migrate", PENDING_EJECT_MIGRATE, "v53", "never", ["src", "dst"]),
            ("config-unaddressable", CONFIG_UNADDRESSABLE, "v52", "immediate", ["host"]),
            ("pending-eject-restore", PENDING_EJECT_RESTORE, "v53", "never", ["host"]),
            ("unaddressable-vs-saved", UNADDRESSABLE_VS_SAVED, "v52", "immediate", ["host"]),
            (
                "unaddressable-prediction",
                UNADDRESSABLE_AFTER_DETACH,
                "v52",
                "immediate",
                ["host"],
            ),
            ("unpinnable-order", UNPINNABLE_ORDER, "v52", "immediate", ["host"]),
        ]
    ],
)
def test_desyncs_found_by_the_machine_stay_fixed(
    tmp_path: Path,
    name: str,
    steps: list[tuple[str, str]],
    profile: str,
    eject: str,
    hosts: list[str],
) -> None:
    assert name in KNOWN_DESYNCS and name not in OPEN_DESYNCS
    result = replay(_case(steps, profile, eject, hosts, tmp_path))
    assert result.status == "passed", result.failure


class DesyncPresent(AssertionError):
    """The driver still shows the desync (the expected failure of the test below)."""


@pytest.mark.xfail(strict=True, raises=DesyncPresent, reason="open desync of the driver")
@pytest.mark.parametrize(
    "name, steps, profile, eject, hosts, rule",
    [
        pytest.param(
            "unpinnable-repredict",
            UNPINNABLE_REPREDICT,
            "v52",
            "immediate",
            ["host"],
            "live-vs-persistent",
            id="unpinnable-repredict",
        ),
        pytest.param(
            "unpinnable-repredict",
            UNPINNABLE_REPREDICT_SAVED,
            "v52",
            "immediate",
            ["host"],
            "live-vs-persistent",
            id="unpinnable-repredict-saved",
        ),
        pytest.param(
            "unpinnable-reboot",
            UNPINNABLE_REBOOT,
            "v53",
            "immediate",
            ["host"],
            "moved",
            id="unpinnable-reboot",
        ),
    ],
)
def test_open_driver_desyncs(
    tmp_path: Path,
    name: str,
    steps: list[tuple[str, str]],
    profile: str,
    eject: str,
    hosts: list[str],
    rule: str,
) -> None:
    assert name in OPEN_DESYNCS  # the machine steers around it by default
    result = replay(_case(steps, profile, eject, hosts, tmp_path))
    if result.status != "passed":
        # it fails exactly as found by the machine, not for another reason
        assert result.failed_step == len(steps) and rule in result.rules, result
        raise DesyncPresent(result.failure)


# -- two hosts: migration -------------------------------------------------------------------


def test_v53_sequences_with_migration_stay_in_sync(tmp_path: Path) -> None:
    machine = machine_class("v53", migration=True, avoid=OPEN_DESYNCS)
    seen = counting(machine)
    run = run_machine(
        machine,
        settings_=settings.get_profile(PROFILE),
        report_dir=tmp_path,
    )
    assert run.failure is None, (run.failure.failure if run.failure else "", run.reproducer)
    assert seen["run migrate"] > 0, seen


def test_reproducer_of_a_two_host_run_replays(tmp_path: Path) -> None:
    trace = _trace(
        ("run", "define domain"),
        ("run", "start testvm"),
        ("run", "attach-disk testvm --target vdb --source /nfs/vdb.img --live"),
        ("run", "migrate testvm --desturi dst --live --p2p --persistent"),
    )
    trace.hosts = ["src", "dst"]
    trace.steps.append(TraceStep("run", "detach-disk testvm vdb --live", host="dst"))
    trace.steps.append(TraceStep("run", "attach-disk testvm /nfs/vdc.img vdc", host="dst"))
    path = write_reproducer(trace, tmp_path)
    scenario = load_scenario(path)
    assert scenario.hosts == ["src", "dst"] and scenario.requires == ["migration"]
    assert [s.host for s in scenario.steps] == ["src"] * 4 + ["dst"] * 2
    assert replay(path).status == "passed"


# -- the soak command ----------------------------------------------------------------------


def test_soak_prints_steps_rate_and_reproducers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.explore.soak import main

    code = main(
        ["--seconds", "1", "--profile", "v51", "--steps", "20", "--report-dir", str(tmp_path)]
    )
    out = capsys.readouterr().out
    steps = int(out.split("steps explored: ")[1].split()[0])
    assert steps > 0
    assert "steps per second: " in out
    per_step = re.search(r"per step: ([0-9.]+) ms in .*, ([0-9.]+) ms outside .* (\d+) step", out)
    assert per_step is not None, out
    assert all(float(figure) > 0 for figure in per_step.groups())
    written = sorted(tmp_path.glob("repro-v51-*.yaml"))
    assert f"reproducers written: {len(written)}" in out
    # (v51's reboot desync is usually found in the first batch; the search is random here)
    assert code == (1 if written else 0)
    assert all(str(path) in out for path in written)


def test_soak_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.explore.soak import main

    assert main(["--seconds", "0"]) == 2
    assert main(["--seconds", "1", "--profile", "v99"]) == 2
    assert "unknown fakechv profile 'v99'" in capsys.readouterr().err


def test_a_run_tells_the_time_in_the_system_under_test_from_hypothesis_time() -> None:
    from harness.explore.run import TimedLoop, close_loop

    close_loop()
    machine = machine_class("v53", avoid=OPEN_DESYNCS)
    run = run_machine(machine, settings_=settings(max_examples=3, stateful_step_count=5))
    assert isinstance(BdfMachine.loop, TimedLoop)
    assert run.steps > 0 and 0 < run.system_seconds < run.seconds
    close_loop()
