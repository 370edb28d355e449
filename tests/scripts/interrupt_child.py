"""Subprocess payload for tests/test_hotplug_faults.py: interrupted hotplug and teardown.

    python interrupt_child.py WHAT OWNER SIGNAL [THEN]

WHAT    offline:  the main thread's offline(cpu) waits for a worker busy in a
                  task (thread_fn) that blocks on an Event, and is interrupted;
                  THEN says how the test resolves it: "retry" (offline() again
                  once the task may end) or "online" (online() at once).
        drain:    shutdown(wait=True) waits for queued tasks behind busy
                  workers (executor only) and is interrupted.
        stop:     shutdown(wait=True) / close() waits for workers whose tasks
                  never end by themselves (the queues are empty), and is
                  interrupted.
OWNER   executor (PerCPUExecutor) | pool (PerCPUThreads).
SIGNAL  int:   SIGINT (KeyboardInterrupt), sent with os.kill(os.getpid());
        alarm: SIGALRM from setitimer, whose handler raises `Alarm` (an
               alarm-based timeout).

A helper threading.Thread sends the signal once the main thread is asleep in
a system call (/proc) after the hotplug request was made, and records when.
The script asserts the state the interruption leaves and that the retry
completes the job (a failed assert exits non-zero with a traceback on
stderr), then prints "RESULT <json>" with the interrupt's latency.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from helpers import main_asleep, wait_for  # noqa: E402

import kpark  # noqa: E402
from kpark import PerCPUExecutor, PerCPUThreads  # noqa: E402

WHAT, OWNER, SIG = sys.argv[1], sys.argv[2], sys.argv[3]
THEN = sys.argv[4] if len(sys.argv) > 4 else ""
assert WHAT in ("offline", "drain", "stop"), WHAT
assert OWNER in ("executor", "pool"), OWNER
assert SIG in ("int", "alarm"), SIG
WAIT = 10.0  # for states that must eventually hold
CPUS = sorted(os.sched_getaffinity(0))
CPU = CPUS[-1]
FORCE = len(CPUS) == 1  # offlining the only CPU needs force


class Alarm(Exception):
    """What the SIGALRM handler raises (a timeout built on signal.alarm)."""


def on_alarm(signum: int, frame: object) -> None:
    raise Alarm()


INTERRUPTS = (KeyboardInterrupt, Alarm)
sent: list = []


def interrupt_when(ready) -> threading.Thread:
    """Send the signal from a helper thread once `ready()` holds and the main
    thread sleeps in a system call."""
    def send() -> None:
        wait_for(ready, timeout=WAIT, msg="the request the main thread makes")
        assert main_asleep(os.getpid()), "the main thread never blocked"
        sent.append(time.monotonic())
        if SIG == "int":
            os.kill(os.getpid(), signal.SIGINT)
        else:
            signal.setitimer(signal.ITIMER_REAL, 1e-6)

    t = threading.Thread(target=send, name="interrupter")
    t.start()
    return t


def interrupted(call, *args, **kwargs) -> float:
    """Run call(*args) expecting the interrupt; return its latency."""
    try:
        call(*args, **kwargs)
    except INTERRUPTS:
        caught = time.monotonic()
    else:
        raise AssertionError(f"{call.__name__}() was not interrupted")
    return caught - sent[-1]


class Busy:
    """Tasks (or thread_fn rounds) that block until released, one Event per CPU."""

    def __init__(self) -> None:
        self.gate = {c: threading.Event() for c in CPUS}
        self.started = {c: threading.Event() for c in CPUS}
        self.runs = {c: 0 for c in CPUS}

    def task(self, cpu: int) -> int:
        self.runs[cpu] += 1
        self.started[cpu].set()
        assert self.gate[cpu].wait(WAIT * 3), "never released"
        return cpu


# ---- executor ----------------------------------------------------------------

def executor_offline() -> float:
    busy = Busy()
    ex = PerCPUExecutor(cpus=CPUS)
    k = ex.threads.thread(CPU)
    f = ex.submit_on(CPU, busy.task, CPU)
    assert busy.started[CPU].wait(WAIT)
    queued = ex.submit_on(CPU, pow, 2, 5)         # pinned, behind the busy task
    interrupter = interrupt_when(lambda: k.should_park)
    lat = interrupted(ex.offline, CPU, force=FORCE)
    interrupter.join()
    # The pool's view matches its worker's: parking is pending, so offline.
    assert CPU not in ex.online_cpus, ex.online_cpus
    assert k.should_park and not f.done() and not queued.cancelled()
    if THEN == "retry":
        busy.gate[CPU].set()
        ex.offline(CPU, force=FORCE)             # waits for the pending park
        assert k.is_parked and CPU not in ex.online_cpus
        assert f.result(WAIT) == CPU and not queued.done()  # pinned: waits
        ex.online(CPU)
    else:
        ex.online(CPU)                           # withdraws the pending park
        assert not k.should_park and CPU in ex.online_cpus
        busy.gate[CPU].set()
        assert f.result(WAIT) == CPU
    assert queued.result(WAIT) == 32
    assert ex.submit_on(CPU, pow, 3, 2).result(WAIT) == 9
    assert ex.submit(pow, 2, 2).result(WAIT) == 4
    ex.offline(CPU, force=FORCE)                  # hotplug still works
    assert k.is_parked
    ex.online(CPU)
    ex.shutdown(wait=True)
    assert not any(t.is_alive() for t in ex._threads)
    assert ex.threads.errors == []
    return lat


def executor_drain() -> float:
    # Every worker busy, tasks queued behind them: shutdown() waits for the
    # queue to drain.
    busy = Busy()
    ex = PerCPUExecutor(cpus=CPUS)
    running = [ex.submit_on(c, busy.task, c) for c in CPUS]
    for c in CPUS:
        assert busy.started[c].wait(WAIT)
    queued = [ex.submit(pow, 2, i) for i in range(8)] + [ex.submit_on(CPU, pow, 3, 3)]
    k = ex.threads.thread(CPUS[0])
    interrupter = interrupt_when(lambda: ex._shutdown)
    lat = interrupted(ex.shutdown, wait=True)
    interrupter.join()
    # As ThreadPoolExecutor: no new work, queued work still queued, not cancelled.
    assert not any(f.cancelled() for f in queued)
    try:
        ex.submit(pow, 2, 2)
    except RuntimeError:
        pass
    else:
        raise AssertionError("submit() after an interrupted shutdown() was accepted")
    assert ex.threads.errors == [] and k.is_alive()
    for c in CPUS:
        busy.gate[c].set()
    # The workers go on with the queued work by themselves...
    assert [f.result(WAIT) for f in queued] == [2 ** i for i in range(8)] + [27]
    assert [f.result(WAIT) for f in running] == CPUS
    ex.shutdown(wait=True)                        # ...and a retry joins them
    assert not any(t.is_alive() for t in ex._threads)
    assert ex.threads.errors == [] and ex.threads.closed
    return lat


def executor_stop() -> float:
    # The queues are empty: shutdown() waits for tasks that only end when
    # released.  The interrupt must not wait for them.
    busy = Busy()
    ex = PerCPUExecutor(cpus=CPUS)
    running = [ex.submit_on(c, busy.task, c) for c in CPUS]
    for c in CPUS:
        assert busy.started[c].wait(WAIT)
    first = ex.threads.thread(CPUS[0])
    interrupter = interrupt_when(lambda: first.should_stop)
    lat = interrupted(ex.shutdown, wait=True)
    interrupter.join()
    assert ex.threads.errors == [], ex.threads.errors  # not a callback error
    assert not ex.threads.closed and all(t.is_alive() for t in ex._threads)
    for c in CPUS:
        busy.gate[c].set()
    assert [f.result(WAIT) for f in running] == CPUS
    ex.shutdown(wait=True)                        # the retry joins every worker
    assert not any(t.is_alive() for t in ex._threads)
    assert ex.threads.errors == [] and ex.threads.closed
    return lat


# ---- PerCPUThreads -------------------------------------------------------------

class Work:
    """thread_fn/thread_should_run with a per-CPU count of rounds to run."""

    def __init__(self, busy: Busy) -> None:
        self.busy = busy
        self.todo = {c: 0 for c in CPUS}

    def should_run(self, cpu: int) -> bool:
        return self.todo[cpu] > 0

    def thread_fn(self, cpu: int) -> None:
        self.todo[cpu] -= 1
        self.busy.task(cpu)

    def run_once(self, pool: PerCPUThreads, cpu: int) -> None:
        self.busy.started[cpu].clear()
        self.todo[cpu] += 1
        pool.wake(cpu)


def pool_offline() -> float:
    busy = Busy()
    work = Work(busy)
    pool = PerCPUThreads(work.thread_fn, work.should_run, cpus=CPUS)
    k = pool.thread(CPU)
    work.run_once(pool, CPU)
    assert busy.started[CPU].wait(WAIT)
    interrupter = interrupt_when(lambda: k.should_park)
    lat = interrupted(pool.offline, CPU)
    interrupter.join()
    assert CPU not in pool.online_cpus and k.should_park
    if THEN == "retry":
        busy.gate[CPU].set()
        pool.offline(CPU)
        assert k.is_parked and CPU not in pool.online_cpus
        pool.online(CPU)
    else:
        pool.online(CPU)
        assert not k.should_park and CPU in pool.online_cpus
        busy.gate[CPU].set()
    wait_for(lambda: work.todo[CPU] == 0 and not k.should_park, msg="the round ended")
    work.run_once(pool, CPU)                      # the thread works again
    assert busy.started[CPU].wait(WAIT)
    pool.offline(CPU)
    assert k.is_parked
    pool.online(CPU)
    pool.close()
    assert pool.errors == [] and not any(t.is_alive() for t in pool.threads_of(CPU))
    return lat


def pool_stop() -> float:
    busy = Busy()
    work = Work(busy)
    pool = PerCPUThreads(work.thread_fn, work.should_run, cpus=CPUS)
    for c in CPUS:
        work.run_once(pool, c)
        assert busy.started[c].wait(WAIT)
    first = pool.thread(CPUS[0])
    interrupter = interrupt_when(lambda: first.should_stop)
    lat = interrupted(pool.close)
    interrupter.join()
    assert pool.errors == [], pool.errors
    assert not pool.closed
    for call in (pool.offline, pool.online):
        try:
            call(CPU)
        except RuntimeError:
            pass  # closing: hotplug is refused
        else:
            raise AssertionError(f"{call.__name__}() accepted while closing")
    for c in CPUS:
        busy.gate[c].set()
    pool.close()                                   # no error to re-raise
    assert pool.closed and not any(pool.thread(c).is_alive() for c in CPUS)
    pool.close()
    return lat


def main() -> None:
    signal.signal(signal.SIGALRM, on_alarm)
    run = {("executor", "offline"): executor_offline, ("executor", "drain"): executor_drain,
           ("executor", "stop"): executor_stop, ("pool", "offline"): pool_offline,
           ("pool", "stop"): pool_stop}[(OWNER, WHAT)]
    lat = run()
    print("RESULT " + json.dumps({"latency": lat, "backend": kpark.BACKEND}), flush=True)


if __name__ == "__main__":
    main()
