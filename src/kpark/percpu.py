"""kpark.PerCPUThreads: per-CPU hotplug threads, the kernel's smpboot model.

kernel/smpboot.c keeps one thread per CPU for each registered
`smp_hotplug_thread`; when a CPU goes down its thread is parked, when it
comes back the thread is unparked, and nothing is torn down.  This module is
that model over kpark's public KThread API: `create_on_cpu` makes each
thread bound and parked, `park`/`unpark` are the hotplug, `stop` the
unregistration, and every thread runs the smpboot loop (`_smpboot_fn`).

Locks: `_lock` serialises hotplug and close (the kernel's
smpboot_threads_lock) and may be held while waiting for a thread to park;
`_state_lock` only guards updates of `_online`/`_parking` and the error
list and is never held while waiting, so a pool thread may take it;
`_INTENT_LOCK` pairs each thread's `_Slot.parking` with its park requests.

Hotplug is exception-safe by one state rule: the pool records what it wants
before it acts.  offline() takes a CPU out of `online_cpus` and into
`_parking` (and marks its threads' slots) before it asks them to park, and
moves it out of `_parking` once they are parked; online() keeps it in
`_parking` while it unparks the threads and lists it online after.  An
offline() interrupted while it waits (KeyboardInterrupt, an exception from
a signal handler) so leaves the CPU offline with its park pending, which is
what its threads are about to do: a retried offline() waits for that park,
online() withdraws it.  close() stops the threads one
by one and counts them, so a retried close() goes on where it was stopped.
A park request the pool did not make (a thread parking itself from
thread_fn) is withdrawn by the thread and reported as an error.

This class is the one owner of hotplug: offline/online/follow_affinity and
close, their locking, caller checks and error reporting live here only.  An
owner with per-CPU state of its own (PerCPUExecutor's queues) subclasses it
and implements the hotplug hooks (`_veto_offline`, `_going_offline`,
`_gone_offline`, `_came_online`, `_closing`); every change of which CPUs are
online goes through `_hotplug_locked` (or `_repin_failed`), which calls them.

Lifetime: the pool's threads and its affinity watcher hold `_handle`, a
second instance of the pool's class sharing the pool's __dict__
(`_thread_handle`), never the object the user holds, so that object can be
collected while they run; its weakref finalizer then has the janitor
(kpark._janitor) ask them to stop.  In a fork child every inherited pool
counts as closed (`_forked`): its threads did not survive fork().
"""
from __future__ import annotations

import os
import threading
import weakref
from typing import Callable, Iterable, List, Optional, Tuple, TypeVar, Union

from kpark import _janitor
from kpark._kcore import current, idle, parkme, schedule, should_park, should_stop
from kpark.thread import KThread, _allowed_cpus, _cpu_arg, create_on_cpu

__all__ = ["PerCPUThreads", "CPUs", "available_cpus", "parse_cpu_list", "MAX_ERRORS"]

#: One CPU number or an iterable of them, as offline()/online() accept.
CPUs = Union[int, Iterable[int]]

#: Callback errors kept per pool; later ones are counted, not kept, so a
#: thread_fn that fails on every call cannot grow memory without bound.
MAX_ERRORS = 100

_SYS_ONLINE = "/sys/devices/system/cpu/online"

# smpboot_thread_data.status
_NONE = 0      # HP_THREAD_NONE: setup has not run yet
_ACTIVE = 1    # HP_THREAD_ACTIVE
_PARKED = 2    # HP_THREAD_PARKED: parked after being active


def parse_cpu_list(text: str) -> frozenset[int]:
    """Parse the kernel's CPU list format ("0-3,5,7-8") into a set of CPUs.

    Pure function, any caller.  ValueError for malformed text.
    """
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if sep:
            first, last = int(lo), int(hi)
            if last < first:
                raise ValueError(f"bad CPU range {part!r}")
            cpus.update(range(first, last + 1))
        else:
            cpus.add(int(lo))
    return frozenset(cpus)


def available_cpus() -> frozenset[int]:
    """The CPUs the process may use now: its allowed CPUs ∩ online CPUs.

    Any caller.  The allowed CPUs are the main thread's affinity
    (kpark.thread._allowed_cpus), what `taskset -p PID`, cgroup cpusets and
    container CPU managers change; /sys/devices/system/cpu/online is real
    CPU hotplug (ignored if unreadable).
    """
    allowed = _allowed_cpus()
    try:
        with open(_SYS_ONLINE) as f:
            online = parse_cpu_list(f.read())
    except (OSError, ValueError):
        return allowed
    return allowed & online if online else allowed


