"""kpark.PerCPUExecutor: a concurrent.futures executor on per-CPU hotplug threads.

One PerCPUThreads worker per CPU, each with two deques: `pinned` (tasks from
submit_on, which only that worker runs) and `shared` (unpinned tasks, which
an idle worker may steal and which move to other CPUs when their CPU goes
offline).  The hot path is lock-free: submit appends to a deque and calls
KThread.wake(), which costs a system call only if the worker sleeps.

Why nothing is lost without a lock on submit: every move of a task is a
deque popleft() (atomic: each task is taken by exactly one thread), and
every producer re-checks after appending.  submit re-checks that the CPU it
appended to is still online (else it moves that CPU's unpinned tasks on
itself) and that the executor is not shutting down (else it cancels its own
future, which fails only if a worker already took it).  offline() marks a
CPU offline before parking it and moves its unpinned tasks after, so any
task appended in between is moved by one of the two.

Futures are _Future: a concurrent.futures.Future with no Condition until
someone asks for one, whose result() waits on a kpark.Completion (a spin,
then a futex) instead of a lock.  map() submits its items in chunks.  Both
exist for speed (issue 4, docs/performance.md).
"""
from __future__ import annotations

import itertools
import threading
import weakref
from collections import deque
from concurrent.futures import Executor, Future
from concurrent.futures import _base
from time import monotonic as _monotonic
from typing import (TYPE_CHECKING, Any, Callable, Deque, Dict, Iterable, Iterator,
                    List, Optional, Tuple, TypeVar)

from kpark._completion import Completion
from kpark._kcore import current, should_park, should_stop, this_cpu
from kpark.percpu import (CPUs, PerCPUThreads, _AffinityWatcher, _check_interval,
                          _normalize_cpus, available_cpus)

if TYPE_CHECKING:
    import sys
    if sys.version_info >= (3, 10):
        from typing import ParamSpec
    else:  # mypy's own typeshed has it; nothing is imported at run time
        from typing_extensions import ParamSpec
    _P = ParamSpec("_P")

__all__ = ["PerCPUExecutor"]

_T = TypeVar("_T")
_Item = Tuple["Future[Any]", Callable[..., Any], Tuple[Any, ...], Dict[str, Any]]

#: Seconds between re-checks while shutdown waits for the queues to drain;
#: workers signal every transition to idle, so this is only a safety net.
_DRAIN_RECHECK = 0.5


_PENDING = _base.PENDING
_RUNNING = _base.RUNNING
_CANCELLED = _base.CANCELLED
_CANCELLED_AND_NOTIFIED = _base.CANCELLED_AND_NOTIFIED
_FINISHED = _base.FINISHED
_CANCELLED_STATES = (_CANCELLED, _CANCELLED_AND_NOTIFIED)
_DONE_STATES = (_CANCELLED, _CANCELLED_AND_NOTIFIED, _FINISHED)
_LOGGER = _base.LOGGER
_RLock = threading.RLock


