"""kpark.KThread: its semantics, rules 1-13 (each a section below, its tests
named test_semNN_*), and the public API surface.

Tests synchronise on observable state (is_parked, started, Events, the
/proc task state) and poll with deadlines for what must eventually hold.
Where a rule says something must NOT happen (threadfn runs, a parked thread
moves), the test checks it at once and again after a bounded wait.
"""
from __future__ import annotations

import collections
import os
import re
import threading
import time

import pytest

import kpark
from kpark import (KThread, ThreadExitedError, create_on_cpu, current, parkme,
                   schedule, should_park, should_stop)

from conftest import (Result, allowed_cpus, assert_stays, spawn, task_comm,
                      task_state, wait_asleep, wait_for)

#: The bounded wait used to check that something does not happen.
QUIET = 0.2


def busy(n: int = 2000) -> int:
    """A little pure-Python work (holds the GIL, no system calls)."""
    return sum(range(n))


class Agent:
    """A KThread that runs commands sent to it; its loop is

        while not should_stop():
            if auto_park: parkme()
            run pending commands
            schedule()

    submit() appends a command and wake()s the thread.  If a wake were lost,
    call() fails with a clear timeout (that is semantics 11 at work).
    """

    def __init__(self, auto_park: bool = True, name: str | None = None) -> None:
        self.auto_park = auto_park
        self.cmds: collections.deque = collections.deque()
        self.loops = 0
        self.k = KThread(self._loop, name=name)

    def _loop(self, _data: object) -> str:
        while not should_stop():
            if self.auto_park:
                parkme()
            while self.cmds:
                fn, res = self.cmds.popleft()
                try:
                    res.value = fn()
                except BaseException as e:  # noqa: BLE001
                    res.exc = e
                finally:
                    res.done.set()
            self.loops += 1
            schedule()
        return "agent done"

    def submit(self, fn) -> Result:
        res = Result()
        self.cmds.append((fn, res))
        self.k.wake()
        return res

    def call(self, fn, timeout: float = 10.0):
        return self.submit(fn).get(timeout)


class Spinner:
    """A KThread doing user work in a loop and calling parkme() between chunks.

    `count` moves only while threadfn runs user code.
    """

    def __init__(self, chunk: int = 2000, name: str | None = None) -> None:
        self.count = 0
        self.chunk = chunk
        self.k = KThread(self._loop, name=name)

    def _loop(self, _data: object) -> int:
        while not should_stop():
            parkme()
            busy(self.chunk)
            self.count += 1
        return self.count


# ---------------------------------------------------------------------------
# 1. threadfn never runs before the first wake
# ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_sem01_threadfn_not_called_before_first_wake():
    entered = threading.Event()
    k = KThread(lambda d: entered.set())
    # The OS thread exists at once, asleep in its first sleep.
    assert k.native_id is not None and k.ident is not None
    assert os.path.exists(f"/proc/self/task/{k.native_id}")
    assert k.is_alive()
    wait_for(lambda: task_state(k.native_id) == "S", msg="first sleep is a real sleep")
    assert not entered.wait(QUIET), "threadfn ran before the first wake"
    assert not k.started
    # The first wake finds the thread asleep and starts threadfn.
    assert k.wake() is True
    assert entered.wait(10), "the first wake did not start threadfn"
    wait_for(lambda: k.started)


@pytest.mark.timeout(30)
def test_sem01_unpark_of_never_woken_thread_does_not_start_it():
    entered = threading.Event()
    k = KThread(lambda d: entered.set())
    for _ in range(3):
        k.unpark()
    assert not entered.wait(QUIET), "unpark() started a never-woken thread"
    assert not k.started and not k.should_park and not k.is_parked
    # Still asleep in the first sleep: this wake is the first one.
    assert k.wake() is True
    assert entered.wait(10)


# ---------------------------------------------------------------------------
# 2. park() returns only when the thread is really parked
# ---------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_sem02_park_returns_only_when_parked():
    # Long chunks of user code between parkme() calls: a park() that returned
    # on the request instead of the arrival would find is_parked False.
    s = Spinner(chunk=200_000)
    s.k.start()
    for i in range(20):
        assert s.k.park(timeout=10) is None
        assert s.k.is_parked, f"cycle {i}: park() returned before the thread parked"
        assert s.k.should_park
        c = s.count
        assert s.count == c
        s.k.unpark()
        assert not s.k.is_parked
        wait_for(lambda: s.count > c, msg=f"cycle {i}: unparked thread runs again")


@pytest.mark.timeout(30)
def test_sem02_parked_thread_runs_no_user_code():
    s = Spinner()
    s.k.start()
    wait_for(lambda: s.count > 3)
    s.k.park(timeout=10)
    c = s.count
    assert_stays(lambda: s.count == c, "a parked thread ran user code")
    assert s.k.is_parked
    s.k.unpark()
    wait_for(lambda: s.count > c, msg="unparked thread resumes its user code")


@pytest.mark.timeout(30)
def test_sem02_parked_thread_is_asleep_in_proc():
    s = Spinner()
    s.k.start()
    s.k.park(timeout=10)
    # Two-phase: once park() returned the thread is asleep (the futex or
    # condition-variable syscall may still be entering: poll briefly).
    wait_for(lambda: task_state(s.k.native_id) == "S", timeout=2,
             msg="parked thread's /proc state is S")
    assert_stays(lambda: task_state(s.k.native_id) == "S",
                 "parked thread woke up (not S) with nothing sent to it")
    assert s.k.is_parked


