"""A text table of one domain's BDFs as the live definition, the persistent
definition and CHV see them; the quickest way to eyeball "stable and in sync"."""

from __future__ import annotations

from harness.chv.info import chv_bdfs
from harness.chv.translate import chv_id
from harness.driver.daemon import Driver

__all__ = ["bdf_rows", "bdf_table"]


async def bdf_rows(driver: Driver, name: str) -> list[tuple[str, str, str, str]]:
    """(device, live BDF, persistent BDF, CHV BDF) per device, sorted by BDF; '-' = absent."""
    rec = driver.domains[name]
    info = await driver.chv_info(name)
    chv = dict(chv_bdfs(info)) if info is not None else {}
    rows: dict[tuple[str, str], list[str]] = {}
    labels: dict[tuple[str, str], str] = {}
    for side, dom in ((1, rec.live), (2, rec.persistent)):
        if dom is None:
            continue
        for dev in dom.devices():
            row = rows.setdefault(dev.key, ["", "-", "-", "-"])
            labels[dev.key] = dev.label
            if dev.address is not None:
                row[side] = dev.address.to_chv_bdf()
            if side == 1:
                row[3] = chv.pop(chv_id(dev, driver.caps), "-")
    out = [(labels[k], r[1], r[2], r[3]) for k, r in rows.items()]
    out += [(f"CHV device {cid}", "-", "-", bdf) for cid, bdf in chv.items()]

    def order(row: tuple[str, str, str, str]) -> tuple[str, str]:
        first = next((b for b in row[1:] if b != "-"), "~")
        return first, row[0]

    return sorted(out, key=order)


async def bdf_table(driver: Driver, name: str) -> str:
    rows = [("device", "live", "persistent", "CHV"), *await bdf_rows(driver, name)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
