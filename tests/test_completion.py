"""kpark.Completion: the kernel's completion (count, complete_all, reinit).

Semantics of each method, timed waits (never early, never stretched, the
word changing wins over the timeout), waiters released by complete() and
complete_all() from other threads, a 10,000-round ping-pong (no lost
wake-up), and waits in the main thread interrupted by signals.
"""
import math
import signal
import threading
import time

import pytest

from helpers import task_state

from kpark import Completion

# Generous bounds: the machine is shared with other test runs.
SLACK = 2.0


# ---- helpers -------------------------------------------------------------------------

_thread_state = task_state


def _settle_asleep(threads, timeout=5.0):
    """Best effort: wait until every thread is blocked (state S) a few polls
    in a row, so the waits under test take their sleeping path.  Correctness
    of the tests does not depend on it; only which path is exercised."""
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline and streak < 3:
        time.sleep(0.01)
        if all(_thread_state(t.native_id) in ("S", None) for t in threads if t.is_alive()):
            streak += 1
        else:
            streak = 0


class Waiter(threading.Thread):
    """A thread that calls c.wait(timeout) once and records what happened."""

    def __init__(self, c, timeout=None):
        super().__init__(daemon=True)
        self.c = c
        self.timeout = timeout
        self.entered = threading.Event()
        self.result = None
        self.error = None
        self.returned_at = None

    def run(self):
        self.entered.set()
        try:
            self.result = self.c.wait(self.timeout)
        except BaseException as e:
            self.error = e
        self.returned_at = time.monotonic()


def _start_waiters(c, n, timeout=None):
    ws = [Waiter(c, timeout) for _ in range(n)]
    for w in ws:
        w.start()
    for w in ws:
        assert w.entered.wait(10)
    _settle_asleep(ws)
    return ws


def _join_all(ws, timeout=30):
    deadline = time.monotonic() + timeout
    for w in ws:
        w.join(max(0.0, deadline - time.monotonic()))
    assert not any(w.is_alive() for w in ws), "a waiter hung"
    for w in ws:
        if w.error is not None:
            raise w.error


# ---- single-thread semantics ---------------------------------------------------------

def test_fresh_completion_is_not_done():
    c = Completion()
    assert c.done() is False
    assert c.try_wait() is False
    assert c.wait(0) is False
    assert c.done() is False


def test_complete_lets_exactly_one_wait_through():
    c = Completion()
    assert c.complete() is None
    assert c.done() is True
    assert c.wait(0) is True
    assert c.done() is False
    assert c.wait(0) is False
    assert c.try_wait() is False


def test_complete_counts():
    c = Completion()
    for _ in range(5):
        c.complete()
    for i in range(5):
        assert c.done() is True, i
        assert c.try_wait() is True, i
    assert c.done() is False
    assert c.try_wait() is False


def test_wait_and_try_wait_consume_the_same_count():
    c = Completion()
    for _ in range(4):
        c.complete()
    assert c.wait() is True
    assert c.try_wait() is True
    assert c.wait(1.0) is True
    assert c.try_wait() is True
    assert c.try_wait() is False
    assert c.wait(0) is False


def test_done_does_not_consume():
    c = Completion()
    c.complete()
    for _ in range(10):
        assert c.done() is True
    assert c.try_wait() is True
    assert c.done() is False


def test_complete_all_releases_every_later_wait_until_reinit():
    c = Completion()
    c.complete_all()
    for _ in range(100):
        assert c.done() is True
        assert c.try_wait() is True
        assert c.wait(0) is True
        assert c.wait() is True
    c.complete()                 # does not end complete_all
    assert c.wait(0) is True and c.done() is True
    assert c.reinit() is None
    assert c.done() is False
    assert c.try_wait() is False
    assert c.wait(0) is False


def test_complete_all_after_complete_counts_is_still_all():
    c = Completion()
    c.complete()
    c.complete()
    c.complete_all()
    for _ in range(5):
        assert c.try_wait() is True
    c.reinit()
    assert c.try_wait() is False


