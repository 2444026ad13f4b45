"""The real-CHV CI job (``tox -e chv``): what its bounded run keeps, and that it says so
and passes when real CHV cannot run here."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.targets import chv_job

ROOT = Path(__file__).resolve().parents[3]


def test_the_bounded_run_keeps_the_scenarios_without_a_guest_and_a_few_with() -> None:
    quick = chv_job.quick_set()
    names = {p.relative_to(ROOT).as_posix() for p in quick}
    assert set(chv_job.WITH_GUEST) <= names
    with_guest = [p for p in quick if chv_job.needs_guest(p)]
    assert {p.relative_to(ROOT).as_posix() for p in with_guest} == set(chv_job.WITH_GUEST)
    assert "scenarios/validation/address-slot-0.yaml" in names
    assert "scenarios/hotplug/rule-transient-domain-no-leak.yaml" not in names  # detaches


def test_without_real_chv_the_job_skips_visibly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(chv_job, "_usable", lambda: "no usable /dev/kvm")
    assert chv_job.main([]) == 0
    out = capsys.readouterr().out
    assert "SKIPPED: real Cloud Hypervisor cannot run here: no usable /dev/kvm" in out
