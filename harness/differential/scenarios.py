"""Sequences from the scenario suite: the CHV exchanges every scenario run recorded.

``bdf-harness run scenarios --report-dir D`` writes ``D/run.json``, whose steps carry
the CHV ``exchanges`` of the reference driver (endpoint, method, request JSON, status,
response). Each hypervisor the driver talked to becomes one sequence: the exchanges of
one (scenario run, host, domain), split where a new hypervisor starts (``vm.create``).
Their requests are sent to both sides, with the driver's made-up paths turned into
placeholders (:func:`harness.differential.rules.placeholders`).

What one VMM alone cannot replay is left out and counted: a hypervisor that starts
from another's state (``vm.restore`` of a snapshot, ``vm.receive-migration``).
Without a run.json, :func:`scenario_sequences` runs the suite itself (the in-process
reference driver, a few seconds).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.differential.rules import PROJECT_ROOT, _Names, placeholders
from harness.differential.sequence import Sequence, Step, api
from harness.errors import HarnessError

__all__ = ["ScenarioSource", "from_run_json", "scenario_sequences"]

#: requests that start a hypervisor from state made elsewhere
_FOREIGN_START = ("vm.restore", "vm.receive-migration")


@dataclass
class ScenarioSource:
    """The scenario sequences and what was left out."""

    sequences: list[Sequence] = field(default_factory=list)
    runs: int = 0
    exchanges: int = 0
    left_out: dict[str, int] = field(default_factory=dict)

    def leave_out(self, why: str, count: int = 1) -> None:
        self.left_out[why] = self.left_out.get(why, 0) + count


def _body(request: Any) -> str | None:
    return None if request is None else json.dumps(request)


def from_run_json(data: Any, where: str = "run.json") -> ScenarioSource:
    """The sequences of a run's JSON (``RunResult.to_json()``)."""
    if not isinstance(data, dict) or not isinstance(data.get("scenarios"), list):
        raise HarnessError(f"{where}: not the run.json of a scenario run (no 'scenarios')")
    out = ScenarioSource()
    for scenario in data["scenarios"]:
        out.runs += 1
        name = f"{scenario.get('file') or scenario.get('name')} [{scenario.get('profile')}]"
        sessions: dict[tuple[str, str], list[list[dict[str, Any]]]] = {}
        for step in scenario.get("steps", []):
            for ex in step.get("exchanges", []):
                out.exchanges += 1
                key = (str(ex.get("host", "host")), str(ex.get("domain", "")))
                runs = sessions.setdefault(key, [])
                if not runs or ex.get("endpoint") in ("vm.create", *_FOREIGN_START):
                    runs.append([])
                runs[-1].append({**ex, "_step": step.get("index")})
        for (host, domain), runs in sessions.items():
            for n, exchanges in enumerate(runs, 1):
                first = str(exchanges[0].get("endpoint", ""))
                if first in _FOREIGN_START:
                    out.leave_out(f"starts from another VMM's state ({first})")
                    continue
                names = _Names()
                steps: list[Step] = []
                for ex in exchanges:
                    endpoint = str(ex.get("endpoint", ""))
                    steps.append(
                        api(
                            str(ex.get("method", "GET")),
                            endpoint,
                            placeholders(endpoint, _body(ex.get("request")), names),
                        )
                    )
                first_step = exchanges[0].get("_step")
                out.sequences.append(
                    Sequence(
                        name=f"{name} {host}/{domain} #{n}",
                        source="scenarios",
                        steps=tuple(steps),
                        origin=f"{scenario.get('file')} [{scenario.get('profile')}] "
                        f"from step {first_step}",
                    )
                )
    return out


def _run_suite(progress: Callable[[str], None] | None) -> dict[str, Any]:
    from harness.scenario.batch import run_paths

    if progress is not None:
        progress("running the scenario suite (reference driver) for its CHV exchanges")
    run = run_paths([PROJECT_ROOT / "scenarios"], target="reference", jobs=None)
    return run.to_json()


def scenario_sequences(
    run_json: Path | None, *, progress: Callable[[str], None] | None = None
) -> ScenarioSource:
    """The scenario sequences from ``run_json`` (a file, or a report directory holding
    one), or from a run of the suite made now."""
    if run_json is None:
        return from_run_json(_run_suite(progress), "the scenario run")
    path = run_json / "run.json" if run_json.is_dir() else run_json
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise HarnessError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise HarnessError(f"{path}: not JSON: {exc}") from None
    return from_run_json(data, str(path))
