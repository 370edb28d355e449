"""Free-threading stress: every public object shared by 8+ threads at once.

Each test hands one object (Flags, Completion, KThread, PerCPUThreads,
PerCPUExecutor and its futures) to THREADS threads that are released
together by a barrier and call its methods at the same time ("a storm"),
round after round, and checks the invariants after every round:

  - nothing lost: every completion is consumed, every queued task runs,
    every done-callback is called, every wake on a running thread leads to
    progress;
  - nothing run twice: each task id runs at most once, threadfn is entered
    once, a cancelled future's task never runs;
  - counts conserve: test-and-set winners against clears, completions
    against successful waits, park callbacks against unpark callbacks;
  - no crash and no hang: every storm thread returns within DEADLINE, and
    pytest-timeout backs it all.

On the GIL build these calls interleave only at the switch interval; on a
free-threaded build (sys._is_gil_enabled() False) they really run at once,
which is where a check-then-act that the GIL made rare shows.  The tests run
on both builds.  Each test runs rounds for KPARK_FT_SECONDS seconds
(default 2; CI's free-threaded stage gives more) and at least MIN_ROUNDS;
KPARK_FT_THREADS sets the storm size (at least 8).  The random choices come
from random.Random(SEED) (KPARK_FT_SEED replays them; the interleaving is
up to the machine), named in every failure.
"""
from __future__ import annotations

import os
import random
import sys
import threading
import time
from collections import Counter, deque
from concurrent.futures import CancelledError
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional

import pytest

import kpark
from kpark import Completion, Flags, KThread, PerCPUExecutor, PerCPUThreads

from conftest import allowed_cpus, assert_stays, wait_for

THREADS = max(8, int(os.environ.get("KPARK_FT_THREADS", "8")))
SECONDS = float(os.environ.get("KPARK_FT_SECONDS", "2"))
SEED = int(os.environ.get("KPARK_FT_SEED", str(random.SystemRandom().randrange(2**32))))
MIN_ROUNDS = 3
#: Deadline for anything that must happen (a wait, a park, progress).
DEADLINE = 10.0
#: pytest-timeout for each test: its rounds, plus the slow last round.
TIMEOUT = int(60 + 4 * SECONDS)


def rounds() -> Iterator[int]:
    """Round numbers until SECONDS have passed (at least MIN_ROUNDS)."""
    end = time.monotonic() + SECONDS
    r = 0
    while r < MIN_ROUNDS or time.monotonic() < end:
        yield r
        r += 1


def storm(body: Callable[[int], Any], n: int = THREADS) -> List[Any]:
    """Run body(i) for i in range(n) in n threads released together.

    Returns the results in order; re-raises the first exception; fails if a
    thread has not returned within a few DEADLINEs (a hang).
    """
    barrier = threading.Barrier(n)
    results: List[Any] = [None] * n
    errors: List[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(DEADLINE)
            results[i] = body(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True,
                                name=f"storm-{i}") for i in range(n)]
    for t in threads:
        t.start()
    end = time.monotonic() + 3 * DEADLINE
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
        assert not t.is_alive(), f"seed={SEED}: storm thread {t.name} hung"
    if errors:
        raise errors[0]
    return results


def rng_for(r: int, i: int) -> random.Random:
    """The random choices of storm thread `i` in round `r`."""
    return random.Random(SEED * 1_000_003 + r * 1009 + i)


# -- Flags ----------------------------------------------------------------------

LOCK_BIT = 63
TOGGLE_BIT = 62


