"""The HTML run report: one self-contained page (inline CSS, a few lines of inline JS).

Top of the page, visible without scrolling: the counts per status (``#summary``)
and the failures box (``#failures``, one ``.failure`` per failed or errored
scenario with its failed step and a ``.violation`` row per violation). Below:
the table of scenarios (``#scenarios``) and one ``<details class="timeline">``
per scenario (open when it failed), where each step names its ``FILE:LINE``
and shows, for every domain and PCI segment (and bus), the slot map as a
32-cell grid for the live, persistent and CHV sides, with the cells of the BDFs
that differ between the sides marked ``diff`` (outlined) and a line naming what
each side has there.

The slot maps are keyed side -> domain key (``testvm``, ``src/testvm``) -> BDF
(``0000:00:04.0``, whose first part is the PCI segment); ``differences`` holds
``0000:00:04.0`` or ``KEY 0000:00:04.0`` (:func:`~harness.reports.wording.parse_difference`).

Every piece of text from the run (device names, messages, step text, API
bodies) is HTML-escaped. The inline script at the end only opens the timeline
a link points at and records layout facts on ``<body>`` as ``data-*``
attributes (viewport size, top of the first failure, number of failure rows)
so a headless browser's DOM dump can check what a reader sees first.
"""

from __future__ import annotations

import functools
import html
import json
import marshal
import re
from collections.abc import Iterable, Mapping
from typing import Any

from harness.reports.runjson import content_key
from harness.reports.wording import (
    STATUSES,
    difference_notes,
    failure_summary,
    format_seconds,
    norm_bdf,
    parse_difference,
    step_location,
    step_sides,
    theme_of,
    value_text,
    violation_bdf,
    violation_note,
)
from harness.scenario.results import (
    ERROR,
    FAILED,
    RunResult,
    ScenarioResult,
    SlotEntry,
    StepResult,
)

__all__ = ["DEVICE_CLASSES", "render_html"]

#: device classes with their own colour; anything else is drawn as "unknown"
DEVICE_CLASSES: dict[str, str] = {
    "disk": "#7fb3f5",
    "interface": "#8fd694",
    "rng": "#f6d55c",
    "filesystem": "#f4a261",
    "vsock": "#c8a2f0",
    "memballoon": "#8ed1d6",
    "watchdog": "#e5989b",
    "hostdev": "#c49a6c",
    "console": "#d6d68f",
    "pmem": "#9bc1bc",
    "vdpa": "#ffb4a2",
    "shmem": "#d7b9e6",
    "panic": "#ff7b7b",
    "unknown": "#c4c4c4",
}

SLOTS_PER_BUS = 32
_MAX_BODY_CHARS = 20_000
_BDF_RE = re.compile(
    r"^(?P<seg>[0-9a-f]{4}):(?P<bus>[0-9a-f]{2}):(?P<slot>[0-9a-f]{2})\.(?P<fn>[0-7])$"
)
#: where a device name may break across lines in a grid cell: after these
_BREAK_AFTER = re.compile(r"(?<=[^\s:\-_./@,=][:\-_./@,=])")


def _e(value: object) -> str:
    if type(value) is str and len(value) <= 80:  # names, sides, classes, BDFs: they repeat
        return _escape_short(value)
    return html.escape("" if value is None else str(value), quote=True)


@functools.lru_cache(maxsize=4096)
def _escape_short(text: str) -> str:
    return html.escape(text, quote=True)


def _cls_name(cls: str) -> str:
    return cls if cls in DEVICE_CLASSES else "unknown"


def _status_badge(status: str) -> str:
    return f'<span class="badge st-{_e(status)}">{_e(status)}</span>'


