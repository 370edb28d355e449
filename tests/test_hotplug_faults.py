"""Hotplug and teardown under faults and misuse.

- An offline() interrupted while it waits for a busy thread (KeyboardInterrupt,
  an exception raised by a signal handler) leaves the CPU offline with its
  park pending, as its threads are about to be; a retried offline() waits
  for that park, online() withdraws it; nothing queued is lost:
  test_interrupted_offline_*; an online() interrupted before its unparks
  leaves the CPU offline, and either call resolves it: test_online_interrupted_*.
- shutdown(wait=True) / close() interrupted: the interrupt surfaces within
  100 ms (without waiting for running tasks), is not recorded as a callback
  error, queued work stays queued and still runs, and a retry finishes the
  job: test_interrupted_shutdown_*, test_interrupted_close_*.
- A task or thread_fn that parks its own thread (or any park request the
  pool did not make): refused, never a worker parked for good:
  test_*_parking_its_own_*.

The interrupt cases run tests/scripts/interrupt_child.py in a fresh
interpreter (signals are process-wide) with a timeout.
"""
from __future__ import annotations

import os
import threading

import pytest

import kpark
from kpark import PerCPUExecutor, PerCPUThreads
from kpark.kthread import kthread_park

from helpers import wait_for
from test_process import run_script, result_of

#: An interrupt reaches the calling thread within this many seconds.
LATENCY = 0.100
CPUS = sorted(os.sched_getaffinity(0))


def run_child(*args: str) -> dict:
    proc = run_script("interrupt_child.py", *args, timeout=60)
    if proc.returncode != 0:
        pytest.fail(f"interrupt_child.py {' '.join(args)} failed (rc={proc.returncode})\n"
                    f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return result_of(proc.stdout)


# ---- interrupted hotplug ---------------------------------------------------------

@pytest.mark.timeout(90)
@pytest.mark.parametrize("then", ["retry", "online"])
@pytest.mark.parametrize("sig", ["int", "alarm"])
@pytest.mark.parametrize("owner", ["executor", "pool"])
def test_interrupted_offline_leaves_a_state_a_retry_or_online_resolves(
        owner: str, sig: str, then: str) -> None:
    """offline(cpu) waits for a busy worker and is interrupted (SIGINT, or a
    SIGALRM whose handler raises): the CPU is listed offline while its park
    is pending; `retry` (offline again once the task may end) parks it,
    `online` withdraws the park at once; then pinned and unpinned work runs
    on it, hotplug works, and shutdown()/close() finish (the child asserts
    each step)."""
    res = run_child("offline", owner, sig, then)
    assert 0 <= res["latency"] < LATENCY, res


# ---- interrupted shutdown / close ------------------------------------------------

@pytest.mark.timeout(90)
@pytest.mark.parametrize("phase", ["drain", "stop"])
@pytest.mark.parametrize("sig", ["int", "alarm"])
def test_interrupted_shutdown_keeps_the_work_and_a_retry_finishes(phase: str, sig: str) -> None:
    """shutdown(wait=True) interrupted while queued tasks wait behind busy
    workers (`drain`) or while the workers' tasks have not ended (`stop`):
    the interrupt arrives within 100 ms, is not in the errors, queued tasks
    are not cancelled and still run, new submits are refused, and a second
    shutdown() joins every worker (as ThreadPoolExecutor's)."""
    res = run_child(phase, "executor", sig)
    assert 0 <= res["latency"] < LATENCY, res


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", ["int", "alarm"])
def test_interrupted_close_surfaces_at_once_and_a_retry_finishes(sig: str) -> None:
    """PerCPUThreads.close() interrupted while a thread_fn runs on: raised
    within 100 ms, not recorded, hotplug refused while closing, and the next
    close() stops every thread and raises nothing."""
    res = run_child("stop", "pool", sig)
    assert 0 <= res["latency"] < LATENCY, res


# ---- misuse: parking the pool's own threads ----------------------------------------

def _park_self() -> str:
    kpark.current().park()  # refused: the executor owns its workers' parking
    return "parked?"


def _request_own_park() -> str:
    # Behind park()'s back (the core's request, as a C extension might):
    # the worker withdraws it once the task returns and fails the task.
    kpark.current()._core.park()  # from itself: only a request
    return "parked?"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["park", "kthread_park", "map", "request"])
