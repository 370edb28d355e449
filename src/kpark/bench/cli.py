"""`python -m kpark bench`: run the suite, print the table, write JSON/PNG."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
import time
from typing import List, Optional, TextIO

import kpark
from kpark.bench import plot as _plot
from kpark.bench.report import (CpuShare, document, format_machine, format_table,
                                machine_info)
from kpark.bench.runner import run_specs
from kpark.bench.suite import SPECS, select

__all__ = ["build_parser", "main", "bench"]

#: Other processes' CPU share (percent) above which a run is flagged as noisy.
NOISY_PERCENT = _plot.NOISY_PERCENT


#: What each benchmark measures, for --help (by Spec.name; others show their title).
EXPLAIN = {
    "wake_ping_pong": "two threads hand a token back and forth: KThread wake()/"
                      "schedule() against threading.Event/Condition",
    "park_unpark_cycle": "park() then unpark() of a running thread, a full cycle",
    "hotplug_cycle": "a CPU's worker taken offline and back online "
                     "(PerCPUExecutor) against re-creating a ThreadPoolExecutor",
    "submit_latency": "submit() of an empty task to its result",
    "map_throughput": "map() of small tasks, tasks per second",
    "flag_ops": "one atomic bit operation (Flags) against a Lock-guarded int",
    "gil_free_scaling": "tasks that drop the GIL, on every CPU, tasks per second",
    "busy_gil_ping_pong": "the wake ping-pong while another thread runs pure-Python code",
    "busy_gil_park_cycle": "the park/unpark cycle while another thread runs Python code",
    "c_limit": "the C ping-pong itself: a number to compare with, not a contest",
}

TERMS = """\
terms:
  kpark, best baseline   medians of the samples; the baseline is the best of
                         the pure-threading ways to do the same thing
  ratio                  times better than that baseline (> 1: kpark wins)
  C limit                the same hand-off done in C between two pthreads,
                         with kpark's futex protocol and spin, and no Python
                         and no GIL: what the machine can do
  GIL floor              that hand-off between two Python threads with no
                         bytecode at all: what moving the GIL alone costs,
                         shown with the C figure measured beside it
  spin                   how long a waiter spins before it sleeps in the kernel
                         (KPARK_SPIN_NS, default 20000 ns; 0 on one CPU)
  noisy                  other processes used a tenth of the CPUs or more
                         while the run measured (its numbers are not a quiet
                         machine's)"""


def _help_width() -> int:
    return max(40, min(shutil.get_terminal_size().columns, 100) - 2)


def _epilog() -> str:
    width = _help_width()
    lines = ["benchmarks (--only takes the name, a prefix or the number):"]
    for s in SPECS:
        text = EXPLAIN.get(s.name) or s.note or s.title
        lines += textwrap.wrap(f"{s.number:>3} {s.name}: {text}", width,
                               subsequent_indent="      ")
    return "\n".join(lines) + "\n\n" + TERMS


def build_parser() -> argparse.ArgumentParser:
    version = f"kpark {kpark.__version__} ({kpark.BACKEND} backend)"
    p = argparse.ArgumentParser(
        prog="python -m kpark",
        description="kpark: the kernel's kthread park/unpark for Python threads. "
                    "With no command, runs `bench --quick`.")
    p.add_argument("--version", action="version", version=version)
    sub = p.add_subparsers(dest="command")
    b = sub.add_parser(
        "bench", help="benchmark kpark against pure threading",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Run kpark and its pure-threading baselines side by side in this process and "
            "print medians and ratios (ratio > 1: kpark is faster).", _help_width()),
        epilog=_epilog())
    b.add_argument("--version", action="version", version=version)
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


def _columns() -> int:
    """The terminal's width (COLUMNS, else the terminal's, else 80)."""
    return shutil.get_terminal_size((80, 24)).columns


class _ProgressLine:
    """A one-line progress bar on stderr (one line per update when not a terminal).

    On a terminal the line is cut to one column less than its width, so an
    update never wraps and `\r` rewrites it in place.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.shown = 0

    def __call__(self, fraction: float, text: str) -> None:
        bar = 20
        fill = int(round(fraction * bar))
        line = f"[{'#' * fill}{'.' * (bar - fill)}] {fraction * 100:3.0f}% {text}"
        if self.tty:
            line = line[:max(10, _columns() - 1)]
            self.out.write("\r" + line.ljust(self.shown))
            self.shown = len(line)
        elif text.endswith(": done"):
            self.out.write(line + "\n")  # a log, not a terminal: one line per benchmark
        self.out.flush()

    def close(self) -> None:
        if self.tty and self.shown:
            self.out.write("\r" + " " * self.shown + "\r")
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
    width = _columns() if out.isatty() else None

    def say(text: str, stream: TextIO = out) -> None:
        w = _columns() if stream.isatty() else None
        print("\n".join(textwrap.wrap(text, w, subsequent_indent="  ")) if w else text,
              file=stream)

    say(f"kpark bench ({doc['mode']}, {doc['seconds']:.1f} s) on "
        f"{format_machine(doc['machine'])}")
    print(format_table(doc["benchmarks"], width), file=out)
    for text in ("ratio: times better than the best pure-threading baseline (> 1: kpark "
                 "wins); C limit: the same hand-off in C, no Python, no GIL "
                 "(`python -m kpark bench --help` explains each benchmark and term).",
                 *_floor_lines(doc["benchmarks"])):
        say(text)
    other = doc["machine"]["other_cpu_percent"]
    if other is not None and other >= NOISY_PERCENT:
        say(f"warning: other processes used {other:g}% of the CPUs during this run; "
            "its numbers are not those of a quiet machine", err)
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


def _floor_lines(rows: List[dict]) -> List[str]:
    """The GIL floor line: its figures as printed divide (floor / C = ratio)."""
    out = []
    for row in rows:
        d = row["detail"] if row["name"] == "c_limit" else {}
        floor, c = d.get("gil_floor"), d.get("gil_floor_c_beside")
        if floor is not None and c:
            f_s, c_s = f"{floor:.3g}", f"{c:.3g}"
            out.append(f"GIL floor: {f_s} µs per round trip = {float(f_s) / float(c_s):.3g}x "
                       f"the {c_s} µs C ping-pong measured beside it (the same hand-off "
                       "between two Python threads, no bytecode: what moving the GIL "
                       "alone costs).")
    return out


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        return bench(quick=True)
    return bench(quick=args.quick, json_path=args.json, plot_path=args.plot,
                 only=args.only, progress=not args.no_progress)