@pytest.mark.timeout(30)
def test_sem02_parked_thread_holds_no_gil():
    s = Spinner()
    s.k.start()
    s.k.park(timeout=10)
    # Another Python thread and the main thread both run Python code.
    ticks = [0]
    stop_flag = threading.Event()

    def ticker():
        while not stop_flag.is_set():
            ticks[0] += 1
            busy(100)

    t = threading.Thread(target=ticker, daemon=True)
    t.start()
    try:
        wait_for(lambda: ticks[0] > 1000, msg="a plain thread runs while a KThread is parked")
        total = 0
        for _ in range(200):
            total += busy(1000)
        assert total == 200 * busy(1000)
    finally:
        stop_flag.set()
        t.join(10)
    assert s.k.is_parked


# ---------------------------------------------------------------------------
# 3. park() of a never-woken thread parks it without calling threadfn
# ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_sem03_park_never_woken_then_unpark_calls_threadfn():
    entered = threading.Event()

    def fn(data):
        entered.set()
        while not should_stop():
            schedule()
        return data

    k = KThread(fn, "payload")
    k.park(timeout=10)
    assert k.is_parked and not k.started
    assert not entered.wait(QUIET), "park() of a never-woken thread called threadfn"
    wait_for(lambda: task_state(k.native_id) == "S", timeout=2)
    k.unpark()
    assert entered.wait(10), "unpark() did not start threadfn"
    assert k.started and not k.is_parked and not k.should_park
    assert k.stop(timeout=10) == "payload"


# ---------------------------------------------------------------------------
# 4. parked means deaf
# ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_sem04_wake_does_not_release_a_parked_thread():
    s = Spinner()
    s.k.start()
    s.k.park(timeout=10)
    c = s.count
    for _ in range(200):
        assert s.k.wake() is False, "wake() of a parked thread reported a wake-up"
    assert_stays(lambda: s.k.is_parked and s.count == c,
                 "wake() released a parked thread")
    s.k.unpark()
    wait_for(lambda: s.count > c)


@pytest.mark.timeout(30)
def test_sem04_wakes_while_parked_leave_no_token():
    results = []

    def fn(_):
        while not should_stop():
            schedule()                       # park() wakes us here
            parkme()
            if should_stop():
                break
            results.append(schedule(0.3))    # must time out: wakes were ignored

    k = KThread(fn)
    k.start()
    k.park(timeout=10)
    for _ in range(50):
        assert k.wake() is False
    k.unpark()
    wait_for(lambda: results, msg="thread ran again after unpark()")
    assert results[0] is False, \
        "a wake() sent while parked was remembered and woke schedule()"


@pytest.mark.timeout(30)
def test_sem04_never_started_parked_thread_is_deaf_too():
    entered = threading.Event()
    k = KThread(lambda d: entered.set())
    k.park(timeout=10)
    for _ in range(20):
        assert k.wake() is False
    assert not entered.wait(QUIET), "wake() started a parked, never-started thread"
    assert k.is_parked and not k.started
    k.unpark()
    assert entered.wait(10)


@pytest.mark.timeout(30)
def test_sem04_stop_releases_a_parked_thread():
    s = Spinner()
    s.k.start()
    s.k.park(timeout=10)
    count = s.k.stop(timeout=10)
    assert count == s.count
    assert not s.k.is_alive() and not s.k.is_parked


# ---------------------------------------------------------------------------
# 5. park() by the thread itself only sets the bit
# ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_sem05_self_park_sets_bit_and_parks_at_next_parkme():
    seen = {}
    after_parkme = threading.Event()
    go = threading.Event()

    def fn(_):
        me = current()
        me.park()                                  # must return at once
        seen["should_park"] = should_park()
        seen["is_parked"] = me.is_parked
        seen["returned"] = True
        while not go.is_set() and not should_stop():
            schedule(0.01)                         # user code goes on
        parkme()
        after_parkme.set()
        while not should_stop():
            schedule()

    k = KThread(fn)
    k.start()
    wait_for(lambda: seen.get("returned"), msg="self-park() returned")
    assert seen["should_park"] is True
    assert seen["is_parked"] is False
    # Pending, but not parked until the thread calls parkme().
    assert_stays(lambda: k.should_park and not k.is_parked,
                 "a self-park parked the thread before parkme()")
    go.set()
    wait_for(lambda: k.is_parked, msg="the thread parks at its next parkme()")
    assert not after_parkme.wait(QUIET), "parkme() returned while parked"
    k.unpark()
    assert after_parkme.wait(10)


# ---------------------------------------------------------------------------
# 6. park() of a parked thread returns at once; concurrent park() calls
# ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_sem06_park_already_parked_returns_at_once():
    s = Spinner()
    s.k.start()
    s.k.park(timeout=10)
    c = s.count
    for _ in range(10):
        t0 = time.monotonic()
        s.k.park(timeout=5)
        assert time.monotonic() - t0 < 1.0
        assert s.k.is_parked
    # One unpark() releases it, however many park() calls were made.
    s.k.unpark()
    wait_for(lambda: s.count > c)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["running", "schedule", "never_woken"])
