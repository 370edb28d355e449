"""Turns results into rows: the JSON document, the table, the machine line.

JSON layout (schema 1; every key is always present, null where it does not
apply):

    {"schema": 1, "kpark": "0.1.0", "mode": "quick" | "full",
     "started": ISO time, "seconds": float,
     "machine": {"cpu_model", "cpus", "cpu_count", "python", "implementation",
                 "backend", "gil", "switch_interval_s", "spin_ns",
                 "gil_spin_ns", "kernel", "load_before", "load_after",
                 "other_cpu_percent"},
     "benchmarks": [{"name", "number", "title", "unit", "higher_is_better",
                     "kpark", "baselines": {label: value}, "best_baseline",
                     "ratio", "c_limit", "vs_c_limit", "target", "target_met",
                     "targets": [{"target", "value", "met"}], "note",
                     "detail": {...}}, ...]}

`ratio` is how many times better kpark is than the best baseline (> 1:
kpark wins), whatever the unit; `vs_c_limit` is kpark / C limit for time
units.  `target_met` is null for rows without targets.
"""
from __future__ import annotations

import os
import textwrap
import platform
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import kpark
from kpark._kcore import spin_budgets
from kpark.bench.runner import SpecResult
from kpark.bench.suite import Spec, Target

__all__ = ["CpuShare", "machine_info", "build_rows", "document", "format_table",
           "format_machine",
           "format_value", "ROW_KEYS"]

#: The keys every benchmark row carries, in order.
ROW_KEYS = ("name", "number", "title", "unit", "higher_is_better", "kpark", "baselines",
            "best_baseline", "ratio", "c_limit", "vs_c_limit", "target", "target_met",
            "targets", "note", "detail")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gil() -> str:
    probe = getattr(sys, "_is_gil_enabled", None)
    if probe is None:
        return "GIL"
    return "GIL" if probe() else "free-threaded"


def _loadavg() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


class CpuShare:
    """How much CPU other processes used while the benchmark ran.

    From /proc/stat (all CPUs' busy time) minus this process's own CPU time:
    a run is only as quiet as this number says.  None where /proc is missing.
    """

    def __init__(self) -> None:
        self.start = self._snapshot()

    @staticmethod
    def _snapshot() -> Optional[Tuple[float, float, float]]:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK")
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        busy = (sum(fields[:8]) - idle) / hz  # user..steal, without guest time
        t = os.times()
        return busy, t.user + t.system, time.monotonic()

    def other_percent(self) -> Optional[float]:
        """Percent of all allowed CPUs' time used by other processes since start."""
        end = self._snapshot()
        if self.start is None or end is None:
            return None
        busy = end[0] - self.start[0]
        own = end[1] - self.start[1]
        wall = end[2] - self.start[2]
        ncpu = os.cpu_count() or 1
        if wall <= 0:
            return None
        return round(max(0.0, busy - own) / (wall * ncpu) * 100, 1)


def machine_info() -> Dict[str, Any]:
    """Where the numbers come from."""
    spin_ns, gil_spin_ns = spin_budgets()
    return {
        "cpu_model": _cpu_model(),
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "backend": kpark.BACKEND,
        "gil": _gil(),
        "switch_interval_s": sys.getswitchinterval(),
        "spin_ns": spin_ns,
        "gil_spin_ns": gil_spin_ns,
        "kernel": platform.release(),
        "load_before": _loadavg(),
        "load_after": None,
        "other_cpu_percent": None,
    }


def _better(unit: str, a: float, b: float) -> float:
    """How many times `a` is better than `b` (> 1: a wins)."""
    if unit == "tasks/s":
        return a / b
    return b / a


def _ratio_spread(unit: str, case: Any, best: str) -> Dict[str, float]:
    """The ratio's p10..p90: kpark's p10/p90 against the best baseline's
    p90/p10 (the worst and the best pairing of the two sides' spreads)."""
    k = case.kpark.spread(unit)
    b = next(s for s in case.baselines if s.label == best).spread(unit)
    if unit == "tasks/s":           # higher is better
        lo, hi = _better(unit, k["p10"], b["p90"]), _better(unit, k["p90"], b["p10"])
    else:                           # lower is better
        lo, hi = _better(unit, k["p90"], b["p10"]), _better(unit, k["p10"], b["p90"])
    return {"p10": min(lo, hi), "p90": max(lo, hi)}


def _check(spec: Spec, t: Target, kpark_v: float, baselines: Dict[str, float],
           best: Optional[str], c_limit: Optional[float]) -> Dict[str, Any]:
    value: Optional[float] = None
    met: Optional[bool] = None
    if t.kind == "c_limit":
        if c_limit:
            value = kpark_v / c_limit
            met = value <= t.factor
    else:
        ref = t.ref or best
        if ref is not None and ref in baselines:
            value = _better(spec.unit, kpark_v, baselines[ref])
            met = value > 1 if t.factor == 1 else value >= t.factor
    return {"target": t.describe(), "value": value, "met": met}


