"""kpark.PerCPUExecutor: a ThreadPoolExecutor whose workers are per-CPU hotplug threads.

Workers are PerCPUThreads threads, spread over the CPUs in order and pinned;
the pool owns hotplug (offline/online/follow_affinity, locking, errors) and
calls this module's hooks.  What lives here is the executor's queues: each
CPU has `pinned` (tasks from submit_on, which only that CPU's workers run)
and `shared` (unpinned tasks, which an idle worker of any CPU may steal and
which move to other CPUs when their CPU goes offline).  The hot path - where
a task goes, which worker takes it, the worker loop and its idle sleeps -
is compiled: kpark._workqueue.WorkQueues, one per executor, whose module
doc says why nothing is lost without a lock.  This module keeps the API, the
pool's hotplug hooks, drain and shutdown, which call it.

In short: submit appends to a deque and calls KThread.wake(), which costs a
system call only if the worker sleeps; every move of a task is a deque
popleft() (each task is taken by exactly one thread), and every producer
re-checks after appending: that the CPU it appended to still takes work
(else it moves that CPU's unpinned tasks on itself) and that the executor
is not shutting down (else it cancels its own future, which fails only if a
worker already took it).  Going offline marks a CPU's queue closed, then
moves its unpinned tasks (before its workers are asked to park and again
once they are parked), so any task appended in between is moved by one of
them.

Lifetime, as ThreadPoolExecutor's: the workers (and the shutdown thread the
janitor starts) hold `_handle`, an instance sharing the executor's __dict__
(percpu's `_thread_handle`), never the executor the user holds.  Once that
one is collected without shutdown(), its finalizer has the janitor call
shutdown(wait=False) on the handle: the queued tasks still run, then the
workers exit.  In a fork child the inherited executors are broken
(`_forked`): their workers did not survive fork().
"""
from __future__ import annotations

import itertools
import os
import threading
from functools import partial
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.thread import BrokenThreadPool
from contextvars import Context, copy_context
from time import monotonic as _monotonic
from typing import (TYPE_CHECKING, Any, Callable, Deque, Dict, Iterable, Iterator,
                    List, Optional, Tuple, TypeVar)

from kpark._futures import (_LOGGER, _Future, _map_results, _map_task_results, _MapTask,
                            _run_chunk)
from kpark import _janitor
from kpark._workqueue import Worker, WorkQueue, WorkQueues
from kpark.percpu import CPUs, PerCPUThreads, _normalize_cpus, _spread, _thread_handle
from kpark.thread import KThread

if TYPE_CHECKING:
    import sys
    if sys.version_info >= (3, 10):
        from typing import ParamSpec
    else:  # mypy's own typeshed has it; nothing is imported at run time
        from typing_extensions import ParamSpec
    _P = ParamSpec("_P")

__all__ = ["PerCPUExecutor", "ExecutorThreads"]

_T = TypeVar("_T")
# A queued task: (its future: a _Future, or a _MapTask for map()'s own items,
# the context to run in, fn, args, kwargs).
_Item = Tuple[Any, Context, Callable[..., Any], Tuple[Any, ...], Dict[str, Any]]

#: Seconds between re-checks while shutdown waits for the queues to drain;
#: workers signal every transition to idle, so this is only a safety net.
_DRAIN_RECHECK = 0.5

_NO_KWARGS: Dict[str, Any] = {}  # map()'s items: ** makes a fresh dict anyway
_counter = itertools.count()


def _per_worker(cpu: int) -> None:
    raise AssertionError("each worker runs its own callbacks (_thread_callbacks)")


