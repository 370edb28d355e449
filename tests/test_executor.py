"""kpark.PerCPUExecutor: placement, hotplug, shutdown, asyncio, random interleavings."""
from __future__ import annotations

import asyncio
import os
import random
import sys
import threading
import time
from collections import deque
from concurrent.futures import CancelledError, Future, wait as fwait
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

import kpark
from kpark.executor import PerCPUExecutor

pytestmark = pytest.mark.timeout(60)

CPUS = sorted(os.sched_getaffinity(0))
TWO = pytest.mark.skipif(len(CPUS) < 2, reason="needs 2 allowed CPUs (a second CPU to hotplug)")


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll for a state that must eventually hold; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.002)


def where() -> Tuple[Optional[int], frozenset[int]]:
    """(the worker's CPU, the calling thread's affinity): run inside tasks."""
    k = kpark.current()
    return (k.cpu if k is not None else None), frozenset(os.sched_getaffinity(0))


class Blocker:
    """A task that signals it started and blocks until released."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> Tuple[Optional[int], frozenset[int]]:
        self.started.set()
        assert self.release.wait(30)
        return where()


# ---------------------------------------------------------------- the contract

def test_submit_result_exception_and_base_exception() -> None:
    with PerCPUExecutor() as ex:
        assert ex.submit(pow, 2, 10).result(10) == 1024
        def kw_only(*, x: int) -> int:
            return x + 1

        assert ex.submit(kw_only, x=1).result(10) == 2
        with pytest.raises(ZeroDivisionError):
            ex.submit(lambda: 1 / 0).result(10)
        f = ex.submit(sys.exit, 3)
        with pytest.raises(SystemExit):
            f.result(10)
        assert ex.submit(int, "7").result(10) == 7  # the worker survived
        assert ex.threads.errors == []


def test_submit_kwargs_may_be_named_fn_and_self() -> None:
    with PerCPUExecutor() as ex:
        assert ex.submit(dict, fn=1, self=2).result(10) == {"fn": 1, "self": 2}
        assert ex.submit_on(CPUS[0], dict, cpu=3, fn=4).result(10) == {"cpu": 3, "fn": 4}


def test_map_in_order_timeout_and_chunksize() -> None:
    with PerCPUExecutor() as ex:
        assert list(ex.map(lambda x: x * x, range(200))) == [x * x for x in range(200)]
        assert list(ex.map(pow, [2, 3], [5, 2], chunksize=4)) == [32, 9]
        gate = threading.Event()
        it = ex.map(lambda x: gate.wait(30), [1], timeout=0.05)
        with pytest.raises(FutureTimeoutError):  # the builtin only from 3.11
            next(it)
        gate.set()


def test_submit_after_shutdown_raises() -> None:
    ex = PerCPUExecutor()
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(int)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit_on(CPUS[0], int)
    with pytest.raises(RuntimeError, match="shut down"):
        ex.offline(CPUS[0])
    with pytest.raises(RuntimeError, match="shut down"):
        ex.online(CPUS[0])
    ex.shutdown()  # idempotent
    assert ex.online_cpus == frozenset()
    assert all(not ex.threads.thread(c).is_alive() for c in CPUS)


def test_context_manager_runs_everything_queued() -> None:
    done: List[int] = []
    with PerCPUExecutor() as ex:
        b = Blocker()
        ex.submit(b)
        assert b.started.wait(10)
        fs = [ex.submit(done.append, i) for i in range(100)]
        b.release.set()
    assert all(f.done() and not f.cancelled() for f in fs)
    assert sorted(done) == list(range(100))


def test_worker_names_and_one_thread_per_cpu() -> None:
    with PerCPUExecutor(thread_name_prefix="xq%") as ex:
        assert ex.cpus == tuple(CPUS) and ex.online_cpus == frozenset(CPUS)
        for i, cpu in enumerate(CPUS):
            assert ex.threads.thread(cpu).name == f"xq%_{i}/cpu{cpu}"
    with pytest.raises(ValueError, match="4096"):
        PerCPUExecutor(cpus=[4096])


# ---------------------------------------------------------------- pinning and placement

def test_submit_on_runs_on_that_cpu() -> None:
    with PerCPUExecutor() as ex:
        for cpu in CPUS:
            for f in [ex.submit_on(cpu, where) for _ in range(20)]:
                assert f.result(10) == (cpu, frozenset({cpu}))
        with pytest.raises(ValueError, match=r"9999 .*" + str(CPUS).replace("[", r"\[")):
            ex.submit_on(9999, int)
        with pytest.raises(TypeError):
            ex.submit_on(True, int)


def test_unpinned_tasks_run_on_pinned_workers() -> None:
    with PerCPUExecutor() as ex:
        for cpu, aff in [f.result(10) for f in [ex.submit(where) for _ in range(50)]]:
            assert cpu in CPUS and aff == {cpu}


@TWO
def test_unpinned_never_runs_on_offline_cpu() -> None:
    with PerCPUExecutor() as ex:
        off = CPUS[-1]
        ex.offline(off)
        assert ex.threads.thread(off).is_parked
        assert ex.online_cpus == frozenset(CPUS) - {off}
        got = {f.result(10)[0] for f in [ex.submit(where) for _ in range(200)]}
        assert off not in got
        ex.online(off)
        wait_for(lambda: not ex.threads.thread(off).is_parked, what="unparked")


@TWO
def test_idle_worker_takes_work_while_another_is_busy() -> None:
    a, b = CPUS[0], CPUS[1]
    with PerCPUExecutor(cpus=[a, b]) as ex:
        blocker = Blocker()
        ex.submit_on(a, blocker)
        assert blocker.started.wait(10)
        fs = [ex.submit(where) for _ in range(40)]
        # All complete while `a` is still blocked: least loaded or stolen.
        done, pending = fwait(fs, timeout=10)
        assert not pending
        assert {f.result()[0] for f in fs} == {b}
        blocker.release.set()


@TWO
def test_offline_finishes_running_task_and_moves_queued_unpinned() -> None:
    a, b = CPUS[0], CPUS[1]
    with PerCPUExecutor(cpus=[a, b]) as ex:
        ba, bb = Blocker(), Blocker()
        fa, fb = ex.submit_on(a, ba), ex.submit_on(b, bb)
        assert ba.started.wait(10) and bb.started.wait(10)
        fs = [ex.submit(where) for _ in range(40)]
        assert len(ex._queues[b].shared) > 0  # some were queued on b
        t = threading.Thread(target=ex.offline, args=(b,))
        t.start()
        wait_for(lambda: ex.threads.thread(b).should_park, what="park requested")
        assert not fb.done()
        bb.release.set()          # the running task finishes ...
        t.join(10)
        assert not t.is_alive()
        assert fb.result(0) == (b, frozenset({b}))
        assert ex.threads.thread(b).is_parked  # ... then the worker parks
        assert len(ex._queues[b].shared) == 0
        ba.release.set()
        assert {f.result(10)[0] for f in fs} == {a}  # moved, none lost


def test_pinned_task_waits_for_its_offline_cpu() -> None:
    cpu = CPUS[-1]
    with PerCPUExecutor() as ex:
        ex.offline(cpu, force=True)
        f = ex.submit_on(cpu, where)
        assert ex.threads.thread(cpu).is_parked
        assert not f.done()  # a parked worker cannot have run it
        ex.online(cpu)
        assert f.result(10) == (cpu, frozenset({cpu}))


def test_offline_last_online_cpu_needs_force() -> None:
    with PerCPUExecutor() as ex:
        ex.offline(CPUS[:-1])
        with pytest.raises(RuntimeError, match="no CPU online"):
            ex.offline(CPUS[-1])
        with pytest.raises(RuntimeError, match="no CPU online"):
            ex.offline(CPUS)
        assert ex.online_cpus == {CPUS[-1]}
        assert not ex.threads.thread(CPUS[-1]).is_parked
        ex.offline(CPUS, force=True)
        assert ex.online_cpus == frozenset()
        fs = [ex.submit(where) for _ in range(10)]  # kept, not lost
        assert all(ex.threads.thread(c).is_parked for c in CPUS)
        assert not any(f.done() for f in fs)
        ex.online(CPUS[0])
        assert {f.result(10)[0] for f in fs} == {CPUS[0]}


def test_shutdown_drains_work_of_offline_cpus() -> None:
    ex = PerCPUExecutor()
    ex.offline(CPUS, force=True)
    pinned = [(cpu, ex.submit_on(cpu, where)) for cpu in CPUS for _ in range(5)]
    unpinned = [ex.submit(where) for _ in range(10)]
    ex.shutdown(wait=True)
    for cpu, f in pinned:
        assert f.result(0) == (cpu, frozenset({cpu}))
    assert all(f.result(0)[0] in CPUS for f in unpinned)
    assert all(not ex.threads.thread(c).is_alive() for c in CPUS)


def test_shutdown_cancel_futures() -> None:
    ex = PerCPUExecutor()
    blockers = {cpu: Blocker() for cpu in CPUS}
    running = [ex.submit_on(cpu, b) for cpu, b in blockers.items()]
    for b in blockers.values():
        assert b.started.wait(10)
    queued = [ex.submit(where) for _ in range(20)] + [ex.submit_on(c, where) for c in CPUS]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    assert not any(f.done() for f in running)
    for b in blockers.values():
        b.release.set()
    ex.shutdown(wait=True)
    assert [f.result(0)[0] for f in running] == CPUS
    with pytest.raises(CancelledError):
        queued[0].result(0)


def test_shutdown_wait_false_finishes_in_background() -> None:
    ex = PerCPUExecutor()
    b = Blocker()
    ex.submit_on(CPUS[0], b)
    assert b.started.wait(10)
    fs = [ex.submit_on(CPUS[0], where) for _ in range(5)] + [ex.submit(where) for _ in range(5)]
    t0 = time.monotonic()
    ex.shutdown(wait=False)
    assert time.monotonic() - t0 < 5
    with pytest.raises(RuntimeError):
        ex.submit(int)
    b.release.set()
    assert all(f.result(10)[1] == {f.result(10)[0]} for f in fs)
    wait_for(lambda: ex.threads.closed, what="workers stopped")
    ex.shutdown(wait=True)


def test_shutdown_and_hotplug_from_a_worker() -> None:
    ex = PerCPUExecutor()
    outcomes: List[str] = []

    def task() -> None:
        calls: List[Callable[[], None]] = [ex.shutdown, lambda: ex.offline(CPUS[0]),
                                           lambda: ex.online(CPUS[0])]
        for call in calls:
            try:
                call()
            except RuntimeError as exc:
                outcomes.append(str(exc))
        ex.shutdown(wait=False)  # allowed: done in the background

    ex.submit(task).result(10)
    assert len(outcomes) == 3 and "wait=False" in outcomes[0]
    with pytest.raises(RuntimeError):
        ex.submit(int)
    ex.shutdown(wait=True)
    assert ex.threads.closed


@pytest.mark.timeout(60)
def test_concurrent_submit_and_shutdown_lose_nothing() -> None:
    ex = PerCPUExecutor()
    ran: List[int] = []
    accepted: List[List[Tuple[int, Future[int]]]] = [[] for _ in range(4)]
    refused: List[List[int]] = [[] for _ in range(4)]
    go = threading.Event()

    def task(i: int) -> int:
        ran.append(i)
        return i

    def producer(n: int) -> None:
        go.wait()
        for j in range(100_000):
            i = n * 1_000_000 + j
            try:
                f = ex.submit(task, i) if j % 3 else ex.submit_on(CPUS[j % len(CPUS)], task, i)
            except RuntimeError:
                refused[n].append(i)
                return
            accepted[n].append((i, f))

    ts = [threading.Thread(target=producer, args=(n,)) for n in range(4)]
    for t in ts:
        t.start()
    go.set()
    wait_for(lambda: len(ran) > 500, what="some progress")
    ex.shutdown(wait=True)
    for t in ts:
        t.join(30)
    counts: Dict[int, int] = {}
    for i in ran:
        counts[i] = counts.get(i, 0) + 1
    assert all(c == 1 for c in counts.values()), "a task ran twice"
    for n in range(4):
        assert len(refused[n]) == 1 and refused[n][0] not in counts
        for i, f in accepted[n]:
            assert f.done()
            if f.cancelled():
                assert i not in counts
            else:
                assert f.result(0) == i and counts.get(i) == 1


class Gate:
    """Holds the first append a given thread makes to any gated deque."""

    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread
        self.armed = True
        self.entered = threading.Event()
        self.open = threading.Event()
        self.cpu: Optional[int] = None


def gate_queues(ex: PerCPUExecutor, gate: Gate) -> None:
    """Replace each CPU's unpinned deque with one that can hold an append."""
    class GatedDeque(deque):  # type: ignore[type-arg]
        def __init__(self, cpu: int) -> None:
            super().__init__()
            self.cpu = cpu

        def append(self, x: Any) -> None:
            if gate.armed and threading.current_thread() is gate.thread:
                gate.armed = False
                gate.cpu = self.cpu
                gate.entered.set()
                assert gate.open.wait(10)
            super().append(x)

    for cpu in ex.cpus:
        ex._queues[cpu].shared = GatedDeque(cpu)


