"""What both sides of every benchmark share: the workload protocol, the
task functions, and the busy thread of benchmark 8 (a busy GIL, or on a
free-threaded build a busy third thread with no GIL to contend for)."""
from __future__ import annotations

import sys
import threading
from typing import Any, Callable, Optional

__all__ = ["Workload", "noop", "inc", "py_work", "PY_WORK_LOOPS", "BusyGIL", "SwitchInterval"]


def noop() -> None:
    """The trivial task of the submit-latency and hotplug benchmarks."""


def inc(x: int) -> int:
    """The trivial task of the map-throughput benchmark."""
    return x + 1


#: Iterations of one pure-Python scaling task (1-3 ms of bytecode here).
PY_WORK_LOOPS = 20_000


def py_work(loops: int) -> int:
    """The pure-Python scaling task: bytecode only, no lock, releases nothing.

    With a GIL two of these never run at once; without one they scale.
    """
    x = 0
    for i in range(loops):
        x += i ^ (x & 0xFF)
    return x


def run_py_tasks(submit: Callable[..., Any], tasks: int, n: int) -> None:
    """`n` rounds of `tasks` py_work tasks through `submit`, each round awaited.

    Both sides of the pure-Python scaling row run exactly this loop.
    """
    for _ in range(n):
        fs = [submit(py_work, PY_WORK_LOOPS) for _ in range(tasks)]
        for f in fs:
            f.result()


class Workload:
    """One side of one benchmark.

    `with W(...) as w:` builds the threads (not timed); `w.run(n)` performs
    n operations (timed by the runner); leaving the block tears down.  An
    operation counts for `ops` tasks (throughput workloads); `label` names
    the side in tables and JSON.
    """
    label = "?"
    ops = 1

    def __enter__(self) -> "Workload":
        return self

    def run(self, n: int) -> None:
        raise NotImplementedError

    def __exit__(self, *exc: object) -> None:
        pass


class BusyGIL:
    """A thread that runs pure-Python CPU work until the block ends.

    With a GIL it holds the GIL except when the interpreter makes it drop
    it: every sys.getswitchinterval() seconds if another thread asks for it.
    On a free-threaded build there is no GIL: it is a third thread busy on a
    CPU, competing with the measured threads only for the CPUs.
    """

    def __init__(self) -> None:
        self._stop = False
        self._thread: Optional[threading.Thread] = None
        self._running = threading.Event()
        self.loops = 0

    def _spin(self) -> None:
        self._running.set()
        loops = 0
        while not self._stop:
            x = 0
            for i in range(1000):
                x += i
            loops += 1
        self.loops = loops

    def __enter__(self) -> "BusyGIL":
        self._thread = threading.Thread(target=self._spin, name="bench-busy-gil", daemon=True)
        self._thread.start()
        self._running.wait()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop = True
        assert self._thread is not None
        self._thread.join()


class SwitchInterval(Workload):
    """Another workload, run with sys.setswitchinterval(seconds) in force.

    What a user can do about a busy GIL: a shorter switch interval makes the
    GIL holder let go sooner when another thread asks for it.
    """

    def __init__(self, inner: Workload, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds
        self.label = f"{inner.label}, switch interval {seconds * 1e3:g} ms"
        self.ops = inner.ops

    def __enter__(self) -> "SwitchInterval":
        self.inner.__enter__()
        return self

    def run(self, n: int) -> None:
        old = sys.getswitchinterval()
        sys.setswitchinterval(self.seconds)
        try:
            self.inner.run(n)
        finally:
            sys.setswitchinterval(old)

    def __exit__(self, *exc: Any) -> None:
        self.inner.__exit__(*exc)
