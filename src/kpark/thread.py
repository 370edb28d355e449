"""kpark.KThread: a Python thread with the kernel's kthread semantics.

This floor holds what is not hot: argument checking, names, CPU validation,
the registry used at fork and at interpreter exit, and the threading.Thread
face (name, ident, native_id, threading.enumerate()).  Every state change is
one call into kpark._kcore.KCore, whose futex word is the only shared state.
"""
from __future__ import annotations

import itertools
import os
import threading
import weakref
from time import monotonic as _monotonic
from typing import Any, Callable, Optional

from kpark._kcore import KCore, ThreadExitedError

__all__ = ["KThread", "create_on_cpu", "ThreadExitedError", "EXIT_TIMEOUT"]

#: Seconds the interpreter waits at exit for KThreads to finish after they
#: were asked to stop; threads still inside user code then are left behind
#: like daemon threads.
EXIT_TIMEOUT = 1.0

_COMM_BYTES = 15  # TASK_COMM_LEN - 1
_THREAD_NAME: Any = threading.Thread.__dict__["name"]  # the property KThread.name extends
_counter = itertools.count(1)  # next() only under _registry_lock
_registry_lock = threading.Lock()
# id -> weak reference of every KThread not yet collected.  A dict, not a
# WeakSet: each change is one dict operation and copy() is one atomic
# snapshot on every build, while a WeakSet's iteration guard is a
# check-then-act against removals from the collecting thread (iterating it
# at exit could raise "Set changed size during iteration").
_registry: "dict[int, weakref.ReferenceType[KThread]]" = {}


def _default_name() -> str:
    """The next "KThread-N" name; unique even when threads ask at once."""
    # Under the lock: no build documents next() on a shared itertools.count
    # as atomic, and the names must not depend on it.
    with _registry_lock:
        return f"KThread-{next(_counter)}"


def _register(k: "KThread") -> None:
    """Add `k` to the registry; it leaves it when collected.  Any thread."""
    key = id(k)
    pop = _registry.pop

    def forget(_ref: "weakref.ReferenceType[KThread]") -> None:
        # Runs while `k` is being freed, before its id can be reused, so it
        # removes exactly this entry.
        pop(key, None)

    _registry[key] = weakref.ref(k, forget)


def _registered() -> "list[KThread]":
    """Every registered KThread still alive as an object.  Any thread."""
    refs = _registry.copy()  # one atomic snapshot
    return [k for k in (r() for r in refs.values()) if k is not None]


def _comm_name(name: str) -> bytes:
    """The OS thread name: `name` cut to 15 bytes on a character boundary."""
    raw = name.encode("utf-8", "replace")[:_COMM_BYTES]
    return raw.decode("utf-8", "ignore").encode("utf-8")


def _call_run(k: "KThread") -> Any:
    """The threadfn of a subclass that overrides run()."""
    return k.run()


def _cpu_arg(cpu: object, what: str = "cpu") -> int:
    """The one type check of every CPU argument: an int, not a bool."""
    if isinstance(cpu, bool) or not isinstance(cpu, int):
        raise TypeError(f"{what} must be an int (a CPU number), got {type(cpu).__name__}")
    return cpu


def _allowed_cpus() -> frozenset[int]:
    """This process's allowed CPUs: the main thread's affinity.

    Any thread.  Every default, check and message of kpark that speaks of
    "allowed CPUs" means this set, whatever thread asks: a task pinned to
    one CPU (or any thread that narrowed its own affinity) still sees the
    process's CPUs.  The main thread's affinity is what `taskset -p PID`,
    cgroup cpusets and container CPU managers change; sched_getaffinity()
    of the process ID reads that thread's (its TID is the PID; in a fork
    child, the forking thread's, which is the child's main thread).
    """
    return frozenset(os.sched_getaffinity(os.getpid()))


def _check_cpu(cpu: object) -> int:
    """Validate a CPU number against this process's allowed CPUs."""
    cpu = _cpu_arg(cpu)
    if cpu < 0:
        raise ValueError(f"cpu must be non-negative, got {cpu}")
    allowed = _allowed_cpus()
    if cpu not in allowed:
        raise ValueError(f"CPU {cpu} is not in this process's allowed CPUs {sorted(allowed)}")
    return cpu