_CSS = """
*{box-sizing:border-box}
body{font:13px/1.35 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:8px 14px;
color:#1d1d1f;background:#fff}
h1{font-size:17px;margin:0 0 6px}
h2{font-size:15px;margin:14px 0 6px}
h3{font-size:14px;margin:0}
h4{font-size:12px;margin:6px 0 3px;color:#444}
code,pre{font:12px/1.3 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{white-space:pre-wrap;word-break:break-all;margin:0;max-height:240px;overflow:auto}
table{border-collapse:collapse}
th,td{border:1px solid #d0d0d0;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3}
.meta{color:#555;margin-bottom:6px;font-weight:normal}
.top{display:flex;gap:14px;align-items:flex-start;flex-wrap:wrap}
#summary td{text-align:right;font-variant-numeric:tabular-nums}
#summary td.target{text-align:left}
#summary th.n,#summary td.n{min-width:58px}
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:11px;font-weight:600;
color:#fff;background:#777}
.badge.st-passed{background:#2e7d32}.badge.st-failed{background:#c62828}
.badge.st-error{background:#e65100}.badge.st-unsupported{background:#546e7a}
.badge.st-skipped{background:#9e9e9e}
tr.row-failed td,tr.row-error td{background:#fff1f0}
#failures{border:2px solid #c62828;border-radius:6px;padding:6px 10px;margin:8px 0;
background:#fffafa;max-height:62vh;overflow:auto}
#failures.none{border-color:#2e7d32;background:#f5fbf5}
#failures h2{margin:0 0 4px;color:#c62828}
#failures.none h2{color:#2e7d32}
.failure{border-top:1px solid #f0c4c4;padding:4px 0}
.failure:first-of-type{border-top:none}
.failure .why{margin:2px 0}
.violations{margin:3px 0}
.violations td.bdf,.violations td.exp,.violations td.act{font-family:ui-monospace,monospace}
.violations td.act{color:#b71c1c;font-weight:600}
.diffs{color:#b71c1c}
#scenarios td.dur{text-align:right;font-variant-numeric:tabular-nums}
#scenarios td.first{max-width:520px}
.legend{display:flex;flex-wrap:wrap;gap:4px;margin:4px 0 8px}
.legend span{padding:1px 6px;border:1px solid #999;border-radius:3px;font-size:11px}
.legend .lg-diff{outline:3px solid #d50000;outline-offset:-2px;
background-image:repeating-linear-gradient(45deg,transparent 0 5px,rgba(213,0,0,.18) 5px 8px)}
details.timeline{border:1px solid #ccc;border-radius:5px;margin:6px 0;padding:3px 8px}
details.timeline[open]{padding-bottom:8px}
details.timeline>summary{cursor:pointer;font-weight:600}
.step{border-left:4px solid #2e7d32;margin:8px 0 0;padding:2px 0 2px 8px}
.step.st-failed{border-left-color:#c62828}
.step.st-error{border-left-color:#e65100}
.step.st-unsupported{border-left-color:#546e7a}.step.st-skipped{border-left-color:#9e9e9e}
.step-head{display:flex;gap:8px;align-items:baseline;flex-wrap:wrap}
.step-error{color:#b71c1c;font-weight:600;margin:2px 0}
.sides{display:flex;gap:12px;flex-wrap:wrap}
.side-map{min-width:390px}
.side-name{font-weight:600;font-size:11px;text-transform:uppercase;color:#555}
.grid{display:grid;grid-template-columns:repeat(8,47px);gap:2px}
.cell{height:46px;border:1px solid #bbb;border-radius:3px;padding:1px;overflow:hidden;
font-size:9px;line-height:1.15;font-stretch:condensed;background:#fafafa}
.cell::before{content:attr(data-slot);display:block;color:#333;
font-family:ui-monospace,monospace;font-size:9px;line-height:1.2;font-stretch:normal}
.cell .dev{display:block;overflow:hidden;max-height:3.45em;text-overflow:ellipsis;
overflow-wrap:normal;word-break:normal;hyphens:manual}
.cell.multi .dev{white-space:nowrap;max-height:1.15em}
.cell.empty{background:#fff;color:#aaa;border-style:dashed}
.hostbridge{background:#e3e3e3}
.cell.diff{outline:3px solid #d50000;outline-offset:-2px;
background-image:repeating-linear-gradient(45deg,transparent 0 5px,rgba(213,0,0,.18) 5px 8px)}
.absent{color:#888;font-style:italic;width:390px;padding:4px 0}
details.exchanges,details.changes{margin:4px 0}
details.exchanges>summary,details.changes>summary{cursor:pointer;color:#333}
.exch td{max-width:420px}
"""

_SCRIPT = """
(function(){
var b=document.body;
function openTarget(){var h=location.hash.slice(1);if(!h)return;
var t=document.getElementById(h);while(t){if(t.tagName==='DETAILS')t.open=true;t=t.parentElement;}}
window.addEventListener('hashchange',openTarget);openTarget();
var f=document.querySelectorAll('#failures .failure');
var first=f.length?f[0].getBoundingClientRect():null;
b.setAttribute('data-viewport-width',String(window.innerWidth));
b.setAttribute('data-viewport-height',String(window.innerHeight));
b.setAttribute('data-doc-width',String(document.documentElement.scrollWidth));
b.setAttribute('data-failure-rows',String(f.length));
b.setAttribute('data-violation-rows',
String(document.querySelectorAll('#failures .violation').length));
b.setAttribute('data-first-failure-top',first?String(Math.round(first.top)):'none');
b.setAttribute('data-first-failure-bottom',first?String(Math.round(first.bottom)):'none');
var s=document.getElementById('summary').getBoundingClientRect();
b.setAttribute('data-summary-top',String(Math.round(s.top)));
b.setAttribute('data-layout','done');
})();
"""