def test_sem06_two_controllers_park_at_once_both_return(where):
    if where == "running":
        s = Spinner()
        k = s.k
        k.start()
    elif where == "schedule":
        k = Agent(auto_park=True).k
        k.start()
    else:
        k = KThread(lambda d: None)
    rounds = 1 if where == "never_woken" else 15
    for i in range(rounds):
        barrier = threading.Barrier(2)

        def controller():
            barrier.wait(10)
            k.park(timeout=10)
            return k.is_parked

        a, b = spawn(controller), spawn(controller)
        assert a.get(15) is True, f"round {i}: first controller"
        assert b.get(15) is True, f"round {i}: second controller"
        assert k.is_parked
        if where == "running":
            c = s.count
            k.unpark()
            wait_for(lambda: s.count > c)
        else:
            k.unpark()
            wait_for(lambda: not k.is_parked)


# ---------------------------------------------------------------------------
# 7. park() of an exited thread raises ThreadExitedError at once
# ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_sem07_park_exited_thread_raises_without_blocking():
    k = KThread(lambda d: 42)
    k.start()
    k.join(10)
    assert not k.is_alive()
    assert issubclass(ThreadExitedError, RuntimeError)
    for _ in range(3):
        t0 = time.monotonic()
        with pytest.raises(ThreadExitedError):
            k.park()
        assert time.monotonic() - t0 < 1.0
    assert not k.is_parked and not k.should_park
    assert k.stop() == 42


@pytest.mark.timeout(30)
def test_sem07_park_stopped_never_woken_thread_raises():
    k = KThread(lambda d: 1)
    assert k.stop(timeout=10) is None
    t0 = time.monotonic()
    with pytest.raises(ThreadExitedError):
        k.park()
    assert time.monotonic() - t0 < 1.0


@pytest.mark.timeout(30)
def test_sem07_thread_exiting_instead_of_parking_raises():
    def fn(_):
        schedule()          # park() wakes us; we return instead of parking
        return "bye"

    k = KThread(fn)
    k.start()
    with pytest.raises(ThreadExitedError):
        k.park(timeout=10)
    assert not k.is_alive()
    assert k.stop() == "bye"


# ---------------------------------------------------------------------------
# 8. park(timeout): TimeoutError, and the request stays pending
# ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_sem08_park_timeout_raises_and_request_stays_pending():
    a = Agent(auto_park=False)
    a.k.start()
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        a.k.park(timeout=0.3)
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.29, f"park(timeout=0.3) gave up after {elapsed:.3f} s"
    assert elapsed < 5.0
    assert_stays(lambda: a.k.should_park and not a.k.is_parked,
                 "the park request did not stay pending after TimeoutError")
    assert a.call(should_park) is True
    # The pending request parks the thread at its next parkme().
    res = a.submit(parkme)
    wait_for(lambda: a.k.is_parked, msg="pending request parks the thread at parkme()")
    assert not res.done.wait(QUIET)
    a.k.unpark()
    res.get(10)
    assert not a.k.should_park and not a.k.is_parked


@pytest.mark.timeout(30)
def test_sem08_unpark_clears_request_left_by_park_timeout():
    a = Agent(auto_park=False)
    a.k.start()
    with pytest.raises(TimeoutError):
        a.k.park(timeout=0.1)
    assert a.k.should_park
    a.k.unpark()
    assert not a.k.should_park
    assert a.call(should_park) is False
    a.call(parkme, timeout=10)       # returns at once: nothing pending
    assert not a.k.is_parked


@pytest.mark.timeout(30)
def test_sem08_unpark_withdraws_request_of_a_blocked_park():
    a = Agent(auto_park=False)
    a.k.start()
    r = spawn(lambda: a.k.park())    # no timeout: waits for a parkme() never made
    wait_for(lambda: a.k.should_park)
    assert not r.done.wait(QUIET), "park() returned before the thread parked"
    a.k.unpark()
    assert r.get(10) is None, "park() did not return after unpark() withdrew it"
    assert not a.k.is_parked and not a.k.should_park


# ---------------------------------------------------------------------------
# 9. unpark() no-op; per-CPU re-pin on unpark
# ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_sem09_noop_unpark_does_not_wake_schedule():
    out = []
    go = threading.Event()

    def fn(_):
        out.append(schedule(0.5))        # unpark() below must not end this early
        while not go.is_set():
            schedule(0.01)
        out.append(schedule(0.3))        # unpark() of a running thread: no token

    k = KThread(fn)
    k.start()
    for _ in range(3):
        k.unpark()
    assert not k.should_park and not k.is_parked
    wait_for(lambda: len(out) == 1)
    assert out[0] is False, "a no-op unpark() woke schedule() or left a token"
    for _ in range(3):
        k.unpark()                       # the thread is running its loop
    go.set()
    wait_for(lambda: len(out) == 2)
    assert out[1] is False, "a no-op unpark() of a running thread left a wake token"