def test_a_task_parking_its_own_worker_fails_and_the_worker_stays(how: str) -> None:
    cpu = CPUS[-1]
    with PerCPUExecutor(cpus=CPUS) as ex:
        if how == "map":
            # One item: once map() raises it is done, whichever worker ran it.
            with pytest.raises(RuntimeError, match="owns its threads' parking"):
                list(ex.map(lambda _: _park_self(), range(1)))
            assert not any(ex.threads.thread(c).should_park for c in CPUS)
        else:
            fn = {"park": _park_self, "request": _request_own_park,
                  "kthread_park": lambda: kthread_park(kpark.current())}[how]
            f = ex.submit_on(cpu, fn)
            with pytest.raises(RuntimeError, match="owns its threads' parking"):
                f.result(10)
        k = ex.threads.thread(cpu)
        assert not k.should_park and not k.is_parked and cpu in ex.online_cpus
        assert ex.submit_on(cpu, pow, 2, 3).result(10) == 8
        assert [f.result(10) for f in [ex.submit(pow, 2, i) for i in range(4)]] == [1, 2, 4, 8]
        ex.offline(cpu, force=len(CPUS) == 1)   # the pool's own parking still works
        assert k.is_parked
        ex.online(cpu)
        assert ex.submit_on(cpu, pow, 3, 2).result(10) == 9
    assert not any(t.is_alive() for t in ex._threads)


@pytest.mark.timeout(60)
def test_a_task_stopping_its_own_worker_fails_and_the_worker_stays() -> None:
    cpu = CPUS[-1]
    with PerCPUExecutor(cpus=CPUS) as ex:
        f = ex.submit_on(cpu, lambda: kpark.current().stop())
        with pytest.raises(RuntimeError, match="owns its threads' parking and stopping"):
            f.result(10)
        assert ex.submit_on(cpu, pow, 2, 3).result(10) == 8
        assert ex.threads.thread(cpu).is_alive()
    assert not any(t.is_alive() for t in ex._threads)


@pytest.mark.timeout(60)
def test_parking_or_stopping_a_worker_from_another_thread_is_refused_at_once() -> None:
    """Busy or idle, from the main thread or a sibling task: park() and
    stop() of an executor's worker raise RuntimeError before they ask
    anything of it, and the worker keeps serving its CPU."""
    cpu = CPUS[-1]
    gate, started = threading.Event(), threading.Event()

    def busy() -> int:
        started.set()
        assert gate.wait(10)
        return 1

    with PerCPUExecutor(cpus=CPUS) as ex:
        k = ex.threads.thread(cpu)
        for act in (k.park, k.stop, lambda: kthread_park(k)):
            with pytest.raises(RuntimeError, match="owns its threads' parking and stopping"):
                act()  # idle worker (parked in place, nobody to notice later)
        f = ex.submit_on(cpu, busy)
        assert started.wait(10)
        for act in (k.park, k.stop):
            with pytest.raises(RuntimeError, match=r"use the executor's offline\(\)"):
                act()  # busy worker
        assert not k.should_park and not k.should_stop
        gate.set()
        assert f.result(10) == 1
        sibling = ex.submit_on(CPUS[0], lambda: k.stop())  # a task stopping another worker
        with pytest.raises(RuntimeError, match="owns its threads' parking and stopping"):
            sibling.result(10)
        assert ex.submit_on(cpu, pow, 2, 3).result(10) == 8
        assert cpu in ex.online_cpus and k.is_alive()
    assert not any(t.is_alive() for t in ex._threads)


