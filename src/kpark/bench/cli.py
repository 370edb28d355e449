"""`python -m kpark bench`: run the suite, print the table, write JSON/PNG."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional, TextIO

from kpark.bench import plot as _plot
from kpark.bench.report import (CpuShare, document, format_machine, format_table,
                                machine_info)
from kpark.bench.runner import run_specs
from kpark.bench.suite import SPECS, select

__all__ = ["build_parser", "main", "bench"]

#: Other processes' CPU share (percent) above which a run is flagged as noisy.
NOISY_PERCENT = 10.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m kpark",
        description="kpark: the kernel's kthread park/unpark for Python threads. "
                    "With no command, runs `bench --quick`.")
    sub = p.add_subparsers(dest="command")
    b = sub.add_parser(
        "bench", help="benchmark kpark against pure threading",
        description="Run kpark and its pure-threading baselines side by side in this "
                    "process and print medians and ratios (ratio > 1: kpark is faster).",
        epilog="benchmarks: " + ", ".join(f"{s.number} {s.name}" for s in SPECS))
    b.add_argument("--quick", action="store_true",
                   help="short run (under 30 s on 2 CPUs), fewer samples and items")
    b.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE ('-': stdout)")
    b.add_argument("--plot", metavar="FILE.png",
                   help="write a bar chart of the ratios (needs matplotlib: kpark[plot])")
    b.add_argument("--only", metavar="NAME", action="append",
                   help="run only these benchmarks (name, prefix or number; "
                        "repeat or separate with commas)")
    b.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    return p


class _ProgressLine:
    """A one-line progress bar on stderr (one line per update when not a terminal)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last = ""

    def __call__(self, fraction: float, text: str) -> None:
        width = 24
        fill = int(round(fraction * width))
        line = f"[{'#' * fill}{'.' * (width - fill)}] {fraction * 100:3.0f}% {text}"
        if self.tty:
            self.out.write("\r" + line[:110].ljust(len(self.last[:110])))
        elif text.endswith(": done"):
            self.out.write(line + "\n")  # a log, not a terminal: one line per benchmark
        self.out.flush()
        self.last = line

    def close(self) -> None:
        if self.tty and self.last:
            self.out.write("\r" + " " * len(self.last[:110]) + "\r")
            self.out.flush()


def bench(quick: bool = False, json_path: Optional[str] = None,
          plot_path: Optional[str] = None, only: Optional[List[str]] = None,
          progress: bool = True, out: Optional[TextIO] = None,
          err: Optional[TextIO] = None) -> int:
    """Run the suite; return the exit status (2 for a usage problem).

    Prints to `out`/`err` (default: sys.stdout/sys.stderr at call time).
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        specs = select(only)
    except ValueError as exc:
        print(f"python -m kpark bench: {exc}", file=err)
        return 2
    if plot_path is not None:
        try:
            _plot.check_available()
        except _plot.PlotUnavailable as exc:
            print(f"python -m kpark bench: {exc}", file=err)
            return 2
    machine = machine_info()
    started = time.time()
    share = CpuShare()
    t0 = time.perf_counter()
    bar = _ProgressLine(err) if progress else None
    try:
        results = run_specs(specs, quick, bar)
    finally:
        if bar is not None:
            bar.close()
    doc = document(results, "quick" if quick else "full", machine, started,
                   time.perf_counter() - t0, share.other_percent())
    print(f"kpark bench ({doc['mode']}, {doc['seconds']:.1f} s) on "
          f"{format_machine(doc['machine'])}", file=out)
    print(format_table(doc["benchmarks"]), file=out)
    print("ratio: times better than the best pure-threading baseline (> 1: kpark wins); "
          "C limit: the same hand-off in C, no Python, no GIL.", file=out)
    for row in doc["benchmarks"]:
        floor = row["detail"].get("gil_floor") if row["name"] == "c_limit" else None
        ratio = row["detail"].get("gil_floor_vs_c_limit")
        if floor is not None and ratio is not None:
            print(f"GIL floor: {floor:.3g} µs per round trip = {ratio:.3g}x "
                  "the C limit measured beside it (the same hand-off between two Python "
                  "threads, no bytecode: what moving the GIL alone costs).", file=out)
    other = doc["machine"]["other_cpu_percent"]
    if other is not None and other >= NOISY_PERCENT:
        print(f"warning: other processes used {other:g}% of the CPUs during this run; "
              "its numbers are not those of a quiet machine", file=err)
    if json_path is not None:
        text = json.dumps(doc, indent=2, ensure_ascii=False)
        if json_path == "-":
            print(text, file=out)
        else:
            with open(json_path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
    if plot_path is not None:
        _plot.plot_ratios(doc, plot_path)
        print(f"chart written to {plot_path}", file=out)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        return bench(quick=True)
    return bench(quick=args.quick, json_path=args.json, plot_path=args.plot,
                 only=args.only, progress=not args.no_progress)