@pytest.mark.timeout(30)
def test_sem09_unpark_repins_per_cpu_thread_before_user_code(two_cpus):
    home, other = two_cpus
    seen = []

    def fn(_):
        seen.append(os.sched_getaffinity(0))          # first user code
        while not should_stop():
            parkme()
            seen.append(os.sched_getaffinity(0))      # first code after parkme()
            schedule()

    k = create_on_cpu(fn, None, home)
    assert k.is_parked and k.is_per_cpu and k.cpu == home
    # Somebody moves the parked thread; the first unpark() must move it back.
    os.sched_setaffinity(k.native_id, {other})
    assert os.sched_getaffinity(k.native_id) == {other}
    k.unpark()
    wait_for(lambda: len(seen) >= 2)
    assert seen[0] == {home}, f"threadfn started with affinity {seen[0]}"
    for i in range(3):
        n = len(seen)
        k.park(timeout=10)
        os.sched_setaffinity(k.native_id, {other})
        k.unpark()
        wait_for(lambda: len(seen) > n, msg=f"cycle {i}: thread resumes")
        assert seen[n] == {home}, \
            f"cycle {i}: user code ran with affinity {seen[n]} after unpark()"
    assert os.sched_getaffinity(k.native_id) == {home}


# ---------------------------------------------------------------------------
# 10. stop()
# ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_sem10_stop_wakes_schedule_and_returns_result():
    sentinel = object()

    def fn(_):
        while not should_stop():
            schedule()
        return sentinel

    k = KThread(fn)
    k.start()
    wait_asleep(k.native_id, msg="thread asleep in schedule()")
    assert k.stop(timeout=10) is sentinel
    assert k.should_stop and not k.is_alive()
    # Again: the same result.
    assert k.stop() is sentinel
    assert k.stop(timeout=0) is sentinel


@pytest.mark.timeout(30)
def test_sem10_stop_sets_should_stop_even_after_threadfn_returned():
    # "stop() sets should_stop"; the property is "True once stop() was called".
    k = KThread(lambda d: "r")
    k.start()
    k.join(10)
    assert not k.is_alive() and not k.should_stop
    assert k.stop(timeout=10) == "r"
    assert k.should_stop, "should_stop is False after stop() was called"


@pytest.mark.timeout(30)
def test_sem10_stop_releases_park_loop_and_clears_should_park():
    seen = {}

    def fn(_):
        while not should_stop():
            parkme()
        seen["should_park"] = should_park()
        seen["should_stop"] = should_stop()
        return "out"

    k = KThread(fn)
    k.start()
    k.park(timeout=10)
    assert k.stop(timeout=10) == "out"
    assert seen == {"should_park": False, "should_stop": True}
    assert not k.should_park and not k.is_parked and k.should_stop


@pytest.mark.timeout(30)
def test_sem10_stop_clears_pending_park_request():
    a = Agent(auto_park=False)
    a.k.start()
    with pytest.raises(TimeoutError):
        a.k.park(timeout=0.05)
    assert a.k.should_park
    assert a.k.stop(timeout=10) == "agent done"
    assert not a.k.should_park


@pytest.mark.timeout(30)
def test_sem10_stop_reraises_threadfn_exception_without_excepthook(monkeypatch):
    hooked = []
    monkeypatch.setattr(threading, "excepthook", lambda args: hooked.append(args))

    def fn(_):
        raise ValueError("boom")

    k = KThread(fn)
    k.start()
    k.join(10)
    assert not k.is_alive()
    with pytest.raises(ValueError, match="boom") as first:
        k.stop()
    with pytest.raises(ValueError) as second:
        k.stop()
    assert first.value is second.value, "stop() must re-raise the same exception object"
    assert hooked == [], "threading.excepthook was called for threadfn's exception"


@pytest.mark.timeout(30)
def test_sem10_stop_before_wake_never_enters_threadfn():
    entered = threading.Event()
    k = KThread(lambda d: entered.set())
    assert k.stop(timeout=10) is None
    assert not k.started and not k.is_alive()
    assert k.wake() is False
    assert not entered.wait(QUIET), "threadfn entered after stop()"
    assert k.stop() is None


@pytest.mark.timeout(30)
def test_sem10_stop_of_parked_never_started_thread_never_enters_threadfn():
    # park() before the first wake, then stop(): the park loop is left for
    # the exit, never for threadfn.
    entered = threading.Event()
    k = KThread(lambda d: entered.set() or "ran")
    k.park(timeout=10)
    assert k.is_parked and not k.started
    assert k.stop(timeout=10) is None
    assert not k.started and not k.is_alive()
    assert not entered.is_set(), "threadfn was entered after stop()"
    assert k.stop() is None


@pytest.mark.timeout(30)
def test_sem10_schedule_never_sleeps_after_stop_released_park_loop():
    # stop() of a parked thread releases the park loop (no token is left
    # there); a loop that goes parkme() -> schedule() must still exit.
    def fn(_):
        schedule()                          # park() wakes us
        parkme()                            # stop() releases us
        t0 = time.monotonic()
        r = [schedule(), schedule(20), schedule(0)]
        return r, time.monotonic() - t0

    k = KThread(fn)
    k.start()
    k.park(timeout=10)
    r, elapsed = k.stop(timeout=15)
    assert r == [True, True, True], "schedule() after stop() must return True"
    assert elapsed < 10, f"schedule() slept {elapsed:.1f} s although stop() was called"


@pytest.mark.timeout(60)
def test_sem10_wake_then_stop_at_once_is_consistent():
    # wake() immediately followed by stop() may win the race against threadfn;
    # then threadfn is never entered and stop() returns None.
    for _ in range(30):
        calls = []

        def fn(d, calls=calls):
            calls.append(d)
            return "ran"

        k = KThread(fn, "x")
        k.wake()
        r = k.stop(timeout=10)
        assert r == ("ran" if k.started else None)
        assert calls == (["x"] if k.started else []), \
            "threadfn entered although stop() returned None"