def _normalize_cpus(cpus: Optional[CPUs]) -> List[int]:
    """The constructor's `cpus`: sorted, unique ints; default: this process's allowed CPUs."""
    if cpus is None:
        return sorted(_allowed_cpus())
    seq = _as_list(cpus)
    for cpu in seq:
        if cpu < 0:
            raise ValueError(f"cpu must be non-negative, got {cpu}")
    if not seq:
        raise ValueError("cpus must name at least one CPU")
    return sorted(set(seq))


def _as_list(cpus: CPUs) -> List[int]:
    """One CPU or an iterable of CPUs as a list; TypeError for non-ints."""
    if isinstance(cpus, int):
        return [_cpu_arg(cpus, "cpus")]  # bool refused there
    if isinstance(cpus, (str, bytes)) or not isinstance(cpus, Iterable):
        raise TypeError("cpus must be an int (a CPU number) or an iterable of ints, "
                        f"got {type(cpus).__name__}")
    return [_cpu_arg(cpu, "cpus") for cpu in cpus]


class _Slot:
    """Per-thread bookkeeping (the kernel's smpboot_thread_data)."""
    __slots__ = ("cpu", "index", "status", "parking")

    def __init__(self, cpu: int, index: int) -> None:
        self.cpu = cpu
        self.index = index   # the thread's number in the pool, 0 up
        self.status = _NONE  # written only by the slot's own thread
        # True while the pool wants the thread parked; written under
        # _INTENT_LOCK, before the pool's park request and with its unpark.
        self.parking = False


#: Pairs `_Slot.parking` with park requests: the pool sets it before it asks
#: a thread to park and clears it together with the unpark; a thread that
#: finds a park request while (under this lock) its slot says the pool wants
#: it running knows the request is not the pool's.  Never held while waiting.
_INTENT_LOCK = threading.Lock()

_FOREIGN_PARK = ("a per-CPU pool's thread was asked to park by someone other than its pool "
                 "(a callback or task parking its own thread?); the pool owns its threads' "
                 "parking: use offline()/online().  The request was withdrawn")


def _withdraw_foreign_park(k: KThread, slot: _Slot) -> bool:
    """In pool thread `k` (its own caller): withdraw a park request the pool
    did not make; True if there was one.  Never blocks for long."""
    with _INTENT_LOCK:
        if slot.parking or not k.should_park:
            return False  # the pool's own request, or none left
        k.unpark()  # from itself: clears the request
        return True


def _refuse_own_park() -> None:
    """After user code ran in a pool thread that now has a park request:
    RuntimeError if the pool did not make it (the request is withdrawn).

    Called by the executor's task runner, in the worker, so that the task
    that parked its own worker fails instead of the worker hanging parked.
    """
    k = current()
    slot = k.data if k is not None else None
    if isinstance(slot, _Slot) and not slot.parking and _withdraw_foreign_park(k, slot):
        raise RuntimeError(_FOREIGN_PARK)


def _spread(cpus: List[int], nthreads: Optional[int]) -> List[int]:
    """The CPU of each thread: `nthreads` (default one per CPU) round robin over `cpus`."""
    if nthreads is None:
        return list(cpus)
    if isinstance(nthreads, bool) or not isinstance(nthreads, int):
        raise TypeError(f"nthreads must be an int, got {type(nthreads).__name__}")
    if nthreads <= 0:
        raise ValueError("nthreads must be greater than 0")
    return [cpus[i % len(cpus)] for i in range(nthreads)]


class _AffinityWatcher:
    """A KThread that calls `sync()` every `interval` seconds until stopped."""

    def __init__(self, sync: Callable[[], None], interval: float, name: str,
                 on_error: Callable[[BaseException], None]) -> None:
        self.interval = interval
        self._sync = sync
        self._on_error = on_error
        self.thread = KThread(self._run, name=name)
        self.thread.start()

    def _run(self, _: object) -> None:
        # schedule(timeout) is the sleep, so stop() ends it at once.
        while True:
            schedule(self.interval)
            if should_stop():
                return
            try:
                self._sync()
            except BaseException as exc:  # keep watching; the pool reports it
                self._on_error(exc)

    def stop(self) -> None:
        """Stop watching and wait for the watcher thread to exit (not from itself)."""
        self.thread.stop()


_H = TypeVar("_H")

# id -> weak reference of every pool's handle not yet collected: the pools a
# fork child inherits (thread.py's registry explains the dict).
_pools: "dict[int, weakref.ReferenceType[PerCPUThreads]]" = {}