class KThread(threading.Thread):
    """A thread created asleep, woken, parked, unparked and stopped like a kthread.

    `KThread(threadfn, data, *, name=None)` is `kthread_create`: the OS thread
    exists when the constructor returns, asleep, but `threadfn(data)` is not
    called until the thread is first woken (`wake()`, `start()`, or `park()`
    + `unpark()`).  Any thread may construct one.  Raises TypeError for a
    `threadfn` that is not callable or a `name` that is not a str.  The
    thread is a daemon: at interpreter exit it is asked to stop and given
    EXIT_TIMEOUT seconds.
    """

    #: Who parks and stops this thread, if not its creator's code: set once,
    #: by a per-CPU pool for its own threads (_adopt).  park()/stop() by
    #: anyone else are refused; the owner calls _owner_park()/_owner_stop()
    #: (its hotplug loop calls the core's park() itself: the same, one frame less).
    _owner: Optional[str] = None
    _owner_hint = ""
    _owner_parks = True  # False: a selfparking pool leaves parking to its user

    def _adopt(self, owner: str, hint: str, parks: bool) -> None:
        """Make `owner` the thread's owner (`owner`, `hint`: for the refusal).

        Called once, by the owner (kpark.percpu), before anyone else holds
        the thread.  From then on park() (if `parks`) and stop() raise
        RuntimeError: the owner's own bookkeeping would no longer match what
        the thread does, and a pinned task could wait forever for it.
        """
        self._owner_parks = parks
        self._owner_hint = hint
        self._owner = owner

    def _refusal(self, what: str) -> str:
        return (f"cannot {what} {self.name!r}: {self._owner} owns its threads' "
                f"parking and stopping; use {self._owner_hint}")

    def __init__(self, threadfn: Optional[Callable[[Any], Any]] = None, data: Any = None, *,
                 name: Optional[str] = None) -> None:
        own_run = type(self).run is not KThread.run
        if own_run:
            # The threading idiom: a subclass's run() is its threadfn.
            if threadfn is not None:
                raise TypeError("pass threadfn or override run(), not both "
                                f"({type(self).__name__} overrides run())")
            threadfn = _call_run
        elif not callable(threadfn):
            raise TypeError(f"threadfn must be callable, got {type(threadfn).__name__}")
        if name is None:
            name = _default_name()
        elif not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        super().__init__(name=name, daemon=True)
        self._core = KCore()
        self._start_lock = threading.Lock()  # one start() at a time
        # Held by whoever acts on the OS thread by its TID, and by the thread
        # as its last act: while a holder sees _tid_live, the TID is this
        # thread's (it cannot have ended, so it cannot have been reused).
        self._tid_lock = threading.Lock()
        self._tid_live = True
        self._threadfn = threadfn
        self._data = data
        _register(self)
        # threading.Thread.start() runs self.run() in the new thread: point it
        # at the life cycle.  The new thread uncovers the subclass's run()
        # itself (_life), once it has looked run up: were the constructor to
        # do it, a constructor interrupted before that point would leave the
        # thread the class's run() to call, outside the life cycle.
        self.run = self._life  # type: ignore[method-assign]
        try:
            threading.Thread.start(self)  # the OS thread, straight into its first sleep
            self._core.wait_booted()
        except BaseException:
            # Interrupted (Ctrl-C, a raising signal handler) or no OS thread:
            # the caller gets no KThread, so none may run.  A thread that
            # exists (or is still starting) leaves its first sleep for this
            # stop without calling threadfn; one that never came to be is not
            # waited for at exit.  Neither step blocks.
            self._core.request_stop()
            _registry.pop(id(self), None)
            raise

    def run(self) -> None:
        """The thread function of a subclass that overrides it.

        A subclass may override run() instead of passing threadfn (as with
        threading.Thread): run() is then called once, with no argument, in
        the thread on its first wake (start(), wake(), or park() +
        unpark()), and its return value or exception is what stop() gives.
        KThread's own run() is never called by the thread; calling it
        raises RuntimeError.
        """
        raise RuntimeError("KThread.run() is the thread function of subclasses "
                           "that override it; start() the thread instead")

    def _life(self) -> None:
        # Runs in the new OS thread; the whole life cycle is in KCore.run.
        # threading has looked self.run up (it called this): uncover the
        # class's run() before the first sleep, which wait_booted() waits for.
        self.__dict__.pop("run", None)
        arg = self if self._threadfn is _call_run else self._data
        try:
            self._core.run(self, self._threadfn, arg, _comm_name(self.name))
        finally:
            with self._tid_lock:
                self._tid_live = False

    # -- what any thread may call --------------------------------------------

    def wake(self) -> bool:
        """wake_up_process: wake the thread from schedule() or its first sleep.

        Context: any thread, the KThread itself included; never blocks.
        The first wake starts threadfn.  A wake that finds the thread running
        is remembered (one token, not a count) and makes its next schedule()
        or idle() return at once.  A parked thread ignores it, except one
        parked in place by idle(), which keeps it for its unpark().  What the
        caller wrote before wake() is visible to the thread once it returns
        from the sleep this wake ends.

        Return: True if the thread was asleep and this call woke it; False
        otherwise (token left, parked, or exited).  Raises nothing.
        """
        return self._core.wake()

    def start(self) -> None:
        """Wake the thread and return once threadfn has been entered.

        Context: any thread but the KThread itself; blocks (without the GIL)
        until threadfn runs.

        Return: None.  Raises RuntimeError if the thread was started before,
        or was parked before threadfn ran (unpark() starts it then);
        ThreadExitedError if a stop came first.  Concurrent calls behave as
        if made one after the other: one starts the thread, the others raise
        what a second start() raises.
        """
        # KCore.start() checks STARTED, then wakes and waits: callers racing
        # between the check and the wake would all return, each leaving a
        # stray wake token.  The lock is held while waiting for threadfn to
        # be entered (never the GIL), so a later caller sees the outcome.
        with self._start_lock:
            self._core.start()

    def bind(self, cpu: int) -> None:
        """kthread_bind: pin the thread to `cpu`; only before the first wake.

        Context: any thread, before the thread's first wake; never blocks.
        The thread stays on `cpu` for its life; unlike create_on_cpu() it is
        not re-pinned on unpark().

        Return: None.  Raises TypeError for a `cpu` that is not an int,
        ValueError for a CPU not in this process's allowed CPUs (the main
        thread's affinity),
        RuntimeError once the thread has been woken, ThreadExitedError once
        it has exited (its old TID is never touched).
        """
        self._bind(_check_cpu(cpu), per_cpu=False)

    def _bind(self, cpu: int, per_cpu: bool) -> None:
        if not self._core.bind(cpu, per_cpu):
            raise RuntimeError("bind() must come before the thread is first woken")
        # Pin now, so the binding shows before anything runs; the thread pins
        # itself again from the word when it starts.
        with self._tid_lock:
            if not self._tid_live or self._core.exited:
                raise ThreadExitedError("the thread has exited")
            tid = self.native_id
            assert tid is not None  # set before the constructor returned
            os.sched_setaffinity(tid, {cpu})

    def park(self, timeout: Optional[float] = None) -> None:
        """kthread_park: ask the thread to park and wait until it is parked.

        Context: any thread.  From another thread: blocks (without the GIL)
        until the thread is asleep in its park loop (at once if it already
        is) or parked in place in idle(), where it runs nothing until
        released.  A thread that was never woken is woken straight into the
        park loop, without running threadfn.  The request stays until
        unpark() or stop().  From the thread itself: sets the request and
        returns at once; the thread parks at its next parkme().

        Return: None; early, unparked, if another thread's unpark() withdraws
        the request first.  Raises ThreadExitedError if the thread has exited
        or exits instead of parking; TimeoutError if it is not parked within
        `timeout` seconds (the request stays pending); ValueError for a
        negative or NaN `timeout`; RuntimeError for a thread whose owner
        parks it (a PerCPUThreads pool's or PerCPUExecutor's: their
        offline()/online() do), before anything is asked of it.
        """
        if self._owner is not None and self._owner_parks:
            raise RuntimeError(self._refusal("park"))
        self._core.park(timeout)

    def _owner_park(self, timeout: Optional[float] = None) -> None:
        """park() for the thread's owner (kpark.percpu): never refused."""
        self._core.park(timeout)

    def unpark(self) -> None:
        """kthread_unpark: release a parked thread or withdraw a park request.

        Context: any thread; never blocks.  No-op if the thread is neither
        parked nor asked to park.  A thread parked in place by idle() goes
        back to its idle sleep, unless a wake() came while it was parked
        (then idle() returns).  A per-CPU thread (create_on_cpu()) pins
        itself to its CPU again before it runs user code.  What the caller
        wrote before unpark() is visible to the thread when it leaves the
        park loop.

        Return: None.  Raises nothing; if the thread cannot pin itself back
        (its CPU is no longer allowed), the thread's parkme()/idle() raises
        OSError, not this call.
        """
        self._core.unpark()

    def stop(self, timeout: Optional[float] = None) -> Any:
        """kthread_stop: stop the thread and return threadfn's return value.

        Context: any thread but the KThread itself; blocks (without the GIL)
        until the thread has exited.  Sets should_stop (never cleared),
        withdraws parking, wakes the thread from any sleep, and waits.  A
        thread that was never woken exits without running threadfn.
        Calling it again gives the same outcome.

        Return: threadfn's return value; None if threadfn never ran.  Raises
        the exception threadfn raised (with its traceback); TimeoutError if
        the thread has not exited within `timeout` seconds (the stop request
        stays); RuntimeError when called by the thread itself, or for a
        thread whose owner stops it (a pool's: its close() does); ValueError
        for a negative or NaN `timeout`.
        """
        if self._owner is not None:
            raise RuntimeError(self._refusal("stop"))
        return self._owner_stop(timeout)

    def _owner_stop(self, timeout: Optional[float] = None) -> Any:
        """stop() for the thread's owner (kpark.percpu): never refused."""
        self._core.stop(timeout)
        threading.Thread.join(self)  # past threadfn already: returns at once
        exc = self._core.exc
        if exc is not None:
            raise exc.with_traceback(self._core.exc_tb)
        return self._core.result

    def join(self, timeout: Optional[float] = None) -> None:
        """Wait until the thread exits (threading.Thread.join semantics).

        Context: any thread but the KThread itself; blocks without the GIL.
        Does not ask the thread to stop (that is stop()).

        Return: None, also on timeout (is_alive() tells).  Raises
        RuntimeError when called by the thread itself.
        """
        if threading.current_thread() is self:
            raise RuntimeError("cannot join current thread")
        if self._core.join(timeout):
            threading.Thread.join(self)

    def is_alive(self) -> bool:
        """True until the thread has exited (never-woken and parked included).

        Context: any thread; never blocks.
        """
        return not self._core.exited

    # -- properties ------------------------------------------------------------

    @property
    def data(self) -> Any:
        """The `data` argument (kthread_data)."""
        return self._data

    @property
    def cpu(self) -> Optional[int]:
        """The CPU the thread is bound to, or None."""
        return self._core.cpu

    @property
    def is_per_cpu(self) -> bool:
        """True for threads made by create_on_cpu(): they re-pin on unpark."""
        return self._core.is_per_cpu

    @property
    def is_parked(self) -> bool:
        """True while the thread sits in its park loop."""
        return self._core.is_parked

    @property
    def should_park(self) -> bool:
        """True while a park request is pending or granted."""
        return self._core.should_park

    @property
    def should_stop(self) -> bool:
        """True once stop() was called."""
        return self._core.should_stop

    @property
    def started(self) -> bool:
        """True once threadfn has been entered."""
        return self._core.started

    @property
    def name(self) -> str:
        """The thread's name; setting it renames the OS thread too."""
        return str(_THREAD_NAME.fget(self))

    @name.setter
    def name(self, value: str) -> None:
        # Checked before anything is renamed (the constructor's rule).
        if not isinstance(value, str):
            raise TypeError(f"name must be a str, got {type(value).__name__}")
        _THREAD_NAME.fset(self, value)
        with self._tid_lock:  # an exited thread's TID is not ours to rename
            tid = self.native_id
            if tid is None or not self._tid_live or self._core.exited:
                return
            try:
                with open(f"/proc/self/task/{tid}/comm", "wb") as f:
                    f.write(_comm_name(value))
            except OSError:
                pass  # no writable /proc: the Python name is the rename

    def __repr__(self) -> str:
        core = self._core
        state = ("exited" if core.exited else "parked" if core.is_parked
                 else "started" if core.started else "initial")
        return f"<KThread({self.name}, {state}, native_id={self.native_id})>"