@pytest.mark.timeout(30)
def test_sem10_stop_from_itself_raises_runtime_error():
    out = {}

    def fn(_):
        try:
            current().stop()
        except RuntimeError as e:
            out["exc"] = e
        return "still here"

    k = KThread(fn)
    k.start()
    assert k.stop(timeout=10) == "still here"
    assert isinstance(out.get("exc"), RuntimeError)


@pytest.mark.timeout(30)
def test_sem10_stop_timeout_keeps_stop_request():
    gate = threading.Event()

    def fn(_):
        gate.wait(20)            # ignores should_stop until the gate opens
        return should_stop()

    k = KThread(fn)
    k.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            k.stop(timeout=0.2)
        assert time.monotonic() - t0 >= 0.19
        assert k.should_stop and k.is_alive()
    finally:
        gate.set()
    assert k.stop(timeout=10) is True


# ---------------------------------------------------------------------------
# 11. schedule()
# ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_sem11_wake_while_running_is_one_token_not_a_count():
    out = []
    go = threading.Event()

    def fn(_):
        while not go.is_set():
            busy(100)                     # running: not in schedule()
        t0 = time.monotonic()
        out.append(schedule(5))           # the remembered wake: at once
        out.append(time.monotonic() - t0)
        out.append(schedule(0.3))         # three wakes are still one token

    k = KThread(fn)
    k.start()
    assert k.wake() is False              # running: remembered, not a wake-up
    assert k.wake() is False
    assert k.wake() is False
    go.set()
    wait_for(lambda: len(out) == 3)
    assert out[0] is True, "a wake() sent while running was lost"
    assert out[1] < 4.0
    assert out[2] is False, "several wake() calls were counted, not one token"


@pytest.mark.timeout(30)
def test_sem11_schedule_times_out_false_without_wake():
    out = []

    def fn(_):
        for _ in range(3):
            t0 = time.monotonic()
            out.append((schedule(0.1), time.monotonic() - t0))

    k = KThread(fn)
    k.start()
    k.join(20)
    assert not k.is_alive()
    for r, elapsed in out:
        assert r is False, "schedule() returned True with nothing sent"
        assert elapsed >= 0.095


@pytest.mark.timeout(30)
def test_sem11_timed_out_schedule_sleeps_without_gil():
    out = []

    def fn(_):
        out.append(schedule(1.0))

    k = KThread(fn)
    k.start()
    # While the KThread sits in schedule(1.0), the main thread keeps running
    # Python: no gap between iterations comes near the length of the sleep.
    longest = 0.0
    last = time.monotonic()
    asleep = False
    while not out:
        busy(500)
        now = time.monotonic()
        longest = max(longest, now - last)
        last = now
        if not asleep and task_state(k.native_id) == "S":
            asleep = True
    assert out == [False]
    assert asleep, "the KThread was never seen asleep during schedule(1.0)"
    assert longest < 0.5, f"main thread stalled for {longest:.3f} s during schedule()"


@pytest.mark.timeout(30)
def test_sem11_wake_of_sleeping_thread_returns_true_and_ends_schedule():
    out = []

    def fn(_):
        t0 = time.monotonic()
        out.append(schedule(20))
        out.append(time.monotonic() - t0)

    k = KThread(fn)
    k.start()
    wait_asleep(k.native_id, msg="thread asleep in schedule(20)")
    assert k.wake() is True, "wake() of a thread asleep in schedule() must return True"
    wait_for(lambda: len(out) == 2)
    assert out[0] is True and out[1] < 15


@pytest.mark.timeout(30)
def test_sem11_park_wakes_schedule():
    out = []

    def fn(_):
        out.append(schedule(20))
        parkme()

    k = KThread(fn)
    k.start()
    wait_asleep(k.native_id)
    t0 = time.monotonic()
    k.park(timeout=15)
    assert time.monotonic() - t0 < 10
    assert out == [True]


@pytest.mark.timeout(30)
def test_sem11_unpark_wakes_schedule():
    out = []

    def fn(_):
        current().park()                 # pending request: unpark() has work
        out.append(schedule(20))
        out.append(should_park())

    k = KThread(fn)
    k.start()
    wait_for(lambda: k.should_park)
    wait_asleep(k.native_id)
    k.unpark()
    wait_for(lambda: len(out) == 2)
    assert out == [True, False]


@pytest.mark.timeout(30)
def test_sem11_stop_wakes_schedule():
    def fn(_):
        return schedule(20)

    k = KThread(fn)
    k.start()
    wait_asleep(k.native_id)
    t0 = time.monotonic()
    assert k.stop(timeout=15) is True
    assert time.monotonic() - t0 < 10


@pytest.mark.timeout(60)
def test_sem11_no_lost_wakeups_ping_pong():
    # A wake() sent around the time the thread goes to sleep is never lost.
    a = Agent(auto_park=False)
    a.k.start()
    for i in range(500):
        assert a.call(lambda i=i: i, timeout=10) == i


# ---------------------------------------------------------------------------
# 12. bind() and create_on_cpu(): CPU validation and affinity
# ---------------------------------------------------------------------------

def _bad_cpu() -> int:
    return max(allowed_cpus()) + 1000


