"""bench_compare: a child runs the code of the tree it is given, figures are read from the
benchmarks' own output, the table gives the ratio the right way round."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import bench_compare
from harness.bench_compare import BENCHMARKS, Benchmark, check_imports, ratio, run_in, table

ROOT = Path(__file__).resolve().parents[2]


def _probe(pattern: str = r"figure (\d+)") -> Benchmark:
    code = "import harness, pathlib; print('figure', len(pathlib.Path(harness.__file__).parts))"
    return Benchmark("probe", "probe", ("-c", code), pattern, "parts", True)


def test_a_child_imports_the_tree_it_runs_in(tmp_path: Path) -> None:
    fake = tmp_path / "tree"
    for package in ("fakechv", "harness"):
        (fake / package).mkdir(parents=True)
        (fake / package / "__init__.py").write_text("")
    check_imports(fake)  # the fake tree's packages, not the installed ones
    assert run_in(fake, _probe()) == len((fake / "harness" / "__init__.py").parts)
    check_imports(ROOT)


def test_a_tree_without_the_packages_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="imports"):
        check_imports(tmp_path)


def test_a_missing_figure_or_a_failed_child_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no figure"):
        run_in(ROOT, _probe(r"nothing (\d+)"))
    failing = Benchmark("fails", "fails", ("-c", "raise SystemExit(3)"), r"(\d+)", "", True)
    with pytest.raises(RuntimeError, match="exited 3"):
        run_in(ROOT, failing)


@pytest.mark.parametrize(
    ("name", "output", "figure"),
    [
        ("startup", "  python -m fakechv: median 104 ms (min 97 ms)\n", 104.0),
        ("suite", "run 1: ... 2.31 s wall\nbest: 2.30 s for the suite\n", 2.30),
        ("machine", "machine: 1978 steps 512.5 steps/s\n", 512.5),
        ("main-job", "main job: 2.21 s\n", 2.21),
    ],
)
def test_each_benchmark_reads_its_figure(name: str, output: str, figure: float) -> None:
    assert BENCHMARKS[name].figure(output) == figure


def test_the_main_job_benchmark_runs_the_command_with_its_reports() -> None:
    assert run_in(ROOT, BENCHMARKS["main-job"]) > 0


def test_the_ratio_says_how_many_times_better_after_is() -> None:
    time, rate = BENCHMARKS["suite"], BENCHMARKS["machine"]
    assert ratio(time, 4.0, 2.0) == 2.0
    assert ratio(rate, 400.0, 1200.0) == 3.0
    text = table([(time, 4.0, 2.0), (rate, 400.0, 1200.0)], "aaa", "bbb")
    assert "| in-process scenario suite, 2 jobs | 4 s | 2 s | x2.00 |" in text
    assert "x3.00" in text and "`aaa`" in text and "`bbb`" in text


def test_bad_options_exit_2_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_compare.main(["--base", "HEAD", "--only", "bogus"]) == 2
    assert "unknown benchmark(s) bogus" in capsys.readouterr().err
    assert bench_compare.main(["--base", "no-such-revision-here"]) == 2
    assert "cannot resolve 'no-such-revision-here'" in capsys.readouterr().err