def create_on_cpu(threadfn: Callable[[Any], Any], data: Any, cpu: int,
                  namefmt: str = "kpark/%u") -> KThread:
    """kthread_create_on_cpu: a per-CPU KThread, bound to `cpu` and parked.

    Context: any thread; blocks until the new thread is parked.  threadfn has
    not run when this returns; `unpark()` starts it on `cpu`, and every later
    unpark() pins the thread to `cpu` again before it runs user code.  `%u`
    (or any %-conversion) in namefmt is filled with the CPU.

    Return: the parked KThread.  Raises TypeError for a `cpu` that is not an
    int or a `namefmt` that is not a str, ValueError for a CPU not in this
    process's allowed CPUs (the main thread's affinity, whatever thread
    calls).
    """
    cpu = _check_cpu(cpu)
    if not isinstance(namefmt, str):
        raise TypeError(f"namefmt must be a str, got {type(namefmt).__name__}")
    name = namefmt % (cpu,) if "%" in namefmt else namefmt
    k = KThread(threadfn, data, name=name)
    try:
        k._bind(cpu, per_cpu=True)
        k.park()
    except BaseException:
        k.stop()
        raise
    return k


def _after_fork_in_child() -> None:
    # The OS threads did not survive fork(); their words still say they did.
    global _registry_lock
    _registry_lock = threading.Lock()
    for k in _registered():
        k._core.mark_exited_after_fork()
        k._start_lock = threading.Lock()  # a start() in flight at fork held it
        k._tid_lock = threading.Lock()
        k._tid_live = False
    _registry.clear()


def _stop_all_at_exit() -> None:
    # Runs from threading's shutdown, before it joins non-daemon threads.
    live = [k for k in _registered() if not k._core.exited]
    for k in live:
        try:
            k._core.request_stop()
        except RuntimeError:
            pass  # exit called from inside a KThread: it cannot stop itself
    deadline = _monotonic() + EXIT_TIMEOUT
    for k in live:
        k._core.join(max(0.0, deadline - _monotonic()))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
threading._register_atexit(_stop_all_at_exit)  # type: ignore[attr-defined]
