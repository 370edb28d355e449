#!/usr/bin/env python3
"""Where the busy-GIL numbers of `python -m kpark bench` come from (docs/performance.md).

    python bench/busy_gil_windows.py [SECONDS_PER_SIDE] [SWITCH_INTERVAL_S]

Runs benchmarks 1 and 2 (kpark and their pure-threading baselines) while a
third thread runs pure-Python CPU work, for SECONDS_PER_SIDE each (default
10), in 50 ms windows, the sides taking turns in 1 s slices.  For each side
it prints the mean time per operation over the whole run (total time /
operations), the median window, and the share of windows in which an
operation took more than 1 ms on average: the "slow regime", where every
hand-off waits for the busy thread's switch interval.
"""
from __future__ import annotations

import statistics
import sys
import time
from typing import Dict, List

from kpark.bench import kpark_side as K
from kpark.bench import threading_side as T
from kpark.bench.workload import BusyGIL

WINDOW_S = 0.05
SLICE_S = 1.0


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    if len(sys.argv) > 2:
        sys.setswitchinterval(float(sys.argv[2]))
    groups = [
        ("ping-pong (µs per round trip)",
         [K.CompletionPingPong(), T.EventPingPong(), T.LockPingPong(), T.ConditionPingPong()]),
        ("park/unpark cycle (µs per cycle)",
         [K.KThreadParkCycle(), T.ConditionParkCycle(), T.TeardownSetupCycle()]),
    ]
    print(f"switch interval {sys.getswitchinterval() * 1e3:g} ms, {seconds:g} s per side, "
          f"{WINDOW_S * 1e3:g} ms windows")
    for title, sides in groups:
        windows: Dict[str, List[float]] = {w.label: [] for w in sides}
        total: Dict[str, List[float]] = {w.label: [0.0, 0.0] for w in sides}
        with BusyGIL():
            for w in sides:
                w.__enter__()
            try:
                for _ in range(int(seconds / SLICE_S)):
                    for w in sides:
                        end = time.perf_counter() + SLICE_S
                        while time.perf_counter() < end:
                            t0 = time.perf_counter()
                            n = 0
                            while time.perf_counter() - t0 < WINDOW_S:
                                w.run(1)
                                n += 1
                            dt = time.perf_counter() - t0
                            windows[w.label].append(dt / n)
                            total[w.label][0] += dt
                            total[w.label][1] += n
            finally:
                for w in sides:
                    w.__exit__(None, None, None)
        print(f"\n{title}")
        print(f"  {'side':<22} {'mean':>10} {'median window':>14} {'slow windows':>13}")
        for w in sides:
            ws = windows[w.label]
            mean = total[w.label][0] / total[w.label][1] * 1e6
            slow = sum(1 for x in ws if x > 1e-3) / len(ws) * 100
            print(f"  {w.label:<22} {mean:>10.1f} {statistics.median(ws) * 1e6:>14.1f} "
                  f"{slow:>12.0f}%")


if __name__ == "__main__":
    main()
