"""Subprocess payload for tests/test_signals.py: signals that hit KThreads.

    python worker_signal_child.py ROUNDS

KThreads no longer block signals, so a signal may interrupt their own
futex waits.  Each of these gets ROUNDS thread-directed SIGUSR1s
(signal.pthread_kill, a Python handler that counts, run by the main
thread):

    never    a KThread never woken (its first sleep)
    sched    a kloop thread asleep in schedule()
    timed    a thread asleep in schedule(60), counting False returns
    parked   a kloop thread parked in its park loop
    waiter   a KThread asleep in Completion.wait()
    idle     a PerCPUExecutor worker asleep in idle()

Then: nothing moved (threadfn not entered, no extra loop round, no timed
out schedule, still parked, the waiter still waiting), every thread still
obeys (wake, complete, unpark, a task, stop), and "RESULT <json>" is
printed; a failed check exits non-zero with a traceback.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from helpers import Prog, kloop, wait_asleep, wait_for  # noqa: E402

import kpark  # noqa: E402

ROUNDS = int(sys.argv[1])
caught = [0]


def counted(signum: int, frame: object) -> None:
    caught[0] += 1


def timed_loop(p: Prog) -> int:
    timeouts = 0
    while not kpark.should_stop():
        p.n += 1
        if not kpark.schedule(60):
            timeouts += 1
    return timeouts


def wait_once(c: kpark.Completion) -> str:
    return "completed" if c.wait() else "timed out"


def sigblk(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/status") as f:
        return int(next(x.split()[1] for x in f if x.startswith("SigBlk:")), 16)


def main() -> None:
    signal.signal(signal.SIGUSR1, counted)
    ran: list = []
    never = kpark.KThread(ran.append, "never")
    ps, pt, pp = Prog(), Prog(), Prog()
    sched = kpark.KThread(kloop, ps, name="sched")
    sched.start()
    timed = kpark.KThread(timed_loop, pt, name="timed")
    timed.start()
    parked = kpark.KThread(kloop, pp, name="parked")
    parked.start()
    wait_for(lambda: pp.n == 1)
    parked.park(10)
    c = kpark.Completion()
    waiter = kpark.KThread(wait_once, c, name="waiter")
    waiter.start()
    ex = kpark.PerCPUExecutor(max_workers=1)
    worker_tid, worker_ident = ex.submit(
        lambda: (threading.get_native_id(), threading.get_ident())).result(10)
    targets = {"never": never.native_id, "sched": sched.native_id, "timed": timed.native_id,
               "parked": parked.native_id, "waiter": waiter.native_id, "idle": worker_tid}
    for name, tid in targets.items():
        wait_asleep(tid, msg=name)
    assert ps.n == 1 and pt.n == 1 and pp.n == 1, (ps.n, pt.n, pp.n)
    usr1 = 1 << (signal.SIGUSR1 - 1)
    blocked = [name for name, tid in targets.items() if sigblk(tid) & usr1]
    assert not blocked, f"SIGUSR1 is blocked in {blocked}: the check would prove nothing"
    idents = {"never": never.ident, "sched": sched.ident, "timed": timed.ident,
              "parked": parked.ident, "waiter": waiter.ident}
    idents["idle"] = worker_ident
    for _ in range(ROUNDS):
        for ident in idents.values():
            signal.pthread_kill(ident, signal.SIGUSR1)
        time.sleep(0.0005)
    wait_for(lambda: caught[0] > 0, 10, "the handler ran for the signals")
    for name, tid in targets.items():
        wait_asleep(tid, msg=f"{name} back asleep")
    # Nothing moved.
    assert ran == [] and not never.started, "the never-woken thread started"
    assert ps.n == 1, f"schedule() returned {ps.n - 1} times without a wake"
    assert pt.n == 1, f"schedule(60) returned {pt.n - 1} times without a wake"
    assert parked.is_parked and pp.n == 1, "the parked thread left its park loop"
    assert waiter.is_alive() and not c.done(), "Completion.wait() returned without a completion"
    # Everything still obeys.
    sched.wake()
    wait_for(lambda: ps.n == 2, 10, "sched loops again after wake()")
    timed.wake()
    wait_for(lambda: pt.n == 2, 10, "timed loops again after wake()")
    parked.unpark()
    wait_for(lambda: pp.n >= 2, 10, "parked runs after unpark()")
    c.complete()
    assert waiter.stop(10) == "completed"
    assert ex.submit(lambda: 42).result(10) == 42
    ex.shutdown()
    assert never.stop(10) is None and ran == []
    assert sched.stop(10) == ps.n and parked.stop(10) == pp.n
    assert timed.stop(10) == 0, "schedule(60) timed out"
    print("RESULT", json.dumps({"caught": caught[0], "rounds": ROUNDS,
                                "backend": kpark.BACKEND}), flush=True)


if __name__ == "__main__":
    main()