class _Future(Future):  # type: ignore[type-arg]
    """A concurrent.futures.Future that is cheap to make and quick to wait on.

    The stdlib Future builds a threading.Condition (Python code around an
    RLock) in its constructor and blocks result() on it; that constructor
    alone costs more than the rest of a submit.  This one keeps the RLock,
    creates the Condition only when somebody asks for `_condition`
    (concurrent.futures.wait()/as_completed() and the base class's own
    methods do), and blocks result()/exception() on a kpark.Completion,
    released with complete_all() by whatever makes the future done.

    Every state change happens under the RLock, which is also the lock of
    `_condition`: wait()/as_completed() hold it while they inspect `_state`
    and install their waiters, exactly as with the stdlib Future, so the
    waiter protocol (`_waiters`, add_result/add_exception/add_cancelled) is
    kept unchanged.
    """

    __slots__ = ("_lock", "_cond", "_done_event")

    def __init__(self) -> None:  # no super().__init__(): it builds the Condition
        self._lock = _RLock()
        self._cond: Optional[threading.Condition] = None
        self._done_event = Completion()
        self._state = _PENDING
        self._result: Any = None
        self._exception: Optional[BaseException] = None
        self._waiters: List[Any] = []
        self._done_callbacks: List[Callable[[Future[Any]], object]] = []

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        cond = self._cond
        if cond is None:
            with self._lock:
                cond = self._cond
                if cond is None:
                    cond = self._cond = threading.Condition(self._lock)
        return cond

    def _finish(self) -> None:
        # Under the lock: notify threads blocked in the base class's waits.
        if self._cond is not None:
            self._cond.notify_all()

    def cancel(self) -> bool:
        with self._lock:
            if self._state in (_RUNNING, _FINISHED):
                return False
            if self._state in _CANCELLED_STATES:
                return True
            self._state = _CANCELLED
            self._finish()
        self._done_event.complete_all()
        self._invoke_callbacks()  # type: ignore[attr-defined]  # the stdlib's
        return True

    def cancelled(self) -> bool:
        return self._state in _CANCELLED_STATES

    def running(self) -> bool:
        return self._state == _RUNNING

    def done(self) -> bool:
        return self._state in _DONE_STATES

    def add_done_callback(self, fn: Callable[[Future[Any]], object]) -> None:
        with self._lock:
            if self._state not in _DONE_STATES:
                self._done_callbacks.append(fn)
                return
        try:
            fn(self)
        except Exception:
            _LOGGER.exception("exception calling callback for %r", self)

    def _wait(self, timeout: Optional[float]) -> str:
        """Block until done or `timeout` seconds passed; return the state."""
        state = self._state
        if state not in _DONE_STATES:
            if timeout is not None and timeout < 0:
                timeout = 0.0  # as threading.Condition.wait: no wait at all
            self._done_event.wait(timeout)
            with self._lock:  # pairs with the setter's: see what it wrote
                state = self._state
        return state

    def result(self, timeout: Optional[float] = None) -> Any:
        try:
            state = self._wait(timeout)
            if state == _FINISHED:
                with self._lock:
                    exc = self._exception
                if not exc:  # as the stdlib: a falsy exception counts as none
                    return self._result
                try:
                    raise exc
                finally:
                    exc = None  # no reference cycle through the traceback
            if state in _CANCELLED_STATES:
                raise _base.CancelledError()
            raise _base.TimeoutError()
        finally:
            self = None  # type: ignore[assignment]  # as the stdlib: break cycles

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        state = self._wait(timeout)
        if state == _FINISHED:
            with self._lock:
                return self._exception
        if state in _CANCELLED_STATES:
            raise _base.CancelledError()
        raise _base.TimeoutError()

    def set_running_or_notify_cancel(self) -> bool:
        with self._lock:
            state = self._state
            if state == _PENDING:
                self._state = _RUNNING
                return True
            if state == _CANCELLED:
                self._state = _CANCELLED_AND_NOTIFIED
                for waiter in self._waiters:
                    waiter.add_cancelled(self)
                return False
            _LOGGER.critical("Future %s in unexpected state: %s", id(self), state)
            raise RuntimeError("Future in unexpected state")

    def set_result(self, result: Any) -> None:
        with self._lock:
            if self._state in _DONE_STATES:
                raise _base.InvalidStateError(f"{self._state}: {self!r}")
            self._result = result
            self._state = _FINISHED
            for waiter in self._waiters:
                waiter.add_result(self)
            self._finish()
        self._done_event.complete_all()
        if self._done_callbacks:
            self._invoke_callbacks()  # type: ignore[attr-defined]  # the stdlib's

    def set_exception(self, exception: Optional[BaseException]) -> None:
        with self._lock:
            if self._state in _DONE_STATES:
                raise _base.InvalidStateError(f"{self._state}: {self!r}")
            self._exception = exception
            self._state = _FINISHED
            for waiter in self._waiters:
                waiter.add_exception(self)
            self._finish()
        self._done_event.complete_all()
        if self._done_callbacks:
            self._invoke_callbacks()  # type: ignore[attr-defined]  # the stdlib's


