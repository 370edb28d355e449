"""Helpers shared by the tests and by the child scripts of tests/scripts/.

Plain Python (no pytest): a child process imports this module too, after
putting tests/ on sys.path.  Tests synchronise on observable state, never
"sleep and hope": wait_for() polls a state that must come, with a deadline;
assert_stays() checks a state that must not change, for a bounded time.

- wait_for, assert_stays            polling with a deadline
- task_stat, task_state, task_comm  a thread's /proc entry; asleep,
  wait_asleep, main_asleep          ... and "asleep in a real wait"
- Prog, kloop                       the kernel-style thread loop
- where                             the caller's bound CPU and affinity
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, FrozenSet, List, Optional, Tuple, Union

#: Default deadline for states that must eventually hold.  Generous: the test
#: machine is small and shared.
DEFAULT_WAIT = 10.0

#: Default length of the bounded wait in assert_stays().
QUIET = 0.2


def wait_for(predicate: Callable[[], Any], timeout: float = DEFAULT_WAIT,
             msg: str = "", interval: float = 0.001) -> Any:
    """Poll `predicate` until it returns a true value; return that value.

    AssertionError with `msg` (or the predicate's name) if it does not hold
    within `timeout` seconds.  The predicate is evaluated once more after the
    deadline, so a slow machine only makes the wait longer, never wrong.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            value = predicate()
            if value:
                return value
            what = msg or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(f"condition did not hold within {timeout} s: {what}")
        time.sleep(interval)
        interval = min(interval * 2, 0.02)


def assert_stays(predicate: Callable[[], Any], what: str, duration: float = QUIET) -> None:
    """Check a condition now and during a bounded wait (for "X must not
    happen": each check can fail, and the last one is at `duration`)."""
    end = time.monotonic() + duration
    while True:
        assert predicate(), what
        if time.monotonic() >= end:
            break
        time.sleep(0.01)


# ---- threads in /proc --------------------------------------------------------

def task_stat(tid: int, pid: Union[int, str] = "self") -> Optional[List[str]]:
    """The fields of /proc/<pid>/task/<tid>/stat after the comm (the state
    letter first), or None once the thread is gone."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # "tid (comm) S ppid ..."; comm may hold spaces and parentheses.
    return raw[raw.rindex(b")") + 2:].decode("ascii").split()


def task_state(tid: int, pid: Union[int, str] = "self") -> Optional[str]:
    """The scheduler state letter of a thread ('R', 'S', ...), None if gone."""
    fields = task_stat(tid, pid)
    return None if fields is None else fields[0]


def task_comm(tid: int) -> bytes:
    """The OS thread name, /proc/self/task/<tid>/comm, without the newline."""
    with open(f"/proc/self/task/{tid}/comm", "rb") as f:
        return f.read().rstrip(b"\n")


def asleep(tid: int) -> bool:
    """True while the thread of this process is asleep ('S')."""
    return task_state(tid) == "S"


def wait_asleep(tid: int, settle: float = 0.05, timeout: float = DEFAULT_WAIT,
                msg: str = "") -> None:
    """Wait until the thread is asleep ('S') and stays so for `settle` seconds.

    The settle period (spent without the GIL) lets a thread that was merely
    waiting for the GIL take it and move on, so a thread that is still 'S'
    afterwards is blocked in a real wait, not in the GIL hand-off.
    """
    deadline = time.monotonic() + timeout
    while True:
        wait_for(lambda: asleep(tid), timeout=max(0.0, deadline - time.monotonic()),
                 msg=msg or f"thread {tid} asleep (state S)")
        time.sleep(settle)
        if asleep(tid):
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"thread {tid} did not stay asleep: {msg}")


def main_asleep(pid: int, settle: float = 0.02, limit: float = 10.0) -> bool:
    """True once the main thread of `pid` has been asleep ('S') in one and the
    same system call (/proc/<pid>/task/<pid>/syscall, when readable) for
    `settle` seconds; False after `limit` seconds.  The settle time tells a
    real blocking wait from a moment spent waiting for the GIL."""
    deadline = time.monotonic() + limit
    last = None
    since = 0.0
    while time.monotonic() < deadline:
        state = task_state(pid, pid)
        if state is None:
            return False
        try:
            with open(f"/proc/{pid}/task/{pid}/syscall", "rb") as f:
                call = f.read().strip()
        except OSError:
            call = b"?"
        now = time.monotonic()
        key = (state, call)
        if state == "S" and not call.startswith(b"running"):
            if key != last:
                last, since = key, now
            elif now - since >= settle:
                return True
        else:
            last = None
        time.sleep(0.001)
    return False


# ---- the kernel-style loop ---------------------------------------------------

class Prog:
    """What a kloop thread has done: `n` loop iterations (written by it only)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


def kloop(p: Prog) -> int:
    """threadfn: the kernel's kthread loop; returns the iterations.

        while (!kthread_should_stop()) {
            if (kthread_should_park()) kthread_parkme();
            ...one round of work...;  schedule();
        }
    """
    import kpark
    while not kpark.should_stop():
        if kpark.should_park():
            kpark.parkme()
        p.n += 1
        kpark.schedule()
    return p.n


def where() -> Tuple[Optional[int], FrozenSet[int]]:
    """(the calling KThread's bound CPU or None, the caller's CPU affinity)."""
    import kpark
    k = kpark.current()
    return (k.cpu if k is not None else None), frozenset(os.sched_getaffinity(0))
