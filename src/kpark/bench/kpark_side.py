"""The kpark side of `python -m kpark bench`.

Each class mirrors its baseline in threading_side.py: same protocol, same
hoisting of bound methods, same number of threads.  See that module's
docstring for the Workload protocol.
"""
from __future__ import annotations

import hashlib
import threading
from concurrent.futures import wait
from typing import List, Optional

from kpark import (Completion, Flags, KThread, PerCPUExecutor, parkme, schedule,
                   should_park, should_stop)
from kpark.bench.workload import Workload, inc, noop, run_py_tasks

__all__ = [
    "CompletionPingPong", "KThreadParkCycle", "ExecutorHotplug", "ExecutorSubmit",
    "ExecutorMap", "ExecutorScaling", "ExecutorPyScaling", "FlagsOps",
]


# -- 1. wake ping-pong ---------------------------------------------------------

class CompletionPingPong(Workload):
    """Two kpark.Completions: complete one, wait for the other."""
    label = "kpark.Completion"

    def __enter__(self) -> "CompletionPingPong":
        self.ping = Completion()
        self.pong = Completion()
        self.stopping = False
        self.peer = threading.Thread(target=self._peer, name="bench-completion-peer",
                                     daemon=True)
        self.peer.start()
        return self

    def _peer(self) -> None:
        wait, answer = self.ping.wait, self.pong.complete
        while True:
            wait()
            if self.stopping:
                return
            answer()

    def run(self, n: int) -> None:
        ping, wait = self.ping.complete, self.pong.wait
        for _ in range(n):
            ping()
            wait()

    def __exit__(self, *exc: object) -> None:
        self.stopping = True
        self.ping.complete()
        self.peer.join()


# -- 2. park/unpark cycle --------------------------------------------------------

class KThreadParkCycle(Workload):
    """kpark.KThread: park() returns parked, unpark(), one pass, acknowledge."""
    label = "kpark.KThread"

    def __enter__(self) -> "KThreadParkCycle":
        self.ack = Completion()
        self.passes = 0
        self.thread = KThread(self._loop, name="bench-kthread")
        self.thread.start()
        self.ack.wait()
        self.thread.park()
        return self

    def _loop(self, _: object) -> int:
        ack = self.ack.complete
        while not should_stop():
            if should_park():
                parkme()
                continue
            self.passes += 1          # one pass of the loop
            ack()
            schedule()
        return self.passes

    def run(self, n: int) -> None:
        k = self.thread
        unpark, wait_ack, park = k.unpark, self.ack.wait, k.park
        for _ in range(n):
            unpark()
            wait_ack()
            park()

    def __exit__(self, *exc: object) -> None:
        self.thread.stop()


# -- 3.-5. the executor -----------------------------------------------------------

class ExecutorHotplug(Workload):
    """Every CPU of a PerCPUExecutor offline, then online, then one task round trip."""
    label = "PerCPUExecutor"

    def __init__(self, cpus: Optional[List[int]] = None) -> None:
        self.cpus = cpus

    def __enter__(self) -> "ExecutorHotplug":
        self.ex = PerCPUExecutor(cpus=self.cpus)
        self.ex.submit(noop).result()
        return self

    def run(self, n: int) -> None:
        ex = self.ex
        cpus = list(ex.cpus)
        for _ in range(n):
            ex.offline(cpus, force=True)
            ex.online(cpus)
            ex.submit(noop).result()

    def __exit__(self, *exc: object) -> None:
        self.ex.shutdown(wait=True)


class ExecutorSubmit(Workload):
    """submit(fn).result() on PerCPUExecutor (one worker per CPU)."""
    label = "PerCPUExecutor"

    def __init__(self, cpus: Optional[List[int]] = None) -> None:
        self.cpus = cpus

    def __enter__(self) -> "ExecutorSubmit":
        self.ex = PerCPUExecutor(cpus=self.cpus)
        for f in [self.ex.submit(noop) for _ in range(4 * len(self.ex.cpus))]:
            f.result()
        return self

    def run(self, n: int) -> None:
        submit = self.ex.submit
        for _ in range(n):
            submit(noop).result()

    def __exit__(self, *exc: object) -> None:
        self.ex.shutdown(wait=True)


class ExecutorMap(ExecutorSubmit):
    """list(ex.map(fn, range(items))) on PerCPUExecutor: one task per item
    (map's default, as ThreadPoolExecutor), or `chunksize` items per task."""
    label = "PerCPUExecutor, per item"

    def __init__(self, items: int, cpus: Optional[List[int]] = None,
                 chunksize: int = 1) -> None:
        super().__init__(cpus)
        self.items = items
        self.ops = items
        self.chunksize = chunksize
        if chunksize > 1:
            self.label = f"PerCPUExecutor, chunked (chunksize={chunksize})"

    def run(self, n: int) -> None:
        for _ in range(n):
            out = list(self.ex.map(inc, range(self.items), chunksize=self.chunksize))
            assert len(out) == self.items


class ExecutorScaling(Workload):
    """`tasks` GIL-releasing tasks (sha256 of 1 MiB) on a PerCPUExecutor over `cpus`."""
    label = "PerCPUExecutor (pinned)"

    def __init__(self, cpus: List[int], tasks: int, data: bytes) -> None:
        self.cpus = cpus
        self.tasks = tasks
        self.data = data
        self.ops = tasks

    def __enter__(self) -> "ExecutorScaling":
        self.ex = PerCPUExecutor(cpus=self.cpus)
        wait([self.ex.submit(noop) for _ in range(4 * len(self.cpus))])
        return self

    def run(self, n: int) -> None:
        submit, data, sha = self.ex.submit, self.data, hashlib.sha256
        for _ in range(n):
            fs = [submit(sha, data) for _ in range(self.tasks)]
            for f in fs:
                f.result()

    def __exit__(self, *exc: object) -> None:
        self.ex.shutdown(wait=True)


class ExecutorPyScaling(ExecutorScaling):
    """`tasks` pure-Python tasks (py_work: no lock, nothing released) on a
    PerCPUExecutor over `cpus`."""

    def __init__(self, cpus: List[int], tasks: int) -> None:
        super().__init__(cpus, tasks, b"")

    def run(self, n: int) -> None:
        run_py_tasks(self.ex.submit, self.tasks, n)


# -- 6. flag ops ------------------------------------------------------------------

class FlagsOps(Workload):
    """kpark.Flags: test_and_set_bit + clear_bit, one atomic instruction each."""
    label = "kpark.Flags"

    def __enter__(self) -> "FlagsOps":
        self.flags = Flags()
        return self

    def run(self, n: int) -> None:
        tas, clear = self.flags.test_and_set_bit, self.flags.clear_bit
        for _ in range(n):
            tas(5)
            clear(5)