def _summary(run: RunResult) -> str:
    counts = run.counts()
    total = len(run.scenarios)
    attrs = " ".join(f'data-count-{st}="{counts.get(st, 0)}"' for st in STATUSES)
    head = "".join(f'<th class="n">{_status_badge(st)}</th>' for st in STATUSES)
    cells = "".join(f'<td class="n count-{st}">{counts.get(st, 0)}</td>' for st in STATUSES)
    verdict = "OK" if run.ok else "NOT OK"
    return (
        f'<table id="summary" {attrs} data-count-total="{total}" '
        f'data-ok="{"true" if run.ok else "false"}">'
        f"<tr>{head}<th>total</th><th>target</th><th>wall time</th><th>verdict</th></tr>"
        f'<tr>{cells}<td class="n count-total">{total}</td>'
        f'<td class="target">{_e(run.target)}</td>'
        f'<td class="wall">{_e(format_seconds(run.seconds))}</td>'
        f'<td class="target"><b>{verdict}</b></td></tr></table>'
    )


def _violations_table(violations: Iterable[Mapping[str, Any]]) -> str:
    rows = []
    for v in violations:
        text = violation_note(v)
        rows.append(
            f'<tr class="violation" data-device="{_e(v.get("device") or "")}" '
            f'data-side="{_e(v.get("side") or "")}">'
            f'<td class="rule">{_e(v.get("rule") or "")}</td>'
            f'<td class="device">{_e(v.get("device") or "")}</td>'
            f'<td class="bdf">{_e(violation_bdf(v))}</td>'
            f'<td class="side">{_e(v.get("side") or "")}</td>'
            f'<td class="exp">{_e(value_text(v.get("expected")))}</td>'
            f'<td class="act">{_e(value_text(v.get("actual")))}</td>'
            f'<td class="msg">{_e(text)}</td></tr>'
        )
    if not rows:
        return ""
    return (
        '<table class="violations"><tr><th>rule</th><th>device</th><th>BDF</th><th>side</th>'
        "<th>expected</th><th>actual</th><th>detail</th></tr>" + "".join(rows) + "</table>"
    )


def _diff_line(step: StepResult) -> str:
    if not step.differences:
        return ""
    notes = difference_notes(step)
    return f'<div class="diffs">differs between sides: {_e(", ".join(notes))}</div>'


def _location(file: str, step: StepResult, before: str = " ", after: str = "") -> str:
    """The step's ``FILE:LINE`` as ``<code class="where">``, between ``before`` and ``after``."""
    where = step_location(file, step)
    return f'{before}<code class="where">{_e(where)}</code>{after}' if where else ""


def _failures(run: RunResult, ids: Mapping[int, str]) -> str:
    failing = [(i, s) for i, s in enumerate(run.scenarios) if s.status in (FAILED, ERROR)]
    if not failing:
        return (
            '<section id="failures" class="none"><h2>No failures</h2>'
            f"<div>{len(run.scenarios)} scenario(s), none failed or errored.</div></section>"
        )
    out = [
        f'<section id="failures"><h2>FAILURES ({len(failing)})</h2>',
    ]
    for i, s in failing:
        step = s.failed_step
        out.append(
            f'<div class="failure" data-scenario="{_e(s.name)}" data-status="{_e(s.status)}">'
            f'<h3>{_status_badge(s.status)} <a href="#{ids[i]}">{_e(s.name)}</a> '
            f'<span class="meta">{_e(theme_of(s))} \u00b7 {_e(s.profile)} \u00b7 '
            f"{_e(s.file)}</span></h3>"
        )
        if step is not None:
            out.append(
                f'<div class="why">step <a href="#{ids[i]}-step-{step.index}">'
                f"#{step.index}</a>{_location(s.file, step, ' (', ')')} on {_e(step.host)}: "
                f"<code>{_e(step.text)}</code> {_status_badge(step.status)}</div>"
            )
            if step.error:
                out.append(f'<div class="step-error">{_e(step.error)}</div>')
            out.append(_violations_table(step.violations))
            out.append(_diff_line(step))
        else:
            out.append(f'<div class="step-error">{_e(failure_summary(s))}</div>')
        out.append("</div>")
    out.append("</section>")
    return "".join(out)