@pytest.mark.timeout(TIMEOUT)
def test_flags_shared_by_all_threads() -> None:
    """Own bits survive everyone's RMWs; test_and_set_bit is a working
    try-lock; test-and-set winners and test-and-clear winners conserve."""
    ops = 400
    for r in rounds():
        f = Flags()
        crit = [0]          # changed only inside the try-lock
        inside: List[Optional[int]] = [None]

        def body(i: int) -> tuple:
            rng = rng_for(r, i)
            acquired = sets = clears = 0
            for _ in range(ops):
                f.set_bit(i)
                assert f.test_bit(i), f"seed={SEED} round={r}: own bit {i} lost"
                op = rng.random()
                if op < 0.4:
                    if not f.test_and_set_bit(LOCK_BIT):
                        assert inside[0] is None, (
                            f"seed={SEED} round={r}: {i} and {inside[0]} both hold the try-lock")
                        inside[0] = i
                        crit[0] = crit[0] + 1   # a lost update if two were inside
                        assert inside[0] == i
                        inside[0] = None
                        acquired += 1
                        assert f.test_and_clear_bit(LOCK_BIT), "lock bit cleared by another"
                elif op < 0.7:
                    sets += not f.test_and_set_bit(TOGGLE_BIT)
                else:
                    clears += f.test_and_clear_bit(TOGGLE_BIT)
                f.clear_bit(i)
                assert not f.test_bit(i), f"seed={SEED} round={r}: own bit {i} stuck"
            if i % 2 == 0:
                f.set_bit(i)    # the round's end state: even bits set
            return acquired, sets, clears

        out = storm(body)
        acquired = sum(a for a, _, _ in out)
        sets = sum(s for _, s, _ in out)
        clears = sum(c for _, _, c in out)
        assert crit[0] == acquired, f"seed={SEED} round={r}: try-lock let two in"
        assert sets - clears == int(f.test_bit(TOGGLE_BIT)), (
            f"seed={SEED} round={r}: {sets} set-winners vs {clears} clear-winners, "
            f"bit now {f.test_bit(TOGGLE_BIT)}")
        even = sum(1 << i for i in range(0, THREADS, 2))
        assert f.value & ((1 << THREADS) - 1) == even
        assert not f.test_bit(LOCK_BIT)


# -- Completion -----------------------------------------------------------------

@pytest.mark.timeout(TIMEOUT)
def test_completion_shared_by_all_threads() -> None:
    """complete() from half the threads, wait()/try_wait() from the other
    half: every completion is consumed exactly once; complete_all() lets
    every waiter through; reinit() forgets it."""
    per = 300
    half = THREADS // 2
    for r in rounds():
        c = Completion()
        consumed = [0] * THREADS

        def body(i: int) -> None:
            rng = rng_for(r, i)
            if i < half:
                for _ in range(per):
                    c.complete()
                return
            for _ in range(per):
                if rng.random() < 0.5 and c.try_wait():
                    consumed[i] += 1
                    continue
                assert c.wait(DEADLINE), f"seed={SEED} round={r}: a completion was lost"
                consumed[i] += 1

        storm(body)
        assert sum(consumed) == half * per
        assert not c.done() and not c.try_wait(), (
            f"seed={SEED} round={r}: completions left over (counted twice?)")

        # complete_all while everyone waits: all through, and stays done.
        def all_body(i: int) -> bool:
            if i == 0:
                c.complete_all()
                return True
            return bool(c.wait(DEADLINE)) and bool(c.wait(DEADLINE))

        assert all(storm(all_body)), f"seed={SEED} round={r}: complete_all lost a waiter"
        assert c.done()
        c.reinit()
        assert not c.done() and not c.try_wait()


# -- KThread ----------------------------------------------------------------------

class Box:
    """Written only by its KThread; read by the storm threads."""

    def __init__(self) -> None:
        self.n = 0
        self.entered = 0


def kloop(box: Box) -> int:
    box.entered += 1
    while not kpark.should_stop():
        if kpark.should_park():
            kpark.parkme()
        box.n += 1
        kpark.schedule()
    return box.n


def progresses(k: KThread, box: Box, what: str) -> None:
    """A wake on a not-parked thread leads to progress (no lost wake-up)."""
    before = box.n
    k.wake()
    wait_for(lambda: box.n > before, timeout=DEADLINE,
             msg=f"seed={SEED}: {what}: no progress after a wake (state {k._core.state_word:#x})")


@pytest.mark.timeout(TIMEOUT)
def test_kthread_shared_by_all_threads() -> None:
    """Storms of wake, park, unpark, mixed calls and stop on one KThread."""
    box = Box()
    k = KThread(kloop, box)
    k.start()
    for r in rounds():
        # wake storm: every wake returns, and the thread made progress.
        storm(lambda i: [k.wake() for _ in range(200)])
        progresses(k, box, f"round {r} after a wake storm")

        # park storm: every park() returns with the thread parked.
        def park(i: int) -> None:
            k.park(DEADLINE)
            assert k.is_parked, f"seed={SEED} round={r}: park() returned unparked"
        storm(park)
        assert k.is_parked and k.should_park
        frozen = box.n
        woke = storm(lambda i: [k.wake() for _ in range(50)])
        assert not any(any(w) for w in woke), f"seed={SEED}: a parked thread was woken"
        assert k.is_parked and box.n == frozen, f"seed={SEED}: a parked thread ran"

        # unpark storm: released, not parked, not asked to park.
        storm(lambda i: k.unpark())
        assert not k.is_parked and not k.should_park
        progresses(k, box, f"round {r} after an unpark storm")

        # mixed storm: anything at once; afterwards one unpark settles it.
        def mixed(i: int) -> None:
            rng = rng_for(r, i)
            for _ in range(60):
                op = rng.random()
                if op < 0.3:
                    k.park(DEADLINE)    # may return early: another's unpark withdrew it
                elif op < 0.6:
                    k.unpark()
                elif op < 0.9:
                    k.wake()
                else:
                    (k.is_parked, k.should_park, k.started, k.is_alive(), repr(k))
        storm(mixed)
        k.unpark()
        assert not k.is_parked and not k.should_park, (
            f"seed={SEED} round={r}: still parked after unpark ({k._core.state_word:#x})")
        progresses(k, box, f"round {r} after a mixed storm")
    assert box.entered == 1

    # stop storm: every stop() returns threadfn's result; it never runs again.
    results = storm(lambda i: k.stop(DEADLINE))
    assert results == [box.n] * THREADS and not k.is_alive()
    assert box.entered == 1 and k.stop() == box.n


