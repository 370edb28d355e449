"""kpark.PerCPUThreads: the smpboot model."""
from __future__ import annotations

import itertools
import os
import threading
import time
from typing import Any, Callable, Dict, List, Tuple

import pytest

import kpark
from kpark import percpu
from kpark.percpu import PerCPUThreads, available_cpus, parse_cpu_list

pytestmark = pytest.mark.timeout(60)

CPUS = sorted(os.sched_getaffinity(0))
TWO = pytest.mark.skipif(len(CPUS) < 2, reason="needs 2 allowed CPUs (a second CPU to hotplug)")
_ids = itertools.count()


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll for a state that must eventually hold; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.002)


class Recorder:
    """Callbacks that log (event, cpu, ...) with the thread and CPU they ran on."""

    def __init__(self) -> None:
        self.events: List[Tuple[Any, ...]] = []
        self.lock = threading.Lock()
        self.work: Dict[int, int] = {}
        self.ran: Dict[int, int] = {}
        self.where: List[Tuple[str, int, Any, Any]] = []

    def log(self, *ev: Any) -> None:
        with self.lock:
            self.events.append(ev)
            self.where.append((ev[0], ev[1], kpark.current(), frozenset(os.sched_getaffinity(0))))

    def per_cpu(self, cpu: int) -> List[Tuple[Any, ...]]:
        with self.lock:
            return [e for e in self.events if e[1] == cpu]

    def thread_fn(self, cpu: int) -> None:
        with self.lock:
            self.work[cpu] -= 1
            self.ran[cpu] = self.ran.get(cpu, 0) + 1

    def should_run(self, cpu: int) -> bool:
        return self.work.get(cpu, 0) > 0

    def kwargs(self) -> Dict[str, Any]:
        return dict(setup=lambda c: self.log("setup", c),
                    cleanup=lambda c, online: self.log("cleanup", c, online),
                    park=lambda c: self.log("park", c),
                    unpark=lambda c: self.log("unpark", c))


def comm() -> str:
    return f"tpc{next(_ids)}-%u"


# ---------------------------------------------------------------- registration

def test_one_bound_named_thread_per_cpu() -> None:
    rec = Recorder()
    with PerCPUThreads(rec.thread_fn, rec.should_run, thread_comm="pcpu/%u") as pool:
        assert pool.cpus == tuple(CPUS)
        assert pool.online_cpus == frozenset(CPUS)
        seen = set()
        for cpu in CPUS:
            k = pool.thread(cpu)
            assert isinstance(k, kpark.KThread) and k.is_alive()
            assert k.cpu == cpu and k.is_per_cpu
            assert k.name == f"pcpu/{cpu}"
            with open(f"/proc/self/task/{k.native_id}/comm") as f:
                assert f.read().strip() == f"pcpu/{cpu}"
            assert k.native_id is not None
            assert os.sched_getaffinity(k.native_id) == {cpu}
            seen.add(k)
        assert len(seen) == len(CPUS)
    assert all(not k.is_alive() for k in seen)


