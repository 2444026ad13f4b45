"""The README shows the tour's real output: run it and compare."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_tour_output_is_what_the_readme_shows() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "tour.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "violations: 0" in out
    assert out.count("violations: 0") == 2
    readme = (ROOT / "README.md").read_text()
    assert out.strip() in readme, "README.md's tour output is stale: rerun examples/tour.py"
