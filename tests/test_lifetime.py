"""Lifetime: pools and executors nobody refers to release their OS threads.

- An executor dropped without shutdown() ends its workers once it is
  collected, as a ThreadPoolExecutor does (checked side by side); the tasks
  already queued still run first, pinned ones on offline CPUs included.
- A PerCPUThreads pool dropped without close() stops its threads (each runs
  cleanup) and its affinity watcher.
- Nothing the threads, the watcher or the at-exit registry hold refers to
  the object the user holds: it is freed by reference counting alone (no
  cycle), even while its threads run.
- The finalizer only signals: dropping the last reference inside one of the
  pool's own threads, or collecting it while holding threading's own lock,
  neither deadlocks nor waits.
- A KThread dropped while running is kept, as a threading.Thread is.

Each test waits, with a deadline, for the threads it knows by object.
"""
from __future__ import annotations

import concurrent.futures as cf
import gc
import json
import os
import subprocess
import sys
import threading
import weakref
from typing import Any, Callable, List

import pytest

import kpark
from conftest import wait_for
from kpark import PerCPUExecutor, PerCPUThreads

pytestmark = pytest.mark.timeout(120)

CPUS = sorted(os.sched_getaffinity(0))
N = 20                    # executors/pools made and dropped per test
DEADLINE = 30.0
BOTH = pytest.mark.parametrize("make", [cf.ThreadPoolExecutor, PerCPUExecutor],
                               ids=["stdlib", "kpark"])


def all_exit(threads: List[threading.Thread], what: str) -> None:
    """Join every thread against one deadline; fail naming those still alive."""
    wait_for(lambda: not any(t.is_alive() for t in threads), DEADLINE,
             f"{what}: {sum(t.is_alive() for t in threads)} of {len(threads)} threads "
             "still alive")
    for t in threads:
        t.join()


def workers_of(ex: cf.ThreadPoolExecutor) -> List[threading.Thread]:
    # The stdlib's _threads; kpark keeps its stdlib meaning.
    return list(ex._threads)  # type: ignore[attr-defined]


@BOTH
def test_dropped_executors_release_their_workers(make: Callable[..., Any]) -> None:
    threads: List[threading.Thread] = []
    refs = []
    for _ in range(N):
        ex = make(max_workers=2)
        assert ex.submit(pow, 2, 5).result(DEADLINE) == 32  # the stdlib's start now
        threads += workers_of(ex)
        refs.append(weakref.ref(ex))
        del ex
    gc.collect()
    assert all(r() is None for r in refs)
    assert len(threads) >= N
    all_exit(threads, f"{N} dropped executors")


@BOTH
def test_dropped_executor_runs_its_queued_work_then_its_workers_exit(
        make: Callable[..., Any]) -> None:
    gate = threading.Event()
    started = threading.Event()

    def blocked() -> str:
        started.set()
        assert gate.wait(DEADLINE)
        return "blocked"

    ex = make(max_workers=1)
    first = ex.submit(blocked)
    assert started.wait(DEADLINE)
    queued = [ex.submit(pow, 2, i) for i in range(10)]
    threads = workers_of(ex)
    ref = weakref.ref(ex)
    del ex
    gc.collect()
    assert ref() is None, "the executor is collected while its work is queued"
    assert not any(f.done() for f in queued)
    gate.set()
    assert first.result(DEADLINE) == "blocked"
    assert [f.result(DEADLINE) for f in queued] == [2 ** i for i in range(10)]
    all_exit(threads, "the dropped executor's workers")


def test_dropped_executor_brings_offline_cpus_back_for_their_queued_work() -> None:
    """Queued work with no CPU online (pinned and unpinned) runs too, as it
    would at shutdown(): the release brings the CPUs back."""
    ex = PerCPUExecutor()
    ex.offline(ex.cpus, force=True)
    pinned = [ex.submit_on(cpu, pow, 3, cpu) for cpu in ex.cpus]
    unpinned = [ex.submit(pow, 2, i) for i in range(5)]
    threads = workers_of(ex)
    ref = weakref.ref(ex)
    del ex
    gc.collect()
    assert ref() is None
    assert [f.result(DEADLINE) for f in pinned] == [3 ** cpu for cpu in CPUS]
    assert [f.result(DEADLINE) for f in unpinned] == [2 ** i for i in range(5)]
    all_exit(threads, "the dropped executor's workers")


def test_dropped_executor_with_follow_affinity_releases_workers_and_watcher() -> None:
    threads: List[threading.Thread] = []
    for _ in range(N):
        ex = PerCPUExecutor()
        ex.follow_affinity(0.05)
        watcher = ex._pool._watcher
        assert watcher is not None
        threads += workers_of(ex) + [watcher.thread]
        f = ex.submit(pow, 2, 3)
        del ex, watcher
        assert f.result(DEADLINE) == 8
    gc.collect()
    all_exit(threads, f"{N} dropped executors following affinity")