def _scenario_table(run: RunResult, ids: Mapping[int, str]) -> str:
    rows = []
    for i, s in enumerate(run.scenarios):
        rows.append(
            f'<tr class="scenario row-{_e(s.status)}" data-scenario="{_e(s.name)}" '
            f'data-status="{_e(s.status)}">'
            f"<td>{i + 1}</td>"
            f'<td class="name"><a href="#{ids[i]}">{_e(s.name)}</a></td>'
            f'<td class="theme">{_e(theme_of(s))}</td>'
            f'<td class="profile">{_e(s.profile)}</td>'
            f'<td class="status">{_status_badge(s.status)}</td>'
            f'<td class="dur">{_e(format_seconds(s.seconds))}</td>'
            f'<td class="first">{_e(failure_summary(s))}</td></tr>'
        )
    return (
        '<table id="scenarios"><tr><th>#</th><th>scenario</th><th>theme</th><th>profile</th>'
        "<th>status</th><th>duration</th><th>first failure</th></tr>" + "".join(rows) + "</table>"
    )


def _legend() -> str:
    items = "".join(f'<span class="c-{name}">{name}</span>' for name in DEVICE_CLASSES)
    return (
        f'<div class="legend" id="legend">{items}'
        '<span class="hostbridge">host bridge</span>'
        '<span class="lg-diff">differs between sides</span></div>'
    )


#: a grid: (domain key, PCI segment, bus), e.g. ("testvm", "0000", "00")
_Place = tuple[str, str, str]
#: a slot that differs: (domain key or None for the only domain, segment, bus, slot)
_DiffSlot = tuple[str | None, str, str, int]


@functools.lru_cache(maxsize=4096)  # a report has a few hundred distinct BDF keys
def _place_of(bdf: str) -> tuple[str, str, int, int] | None:
    """(segment, bus, slot, function) of a slot map's BDF key, or None if it is not a BDF."""
    m = _BDF_RE.match(norm_bdf(bdf) or "")
    return None if m is None else (m["seg"], m["bus"], int(m["slot"], 16), int(m["fn"]))


def _segments(step: StepResult) -> list[_Place]:
    """(domain key, segment, bus) of every grid to draw, in order.

    Every domain on any side has segment ``0000`` bus ``00``; other segments and
    buses when a side has a device there.
    """
    found: set[_Place] = set()
    for side in step_sides(step):
        for dom, slots in step.maps.get(side, {}).items():
            found.add((dom, "0000", "00"))
            for bdf in slots:
                at = _place_of(bdf)
                if at is not None:
                    found.add((dom, at[0], at[1]))
    return sorted(found)


def _diff_slots(step: StepResult) -> set[_DiffSlot]:
    """(domain key or None, segment, bus, slot) of every entry of ``differences``."""
    out: set[_DiffSlot] = set()
    for text in step.differences:
        parsed = parse_difference(text)
        m = _BDF_RE.match(parsed[1]) if parsed else None
        if parsed and m:
            out.add((parsed[0], m["seg"], m["bus"], int(m["slot"], 16)))
    return out


@functools.lru_cache(maxsize=4096)
def _dev_text(device: str) -> str:
    """A device name, escaped, that may break across lines only at spaces and separators."""
    return "<wbr>".join(_e(piece) for piece in _BREAK_AFTER.split(device))


