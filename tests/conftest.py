"""Shared fixtures and helpers for the kpark test suite.

- Every KThread a test creates is stopped when the test ends (autouse), so a
  failing test does not leave threads behind for the next one; a KThread
  that does not exit within STOP_GRACE seconds of stop() fails the test.
- wait_for() polls a state that must eventually hold and fails with a clear
  message if it does not: tests synchronise on observable state, they never
  "sleep and hope".
- task_state()/task_comm() read /proc/self/task/<tid>/{stat,comm}.
- A hang watchdog: pytest-timeout fires from Python code (its signal handler
  or its timer thread), so it cannot end a test whose threads deadlock while
  one of them holds the GIL; faulthandler's watchdog is a C thread, so it
  dumps every thread's stack and exits the run TIMEOUT + 30 s into a test.
"""
from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
from typing import Any, Callable, List, Optional

import pytest

import kpark.thread

#: How long the teardown waits for each leftover KThread to exit after stop().
STOP_GRACE = 10.0

#: Default deadline for states that must eventually hold.  Generous: the test
#: machine is small and shared.
DEFAULT_WAIT = 10.0


#: Seconds the hang watchdog allows beyond a test's pytest-timeout.
WATCHDOG_GRACE = 30.0

_watchdog_file = None


def pytest_configure(config: pytest.Config) -> None:
    # A duplicate of the real stderr, taken while capture is suspended, so the
    # watchdog's dump is seen even though the process exits at once.
    global _watchdog_file
    try:
        _watchdog_file = os.fdopen(os.dup(2), "w")
    except OSError:
        _watchdog_file = None


def _effective_timeout(request: pytest.FixtureRequest) -> float:
    """The pytest-timeout limit of this test (marker, then option, then ini)."""
    marker = request.node.get_closest_marker("timeout")
    value = None
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    if value is None:
        try:
            value = request.config.getoption("timeout")
        except ValueError:
            value = None
    if value is None:
        try:
            value = request.config.getini("timeout")
        except ValueError:
            value = None
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