@pytest.mark.parametrize("follow", [False, True], ids=["plain", "follow_affinity"])
def test_dropped_pools_stop_their_threads_and_run_cleanup(follow: bool) -> None:
    cleaned: List[int] = []
    lock = threading.Lock()

    def cleanup(cpu: int, online: bool) -> None:
        with lock:
            cleaned.append(cpu)

    threads: List[threading.Thread] = []
    for _ in range(N):
        pool = PerCPUThreads(lambda cpu: None, lambda cpu: False,
                             setup=lambda cpu: None, cleanup=cleanup)
        if follow:
            pool.follow_affinity(0.05)
            assert pool._watcher is not None
            threads.append(pool._watcher.thread)
        threads += list(pool._all_threads)
        # Every thread past setup (so that it has a cleanup to run).
        wait_for(lambda: all(k.started for k in pool._all_threads), DEADLINE, "setup ran")
        del pool
    gc.collect()
    all_exit(threads, f"{N} dropped pools")
    assert sorted(cleaned) == sorted(CPUS * N)


@pytest.mark.parametrize("kind", ["executor", "pool"])
def test_dropped_without_any_cycle(kind: str) -> None:
    """With the cyclic collector off, dropping the last reference frees the
    object at once: no reference from its threads, watcher or registries."""
    gc.collect()
    gc.disable()
    try:
        if kind == "executor":
            obj: Any = PerCPUExecutor(initializer=lambda: None)
            obj.submit(pow, 2, 2).result(DEADLINE)
            threads = workers_of(obj)
        else:
            obj = PerCPUThreads(lambda cpu: None, lambda cpu: False,
                                setup=lambda cpu: None, cleanup=lambda cpu, online: None)
            threads = list(obj._all_threads)
        obj.follow_affinity(0.05)
        pool = obj._pool if kind == "executor" else obj
        threads.append(pool._watcher.thread)
        del pool
        ref = weakref.ref(obj)
        del obj
        assert ref() is None
    finally:
        gc.enable()
    all_exit(threads, f"the dropped {kind}'s threads")


def test_executor_dropped_by_its_own_task() -> None:
    """The last reference goes inside a worker: the finalizer runs there, and
    only signals (waiting for that worker would deadlock)."""
    holder = [PerCPUExecutor(max_workers=1)]
    threads = workers_of(holder[0])
    ref = weakref.ref(holder[0])
    f = holder[0].submit(holder.clear)
    assert f.result(DEADLINE) is None
    wait_for(lambda: ref() is None, DEADLINE, "the executor collected")
    all_exit(threads, "workers of an executor dropped by its own task")


def test_pool_dropped_by_its_own_thread() -> None:
    holder: List[Any] = []
    go = threading.Event()

    def should_run(cpu: int) -> bool:
        return go.is_set() and bool(holder)

    def thread_fn(cpu: int) -> None:
        holder.clear()  # the last reference, dropped in a pool thread

    holder.append(PerCPUThreads(thread_fn, should_run, cpus=CPUS[0]))
    threads = list(holder[0]._all_threads)
    ref = weakref.ref(holder[0])
    go.set()
    holder[0].wake(CPUS[0])
    wait_for(lambda: ref() is None, DEADLINE, "the pool collected")
    all_exit(threads, "threads of a pool dropped by its own thread")


def test_collected_while_threading_lock_is_held() -> None:
    """The cyclic collector may run where threading's own lock is held (any
    allocation under it): the finalizer must not start a thread there."""
    gc.collect()
    gc.disable()
    try:
        ex = PerCPUExecutor(max_workers=1)
        ex.submit(pow, 2, 2).result(DEADLINE)
        box: List[Any] = [ex]
        box.append(box)  # a cycle through the executor: only the collector frees it
        threads = workers_of(ex)
        ref = weakref.ref(ex)
        del ex, box
        assert ref() is not None
        with threading._active_limbo_lock:  # type: ignore[attr-defined]
            gc.collect()
        assert ref() is None
    finally:
        gc.enable()
    all_exit(threads, "workers of an executor collected under threading's lock")


NO_THREAD_LEFT = """
import gc, sys, threading, time
sys.path.insert(0, {tests!r})
from helpers import wait_for
import kpark
from kpark import PerCPUExecutor, PerCPUThreads
assert threading.active_count() == 1
with PerCPUExecutor() as ex:              # shut down
    ex.submit(pow, 2, 2).result()
assert threading.active_count() == 1, threading.enumerate()
pool = PerCPUThreads(lambda cpu: None, lambda cpu: False)
pool.follow_affinity(0.05)
ex = PerCPUExecutor()                     # dropped, with work queued
ex.submit(time.sleep, 0.2)
ex.submit(pow, 2, 2)
del ex
pool.close()                              # closed
pool = PerCPUThreads(lambda cpu: None, lambda cpu: False)
del pool                                  # dropped
gc.collect()
wait_for(lambda: threading.active_count() == 1, 30, "every kpark thread gone")
print("OK")
"""


