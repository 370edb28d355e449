"""Subprocess payload for tests/test_signals.py: Ctrl-C while workers run Python.

    python sigint_busy_child.py CALL REPS

The KThreads do not block signals (they have the mask of the thread that
created them; the payload asserts that of every busy one), so this checks that a process-directed SIGINT still reaches
the main thread when every worker is busy running Python code and could
take it instead.  Busy: a PerCPUExecutor with one worker per allowed CPU,
each running a pure-Python loop, and a KThread running one more.

CALL    result: Future.result() of one of the busy tasks;
        join:   KThread.join() on the busy KThread;
        wait:   Completion.wait() with nothing to consume;
        sleep:  time.sleep(60).

Each repetition: "READY n" on stdout, then the main thread blocks in CALL;
the parent sends SIGINT (os.kill of the pid, or os.killpg of the child's
own process group, as a terminal's Ctrl-C does) once the main thread is
asleep; the except clause records time.monotonic() and the innermost frame
(which tells the wait itself raised it) and prints "CAUGHT n".
At the end: the loops are told to stop, everything is joined (the busy
futures give their iteration counts, all > 0) and "RESULT <json>" is
printed with the catch times.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback

import kpark

CALL, REPS = sys.argv[1], int(sys.argv[2])
assert CALL in ("result", "join", "wait", "sleep"), CALL


class Busy:
    """A flag the loops poll; they run Python bytecode until it is set."""

    def __init__(self) -> None:
        self.stop = False
        self.masks: list = []   # each loop's SigBlk (list.append: atomic)

    def spin(self, _data: object = None) -> int:
        with open(f"/proc/self/task/{threading.get_native_id()}/status") as f:
            self.masks.append(next(x.split()[1] for x in f if x.startswith("SigBlk:")))
        n = 0
        while not self.stop:
            n += 1
        return n


def main() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # The busy loops compete with the main thread for the GIL, which it
    # needs to raise KeyboardInterrupt; a short switch interval keeps that
    # hand-off (CPython's, not kpark's) to about a millisecond, so what is
    # measured is where the signal went and how soon the wait noticed it.
    sys.setswitchinterval(0.001)
    busy = Busy()
    ex = kpark.PerCPUExecutor()    # one worker per allowed CPU
    futs = [ex.submit(busy.spin) for _ in range(len(ex.cpus))]
    k = kpark.KThread(busy.spin, name="busy")
    k.start()
    try:
        c = kpark.Completion()
        deadline = time.monotonic() + 10.0
        while len(busy.masks) < len(futs) + 1:   # every loop is running
            assert time.monotonic() < deadline, f"only {len(busy.masks)} loops started"
            time.sleep(0.001)
        # The premise: every busy thread could take SIGINT (does not block it).
        sigint = 1 << (signal.SIGINT - 1)
        assert not any(int(m, 16) & sigint for m in busy.masks), busy.masks
        calls = {"result": futs[0].result, "join": k.join, "wait": c.wait,
                 "sleep": lambda: time.sleep(60)}
        caught, inner = [], []
        for rep in range(REPS):
            try:
                print("READY", rep, flush=True)
                calls[CALL]()
                raise AssertionError(f"{CALL}() returned instead of blocking")
            except KeyboardInterrupt as e:
                caught.append(time.monotonic())
                frame = traceback.extract_tb(e.__traceback__)[-1]
                inner.append(f"{frame.filename}:{frame.name}")
            print("CAUGHT", rep, flush=True)
    finally:
        busy.stop = True    # a failed check must not leave the loops spinning at exit
    counts = [f.result(10) for f in futs] + [k.stop(10)]
    ex.shutdown()
    assert all(n > 0 for n in counts), counts
    print("RESULT", json.dumps({"caught": caught, "inner": inner, "backend": kpark.BACKEND,
                                "workers": len(futs) + 1}), flush=True)


if __name__ == "__main__":
    main()