def build_rows(results: List[SpecResult]) -> List[Dict[str, Any]]:
    """One JSON row per benchmark (keys: ROW_KEYS)."""
    rows = []
    for r in results:
        spec = r.spec
        kpark_v: Optional[float] = None
        baselines: Dict[str, float] = {}
        if r.cases:
            main = r.cases[-1]  # scaling: the ncpu case; others have one case
            kpark_v = main.kpark.value(spec.unit)
            baselines = {b.label: b.value(spec.unit) for b in main.baselines}
        best: Optional[str] = None
        if baselines:
            pick = max if spec.higher_is_better else min
            best = pick(baselines, key=lambda k: baselines[k])
        ratio = (_better(spec.unit, kpark_v, baselines[best])
                 if kpark_v is not None and best is not None else None)
        detail = dict(r.detail, seconds=round(r.seconds, 2))
        if ratio is not None:
            detail["ratio_spread"] = _ratio_spread(spec.unit, r.cases[-1], best)
        vs_c = (kpark_v / r.c_limit if kpark_v is not None and r.c_limit
                and not spec.higher_is_better else None)
        checks = ([_check(spec, t, kpark_v, baselines, best, r.c_limit)
                   for t in spec.targets] if kpark_v is not None else [])
        met: Optional[bool] = None
        if checks and all(c["met"] is not None for c in checks):
            met = all(c["met"] for c in checks)
        elif checks:
            met = False if any(c["met"] is False for c in checks) else None
        rows.append({
            "name": spec.name, "number": spec.number, "title": spec.title,
            "unit": spec.unit, "higher_is_better": spec.higher_is_better,
            "kpark": kpark_v, "baselines": baselines, "best_baseline": best,
            "ratio": ratio, "c_limit": r.c_limit, "vs_c_limit": vs_c,
            "target": ", ".join(t.describe() for t in spec.targets) or None,
            "target_met": met, "targets": checks, "note": spec.note,
            "detail": detail,
        })
    return rows


def document(results: List[SpecResult], mode: str, machine: Dict[str, Any],
             started: float, seconds: float,
             other_cpu_percent: Optional[float] = None) -> Dict[str, Any]:
    """The whole JSON document."""
    machine = dict(machine, load_after=_loadavg(), other_cpu_percent=other_cpu_percent)
    return {
        "schema": 1,
        "kpark": kpark.__version__,
        "mode": mode,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(seconds, 2),
        "machine": machine,
        "benchmarks": build_rows(results),
    }


# -- text --------------------------------------------------------------------------

def format_value(value: Optional[float], unit: str) -> str:
    """A value with its unit, scaled for reading (µs → ms, tasks/s → k/M)."""
    if value is None:
        return "—"
    if unit == "tasks/s":
        for scale, suffix in ((1e6, "M"), (1e3, "k")):
            if value >= scale:
                return f"{value / scale:.3g}{suffix}/s"
        return f"{value:.3g}/s"
    if unit == "µs" and value >= 1000:
        return f"{value / 1000:.3g} ms"
    if unit == "ns" and value >= 1000:
        return f"{value / 1000:.3g} µs"
    return f"{value:.3g} {unit}"


def _ratio(r: Optional[float]) -> str:
    if r is None:
        return "—"
    return f"{r:.3g}×" if r < 100 else f"{r:.0f}×"


def _table_rows(rows: List[Dict[str, Any]]) -> Tuple[List[str], List[List[str]]]:
    head = ["#", "benchmark", "kpark", "best baseline", "ratio", "C limit", "target"]
    body = []
    for row in rows:
        unit = row["unit"]
        best = row["best_baseline"]
        base = (f"{format_value(row['baselines'][best], unit)} ({best})"
                if best is not None else "—")
        if row["target_met"] is None:
            target = "—" if not row["targets"] else "n/a"
        else:
            missed = [c["target"] for c in row["targets"] if c["met"] is False]
            target = "met" if row["target_met"] else "missed: " + "; ".join(missed)
        body.append([row["number"], row["title"], format_value(row["kpark"], unit), base,
                     _ratio(row["ratio"]), format_value(row["c_limit"], unit), target])
    return head, body


def format_table(rows: List[Dict[str, Any]], width: Optional[int] = None) -> str:
    """The table `python -m kpark bench` prints, at most `width` columns wide
    where it can be (None: no limit).  Target texts that do not fit move to
    a legend below the table ("[1] missed: ..."), wrapped to `width`."""
    head, body = _table_rows(rows)
    right = {2, 3, 4, 5}
    legend: List[str] = []

    def widths_of(table: List[List[str]]) -> List[int]:
        return [max(len(r[i]) for r in table) for i in range(len(head))]

    def line(cells: List[str], widths: List[int]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    def total(widths: List[int]) -> int:
        return sum(widths) + 2 * (len(widths) - 1)

    widths = widths_of([head, *body])
    if width is not None and total(widths) > width:
        # First the target texts move to the legend ...
        room = max(len(head[-1]), 6, width - total(widths[:-1]) - 2)
        for r in body:
            if len(r[-1]) > room:
                legend.append(f"[{len(legend) + 1}] {r[1]}: {r[-1]}")
                r[-1] = f"[{len(legend)}]"
        widths = widths_of([head, *body])
        # ... then long titles are cut (the number names the row).
        over = total(widths) - width
        if over > 0:
            keep = max(len(head[1]), 12, widths[1] - over)
            for r in body:
                if len(r[1]) > keep:
                    r[1] = r[1][:keep - 1] + "…"
            widths = widths_of([head, *body])
    out = [line(head, widths), line(["-" * w for w in widths], widths)]
    out += [line(r, widths) for r in body]
    for note in legend:
        out += textwrap.wrap(note, width or 10 ** 6, subsequent_indent="    ")
    return "\n".join(out)


def format_machine(m: Dict[str, Any]) -> str:
    """One line naming the machine."""
    load = m.get("load_before")
    load_s = f", load {load[0]:.2f}" if load else ""
    other = m.get("other_cpu_percent")
    if other is not None:
        load_s += f", other processes {other:g}% CPU"
    return (f"{m['cpu_model']}, {m['cpus']} CPUs{load_s}; {m['implementation']} "
            f"{m['python']} ({m['gil']}, switch interval {m['switch_interval_s'] * 1e3:g} ms); "
            f"kpark {kpark.__version__}, {m['backend']} backend, spin {m['spin_ns']} ns")
