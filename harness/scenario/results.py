"""What a scenario run produced: the values reports are rendered from.

Data flows one way: the runner fills these records (steps, slot maps, CHV
exchanges, definition changes, violations), and the report writers
(:mod:`harness.reports.html`, :mod:`harness.reports.junit`,
:mod:`harness.reports.markdown`) only read them. Everything here is plain data and
round-trips through JSON (``to_json`` / ``from_json``) so a run can be saved
and re-rendered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "ERROR",
    "FAILED",
    "PASSED",
    "SIDES",
    "SKIPPED",
    "UNSUPPORTED",
    "RunResult",
    "ScenarioResult",
    "SlotEntry",
    "StepResult",
]

PASSED = "passed"
FAILED = "failed"  # an expectation or invariant did not hold
ERROR = "error"  # the scenario could not run (bad file, crash of the target)
UNSUPPORTED = "unsupported"  # the target cannot perform a step (e.g. no hotplug)
SKIPPED = "skipped"  # not reached after an earlier failure

#: the three views of a domain's PCI slots, in the order reports show them
SIDES = ("live", "persistent", "chv")


@dataclass
class SlotEntry:
    """One occupied slot of one side: which device, of which class."""

    device: str  # label, e.g. "disk vdb" or "CHV device _net2"
    cls: str  # device class, e.g. "disk", "interface", "rng"; "unknown" for CHV-only
    alias: str | None = None


@dataclass
class StepResult:
    index: int
    text: str  # the step as written, e.g. "attach-disk testvm --target vdb --persistent"
    host: str = "host"
    status: str = PASSED
    error: str | None = None  # what went wrong, naming device, BDF and side
    #: after the step: side -> domain -> BDF ("0000:00:04.0") -> entry
    maps: dict[str, dict[str, dict[str, SlotEntry]]] = field(default_factory=dict)
    #: BDFs that differ between the sides after the step ("0000:00:04.0")
    differences: list[str] = field(default_factory=list)
    violations: list[dict[str, Any]] = field(default_factory=list)
    exchanges: list[dict[str, Any]] = field(default_factory=list)  # CHV API traffic
    changes: list[str] = field(default_factory=list)  # definition changes, human-readable
    seconds: float = 0.0
    #: the step's line in the scenario file (0: not known, e.g. a run.json from before)
    line: int = 0


@dataclass
class ScenarioResult:
    name: str
    file: str
    source: str = ""  # where the scenario comes from (catalogue id, issue)
    profile: str = "v53"
    target: str = "reference"
    status: str = PASSED
    failure: str | None = None  # one-line summary of the first failure
    steps: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed_step(self) -> StepResult | None:
        return next((s for s in self.steps if s.status in (FAILED, ERROR)), None)


@dataclass
class RunResult:
    scenarios: list[ScenarioResult] = field(default_factory=list)
    target: str = "reference"
    started: str = ""  # ISO 8601
    seconds: float = 0.0
    #: the run was stopped (Ctrl-C, SIGTERM) before every planned run finished
    interrupted: bool = False
    #: scenario runs planned (``len(scenarios)`` unless interrupted)
    planned: int = 0
    #: ``I/N`` when this is one shard of a run (:mod:`harness.scenario.shard`)
    shard: str = ""
    #: CHV profile -> the hypervisor that ran it (binary and version, or fakechv)
    hypervisors: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out = {PASSED: 0, FAILED: 0, ERROR: 0, UNSUPPORTED: 0, SKIPPED: 0}
        for s in self.scenarios:
            out[s.status] = out.get(s.status, 0) + 1
        return out

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(
            s.status in (PASSED, UNSUPPORTED) for s in self.scenarios
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        scenarios = []
        for s in data.get("scenarios", []):
            steps = []
            for st in s.get("steps", []):
                maps = {
                    side: {
                        dom: {bdf: SlotEntry(**entry) for bdf, entry in slots.items()}
                        for dom, slots in doms.items()
                    }
                    for side, doms in st.get("maps", {}).items()
                }
                steps.append(StepResult(**{**st, "maps": maps}))
            scenarios.append(ScenarioResult(**{**s, "steps": steps}))
        return cls(**{**data, "scenarios": scenarios})