def _check_bad_cpu_message(exc: BaseException, cpu: int) -> None:
    msg = str(exc)
    assert re.search(rf"\b{cpu}\b", msg), f"message does not name CPU {cpu}: {msg!r}"
    for c in allowed_cpus():
        assert re.search(rf"\b{c}\b", msg), f"message does not list allowed CPU {c}: {msg!r}"


def test_sem12_bind_rejects_cpu_not_allowed():
    k = KThread(lambda d: None)
    bad = _bad_cpu()
    with pytest.raises(ValueError) as ei:
        k.bind(bad)
    _check_bad_cpu_message(ei.value, bad)
    assert k.cpu is None


def test_sem12_create_on_cpu_rejects_cpu_not_allowed(kthreads):
    bad = _bad_cpu()
    with pytest.raises(ValueError) as ei:
        create_on_cpu(lambda d: None, None, bad)
    _check_bad_cpu_message(ei.value, bad)
    assert kthreads == [], "create_on_cpu() made a thread before validating the CPU"


@pytest.mark.parametrize("cpu, exc", [(-1, ValueError), (-5, ValueError),
                                      ("0", TypeError), (0.0, TypeError),
                                      (None, TypeError), (True, TypeError)])
def test_sem12_bind_and_create_on_cpu_reject_bad_cpu_values(cpu, exc, kthreads):
    k = KThread(lambda d: None)
    with pytest.raises(exc):
        k.bind(cpu)
    with pytest.raises(exc):
        create_on_cpu(lambda d: None, None, cpu)
    assert kthreads == [k]
    assert k.cpu is None and not k.is_per_cpu
    # The thread is still unbound and bindable.
    k.bind(allowed_cpus()[0])
    assert k.cpu == allowed_cpus()[0]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("cpu", allowed_cpus())
def test_sem12_bind_pins_before_start_and_inside_threadfn(cpu):
    seen = []
    k = KThread(lambda d: seen.append(os.sched_getaffinity(0)))
    k.bind(cpu)
    assert k.cpu == cpu and not k.is_per_cpu
    assert os.sched_getaffinity(k.native_id) == {cpu}
    k.start()
    k.join(10)
    assert seen == [{cpu}]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("cpu", allowed_cpus())
def test_sem12_create_on_cpu_runs_threadfn_on_its_cpu(cpu):
    seen = []
    k = create_on_cpu(lambda d: seen.append((d, os.sched_getaffinity(0))), "d", cpu)
    assert k.is_parked and k.is_per_cpu and k.cpu == cpu
    assert not k.started and seen == []
    assert k.name == f"kpark/{cpu}"
    k.unpark()
    k.join(10)
    assert not k.is_alive()
    assert seen == [("d", {cpu})]


@pytest.mark.timeout(30)
def test_sem12_bind_after_first_wake_raises():
    a = Agent()
    a.k.start()
    cpu = allowed_cpus()[0]
    with pytest.raises(RuntimeError):
        a.k.bind(cpu)
    assert a.k.cpu is None
    # also after a park() of a never-woken thread: that counts as a wake
    k = KThread(lambda d: None)
    k.park(timeout=10)
    with pytest.raises(RuntimeError):
        k.bind(cpu)


# ---------------------------------------------------------------------------
# 13. names, threading.enumerate()
# ---------------------------------------------------------------------------

def _expected_comm(name: str) -> bytes:
    raw = name.encode("utf-8")[:15]
    return raw.decode("utf-8", "ignore").encode("utf-8")


def test_sem13_default_name_matches_comm():
    k = KThread(lambda d: None)
    assert re.fullmatch(r"KThread-\d+", k.name)
    assert task_comm(k.native_id) == k.name.encode()


@pytest.mark.parametrize("name", [
    "worker",
    "a-rather-long-thread-name",        # ASCII, cut at 15 bytes
    "aaaaaaaaaaaaaaé-x",                # 14 + a 2-byte char crossing byte 15
    "ñandú-ñandú-αβγδ",                 # multi-byte throughout
    "线程线程线程线程",                    # 3-byte chars: 15 bytes is 5 chars
])
def test_sem13_name_matches_comm_cut_to_15_bytes(name):
    k = KThread(lambda d: None, name=name)
    assert k.name == name
    assert threading.Thread.name.fget(k) == name
    comm = task_comm(k.native_id)
    assert comm == _expected_comm(name)
    assert len(comm) <= 15
    comm.decode("utf-8")                # cut on a character boundary
    assert name.startswith(comm.decode("utf-8"))


def test_sem13_comm_cut_examples():
    # Spot checks of the cut, independent of _expected_comm().
    assert task_comm(KThread(lambda d: None, name="x" * 20).native_id) == b"x" * 15
    assert task_comm(KThread(lambda d: None, name="a" * 14 + "é").native_id) == b"a" * 14
    assert (task_comm(KThread(lambda d: None, name="线程线程线程线程").native_id)
            == "线程线程线".encode())


@pytest.mark.timeout(30)
def test_sem13_rename_updates_comm():
    a = Agent()
    a.k.start()
    a.k.name = "renamed-π"
    assert a.k.name == "renamed-π"
    assert task_comm(a.k.native_id) == "renamed-π".encode()
    assert a.call(lambda: threading.current_thread().name) == "renamed-π"


@pytest.mark.parametrize("namefmt, fmt", [(None, "kpark/{}"), ("w%u-x", "w{}-x"),
                                          ("cpu%u-é", "cpu{}-é")])
