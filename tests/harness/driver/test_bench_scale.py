"""The scale benchmark's domains are valid and its operations run (no timing asserted)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from harness.driver.bench_scale import _dev_name, domain_xml, per_domain, per_host
from harness.model.domain import Domain


def test_names_and_addresses_are_unique_over_many_segments() -> None:
    dom = Domain.from_xml(domain_xml("big", 1000, 96))
    devices = dom.devices()
    assert len({d.target_dev for d in devices}) == 1000
    slots = {(d.address.domain, d.address.slot) for d in devices if d.address}
    assert len(slots) == 1000 and max(seg for seg, _ in slots) == 95
    assert all(1 <= slot <= 31 for _, slot in slots)
    assert _dev_name(0) == "vda" and _dev_name(26) == "vdaa"


def test_each_operation_of_both_benchmarks_runs(tmp_path: Path) -> None:
    ops = asyncio.run(per_domain(100, 10, tmp_path / "one"))
    assert set(ops) == {"define", "start", "hot-plug", "detach", "destroy"}
    assert set(asyncio.run(per_host(3, tmp_path / "many"))) == {"define+start", "hot-plug"}