@pytest.fixture(autouse=True)
def _hang_watchdog(request: pytest.FixtureRequest):
    """Exit the run (with every thread's stack) if a test hangs past its
    timeout + WATCHDOG_GRACE, even with the GIL held by a blocked thread."""
    try:
        own = float(request.config.getini("faulthandler_timeout") or 0)
    except (TypeError, ValueError):
        own = 0.0
    limit = _effective_timeout(request)
    if own > 0 or limit <= 0:
        yield                       # pytest's own faulthandler timer is in use
        return
    faulthandler.dump_traceback_later(limit + WATCHDOG_GRACE, exit=True,
                                      file=_watchdog_file or sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


#: Default length of the bounded wait in assert_stays().
QUIET = 0.2


def assert_stays(predicate: Callable[[], Any], what: str, duration: float = QUIET) -> None:
    """Check a condition now and during a bounded wait (for "X must not
    happen": each check can fail, and the last one is at `duration`)."""
    end = time.monotonic() + duration
    while True:
        assert predicate(), what
        if time.monotonic() >= end:
            break
        time.sleep(0.01)


def wait_for(predicate: Callable[[], Any], timeout: float = DEFAULT_WAIT,
             msg: str = "", interval: float = 0.001) -> Any:
    """Poll `predicate` until it returns a true value; return that value.

    Fails the test with `msg` (and the predicate's name) if it does not hold
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
            pytest.fail(f"condition did not hold within {timeout} s: {what}",
                        pytrace=True)
        time.sleep(interval)
        interval = min(interval * 2, 0.02)


def task_stat(native_id: int) -> Optional[List[str]]:
    """The fields of /proc/self/task/<tid>/stat after the comm, or None if gone."""
    try:
        with open(f"/proc/self/task/{native_id}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "tid (comm) S ppid ..."; comm may hold spaces and parentheses.
    rest = raw[raw.rindex(b")") + 2:]
    return rest.decode("ascii").split()


def task_state(native_id: int) -> Optional[str]:
    """The scheduler state letter of a thread of this process ('R', 'S', ...),
    or None once the thread is gone."""
    fields = task_stat(native_id)
    return None if fields is None else fields[0]


def task_comm(native_id: int) -> bytes:
    """The OS thread name, /proc/self/task/<tid>/comm, without the newline."""
    with open(f"/proc/self/task/{native_id}/comm", "rb") as f:
        return f.read().rstrip(b"\n")


def wait_asleep(native_id: int, settle: float = 0.05,
                timeout: float = DEFAULT_WAIT, msg: str = "") -> None:
    """Wait until the thread is asleep ('S') and stays so for `settle` seconds.

    The settle period (spent without the GIL) lets a thread that was merely
    waiting for the GIL take it and move on, so a thread that is still 'S'
    afterwards is blocked in a real wait, not in the GIL hand-off.
    """
    deadline = time.monotonic() + timeout
    while True:
        wait_for(lambda: task_state(native_id) == "S",
                 timeout=max(0.0, deadline - time.monotonic()),
                 msg=msg or f"thread {native_id} asleep (state S)")
        time.sleep(settle)
        if task_state(native_id) == "S":
            return
        if time.monotonic() >= deadline:
            pytest.fail(f"thread {native_id} did not stay asleep: {msg}")


def allowed_cpus() -> List[int]:
    return sorted(os.sched_getaffinity(0))


@pytest.fixture
def two_cpus() -> List[int]:
    """Two CPUs this process may use; skips the test on a 1-CPU affinity."""
    cpus = allowed_cpus()
    if len(cpus) < 2:
        pytest.skip("needs 2 CPUs in os.sched_getaffinity(0) "
                    f"(this process has {cpus})")
    return cpus[:2]


@pytest.fixture(autouse=True)
def _stop_kthreads_after_test(monkeypatch: pytest.MonkeyPatch):
    """Record every KThread constructed during the test; stop them afterwards."""
    created: List[kpark.thread.KThread] = []
    orig_init = kpark.thread.KThread.__init__

    def recording_init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        created.append(self)
        orig_init(self, *args, **kwargs)

    monkeypatch.setattr(kpark.thread.KThread, "__init__", recording_init)
    yield created
    monkeypatch.undo()
    leaked = []
    for k in created:
        core = getattr(k, "_core", None)
        if core is None:
            continue  # the constructor failed before the thread existed
        try:
            if not k.is_alive():
                continue
            k.stop(timeout=STOP_GRACE)
        except TimeoutError:
            leaked.append(k)
        except Exception:
            pass  # threadfn's own exception, re-raised by stop()
    if leaked:
        pytest.fail(f"KThreads did not exit within {STOP_GRACE} s of stop() "
                    f"at teardown: {leaked!r}", pytrace=False)


@pytest.fixture
def kthreads(_stop_kthreads_after_test):
    """The list of KThreads created so far by the running test."""
    return _stop_kthreads_after_test


def spawn(fn: Callable[[], Any]) -> "Result":
    """Run fn() in a plain daemon threading.Thread; returns a Result handle."""
    r = Result()

    def body() -> None:
        try:
            r.value = fn()
        except BaseException as e:  # noqa: BLE001 - recorded for the test
            r.exc = e
        finally:
            r.done.set()

    r.thread = threading.Thread(target=body, daemon=True)
    r.thread.start()
    return r


class Result:
    """Outcome of a call made in another thread (see spawn())."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.exc: Optional[BaseException] = None
        self.thread: Optional[threading.Thread] = None

    def get(self, timeout: float = DEFAULT_WAIT) -> Any:
        """The call's return value; re-raises its exception; fails on timeout."""
        if not self.done.wait(timeout):
            pytest.fail(f"call did not finish within {timeout} s")
        if self.exc is not None:
            raise self.exc
        return self.value
