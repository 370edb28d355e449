"""Benchmark 3 (hotplug cycle) piece by piece, kpark and its baseline.

    python bench/hotplug_breakdown.py [cycles]

Prints the median of each step over `cycles` cycles (default 3000):
PerCPUExecutor offline(all) / online(all) / submit(noop).result(), and
ThreadPoolExecutor shutdown / re-creation / first submit(noop).result().
docs/performance.md quotes it.
"""
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter_ns

from kpark import PerCPUExecutor


def noop() -> None:
    pass


def median_us(xs: list) -> float:
    return statistics.median(xs) / 1000


def kpark_steps(cycles: int) -> list:
    ex = PerCPUExecutor()
    ex.submit(noop).result()
    cpus = list(ex.cpus)
    steps: list = [[], [], []]
    for _ in range(cycles):
        t0 = perf_counter_ns()
        ex.offline(cpus, force=True)
        t1 = perf_counter_ns()
        ex.online(cpus)
        t2 = perf_counter_ns()
        ex.submit(noop).result()
        t3 = perf_counter_ns()
        for s, d in zip(steps, (t1 - t0, t2 - t1, t3 - t2)):
            s.append(d)
    ex.shutdown()
    return [median_us(s) for s in steps]


def threadpool_steps(cycles: int, workers: int) -> list:
    ex = ThreadPoolExecutor(workers)
    ex.submit(noop).result()
    steps: list = [[], [], []]
    for _ in range(cycles):
        t0 = perf_counter_ns()
        ex.shutdown(wait=True)
        t1 = perf_counter_ns()
        ex = ThreadPoolExecutor(workers)
        t2 = perf_counter_ns()
        ex.submit(noop).result()
        t3 = perf_counter_ns()
        for s, d in zip(steps, (t1 - t0, t2 - t1, t3 - t2)):
            s.append(d)
    ex.shutdown()
    return [median_us(s) for s in steps]


def main() -> None:
    cycles = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    k = kpark_steps(cycles)
    t = threadpool_steps(max(1, cycles // 3), len(os.sched_getaffinity(0)))
    print(f"PerCPUExecutor      offline {k[0]:6.1f}  online {k[1]:6.1f}  "
          f"task {k[2]:6.1f}  sum {sum(k):6.1f} µs")
    print(f"ThreadPoolExecutor  shutdown {t[0]:5.1f}  create {t[1]:6.1f}  "
          f"task {t[2]:6.1f}  sum {sum(t):6.1f} µs")
    print(f"ratio of sums: {sum(t) / sum(k):.1f}x")


if __name__ == "__main__":
    main()
