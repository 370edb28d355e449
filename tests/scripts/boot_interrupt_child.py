"""Subprocess payload for tests/test_signals.py: an interrupted constructor.

    python boot_interrupt_child.py VARIANT

VARIANT run:      a KThread subclass that overrides run();
        threadfn: a KThread subclass given a threadfn.

The subclass's __getattribute__ holds the new OS thread at the moment
threading looks up `run` to call it (after threading.Thread.start() could
return, before the thread reaches its first sleep): there it sends SIGUSR1
to the main thread, whose handler raises KeyboardInterrupt inside the
constructor's wait, and only lets the lookup go on once the constructor has
raised.  The main thread then reports what happened: "RESULT <json>" with
the constructor's outcome, whether any user code ran, and the KThread's
state after a bounded join.
"""
from __future__ import annotations

import json
import signal
import sys
import threading

import kpark

VARIANT = sys.argv[1]
assert VARIANT in ("run", "threadfn"), VARIANT
MAIN = threading.get_ident()
WAIT = 10.0

gate = threading.Event()    # set once the constructor has raised
held: list = []             # the instance whose boot was held
ran: list = []              # user code that ran


class Held(kpark.KThread):
    def __getattribute__(self, name: str) -> object:
        if name == "run" and threading.get_ident() != MAIN and not held:
            held.append(self)
            signal.pthread_kill(MAIN, signal.SIGUSR1)
            gate.wait(WAIT)
        return object.__getattribute__(self, name)


class WithRun(Held):
    def run(self) -> None:
        ran.append("run")


def threadfn(_data: object) -> None:
    ran.append("threadfn")


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGUSR1, interrupt)
    try:
        if VARIANT == "run":
            WithRun()
        else:
            Held(threadfn)
        outcome = "returned"
    except KeyboardInterrupt:
        outcome = "KeyboardInterrupt"
    gate.set()
    assert held, "the new thread never looked run up"
    k = held[0]
    k.join(WAIT)
    print("RESULT", json.dumps({
        "outcome": outcome, "ran": ran, "alive": k.is_alive(),
        "should_stop": k.should_stop, "started": k.started}), flush=True)


if __name__ == "__main__":
    main()
