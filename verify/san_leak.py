"""Leak workload for verify/sanitize.sh leak: CYCLES KThread life cycles.

    python verify/san_leak.py [CYCLES]        (default 10000)

Each cycle creates a KThread and runs it through park / unpark / stop,
alternating three paths: start() then park() in parkme(); park() before
threadfn ran (unpark() starts it); and a per-CPU thread from
create_on_cpu() (bound, parked; unpark() starts it on its CPU).  Each cycle
also uses a Completion and a Flags.  Every stop() must return threadfn's
result.

Besides the LeakSanitizer report that sanitize.sh reads at exit, this
checks from Python, after gc.collect(): no KThread and no KCore object
is left (gc.get_objects()), threading.active_count() and the OS thread count are
back to where they started, and memory traced by tracemalloc grew by less
than LIMIT bytes between the end of the warm-up and the end (one leaked
small object per cycle would be ~0.5 MB).  Exit status 0 when all held.
"""
from __future__ import annotations

import gc
import os
import sys
import threading
import time
import tracemalloc

import kpark
from kpark._kcore import KCore

CYCLES = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
WARMUP = min(1000, CYCLES // 5)
LIMIT = 64 * 1024
DEADLINE = 60.0


def kloop(data) -> int:
    done, n = data
    while not kpark.should_stop():
        if kpark.should_park():
            kpark.parkme()
        n[0] += 1
        done.complete()
        kpark.schedule()
    return n[0]


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def settle(target: int) -> int:
    deadline = time.monotonic() + DEADLINE
    n = os_threads()
    while n > target and time.monotonic() < deadline:
        time.sleep(0.001)
        n = os_threads()
    return n


def cycle(i: int, cpu: int) -> None:
    done, n = kpark.Completion(), [0]
    flags = kpark.Flags()
    path = i % 3
    if path == 2:
        k = kpark.create_on_cpu(kloop, (done, n), cpu, namefmt="leak/%u")
    else:
        k = kpark.KThread(kloop, (done, n), name=f"leak-{i}")
        if path == 0:
            k.start()
            if not done.wait(DEADLINE):
                raise AssertionError(f"cycle {i}: threadfn made no progress")
        k.park(DEADLINE)
    assert k.is_parked, f"cycle {i}: not parked"
    k.unpark()
    if not done.wait(DEADLINE):
        raise AssertionError(f"cycle {i}: no progress after unpark")
    flags.set_bit(i % 64)
    assert flags.test_and_set_bit(i % 64)
    r = k.stop(DEADLINE)
    assert r == n[0], f"cycle {i}: stop() returned {r}, thread counted {n[0]}"


def main() -> int:
    cpu = min(os.sched_getaffinity(0))
    t0 = time.monotonic()
    threads0, os0 = threading.active_count(), os_threads()
    for i in range(WARMUP):
        cycle(i, cpu)
    gc.collect()
    settle(os0)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(WARMUP, CYCLES):
        cycle(i, cpu)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()
    fails = []
    alive = sum(1 for o in gc.get_objects() if isinstance(o, (kpark.KThread, KCore)))
    if alive:
        fails.append(f"{alive} KThread/KCore objects still alive after {CYCLES} cycles")
    if threading.active_count() != threads0:
        fails.append(f"threading.active_count() {threads0} -> {threading.active_count()}")
    n_os = settle(os0)
    if n_os != os0:
        fails.append(f"OS threads {os0} -> {n_os}")
    if grown > LIMIT:
        top = "\n".join(str(s) for s in snap.statistics("lineno")[:8])
        fails.append(f"traced Python memory grew {grown} bytes over {CYCLES - WARMUP} cycles:\n{top}")
    for f in fails:
        print("FAIL:", f)
    print(f"san_leak: {CYCLES} cycles in {time.monotonic() - t0:.1f}s; traced memory "
          f"{grown:+d} bytes after warm-up; {len(fails)} failure(s)")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