class _Queue:
    """One CPU's queues and state."""
    __slots__ = ("cpu", "pinned", "shared", "online", "thread", "idle", "listed")

    def __init__(self, cpu: int) -> None:
        self.cpu = cpu
        self.pinned: Deque[_Item] = deque()
        self.shared: Deque[_Item] = deque()
        self.online = True
        self.thread: Any = None  # the KThread, set once the pool exists
        self.idle = False        # the worker is (about to be) asleep
        self.listed = False      # the queue is on the executor's idle list


class _Workers(PerCPUThreads):
    """The executor's PerCPUThreads: idle workers park in place (every queue
    push is followed by wake()), and threads that parked themselves are
    reported to the executor."""

    _park_idle_in_place = True

    def __init__(self, executor: "PerCPUExecutor", cpus: List[int], comm: str) -> None:
        self._executor_ref = weakref.ref(executor)
        super().__init__(executor._thread_fn, executor._should_run,
                         thread_comm=comm, cpus=cpus)

    def _self_offlined(self, cpu: int) -> None:
        ex = self._executor_ref()
        if ex is not None:
            ex._lost_cpu(cpu)


_live: "weakref.WeakSet[PerCPUExecutor]" = weakref.WeakSet()


class PerCPUExecutor(Executor):
    """A concurrent.futures.Executor with one pinned worker per CPU.

    Workers park when their CPU is taken offline and unpark when it comes
    back; queued work moves or waits, it is never lost.  Idle workers sleep
    in idle() (schedule() that offline() parks in place) and burn no CPU.
    """

    def __init__(self, cpus: Optional[CPUs] = None, *,
                 thread_name_prefix: str = "kpark-exec") -> None:
        """Start one worker per CPU in `cpus` (default: this thread's affinity).

        Workers are named `thread_name_prefix/<cpu>`.  ValueError for a CPU
        this process may not use.
        """
        if not isinstance(thread_name_prefix, str):
            raise TypeError("thread_name_prefix must be a str, got "
                            f"{type(thread_name_prefix).__name__}")
        cpu_list = _normalize_cpus(cpus)
        self._queues: Dict[int, _Queue] = {c: _Queue(c) for c in cpu_list}
        self._all: Tuple[_Queue, ...] = tuple(self._queues[c] for c in cpu_list)
        self._online_q: Tuple[_Queue, ...] = self._all
        self._idle: Deque[_Queue] = deque()
        self._orphans: Deque[_Item] = deque()  # unpinned work while no CPU is online
        self._rr = itertools.count()
        self._shutdown = False
        self._finished = False
        self._lock = threading.Lock()           # hotplug, drain and close
        self._shutdown_lock = threading.Lock()  # the flag and the reaper
        self._finish_lock = threading.Lock()
        self._drained = threading.Event()
        self._reaper: Optional[threading.Thread] = None
        self._auto_offline: set[int] = set()
        self._watcher: Optional[_AffinityWatcher] = None
        comm = thread_name_prefix.replace("%", "%%") + "/%u"
        self._pool = _Workers(self, cpu_list, comm)
        for q in self._all:
            q.thread = self._pool.thread(q.cpu)
        _live.add(self)

    # -- submitting (hot path) ------------------------------------------------

    def submit(self, fn: "Callable[_P, _T]", /, *args: "_P.args",
               **kwargs: "_P.kwargs") -> "Future[_T]":
        """Schedule fn(*args, **kwargs) on an online worker; return its Future.

        Any thread, never blocks.  Goes to an idle worker if there is one,
        else round robin over online CPUs.  RuntimeError after shutdown().
        """
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        f: Future[_T] = _Future()
        item: _Item = (f, fn, args, kwargs)
        q = self._pick()
        if q is None:
            self._orphan(item)
        else:
            q.shared.append(item)
            q.thread.wake()
            if not q.online:  # went offline meanwhile: move its work on
                self._rescue(q)
        if self._shutdown and f.cancel():
            raise RuntimeError("cannot schedule new futures after shutdown")
        return f

    def submit_on(self, cpu: int, fn: "Callable[_P, _T]", /, *args: "_P.args",
                  **kwargs: "_P.kwargs") -> "Future[_T]":
        """Schedule fn(*args, **kwargs) on `cpu`'s worker only; return its Future.

        Any thread, never blocks.  If `cpu` is offline the task waits until
        it comes back online (or shutdown brings it back).  ValueError for a
        CPU not in the executor; RuntimeError after shutdown().
        """
        try:
            q = self._queues[cpu]
        except (KeyError, TypeError):
            q = None
        if q is None or isinstance(cpu, bool):
            self._pool.thread(cpu)  # raises the ValueError/TypeError
            raise AssertionError("unreachable")  # pragma: no cover
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        f: Future[_T] = _Future()
        q.pinned.append((f, fn, args, kwargs))
        q.thread.wake()
        if self._shutdown and f.cancel():
            raise RuntimeError("cannot schedule new futures after shutdown")
        return f

    def map(self, fn: Callable[..., _T], *iterables: Iterable[Any],
            timeout: Optional[float] = None, chunksize: Optional[int] = None,
            **kwargs: Any) -> Iterator[_T]:
        """Executor.map: fn over the zipped iterables, results in order.

        Any thread.  Items are submitted in chunks: `chunksize` items per
        task (None: about eight chunks per online worker, at most
        _MAX_AUTO_CHUNK items each; 1: one task per item, as
        ThreadPoolExecutor does).  Every item runs even if an earlier one of
        its chunk raised; iterating raises the first exception in order,
        like the stdlib.  Closing the iterator early cancels the chunks that
        have not started.  TimeoutError if the results are not all there
        `timeout` seconds after the call.  Other keywords (newer Pythons'
        map options) go to Executor.map with one task per item.
        """
        if kwargs:
            return super().map(fn, *iterables, timeout=timeout,
                               chunksize=1 if chunksize is None else chunksize, **kwargs)
        end_time = None if timeout is None else timeout + _monotonic()
        items = list(zip(*iterables))
        if chunksize is None:
            workers = len(self._online_q) or len(self._all)
            chunksize = max(1, min(_MAX_AUTO_CHUNK, len(items) // (workers * _CHUNKS_PER_WORKER)))
        elif chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        submit = self.submit
        if chunksize == 1:
            fs: List[Future[Any]] = [submit(fn, *args) for args in items]
        else:
            fs = [submit(_run_chunk, fn, items[i:i + chunksize])
                  for i in range(0, len(items), chunksize)]
        del items
        return _map_results(fs, chunksize > 1, end_time)

    def _pick(self) -> Optional[_Queue]:
        q = self._pop_idle()
        if q is not None:
            if q.cpu != this_cpu():
                return q
            # Its worker shares our CPU: it could run only once we sleep, and
            # we would both sleep instead of spin.  Prefer another idle one.
            other = self._pop_idle()
            if other is None:
                return q
            q.listed = True
            self._idle.append(q)
            return other
        online = self._online_q
        if online:
            return online[next(self._rr) % len(online)]
        return None

    def _pop_idle(self) -> Optional[_Queue]:
        """The most recently idle online worker's queue (its cache is warm)."""
        idle = self._idle
        while idle:
            try:
                q = idle.pop()
            except IndexError:
                break
            q.listed = False
            if q.idle and q.online:
                return q
        return None

    def _push(self, q: _Queue, item: _Item) -> None:
        q.shared.append(item)
        q.thread.wake()
        if not q.online:
            self._rescue(q)

    def _rescue(self, q: _Queue) -> None:
        """Move `q`'s unpinned tasks to online CPUs (to orphans if none)."""
        shared = q.shared
        while shared:
            try:
                item = shared.popleft()
            except IndexError:
                return
            online = self._online_q
            if online:
                self._push(online[next(self._rr) % len(online)], item)
            else:
                self._orphan(item)

    def _orphan(self, item: _Item) -> None:
        self._orphans.append(item)
        # online() publishes _online_q before it flushes the orphans, so one
        # of us sees the other.
        if self._online_q:
            self._flush_orphans()

    def _flush_orphans(self) -> None:
        orphans = self._orphans
        while orphans:
            online = self._online_q
            if not online:
                return
            try:
                item = orphans.popleft()
            except IndexError:
                return
            self._push(online[next(self._rr) % len(online)], item)

    # -- the workers (PerCPUThreads callbacks, in the CPU's thread) ----------

    def _should_run(self, cpu: int) -> bool:
        q = self._queues[cpu]
        if q.pinned or q.shared:
            return True
        for v in self._all:
            if v.shared:
                return True  # something to steal
        # Going to sleep.  Anyone who queues work for us after the checks
        # above also wakes us, and schedule() keeps that wake.
        q.idle = True
        if not q.listed:
            q.listed = True
            self._idle.append(q)
        if self._shutdown:
            self._drained.set()
        return False

    def _thread_fn(self, cpu: int) -> None:
        q = self._queues[cpu]
        q.idle = False
        pinned = q.pinned
        shared = q.shared
        ran = False
        while True:
            item: Optional[_Item] = None
            if pinned:
                try:
                    item = pinned.popleft()
                except IndexError:  # cancel_futures emptied it meanwhile
                    pass
            if item is None and shared:
                try:
                    item = shared.popleft()
                except IndexError:
                    pass
            if item is None:
                if ran:
                    # Our queues are empty: back to the loop, whose
                    # _should_run looks for work to steal, and so to sleep
                    # (giving up the GIL the submitter waits for) sooner.
                    return
                item = self._steal(q)
                if item is None:
                    return
            ran = True
            f, fn, args, kwargs = item
            del item
            if f.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    f.set_exception(exc)
                    del exc  # no frame cycle through the traceback
                else:
                    f.set_result(result)
                    del result
            del f, fn, args, kwargs
            # Back to the smpboot loop between tasks when parked or stopped:
            # offline() lets the running task finish, then the worker parks.
            if should_park() or should_stop():
                return

    def _steal(self, thief: _Queue) -> Optional[_Item]:
        for v in self._all:
            if v is not thief and v.shared:
                try:
                    return v.shared.popleft()
                except IndexError:
                    continue
        return None

    def _lost_cpu(self, cpu: int) -> None:
        # A worker could not re-pin itself after unpark and parked again.
        q = self._queues[cpu]
        self._online_q = tuple(v for v in self._all if v.online and v is not q)
        q.online = False
        self._rescue(q)

    # -- hotplug --------------------------------------------------------------

    @property
    def cpus(self) -> Tuple[int, ...]:
        """The executor's CPUs, ascending (online or not)."""
        return self._pool.cpus

    @property
    def online_cpus(self) -> frozenset[int]:
        """The CPUs whose workers take tasks now; empty once shut down."""
        if self._finished:
            return frozenset()
        return frozenset(q.cpu for q in self._online_q)

    @property
    def threads(self) -> PerCPUThreads:
        """The underlying PerCPUThreads (for inspection: thread(cpu), errors)."""
        return self._pool

    def offline(self, cpus: CPUs, *, force: bool = False) -> None:
        """Park the workers of `cpus` (one CPU or an iterable); return once parked.

        Any thread but the executor's workers.  Running tasks finish first;
        queued unpinned tasks move to online CPUs; pinned ones wait.
        RuntimeError if no CPU would stay online while unpinned work could be
        stranded (always, before shutdown), unless `force`; RuntimeError
        after shutdown completed.  Offline CPUs are skipped.
        """
        pool = self._pool
        targets = pool._cpu_list(cpus)
        pool._check_caller("offline")
        with self._lock:
            self._check_running()
            if self._auto_offline:
                self._auto_offline.difference_update(targets)
            self._offline_locked(targets, force)
        pool._report()

    def online(self, cpus: CPUs) -> None:
        """Unpark the workers of `cpus` (one CPU or an iterable).

        Any thread but the executor's workers; never waits for the workers.
        Online CPUs are skipped.  RuntimeError after shutdown completed.
        """
        pool = self._pool
        targets = pool._cpu_list(cpus)
        pool._check_caller("online")
        with self._lock:
            self._check_running()
            if self._auto_offline:
                self._auto_offline.difference_update(targets)
            self._online_locked(targets)
        pool._report()

    def _check_running(self) -> None:
        if self._finished:
            raise RuntimeError("the executor has been shut down")

    def _could_strand(self) -> bool:
        if not self._shutdown:
            return True  # a later submit() would have nowhere to run
        return bool(self._orphans) or any(q.shared for q in self._all)

    def _offline_locked(self, targets: List[int], force: bool) -> None:
        qs = [self._queues[c] for c in targets if self._queues[c].online]
        if not qs:
            return
        remaining = tuple(q for q in self._online_q if q not in qs)
        if not remaining and not force and self._could_strand():
            raise RuntimeError(
                f"offlining CPUs {[q.cpu for q in qs]} would leave no CPU online "
                "for unpinned tasks; pass force=True to do it anyway")
        # _online_q first: whoever sees q.online False also sees the new tuple.
        self._online_q = remaining
        for q in qs:
            q.online = False
        try:
            self._pool_hotplug([q.cpu for q in qs], up=False)
        finally:
            for q in qs:
                if q.shared:
                    self._rescue(q)

    def _pool_hotplug(self, cpus: List[int], up: bool) -> None:
        # Lock order: the executor's _lock, then the pool's.
        with self._pool._lock:
            self._pool._check_open()
            self._pool._hotplug_locked(cpus, up)

    def _online_locked(self, targets: List[int]) -> None:
        qs = [self._queues[c] for c in targets if not self._queues[c].online]
        if not qs:
            return
        self._pool_hotplug([q.cpu for q in qs], up=True)
        for q in qs:
            q.online = True
        self._online_q = tuple(q for q in self._all if q.online)
        if self._orphans:
            self._flush_orphans()
        for q in qs:
            # A worker parked in place stays asleep through online(), so it
            # does not look for work on its own: list it as idle for
            # submit(), and wake it if other CPUs hold tasks it may steal.
            if q.idle and not q.listed:
                q.listed = True
                self._idle.append(q)
        for v in self._all:
            if v.shared:
                for q in qs:
                    q.thread.wake()
                break

    # -- following the machine's CPUs ----------------------------------------

    def follow_affinity(self, interval: Optional[float] = 1.0) -> None:
        """Offline/online workers as the process's allowed and online CPUs change.

        Any thread but the workers.  Syncs once now, then every `interval`
        seconds in a watcher thread; `None` stops watching.  Only CPUs the
        watcher took offline are brought back; the last online CPU is kept
        (never forced offline) while unpinned work could be stranded.
        """
        self._stop_watcher()
        if interval is None:
            return
        interval = _check_interval(interval)
        self._pool._check_caller("follow_affinity")
        if self._shutdown:
            raise RuntimeError("the executor has been shut down")
        self._sync_affinity()
        self._watcher = _AffinityWatcher(self._sync_affinity, interval,
                                         "kpark-affinity", self._pool._watch_error)

    def _stop_watcher(self) -> None:
        w, self._watcher = self._watcher, None
        if w is not None and w.thread is not current():
            w.stop()

    def _sync_affinity(self) -> None:
        avail = available_cpus()
        with self._lock:
            if self._shutdown:
                return
            back = sorted(self._auto_offline & avail)
            self._online_locked(back)
            self._auto_offline.difference_update(back)
            online = [q.cpu for q in self._online_q]
            drop = [c for c in online if c not in avail]
            if drop and len(drop) == len(online) and self._could_strand():
                drop.pop(0)  # keep the lowest: tasks need somewhere to run
            self._offline_locked(drop, force=False)
            self._auto_offline.update(drop)

    # -- shutdown -------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking tasks; run (or, with cancel_futures, cancel) queued ones.

        Any thread; with wait=True not from a worker (RuntimeError).  With
        wait=True returns once every queued task has run (offline CPUs with
        pinned work are brought online for it) and the workers have exited;
        with wait=False the same happens in the background.  Idempotent.
        """
        if wait and self._pool._is_own_thread():
            raise RuntimeError("shutdown(wait=True) cannot be called from one of "
                               "the executor's workers; use wait=False")
        with self._shutdown_lock:
            self._shutdown = True
            if cancel_futures:
                self._cancel_queued()
            if not wait and self._reaper is None and not self._finished:
                self._reaper = threading.Thread(target=self._finish, daemon=True,
                                                name="kpark-exec-shutdown")
                self._reaper.start()
        if wait:
            self._finish()

    def _finish(self) -> None:
        with self._finish_lock:
            if self._finished:
                return
            # Before _lock: the watcher may be waiting for it.
            self._stop_watcher()
            with self._lock:
                try:
                    self._drain()
                    self._pool.close()
                finally:
                    self._finished = True
                    # Only tasks that raced with shutdown() can be left here.
                    self._cancel_queued()
                    _live.discard(self)

    def _drain(self) -> None:
        """Run every queued task; hold _lock.  Returns once all queues are empty.

        Tasks taken off a queue but still running are finished by the pool's
        close(), which waits for each worker's current task.
        """
        while True:
            need = {q.cpu for q in self._all if q.pinned and not q.online}
            if not self._online_q and (self._orphans or any(q.shared for q in self._all)):
                need.add(self._all[0].cpu)
            if need:
                self._online_locked(sorted(need))
            self._flush_orphans()
            for q in self._all:
                if q.shared and not q.online:
                    self._rescue(q)
            self._drained.clear()
            if not self._orphans and not any(q.pinned or q.shared for q in self._all):
                return
            # Set by every worker that finds nothing left to do.
            self._drained.wait(_DRAIN_RECHECK)

    def _cancel_queued(self) -> None:
        queues: List[Deque[_Item]] = [self._orphans]
        for q in self._all:
            queues.append(q.pinned)
            queues.append(q.shared)
        for dq in queues:
            while True:
                try:
                    item = dq.popleft()
                except IndexError:
                    break
                item[0].cancel()

    def __repr__(self) -> str:
        state = ("shut down" if self._finished else "shutting down" if self._shutdown
                 else f"online={sorted(q.cpu for q in self._online_q)}")
        return f"<PerCPUExecutor cpus={list(self.cpus)} {state}>"


#: map() without a chunksize: about this many chunks per online worker ...
_CHUNKS_PER_WORKER = 8
#: ... of at most this many items each.
_MAX_AUTO_CHUNK = 256


def _run_chunk(fn: Callable[..., Any], chunk: List[Tuple[Any, ...]]
               ) -> Tuple[List[Any], Optional[Dict[int, BaseException]]]:
    """One map() task: fn over every item; exceptions kept by item index."""
    results: List[Any] = []
    append = results.append
    failed: Optional[Dict[int, BaseException]] = None
    for args in chunk:
        try:
            append(fn(*args))
        except BaseException as exc:  # the stdlib future keeps BaseExceptions too
            if failed is None:
                failed = {}
            failed[len(results)] = exc
            append(None)
            del exc
    return results, failed


def _result_or_cancel(f: "Future[Any]", timeout: Optional[float]) -> Any:
    try:
        return f.result(timeout)
    finally:
        f.cancel()  # after a timeout: the stdlib's map cancels it too
        del f


def _map_results(fs: "List[Future[Any]]", chunked: bool,
                 end_time: Optional[float]) -> Iterator[Any]:
    """The iterator map() returns: waits for each future in order."""
    try:
        fs.reverse()
        while fs:
            # pop(): no reference to a future we are done with
            out = _result_or_cancel(fs.pop(), None if end_time is None
                                    else end_time - _monotonic())
            if not chunked:
                yield out
                continue
            results, failed = out
            del out
            if failed is None:
                yield from results
                continue
            for i, value in enumerate(results):
                exc = failed.get(i)
                if exc is not None:
                    try:
                        raise exc
                    finally:
                        exc = failed = None  # no cycle through the traceback
                yield value
    finally:
        for f in fs:
            f.cancel()


def _drain_at_exit() -> None:
    # Like concurrent.futures.thread: queued work runs before the interpreter
    # exits.  Registered after kpark.thread's handler, so it runs before it.
    for ex in list(_live):
        try:
            ex.shutdown(wait=True)
        except BaseException:
            pass


threading._register_atexit(_drain_at_exit)  # type: ignore[attr-defined]