def test_reinit_forgets_counted_completions():
    c = Completion()
    for _ in range(3):
        c.complete()
    c.reinit()
    assert c.done() is False
    assert c.try_wait() is False
    c.complete()                 # counts again from zero
    assert c.try_wait() is True
    assert c.try_wait() is False


def test_reinit_of_fresh_completion_is_harmless():
    c = Completion()
    c.reinit()
    c.reinit()
    assert not c.done()
    c.complete()
    assert c.wait(0)


def test_many_completes_count_high():
    c = Completion()
    n = 100_000
    for _ in range(n):
        c.complete()
    got = 0
    while c.try_wait():
        got += 1
    assert got == n


def test_completions_are_independent():
    a, b = Completion(), Completion()
    a.complete()
    b.complete_all()
    a.reinit()
    assert not a.done()
    assert b.done()
    assert b.try_wait() and b.try_wait()


# ---- timeouts ------------------------------------------------------------------------

@pytest.mark.parametrize("timeout", [0.05, 0.2, 0.3])
def test_timed_wait_returns_false_and_never_early(timeout):
    c = Completion()
    t0 = time.monotonic()
    assert c.wait(timeout) is False
    elapsed = time.monotonic() - t0
    assert elapsed >= timeout
    assert elapsed < timeout + SLACK
    assert not c.done()


def test_timeout_accepts_int_and_zero():
    c = Completion()
    assert c.wait(0) is False
    assert c.wait(0.0) is False
    t0 = time.monotonic()
    c.complete()
    assert c.wait(1) is True             # int, and a completion is there: no wait
    assert time.monotonic() - t0 < SLACK


@pytest.mark.parametrize("timeout", [-1, -0.001, -1e-9, float("-inf"), float("nan")])
def test_negative_or_nan_timeout_is_value_error(timeout):
    c = Completion()
    t0 = time.monotonic()
    with pytest.raises(ValueError):
        c.wait(timeout)
    assert time.monotonic() - t0 < SLACK    # raised, did not block
    # the completion is unharmed
    c.complete()
    assert c.wait(0) is True
    assert not c.done()


@pytest.mark.parametrize("timeout", ["1", b"1", [1], object()])
def test_non_number_timeout_is_type_error(timeout):
    c = Completion()
    with pytest.raises(TypeError):
        c.wait(timeout)


def test_infinite_timeout_waits_for_completion():
    c = Completion()
    threading.Timer(0.05, c.complete).start()
    t0 = time.monotonic()
    assert c.wait(math.inf) is True
    assert time.monotonic() - t0 < SLACK


def test_huge_timeout_waits_for_completion():
    c = Completion()
    threading.Timer(0.05, c.complete).start()
    assert c.wait(1e300) is True


@pytest.mark.timeout(30)
def test_wait_returns_true_promptly_when_completed_from_another_thread():
    c = Completion()
    [w] = _start_waiters(c, 1, timeout=30)
    t_complete = time.monotonic()
    c.complete()
    _join_all([w])
    assert w.result is True
    assert w.returned_at - t_complete < SLACK      # far below its 30 s timeout
    assert not c.done()                            # it consumed the completion


@pytest.mark.timeout(30)
def test_untimed_wait_returns_when_completed_from_another_thread():
    c = Completion()
    [w] = _start_waiters(c, 1, timeout=None)
    assert w.is_alive()
    c.complete()
    _join_all([w])
    assert w.result is True
    assert not c.done()


@pytest.mark.timeout(30)
def test_complete_racing_the_deadline_is_never_lost():
    # Completions that arrive around a waiter's deadline: whatever wait()
    # returns, a completion is consumed iff wait() returned True.
    c = Completion()
    for i in range(200):
        timeout = 0.001 * (i % 5)
        t = threading.Timer(0.001 * (i % 7), c.complete)
        t.start()
        got = c.wait(timeout)
        t.join()
        if got:
            assert not c.done(), i
        else:
            assert c.try_wait() is True, i     # left for the next waiter
        assert not c.done()