@pytest.mark.timeout(TIMEOUT)
def test_start_storm_starts_once() -> None:
    """start() from every thread at once: one call starts threadfn, every
    other raises RuntimeError, and no stray wake token is left behind."""
    for r in rounds():
        box = Box()
        k = KThread(kloop, box)

        def body(i: int) -> bool:
            try:
                k.start()
                return True
            except RuntimeError as exc:
                assert "started once" in str(exc), exc
                return False

        won = storm(body)
        assert won.count(True) == 1, f"seed={SEED} round={r}: {won.count(True)} start() calls won"
        assert box.entered == 1
        # threadfn's first pass, then asleep: a stray token would run a second.
        wait_for(lambda: box.n == 1, timeout=DEADLINE, msg="first pass")
        assert_stays(lambda: box.n == 1, "a stray wake token ran threadfn's loop again")
        k.stop(DEADLINE)


@pytest.mark.timeout(TIMEOUT)
def test_kthreads_made_and_stopped_by_all_threads() -> None:
    """KThreads created, started, parked and stopped from every thread at
    once: default names stay unique, each threadfn is entered exactly once."""
    for r in rounds():
        boxes = [Box() for _ in range(THREADS)]

        def body(i: int) -> KThread:
            k = KThread(kloop, boxes[i])
            if i % 3 == 0:
                k.start()
            elif i % 3 == 1:
                k.park(DEADLINE)    # parked before threadfn ran
                k.unpark()
            return k

        made = storm(body)
        names = [k.name for k in made]
        assert len(set(names)) == THREADS, f"seed={SEED} round={r}: duplicate names {names}"
        # Each thread stops a neighbour's KThread, so stops race with
        # start/park/unpark.  Never-started ones return None.
        results = storm(lambda i: made[(i + 1) % THREADS].stop(DEADLINE))
        for i, res in enumerate(results):
            k = made[(i + 1) % THREADS]
            box = boxes[(i + 1) % THREADS]
            assert not k.is_alive()
            assert box.entered <= 1, f"seed={SEED}: threadfn entered {box.entered} times"
            assert res == (box.n if box.entered else None)


# -- PerCPUThreads ------------------------------------------------------------------

@pytest.mark.timeout(TIMEOUT)
def test_percpu_threads_shared_by_all_threads() -> None:
    """wake/offline/online from every thread at once while work is queued:
    every item runs exactly once, park and unpark callbacks pair up, and
    offline/online storms leave every thread parked/unparked."""
    cpus = allowed_cpus()
    todo: Dict[int, Deque[int]] = {c: deque() for c in cpus}
    ran: List[int] = []
    parks: Counter = Counter()
    unparks: Counter = Counter()

    def thread_fn(cpu: int) -> None:
        try:
            ran.append(todo[cpu].popleft())
        except IndexError:
            pass

    def park_cb(cpu: int) -> None:
        parks[cpu] += 1      # only this CPU's thread writes its key

    def unpark_cb(cpu: int) -> None:
        unparks[cpu] += 1

    pool = PerCPUThreads(thread_fn, lambda cpu: bool(todo[cpu]), cpus=cpus,
                         park=park_cb, unpark=unpark_cb, thread_comm="kp-ft/%u")
    ids = iter(range(1 << 62))
    ids_lock = threading.Lock()
    produced: List[int] = []
    try:
        for r in rounds():
            def body(i: int) -> None:
                rng = rng_for(r, i)
                for _ in range(40):
                    cpu = rng.choice(cpus)
                    op = rng.random()
                    if op < 0.5:
                        with ids_lock:
                            n = next(ids)
                        produced.append(n)
                        todo[cpu].append(n)
                        pool.wake(cpu)
                    elif op < 0.7:
                        pool.offline(cpu)   # others may online it again at once
                    elif op < 0.9:
                        pool.online(cpu)
                    else:
                        (pool.online_cpus, pool.errors, pool.thread(cpu).is_parked)
            storm(body)
            pool.online(cpus)
            assert pool.online_cpus == frozenset(cpus)
            for c in cpus:
                pool.wake(c)
            wait_for(lambda: len(ran) == len(produced), timeout=DEADLINE,
                     msg=f"seed={SEED} round={r}: queued work lost")
            assert sorted(ran) == sorted(produced), f"seed={SEED}: an item ran twice"
            wait_for(lambda: all(unparks[c] == parks[c] for c in cpus), timeout=DEADLINE,
                     msg=f"seed={SEED} round={r}: park/unpark callbacks do not pair up")

            # offline storm, then online storm, of every CPU at once.
            storm(lambda i: pool.offline(cpus))
            assert pool.online_cpus == frozenset()
            assert all(pool.thread(c).is_parked for c in cpus)
            storm(lambda i: pool.online(cpus))
            assert pool.online_cpus == frozenset(cpus)
            assert pool.errors == []
    finally:
        closed = storm(lambda i: pool.close())
    assert closed == [None] * THREADS and pool.closed
    assert pool.errors == []


