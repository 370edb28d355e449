"""`python -m kpark bench`: the CLI, its JSON, the C-limit helper.

Fast smoke tests: one small benchmark in --quick mode, plus the pieces that
turn numbers into ratios and verdicts, checked on numbers made up here (so a
wrong direction or a wrong target check fails whatever the machine's speed).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from kpark.bench import cli, report, suite
from kpark.bench.runner import CaseResult, SideResult, SpecResult

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent
CHECK_FLOOR = REPO / "bench" / "check_floor.py"
CPUS = sorted(os.sched_getaffinity(0))


def _env() -> Dict[str, str]:
    # The subprocess imports the same kpark as this test run.
    env = dict(os.environ)
    import kpark
    src = str(Path(kpark.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ---------------------------------------------------------------- the command line

def test_quick_only_one_benchmark_writes_json_with_stable_keys(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "kpark", "bench", "--quick", "--only", "flag_ops",
         "--json", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=100, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert "flag ops" in proc.stdout
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["schema"] == 1 and doc["mode"] == "quick"
    for key in ("cpu_model", "cpus", "python", "backend", "gil", "switch_interval_s"):
        assert key in doc["machine"], key
    assert doc["machine"]["gil"] in ("GIL", "free-threaded")
    assert doc["machine"]["cpus"] == len(CPUS)
    (row,) = doc["benchmarks"]
    assert tuple(row) == report.ROW_KEYS
    assert row["name"] == "flag_ops" and row["unit"] == "ns"
    assert set(row["baselines"]) == {"Lock + int (methods)", "Lock + int (inline)"}
    assert row["kpark"] > 0 and all(v > 0 for v in row["baselines"].values())
    assert row["best_baseline"] == min(row["baselines"], key=row["baselines"].get)
    expected = row["baselines"][row["best_baseline"]] / row["kpark"]
    assert row["ratio"] == pytest.approx(expected)
    assert row["c_limit"] is None and isinstance(row["target_met"], bool)
    assert row["detail"]["spread"]["kpark.Flags"]["samples"] >= 5


def test_no_arguments_means_bench_quick(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: List[Dict[str, Any]] = []
    monkeypatch.setattr(cli, "bench", lambda **kw: calls.append(kw) or 0)
    assert cli.main([]) == 0
    assert calls == [{"quick": True}]
    calls.clear()
    assert cli.main(["bench", "--only", "flag_ops", "--json", "f.json"]) == 0
    assert calls[0]["quick"] is False and calls[0]["only"] == ["flag_ops"]
    assert calls[0]["json_path"] == "f.json" and calls[0]["plot_path"] is None


def test_plot_without_matplotlib_says_how_to_install_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now fails

    def must_not_run(*a: Any, **k: Any) -> Any:
        raise AssertionError("the suite ran although --plot cannot be honoured")

    monkeypatch.setattr(cli, "run_specs", must_not_run)
    png = tmp_path / "chart.png"
    assert cli.main(["bench", "--quick", "--only", "flag_ops", "--plot", str(png)]) == 2
    err = capsys.readouterr().err
    assert "matplotlib" in err and "pip install 'kpark[plot]'" in err
    assert not png.exists()


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from kpark.bench import plot
    doc = {"kpark": "0", "mode": "quick",
           "machine": {"cpu_model": "CPU", "cpus": 2, "python": "3", "gil": "GIL",
                       "backend": "futex"},
           "benchmarks": report.build_rows(_fake_results())}
    png = tmp_path / "chart.png"
    plot.plot_ratios(doc, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_benchmark_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--only", "no_such_thing"]) == 2
    err = capsys.readouterr().err
    assert "no_such_thing" in err and "wake_ping_pong" in err


def test_only_accepts_names_numbers_prefixes_and_commas() -> None:
    names = lambda only: [s.name for s in suite.select(only)]  # noqa: E731
    assert names(None) == suite.spec_names()
    assert names(["flag_ops"]) == ["flag_ops"]
    assert names(["1", "8a"]) == ["wake_ping_pong", "busy_gil_ping_pong"]
    assert names(["busy_gil"]) == ["busy_gil_ping_pong", "busy_gil_park_cycle"]
    assert names(["map_throughput,wake_ping_pong"]) == ["wake_ping_pong", "map_throughput"]
    assert suite.spec_names()[:3] == ["wake_ping_pong", "park_unpark_cycle", "hotplug_cycle"]


# ---------------------------------------------------------------- ratios and targets

def _side(label: str, seconds: float, ops: int = 1) -> SideResult:
    return SideResult(label, [seconds * f for f in (0.9, 1.0, 1.0, 1.1, 5.0)], 10, ops)


def _fake_results() -> List[SpecResult]:
    specs = {s.name: s for s in suite.SPECS}
    ping = SpecResult(specs["wake_ping_pong"], [CaseResult(
        "", _side("kpark.Completion", 1e-6),
        [_side("threading.Event", 5e-6), _side("threading.Lock", 1.5e-6),
         _side("threading.Condition", 9e-6)])], c_limit=0.4)
    mapped = SpecResult(specs["map_throughput"], [CaseResult(
        "", _side("PerCPUExecutor", 0.01, ops=1000),
        [_side("ThreadPoolExecutor", 0.05, ops=1000)])])
    limit = SpecResult(specs["c_limit"], [], c_limit=0.1)
    return [ping, mapped, limit]


def test_ratios_point_the_right_way_for_times_and_rates() -> None:
    ping, mapped, limit = report.build_rows(_fake_results())
    assert ping["kpark"] == pytest.approx(1.0) and ping["unit"] == "µs"
    assert ping["best_baseline"] == "threading.Lock"
    assert ping["ratio"] == pytest.approx(1.5)
    assert ping["vs_c_limit"] == pytest.approx(2.5)
    checks = {c["target"]: c for c in ping["targets"]}
    assert checks[">= 4x threading.Event"]["met"] is True
    assert checks[">= 2x threading.Lock"]["met"] is False
    assert checks["<= 2x C limit"]["met"] is False
    assert ping["target_met"] is False
    assert mapped["kpark"] == pytest.approx(100_000) and mapped["unit"] == "tasks/s"
    assert mapped["best_baseline"] == "ThreadPoolExecutor"
    assert mapped["ratio"] == pytest.approx(5.0) and mapped["target_met"] is True
    assert limit["kpark"] is None and limit["ratio"] is None and limit["c_limit"] == 0.1
    assert limit["target_met"] is None
    text = report.format_table([ping, mapped, limit])
    assert "1.5×" in text and "missed" in text and "met" in text


def test_table_scales_units() -> None:
    assert report.format_value(0.2853, "µs") == "0.285 µs"
    assert report.format_value(10200, "µs") == "10.2 ms"
    assert report.format_value(5_850_000, "tasks/s") == "5.85M/s"
    assert report.format_value(58.8, "ns") == "58.8 ns"
    assert report.format_value(None, "µs") == "—"


def test_ratio_spread_brackets_the_ratio() -> None:
    ping, mapped, _ = report.build_rows(_fake_results())
    for row in (ping, mapped):
        s = row["detail"]["ratio_spread"]
        assert s["p10"] <= row["ratio"] <= s["p90"], (row["name"], s)
    # _side's samples: p10 = 0.9x, p90 = 5x the median; time units: the
    # ratio is baseline / kpark, worst pairing kpark p90 vs baseline p10.
    assert ping["detail"]["ratio_spread"]["p10"] == pytest.approx(1.5 * 0.9 / 5.0)
    assert ping["detail"]["ratio_spread"]["p90"] == pytest.approx(1.5 * 5.0 / 0.9)


# ---------------------------------------------------------------- fitting a terminal

def _wide_rows() -> List[Dict[str, Any]]:
    rows = report.build_rows(_fake_results())
    rows[0]["target_met"] = False
    rows[0]["targets"] = [{"target": f">= {n}x threading.Something.very_long_name", "met": False}
                          for n in range(6)]
    return rows


@pytest.mark.parametrize("width", [80, 100])
def test_table_fits_the_terminal_with_a_legend(width: int) -> None:
    text = report.format_table(_wide_rows(), width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width, text
    assert "[1]" in lines[2]                          # the row points to its note
    legend = "\n".join(lines[2 + 3:])
    assert "[1] wake ping-pong: missed: >= 0x threading" in legend.replace("\n    ", " ")
    # Without a width the target stays in its column.
    assert "[1]" not in report.format_table(_wide_rows())


def test_progress_line_never_wraps(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("COLUMNS", "50")
    out = Tty()
    bar = cli._ProgressLine(out)
    bar(0.5, "x" * 200)
    bar(0.75, "short")
    bar.close()
    updates = out.getvalue().split("\r")
    assert max(len(u) for u in updates) <= 49, updates
    assert updates[-1] == "" and updates[-2].strip() == ""   # cleared at the end


def test_floor_line_figures_divide_as_printed() -> None:
    rows = [{"name": "c_limit", "detail": {"gil_floor": 51.234, "gil_floor_c_beside": 3.2468,
                                           "gil_floor_vs_c_limit": 15.78}}]
    (line,) = cli._floor_lines(rows)
    import re
    floor, ratio, c = (float(x) for x in re.match(
        r"GIL floor: ([\d.]+) µs per round trip = ([\d.]+)x the ([\d.]+) µs C", line).groups())
    assert ratio == pytest.approx(floor / c, rel=5e-3), line


def test_version_and_help_explain_the_terms(capsys: pytest.CaptureFixture[str]) -> None:
    import kpark
    for argv in (["--version"], ["bench", "--version"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 0
        assert capsys.readouterr().out.strip() == (
            f"kpark {kpark.__version__} ({kpark.BACKEND} backend)")
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    text = capsys.readouterr().out
    for term in ("C limit", "GIL floor", "spin", "ratio", "noisy"):
        assert f"\n  {term}" in text, term
    for spec in suite.SPECS:
        assert f" {spec.name}: " in text, spec.name


def test_plot_marks_a_noisy_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    from kpark.bench import plot
    import matplotlib.axes
    titles: List[str] = []
    bars: List[Any] = []
    orig_title, orig_barh = matplotlib.axes.Axes.set_title, matplotlib.axes.Axes.barh
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda self, t, **k: titles.append(t) or orig_title(self, t, **k))
    monkeypatch.setattr(matplotlib.axes.Axes, "barh",
                        lambda self, y, w, **k: bars.append((list(w), k.get("left")))
                        or orig_barh(self, y, w, **k))
    doc = {"kpark": "0", "mode": "quick",
           "machine": {"cpu_model": "CPU", "cpus": 2, "python": "3", "gil": "GIL",
                       "backend": "futex", "other_cpu_percent": 40.0},
           "benchmarks": report.build_rows(_fake_results())}
    plot.plot_ratios(doc, str(tmp_path / "chart.png"))
    assert "NOISY" in titles[-1]
    widths, left = bars[-1]
    assert left == 1.0                                  # bars start at 1x
    ratios = sorted(r["ratio"] for r in doc["benchmarks"] if r["ratio"] is not None)
    assert sorted(w + 1.0 for w in widths) == pytest.approx(ratios)
    doc["machine"]["other_cpu_percent"] = 1.0
    plot.plot_ratios(doc, str(tmp_path / "chart.png"))
    assert "NOISY" not in titles[-1]


# ---------------------------------------------------------------- the CI floor

def _floor(tmp_path: Path, rows: List[Dict[str, Any]]) -> "subprocess.CompletedProcess[str]":
    f = tmp_path / "b.json"
    f.write_text(json.dumps({"schema": 1, "benchmarks": rows}))
    return subprocess.run([sys.executable, str(CHECK_FLOOR), str(f)],
                          capture_output=True, text=True, timeout=30)


def test_check_floor_passes_and_fails_on_the_three_ratios(tmp_path: Path) -> None:
    rows = [{"name": n, "ratio": 3.0, "best_baseline": "b"}
            for n in ("wake_ping_pong", "park_unpark_cycle", "hotplug_cycle", "flag_ops")]
    ok = _floor(tmp_path, rows)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    rows[2]["ratio"] = 0.8
    rows[3]["ratio"] = 0.1  # not one of the three: ignored
    bad = _floor(tmp_path, rows)
    assert bad.returncode == 1
    assert "hotplug_cycle" in bad.stderr and "0.8" in bad.stderr
    assert "flag_ops" not in bad.stderr
    missing = _floor(tmp_path, rows[:1])
    assert missing.returncode == 1 and "park_unpark_cycle" in missing.stderr


# ---------------------------------------------------------------- the C limit

@pytest.fixture(scope="module")
def limit() -> Any:
    from kpark.bench import _limit
    return _limit


def test_c_pingpong_returns_sane_numbers(limit: Any) -> None:
    samples = limit.pingpong(20, 200, 100)
    assert len(samples) == 20 and all(isinstance(s, float) for s in samples)
    med = statistics.median(samples)
    # A round trip is two cache-line hand-offs at best, and even a shared,
    # sleeping CPU does it well within a millisecond.
    assert 5e-9 < med < 1e-3, med
    assert limit.default_spin_ns() == (0 if len(CPUS) < 2 else
                                       int(os.environ.get("KPARK_SPIN_NS", 20000)))
    no_spin = limit.pingpong(5, 20, 10, spin_ns=0)  # every wait sleeps in the kernel
    assert len(no_spin) == 5 and all(0 < s < 0.1 for s in no_spin)
    with pytest.raises(ValueError):
        limit.pingpong(0, 10)
    with pytest.raises(ValueError):
        limit.pingpong(1, 0)
    assert limit.BACKEND in ("futex", "pthread")


@pytest.mark.skipif(len(CPUS) < 2, reason="pinning the two threads apart needs 2 CPUs")
def test_c_pingpong_pinned_to_two_cpus(limit: Any) -> None:
    samples = limit.pingpong(10, 200, 100, cpus=(CPUS[0], CPUS[1]))
    assert 5e-9 < statistics.median(samples) < 1e-3
    assert os.sched_getaffinity(0) == set(CPUS)  # the caller's affinity is restored
    with pytest.raises(OSError):
        limit.pingpong(1, 1, 0, cpus=(CPUS[0], 100_000))  # no such CPU for the peer


def test_gil_floor_returns_sane_numbers(limit: Any) -> None:
    samples = limit.gil_pingpong(10, 100, 50)
    assert len(samples) == 10
    assert 5e-9 < statistics.median(samples) < 0.1
