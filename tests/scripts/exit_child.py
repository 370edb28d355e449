"""Subprocess payload for tests/test_process.py (semantics 16).

    python exit_child.py MODE

Creates KThreads in every state a program may leave them in - parked in
parkme(), asleep in schedule(), never woken, parked before threadfn ran,
per-CPU parked by create_on_cpu() (never unparked), per-CPU that ran and was
parked again - prints "READY" and simply ends.  With MODE=stubborn one more
KThread is blocked in user code and ignores should_stop, so the exit has to
give up on it after kpark.thread.EXIT_TIMEOUT.

Every threadfn that ran prints "STOPPED <name>" when it sees should_stop and
returns; an atexit handler (atexit runs after threading's shutdown, which is
where kpark stops its threads) prints "ATEXIT <json>" with is_alive() of
each KThread, so the parent sees which threads were stopped.
"""
from __future__ import annotations

import atexit
import json
import os
import sys
import threading

import kpark

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from helpers import asleep, wait_for  # noqa: E402

MODE = sys.argv[1]
assert MODE in ("clean", "stubborn"), MODE
DEADLINE = 10.0


def kloop(name: str) -> str:
    """The kernel-style loop."""
    while not kpark.should_stop():
        if kpark.should_park():
            kpark.parkme()
        ran.add(name)
        kpark.schedule()
    # One write(2) per line: print() from several threads can interleave.
    os.write(1, f"STOPPED {name}\n".encode())
    return name


ran: set = set()
cpu = min(os.sched_getaffinity(0))
ks = {}

ks["parked"] = kpark.KThread(kloop, "parked")
ks["parked"].start()
# start() returns once threadfn is entered, not once its loop ran: without a
# GIL, a park() right away can reach it before its first round.
wait_for(lambda: "parked" in ran, DEADLINE, "parked thread ran")
ks["parked"].park(DEADLINE)

ks["sleeping"] = kpark.KThread(kloop, "sleeping")
ks["sleeping"].start()
wait_for(lambda: "sleeping" in ran and asleep(ks["sleeping"].native_id),
         DEADLINE, "asleep in schedule()")

ks["never"] = kpark.KThread(kloop, "never")

ks["parked_early"] = kpark.KThread(kloop, "parked_early")
ks["parked_early"].park(DEADLINE)

ks["per_cpu"] = kpark.create_on_cpu(kloop, "per_cpu", cpu)

ks["per_cpu_ran"] = kpark.create_on_cpu(kloop, "per_cpu_ran", cpu, "ran/%u")
ks["per_cpu_ran"].unpark()
wait_for(lambda: "per_cpu_ran" in ran, DEADLINE, "per-CPU thread ran")
ks["per_cpu_ran"].park(DEADLINE)

if MODE == "stubborn":
    never_set = threading.Event()

    def stubborn(_data: object) -> None:
        never_set.wait()          # user code that ignores should_stop

    ks["stubborn"] = kpark.KThread(stubborn, name="stubborn")
    ks["stubborn"].start()

assert ks["parked"].is_parked and ks["parked_early"].is_parked
assert ks["per_cpu"].is_parked and ks["per_cpu_ran"].is_parked
assert not ks["never"].started and not ks["per_cpu"].started


@atexit.register
def report() -> None:
    sys.stdout.flush()
    os.write(1, ("ATEXIT " + json.dumps({name: k.is_alive() for name, k in ks.items()})
                 + "\n").encode())


print("READY", json.dumps({"exit_timeout": kpark.thread.EXIT_TIMEOUT,
                           "ran": sorted(ran)}), flush=True)