@TWO
def test_submit_racing_offline_moves_its_own_task() -> None:
    # submit() picked a CPU while it was online; offline() finished before
    # the task was appended.  submit must notice and move the task on.
    with PerCPUExecutor(cpus=CPUS[:2]) as ex:
        out: List[Future[Any]] = []
        t = threading.Thread(target=lambda: out.append(ex.submit(where)))
        gate = Gate(t)
        gate_queues(ex, gate)
        t.start()
        assert gate.entered.wait(10)
        assert gate.cpu is not None
        ex.offline(gate.cpu)  # nothing queued there yet
        gate.open.set()
        t.join(10)
        assert out[0].result(10)[0] != gate.cpu  # ran while that CPU is offline


def test_submit_racing_shutdown_is_refused_not_stranded() -> None:
    ex = PerCPUExecutor()
    out: List[Any] = []

    def submitter() -> None:
        try:
            out.append(ex.submit(where))
        except RuntimeError as exc:
            out.append(exc)

    t = threading.Thread(target=submitter)
    gate = Gate(t)
    gate_queues(ex, gate)
    t.start()
    assert gate.entered.wait(10)
    ex.shutdown(wait=True)  # finds every queue empty and stops the workers
    gate.open.set()
    t.join(10)
    assert isinstance(out[0], RuntimeError), "the task was accepted after shutdown and stranded"


