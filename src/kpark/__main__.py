"""`python -m kpark`: park and unpark one per-CPU KThread per CPU, and say what happened.

A short demonstration of the facility until the benchmark CLI lands: each
worker is created parked on its CPU (create_on_cpu), started by unpark(),
counts the passes of its loop, and is parked and unparked many times; the
table shows where each worker ran and how long a park/unpark round took.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Set

import kpark
from kpark import Completion, create_on_cpu, parkme, schedule, should_park, should_stop

ROUNDS = 2000


def _running_cpu() -> int:
    """The CPU the calling thread runs on (field 39 of /proc/thread-self/stat)."""
    with open("/proc/thread-self/stat") as f:
        stat = f.read()
    return int(stat.rsplit(")", 1)[1].split()[36])


class Worker:
    """State shared between a demo worker thread and the main thread."""

    def __init__(self) -> None:
        self.passes = 0
        self.cpus_seen: Set[int] = set()
        self.ack = Completion()

    def loop(self, _data: object) -> int:
        # The kernel-style thread loop: stop, park, work, sleep.
        while not should_stop():
            if should_park():
                parkme()
                continue
            self.passes += 1
            self.cpus_seen.add(_running_cpu())
            self.ack.complete()
            schedule()
        return self.passes


def main(argv: Optional[List[str]] = None) -> int:
    cpus = sorted(os.sched_getaffinity(0))
    print(f"kpark {kpark.__version__} ({kpark.BACKEND} backend), Python "
          f"{sys.version.split()[0]}, CPUs {cpus}")
    workers = {cpu: Worker() for cpu in cpus}
    threads = {cpu: create_on_cpu(workers[cpu].loop, None, cpu) for cpu in cpus}
    print(f"created {len(threads)} per-CPU threads, all parked: "
          f"{all(t.is_parked for t in threads.values())}")
    rounds: Dict[int, List[float]] = {cpu: [] for cpu in cpus}
    for _ in range(ROUNDS):
        for cpu, k in threads.items():
            t0 = time.perf_counter()
            k.unpark()
            workers[cpu].ack.wait()
            k.park()
            rounds[cpu].append(time.perf_counter() - t0)
    print(f"\n{'thread':<10} {'cpu':>3} {'passes':>7} {'ran on':>8} "
          f"{'median unpark→run→park':>24}")
    for cpu, k in threads.items():
        w = workers[cpu]
        med = statistics.median(rounds[cpu]) * 1e6
        print(f"{k.name:<10} {cpu:>3} {w.passes:>7} {str(sorted(w.cpus_seen)):>8} "
              f"{med:>21.1f} µs")
    results = {cpu: k.stop() for cpu, k in threads.items()}
    print(f"\nstopped every thread (kthread_stop returned the pass counts {results}); "
          f"alive: {sum(k.is_alive() for k in threads.values())}")
    print("`python -m kpark` will run the benchmark suite once it exists (issue 4).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
