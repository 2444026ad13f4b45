"""The machine's load average, as every benchmark prints it beside its figures."""

from __future__ import annotations

import os

__all__ = ["load_average"]


def load_average() -> str:
    """``"0.52 0.61 0.40"`` (1, 5 and 15 minutes), or ``"unknown"`` where there is none."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - platforms without a load average
        return "unknown"