def _grid(step: StepResult, side: str, place: _Place, diff: set[_DiffSlot]) -> str:
    dom, seg, bus = place
    doms = step.maps.get(side)
    if doms is None or dom not in doms:
        note = "not running" if side == "chv" else "no definition"
        return (
            f'<div class="side-map" data-side="{_e(side)}"><div class="side-name">{_e(side)}</div>'
            f'<div class="absent">{note}</div></div>'
        )
    here: list[_Cell] = []
    extra: list[tuple[str, SlotEntry]] = []
    for bdf, entry in doms[dom].items():
        at = _place_of(bdf)
        if at is None:
            if (seg, bus) == ("0000", "00"):  # shown once, under the first grid
                extra.append((bdf, entry))
            continue
        if at[0] == seg and at[1] == bus:
            here.append((at[2], at[3], bdf, entry.device, entry.cls, entry.alias))
    here.sort(key=lambda c: (c[0], c[1]))  # by slot, then function; stable otherwise
    #: the slots of this grid that differ, for this domain or for the only one
    hot = frozenset(s for d, sg, b, s in diff if (d is None or d == dom) and sg == seg and b == bus)
    try:
        cells = _cells(seg, bus, tuple(here), hot)
    except TypeError:  # a run.json read back with odd values (a list for an alias)
        cells = _cells.__wrapped__(seg, bus, tuple(here), hot)
    extra_html = "".join(
        f'<div class="extra">{_e(k)}: {_e(e.device)} ({_e(e.cls)})</div>' for k, e in extra
    )
    return (
        f'<div class="side-map" data-side="{_e(side)}"><div class="side-name">{_e(side)}</div>'
        f'<div class="grid">{cells}</div>{extra_html}</div>'
    )


#: one device of a grid: (slot, function, BDF key, device, class, alias)
_Cell = tuple[int, int, str, str, str, "str | None"]


@functools.lru_cache(maxsize=2048)  # steps repeat grids
def _cells(seg: str, bus: str, here: tuple[_Cell, ...], hot: frozenset[int]) -> str:
    """The 32 cells of one grid: ``here`` is its devices, sorted by slot and function."""
    by_slot: dict[int, list[_Cell]] = {}
    for cell in here:
        by_slot.setdefault(cell[0], []).append(cell)
    cells = []
    for slot in range(SLOTS_PER_BUS):
        entries = by_slot.get(slot)
        differs = slot in hot
        diff_cls = " diff" if differs else ""
        if not entries:
            if slot == 0 and bus == "00":
                cells.append(
                    f'<div class="cell hostbridge{diff_cls}" data-slot="00" '
                    f'title="{seg}:00:00.0 host bridge">'
                    '<span class="dev">host bridge</span></div>'
                )
            else:
                cells.append(f'<div class="cell empty{diff_cls}" data-slot="{slot:02x}"></div>')
            continue
        cls = _cls_name(entries[0][4])
        multi = " multi" if len(entries) > 1 else ""
        title = "\n".join(
            f"{bdf} {device} ({dev_cls})" + (f" alias {alias}" if alias else "")
            for _, _, bdf, device, dev_cls, alias in entries
        )
        devs = "".join(
            f'<span class="dev" data-bdf="{_e(bdf)}">'
            f"{'.' + str(fn) + ' ' if len(entries) > 1 or fn else ''}{_dev_text(device)}</span>"
            for _, fn, bdf, device, _, _ in entries
        )
        cells.append(
            f'<div class="cell dev-cell c-{cls}{multi}{diff_cls}" data-slot="{slot:02x}" '
            f'data-cls="{_e(cls)}" title="{_e(title)}">'
            f"{devs}</div>"
        )
    return "".join(cells)


def _body_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return _cut(value.decode("utf-8", "replace"))
    if isinstance(value, str):
        return _cut(value)
    key = content_key(value)  # a run's API bodies recur: each is written once
    if key is None:
        return _json_body(value)
    return _kept_json_body(key)


def _json_body(value: object) -> str:
    return _cut(json.dumps(value, indent=1, sort_keys=True, default=str))


@functools.lru_cache(maxsize=1024)
def _kept_json_body(key: bytes) -> str:
    """:func:`_json_body` of the value whose content key is ``key`` (it holds the value)."""
    return _json_body(marshal.loads(key))


def _cut(text: str) -> str:
    if len(text) > _MAX_BODY_CHARS:
        text = text[:_MAX_BODY_CHARS] + f"\n\u2026 ({len(text) - _MAX_BODY_CHARS} more chars)"
    return text


def _exchanges(step: StepResult) -> str:
    if not step.exchanges:
        return ""
    rows = []
    for x in step.exchanges:
        seconds = x.get("seconds")
        rows.append(
            f'<tr class="exchange"><td>{_e(x.get("method", ""))}</td>'
            f"<td><code>{_e(x.get('endpoint', ''))}</code></td>"
            f"<td>{_e(x.get('status', ''))}</td>"
            f"<td>{_e(format_seconds(seconds) if isinstance(seconds, (int, float)) else '')}</td>"
            f"<td><pre>{_e(_body_text(x.get('request')))}</pre></td>"
            f"<td><pre>{_e(_body_text(x.get('response')))}</pre></td></tr>"
        )
    return (
        f'<details class="exchanges"><summary>CHV exchanges ({len(step.exchanges)})</summary>'
        '<table class="exch"><tr><th>method</th><th>endpoint</th><th>status</th><th>time</th>'
        "<th>request</th><th>response</th></tr>" + "".join(rows) + "</table></details>"
    )