def test_compiled_queues_refuse_none_instead_of_reading_through_it() -> None:
    # The queues are C structs (kpark._workqueue): a None where a queue or a
    # worker belongs is a TypeError, never a read through a NULL pointer.
    from kpark._workqueue import Worker
    with PerCPUExecutor() as ex:
        work = ex._work
        calls: List[Callable[[], object]] = [
            lambda: work.rescue(None),
            lambda: work.submit_on(None, Future(), where, (), {}),
            lambda: work.extend(None, []),
            lambda: work.close_queues([None]),
            lambda: work.open_queues([None]),
            lambda: work.should_run(None, 0),
            lambda: work.run(None, 0),
            lambda: Worker(None),
        ]
        for call in calls:
            with pytest.raises(TypeError):
                call()
        assert ex.submit(where).result(10)[0] in CPUS  # and it still works


# ---------------------------------------------------------------- idle and asyncio

def _thread_stats(tid: int) -> Tuple[int, int]:
    """(context switches, utime+stime ticks) of one of our threads."""
    with open(f"/proc/self/task/{tid}/status") as f:
        sw = sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sw, int(fields[11]) + int(fields[12])


def _state(tid: int) -> str:
    with open(f"/proc/self/task/{tid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


@pytest.mark.timeout(30)
def test_idle_workers_sleep_and_burn_no_cpu() -> None:
    with PerCPUExecutor() as ex:
        list(ex.map(abs, range(1000)))
        for cpu in CPUS:
            ex.submit_on(cpu, int).result(10)
        tids = [ex.threads.thread(c).native_id for c in CPUS]
        for tid in tids:
            assert tid is not None
            wait_for(lambda: _state(tid) == "S", what="worker asleep")
        before = [_thread_stats(tid) for tid in tids]  # type: ignore[arg-type]
        cpu0 = time.process_time()
        time.sleep(1.0)
        used = time.process_time() - cpu0
        after = [_thread_stats(tid) for tid in tids]  # type: ignore[arg-type]
        assert used < 0.05, f"process used {used:.3f} s of CPU in 1 s idle"
        for (sw0, t0), (sw1, t1) in zip(before, after):
            assert sw1 - sw0 <= 1, "an idle worker woke up (polling?)"
            assert t1 - t0 <= 1
        assert ex.submit(int, 5).result(10) == 5  # still responsive


def test_asyncio_run_in_executor_and_wrap_future() -> None:
    async def main(ex: PerCPUExecutor) -> Tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(loop.run_in_executor(ex, pow, i, 2) for i in range(50)))
        pinned = await asyncio.wrap_future(ex.submit_on(CPUS[-1], where))
        with pytest.raises(KeyError):
            empty: Dict[str, int] = {}
            await loop.run_in_executor(ex, empty.__getitem__, "x")
        return tuple(results), pinned

    with PerCPUExecutor() as ex:
        results, pinned = asyncio.run(main(ex))
    assert results == tuple(i * i for i in range(50))
    assert pinned == (CPUS[-1], frozenset({CPUS[-1]}))


