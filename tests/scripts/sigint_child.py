"""Subprocess payload for tests/test_process.py (semantics 14).

    python sigint_child.py CALL SENDER TIMED REPS

CALL    park | stop | join | wait | start: the blocking call the main thread
        makes (park on a thread that never calls parkme(), stop on a thread
        that ignores should_stop, join on a running thread, Completion.wait
        with nothing to consume, start on a thread the parent froze with
        ptrace between its wake and threadfn).
SENDER  parent: the parent process sends SIGINT (os.kill from outside);
        thread: a threading.Thread of this process sends it with
                os.kill(os.getpid(), SIGINT);
        kthread: a KThread of this process sends it the same way.
TIMED   timed (the call gets timeout=60) | untimed (timeout=None).
REPS    how many times the same objects are blocked and interrupted.

Each repetition: the main thread announces it is about to block ("READY n"
on stdout for the parent, or an Event/Completion for an in-process sender),
then blocks.  The sender waits until the main thread is asleep in a system
call (from /proc, unchanged for 20 ms), records time.monotonic() (one
system-wide CLOCK_MONOTONIC, so comparable across processes) and sends
SIGINT.  The except clause records when KeyboardInterrupt arrived and the
innermost traceback frame, which shows whether it was raised inside the
compiled wait (not before the call was entered).  The script then checks the
objects are still usable (asserts; a failure exits non-zero with a
traceback on stderr), and finally prints "RESULT <json>".

For CALL=start the parent drives a ptrace freeze: the child prints
"TID n <native_id>", the parent stops that thread and answers "FROZEN"; after
"CAUGHT n" the parent lets it go and answers "THAWED".
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from helpers import main_asleep, wait_for  # noqa: E402

import kpark

CALL, SENDER, TIMED, REPS = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
TIMEOUT = 60.0 if TIMED == "timed" else None
assert CALL in ("park", "stop", "join", "wait", "start"), CALL
assert SENDER in ("parent", "thread", "kthread"), SENDER
PID = os.getpid()
DEADLINE = 10.0   # for states that must eventually hold


def say(*words: object) -> None:
    print(*words, flush=True)


class Prog:
    """State shared with a kernel-style loop (written by the KThread only)."""

    def __init__(self) -> None:
        self.n = 0                 # loop iterations
        self.allow_park = False    # call parkme() when asked to park
        self.honour_stop = True    # leave the loop when asked to stop


def kloop(p: Prog) -> int:
    while not (p.honour_stop and kpark.should_stop()):
        if p.allow_park and kpark.should_park():
            kpark.parkme()
        p.n += 1
        kpark.schedule()
    return p.n


def progresses(k: kpark.KThread, p: Prog) -> None:
    """The thread still runs its loop: a wake makes it go round once more."""
    n = p.n
    k.wake()
    wait_for(lambda: p.n > n, DEADLINE, f"{k.name} loops again after wake()")


# ---- the in-process senders -------------------------------------------------

sent: list = []          # time.monotonic() just before each os.kill


def send_when_blocked() -> None:
    if not main_asleep(PID):
        say("SENDER could not see the main thread asleep")
        return
    sent.append(time.monotonic())
    os.kill(PID, signal.SIGINT)


class ThreadSender:
    def __init__(self) -> None:
        self.t: threading.Thread | None = None

    def arm(self) -> None:
        self.t = threading.Thread(target=send_when_blocked, name="sender")
        self.t.start()

    def done(self) -> None:
        assert self.t is not None
        self.t.join(DEADLINE)
        assert not self.t.is_alive()

    def close(self) -> None:
        pass


class KThreadSender:
    """A KThread that sends one SIGINT per Completion it consumes."""

    def __init__(self) -> None:
        self.go = kpark.Completion()
        self.sent_one = kpark.Completion()
        self.quit = False
        self.k = kpark.KThread(self._fn, name="ksender")
        self.k.start()

    def _fn(self, _data: object) -> int:
        count = 0
        while True:
            self.go.wait()
            if self.quit:
                return count
            send_when_blocked()
            count += 1
            self.sent_one.complete()

    def arm(self) -> None:
        self.go.complete()

    def done(self) -> None:
        assert self.sent_one.wait(DEADLINE)

    def close(self) -> None:
        self.quit = True
        self.go.complete()
        assert self.k.stop(DEADLINE) == REPS


class ParentSender:
    def arm(self) -> None:
        pass

    def done(self) -> None:
        pass

    def close(self) -> None:
        pass


# ---- the scenarios ----------------------------------------------------------
# Each has prepare(rep) (before the announcement), call() (the blocking call,
# which must not return), after(rep) (the objects still work) and final().

class ParkScenario:
    """park() on a thread that never calls parkme(): blocks forever."""

    def __init__(self) -> None:
        self.p = Prog()
        self.k = kpark.KThread(kloop, self.p, name="parkee")
        self.k.start()

    def prepare(self, rep: int) -> None:
        pass

    def call(self) -> None:
        self.k.park(TIMEOUT)

    def after(self, rep: int) -> None:
        k = self.k
        assert k.is_alive() and not k.is_parked
        # Whether the interrupted request stays pending is not specified;
        # unpark() withdraws it either way.
        k.unpark()
        assert not k.should_park and not k.is_parked
        progresses(k, self.p)

    def final(self) -> object:
        k, p = self.k, self.p
        p.allow_park = True
        k.park(DEADLINE)                       # parks normally now
        assert k.is_parked
        n = p.n
        k.unpark()
        wait_for(lambda: p.n > n, DEADLINE, "runs again after unpark()")
        r = k.stop(DEADLINE)
        assert r == p.n and not k.is_alive(), (r, p.n)
        return r


class StopScenario:
    """stop() on a thread that ignores should_stop: blocks until released."""

    def __init__(self) -> None:
        self.p = Prog()
        self.p.honour_stop = False
        self.k = kpark.KThread(kloop, self.p, name="stubborn")
        self.k.start()

    def prepare(self, rep: int) -> None:
        pass

    def call(self) -> None:
        self.k.stop(TIMEOUT)

    def after(self, rep: int) -> None:
        k = self.k
        assert k.is_alive() and k.should_stop, "the stop request stays"
        k.join(0.01)
        assert k.is_alive()
        progresses(k, self.p)

    def final(self) -> object:
        k, p = self.k, self.p
        p.honour_stop = True
        k.wake()
        r = k.stop(DEADLINE)
        assert r == p.n and not k.is_alive(), (r, p.n)
        assert k.stop(DEADLINE) == r
        return r


class JoinScenario:
    """join() on a thread nobody stops: blocks forever."""

    def __init__(self) -> None:
        self.p = Prog()
        self.p.allow_park = True
        self.k = kpark.KThread(kloop, self.p, name="joinee")
        self.k.start()

    def prepare(self, rep: int) -> None:
        pass

    def call(self) -> None:
        self.k.join(TIMEOUT)
        raise AssertionError("join() returned: the thread is not supposed to exit")

    def after(self, rep: int) -> None:
        assert self.k.is_alive()
        progresses(self.k, self.p)

    def final(self) -> object:
        k, p = self.k, self.p
        k.park(DEADLINE)
        assert k.is_parked
        k.unpark()
        progresses(k, p)
        r = k.stop(DEADLINE)
        assert r == p.n and not k.is_alive(), (r, p.n)
        return r


class WaitScenario:
    """Completion.wait() with nothing to consume: blocks forever."""

    def __init__(self) -> None:
        self.c = kpark.Completion()

    def prepare(self, rep: int) -> None:
        pass

    def call(self) -> None:
        self.c.wait(TIMEOUT)
        raise AssertionError("Completion.wait() returned without a completion")

    def after(self, rep: int) -> None:
        c = self.c
        assert not c.done() and not c.try_wait()
        # Still works across threads: a KThread completes, we consume it.
        k = kpark.KThread(lambda comp: comp.complete(), c)
        k.start()
        assert c.wait(DEADLINE) is True
        k.stop(DEADLINE)
        assert not c.done()

    def final(self) -> object:
        c = self.c
        c.complete_all()
        assert c.wait() is True and c.wait(0) is True
        return "ok"


class StartScenario:
    """start() on a thread frozen (by the parent, with ptrace) between its
    wake and threadfn: start() waits for threadfn to be entered."""

    def __init__(self) -> None:
        self.p: Prog | None = None
        self.k: kpark.KThread | None = None
        self.results: list = []

    def prepare(self, rep: int) -> None:
        self.p = Prog()
        self.k = kpark.KThread(kloop, self.p, name=f"startee{rep}")
        say("TID", rep, self.k.native_id)
        line = sys.stdin.readline().strip()
        assert line == "FROZEN", line

    def call(self) -> None:
        assert self.k is not None
        self.k.start()
        raise AssertionError("start() returned although the thread was frozen")

    def after(self, rep: int) -> None:
        k, p = self.k, self.p
        assert k is not None and p is not None
        line = sys.stdin.readline().strip()
        assert line == "THAWED", line
        # start() had woken it: once thawed it enters threadfn by itself.
        wait_for(lambda: k.started, DEADLINE, "threadfn entered after the thaw")
        wait_for(lambda: p.n > 0, DEADLINE, "threadfn runs")
        try:
            k.start()
        except RuntimeError as e:
            assert "once" in str(e), e
        else:
            raise AssertionError("a second start() did not raise RuntimeError")
        progresses(k, p)
        r = k.stop(DEADLINE)
        assert r == p.n and not k.is_alive(), (r, p.n)
        self.results.append(r)

    def final(self) -> object:
        return self.results


SCENARIOS = {"park": ParkScenario, "stop": StopScenario, "join": JoinScenario,
             "wait": WaitScenario, "start": StartScenario}


def main() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    scenario = SCENARIOS[CALL]()
    sender = {"parent": ParentSender, "thread": ThreadSender,
              "kthread": KThreadSender}[SENDER]()
    caught, inner = [], []
    for rep in range(REPS):
        scenario.prepare(rep)
        sender.arm()
        say("READY", rep)
        try:
            scenario.call()
            raise AssertionError(f"{CALL}() returned instead of blocking")
        except KeyboardInterrupt as e:
            caught.append(time.monotonic())
            frames = traceback.extract_tb(e.__traceback__)
            inner.append(f"{frames[-1].filename}:{frames[-1].name}")
        say("CAUGHT", rep)
        sender.done()
        scenario.after(rep)
    sender.close()
    result = scenario.final()
    say("RESULT", json.dumps({"caught": caught, "sent": sent, "inner": inner,
                              "result": result, "backend": kpark.BACKEND}))


if __name__ == "__main__":
    main()