@pytest.mark.timeout(60)
def test_a_pools_threads_are_parked_and_stopped_by_the_pool_only() -> None:
    """PerCPUThreads owns its threads' parking and stopping; a selfparking
    pool leaves the parking to its user but still owns the stopping."""
    cpu = CPUS[-1]
    with PerCPUThreads(lambda c: None, lambda c: False) as pool:
        k = pool.thread(cpu)
        for act in (k.park, k.stop):
            with pytest.raises(RuntimeError, match=r"use the pool's offline\(\)/online\(\)/close\(\)"):
                act()
        assert not k.should_park and cpu in pool.online_cpus
        pool.offline(cpu)
        assert k.is_parked
        pool.online(cpu)
    assert not k.is_alive()
    with PerCPUThreads(lambda c: None, lambda c: False, selfparking=True) as pool:
        k = pool.thread(cpu)
        k.unpark()
        k.park()  # the owner of a selfparking pool's parking is its user
        assert k.is_parked
        with pytest.raises(RuntimeError, match="owns its threads' parking and stopping"):
            k.stop()
    assert not k.is_alive()


@pytest.mark.timeout(60)
def test_a_thread_fn_parking_its_own_thread_is_refused_and_recorded() -> None:
    """The pool owns its threads' parking: a thread_fn that parks its own
    thread gets the request withdrawn (the thread keeps running, and its CPU
    stays online), and the refusal is recorded as a RuntimeError."""
    cpu = CPUS[-1]
    todo = {c: 0 for c in CPUS}
    ran = {c: 0 for c in CPUS}

    def thread_fn(c: int) -> None:
        todo[c] -= 1
        ran[c] += 1
        if ran[c] == 1:
            kpark.current().park()

    pool = PerCPUThreads(thread_fn, lambda c: todo[c] > 0, cpus=CPUS)
    try:
        todo[cpu] += 1
        pool.wake(cpu)
        wait_for(lambda: pool.errors, msg="the refused park recorded")
        (c, exc), = pool.errors
        assert c == cpu and isinstance(exc, RuntimeError)
        k = pool.thread(cpu)
        assert not k.should_park and not k.is_parked and cpu in pool.online_cpus
        todo[cpu] += 1
        pool.wake(cpu)
        wait_for(lambda: ran[cpu] == 2, msg="thread_fn ran again")
        with pytest.raises(RuntimeError, match="owns its threads' parking"):
            pool.offline(cpu)            # parks (the pool's own), then reports
        assert k.is_parked
        pool.online(cpu)
    finally:
        with pytest.raises(RuntimeError, match="owns its threads' parking"):
            pool.close()
    assert not any(t.is_alive() for t in pool.threads_of(cpu))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("then", ["online", "offline"])
def test_online_interrupted_before_it_unparked_is_resolved_by_either_call(
        monkeypatch: pytest.MonkeyPatch, then: str) -> None:
    """An interrupt inside online() (here: the unpark itself raises, as a
    signal handler's exception would between two statements) leaves the CPU
    not listed online while its thread is still parked; online() again
    brings it up, offline() finishes the parking."""
    cpu = CPUS[-1]
    todo = {c: 0 for c in CPUS}
    ran = {c: 0 for c in CPUS}

    def thread_fn(c: int) -> None:
        todo[c] -= 1
        ran[c] += 1

    pool = PerCPUThreads(thread_fn, lambda c: todo[c] > 0, cpus=[cpu])
    try:
        k = pool.thread(cpu)
        pool.offline(cpu)
        assert k.is_parked

        def interrupted() -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(k, "unpark", interrupted)
        with pytest.raises(KeyboardInterrupt):
            pool.online(cpu)
        monkeypatch.undo()
        assert cpu not in pool.online_cpus and k.is_parked  # as its thread is
        if then == "offline":
            pool.offline(cpu)
            assert k.is_parked and cpu not in pool.online_cpus
        pool.online(cpu)
        assert cpu in pool.online_cpus
        wait_for(lambda: not k.is_parked, msg="unparked")
        todo[cpu] += 1
        pool.wake(cpu)
        wait_for(lambda: ran[cpu] == 1, msg="thread_fn ran")
    finally:
        pool.close()
    assert pool.errors == []