# -- PerCPUExecutor and its futures ---------------------------------------------------

@pytest.mark.timeout(TIMEOUT)
def test_executor_and_futures_shared_by_all_threads() -> None:
    """submit/submit_on/map/cancel/result/add_done_callback from every thread
    at once, with CPUs going offline and online meanwhile: each task runs at
    most once, never after a successful cancel(), every other future gets
    its own result, every done-callback runs exactly once."""
    cpus = allowed_cpus()
    ex = PerCPUExecutor(cpus=cpus, thread_name_prefix="kp-ft")
    ran: List[int] = []
    called: List[tuple] = []

    def task(n: int) -> int:
        ran.append(n)
        return 2 * n

    try:
        for r in rounds():
            shared: List[tuple] = []     # (future, id), visible to every thread
            cancelled: List[int] = []
            expected_calls: List[tuple] = []

            def body(i: int) -> None:
                rng = rng_for(r, i)
                for j in range(60):
                    n = (r * THREADS + i) * 1000 + j
                    op = rng.random()
                    if op < 0.35:
                        f = ex.submit(task, n)
                    elif op < 0.55:
                        f = ex.submit_on(rng.choice(cpus), task, n)
                    elif op < 0.65:
                        base = (1 << 40) + n * 100   # apart from submit ids
                        got = list(ex.map(task, range(base, base + 20), timeout=DEADLINE))
                        assert got == [2 * x for x in range(base, base + 20)]
                        continue
                    elif op < 0.75 and shared:
                        g, m = rng.choice(shared)
                        if g.cancel():
                            cancelled.append(m)
                        continue
                    elif op < 0.85 and shared:
                        g, m = rng.choice(shared)
                        token = (i, j)
                        expected_calls.append(token)
                        g.add_done_callback(lambda fut, token=token: called.append(token))
                        continue
                    elif op < 0.95 and shared and i != 0:
                        # Not the hotplug controller: a task pinned to a CPU
                        # it took offline runs only once it brings it back.
                        g, m = rng.choice(shared)
                        try:
                            assert g.result(DEADLINE) == 2 * m
                        except CancelledError:
                            pass
                        continue
                    elif i == 0 and len(cpus) > 1:
                        # One controller does the hotplug; others keep submitting.
                        cpu = rng.choice(cpus)
                        if rng.random() < 0.5 and len(ex.online_cpus - {cpu}) > 0:
                            ex.offline(cpu)
                        else:
                            ex.online(cpu)
                        continue
                    else:
                        continue
                    shared.append((f, n))
                if i == 0:
                    ex.online(cpus)

            storm(body)
            ex.online(cpus)
            for f, n in shared:
                try:
                    assert f.result(DEADLINE) == 2 * n, f"seed={SEED}: wrong result"
                except CancelledError:
                    assert n in cancelled, f"seed={SEED}: cancelled without cancel()"
            counts = Counter(ran)
            twice = [n for n, c in counts.items() if c > 1]
            assert not twice, f"seed={SEED} round={r}: tasks ran twice: {twice[:5]}"
            for f, n in shared:
                if f.cancelled():
                    assert n not in counts, f"seed={SEED}: a cancelled task ran"
                else:
                    assert counts[n] == 1, f"seed={SEED}: task {n} lost"
            wait_for(lambda: len(called) >= len(expected_calls), timeout=DEADLINE,
                     msg=f"seed={SEED} round={r}: done-callbacks lost")
            assert Counter(called) == Counter(expected_calls), (
                f"seed={SEED} round={r}: a done-callback ran twice or not at all")
            ran.clear()
            called.clear()
    finally:
        # shutdown storm: every caller returns once all queued work ran.
        storm(lambda i: ex.shutdown(wait=True))
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(task, -1)
    assert ex.online_cpus == frozenset()


