"""PerCPUExecutor as a drop-in concurrent.futures.ThreadPoolExecutor.

Each rule is checked on PerCPUExecutor and, where the stdlib has the same
rule, on ThreadPoolExecutor in the same test, so the test states (and
proves) what "as the stdlib" means.
"""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextvars
import logging
import os
import threading
from concurrent.futures.thread import BrokenThreadPool
from typing import Any, Callable, List, Optional, Tuple

import pytest

import kpark
from conftest import assert_stays, wait_for
from kpark import PerCPUExecutor

pytestmark = pytest.mark.timeout(60)

CPUS = sorted(os.sched_getaffinity(0))
NAN = float("nan")
BOTH = pytest.mark.parametrize("make", [cf.ThreadPoolExecutor, PerCPUExecutor],
                               ids=["stdlib", "kpark"])


def where() -> Tuple[Optional[int], frozenset[int], str]:
    """(the worker's CPU, its affinity, its thread name): run inside tasks."""
    k = kpark.current()
    return ((k.cpu if k is not None else None), frozenset(os.sched_getaffinity(0)),
            threading.current_thread().name)


class Blocker:
    """A task that signals it started and blocks until released."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> Any:
        self.started.set()
        assert self.release.wait(30)
        return where()


# ---------------------------------------------------------------- type and asyncio

def test_is_a_thread_pool_executor() -> None:
    with PerCPUExecutor() as ex:
        assert isinstance(ex, cf.ThreadPoolExecutor) and isinstance(ex, cf.Executor)


def test_asyncio_default_executor_and_to_thread_run_on_pinned_workers() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def main(ex: PerCPUExecutor) -> Tuple[Any, Any, Any]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ex)  # TypeError unless a ThreadPoolExecutor
        var.set("from the loop")
        by_none = await loop.run_in_executor(None, where)
        by_thread = await asyncio.to_thread(lambda: (where(), var.get()))
        # Plain run_in_executor copies nothing; our submit copies the context.
        return by_none, by_thread, await loop.run_in_executor(None, var.get)

    with PerCPUExecutor() as ex:
        by_none, (by_thread, seen), submitted = asyncio.run(main(ex))
        names = {t.name for t in ex._threads}
    for cpu, aff, name in (by_none, by_thread):
        assert cpu in CPUS and aff == {cpu} and name in names
    assert seen == "from the loop"  # to_thread's context reached our worker
    assert submitted == "from the loop"  # a ThreadPoolExecutor's task sees "unset"


# ---------------------------------------------------------------- max_workers

@BOTH
def test_max_workers_must_be_positive(make: Callable[..., cf.Executor]) -> None:
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            make(max_workers=bad)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        make(initializer=42)


def test_default_one_worker_per_cpu_and_private_attributes() -> None:
    with PerCPUExecutor() as ex:
        assert ex._max_workers == len(CPUS) == len(ex._threads)
        assert all(isinstance(t, threading.Thread) and t.is_alive() for t in ex._threads)
        assert ex._broken is False
        assert {ex.threads.thread(c) for c in CPUS} == ex._threads
    assert not any(t.is_alive() for t in ex._threads)


def test_max_workers_above_cpu_count_spreads_pinned_workers_in_order() -> None:
    n = 3 * len(CPUS) + 1
    with PerCPUExecutor(max_workers=n) as ex:
        assert ex._max_workers == n == len(ex._threads)
        for i, cpu in enumerate(CPUS):
            ks = ex.threads.threads_of(cpu)
            assert len(ks) == len(range(i, n, len(CPUS)))
            for k in ks:
                assert k.cpu == cpu and os.sched_getaffinity(k.native_id) == {cpu}
        # n blocking tasks all run at once (each waits for the others), as
        # on a ThreadPoolExecutor of n threads.
        for other in (cf.ThreadPoolExecutor(n), ex):
            barrier = threading.Barrier(n, timeout=20)
            fs = [other.submit(lambda: (barrier.wait(), where())[1]) for _ in range(n)]
            got = [f.result(30) for f in fs]
            if other is ex:
                assert len({name for _, _, name in got}) == n
                assert all(aff == {cpu} for cpu, aff, _ in got)
            else:
                other.shutdown()


def test_max_workers_below_cpu_count_uses_the_first_cpus() -> None:
    with PerCPUExecutor(max_workers=1) as ex:
        assert ex.cpus == (CPUS[0],) and len(ex._threads) == 1
        assert ex.submit(where).result(10)[0] == CPUS[0]
        if len(CPUS) > 1:
            with pytest.raises(ValueError):
                ex.submit_on(CPUS[1], int)


def test_submit_on_goes_to_any_worker_of_that_cpu() -> None:
    cpu = CPUS[-1]
    with PerCPUExecutor(max_workers=2 * len(CPUS)) as ex:
        b = Blocker()
        first = ex.submit_on(cpu, b)
        assert b.started.wait(10)
        # The first worker of `cpu` is blocked: the other one runs this.
        other = ex.submit_on(cpu, where).result(10)
        assert other[0] == cpu and other[1] == {cpu}
        b.release.set()
        blocked = first.result(10)
        assert blocked[0] == cpu and blocked[2] != other[2]


def test_offline_parks_every_worker_of_the_cpu() -> None:
    cpu = CPUS[-1]
    with PerCPUExecutor(max_workers=3 * len(CPUS)) as ex:
        ex.offline(cpu, force=True)
        ks = ex.threads.threads_of(cpu)
        assert len(ks) == 3 and all(k.is_parked for k in ks)
        f = ex.submit_on(cpu, where)
        assert_stays(lambda: not f.done(), "a pinned task ran on an offline CPU")
        ex.online(cpu)
        assert f.result(10)[0] == cpu
        wait_for(lambda: not any(k.is_parked for k in ks), msg="all unparked")


# ---------------------------------------------------------------- initializer

@BOTH
def test_initializer_runs_in_each_worker_before_its_first_task(
        make: Callable[..., cf.Executor]) -> None:
    local = threading.local()
    inited: List[str] = []
    lock = threading.Lock()

    def init(tag: str) -> None:
        local.tag = tag
        with lock:
            inited.append(threading.current_thread().name)

    n = 2 * len(CPUS)
    with make(max_workers=n, initializer=init, initargs=("ready",)) as ex:
        barrier = threading.Barrier(n, timeout=20)

        def task() -> Tuple[str, str]:
            barrier.wait()
            return local.tag, threading.current_thread().name

        got = [f.result(30) for f in [ex.submit(task) for _ in range(n)]]
    assert all(tag == "ready" for tag, _ in got)
    assert sorted(name for _, name in got) == sorted(inited)  # once per worker


@BOTH
def test_failing_initializer_breaks_the_executor(make: Callable[..., cf.Executor],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    def init() -> None:
        raise OSError("no")

    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        ex = make(max_workers=2, initializer=init)
        f = ex.submit(int, "1")  # may be refused already, or fail
        with pytest.raises(BrokenThreadPool):
            f.result(10)
        wait_for(lambda: ex._broken, msg="executor broken")
        with pytest.raises(BrokenThreadPool):
            ex.submit(int)
        with pytest.raises(BrokenThreadPool):
            ex.map(int, ["1"])
        if isinstance(ex, PerCPUExecutor):
            with pytest.raises(BrokenThreadPool):
                ex.submit_on(ex.cpus[0], int)
        ex.shutdown(wait=True)
    assert any("Exception in initializer" in r.message for r in caplog.records)
    assert isinstance(ex._broken, str)


# ---------------------------------------------------------------- contextvars

def test_tasks_run_in_a_copy_of_the_submitters_context() -> None:
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var", default=0)

    def bump() -> int:
        var.set(var.get() + 100)
        return var.get()

    with PerCPUExecutor() as ex:
        var.set(1)
        f = ex.submit(var.get)
        g = ex.submit_on(CPUS[0], bump)
        var.set(2)  # after submit: the tasks keep what they copied
        assert f.result(10) == 1 and g.result(10) == 101
        assert list(ex.map(lambda _: var.get(), range(5))) == [2] * 5
        assert list(ex.map(lambda _: bump(), range(5))) == [102] * 5  # a copy each
        assert list(ex.map(lambda _: var.get(), range(5), chunksize=2)) == [2] * 5
        assert var.get() == 2  # nothing leaked back


# ---------------------------------------------------------------- stdlib corner cases

@BOTH
def test_nan_timeouts_do_not_wait(make: Callable[..., cf.Executor]) -> None:
    with make(max_workers=1) as ex:
        b = Blocker()
        f = ex.submit(b)
        assert b.started.wait(10)
        with pytest.raises(cf.TimeoutError):
            f.result(NAN)
        with pytest.raises(cf.TimeoutError):
            f.exception(NAN)
        it = ex.map(lambda x: x, [1, 2], timeout=NAN)
        with pytest.raises(cf.TimeoutError):
            next(it)
        b.release.set()
        assert f.result(10) is not None
        assert f.result(NAN) is not None and f.exception(NAN) is None


@BOTH
def test_user_setting_a_queued_future_running_keeps_its_task_from_running(
        make: Callable[..., cf.Executor], caplog: pytest.LogCaptureFixture) -> None:
    ran: List[int] = []
    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        ex = make(max_workers=1)
        b = Blocker()
        ex.submit(b)
        assert b.started.wait(10)
        f = ex.submit(ran.append, 1)
        assert f.set_running_or_notify_cancel() and f.running()
        b.release.set()
        wait_for(lambda: any("unexpected state" in r.message for r in caplog.records),
                 msg="the worker found the future running")
        assert f.running() and not f.done() and ran == []
        if isinstance(ex, PerCPUExecutor):
            # The stdlib's worker thread dies here; ours carries on.
            assert ex.submit(int, "4").result(10) == 4
        ex.shutdown(wait=True)
    assert ran == []


@BOTH
def test_thread_names_start_with_the_prefix(make: Callable[..., cf.Executor]) -> None:
    with make(max_workers=2, thread_name_prefix="job") as ex:
        name = ex.submit(lambda: threading.current_thread().name).result(10)
    assert name.startswith("job_")
    with make() as ex:
        default = ex.submit(lambda: threading.current_thread().name).result(10)
    assert default.startswith(type(ex).__name__ + "-")
    if isinstance(ex, PerCPUExecutor):
        with PerCPUExecutor(max_workers=2 * len(CPUS), thread_name_prefix="job") as ex:
            names = {t.name for t in ex._threads}
        assert names == {f"job_{i}/cpu{CPUS[i % len(CPUS)]}" for i in range(2 * len(CPUS))}


@BOTH
def test_shutdown_wait_and_cancel_futures(make: Callable[..., cf.Executor]) -> None:
    ex = make(max_workers=1)
    b = Blocker()
    running = ex.submit(b)
    assert b.started.wait(10)
    queued = [ex.submit(int, str(i)) for i in range(5)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued) and not running.done()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(int)
    b.release.set()
    ex.shutdown(wait=True)
    assert running.result(0) is not None
    assert not any(t.is_alive() for t in ex._threads)  # type: ignore[attr-defined]

    ex = make(max_workers=1)
    b = Blocker()
    ex.submit(b)
    assert b.started.wait(10)
    later = [ex.submit(int, str(i)) for i in range(5)]
    ex.shutdown(wait=False)  # queued work still runs
    b.release.set()
    assert [f.result(10) for f in later] == list(range(5))
    ex.shutdown(wait=True)


@BOTH
def test_map_raises_the_first_exception_and_cancels_what_has_not_started(
        make: Callable[..., cf.Executor]) -> None:
    ran: List[int] = []
    raised = threading.Event()

    def fn(i: int) -> int:
        ran.append(i)
        if i == 0:
            raise KeyError(i)
        # Any later item holds the only worker until the caller saw item 0
        # fail, so at most one of them can have started by then.
        assert raised.wait(20)
        return i

    with make(max_workers=1) as ex:
        b = Blocker()
        ex.submit(b)
        assert b.started.wait(10)
        it = ex.map(fn, range(20))  # all queued behind the blocker
        b.release.set()
        with pytest.raises(KeyError):
            next(it)
        raised.set()
    # The items that had not started when the iterator raised were
    # cancelled: at most one ran after item 0.
    assert ran[0] == 0 and len(ran) <= 2


@BOTH
def test_map_items_may_wait_for_each_other(make: Callable[..., cf.Executor]) -> None:
    # Each item waits until the next one has started: fine with one task per
    # item and a worker for each; chunking would deadlock this.
    n = 8
    started = [threading.Event() for _ in range(n + 1)]
    started[n].set()

    def fn(i: int) -> int:
        started[i].set()
        assert started[i + 1].wait(20), f"item {i + 1} never started"
        return i

    with make(max_workers=n) as ex:
        assert list(ex.map(fn, range(n))) == list(range(n))


@BOTH
def test_map_items_cancelled_by_shutdown_raise_cancelled_error(
        make: Callable[..., cf.Executor]) -> None:
    ran: List[int] = []
    ex = make(max_workers=1)
    b = Blocker()
    ex.submit(b)
    assert b.started.wait(10)
    it = ex.map(ran.append, range(10))  # all queued behind the blocker
    ex.shutdown(wait=False, cancel_futures=True)
    b.release.set()
    with pytest.raises(cf.CancelledError):
        next(it)
    ex.shutdown(wait=True)
    assert ran == []


def test_an_idle_worker_runs_what_was_queued_behind_a_busy_one() -> None:
    # Tasks that wait for a task they submit: fine while some worker is
    # idle, wherever the new task was queued (submit and a one-item map).
    n = 2 * len(CPUS)
    with PerCPUExecutor(max_workers=n) as ex:
        def parent(i: int) -> int:
            if i % 2:
                return ex.submit(abs, -i).result(20)
            return list(ex.map(abs, [-i]))[0]

        for _ in range(50):
            fs = [ex.submit(parent, i) for i in range(n // 2)]
            assert [f.result(30) for f in fs] == list(range(n // 2))