# ---- many waiters --------------------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("timeout", [None, 30])
def test_complete_all_releases_every_waiter(timeout):
    c = Completion()
    ws = _start_waiters(c, 8, timeout=timeout)
    assert all(w.is_alive() for w in ws)
    t0 = time.monotonic()
    c.complete_all()
    _join_all(ws)
    assert [w.result for w in ws] == [True] * 8
    assert max(w.returned_at for w in ws) - t0 < SLACK
    assert c.done()                    # still complete for later waiters
    assert c.wait(0)


@pytest.mark.timeout(60)
def test_n_completes_release_exactly_n_of_m_waiters():
    m, n, timeout = 6, 3, 3.0
    c = Completion()
    ws = _start_waiters(c, m, timeout=timeout)
    t0 = time.monotonic()
    for _ in range(n):
        c.complete()
    _join_all(ws)
    released = [w for w in ws if w.result is True]
    timed_out = [w for w in ws if w.result is False]
    assert len(released) == n
    assert len(timed_out) == m - n
    for w in released:
        # woken by complete(), not found the count when their timeout came
        assert w.returned_at - t0 < timeout / 2
    assert not c.done()                         # nothing left over


@pytest.mark.timeout(60)
def test_completes_from_many_threads_release_many_waiters():
    # M waiters and M completers at once: every waiter gets exactly one.
    m = 8
    c = Completion()
    ws = _start_waiters(c, m, timeout=30)
    go = threading.Barrier(m, timeout=30)

    def completer():
        go.wait()
        c.complete()

    cs = [threading.Thread(target=completer) for _ in range(m)]
    for t in cs:
        t.start()
    for t in cs:
        t.join(30)
    _join_all(ws)
    assert [w.result for w in ws] == [True] * m
    assert not c.done()


@pytest.mark.timeout(60)
def test_completions_before_waiters_let_exactly_n_through():
    c = Completion()
    for _ in range(3):
        c.complete()
    ws = [Waiter(c, timeout=0.5) for _ in range(5)]
    for w in ws:
        w.start()
    _join_all(ws)
    assert sorted(w.result for w in ws) == [False, False, True, True, True]
    assert not c.done()


@pytest.mark.timeout(60)
def test_reinit_after_complete_all_makes_new_waiters_block():
    c = Completion()
    c.complete_all()
    ws = _start_waiters(c, 3, timeout=30)
    _join_all(ws)
    assert all(w.result for w in ws)
    c.reinit()
    ws = _start_waiters(c, 3, timeout=30)
    assert all(w.is_alive() for w in ws)
    for _ in range(3):
        c.complete()
    _join_all(ws)
    assert all(w.result for w in ws)
    assert not c.done()


# ---- ping-pong: no lost wake-up ----------------------------------------------------------

@pytest.mark.timeout(120)
def test_ping_pong_10000_rounds():
    rounds = 10_000
    ping, pong = Completion(), Completion()
    box = [None]
    seen = []
    failures = []

    def responder():
        for i in range(rounds):
            if not ping.wait(30):
                failures.append(("responder lost a wake-up", i))
                return
            if box[0] != i:
                failures.append(("responder saw", box[0], "expected", i))
                return
            box[0] = -i
            pong.complete()

    t = threading.Thread(target=responder, daemon=True)
    t.start()
    for i in range(rounds):
        box[0] = i
        ping.complete()
        if not pong.wait(30):
            failures.append(("initiator lost a wake-up", i))
            break
        seen.append(box[0])
    t.join(60)
    assert not t.is_alive()
    assert failures == []
    assert seen == [-i for i in range(rounds)]
    assert not ping.done() and not pong.done()


# ---- signals during a wait in the main thread --------------------------------------------

class Interrupt(Exception):
    pass


