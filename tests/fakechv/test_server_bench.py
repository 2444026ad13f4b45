"""fakechv.bench runs end to end (a few operations, no timing assertions)."""

from __future__ import annotations

import pytest

from fakechv import bench


def test_bench_counts_requests_per_phase(capsys: pytest.CaptureFixture[str]) -> None:
    results = bench.run_bench(profile="v52", count=4)
    assert [r.name for r in results] == ["vm.info", "vm.add-disk+remove-device"]
    assert [r.requests for r in results] == [4, 8]  # one request, then a pair per operation
    for r in results:
        assert len(r.latencies) == 4
        assert r.percentile(0.0) == min(r.latencies)
        assert r.percentile(1.0) == max(r.latencies)
        assert min(r.latencies) <= r.median <= max(r.latencies)


def test_bench_main_prints_a_line_per_phase(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--count", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("fakechv bench, profile v53")
    assert [line.split()[0] for line in out[1:]] == ["vm.info", "vm.add-disk+remove-device"]
    assert all("req/s" in line and "p99" in line for line in out[1:])


def test_bench_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench.main(["--count", "0"])
    assert exc.value.code == 2
    assert "--count 0" in capsys.readouterr().err
    assert bench.main(["--count", "1", "--profile", "v9"]) == 1
    assert "unknown fakechv profile 'v9'" in capsys.readouterr().err