@pytest.mark.timeout(TIMEOUT)
def test_futures_observed_while_they_finish() -> None:
    """The executor's futures finished, cancelled, waited on and observed
    (add_done_callback, wait(), as_completed()) by every thread at once:
    exactly one finisher wins each future, an observer that arrives while it
    finishes is told exactly once (as_completed() yields each future once,
    none is left unreported), every done-callback runs exactly once, and
    result() is the winner's."""
    from concurrent import futures as cf
    from kpark._futures import _Future

    finishers = 2   # storm threads 0 and 1 finish every future before they return

    for r in rounds():
        fs = [_Future() for _ in range(40)]
        index = {id(f): k for k, f in enumerate(fs)}
        won: Dict[int, Any] = {}         # future index -> what the winner did
        won_lock = threading.Lock()
        called: List[tuple] = []
        expected_calls: List[tuple] = []

        def finish(k: int, value: Any) -> None:
            try:
                fs[k].set_result(value)
            except cf.InvalidStateError:
                return
            with won_lock:
                assert k not in won, f"seed={SEED}: future {k} finished twice"
                won[k] = value

        def cancel(k: int) -> None:
            if fs[k].cancel():
                with won_lock:
                    assert won.get(k, "c") == "c", f"seed={SEED}: cancelled a done future"
                    won[k] = "c"
                # As the worker that dequeues it would: wait() and
                # as_completed() report a cancel once it is notified.
                try:
                    assert not fs[k].set_running_or_notify_cancel()
                except RuntimeError:
                    pass  # another thread notified it first

        def body(i: int) -> None:
            rng = rng_for(r, i)
            for j in range(30):
                k = rng.randrange(len(fs))
                op = rng.random()
                if op < 0.2:
                    finish(k, ("r", i, j))
                elif op < 0.3:
                    try:   # RUNNING now, or a cancel notified: set_result() may still win
                        fs[k].set_running_or_notify_cancel()
                    except RuntimeError:
                        pass  # running or finished already: the stdlib raises too
                elif op < 0.4:
                    cancel(k)
                elif op < 0.6 or i < finishers:
                    token = (i, j)
                    expected_calls.append(token)
                    fs[k].add_done_callback(lambda fut, token=token: called.append(token))
                elif op < 0.8:
                    # Every future ends (the finishers see to it): a wait()
                    # that times out lost a notification.
                    group = [fs[x] for x in rng.sample(range(len(fs)), 6)]
                    done, not_done = cf.wait(group, timeout=DEADLINE)
                    assert not not_done, f"seed={SEED}: wait() missed a finished future"
                else:
                    group = [fs[x] for x in rng.sample(range(len(fs)), 4)]
                    seen = [index[id(d)] for d in cf.as_completed(group, timeout=DEADLINE)]
                    assert sorted(seen) == sorted(index[id(g)] for g in group), (
                        f"seed={SEED}: as_completed() yielded {seen}")
            if i < finishers:
                for k in rng.sample(range(len(fs)), len(fs)):
                    if rng.random() < 0.5:
                        cancel(k)
                    finish(k, ("end", i, k))

        storm(body)
        for k, f in enumerate(fs):
            assert f.done(), f"seed={SEED}: future {k} left pending"
            if won[k] == "c":
                assert f.cancelled(), f"seed={SEED}: future {k} not cancelled"
            else:
                assert f.result(0) == won[k], f"seed={SEED}: future {k} has another's result"
        assert Counter(called) == Counter(expected_calls), (
            f"seed={SEED} round={r}: a done-callback ran twice or not at all")


def test_free_threaded_build_keeps_the_gil_off() -> None:
    """On a free-threaded build, importing kpark did not turn the GIL on."""
    import sysconfig
    gil_enabled = getattr(sys, "_is_gil_enabled", lambda: True)
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        assert gil_enabled()    # a GIL build: nothing can turn it off
        return
    import kpark.bench, kpark.executor, kpark.kthread, kpark.percpu  # noqa: E401,F401
    assert not gil_enabled(), "a kpark module re-enabled the GIL"
