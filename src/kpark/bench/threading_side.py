"""The pure-threading baselines of `python -m kpark bench`.

Each class is one workload, written as well as plain `threading` and
`concurrent.futures` allow: bound methods hoisted out of the timed loops,
one lock round per hand-off where the protocol allows it, no sleeps and no
polling.  kpark_side.py holds the kpark half of each benchmark, built the
same way so the two can be read side by side.

Every workload is a context manager: `__enter__` builds its threads (not
timed), `run(n)` does n operations (timed by the caller), `__exit__` tears
everything down.  `ops` says how many tasks one operation counts for (map
and scaling workloads run many tasks per operation).
"""
from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Optional

from kpark.bench.workload import Workload, inc, noop, run_py_tasks

__all__ = [
    "EventPingPong", "LockPingPong", "ConditionPingPong",
    "ConditionParkCycle", "TeardownSetupCycle",
    "ThreadPoolRecreate", "ThreadPoolSubmit", "ThreadPoolMap", "ThreadPoolScaling",
    "ThreadPoolPyScaling",
    "LockedIntFlags", "LockedIntFlagsInline",
]


# -- 1. wake ping-pong ---------------------------------------------------------

class EventPingPong(Workload):
    """Two threading.Events: set, wait, clear, in both directions."""
    label = "threading.Event"

    def __enter__(self) -> "EventPingPong":
        self.ping = threading.Event()
        self.pong = threading.Event()
        self.stopping = False
        self.peer = threading.Thread(target=self._peer, name="bench-event-peer", daemon=True)
        self.peer.start()
        return self

    def _peer(self) -> None:
        wait, clear, answer = self.ping.wait, self.ping.clear, self.pong.set
        while True:
            wait()
            clear()
            if self.stopping:
                return
            answer()

    def run(self, n: int) -> None:
        ping, wait, clear = self.ping.set, self.pong.wait, self.pong.clear
        for _ in range(n):
            ping()
            wait()
            clear()

    def __exit__(self, *exc: object) -> None:
        self.stopping = True
        self.ping.set()
        self.peer.join()


class LockPingPong(Workload):
    """Two held threading.Locks used as binary semaphores: release one, acquire the other."""
    label = "threading.Lock"

    def __enter__(self) -> "LockPingPong":
        self.ping = threading.Lock()
        self.pong = threading.Lock()
        self.ping.acquire()
        self.pong.acquire()
        self.stopping = False
        self.peer = threading.Thread(target=self._peer, name="bench-lock-peer", daemon=True)
        self.peer.start()
        return self

    def _peer(self) -> None:
        take, give = self.ping.acquire, self.pong.release
        while True:
            take()
            if self.stopping:
                return
            give()

    def run(self, n: int) -> None:
        give, take = self.ping.release, self.pong.acquire
        for _ in range(n):
            give()
            take()

    def __exit__(self, *exc: object) -> None:
        self.stopping = True
        self.ping.release()
        self.peer.join()


class ConditionPingPong(Workload):
    """One threading.Condition and a turn variable; each side holds the lock
    for its whole loop and lets go only inside wait()."""
    label = "threading.Condition"

    def __enter__(self) -> "ConditionPingPong":
        self.cond = threading.Condition(threading.Lock())
        self.turn = 0
        self.stopping = False
        self.peer = threading.Thread(target=self._peer, name="bench-cond-peer", daemon=True)
        self.peer.start()
        return self

    def _peer(self) -> None:
        cond = self.cond
        wait, notify = cond.wait, cond.notify
        with cond:
            while True:
                while self.turn != 1:
                    wait()
                if self.stopping:
                    return
                self.turn = 0
                notify()

    def run(self, n: int) -> None:
        cond = self.cond
        wait, notify = cond.wait, cond.notify
        with cond:
            for _ in range(n):
                self.turn = 1
                notify()
                while self.turn != 0:
                    wait()

    def __exit__(self, *exc: object) -> None:
        with self.cond:
            self.stopping = True
            self.turn = 1
            self.cond.notify()
        self.peer.join()