def _thread_handle(obj: _H) -> _H:
    """A second instance of `obj`'s class sharing `obj`'s __dict__ (the Borg idiom).

    Any thread.  What `obj`'s own threads are given to call, so that they
    see and change the same state without referring to `obj` itself: the
    object users hold stays collectable while its threads run.  Returns the
    new instance; its __init__ is not called.
    """
    handle = object.__new__(type(obj))
    # A fresh combined dict for both: CPython 3.11's attribute caches are
    # much slower on the split dict that obj.__dict__ would materialize.
    state = dict(obj.__dict__)
    obj.__dict__ = state
    handle.__dict__ = state
    return handle


def _register_pool(handle: "PerCPUThreads") -> None:
    key = id(handle)
    pop = _pools.pop

    def forget(_ref: "weakref.ReferenceType[PerCPUThreads]") -> None:
        pop(key, None)  # runs before the id can be reused

    _pools[key] = weakref.ref(handle, forget)


def _check_interval(interval: float) -> float:
    if isinstance(interval, bool) or not isinstance(interval, (int, float)):
        raise TypeError(f"interval must be a number, got {type(interval).__name__}")
    if not interval > 0:
        raise ValueError(f"interval must be positive, got {interval}")
    return float(interval)


class PerCPUThreads:
    """One parked-or-running KThread per CPU: smpboot_register_percpu_thread.

    Each thread runs the smpboot loop; `offline(cpu)` parks a CPU's thread,
    `online(cpu)` unparks it, `close()` stops them all.  Callbacks get the
    CPU number; all but `create` run in that CPU's thread, pinned to it.
    """

    #: Subclasses without park/unpark callbacks whose every change of
    #: thread_should_run is followed by wake(cpu) may set this: an idle
    #: thread then sleeps in kpark._kcore.idle(), so offline() parks it
    #: where it sleeps and online() leaves it asleep (no wake-up either way;
    #: thread_should_run is not re-checked after online() unless a wake()
    #: came while the CPU was offline).  PerCPUExecutor's workers do.
    _park_idle_in_place = False

    #: False for a pool owned by another object (PerCPUExecutor's): its
    #: threads then hold the pool itself (faster attribute access), and the
    #: owner is what becomes unreachable and closes it.
    _user_owned = True

    def __init__(self, thread_fn: Callable[[int], object],
                 thread_should_run: Callable[[int], object], *,
                 setup: Optional[Callable[[int], object]] = None,
                 cleanup: Optional[Callable[[int, bool], object]] = None,
                 park: Optional[Callable[[int], object]] = None,
                 unpark: Optional[Callable[[int], object]] = None,
                 create: Optional[Callable[[int], object]] = None,
                 selfparking: bool = False, thread_comm: str = "kpark/%u",
                 cpus: Optional[CPUs] = None, nthreads: Optional[int] = None) -> None:
        """Create, bind and park one thread per CPU, then unpark them.

        `nthreads` (default: one per CPU) spreads that many threads over the
        CPUs in order (thread i on the i-th CPU modulo their count); every
        callback then runs once per thread, and hotplug acts on all threads
        of a CPU.  All or nothing: if creating a thread or `create(cpu)`
        fails, every thread made so far is stopped and the error is raised.
        With `selfparking` the threads stay parked: their owner unparks them.
        """
        for label, fn in (("thread_fn", thread_fn), ("thread_should_run", thread_should_run)):
            if not callable(fn):
                raise TypeError(f"{label} must be callable, got {type(fn).__name__}")
        for label, opt in (("setup", setup), ("cleanup", cleanup), ("park", park),
                           ("unpark", unpark), ("create", create)):
            if opt is not None and not callable(opt):
                raise TypeError(f"{label} must be callable or None, got {type(opt).__name__}")
        if not isinstance(thread_comm, str):
            raise TypeError(f"thread_comm must be a str, got {type(thread_comm).__name__}")
        cpu_list = _normalize_cpus(cpus)
        placement = _spread(cpu_list, nthreads)
        if len(placement) < len(cpu_list):
            # Every CPU of the pool has a thread: hotplug, wake() and thread()
            # take any of its CPUs.
            raise ValueError(f"nthreads must be at least the number of CPUs "
                             f"({len(cpu_list)}), got {nthreads}")
        self._thread_comm = thread_comm
        self._thread_fn = thread_fn
        self._thread_should_run = thread_should_run
        self._setup = setup
        self._cleanup = cleanup
        self._park_cb = park
        self._unpark_cb = unpark
        self._selfparking = bool(selfparking)
        self._cpus: Tuple[int, ...] = tuple(cpu_list)
        self._cpuset = frozenset(cpu_list)
        self._kthreads: dict[int, Tuple[KThread, ...]] = {}
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._online: frozenset[int] = frozenset()
        self._errors: List[Tuple[Optional[int], BaseException]] = []
        self._dropped = 0
        self._reported = 0
        self._closed = False
        self._auto_offline: set[int] = set()
        self._watcher: Optional[_AffinityWatcher] = None
        # Serialises replacing the watcher: two follow_affinity() calls (or
        # one and close()) could otherwise each start one and lose the other.
        self._watch_lock = threading.Lock()
        # What the threads hold instead of self (module docstring, Lifetime).
        handle = self._handle = _thread_handle(self) if self._user_owned else self
        _janitor.enroll()
        made: List[KThread] = []
        try:
            for index, cpu in enumerate(placement):
                slot = _Slot(cpu, index)
                # create_on_cpu fills namefmt with the CPU; this name is
                # final, so escape it and give the CPU an empty conversion.
                name = self._thread_name(cpu, index).replace("%", "%%") + "%.0s"
                k = create_on_cpu(handle._smpboot_fn, slot, cpu, name)
                made.append(k)
                self._kthreads[cpu] = self._kthreads.get(cpu, ()) + (k,)
                if create is not None:
                    # create_on_cpu returns it parked; the callback may rely
                    # on the thread being off the CPU (as the kernel's does).
                    if not k.is_parked:
                        k.park()
                    create(cpu)
        except BaseException:
            for k in made:
                try:
                    k.stop()
                except BaseException:
                    pass  # threadfn never ran: nothing of the user's to report
            _janitor.discharge()
            raise
        self._threads = frozenset(made)
        self._all_threads: Tuple[KThread, ...] = tuple(made)  # by thread index
        for k in made:  # from now on only the pool parks and stops them
            k._adopt(self._owner_name, self._owner_hint, parks=not self._selfparking)
        # Hotplug's hot path: each CPU's (thread, slot) pairs (no `data`
        # property call per thread and cycle).
        self._hotplug_threads = {cpu: tuple([(k, k.data) for k in ks])
                                 for cpu, ks in self._kthreads.items()}
        self._online = frozenset(cpu_list)
        # Unreachable without close(): the threads are asked to stop, as by
        # close(), without anyone waiting for them.  Not at exit: exit stops
        # every KThread itself.
        self._finalizer = weakref.finalize(self, _janitor.release_later, handle._released)
        self._finalizer.atexit = False
        _register_pool(handle)
        if not self._selfparking:
            for k in made:
                k.unpark()

    def _thread_callbacks(self, index: int) -> Tuple[Callable[[int], object],
                                                     Callable[[int], object]]:
        """Hook: (thread_fn, thread_should_run) for thread `index`; called in
        that thread when it starts.  Default: the constructor's two."""
        return self._thread_fn, self._thread_should_run

    def _thread_name(self, cpu: int, index: int) -> str:
        """Hook: the name of thread `index` (0 up), on `cpu`; called by the constructor.

        Default: thread_comm with its %-conversion filled with the CPU.
        """
        comm = self._thread_comm
        return comm % (cpu,) if "%" in comm else comm

    # -- the loop each thread runs (smpboot_thread_fn) ------------------------

    def _smpboot_fn(self, slot: _Slot) -> None:
        """The smpboot loop; runs in the CPU's KThread until it is stopped."""
        cpu = slot.cpu
        thread_fn, should_run = self._thread_callbacks(slot.index)
        while True:
            # Module globals looked up each time: tests substitute them.
            if should_stop():
                # cleanup mirrors setup: only a thread that got past setup.
                if self._cleanup is not None and slot.status != _NONE:
                    self._call(cpu, self._cleanup, cpu, cpu in self._online)
                return
            if should_park():
                if (not slot.parking and not self._selfparking
                        and _withdraw_foreign_park(current(), slot)):
                    self._record(cpu, RuntimeError(_FOREIGN_PARK))
                    continue
                if slot.status == _ACTIVE:
                    if self._park_cb is not None:
                        self._call(cpu, self._park_cb, cpu)
                    slot.status = _PARKED
                try:
                    parkme()
                except OSError as exc:
                    self._repin_failed(slot, exc)
                continue  # we may have been released by stop()
            if slot.status == _NONE:
                if self._setup is not None:
                    self._call(cpu, self._setup, cpu)
                slot.status = _ACTIVE
                continue
            if slot.status == _PARKED:
                if self._unpark_cb is not None:
                    self._call(cpu, self._unpark_cb, cpu)
                slot.status = _ACTIVE
                continue
            try:
                # bool() inside the try: a result's own truth test (a numpy
                # array's, say) is user code too, and may raise.
                run = bool(should_run(cpu))
            except BaseException as exc:
                self._record(cpu, exc)
                run = False  # sleep rather than spin on a failing check
            if run:
                try:
                    thread_fn(cpu)
                except BaseException as exc:
                    self._record(cpu, exc)
            elif self._park_idle_in_place:
                # As schedule(), and offline() parks us right here.
                try:
                    idle()
                except OSError as exc:  # re-pin after such a park failed
                    self._repin_failed(slot, exc)
            else:
                # A wake() after the check left a token: this returns at once.
                schedule()

    def _call(self, cpu: int, fn: Callable[..., object], *args: object) -> None:
        try:
            fn(*args)
        except BaseException as exc:
            self._record(cpu, exc)

    def _repin_failed(self, slot: _Slot, exc: OSError) -> None:
        # Unparked, but its CPU is no longer allowed: rather than run user
        # code on the wrong CPU, park again and count the CPU as offline
        # until the next online() (which retries the pinning).
        cpu = slot.cpu
        self._record(cpu, exc)
        with self._state_lock:
            was_online = cpu in self._online
            self._online = self._online - {cpu}
        k = current()
        if k is not None:
            with _INTENT_LOCK:
                slot.parking = True  # the pool's own park: not refused
                k._owner_park()  # from itself: only sets should_park
        if was_online:
            # The hooks' one call without _lock: we may not wait for it here.
            self._going_offline([cpu])
            self._gone_offline([cpu])

    # -- hooks for a subclass that keeps per-CPU state ------------------------
    #
    # Called with _lock held (one hotplug at a time, never from a pool
    # thread), except that a thread whose re-pinning failed reports its CPU
    # through _going_offline + _gone_offline from itself, without _lock.
    # CPU lists are those whose state changes, parking order for offline.

    def _veto_offline(self, cpus: List[int], remaining: frozenset[int]) -> Optional[str]:
        """Hook: a reason not to take `cpus` offline (leaving `remaining`), or None.

        offline() raises RuntimeError(reason) unless force=True;
        follow_affinity() keeps the lowest CPUs online until there is none.
        """
        return None

    def _going_offline(self, cpus: List[int]) -> None:
        """Hook: `cpus` are about to be parked (their threads still run)."""

    def _gone_offline(self, cpus: List[int]) -> None:
        """Hook: the threads of `cpus` are parked; online_cpus no longer lists them."""

    def _came_online(self, cpus: List[int]) -> None:
        """Hook: `cpus` are online again (unparked), or their parking failed."""

    def _closing(self) -> None:
        """Hook: close() is about to stop the threads; hotplug still works.

        Runs under _lock, so it may call _hotplug_locked.  If it raises,
        close() raises that and the pool stays open (a later close() retries).
        """

    # -- errors ---------------------------------------------------------------

    def _record(self, cpu: Optional[int], exc: BaseException) -> None:
        with self._state_lock:
            if len(self._errors) < MAX_ERRORS:
                self._errors.append((cpu, exc))
            else:
                self._dropped += 1

    def _report(self) -> None:
        """Raise the oldest error not yet raised by offline()/online(), if any."""
        if self._reported >= len(self._errors):
            return  # an error recorded just now is reported by the next call
        with self._state_lock:
            if self._reported >= len(self._errors):
                return
            exc = self._errors[self._reported][1]
            self._reported = len(self._errors)
        raise exc

    @property
    def errors(self) -> List[Tuple[Optional[int], BaseException]]:
        """Every recorded callback error as (cpu, exception), oldest first.

        Any thread.  cpu is None for errors of the affinity watcher.  At most
        MAX_ERRORS are kept; `dropped_errors` counts the rest.
        """
        with self._state_lock:
            return list(self._errors)

    @property
    def dropped_errors(self) -> int:
        """How many errors came after MAX_ERRORS and were counted, not kept."""
        return self._dropped

    # -- queries --------------------------------------------------------------

    @property
    def cpus(self) -> Tuple[int, ...]:
        """The pool's CPUs, ascending (one thread each, online or not)."""
        return self._cpus

    @property
    def online_cpus(self) -> frozenset[int]:
        """The CPUs whose threads the pool keeps running; empty once closed.

        offline() drops a CPU before it asks the CPU's threads to park (they
        finish their running callback first); online() adds it back once it
        has unparked them.
        """
        return self._online

    @property
    def selfparking(self) -> bool:
        """True if the pool leaves parking and unparking to the threads' owner."""
        return self._selfparking

    @property
    def closed(self) -> bool:
        """True once close() has stopped every thread."""
        return self._closed

    def thread(self, cpu: int) -> KThread:
        """The (first) KThread of `cpu`.  Any thread; ValueError for an unknown CPU."""
        return self._kthreads[self._known(cpu)][0]

    def threads_of(self, cpu: int) -> Tuple[KThread, ...]:
        """Every KThread of `cpu`, in creation order.  Any thread; ValueError for an unknown CPU."""
        return self._kthreads[self._known(cpu)]

    def _known(self, cpu: object) -> int:
        cpu = _cpu_arg(cpu)
        if cpu not in self._cpuset:
            raise ValueError(f"CPU {cpu} is not one of this pool's CPUs {list(self._cpus)}")
        return cpu

    def _cpu_list(self, cpus: CPUs) -> List[int]:
        """Validated CPUs, ascending and unique (ValueError names an unknown one)."""
        slots = self._cpuset
        # Fast path (hotplug is a hot path): plain ints this pool knows.
        if type(cpus) is int:
            if cpus in slots:
                return [cpus]
        elif type(cpus) is list or type(cpus) is tuple:
            prev = -1
            for c in cpus:
                if type(c) is not int or c not in slots or c <= prev:
                    break
                prev = c
            else:  # already ascending and unique: a copy, no sort
                return list(cpus)
        return sorted({self._known(c) for c in _as_list(cpus)})

    def _is_own_thread(self) -> bool:
        return current() in self._threads  # None (not a KThread) is not in it

    def _check_caller(self, what: str) -> None:
        # A pool thread waiting for itself (or for a sibling that waits for
        # the lock it holds) would deadlock; refuse instead.
        if current() in self._threads:
            raise RuntimeError(f"{what}() cannot be called from one of the pool's own threads")

    # -- wake and hotplug -----------------------------------------------------

    def wake(self, cpu: int) -> bool:
        """Make `cpu`'s threads re-check thread_should_run.

        Any thread, never blocks.  True if a thread was asleep and this
        woke it; a running thread re-checks before it next sleeps; a parked
        one checks when it is unparked.
        """
        # type() is int: a float or bool equal to a CPU would find it.
        ks = self._kthreads.get(cpu) if type(cpu) is int else None
        if ks is None:
            ks = self._kthreads[self._known(cpu)]
        if len(ks) == 1:
            return ks[0].wake()
        woke = False
        for k in ks:
            woke = k.wake() or woke
        return woke

    def offline(self, cpus: CPUs, *, force: bool = False) -> None:
        """Park the threads of `cpus` (one CPU or an iterable); return once parked.

        Any thread but the pool's own.  Parks in descending CPU order; CPUs
        already offline are skipped, but a park an interrupted offline()
        left pending is waited for.  RuntimeError if a subclass vetoes it
        (`_veto_offline`) and `force` is false.  Then re-raises the oldest
        callback error not yet reported, if any.  RuntimeError once closed.
        If the wait is interrupted (an exception from a signal handler),
        that propagates and the CPUs stay offline with their park pending.
        """
        targets = self._cpu_list(cpus)
        self._check_caller("offline")
        with self._lock:
            if self._closed or self._stopping:
                self._check_open()  # raises
            if self._auto_offline:
                self._auto_offline.difference_update(targets)
            self._hotplug_locked(targets, up=False, force=force)
        if self._reported < len(self._errors):
            self._report()

    def online(self, cpus: CPUs) -> None:
        """Unpark the threads of `cpus` (one CPU or an iterable); never waits.

        Any thread but the pool's own.  Unparks in ascending CPU order; CPUs
        already online are skipped; a park an interrupted offline() left
        pending is withdrawn.  Then re-raises the oldest callback error not
        yet reported, if any.  RuntimeError once closed.
        """
        targets = self._cpu_list(cpus)
        self._check_caller("online")
        with self._lock:
            if self._closed or self._stopping:
                self._check_open()  # raises
            if self._auto_offline:
                self._auto_offline.difference_update(targets)
            self._hotplug_locked(targets, up=True)
        if self._reported < len(self._errors):
            self._report()

    #: The RuntimeError's message once closed (subclasses say what they are).
    _closed_message = "the per-CPU pool is closed"

    #: Who the threads' park()/stop() refusal names, and what to use instead.
    _owner_name = "their PerCPUThreads pool"
    _owner_hint = "the pool's offline()/online()/close()"

    #: CPUs offline() took out of online_cpus whose threads it has not seen
    #: parked yet (an interrupted offline() leaves them; frozen, replaced
    #: under _state_lock).
    _parking: frozenset[int] = frozenset()
    #: close() has begun stopping the threads (hotplug is refused from then
    #: on); `_stopped` of them, in close()'s order, have exited.
    _stopping = False
    _stopped = 0

    def _check_open(self) -> None:
        if self._closed or self._stopping:
            raise RuntimeError(self._closed_message)

    def _hotplug_locked(self, targets: List[int], up: bool, force: bool = True) -> None:
        """Bring ascending `targets` up (in order) or down (in reverse); hold _lock.

        The one place where CPUs change state (with _repin_failed), so the
        hooks see every change.  The state is recorded before the threads
        are asked, so an exception while waiting for them (an interrupt)
        leaves CPUs offline with their park pending (`_parking`): taking
        them down again waits for those parks, bringing them up withdraws them.
        """
        kthreads = None if self._selfparking else self._hotplug_threads
        online = self._online
        if up:
            todo = (targets if online.isdisjoint(targets)
                    else [cpu for cpu in targets if cpu not in online])
            if not todo:
                return
            with self._state_lock:  # unpark() never blocks
                # Parking until all are unparked: an exception in between
                # leaves a state offline() or online() resolves.
                self._parking = self._parking.union(todo)
                if kthreads is not None:
                    # The slot and the unpark together: a thread that sees its
                    # old request withdrawn never takes it for a stray one.
                    with _INTENT_LOCK:
                        for cpu in todo:
                            for k, slot in kthreads[cpu]:
                                slot.parking = False
                                k.unpark()
                self._online = self._online.union(todo)
                self._parking = self._parking.difference(todo)
            self._came_online(todo)
            return
        todo = (targets[::-1] if online.issuperset(targets)
                else [cpu for cpu in reversed(targets) if cpu in online])
        if todo and not force:
            reason = self._veto_offline(todo, online.difference(todo))
            if reason is not None:
                raise RuntimeError(reason)
        pending = self._parking
        if pending:  # left by an interrupted offline(): finish those parks too
            todo = sorted(set(todo).union(c for c in targets if c in pending), reverse=True)
        if not todo:
            return
        with self._state_lock:
            self._online = self._online.difference(todo)
            self._parking = self._parking.union(todo)
            if kthreads is not None:
                with _INTENT_LOCK:
                    for cpu in todo:
                        for _, slot in kthreads[cpu]:
                            slot.parking = True  # before the request: the pool's
        self._going_offline(todo)
        parked: List[int] = []
        try:
            for cpu in todo:
                if kthreads is not None:
                    for k, _ in kthreads[cpu]:
                        # The core's park(): the owner's, never refused.
                        core = k._core
                        core.park()
                        # park() also returns when an unpark() withdrew the
                        # request: not the pool's wish, so ask again.
                        while not core.is_parked:
                            core.park()
                parked.append(cpu)
        finally:
            # Whatever stopped us, the CPUs not parked yet stay in _parking.
            if parked:
                with self._state_lock:
                    self._parking = self._parking.difference(parked)
                self._gone_offline(parked)

    # -- following the machine's CPUs ----------------------------------------

    def follow_affinity(self, interval: Optional[float] = 1.0) -> None:
        """Park/unpark threads as the process's allowed and online CPUs change.

        Any thread but the pool's own.  Syncs once now, then every `interval`
        seconds in a watcher thread; `None` stops watching.  Only CPUs the
        watcher parked are brought back; offline()/online() by hand win.
        """
        # Arguments and caller first: a refused call leaves the running
        # watcher as it was.
        if interval is not None:
            interval = _check_interval(interval)
        self._check_caller("follow_affinity")
        with self._watch_lock:
            self._stop_watcher()
            if interval is None:
                return
            self._check_open()
            self._sync_affinity()
            handle = self._handle  # not self: the watcher must not keep the pool alive
            self._watcher = _AffinityWatcher(handle._sync_affinity, interval,
                                             "kpark-affinity", handle._watch_error)

    def _watch_error(self, exc: BaseException) -> None:
        self._record(None, exc)

    def _stop_watcher(self) -> None:
        w, self._watcher = self._watcher, None
        if w is not None and w.thread is not current():
            w.stop()

    def _sync_affinity(self) -> None:
        avail = available_cpus()
        with self._lock:
            if self._closed or self._stopping:
                return
            back = sorted(self._auto_offline & avail)
            self._hotplug_locked(back, up=True)
            self._auto_offline.difference_update(back)
            drop = sorted(c for c in self._online if c not in avail)
            # A vetoed drop keeps the lowest CPUs: better a CPU the process
            # lost than work with nowhere to run.
            while drop and self._veto_offline(drop, self._online.difference(drop)) is not None:
                drop.pop(0)
            # Recorded first: an interrupted drop is still ours to bring back.
            self._auto_offline.update(drop)
            self._hotplug_locked(drop, up=False)

    # -- teardown -------------------------------------------------------------

    def close(self) -> None:
        """Stop every thread, parked ones included (smpboot_unregister).

        Any thread but the pool's own; idempotent.  Each thread that got past
        setup runs cleanup(cpu, online) first.  Then re-raises the first
        callback error the pool ever recorded, on every call.  An exception
        that interrupts the wait (KeyboardInterrupt) propagates at once and
        is not recorded; the pool refuses hotplug from then on, and the next
        close() goes on stopping the threads where this one was stopped.
        """
        self._check_caller("close")
        with self._watch_lock:
            self._stop_watcher()
        with self._lock:
            if not self._closed:
                if not self._stopping:
                    self._closing()  # may raise: the pool stays open
                    self._stopping = True
                self._stop_threads()
                with self._state_lock:
                    self._online = frozenset()
                    self._parking = frozenset()
                self._closed = True
        if self._closed and self._finalizer.detach() is not None:
            _janitor.discharge()  # closed: nothing left to release (once: detach)
        with self._watch_lock:
            self._stop_watcher()  # one follow_affinity() started before we closed
        with self._state_lock:
            if not self._errors:
                return
            self._reported = len(self._errors)
            first = self._errors[0][1]
        raise first

    def _stop_threads(self) -> None:
        """Stop the threads not stopped yet, CPU by CPU; hold _lock."""
        order = [k for cpu in self._cpus for k in self._kthreads[cpu]]
        while self._stopped < len(order):
            k = order[self._stopped]
            try:
                k._owner_stop()
            except BaseException as exc:
                if k.is_alive():
                    raise  # our wait was interrupted: the caller's, not the thread's
                self._record(k.data.cpu, exc)  # the loop itself failed
            self._stopped += 1

    # -- lifetime -------------------------------------------------------------

    def _released(self) -> None:
        """The janitor's job once the pool became unreachable without close().

        Asks the watcher and every thread to stop, without waiting (a thread
        may be inside a thread_fn that never returns): each runs cleanup as
        close() would have it and exits.  Errors recorded from then on go
        with the pool.
        """
        w = self._watcher
        for k in ((w.thread,) if w is not None else ()) + self._all_threads:
            k._core.request_stop()  # never the janitor's own thread
        _janitor.discharge()

    #: The RuntimeError's message in a fork child (subclasses say what they are).
    _forked_message = ("the per-CPU pool's threads did not survive fork(); "
                       "create a new pool in this process")

    def _forked(self) -> None:
        """In a fork child: the threads are gone, so the pool counts as closed.

        Called by the at-fork hook, the child's only thread.  The locks are
        new (a parent thread may have held one at fork); offline/online/
        follow_affinity raise RuntimeError(_forked_message); close() has no
        thread to stop or wait for.
        """
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._watch_lock = threading.Lock()
        self._closed = True
        self._closed_message = self._forked_message
        self._online = frozenset()
        self._parking = frozenset()
        self._auto_offline = set()
        self._watcher = None
        self._finalizer.detach()  # nothing of this process to release

    def __enter__(self) -> "PerCPUThreads":
        """Return the pool itself (the threads already run)."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """close() the pool; its recorded callback errors propagate."""
        self.close()

    def __repr__(self) -> str:
        state = ("closed" if self._closed else "closing" if self._stopping
                 else f"online={sorted(self._online)}")
        return f"<PerCPUThreads cpus={list(self._cpus)} {state}>"


def _after_fork_in_child() -> None:
    # Runs after kpark.thread's hook (registered first): the KThreads already
    # report exited.  A parent thread may have held the intent lock at fork.
    global _INTENT_LOCK
    _INTENT_LOCK = threading.Lock()
    for ref in list(_pools.values()):
        pool = ref()
        if pool is not None:
            pool._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
