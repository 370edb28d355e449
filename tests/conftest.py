"""Shared fixtures and helpers for the kpark test suite.

- Every KThread a test creates is stopped when the test ends (autouse), so a
  failing test does not leave threads behind for the next one; a KThread
  that does not exit within STOP_GRACE seconds of stop() fails the test.
- The helpers the tests and the child scripts share (wait_for, assert_stays,
  task_state, kloop, ...) live in tests/helpers.py; they are re-exported
  here for the test modules that import them from conftest.
- A hang watchdog: pytest-timeout fires from Python code (its signal handler
  or its timer thread), so it cannot end a test whose threads deadlock while
  one of them holds the GIL; faulthandler's watchdog is a C thread, so it
  dumps every thread's stack and exits the run TIMEOUT + 30 s into a test.
"""
from __future__ import annotations

import faulthandler
import functools
import os
import sys
import threading
from typing import Any, Callable, List, Optional

import pytest

import kpark.thread
from helpers import (DEFAULT_WAIT, QUIET, assert_stays, asleep, task_comm,  # noqa: F401
                     task_stat, task_state, wait_asleep, wait_for, where)

#: How long the teardown waits for each leftover KThread to exit after stop().
STOP_GRACE = 10.0


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

    @functools.wraps(orig_init)    # inspect.signature(KThread) stays the real one
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