def test_no_thread_left_once_every_pool_is_gone() -> None:
    """In a fresh interpreter: the thread that releases dropped pools (the
    janitor) runs only while one may need it; closed and dropped pools and
    executors leave no thread at all."""
    tests = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(kpark.__file__)))
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-c", NO_THREAD_LEFT.format(tests=tests)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "OK", proc.stderr


@pytest.mark.parametrize("cls", [threading.Thread, kpark.KThread])
def test_running_thread_dropped_keeps_running(cls: Any) -> None:
    """As threading.Thread: a started thread is not stopped by losing its object."""
    go = threading.Event()
    done = threading.Event()

    def body(_: Any = None) -> None:
        assert go.wait(DEADLINE)
        done.set()

    t = cls(target=body) if cls is threading.Thread else cls(body)
    t.start()
    ident = t.ident
    ref = weakref.ref(t)
    del t
    gc.collect()
    t = ref()
    assert t is not None and t.is_alive() and t in threading.enumerate()
    assert t.ident == ident
    del t
    go.set()
    assert done.wait(DEADLINE)


# ---- fork -------------------------------------------------------------------------

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts")
FORKED = "did not survive fork()"


def run_fork_payload(mode: str) -> dict:
    """Run tests/scripts/fork_pool_child.py MODE in a fresh interpreter."""
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(kpark.__file__)))
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.run([sys.executable, os.path.join(SCRIPTS, "fork_pool_child.py"), mode],
                              env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=90)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"fork_pool_child.py {mode} hung\n{e.stdout}\n{e.stderr}")
    assert proc.returncode == 0, f"payload failed:\n{proc.stdout}\n{proc.stderr}"
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            res: dict = json.loads(line[len("RESULT "):])
            break
    else:
        raise AssertionError(f"no RESULT line:\n{proc.stdout}\n{proc.stderr}")
    # The parent's own executor and pool were not affected.
    n = len(CPUS)
    assert res["parent_busy"] == [f"busy{i}" for i in range(n)]
    assert res["parent_queued"] == [2 ** i for i in range(4)] + [3 ** c for c in CPUS]
    assert res["parent_submit"] == 1024 and res["parent_pool_done"] == n
    return res


@pytest.mark.parametrize("mode", ["exit", "calls"])
def test_fork_child_exits_normally_without_waiting_for_inherited_workers(mode: str) -> None:
    """A child forked while the executor's workers are busy and work is queued
    ends through the normal interpreter exit (its atexit handlers ran) at
    once, whether or not it touched the inherited executor and pool."""
    res = run_fork_payload(mode)
    child = res["child"]
    assert res["exitcode"] == 0, f"the child exited with {res['exitcode']} (-999: hung)"
    assert child is not None and child.get("atexit") is True, child
    assert "_error" not in child, child
    assert child["threads_at_end"] == 1, child  # nothing of kpark left running
    assert res["child_seconds"] < 10


def test_fork_child_inherited_executor_and_pool_refuse_clearly() -> None:
    """In the child the inherited executor is broken (its workers did not
    survive fork): submitting raises BrokenThreadPool (a RuntimeError),
    hotplug raises RuntimeError, shutdown() returns at once and fails the
    queued futures; the pool counts as closed; new ones work."""
    child = run_fork_payload("calls")["child"]
    for call in ("submit", "submit_on", "map"):
        assert child[call]["exc"] == "BrokenThreadPool" and FORKED in child[call]["msg"], child
    for call in ("ex_offline", "ex_online", "ex_follow", "pool_offline", "pool_online",
                 "pool_follow"):
        assert child[call]["exc"] == "RuntimeError" and FORKED in child[call]["msg"], child
    assert child["ex_online_cpus"] == [] and child["pool_online_cpus"] == []
    assert child["ex_follow_none"]["ok"] == "None"
    assert child["pool_wake"]["ok"] == "False"
    for call in ("pool_close", "shutdown", "shutdown_again"):
        assert child[call]["ok"] == "None" and child[call]["seconds"] < 1.0, child
    assert child["pool_closed"] is True
    assert child["queued"] == ["BrokenThreadPool"] * (4 + len(CPUS))
    assert child["busy_done"] == [False] * len(CPUS)
    assert child["new_executor"] == 32 and child["new_pool"] == [CPUS[0]]


def test_multiprocessing_fork_child_with_a_live_executor() -> None:
    """multiprocessing's 'fork' start method from a program whose executor is
    busy: the child's target sees the clear error and the process ends."""
    res = run_fork_payload("mp")
    assert res["exitcode"] == 0, f"the child exited with {res['exitcode']} (-999: hung)"
    assert res["child"]["exc"] == "BrokenThreadPool" and FORKED in res["child"]["msg"]