def _changes(step: StepResult) -> str:
    if not step.changes:
        return ""
    items = "".join(f"<li>{_e(c)}</li>" for c in step.changes)
    return (
        f'<details class="changes"><summary>definition changes ({len(step.changes)})</summary>'
        f"<ul>{items}</ul></details>"
    )


def _step(step: StepResult, sid: str, file: str) -> str:
    where = step_location(file, step)
    at = f" \u00b7{_location(file, step)}" if where else ""
    out = [
        f'<div class="step st-{_e(step.status)}" id="{sid}-step-{step.index}" '
        f'data-step="{step.index}" data-status="{_e(step.status)}" data-where="{_e(where)}">'
        f'<div class="step-head">{_status_badge(step.status)}<b>#{step.index}</b>'
        f"<code>{_e(step.text)}</code>"
        f'<span class="meta">{_e(step.host)} \u00b7 {_e(format_seconds(step.seconds))}'
        f"{at}</span>"
        "</div>"
    ]
    if step.error:
        out.append(f'<div class="step-error">{_e(step.error)}</div>')
    out.append(_violations_table(step.violations))
    out.append(_diff_line(step))
    diff = _diff_slots(step)
    segments = _segments(step)
    for place in segments:
        dom, seg, bus = place
        label = f"{dom} \u00b7 PCI segment {seg}" + (f" bus {bus}" if bus != "00" else "")
        out.append(
            f'<div class="segment" data-domain="{_e(dom)}" data-segment="{seg}" '
            f'data-bus="{bus}"><h4>{_e(label)}</h4><div class="sides">'
            + "".join(_grid(step, side, place, diff) for side in step_sides(step))
            + "</div></div>"
        )
    out.append(_exchanges(step))
    out.append(_changes(step))
    out.append("</div>")
    return "".join(out)


def _timeline(s: ScenarioResult, sid: str) -> str:
    is_open = " open" if s.status in (FAILED, ERROR) else ""
    head = (
        f'<details class="timeline" id="{sid}" data-scenario="{_e(s.name)}" '
        f'data-status="{_e(s.status)}"{is_open}><summary>{_status_badge(s.status)} '
        f"{_e(s.name)} "
        f'<span class="meta">{_e(theme_of(s))} \u00b7 {_e(s.profile)} \u00b7 {_e(s.target)} '
        f"\u00b7 {_e(format_seconds(s.seconds))}</span></summary>"
    )
    info = f'<div class="meta">file <code>{_e(s.file)}</code>'
    if s.source:
        info += f" \u00b7 source {_e(s.source)}"
    info += "</div>"
    first = failure_summary(s)
    if first:
        info += f'<div class="why">{_e(first)}</div>'
    steps = "".join(_step(st, sid, s.file) for st in s.steps) or '<div class="meta">no steps</div>'
    return head + info + steps + "</details>"


def _class_css() -> str:
    return "".join(f".c-{name}{{background:{color}}}" for name, color in DEVICE_CLASSES.items())


def render_html(run: RunResult) -> str:
    """The whole report page for ``run`` as one self-contained HTML document."""
    ids = {i: f"scn-{i + 1}" for i in range(len(run.scenarios))}
    counts = run.counts()
    title = (
        f"BDF scenarios: {counts.get(FAILED, 0)} failed, {counts.get(ERROR, 0)} error, "
        f"{len(run.scenarios)} total"
    )
    meta = f"target <b>{_e(run.target)}</b>"
    if run.started:
        meta += f" \u00b7 started {_e(run.started)}"
    meta += f" \u00b7 wall time {_e(format_seconds(run.seconds))}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}{_class_css()}</style></head>",
        f'<body data-ok="{"true" if run.ok else "false"}">',
        "<header><h1>PCI address (BDF) stability: scenario run</h1>",
        f'<div class="meta">{meta}</div>',
        _summary(run),
        "</header>",
        _failures(run, ids),
        "<h2>Scenarios</h2>",
        _scenario_table(run, ids),
        "<h2>Timelines</h2>",
        _legend(),
        "".join(_timeline(s, ids[i]) for i, s in enumerate(run.scenarios)),
        f"<script>{_SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