def test_sem13_create_on_cpu_namefmt_fills_cpu(namefmt, fmt):
    cpu = allowed_cpus()[-1]
    k = (create_on_cpu(lambda d: None, None, cpu) if namefmt is None
         else create_on_cpu(lambda d: None, None, cpu, namefmt=namefmt))
    assert k.name == fmt.format(cpu)
    assert task_comm(k.native_id) == _expected_comm(k.name)


@pytest.mark.timeout(30)
def test_sem13_enumerate_ident_native_id():
    inside = {}

    def fn(_):
        inside["ident"] = threading.get_ident()
        inside["native_id"] = threading.get_native_id()
        inside["current_thread"] = threading.current_thread()
        inside["enumerated"] = threading.current_thread() in threading.enumerate()
        while not should_stop():
            parkme()
            schedule()
        return "ok"

    k = KThread(fn, name="enum-me")
    # Never woken, it is already a live threading.Thread.
    assert k in threading.enumerate()
    assert any(t is k and t.ident == k.ident and t.native_id == k.native_id
               for t in threading.enumerate())
    k.start()
    wait_for(lambda: "enumerated" in inside)
    assert inside["ident"] == k.ident
    assert inside["native_id"] == k.native_id
    assert inside["current_thread"] is k
    assert inside["enumerated"] is True
    k.park(timeout=10)
    assert k in threading.enumerate()
    assert k.stop(timeout=10) == "ok"
    assert k not in threading.enumerate()


# ---------------------------------------------------------------------------
# Public API surface
# ---------------------------------------------------------------------------

def test_api_exports():
    for name in ["BACKEND", "Completion", "Flags", "KThread", "ThreadExitedError",
                 "create_on_cpu", "current", "parkme", "schedule", "should_park",
                 "should_stop"]:
        assert hasattr(kpark, name), name
    assert kpark.BACKEND in ("futex", "pthread")
    assert issubclass(KThread, threading.Thread)


@pytest.mark.timeout(30)
def test_api_properties():
    data = object()
    k = KThread(lambda d: d, data)
    assert isinstance(k.name, str)
    assert isinstance(k.ident, int) and isinstance(k.native_id, int)
    assert k.data is data
    assert k.cpu is None and k.is_per_cpu is False
    assert k.is_parked is False and k.should_park is False
    assert k.should_stop is False and k.started is False
    assert k.daemon is True
    assert k.is_alive() is True
    k.start()
    assert k.stop(timeout=10) is data
    assert k.started is True
    assert k.is_alive() is False


@pytest.mark.timeout(30)
def test_api_threadfn_receives_data():
    got = []
    data = {"x": 1}
    k = KThread(got.append, data)
    k.start()
    k.join(10)
    assert got == [data] and got[0] is data


@pytest.mark.timeout(30)
def test_api_start_returns_once_threadfn_entered():
    entered = threading.Event()

    def fn(_):
        entered.set()
        while not should_stop():
            schedule()

    for _ in range(20):
        k = KThread(fn)
        k.start()
        assert k.started, "start() returned before threadfn was entered"
        assert entered.wait(10)
        entered.clear()
        k.stop(timeout=10)


@pytest.mark.timeout(30)
def test_api_start_twice_raises():
    a = Agent()
    a.k.start()
    with pytest.raises(RuntimeError, match="only be started once"):
        a.k.start()
    k = KThread(lambda d: None)
    k.start()
    k.join(10)
    with pytest.raises(RuntimeError):
        k.start()