# -- 2. park/unpark cycle --------------------------------------------------------

class PyParkThread:
    """kthread park/unpark in pure Python on one threading.Condition.

    The same protocol as kpark.KThread: park() returns once the worker sits
    in its park loop, unpark() releases it, the worker runs one pass of its
    loop per wake-up and acknowledges it; wait_ack() waits for that.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.should_park = False
        self.should_stop = False
        self.parked = False
        self.woken = False
        self.acks = 0
        self.seen = 0
        self.passes = 0
        self.thread = threading.Thread(target=self._loop, name="bench-pypark", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        cond = self.cond
        wait, notify_all = cond.wait, cond.notify_all
        with cond:
            while not self.should_stop:
                if self.should_park:                 # parkme()
                    self.parked = True
                    notify_all()
                    while self.should_park and not self.should_stop:
                        wait()
                    self.parked = False
                    continue
                self.passes += 1                      # one pass of the loop
                self.acks += 1
                notify_all()
                while not (self.woken or self.should_park or self.should_stop):
                    wait()                            # schedule()
                self.woken = False

    def park(self) -> None:
        with self.cond:
            self.should_park = True
            self.cond.notify_all()
            while not self.parked and not self.should_stop:
                self.cond.wait()

    def unpark(self) -> None:
        with self.cond:
            self.should_park = False
            self.cond.notify_all()

    def wait_ack(self) -> None:
        with self.cond:
            while self.acks == self.seen:
                self.cond.wait()
            self.seen = self.acks

    def stop(self) -> None:
        with self.cond:
            self.should_stop = True
            self.cond.notify_all()
        self.thread.join()


class ConditionParkCycle(Workload):
    """park()/unpark()/acknowledge in pure Python (PyParkThread)."""
    label = "Condition protocol"

    def __enter__(self) -> "ConditionParkCycle":
        self.worker = PyParkThread()
        self.worker.wait_ack()
        self.worker.park()
        return self

    def run(self, n: int) -> None:
        w = self.worker
        unpark, wait_ack, park = w.unpark, w.wait_ack, w.park
        for _ in range(n):
            unpark()
            wait_ack()
            park()

    def __exit__(self, *exc: object) -> None:
        self.worker.stop()


class TeardownSetupCycle(Workload):
    """What park/unpark avoids: stop and join the worker, create and start a
    new thread, wait for its first acknowledgement."""
    label = "teardown/setup"

    def __enter__(self) -> "TeardownSetupCycle":
        self._spawn()
        return self

    def _spawn(self) -> None:
        ack = threading.Lock()
        ack.acquire()
        go = threading.Lock()
        go.acquire()
        self.go = go
        self.thread = threading.Thread(target=self._body, args=(ack, go), daemon=True)
        self.thread.start()
        ack.acquire()                 # its first acknowledgement

    @staticmethod
    def _body(ack: Any, go: Any) -> None:
        ack.release()
        go.acquire()                  # sleep until stopped

    def run(self, n: int) -> None:
        for _ in range(n):
            self.go.release()         # stop ...
            self.thread.join()        # ... and join
            self._spawn()             # create, start, first ack

    def __exit__(self, *exc: object) -> None:
        self.go.release()
        self.thread.join()


# -- 3.-5. executors --------------------------------------------------------------

class ThreadPoolRecreate(Workload):
    """ThreadPoolExecutor shutdown and re-creation with the same number of
    workers, then one task round trip."""
    label = "ThreadPoolExecutor re-creation"

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def __enter__(self) -> "ThreadPoolRecreate":
        self.ex = ThreadPoolExecutor(self.workers)
        self.ex.submit(noop).result()
        return self

    def run(self, n: int) -> None:
        workers = self.workers
        for _ in range(n):
            self.ex.shutdown(wait=True)
            self.ex = ThreadPoolExecutor(workers)
            self.ex.submit(noop).result()

    def __exit__(self, *exc: object) -> None:
        self.ex.shutdown(wait=True)


class ThreadPoolSubmit(Workload):
    """submit(fn).result() on ThreadPoolExecutor(max_workers=ncpu)."""
    label = "ThreadPoolExecutor"

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def __enter__(self) -> "ThreadPoolSubmit":
        self.ex = ThreadPoolExecutor(self.workers)
        for f in [self.ex.submit(noop) for _ in range(4 * self.workers)]:
            f.result()
        return self

    def run(self, n: int) -> None:
        submit = self.ex.submit
        for _ in range(n):
            submit(noop).result()

    def __exit__(self, *exc: object) -> None:
        self.ex.shutdown(wait=True)


class ThreadPoolMap(ThreadPoolSubmit):
    """list(ex.map(fn, range(items))) on ThreadPoolExecutor(max_workers=ncpu)."""

    def __init__(self, workers: int, items: int) -> None:
        super().__init__(workers)
        self.items = items
        self.ops = items

    def run(self, n: int) -> None:
        for _ in range(n):
            out = list(self.ex.map(inc, range(self.items)))
            assert len(out) == self.items


class ThreadPoolScaling(Workload):
    """`tasks` GIL-releasing tasks (sha256 of 1 MiB) on ThreadPoolExecutor(workers)."""
    label = "ThreadPoolExecutor"

    def __init__(self, workers: int, tasks: int, data: bytes) -> None:
        self.workers = workers
        self.tasks = tasks
        self.data = data
        self.ops = tasks

    def __enter__(self) -> "ThreadPoolScaling":
        self.ex = ThreadPoolExecutor(self.workers)
        wait([self.ex.submit(noop) for _ in range(4 * self.workers)])
        return self

    def run(self, n: int) -> None:
        submit, data, sha = self.ex.submit, self.data, hashlib.sha256
        for _ in range(n):
            fs = [submit(sha, data) for _ in range(self.tasks)]
            for f in fs:
                f.result()

    def __exit__(self, *exc: object) -> None:
        self.ex.shutdown(wait=True)


class ThreadPoolPyScaling(ThreadPoolScaling):
    """`tasks` pure-Python tasks (py_work) on ThreadPoolExecutor(workers)."""

    def __init__(self, workers: int, tasks: int) -> None:
        super().__init__(workers, tasks, b"")

    def run(self, n: int) -> None:
        run_py_tasks(self.ex.submit, self.tasks, n)


# -- 6. flag ops ------------------------------------------------------------------

class LockedFlags:
    """An int guarded by a threading.Lock, with Flags' method names."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0

    def test_and_set_bit(self, nr: int) -> bool:
        mask = 1 << nr
        with self._lock:
            old = self._value
            self._value = old | mask
        return bool(old & mask)

    def clear_bit(self, nr: int) -> None:
        mask = ~(1 << nr)
        with self._lock:
            self._value &= mask


class LockedIntFlags(Workload):
    """test_and_set_bit + clear_bit on LockedFlags (methods, like Flags)."""
    label = "Lock + int (methods)"

    def __enter__(self) -> "LockedIntFlags":
        self.flags = LockedFlags()
        return self

    def run(self, n: int) -> None:
        tas, clear = self.flags.test_and_set_bit, self.flags.clear_bit
        for _ in range(n):
            tas(5)
            clear(5)


class LockedIntFlagsInline(Workload):
    """The same two operations written inline in the loop: no method calls."""
    label = "Lock + int (inline)"

    def __enter__(self) -> "LockedIntFlagsInline":
        self.lock = threading.Lock()
        self.value = 0
        return self

    def run(self, n: int) -> None:
        lock = self.lock
        mask = 1 << 5
        for _ in range(n):
            with lock:
                old = self.value
                self.value = old | mask
            was_set = bool(old & mask)
            with lock:
                self.value &= ~mask
        self.was_set: Optional[bool] = was_set if n else None