# ---------------------------------------------------------------- random interleavings

def _one_interleaving(seed: int) -> None:
    rng = random.Random(seed)
    ex = PerCPUExecutor()
    lock = threading.Lock()
    counts: Dict[int, int] = {}
    ids = iter(range(10**9))
    accepted: List[Tuple[int, Optional[int], Future[Tuple[Optional[int], frozenset[int]]]]] = []
    refused: List[int] = []

    def task(i: int) -> Tuple[Optional[int], frozenset[int]]:
        with lock:
            counts[i] = counts.get(i, 0) + 1
        if i % 7 == 0:
            time.sleep(0)
        return where()

    def submit_one(r: random.Random) -> int:
        with lock:
            i = next(ids)
        cpu = r.choice(CPUS) if r.random() < 0.3 else None
        try:
            f = ex.submit(task, i) if cpu is None else ex.submit_on(cpu, task, i)
        except RuntimeError:
            with lock:
                refused.append(i)
            return i
        with lock:
            accepted.append((i, cpu, f))
        return i

    def hotplug(r: random.Random) -> None:
        cpus = r.sample(CPUS, r.randint(1, len(CPUS)))
        try:
            if r.random() < 0.5:
                ex.offline(cpus, force=r.random() < 0.3)
            else:
                ex.online(cpus)
        except RuntimeError as exc:
            assert "no CPU online" in str(exc) or "shut down" in str(exc), exc

    def other(r: random.Random) -> None:
        for _ in range(r.randint(0, 30)):
            submit_one(r)
            if r.random() < 0.1:
                hotplug(r)

    t = threading.Thread(target=other, args=(random.Random(seed + 10**6),))
    t.start()
    for _ in range(rng.randint(0, 30)):
        x = rng.random()
        if x < 0.6:
            submit_one(rng)
        elif x < 0.95:
            hotplug(rng)
        else:
            break
    ex.shutdown(wait=rng.random() < 0.7, cancel_futures=rng.random() < 0.2)
    last = submit_one(rng)
    t.join(30)
    assert not t.is_alive()
    ex.shutdown(wait=True)
    assert last in refused, f"seed {seed}: submit after shutdown accepted"
    assert all(c == 1 for c in counts.values()), f"seed {seed}: a task ran twice"
    assert not set(refused) & set(counts), f"seed {seed}: a refused task ran"
    for i, cpu, f in accepted:
        assert f.done(), f"seed {seed}: task {i} lost"
        if f.cancelled():
            assert i not in counts, f"seed {seed}: cancelled task {i} ran"
            continue
        assert counts.get(i) == 1, f"seed {seed}: task {i} done but not run"
        ran_cpu, aff = f.result(0)
        assert aff == {ran_cpu}
        if cpu is not None:
            assert ran_cpu == cpu, f"seed {seed}: pinned task {i} ran on {ran_cpu}"