@pytest.mark.timeout(30)
def test_api_start_after_wake_raises_and_leaves_no_token():
    # wake() of a new thread is its start (wake_up_process): a later start()
    # is a second start, refused, and must not leave a wake token behind.
    entered = threading.Event()
    early = threading.Event()

    def fn(_):
        entered.set()
        if schedule(30):  # only a token (or the stop below) ends this early
            early.set()

    k = KThread(fn)
    assert k.wake()
    with pytest.raises(RuntimeError, match="only be started once"):
        k.start()
    assert entered.wait(10)
    assert_stays(lambda: not early.is_set(), "start() left a wake token")
    k.stop(timeout=10)

    # Two concurrent start() calls: exactly one returns.
    for _ in range(20):
        k = KThread(lambda d: None)
        outcomes: list = []
        barrier = threading.Barrier(2)

        def starter():
            barrier.wait()
            try:
                k.start()
                outcomes.append("ok")
            except RuntimeError:
                outcomes.append("refused")

        ts = [threading.Thread(target=starter) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(10)
        assert sorted(outcomes) == ["ok", "refused"]
        k.join(10)


@pytest.mark.timeout(30)
def test_api_start_after_park_or_stop_raises():
    entered = threading.Event()
    k = KThread(lambda d: entered.set())
    k.park(timeout=10)
    with pytest.raises(RuntimeError) as ei:
        k.start()
    assert not isinstance(ei.value, ThreadExitedError)
    assert k.is_parked and not k.started and not entered.is_set()

    k2 = KThread(lambda d: entered.set())
    k2.stop(timeout=10)
    with pytest.raises(ThreadExitedError):
        k2.start()
    assert not entered.wait(QUIET)


@pytest.mark.timeout(30)
def test_api_join_follows_threading():
    gate = threading.Event()

    def fn(_):
        gate.wait(20)
        return 7

    k = KThread(fn)
    k.start()
    try:
        t0 = time.monotonic()
        assert k.join(0.1) is None
        assert time.monotonic() - t0 >= 0.09
        assert k.is_alive()
    finally:
        gate.set()
    assert k.join(10) is None
    assert not k.is_alive()
    assert k.join() is None
    assert k.stop() == 7


@pytest.mark.timeout(30)
def test_api_join_never_woken_times_out():
    k = KThread(lambda d: None)
    assert k.join(0.05) is None
    assert k.is_alive() and not k.started


@pytest.mark.timeout(30)
def test_api_join_from_itself_raises():
    out = {}

    def fn(_):
        try:
            current().join(0.01)
        except RuntimeError as e:
            out["exc"] = e

    k = KThread(fn)
    k.start()
    k.join(10)
    assert isinstance(out.get("exc"), RuntimeError)


@pytest.mark.timeout(30)
def test_api_current():
    assert current() is None
    assert spawn(current).get() is None
    box = {}

    def fn(_):
        box["cur"] = current()

    k = KThread(fn)
    k.start()
    k.join(10)
    assert box["cur"] is k
    assert current() is None


@pytest.mark.parametrize("fn", ["should_stop", "should_park", "parkme", "schedule"])
def test_api_thread_only_functions_raise_outside_kthread(fn):
    func = getattr(kpark, fn)
    with pytest.raises(RuntimeError, match=rf"\b{fn}\b"):
        func()
    r = spawn(func)                     # a plain threading.Thread
    with pytest.raises(RuntimeError, match=rf"\b{fn}\b"):
        r.get()


@pytest.mark.timeout(30)
def test_api_should_stop_and_should_park_inside_threadfn():
    a = Agent(auto_park=False)
    a.k.start()
    assert a.call(should_stop) is False
    assert a.call(should_park) is False
    with pytest.raises(TimeoutError):
        a.k.park(timeout=0.05)
    assert a.call(should_park) is True
    a.k.unpark()
    assert a.call(should_park) is False


@pytest.mark.timeout(30)
def test_api_wake_return_values():
    go = threading.Event()
    done = threading.Event()

    def fn(_):
        while not go.is_set():
            busy(100)
        schedule()              # consumes the token left while running
        done.set()
        schedule()              # now really asleep

    k = KThread(fn)
    assert k.wake() is True     # first sleep: woken by this call
    wait_for(lambda: k.started)
    assert k.wake() is False    # running: a token
    assert k.wake() is False    # a token is already there
    go.set()
    assert done.wait(10)
    wait_asleep(k.native_id)
    assert k.wake() is True     # asleep in schedule(): woken by this call
    k.join(10)
    assert not k.is_alive()
    assert k.wake() is False    # exited


@pytest.mark.timeout(30)
def test_api_is_alive_through_lifecycle():
    a = Agent()
    assert a.k.is_alive()               # never woken
    a.k.start()
    assert a.k.is_alive()               # running / in schedule()
    a.k.park(timeout=10)
    assert a.k.is_alive()               # parked
    a.k.stop(timeout=10)
    assert not a.k.is_alive()


@pytest.mark.timeout(30)
def test_api_repeated_park_unpark_cycles():
    s = Spinner(chunk=500)
    s.k.start()
    for i in range(200):
        s.k.park(timeout=10)
        assert s.k.is_parked and s.k.should_park
        c = s.count
        s.k.unpark()
        assert not s.k.is_parked and not s.k.should_park
        if i % 20 == 0:
            wait_for(lambda: s.count > c)
    assert s.k.stop(timeout=10) == s.count


@pytest.mark.timeout(30)
def test_negative_timeouts_rejected_whatever_the_state():
    k = KThread(lambda d: None)
    k.park()
    with pytest.raises(ValueError):
        k.park(-1)  # already parked: would have returned at once
    with pytest.raises(ValueError):
        k.stop(-0.5)
    assert k.is_alive() and not k.should_stop, "a rejected stop() must not stop"
    assert k.stop(timeout=10) is None


@pytest.mark.timeout(30)
def test_api_subclass_overriding_run_is_its_threadfn():
    # The threading idiom: subclass, override run(), start().  run() is the
    # thread function then (called once, with no argument, on the first
    # wake); the constructor must not hang.
    class Worker(KThread):
        def __init__(self, n):
            self.n = n
            super().__init__(name="worker")

        def run(self):
            while not should_stop():
                schedule()
            return self.n * 2

    w = Worker(21)
    assert not w.started
    w.start()
    assert w.started and w.name == "worker"
    assert w.stop(timeout=10) == 42

    class Both(KThread):
        def run(self):
            pass

    # A threadfn and a run() of its own: ambiguous, refused (never a hang).
    with pytest.raises(TypeError, match="threadfn"):
        Both(lambda d: None)


@pytest.mark.timeout(30)
def test_api_exited_thread_is_never_touched_by_its_old_tid():
    # After exit the TID may belong to another thread: bind() refuses with
    # ThreadExitedError (not ProcessLookupError, never a re-pin), and a
    # rename changes only the Python name.
    cpu = allowed_cpus()[0]
    k = KThread(lambda d: None)
    k.stop(timeout=10)
    k.join(10)
    with pytest.raises(ThreadExitedError):
        k.bind(cpu)
    k.name = "renamed"
    assert k.name == "renamed"
