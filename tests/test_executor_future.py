"""PerCPUExecutor's fast Future and its map(), per item and chunked.

The executor's futures are kpark._futures._Future: a concurrent.futures.Future
whose Condition is made only on demand and whose waits block on a
kpark.Completion.  Everything that works with a stdlib Future must keep
working: isinstance, callbacks, wait()/as_completed(), asyncio.wrap_future.
"""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import os
import threading
import time
from typing import Callable, Any, List

import pytest

from conftest import wait_asleep, wait_for
from kpark._futures import _Future
from kpark.executor import PerCPUExecutor

pytestmark = pytest.mark.timeout(60)

CPUS = sorted(os.sched_getaffinity(0))


class Gate:
    """A task that reports it started and blocks until opened."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.opened = threading.Event()

    def __call__(self, value: Any = None) -> Any:
        self.started.set()
        assert self.opened.wait(30)
        return value


@pytest.fixture
def ex() -> Any:
    with PerCPUExecutor() as executor:
        yield executor


# ---------------------------------------------------------------- the Future itself

def test_is_a_concurrent_futures_future_without_an_eager_condition(ex: PerCPUExecutor) -> None:
    f = ex.submit(int, "3")
    assert isinstance(f, cf.Future) and type(f) is _Future
    assert f.result(10) == 3
    assert f._cond is None  # nobody asked for the Condition: never built
    cond = f._condition
    assert isinstance(cond, threading.Condition) and f._condition is cond


def test_result_exception_cancel_and_timeouts_follow_the_stdlib(ex: PerCPUExecutor) -> None:
    gate = Gate()
    ex.submit(gate)  # occupies a worker; with one CPU it blocks the queue
    blockers = [Gate() for _ in CPUS[1:]]
    for b in blockers:
        ex.submit(b)
    for b in blockers:
        assert b.started.wait(10)
    assert gate.started.wait(10)
    queued = ex.submit(int, "5")  # every worker is busy: it stays PENDING
    assert not queued.done() and not queued.running()
    with pytest.raises(cf.TimeoutError):
        queued.result(0.01)
    with pytest.raises(cf.TimeoutError):
        queued.result(-1)  # negative: no wait at all, as threading.Condition
    with pytest.raises(cf.TimeoutError):
        queued.exception(0)
    assert queued.cancel() and queued.cancelled() and queued.done()
    with pytest.raises(cf.CancelledError):
        queued.result()
    with pytest.raises(cf.CancelledError):
        queued.exception()
    gate.opened.set()
    for b in blockers:
        b.opened.set()
    boom = ex.submit(lambda: 1 / 0)
    assert isinstance(boom.exception(10), ZeroDivisionError)
    with pytest.raises(ZeroDivisionError):
        boom.result()
    assert not boom.cancel()  # finished futures cannot be cancelled
    assert "raised ZeroDivisionError" in repr(boom)


def test_a_blocked_result_is_released_by_set_result_and_by_cancel() -> None:
    for finish in ("result", "exception", "cancel"):
        f = _Future()
        got: List[Any] = []

        def waiter() -> None:
            try:
                got.append(f.result(30))
            except BaseException as exc:  # noqa: BLE001 - recorded for the check
                got.append(exc)

        t = threading.Thread(target=waiter)
        t.start()
        wait_asleep(t.native_id, msg="result() blocked")  # type: ignore[arg-type]
        if finish == "result":
            f.set_running_or_notify_cancel()
            f.set_result(42)
        elif finish == "exception":
            f.set_running_or_notify_cancel()
            f.set_exception(KeyError("k"))
        else:
            assert f.cancel()
        t.join(10)
        assert not t.is_alive(), f"result() not released by {finish}"
        expected = {"result": 42, "exception": KeyError, "cancel": cf.CancelledError}[finish]
        assert got[0] == 42 if finish == "result" else isinstance(got[0], expected)


def test_base_class_waits_on_the_lazy_condition_are_notified() -> None:
    # Code that calls the stdlib's own methods on our future (or anything
    # waiting on _condition) must still be woken.
    f = _Future()
    got: List[Any] = []
    t = threading.Thread(target=lambda: got.append(cf.Future.result(f, 30)))
    t.start()
    wait_for(lambda: f._cond is not None, msg="the base class asked for the Condition")
    wait_asleep(t.native_id, msg="blocked in Condition.wait")  # type: ignore[arg-type]
    f.set_running_or_notify_cancel()
    f.set_result("base")
    t.join(10)
    assert got == ["base"]


def test_state_errors_as_the_stdlib() -> None:
    f = _Future()
    f.set_result(1)
    with pytest.raises(cf.InvalidStateError):
        f.set_result(2)
    with pytest.raises(cf.InvalidStateError):
        f.set_exception(ValueError())
    with pytest.raises(RuntimeError):
        f.set_running_or_notify_cancel()
    c = _Future()
    assert c.cancel()
    assert not c.set_running_or_notify_cancel()  # cancelled: the task must not run
    assert c.cancelled()
    r = _Future()
    assert r.set_running_or_notify_cancel() and r.running() and not r.cancel()


def test_done_callbacks_run_once_in_order_and_errors_are_logged(
        ex: PerCPUExecutor, caplog: pytest.LogCaptureFixture) -> None:
    calls: List[Any] = []
    done = threading.Event()
    gate = Gate()
    f = ex.submit(gate, "v")
    assert gate.started.wait(10)
    f.add_done_callback(lambda fut: calls.append(("a", fut.result())))
    f.add_done_callback(lambda fut: 1 / 0)
    f.add_done_callback(lambda fut: (calls.append(("b", fut is f)), done.set()))
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        gate.opened.set()
        assert done.wait(10)
        f.add_done_callback(lambda fut: calls.append(("late", fut.done())))  # runs at once
    assert calls == [("a", "v"), ("b", True), ("late", True)]
    assert any("exception calling callback" in r.message for r in caplog.records)


def test_wait_and_as_completed_with_futures_finishing_later(ex: PerCPUExecutor) -> None:
    gates = [Gate() for _ in range(3)]
    fs = [ex.submit(g, i) for i, g in enumerate(gates)]
    done, pending = cf.wait(fs, timeout=0.01)
    assert not done and len(pending) == 3
    for g in gates:
        g.opened.set()
    assert sorted(f.result() for f in cf.as_completed(fs, timeout=10)) == [0, 1, 2]
    done, pending = cf.wait(fs, timeout=10)
    assert len(done) == 3 and not pending
    # FIRST_COMPLETED / FIRST_EXCEPTION / ALL_COMPLETED racing the workers
    for _ in range(50):
        fs = [ex.submit(pow, i, 2) for i in range(8)] + [ex.submit(lambda: 1 / 0)]
        first, _ = cf.wait(fs, timeout=10, return_when=cf.FIRST_COMPLETED)
        assert first
        cf.wait(fs, timeout=10, return_when=cf.FIRST_EXCEPTION)
        done, pending = cf.wait(fs, timeout=10, return_when=cf.ALL_COMPLETED)
        assert not pending
        assert [f.result() for f in fs[:-1]] == [i * i for i in range(8)]


def test_as_completed_yields_cancelled_futures(ex: PerCPUExecutor) -> None:
    gates = [Gate() for _ in CPUS]
    for g in gates:
        ex.submit(g)
    for g in gates:
        assert g.started.wait(10)
    queued = [ex.submit(int, "1") for _ in range(3)]
    got: List[Any] = []
    t = threading.Thread(target=lambda: got.extend(cf.as_completed(queued, timeout=20)))
    t.start()
    # as_completed() installed its waiter on every future: it is waiting.
    wait_for(lambda: all(f._waiters for f in queued), msg="as_completed waiting")
    for f in queued:
        assert f.cancel()
    for g in gates:
        g.opened.set()
    t.join(20)
    assert not t.is_alive() and set(got) == set(queued)


def test_asyncio_wrap_future_and_cancellation(ex: PerCPUExecutor) -> None:
    async def main() -> Any:
        value = await asyncio.wrap_future(ex.submit(pow, 3, 3))
        loop = asyncio.get_running_loop()
        many = await asyncio.gather(*(loop.run_in_executor(ex, abs, -i) for i in range(100)))
        with pytest.raises(ZeroDivisionError):
            await asyncio.wrap_future(ex.submit(lambda: 1 / 0))
        gates = [Gate() for _ in CPUS]
        for g in gates:
            ex.submit(g)
        for g in gates:
            await loop.run_in_executor(None, g.started.wait, 10)
        queued = ex.submit(int, "9")
        wrapped = asyncio.wrap_future(queued)
        wrapped.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wrapped
        # asyncio cancels the source from a callback of the wrapper: one or
        # two loop iterations later.
        for _ in range(1000):
            if queued.done():
                break
            await asyncio.sleep(0.001)
        for g in gates:
            g.opened.set()
        return value, many, queued.cancelled()

    value, many, cancelled = asyncio.run(main())
    assert value == 27 and many == list(range(100)) and cancelled


def test_results_from_many_threads_at_once(ex: PerCPUExecutor) -> None:
    errors: List[BaseException] = []

    def client(seed: int) -> None:
        try:
            for i in range(300):
                assert ex.submit(pow, seed, i % 7).result(30) == seed ** (i % 7)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(s,)) for s in range(2, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)


# ---------------------------------------------------------------- map()

def test_map_runs_each_item_as_its_own_task_unless_chunked(ex: PerCPUExecutor) -> None:
    def who(i: int) -> Any:
        return i, threading.get_ident()

    # Chunked: items of one chunk run one after another on one worker.
    got = list(ex.map(who, range(100), chunksize=30))
    assert [i for i, _ in got] == list(range(100))
    for start in range(0, 100, 30):
        assert len({t for _, t in got[start:start + 30]}) == 1, start
    # Per item (the default, and chunksize=None or 1): the items of a
    # blocked worker's share are not stuck behind it; another worker runs
    # them (checked below with a task that blocks until all others ran).
    for chunksize in (1, None):
        done = threading.Event()
        left = [99]
        lock = threading.Lock()

        def fn(i: int) -> int:
            if i == 0:
                assert done.wait(30), "items queued behind a blocked one never ran"
                return 0
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    done.set()
            return i

        if len(CPUS) < 2:
            with PerCPUExecutor(max_workers=2) as two:
                assert list(two.map(fn, range(100), chunksize=chunksize)) == list(range(100))
        else:
            assert list(ex.map(fn, range(100), chunksize=chunksize)) == list(range(100))


def test_map_semantics_zip_empty_and_bad_chunksize(ex: PerCPUExecutor) -> None:
    assert list(ex.map(pow, range(1000), [2] * 10)) == [i * i for i in range(10)]
    assert list(ex.map(abs, [])) == []
    assert list(ex.map(abs, [], chunksize=5)) == []
    with pytest.raises(ValueError):
        ex.map(abs, [1], chunksize=0)


def test_map_raises_at_the_failing_item_after_earlier_results(ex: PerCPUExecutor) -> None:
    lock = threading.Lock()

    def recorder(ran: List[int]) -> Callable[[int], int]:
        # A list per round: tasks of the previous round that had already
        # started when its iterator raised may still be finishing.
        def fn(i: int) -> int:
            with lock:
                ran.append(i)
            if i == 1234:
                raise KeyError(i)
            return i * 2
        return fn

    for chunksize in (None, 1, 7, 5000):
        ran: List[int] = []
        it = ex.map(recorder(ran), range(3000), chunksize=chunksize)
        got = []
        with pytest.raises(KeyError) as info:
            for v in it:
                got.append(v)
        assert info.value.args == (1234,)
        assert got == [i * 2 for i in range(1234)], chunksize
        # Every item up to the failing one ran, none twice; later ones may
        # have been cancelled when the iterator raised (as with the stdlib).
        assert set(range(1235)) <= set(ran), chunksize
        assert len(ran) == len(set(ran)), chunksize


def test_map_base_exceptions_are_delivered(ex: PerCPUExecutor) -> None:
    def fn(i: int) -> int:
        if i == 3:
            raise SystemExit(3)
        return i

    it = ex.map(fn, range(100), chunksize=10)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(SystemExit):
        next(it)


def test_map_timeout_cancels_pending_chunks(ex: PerCPUExecutor) -> None:
    gates = [Gate() for _ in CPUS]
    for g in gates:
        ex.submit(g)
    for g in gates:
        assert g.started.wait(10)
    ran: List[int] = []
    it = ex.map(ran.append, range(1000), timeout=0.05, chunksize=10)
    with pytest.raises(cf.TimeoutError):
        next(it)
    # The timed-out generator cancelled every chunk that had not started.
    for g in gates:
        g.opened.set()
    ex.submit(int).result(10)
    assert ran == []


def test_map_keyword_only_options_of_newer_pythons_go_to_the_base(ex: PerCPUExecutor) -> None:
    try:
        out = list(ex.map(abs, range(-3, 3), buffersize=2))
    except TypeError:
        pytest.skip("this Python's Executor.map has no buffersize")
    assert out == [3, 2, 1, 0, 1, 2]
