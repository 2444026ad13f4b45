"""The libvirt conformance summary (``docs/libvirt-11.3-conformance.md``): per scenario
its outcome against stock libvirt and, for failures, the evidence; with the catalogue's
default domain after define and start (:class:`harness.targets.libvirt.StartPath`).

Deterministic for a given libvirt and hypervisor: no times, no temporary paths.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import harness
from harness.scenario.results import (
    ERROR,
    FAILED,
    PASSED,
    SKIPPED,
    UNSUPPORTED,
    RunResult,
)

if TYPE_CHECKING:
    from harness.targets.libvirt import StartPath

__all__ = [
    "conformance_markdown",
    "outcome_table",
    "scenario_table",
    "start_path_table",
    "suite_markdown",
]

REPO_ROOT = Path(harness.__file__).resolve().parents[1]
#: the temporary directories of scenario runs and of the start path
_WORKDIR_RE = re.compile(r"/[^\s'\"]*/(?:bdf-scenario|lv-start)-[^/\s'\"]+")


def _clean(text: str | None) -> str:
    """One line, without temporary paths, Markdown-safe."""
    text = _WORKDIR_RE.sub("$WORKDIR", text or "").replace(f"{REPO_ROOT}/", "")
    text = " ".join(text.split())
    return text.replace("|", "\\|")


#: the evidence that says most first: where the sides disagree, then what is missing
_RULE_ORDER = {
    "live-vs-chv": 0,
    "live-vs-persistent": 1,
    "duplicate": 2,
    "moved": 3,
    "changed-after-failure": 4,
    "chv-extra": 5,
    "unaddressed": 6,
}


def start_path_table(path: StartPath) -> str:
    """Markdown: the start path's devices by their CHV slot, then what virtchd logged."""
    rows, logged = path.rows, path.logged
    lines = [
        "| device | live XML | persistent XML | CHV (vm.info) |",
        "|---|---|---|---|",
    ]
    for label, sides in sorted(rows.items(), key=lambda kv: kv[1].get("chv", "~")):
        cells = [sides.get(side, "-") for side in ("live", "persistent", "chv")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "virtchd logged (warnings and errors):", ""]
    lines += [f"- `{_clean(line)}`" for line in logged] or ["- nothing"]
    return "\n".join(lines) + "\n"


def _scenario_path(path: str) -> str:
    """``scenarios/...`` wherever the checkout is."""
    if path.startswith(f"{REPO_ROOT}/"):
        return os.path.relpath(path, REPO_ROOT)
    index = path.rfind("/scenarios/")
    return path[index + 1 :] if index >= 0 else _clean(path)


def _maps_text(step: Any) -> str:
    """`` (live: 02 interface ...; chv: 01 ..., 02 disk vda)`` after a failed step."""
    parts = []
    for side in ("live", "persistent", "chv"):
        for domain, slots in sorted(step.maps.get(side, {}).items()):
            if not slots:
                continue
            items = ", ".join(f"{bdf[5:]} {entry.device}" for bdf, entry in sorted(slots.items()))
            parts.append(f"{side} {domain}: {items}")
    return f" (slot maps after the step: {'; '.join(parts)})" if parts else ""


def outcome_table(run: RunResult) -> list[str]:
    """Markdown lines: the count of each outcome."""
    counts = run.counts()
    lines = ["| outcome | scenarios |", "|---|---|"]
    return lines + [f"| {k} | {counts.get(k, 0)} |" for k in (PASSED, FAILED, UNSUPPORTED, ERROR)]


