"""docs/how-to-add-a-chv-release.md holds: a CHV release is a fakechv profile row and one
row of the driver's capability table, nothing else.

A made-up release ``v54`` (head's behaviour under a new name) is added the way the
how-to says, in a fresh interpreter, and the hotplug scenarios run on it with the
results they have on head.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PROGRAM = """
import dataclasses, json, sys

import fakechv.profiles as profiles

profiles.PROFILES["v54"] = dataclasses.replace(
    profiles.PROFILES["head"], name="v54", version="54.0.0", build_version="v54.0"
)
import harness.chv.capabilities as capabilities

capabilities.CAPABILITIES["v54"] = dataclasses.replace(
    capabilities.CAPABILITIES["head"], profile="v54"
)

import asyncio

from fakechv.api import Api
from fakechv.vmm import Vmm
from fakechv.wire import ApiRequest
from harness.scenario.batch import run_paths
from harness.scenario.model import KNOWN_PROFILES

ping = asyncio.run(
    Api(Vmm(profiles.get_profile("v54"))).handle(ApiRequest("GET", "/api/v1/vmm.ping", b""))
)
results = {}
for release in ("v54", "head"):
    run = run_paths([sys.argv[1]], profile=release, jobs=1)
    results[release] = {s.file: s.status for s in run.scenarios}
print(json.dumps({
    "known": list(KNOWN_PROFILES),
    "ping": json.loads(ping.body),
    "results": results,
}))
"""


def test_a_release_is_a_profile_row_and_a_capability_row() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", _PROGRAM, str(ROOT / "scenarios" / "hotplug")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert "v54" in data["known"]
    assert data["ping"]["version"] == "54.0.0"
    v54, head = data["results"]["v54"], data["results"]["head"]
    assert v54 and v54 == head
    assert "passed" in v54.values()