class _Workers(PerCPUThreads):
    """The executor's PerCPUThreads: idle workers park in place (every queue
    push is followed by wake()); the hotplug hooks keep the queues in step."""

    _park_idle_in_place = True
    _user_owned = False  # the executor's threads may hold it; they hold no executor
    _closed_message = "the executor has been shut down"
    _owner_name = "their PerCPUExecutor"
    _owner_hint = "the executor's offline()/online()/shutdown()"
    _forked_message = ("the executor's workers did not survive fork(); "
                       "create a new executor in this process")

    def __init__(self, ex: "PerCPUExecutor", cpus: List[int], nthreads: int,
                 prefix: str) -> None:
        self._ex = ex
        self._prefix = prefix
        setup = ex._init_worker if ex._initializer is not None else None
        super().__init__(_per_worker, _per_worker, setup=setup, cpus=cpus,
                         nthreads=nthreads)

    def _thread_name(self, cpu: int, index: int) -> str:
        return f"{self._prefix}_{index}/cpu{cpu}"

    def _thread_callbacks(self, index: int) -> Tuple[Callable[[int], object],
                                                     Callable[[int], object]]:
        # Each worker's callbacks know their worker: no lookup per call.
        ex = self._ex
        w = ex._workers[index]
        return partial(ex._thread_fn, w), partial(ex._work.should_run, w)

    def _veto_offline(self, cpus: List[int], remaining: frozenset[int]) -> Optional[str]:
        return self._ex._veto_offline(cpus, remaining)

    def _going_offline(self, cpus: List[int]) -> None:
        self._ex._close_queues(cpus)

    def _gone_offline(self, cpus: List[int]) -> None:
        self._ex._rescue_queues(cpus)

    def _came_online(self, cpus: List[int]) -> None:
        self._ex._open_queues(cpus)

    def _closing(self) -> None:
        self._ex._drain()


class ExecutorThreads:
    """A read-only view of a PerCPUExecutor's workers, for inspection.

    Park, unpark or stop them only through the executor: it keeps their
    queues in step with them.
    """
    __slots__ = ("_pool",)

    def __init__(self, pool: PerCPUThreads) -> None:
        self._pool = pool

    @property
    def cpus(self) -> Tuple[int, ...]:
        """The executor's CPUs, ascending."""
        return self._pool.cpus

    @property
    def closed(self) -> bool:
        """True once the workers have been stopped (shutdown finished)."""
        return self._pool.closed

    @property
    def errors(self) -> List[Tuple[Optional[int], BaseException]]:
        """Errors of the executor's own machinery as (cpu, exception), oldest first."""
        return self._pool.errors

    def thread(self, cpu: int) -> KThread:
        """The first worker of `cpu`.  ValueError for a CPU not in the executor."""
        return self._pool.thread(cpu)

    def threads_of(self, cpu: int) -> Tuple[KThread, ...]:
        """Every worker of `cpu`.  ValueError for a CPU not in the executor."""
        return self._pool.threads_of(cpu)


# The handles of the executors not yet shut down, drained at interpreter
# exit.  Strong references: a handle is not what users hold, so this keeps
# nothing collectable alive; shutdown takes it out.
_live: "set[PerCPUExecutor]" = set()

#: _broken's message in a fork child (BrokenThreadPool is a RuntimeError).
_FORKED = ("the executor's workers did not survive fork(); create a new "
           "executor in this process")