def test_cpus_argument_subset_and_validation() -> None:
    rec = Recorder()
    with PerCPUThreads(rec.thread_fn, rec.should_run, cpus=[CPUS[-1], CPUS[-1]]) as pool:
        assert pool.cpus == (CPUS[-1],)
    with pytest.raises(ValueError, match=r"CPU 4096 .*allowed"):
        PerCPUThreads(rec.thread_fn, rec.should_run, cpus=[CPUS[0], 4096])
    with pytest.raises(ValueError):
        PerCPUThreads(rec.thread_fn, rec.should_run, cpus=[])
    with pytest.raises(TypeError):
        PerCPUThreads(rec.thread_fn, rec.should_run, cpus=["0"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        PerCPUThreads(rec.thread_fn, 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        PerCPUThreads(rec.thread_fn, rec.should_run, setup=1)  # type: ignore[arg-type]


def test_create_runs_outside_on_parked_threads_before_any_setup() -> None:
    rec = Recorder()
    name = comm()
    states = []

    def create(cpu: int) -> None:
        rec.log("create", cpu)
        mine = [t for t in threading.enumerate() if t.name == name.replace("%u", str(cpu))]
        assert len(mine) == 1
        states.append((cpu, mine[0].is_parked, mine[0].started))  # type: ignore[attr-defined]

    with PerCPUThreads(rec.thread_fn, rec.should_run, create=create, thread_comm=name,
                       **rec.kwargs()) as pool:
        for cpu in CPUS:
            wait_for(lambda: ("setup", cpu) in rec.per_cpu(cpu), what="setup")
    assert states == [(cpu, True, False) for cpu in CPUS]
    creates = [i for i, e in enumerate(rec.events) if e[0] == "create"]
    setups = [i for i, e in enumerate(rec.events) if e[0] == "setup"]
    assert max(creates) < min(setups)  # all threads made before any is unparked
    assert all(w[2] is None for w in rec.where if w[0] == "create")


def test_registration_is_all_or_nothing() -> None:
    rec = Recorder()
    made: List[kpark.KThread] = []
    name = comm()

    def create(cpu: int) -> None:
        made.extend(t for t in threading.enumerate()  # type: ignore[misc]
                    if t.name == name.replace("%u", str(cpu)))
        if cpu == CPUS[-1]:
            raise OSError("no memory for CPU %d" % cpu)

    with pytest.raises(OSError, match="no memory"):
        PerCPUThreads(rec.thread_fn, rec.should_run, create=create, thread_comm=name,
                      **rec.kwargs())
    assert len(made) == len(CPUS)
    assert all(not k.is_alive() for k in made)
    assert not any(k.started for k in made)
    assert rec.events == []


def test_bad_thread_comm_fails_registration_cleanly() -> None:
    rec = Recorder()
    before = set(threading.enumerate())
    with pytest.raises((TypeError, ValueError)):
        PerCPUThreads(rec.thread_fn, rec.should_run, thread_comm="w%d%d")
    wait_for(lambda: all(not getattr(t, "is_alive")() for t in set(threading.enumerate()) - before),
             what="no leftover threads")


# ---------------------------------------------------------------- the loop

def test_callback_order_over_full_sequence_offline_at_close() -> None:
    rec = Recorder()
    pool = PerCPUThreads(rec.thread_fn, rec.should_run, thread_comm=comm(), **rec.kwargs())
    try:
        for cpu in CPUS:
            wait_for(lambda: rec.per_cpu(cpu) == [("setup", cpu)], what="setup")
        pool.offline(CPUS)
        for cpu in CPUS:
            assert rec.per_cpu(cpu) == [("setup", cpu), ("park", cpu)]
            assert pool.thread(cpu).is_parked
        assert pool.online_cpus == frozenset()
        pool.online(CPUS)
        for cpu in CPUS:
            wait_for(lambda: len(rec.per_cpu(cpu)) == 3, what="unpark")
        pool.offline(CPUS)
    finally:
        pool.close()
    for cpu in CPUS:
        assert rec.per_cpu(cpu) == [("setup", cpu), ("park", cpu), ("unpark", cpu),
                                    ("park", cpu), ("cleanup", cpu, False)]
    for ev, cpu, k, aff in rec.where:
        assert k is pool.thread(cpu), ev  # in the CPU's own thread ...
        assert aff == {cpu}, ev           # ... on that CPU


def test_cleanup_while_online_says_online_and_thread_fn_on_cpu() -> None:
    rec = Recorder()
    affs: List[Tuple[int, frozenset[int]]] = []

    def fn(cpu: int) -> None:
        affs.append((cpu, frozenset(os.sched_getaffinity(0))))
        rec.thread_fn(cpu)

    pool = PerCPUThreads(fn, rec.should_run, thread_comm=comm(), **rec.kwargs())
    for cpu in CPUS:
        rec.work[cpu] = 3
        pool.wake(cpu)
    for cpu in CPUS:
        wait_for(lambda: rec.ran.get(cpu) == 3, what="thread_fn x3")
    pool.offline(CPUS[0])
    pool.online(CPUS[0])
    rec.work[CPUS[0]] = 1
    pool.wake(CPUS[0])
    wait_for(lambda: rec.ran.get(CPUS[0]) == 4, what="thread_fn after online")
    pool.close()
    assert all(aff == {cpu} for cpu, aff in affs)  # re-pinned after unpark too
    for cpu in CPUS:
        assert rec.per_cpu(cpu)[0] == ("setup", cpu)
        assert rec.per_cpu(cpu)[-1] == ("cleanup", cpu, True)
        assert sum(1 for e in rec.per_cpu(cpu) if e[0] == "setup") == 1


def test_cleanup_skipped_when_setup_never_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    # The loop's first iteration sees should_stop before setup: cleanup must
    # not run (cleanup mirrors setup).
    rec = Recorder()
    pool = PerCPUThreads(rec.thread_fn, rec.should_run, selfparking=True,
                         thread_comm=comm(), **rec.kwargs())
    monkeypatch.setattr(percpu, "should_stop", lambda: True)
    for cpu in CPUS:
        pool.thread(cpu).unpark()
    for cpu in CPUS:
        pool.thread(cpu).join(10)
        assert not pool.thread(cpu).is_alive()
    pool.close()
    assert rec.events == []


def test_wake_reruns_thread_should_run() -> None:
    rec = Recorder()
    checks = {c: 0 for c in CPUS}

    def should_run(cpu: int) -> bool:
        checks[cpu] += 1
        return rec.should_run(cpu)

    with PerCPUThreads(rec.thread_fn, should_run, thread_comm=comm()) as pool:
        for cpu in CPUS:
            wait_for(lambda: checks[cpu] >= 1, what="first check")
        for cpu in CPUS:
            rec.work[cpu] = 1
            pool.wake(cpu)
            wait_for(lambda: rec.ran.get(cpu) == 1, what="thread_fn after wake")
        # A wake for a thread asleep in schedule() reports True.
        cpu = CPUS[0]
        n = checks[cpu]
        wait_for(lambda: pool.wake(cpu), what="wake() finds the thread asleep")
        wait_for(lambda: checks[cpu] > n, what="re-check after wake")


def test_no_lost_wakeup_between_check_and_sleep() -> None:
    # thread_should_run says False; before the thread reaches schedule(), another
    # thread queues work and wakes it.  schedule() must return at once.
    rec = Recorder()
    cpu = CPUS[0]
    in_check = threading.Event()
    woken = threading.Event()
    first = [True]

    def should_run(c: int) -> bool:
        if c != cpu:
            return False
        run = rec.should_run(c)
        if not run and first[0] and rec.work.get(c) is not None:
            first[0] = False
            in_check.set()
            assert woken.wait(10)  # the wake lands after our check
        return run

    with PerCPUThreads(rec.thread_fn, should_run, cpus=[cpu], thread_comm=comm()) as pool:
        rec.work[cpu] = 0
        pool.wake(cpu)  # make the thread check again, now with work armed
        assert in_check.wait(10)
        rec.work[cpu] = 1
        assert pool.wake(cpu) is False  # not asleep: leaves the token
        woken.set()
        wait_for(lambda: rec.ran.get(cpu) == 1, timeout=5, what="the wake was lost")


def test_unknown_cpu_value_error_names_cpu_and_pool() -> None:
    rec = Recorder()
    with PerCPUThreads(rec.thread_fn, rec.should_run, cpus=[CPUS[0]]) as pool:
        for call in (pool.wake, pool.offline, pool.online, pool.thread):
            with pytest.raises(ValueError) as ei:
                call(9999)
            assert "9999" in str(ei.value) and str([CPUS[0]]) in str(ei.value)
        with pytest.raises(ValueError, match="9999"):
            pool.offline([CPUS[0], 9999])
        assert pool.online_cpus == {CPUS[0]}  # nothing done for a bad list
        with pytest.raises(TypeError):
            pool.wake(True)
        with pytest.raises(TypeError):
            pool.online("0")  # type: ignore[arg-type]


def test_offline_online_idempotent() -> None:
    rec = Recorder()
    with PerCPUThreads(rec.thread_fn, rec.should_run, thread_comm=comm(),
                       **rec.kwargs()) as pool:
        cpu = CPUS[0]
        wait_for(lambda: rec.per_cpu(cpu) == [("setup", cpu)], what="setup")
        pool.online(cpu)
        pool.offline(cpu)
        pool.offline(cpu)
        pool.offline([cpu])
        assert pool.thread(cpu).is_parked
        pool.online(cpu)
        pool.online(cpu)
        wait_for(lambda: len(rec.per_cpu(cpu)) == 3, what="unpark")
        pool.online([cpu])
        assert not pool.thread(cpu).is_parked
        assert rec.per_cpu(cpu) == [("setup", cpu), ("park", cpu), ("unpark", cpu)]


@TWO
def test_several_cpus_park_in_reverse_unpark_in_order() -> None:
    rec = Recorder()
    unparks: List[int] = []
    with PerCPUThreads(rec.thread_fn, rec.should_run, thread_comm=comm(),
                       **rec.kwargs()) as pool:
        for cpu in CPUS:
            wait_for(lambda: ("setup", cpu) in rec.per_cpu(cpu), what="setup")
            k = pool.thread(cpu)
            orig = k.unpark

            def rec_unpark(cpu: int = cpu, orig: Callable[[], None] = orig) -> None:
                unparks.append(cpu)
                orig()
            k.unpark = rec_unpark  # type: ignore[method-assign]
        pool.offline(reversed(CPUS))  # the given order does not matter
        assert [e[1] for e in rec.events if e[0] == "park"] == CPUS[::-1]
        pool.online(reversed(CPUS))
        assert unparks == CPUS


def test_selfparking_threads_are_left_to_their_owner() -> None:
    rec = Recorder()
    with PerCPUThreads(rec.thread_fn, rec.should_run, selfparking=True,
                       thread_comm=comm(), **rec.kwargs()) as pool:
        for cpu in CPUS:
            assert pool.thread(cpu).is_parked and not pool.thread(cpu).started
        pool.offline(CPUS)
        assert pool.online_cpus == frozenset()
        pool.online(CPUS)
        assert all(pool.thread(c).is_parked for c in CPUS)
        assert rec.events == []
        cpu = CPUS[0]
        pool.thread(cpu).unpark()  # the owner starts it
        wait_for(lambda: rec.per_cpu(cpu) == [("setup", cpu)], what="setup")
        pool.offline(cpu)           # bookkeeping only
        assert not pool.thread(cpu).is_parked
        pool.thread(cpu).park()
        assert rec.per_cpu(cpu) == [("setup", cpu), ("park", cpu)]
    assert rec.per_cpu(cpu)[-1] == ("cleanup", cpu, False)


# ---------------------------------------------------------------- errors

def test_callback_errors_recorded_reported_and_other_cpus_keep_working() -> None:
    rec = Recorder()
    bad = CPUS[0]
    boom = ValueError("thread_fn failed")

    def fn(cpu: int) -> None:
        rec.thread_fn(cpu)
        if cpu == bad and rec.ran[cpu] == 1:
            raise boom

    pool = PerCPUThreads(fn, rec.should_run, thread_comm=comm())
    try:
        rec.work[bad] = 1
        pool.wake(bad)
        wait_for(lambda: pool.errors != [], what="error recorded")
        assert pool.errors == [(bad, boom)]
        # Every CPU, the failing one included, keeps running thread_fn.
        for cpu in CPUS:
            rec.work[cpu] = 2
            pool.wake(cpu)
        for cpu in CPUS:
            wait_for(lambda: rec.work[cpu] == 0, what="work after error")
        with pytest.raises(ValueError) as ei:
            pool.offline(bad)
        assert ei.value is boom
        assert pool.thread(bad).is_parked  # the operation was done first
        pool.online(bad)                   # reported once: no raise now
    finally:
        with pytest.raises(ValueError) as ei:
            pool.close()
    assert ei.value is boom
    with pytest.raises(ValueError):
        pool.close()  # idempotent, same report


def test_errors_in_each_callback_are_recorded() -> None:
    rec = Recorder()
    names = ["setup", "park", "unpark", "cleanup", "should_run"]
    errs = {n: RuntimeError(n) for n in names}
    cpu = CPUS[0]
    calls: List[str] = []

    # online() never waits for the thread: without this gate the unpark
    # callback can fail before online() returns, and online() itself then
    # reports it (a free-threaded build runs the thread at once).
    unpark_go = threading.Event()

    def cb(name: str) -> Callable[..., None]:
        def f(*a: Any) -> None:
            if name == "unpark":
                assert unpark_go.wait(10)
            calls.append(name)
            raise errs[name]
        return f

    def should_run(c: int) -> bool:
        if "should_run" not in calls:
            cb("should_run")()
        return False

    pool = PerCPUThreads(rec.thread_fn, should_run, cpus=[cpu], thread_comm=comm(),
                         setup=cb("setup"), park=cb("park"), unpark=cb("unpark"),
                         cleanup=cb("cleanup"))
    wait_for(lambda: "should_run" in calls, what="loop ran")
    with pytest.raises(RuntimeError, match="setup"):
        pool.offline(cpu)  # reports the oldest unreported (setup)
    pool.online(cpu)       # should_run and park were reported with it
    unpark_go.set()
    wait_for(lambda: "unpark" in calls, what="unpark")
    with pytest.raises(RuntimeError, match="unpark"):
        pool.offline(cpu)
    with pytest.raises(RuntimeError, match="setup"):
        pool.close()       # close re-raises the first error
    assert calls == ["setup", "should_run", "park", "unpark", "park", "cleanup"]
    assert [e for _, e in pool.errors] == [errs[n] for n in calls]
    assert all(c == cpu for c, _ in pool.errors)


def test_errors_are_capped() -> None:
    rec = Recorder()
    cpu = CPUS[0]
    left = [percpu.MAX_ERRORS + 20]

    def fn(c: int) -> None:
        left[0] -= 1
        raise KeyError(c)

    with pytest.raises(KeyError):
        with PerCPUThreads(fn, lambda c: left[0] > 0, cpus=[cpu], thread_comm=comm()) as pool:
            pool.wake(cpu)
            wait_for(lambda: left[0] == 0, what="all calls")
    assert len(pool.errors) == percpu.MAX_ERRORS
    assert pool.dropped_errors == 20


# ---------------------------------------------------------------- close, callers

def test_close_stops_parked_threads_and_is_idempotent() -> None:
    rec = Recorder()
    pool = PerCPUThreads(rec.thread_fn, rec.should_run, thread_comm=comm(), **rec.kwargs())
    threads = [pool.thread(c) for c in CPUS]
    for cpu in CPUS:
        wait_for(lambda: ("setup", cpu) in rec.per_cpu(cpu), what="setup")
    pool.offline(CPUS[0])
    pool.close()
    pool.close()
    assert all(not k.is_alive() for k in threads)
    assert pool.closed and pool.online_cpus == frozenset()
    with pytest.raises(RuntimeError, match="closed"):
        pool.online(CPUS[0])
    with pytest.raises(RuntimeError, match="closed"):
        pool.offline(CPUS[0])
    with pytest.raises(RuntimeError, match="closed"):
        pool.follow_affinity(interval=0.1)
    assert pool.wake(CPUS[0]) is False
    assert [e for e in rec.events if e[0] == "cleanup"] == \
        [("cleanup", c, c != CPUS[0]) for c in CPUS]


def test_hotplug_from_a_pool_thread_is_refused() -> None:
    rec = Recorder()
    cpu = CPUS[0]
    seen: List[BaseException] = []
    holder: List[PerCPUThreads] = []

    def fn(c: int) -> None:
        rec.thread_fn(c)
        calls: List[Callable[[], None]] = [lambda: holder[0].offline(c),
                                           lambda: holder[0].online(c), holder[0].close]
        for call in calls:
            try:
                call()
            except RuntimeError as exc:
                seen.append(exc)

    with PerCPUThreads(fn, rec.should_run, cpus=[cpu], thread_comm=comm()) as pool:
        holder.append(pool)
        rec.work[cpu] = 1
        pool.wake(cpu)
        wait_for(lambda: len(seen) == 3, what="three refusals")
    assert all("own threads" in str(e) for e in seen)


# ---------------------------------------------------------------- affinity

def test_parse_cpu_list() -> None:
    assert parse_cpu_list("0-3,5,7-8\n") == {0, 1, 2, 3, 5, 7, 8}
    assert parse_cpu_list("0") == {0}
    assert parse_cpu_list("") == frozenset()
    with pytest.raises(ValueError):
        parse_cpu_list("3-1")
    assert available_cpus() <= frozenset(os.sched_getaffinity(os.getpid()))


def counting_available_cpus(monkeypatch: pytest.MonkeyPatch) -> List[int]:
    """Count the pool's affinity syncs (each calls percpu.available_cpus)."""
    count = [0]
    real = percpu.available_cpus

    def counting() -> frozenset[int]:
        count[0] += 1
        return real()

    monkeypatch.setattr(percpu, "available_cpus", counting)
    return count


def test_follow_affinity_keeps_allowed_cpus_online(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    syncs = counting_available_cpus(monkeypatch)
    with PerCPUThreads(rec.thread_fn, rec.should_run, thread_comm=comm()) as pool:
        pool.follow_affinity(interval=0.02)
        # The watcher itself synced (twice: the first may predate our look).
        wait_for(lambda: syncs[0] >= 3, what="the watcher synced")
        assert pool.online_cpus == frozenset(CPUS) & available_cpus()
        with pytest.raises(ValueError):
            pool.follow_affinity(interval=0)
        pool.follow_affinity(None)


@TWO
def test_follow_affinity_parks_dropped_cpu_and_unparks_it_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder()
    gone = CPUS[-1]
    main_tid = os.getpid()
    assert threading.current_thread() is threading.main_thread()
    with PerCPUThreads(rec.thread_fn, rec.should_run, thread_comm=comm(),
                       **rec.kwargs()) as pool:
        wait_for(lambda: ("setup", gone) in rec.per_cpu(gone), what="setup")
        pool.follow_affinity(interval=0.02)
        try:
            os.sched_setaffinity(main_tid, set(CPUS) - {gone})
            wait_for(lambda: gone not in pool.online_cpus, what="CPU dropped")
            # Listed offline once its park is asked for; parked a moment later.
            wait_for(lambda: pool.thread(gone).is_parked, what="its thread parked")
            assert rec.per_cpu(gone)[-1] == ("park", gone)
            assert set(CPUS) - {gone} <= pool.online_cpus
        finally:
            os.sched_setaffinity(main_tid, CPUS)
        wait_for(lambda: gone in pool.online_cpus, what="CPU back")
        wait_for(lambda: rec.per_cpu(gone)[-1] == ("unpark", gone), what="unpark")
        rec.work[gone] = 1
        pool.wake(gone)
        wait_for(lambda: rec.ran.get(gone) == 1, what="runs again")
        # A CPU taken offline by hand stays offline whatever the affinity.
        pool.offline(gone)
        syncs = counting_available_cpus(monkeypatch)
        wait_for(lambda: syncs[0] >= 2, what="the watcher synced after offline()")
        assert gone not in pool.online_cpus and pool.thread(gone).is_parked
    assert pool.errors == []


# ---------------------------------------------------------------- several threads per CPU

def test_nthreads_spreads_threads_over_the_cpus_in_order() -> None:
    rec = Recorder()
    n = 2 * len(CPUS) + 1
    with PerCPUThreads(rec.thread_fn, rec.should_run, cpus=CPUS, nthreads=n,
                       thread_comm=comm(), **rec.kwargs()) as pool:
        for i, cpu in enumerate(CPUS):
            ks = pool.threads_of(cpu)
            assert len(ks) == len(range(i, n, len(CPUS))) and pool.thread(cpu) is ks[0]
            assert all(k.cpu == cpu and os.sched_getaffinity(k.native_id) == {cpu} for k in ks)
        wait_for(lambda: sum(e[0] == "setup" for e in rec.events) == n, what="setup per thread")
        cpu = CPUS[-1]
        pool.offline(cpu)
        assert all(k.is_parked for k in pool.threads_of(cpu))
        assert [e for e in rec.per_cpu(cpu) if e[0] == "park"] == [("park", cpu)] * len(
            pool.threads_of(cpu))
        pool.online(cpu)
        wait_for(lambda: not any(k.is_parked for k in pool.threads_of(cpu)), what="unparked")
    for bad, err in ((0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(err):
            PerCPUThreads(rec.thread_fn, rec.should_run, nthreads=bad)  # type: ignore[arg-type]
    # Fewer threads than CPUs would leave a CPU of the pool with no thread
    # (on one CPU, nthreads >= 1 always covers it).
    for fewer in range(1, len(CPUS)):
        with pytest.raises(ValueError, match="at least the number of CPUs"):
            PerCPUThreads(rec.thread_fn, rec.should_run, cpus=CPUS, nthreads=fewer)


def test_refused_follow_affinity_call_keeps_the_running_watcher() -> None:
    rec = Recorder()
    with PerCPUThreads(rec.thread_fn, rec.should_run, cpus=CPUS, thread_comm=comm()) as pool:
        pool.follow_affinity(interval=30.0)
        watcher = pool._watcher
        assert watcher is not None
        for bad, err in (("1", TypeError), (-1.0, ValueError)):
            with pytest.raises(err):
                pool.follow_affinity(bad)  # type: ignore[arg-type]
        assert pool._watcher is watcher and watcher.thread.is_alive()
        pool.follow_affinity(None)
        assert pool._watcher is None


class HookedPool(PerCPUThreads):
    """Logs every hotplug hook call; vetoes offlining the last online CPU."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.calls: List[Tuple[Any, ...]] = []
        super().__init__(*args, **kwargs)

    def _veto_offline(self, cpus: List[int], remaining: frozenset) -> Any:
        self.calls.append(("veto", list(cpus), sorted(remaining)))
        return None if remaining else "would leave no CPU online"

    def _going_offline(self, cpus: List[int]) -> None:
        self.calls.append(("going", list(cpus), all(not k.is_parked for c in cpus
                                                    for k in self.threads_of(c))))

    def _gone_offline(self, cpus: List[int]) -> None:
        self.calls.append(("gone", list(cpus), all(k.is_parked for c in cpus
                                                   for k in self.threads_of(c)),
                           not set(cpus) & self.online_cpus))

    def _came_online(self, cpus: List[int]) -> None:
        self.calls.append(("came", list(cpus), set(cpus) <= self.online_cpus))

    def _closing(self) -> None:
        self.calls.append(("closing", self.closed))


def test_hotplug_hooks_see_every_change_once_in_order() -> None:
    rec = Recorder()
    with HookedPool(rec.thread_fn, rec.should_run, thread_comm=comm()) as pool:
        with pytest.raises(RuntimeError, match="no CPU online"):
            pool.offline(CPUS)
        assert pool.online_cpus == frozenset(CPUS)
        assert pool.calls == [("veto", CPUS[::-1], [])]
        pool.calls.clear()
        pool.offline(CPUS, force=True)  # force: the veto is not asked
        pool.offline(CPUS)              # nothing left to change: no hook
        pool.online(CPUS[0])
        pool.online(CPUS[0])
        assert pool.calls == [("going", CPUS[::-1], True), ("gone", CPUS[::-1], True, True),
                              ("came", [CPUS[0]], True)]
        pool.calls.clear()
    assert pool.calls == [("closing", False)]


def test_a_raising_closing_hook_leaves_the_pool_open_for_a_retry() -> None:
    rec = Recorder()

    class Failing(PerCPUThreads):
        fail = True

        def _closing(self) -> None:
            if self.fail:
                raise KeyboardInterrupt

    pool = Failing(rec.thread_fn, rec.should_run, thread_comm=comm())
    with pytest.raises(KeyboardInterrupt):
        pool.close()
    assert not pool.closed and pool.online_cpus == frozenset(CPUS)
    pool.fail = False
    pool.close()
    assert pool.closed and not any(pool.thread(c).is_alive() for c in CPUS)


class _NoTruth:
    """A result whose truth test raises (as a numpy array's or a Series' does)."""

    def __bool__(self):
        raise ValueError("truth value is ambiguous")


@pytest.mark.timeout(60)
def test_should_run_result_whose_truth_test_raises_counts_as_false_and_is_recorded():
    cpu = sorted(os.sched_getaffinity(0))[0]
    checks = threading.Semaphore(0)
    ran: List[int] = []

    def should_run(c):
        checks.release()
        return _NoTruth()

    pool = PerCPUThreads(ran.append, should_run, cpus=[cpu])
    try:
        assert checks.acquire(timeout=10)
        wait_for(lambda: bool(pool.errors), what="the truth-test error recorded")
        c, exc = pool.errors[0]
        assert c == cpu and isinstance(exc, ValueError)
        # The thread lives on and re-checks on the next wake.
        assert pool.thread(cpu).is_alive() and cpu in pool.online_cpus
        pool.wake(cpu)
        assert checks.acquire(timeout=10)
        assert ran == []
    finally:
        with pytest.raises(ValueError):
            pool.close()  # reports the recorded error
        assert not pool.thread(cpu).is_alive()