@pytest.fixture
def alarm():
    """Install a SIGALRM handler and restore the previous one and timer after."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are handled in the main thread only")
    old_handler = signal.getsignal(signal.SIGALRM)
    old_timer = signal.getitimer(signal.ITIMER_REAL)

    def install(handler, delay, interval=0.0):
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, delay, interval)
        return time.monotonic()

    yield install
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old_handler)
    if old_timer[0] > 0:
        signal.setitimer(signal.ITIMER_REAL, *old_timer)


def _completes_later(c, when):
    """Complete `c` from another thread once when() is true (polled)."""
    def body():
        deadline = time.monotonic() + 30
        while not when() and time.monotonic() < deadline:
            time.sleep(0.002)
        c.complete()
    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t


@pytest.mark.timeout(30, method="thread")   # SIGALRM is ours in these tests
@pytest.mark.parametrize("timeout", [None, 20.0])
def test_raising_signal_handler_interrupts_wait(alarm, timeout):
    c = Completion()
    fired = []

    def handler(signum, frame):
        fired.append(time.monotonic())
        raise Interrupt

    delay = 0.05
    t0 = alarm(handler, delay)
    with pytest.raises(Interrupt):
        c.wait(timeout)
    t1 = time.monotonic()
    assert len(fired) == 1
    assert t1 - t0 >= delay
    assert t1 - (t0 + delay) < 0.1        # within 100 ms of the signal
    # The completion still works, in both directions.
    assert not c.done()
    c.complete()
    assert c.wait(5) is True
    assert not c.done()
    _completes_later(c, lambda: True)
    assert c.wait(20) is True
    assert not c.done()


@pytest.mark.timeout(30, method="thread")
def test_keyboard_interrupt_from_sigint_interrupts_wait(alarm):
    # SIGINT with Python's default handler -> KeyboardInterrupt, sent to the
    # main thread by another thread.
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT does not have Python's default handler here")
    c = Completion()
    main = threading.main_thread().ident
    sent = []

    def send():
        sent.append(time.monotonic())
        signal.pthread_kill(main, signal.SIGINT)

    timer = threading.Timer(0.05, send)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        c.wait()
    t1 = time.monotonic()
    timer.join()
    assert t1 - sent[0] < 0.1
    c.complete()
    assert c.wait(5) is True


@pytest.mark.timeout(30, method="thread")
@pytest.mark.parametrize("timeout", [None, 20.0])
def test_quiet_signal_handler_does_not_end_wait(alarm, timeout):
    c = Completion()
    fired = []

    def handler(signum, frame):
        fired.append(time.monotonic())

    alarm(handler, 0.01, 0.01)
    # Completed only after the wait has survived several signals.
    t = _completes_later(c, lambda: len(fired) >= 5)
    assert c.wait(timeout) is True
    assert len(fired) >= 5
    t.join(10)
    assert not c.done()


@pytest.mark.timeout(30, method="thread")
def test_signals_do_not_stretch_a_timed_wait(alarm):
    c = Completion()
    fired = []

    def handler(signum, frame):
        fired.append(time.monotonic())
        if len(fired) >= 150:            # stop after ~1.5 s, so a stretched
            signal.setitimer(signal.ITIMER_REAL, 0)   # wait fails, not hangs

    timeout = 0.3
    alarm(handler, 0.01, 0.01)
    t0 = time.monotonic()
    assert c.wait(timeout) is False
    elapsed = time.monotonic() - t0
    signal.setitimer(signal.ITIMER_REAL, 0)
    n = len([f for f in fired if f <= t0 + elapsed])
    assert n >= 3, "the signals did not come during the wait"
    assert elapsed >= timeout
    assert elapsed < timeout + 0.25, f"timed wait stretched to {elapsed:.3f}s by {n} signals"


@pytest.mark.timeout(30, method="thread")
def test_completion_works_after_many_interrupted_waits(alarm):
    c = Completion()

    def handler(signum, frame):
        raise Interrupt

    for _ in range(20):
        alarm(handler, 0.005)
        with pytest.raises(Interrupt):
            c.wait(10)
    signal.setitimer(signal.ITIMER_REAL, 0)
    # Waiters in other threads and the main thread still get released.
    ws = _start_waiters(c, 3, timeout=20)
    c.complete_all()
    _join_all(ws)
    assert all(w.result for w in ws)
    assert c.wait(0) is True


def test_negative_timeout_rejected_even_when_wait_would_not_block():
    c = Completion()
    c.complete()
    with pytest.raises(ValueError):
        c.wait(-1)
    assert c.try_wait(), "the rejected call must not consume the completion"