def scenario_table(run: RunResult) -> list[str]:
    """Markdown lines: ``## Scenarios`` and one row per run, sorted by file and profile:
    its outcome, the first step that did not pass, and the evidence."""
    lines = [
        "## Scenarios",
        "",
        "| scenario | profile | outcome | step | evidence |",
        "|---|---|---|---|---|",
    ]
    for s in sorted(run.scenarios, key=lambda s: (s.file, s.profile)):
        step = next((st for st in s.steps if st.status not in (PASSED, SKIPPED)), None)
        where = f"{step.index}: `{_clean(step.text)}`" if step else ""
        if step is not None and step.violations:
            shown = sorted(
                (v for v in step.violations if v.get("expected") is not True),
                key=lambda v: _RULE_ORDER.get(str(v.get("rule")), 9),
            )
            evidence = "; ".join(_clean(str(v.get("message"))) for v in shown[:8])
            if len(shown) > 8:
                evidence += f"; and {len(shown) - 8} more"
        else:
            evidence = _clean(step.error if step and step.error else s.failure)
        if step is not None and step.maps:
            evidence += _maps_text(step)
        rel = _scenario_path(s.file)
        lines.append(
            f"| {_clean(s.name)} (`{rel}`) | {s.profile} | {s.status} | {where} | "
            f"{evidence.strip()} |"
        )
    return lines


def suite_markdown(run: RunResult, *, title: str, intro: str, chv_path: str | None = None) -> str:
    """A deterministic summary of a run (a committed baseline): ``title``, ``intro``, the
    outcome counts and the scenario table; ``chv_path`` is written ``$CHV_BINARY``."""
    lines = [f"# {title}", "", intro, "", *outcome_table(run), "", *scenario_table(run)]
    text = "\n".join(lines) + "\n"
    return text.replace(chv_path, "$CHV_BINARY") if chv_path else text


def conformance_markdown(
    run: RunResult,
    *,
    libvirt_version: str,
    start_path: StartPath | None = None,
    real_chv: str | None = None,
    chv_path: str | None = None,
) -> str:
    """The committed summary: per scenario its outcome and, for failures, the evidence,
    after the start path if given. ``real_chv``: the ``--version`` banner of the real
    ``cloud-hypervisor`` libvirt spawned (None: fakechv), found at ``chv_path`` (written
    ``$CHV_BINARY`` in the summary, which stays the same wherever the binary is)."""
    counts = run.counts()
    if real_chv is None:
        against, hypervisor, doc = "fakechv", "fakechv v53", "libvirt-11.3-conformance.md"
        command = f"--profile v53 --conformance docs/{doc}"
        generated = "Generated by `tox -e libvirt`"
        spawned = "fakechv as `cloud-hypervisor`"
        unsupported = "implement (device hotplug, migration); it is neither a pass nor a failure."
    else:
        version = real_chv.split()[-1]
        against = hypervisor = f"real {real_chv}"
        doc = f"libvirt-11.3-on-chv-{version}.md"
        command = f"--chv-binary $CHV_BINARY --conformance docs/{doc}"
        generated = "Generated by `tox -e chv`"
        spawned = f"an unmodified upstream `{real_chv}` as `cloud-hypervisor`"
        unsupported = (
            "implement (device hotplug, migration), or this host cannot do (a snapshot "
            "on nested KVM); it is neither a pass nor a failure."
        )
    lines = [
        f"# Stock libvirt {libvirt_version} (CH driver) against {against}: conformance",
        "",
        f"{generated} (`bdf-harness run scenarios --target libvirt "
        f"{command}`): every scenario of "
        "`scenarios/` run with the "
        f"`libvirt` target, libvirt {libvirt_version} built from Debian's source package by "
        f"`tools/build-libvirt.sh`, {spawned}. Do not edit by hand.",
        "",
        f"`unsupported`: the scenario needs something libvirt's CH driver does not {unsupported}",
        "",
        "| outcome | scenarios |",
        "|---|---|",
    ]
    for status in (PASSED, FAILED, UNSUPPORTED, ERROR):
        lines.append(f"| {status} | {counts.get(status, 0)} |")
    if start_path:
        lines += [
            "",
            "## The catalogue's default domain after define and start",
            "",
            f"`scenarios/domains/domain-chv.xml` (vda without an address, the NIC at slot "
            f"0x02), defined and started through libvirt {libvirt_version} on {hypervisor}:",
            "",
            start_path_table(start_path).rstrip("\n"),
        ]
    lines += ["", *scenario_table(run)]
    text = "\n".join(lines) + "\n"
    return text.replace(chv_path, "$CHV_BINARY") if chv_path else text