class PerCPUExecutor(ThreadPoolExecutor):
    """A ThreadPoolExecutor whose workers are pinned per-CPU hotplug threads.

    Workers park when their CPU is taken offline and unpark when it comes
    back; queued work moves or waits, it is never lost.  Idle workers sleep
    in idle() (schedule() that offline() parks in place) and burn no CPU.
    """

    def __init__(self, max_workers: Optional[int] = None, thread_name_prefix: str = "",
                 initializer: Optional[Callable[..., object]] = None,
                 initargs: Tuple[Any, ...] = (), *, cpus: Optional[CPUs] = None) -> None:
        """Start `max_workers` workers (default: one per CPU of `cpus`).

        `cpus` defaults to this process's allowed CPUs (the main
        thread's affinity, whichever thread constructs).  Workers are spread
        over the CPUs in order, each pinned to its CPU, and named
        `<prefix>_<worker>/cpu<cpu>`.  `initializer(*initargs)` runs in each
        worker before its first task.  ValueError for max_workers <= 0 or a
        CPU this process may not use; TypeError for a non-callable
        initializer.
        """
        if not isinstance(thread_name_prefix, str):
            raise TypeError("thread_name_prefix must be a str, got "
                            f"{type(thread_name_prefix).__name__}")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        cpu_list = _normalize_cpus(cpus)
        if max_workers is None:
            max_workers = len(cpu_list)
        elif isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise TypeError(f"max_workers must be an int, got {type(max_workers).__name__}")
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        # ThreadPoolExecutor's attributes, with their meaning there.
        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix or f"PerCPUExecutor-{next(_counter)}"
        self._initializer = initializer  # type: ignore[assignment]  # stub: -> None
        self._initargs = initargs
        self._broken: Any = False
        self._shutdown = False
        self._shutdown_lock = threading.Lock()  # the flags and the reaper
        self._finished = False
        self._finish_lock = threading.Lock()
        self._drained = threading.Event()
        # The queues, the idle list and the worker loop (kpark._workqueue).
        # max_workers below the CPU count: the later CPUs get no worker.
        self._work = WorkQueues(cpu_list, _spread(cpu_list, max_workers), self._drained)
        self._all: Tuple[WorkQueue, ...] = self._work.queues
        self._workers: Tuple[Worker, ...] = self._work.workers
        self._queues: Dict[int, WorkQueue] = {q.cpu: q for q in self._all}
        self._orphans: Deque[_Item] = self._work.orphans  # unpinned work while no CPU is online
        self._rr = itertools.count()
        self._reaper: Optional[threading.Thread] = None
        # What the workers hold instead of self (module docstring, Lifetime).
        handle = self._handle = _thread_handle(self)
        self._pool = _Workers(handle, [q.cpu for q in self._all], max_workers,
                              self._thread_name_prefix)
        self._work.bind(self._pool._all_threads)
        self._threads = set(self._pool._all_threads)
        # Dropped without shutdown(): as a ThreadPoolExecutor, the queued
        # tasks run, then the workers exit.  Not at exit: _drain_at_exit.
        self._finalizer = weakref.finalize(self, _janitor.release_later, handle._released)
        self._finalizer.atexit = False
        _live.add(handle)

    # -- submitting (hot path) ------------------------------------------------

    def submit(self, fn: "Callable[_P, _T]", /, *args: "_P.args",
               **kwargs: "_P.kwargs") -> "Future[_T]":
        """Schedule fn(*args, **kwargs) on an online worker; return its Future.

        Any thread, never blocks.  fn runs in a copy of the caller's
        contextvars context.  Goes to an idle worker if there is one, else
        round robin over online workers.  RuntimeError after shutdown(),
        BrokenThreadPool once an initializer failed.
        """
        f = _Future()
        state = self._work.submit(f, fn, args, kwargs)
        if state:  # refused (1), or shut down while it was queued (2)
            if state == 1:
                self._refuse()
            self._late([f])
        return f

    def submit_on(self, cpu: int, fn: "Callable[_P, _T]", /, *args: "_P.args",
                  **kwargs: "_P.kwargs") -> "Future[_T]":
        """Schedule fn(*args, **kwargs) on a worker of `cpu` only; return its Future.

        Any thread, never blocks.  If `cpu` is offline the task waits until
        it comes back online (or shutdown brings it back).  ValueError for a
        CPU not in the executor; RuntimeError after shutdown().
        """
        # type() is int: a float or bool equal to a CPU would find its queue.
        q = self._queues.get(cpu) if type(cpu) is int else None
        if q is None:
            self._pool.thread(cpu)  # raises the ValueError/TypeError
            raise AssertionError("unreachable")  # pragma: no cover
        f = _Future()
        state = self._work.submit_on(q, f, fn, args, kwargs)
        if state:  # as in submit()
            if state == 1:
                self._refuse()
            self._late([f])
        return f

    def map(self, fn: Callable[..., _T], *iterables: Iterable[Any],
            timeout: Optional[float] = None, chunksize: Optional[int] = 1,
            **kwargs: Any) -> Iterator[_T]:
        """Executor.map: fn over the zipped iterables, results in order.

        Any thread.  As the stdlib: every item is its own task, iterating
        raises the first exception when it is reached, and closing the
        iterator (or the exception, or a timeout) cancels the items that
        have not started.  `chunksize` > 1 runs that many items per task,
        one after another on one worker: cheaper, but items of a chunk
        cannot wait for each other and all of them run even after one
        raised.  None counts as 1.  TimeoutError if the results are not all
        there `timeout` seconds after the call.  Other keywords (newer
        Pythons' map options) go to Executor.map.
        """
        if chunksize is None:
            chunksize = 1
        if kwargs:
            return super().map(fn, *iterables, timeout=timeout, chunksize=chunksize,
                               **kwargs)
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if timeout is not None and (isinstance(timeout, bool)
                                    or not isinstance(timeout, (int, float))):
            raise TypeError("timeout must be a number of seconds or None, "
                            f"got {type(timeout).__name__}")
        end_time = None if timeout is None else timeout + _monotonic()
        if chunksize == 1:
            ts = self._submit_many(_MapTask, fn, list(zip(*iterables)))
            return _map_task_results(ts, end_time)
        items = list(zip(*iterables))
        fs = self._submit_many(_Future, _run_chunk, [(fn, items[i:i + chunksize])
                                                     for i in range(0, len(items), chunksize)])
        del items
        return _map_results(fs, True, end_time)

    def _submit_many(self, kind: Callable[[], Any], fn: Callable[..., Any],
                     calls: List[Tuple[Any, ...]]) -> List[Any]:
        """submit(fn, *args) for every args of `calls`, queued in one batch,
        with futures of type `kind` (_MapTask: only map()'s iterator sees them)."""
        work = self._work
        if work.closed():
            self._refuse()
        fs: List[Any] = []
        queues = work.online_queues()
        if not queues:  # no CPU online: each waits as an orphan
            for args in calls:
                f = kind()
                fs.append(f)
                work.orphan((f, copy_context(), fn, args, _NO_KWARGS))
            if work.closed():
                self._late(fs)
            return fs
        fs = [kind() for _ in calls]
        items = [(f, copy_context(), fn, args, _NO_KWARGS) for f, args in zip(fs, calls)]
        n = len(queues)
        start = next(self._rr)
        # Item i to queue (start + i) % n: dealt out, so that results come
        # back in order from all workers at once.
        for j in range(n):
            share = items[(j - start) % n::n]
            if share:
                work.extend(queues[j], share)  # wakes its workers, re-checks it is online
        # Idle workers of CPUs that got no share (fewer items than CPUs, or
        # listed meanwhile) steal from the others.
        for _ in range(len(work.idle)):
            work.wake_idle()
        if work.closed():
            self._late(fs)
        return fs

    def _refuse(self) -> None:
        if self._broken:
            raise BrokenThreadPool(self._broken)
        raise RuntimeError("cannot schedule new futures after shutdown")

    def _late(self, fs: List[Any]) -> None:
        # shutdown() or a failed initializer came while we queued `fs`.
        if self._broken:
            self._fail_queued()  # the workers may all be gone to sleep
            return
        cancelled = False
        for f in fs:
            cancelled = f.cancel() or cancelled
        if cancelled:
            raise RuntimeError("cannot schedule new futures after shutdown")

    # -- the workers (PerCPUThreads callbacks, in the worker's thread) --------

    def _init_worker(self, cpu: int) -> None:
        try:
            self._initializer(*self._initargs)  # type: ignore[misc]
        except BaseException:
            _LOGGER.critical("Exception in initializer:", exc_info=True)
            with self._shutdown_lock:
                self._broken = ("A thread initializer failed, the thread pool "
                                "is not usable anymore")
                self._work.close(self._broken)
            self._fail_queued()

    def _thread_fn(self, w: Worker, cpu: int) -> None:
        """The worker's tasks and its idle sleeps between them (WorkQueues.run):
        returns for a park or stop request, or once re-pinning failed."""
        exc = self._work.run(w, cpu)
        if exc is not None:  # re-pinning after a park in place failed
            self._pool._repin_failed(w.thread.data, exc)

    # -- hotplug hooks (called by the pool, under its lock) -------------------

    def _could_strand(self) -> bool:
        if not self._shutdown:
            return True  # a later submit() would have nowhere to run
        return bool(self._orphans) or any(q.shared for q in self._all)

    def _veto_offline(self, cpus: List[int], remaining: frozenset[int]) -> Optional[str]:
        if remaining or not self._could_strand():
            return None
        return (f"offlining CPUs {sorted(cpus)} would leave no CPU online "
                "for unpinned tasks; pass force=True to do it anyway")

    def _close_queues(self, cpus: List[int]) -> None:
        self._work.close_queues([self._queues[c] for c in cpus])

    def _rescue_queues(self, cpus: List[int]) -> None:
        for c in cpus:
            q = self._queues[c]
            if q.shared:
                self._work.rescue(q)

    def _open_queues(self, cpus: List[int]) -> None:
        self._work.open_queues([self._queues[c] for c in cpus])

    def _drain(self) -> None:
        """Run every queued task (the pool's close() hook).  Returns once all
        queues are empty; the tasks still running are finished by close()."""
        while True:
            if self._broken:
                self._fail_queued()
                return
            need = {q.cpu for q in self._all if q.pinned and not q.online}
            if not self._work.online_queues() and (
                    self._orphans or any(q.shared for q in self._all)):
                need.add(self._all[0].cpu)
            if need:
                self._pool._hotplug_locked(sorted(need), up=True)
            self._work.flush_orphans()
            for q in self._all:
                if q.shared and not q.online:
                    self._work.rescue(q)
            self._drained.clear()
            if not self._orphans and not any(q.pinned or q.shared for q in self._all):
                return
            # Set by every worker that finds nothing left to do.
            self._drained.wait(_DRAIN_RECHECK)

    def _queued_deques(self) -> List[Deque[_Item]]:
        queues: List[Deque[_Item]] = [self._orphans]
        for q in self._all:
            queues.append(q.pinned)
            queues.append(q.shared)
        return queues

    def _take_queued(self) -> Iterator[_Item]:
        # popleft(): each item is taken by exactly one thread, even while
        # workers or submitters touch the same deques.
        for dq in self._queued_deques():
            while True:
                try:
                    item = dq.popleft()
                except IndexError:
                    break
                yield item

    def _cancel_queued(self) -> None:
        for item in self._take_queued():
            item[0].cancel()

    def _fail_queued(self) -> None:
        # As ThreadPoolExecutor's _initializer_failed: queued work fails.
        for item in self._take_queued():
            f = item[0]
            if f.set_running_or_notify_cancel():
                f.set_exception(BrokenThreadPool(self._broken))
        self._drained.set()

    # -- hotplug (the pool does it) -------------------------------------------

    @property
    def cpus(self) -> Tuple[int, ...]:
        """The executor's CPUs, ascending (online or not)."""
        return self._pool.cpus

    @property
    def online_cpus(self) -> frozenset[int]:
        """The CPUs whose workers are not parked by the executor; empty once shut down."""
        return self._pool.online_cpus

    @property
    def threads(self) -> ExecutorThreads:
        """A read-only view of the workers (thread(cpu), errors), for inspection."""
        return ExecutorThreads(self._pool)

    def offline(self, cpus: CPUs, *, force: bool = False) -> None:
        """Park every worker of `cpus` (one CPU or an iterable); return once parked.

        Any thread but the executor's workers.  Running tasks finish first;
        queued unpinned tasks move to online CPUs; pinned ones wait.
        RuntimeError if no CPU would stay online while unpinned work could be
        stranded (always, before shutdown), unless `force`; RuntimeError
        after shutdown completed.  Offline CPUs are skipped.  Interrupted
        (KeyboardInterrupt while a task runs on), the CPUs stay offline with
        the park pending: a retry waits for it, online() withdraws it.
        """
        self._pool.offline(cpus, force=force)

    def online(self, cpus: CPUs) -> None:
        """Unpark every worker of `cpus` (one CPU or an iterable).

        Any thread but the executor's workers; never waits for the workers.
        Online CPUs are skipped.  RuntimeError after shutdown completed.
        """
        self._pool.online(cpus)

    def follow_affinity(self, interval: Optional[float] = 1.0) -> None:
        """Offline/online workers as the process's allowed and online CPUs change.

        Any thread but the workers.  Syncs once now, then every `interval`
        seconds in a watcher thread; `None` stops watching.  Only CPUs the
        watcher took offline are brought back; the last online CPU is kept
        (never forced offline) while unpinned work could be stranded.
        RuntimeError after shutdown().
        """
        if interval is not None and self._shutdown:
            raise RuntimeError("the executor has been shut down")
        self._pool.follow_affinity(interval)

    # -- shutdown -------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking tasks; run (or, with cancel_futures, cancel) queued ones.

        Any thread; with wait=True not from a worker (RuntimeError).  With
        wait=True returns once every queued task has run (offline CPUs with
        pinned work are brought online for it) and the workers have exited;
        with wait=False the same happens in the background.  Idempotent.
        Interrupted (KeyboardInterrupt), queued tasks stay queued and keep
        running, and the next shutdown() finishes the job.
        """
        if wait and self._pool._is_own_thread():
            raise RuntimeError("shutdown(wait=True) cannot be called from one of "
                               "the executor's workers; use wait=False")
        with self._shutdown_lock:
            self._shutdown = True
            self._work.close()
            if cancel_futures:
                self._cancel_queued()
            if not wait and self._reaper is None and not self._finished:
                # The handle's _finish: the thread must not keep self alive.
                self._reaper = threading.Thread(target=self._handle._finish, daemon=True,
                                                name=f"{self._thread_name_prefix}-shutdown")
                self._reaper.start()
        if wait:
            self._finish()

    def _finish(self) -> None:
        with self._finish_lock:
            if self._finished:
                return
            pool = self._pool
            try:
                pool.close()  # drains the queues first (_drain)
            finally:
                if pool.closed:
                    self._finished = True
                    # Only tasks that raced with shutdown() can be left here
                    # (and, in a fork child, the parent's queued tasks).
                    if self._broken:
                        self._fail_queued()
                    else:
                        self._cancel_queued()
                    _live.discard(self._handle)
                    self._finalizer.detach()  # shut down: nothing to release

    # -- lifetime -------------------------------------------------------------

    def _released(self) -> None:
        """The janitor's job once the executor became unreachable without shutdown().

        shutdown(wait=False), as a collected ThreadPoolExecutor's workers
        do: the queued tasks still run (offline CPUs with pinned ones come
        back online for them), then the workers exit.
        """
        self.shutdown(wait=False)

    def _forked(self) -> None:
        """In a fork child: the workers are gone, so the executor is broken.

        Called by the at-fork hook, the child's only thread (the pool's own
        hook has closed the pool).  submit/submit_on/map raise
        BrokenThreadPool (a RuntimeError) saying so; shutdown() returns at
        once and fails the queued futures with it (cancels them with
        cancel_futures); offline/online/follow_affinity raise RuntimeError.
        """
        self._broken = _FORKED
        self._work.close(_FORKED)
        self._shutdown_lock = threading.Lock()
        self._finish_lock = threading.Lock()
        self._drained = self._work.drained = threading.Event()
        self._reaper = None
        self._finalizer.detach()

    def __repr__(self) -> str:
        state = ("shut down" if self._finished else "shutting down" if self._shutdown
                 else f"online={sorted(self.online_cpus)}")
        return (f"<PerCPUExecutor max_workers={self._max_workers} "
                f"cpus={list(self.cpus)} {state}>")


def _drain_at_exit() -> None:
    # Like concurrent.futures.thread: queued work runs before the interpreter
    # exits.  Registered after kpark.thread's handler, so it runs before it.
    for ex in list(_live):
        try:
            ex.shutdown(wait=True)
        except BaseException:
            pass


def _after_fork_in_child() -> None:
    # Like concurrent.futures.thread, a child never waits at exit for the
    # parent's workers: the inherited executors are broken and forgotten.
    # Runs after percpu's hook (registered first), which closed their pools.
    for ex in list(_live):
        ex._forked()
    _live.clear()


threading._register_atexit(_drain_at_exit)  # type: ignore[attr-defined]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