@pytest.mark.timeout(120)
def test_1000_random_interleavings_lose_nothing_and_run_nothing_twice() -> None:
    for seed in range(1000):
        _one_interleaving(seed)


# ---------------------------------------------------------------- affinity

def test_follow_affinity_on_any_machine() -> None:
    with PerCPUExecutor() as ex:
        ex.follow_affinity(interval=0.02)
        assert ex.online_cpus == frozenset(CPUS)
        assert ex.submit(int, 3).result(10) == 3
        with pytest.raises(TypeError):
            ex.follow_affinity(interval="1")  # type: ignore[arg-type]
        ex.follow_affinity(None)
    with pytest.raises(RuntimeError):
        ex.follow_affinity(interval=0.1)


@TWO
def test_follow_affinity_offlines_dropped_cpu_and_brings_it_back() -> None:
    gone = CPUS[-1]
    pid = os.getpid()
    with PerCPUExecutor() as ex:
        ex.follow_affinity(interval=0.02)
        try:
            os.sched_setaffinity(pid, set(CPUS) - {gone})
            wait_for(lambda: gone not in ex.online_cpus, what="CPU dropped")
            # online_cpus changes first (no new tasks), then the worker parks.
            wait_for(lambda: ex.threads.thread(gone).is_parked, what="worker parked")
            assert gone not in {f.result(10)[0] for f in [ex.submit(where) for _ in range(50)]}
            pinned = ex.submit_on(gone, where)
            assert not pinned.done()
        finally:
            os.sched_setaffinity(pid, CPUS)
        wait_for(lambda: gone in ex.online_cpus, what="CPU back")
        assert pinned.result(10) == (gone, frozenset({gone}))
    assert ex.threads.errors == []


@TWO
def test_follow_affinity_keeps_the_last_cpu() -> None:
    gone = CPUS[-1]
    pid = os.getpid()
    with PerCPUExecutor(cpus=[gone]) as ex:
        try:
            os.sched_setaffinity(pid, set(CPUS) - {gone})
            ex.follow_affinity(interval=0.02)  # syncs once before returning
            assert ex.online_cpus == {gone}
            assert ex.submit(where).result(10) == (gone, frozenset({gone}))
        finally:
            os.sched_setaffinity(pid, CPUS)
