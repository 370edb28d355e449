"""Subprocess payload for tests/test_process.py (semantics 17).

    python leak_child.py CYCLES WARMUP

Runs CYCLES create -> park -> unpark -> stop cycles, one KThread at a time,
alternating two paths: even cycles start() the thread and park it in its
parkme(); odd cycles park it before threadfn ever ran, so unpark() is what
starts threadfn.  Every stop() must return threadfn's result.

After WARMUP cycles and at the end it measures (after gc.collect()):
resident memory (/proc/self/statm), threading.active_count(), the OS thread
count (/proc/self/task), the number of gc-tracked objects and of live
KThread objects.  It also samples the OS thread count every 100 cycles.
Prints "RESULT <json>".
"""
from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time

import kpark

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from helpers import Prog, kloop  # noqa: E402

CYCLES, WARMUP = int(sys.argv[1]), int(sys.argv[2])
PAGE = os.sysconf("SC_PAGE_SIZE")
DEADLINE = 10.0


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def settle_threads(target: int) -> int:
    """The OS thread count, once the last stopped thread is really gone (it
    reports exited a moment before the kernel reaps it)."""
    deadline = time.monotonic() + DEADLINE
    n = os_threads()
    while n > target and time.monotonic() < deadline:
        time.sleep(0.001)
        n = os_threads()
    return n


def snapshot() -> dict:
    gc.collect()
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1]) * PAGE
    return {
        "rss": resident,
        "active_count": threading.active_count(),
        "os_threads": settle_threads(1),
        "gc_objects": len(gc.get_objects()),
        "kthreads": sum(1 for o in gc.get_objects() if isinstance(o, kpark.KThread)),
    }


def cycle(i: int) -> None:
    p = Prog()
    k = kpark.KThread(kloop, p)
    if i % 2 == 0:
        k.start()
        k.park()
        assert k.is_parked and k.started
    else:
        k.park()                       # parked before threadfn ran
        assert k.is_parked and not k.started
    k.unpark()
    # unpark() lets threadfn run, but a stop() right away could still reach
    # the thread first (then threadfn never runs): wait until it ran.
    while p.n == 0:
        time.sleep(0)
    r = k.stop()
    assert r == p.n and p.n >= 1 and not k.is_alive(), (i, r, p.n)


def main() -> None:
    base_threads = os_threads()
    t0 = time.monotonic()
    for i in range(WARMUP):
        cycle(i)
    warm = snapshot()
    t1 = time.monotonic()
    max_threads = 0
    for i in range(WARMUP, CYCLES):
        cycle(i)
        if i % 100 == 0:
            max_threads = max(max_threads, os_threads())
    t2 = time.monotonic()
    end = snapshot()
    print("RESULT", json.dumps({
        "base_threads": base_threads, "warm": warm, "end": end,
        "max_threads_during": max_threads, "cycles": CYCLES, "warmup": WARMUP,
        "seconds_warmup": t1 - t0, "seconds_measured": t2 - t1,
        "backend": kpark.BACKEND}), flush=True)


if __name__ == "__main__":
    main()
