# cython: language_level=3, freethreading_compatible=True
"""WorkQueues: PerCPUExecutor's queues, idle list and worker loop, in C.

Compiled as part of kpark._native (see _native.pyx).  kpark.executor keeps
one WorkQueues per executor and owns everything else (its API, the pool's
hotplug hooks, drain, shutdown); this is where a task goes, which worker
runs it, and how a worker sleeps between tasks.

A task is an item, (future, context, fn, args, kwargs).  Each CPU with a
worker has a WorkQueue: `pinned` (submit_on's tasks: only that CPU's
workers run them) and `shared` (unpinned: any idle worker may steal them,
and they move to another CPU when theirs goes offline).  Every move of a
task is a deque popleft(), so exactly one thread takes each; nothing here
takes a lock.

Shared words (32-bit atomics; every other field is written before the
workers start, or only by the tests):

    WorkQueue.online_word  1 while the CPU takes unpinned work.  Written by
                           the pool's hotplug hooks (under the pool's lock).
    Worker.idle_word       1 while the worker is (about to be) asleep.
    Worker.listed_word     1 while the worker is on the idle list.
    WorkQueues.state       CLOSED (shutdown() began) | BROKEN (an
                           initializer failed, or fork()); never cleared.
    WorkQueues.n_offline   how many CPUs are offline: while it is 0,
                           placement indexes the workers without looking
                           at their CPUs.  Raised before a CPU's word goes
                           to 0 and lowered after it is back to 1, so a
                           CPU seen offline is always counted; a stale
                           count sends a task to a CPU that went offline,
                           and the re-check below moves it on.
    the rr counters        round robin (RELAXED: fairness only).

Three races decide that nothing is lost or left waiting.  In each, both
sides store, then load what the other stored, so each side has a SEQ_CST
fence between its store and its load (kp_fence: deque appends are not
atomics of ours, and a SEQ_CST load alone would not order them):

* submit vs offline: submit appends to a queue, fences, reads its
  online_word and moves the queue's unpinned tasks on itself if it is 0;
  going offline stores 0, fences, and moves them.  One of them sees the
  task.  An orphan (no CPU online) and coming online pair the same way.
* submit vs shutdown: submit appends, fences, reads `state` and settles
  its own future if closed (executor._late); shutdown() sets CLOSED
  (SEQ_CST) before it drains.
* submit vs a worker going idle: the worker stores idle_word, fences and
  looks at the queues; lists itself, fences and looks again (coming online
  lists a CPU's sleeping workers, fences and looks likewise).  The worker a
  submit picked is always woken (KCore.wake() keeps a token), so for an
  unpinned task this race decides only whether another idle worker steals
  it at once: a submit that queued for a busy worker fences and wakes a
  listed one.  A pinned task (submit_on) only its CPU's workers may run:
  the fence comes between the append and reading their idle words, so an
  idle one among them is the one woken, not a busy sibling.
"""
from collections import deque as _wq_deque
from concurrent.futures.thread import BrokenThreadPool as _wq_BrokenThreadPool
from cpython.contextvars cimport PyContext_CopyCurrent

from kpark.c_atomic cimport kp_fence

_wq_logger = _fc_base.LOGGER

cdef enum:
    WQ_CLOSED = 1
    WQ_BROKEN = 2


cdef class WorkQueue:
    """One CPU's queues and whether it takes unpinned work (any thread reads)."""
    cdef readonly int cpu
    cdef readonly object pinned  # deque of items
    cdef object _shared          # deque of items (`shared`)
    cdef list _retired           # the deques `shared` replaced, kept alive
    cdef readonly tuple workers  # this CPU's Workers
    cdef uint32_t online_word
    cdef uint32_t rr

    def __cinit__(self, int cpu):
        self.cpu = cpu
        self.pinned = _wq_deque()
        self._shared = _wq_deque()
        self._retired = []
        self.workers = ()
        self.online_word = 1

    @property
    def shared(self):
        """The deque of unpinned items."""
        return self._shared

    @shared.setter
    def shared(self, value):
        # For tests that wrap the deque.  The one replaced stays alive: a
        # worker may be reading it through the field, without a reference.
        self._retired.append(self._shared)
        self._shared = value

    @property
    def online(self):
        """Whether the CPU takes unpinned work (its workers are not parked)."""
        # SEQ_CST: as every read of the word (module doc).
        return kp_load32(&self.online_word, KP_SEQ_CST) != 0


cdef class Worker:
    """One worker thread: its CPU's queue, its KThread, its idle state."""
    cdef readonly WorkQueue q
    cdef readonly object thread  # the KThread, once bound
    cdef KCore core
    cdef uint32_t idle_word
    cdef uint32_t listed_word

    def __cinit__(self, WorkQueue q not None):
        self.q = q

    @property
    def idle(self):
        """Whether the worker is asleep, or about to be (any thread)."""
        return kp_load32(&self.idle_word, KP_SEQ_CST) != 0

    @property
    def listed(self):
        """Whether the worker is on the idle list (any thread)."""
        return kp_load32(&self.listed_word, KP_SEQ_CST) != 0


cdef list _wq_queue_list(qs):
    # The hooks' CPU queues as a list, refusing None (a C struct is read).
    cdef list out = list(qs)
    for q in out:
        if not isinstance(q, WorkQueue):
            raise TypeError(f"expected WorkQueue, got {type(q).__name__}")
    return out


cdef inline bint _wq_online(WorkQueue q) noexcept:
    # SEQ_CST: read after a fence (module doc).
    return kp_load32(&q.online_word, KP_SEQ_CST) != 0


cdef object _wq_nth_online(tuple items, bint workers, uint32_t i):
    # The (i mod n)-th of the n `items` (Workers if `workers`, else
    # WorkQueues) whose CPU is online; None if none is (or none is by now).
    cdef Py_ssize_t n = 0
    for x in items:
        if _wq_online((<Worker>x).q if workers else <WorkQueue>x):
            n += 1
    if n == 0:
        return None
    n = i % n
    for x in items:
        if _wq_online((<Worker>x).q if workers else <WorkQueue>x):
            if n == 0:
                return x
            n -= 1
    return None


cdef class WorkQueues:
    """An executor's queues and workers: placement, stealing, the worker loop.

    Any thread submits; each worker thread runs run() and should_run() for
    its own Worker; the hotplug methods are the pool's (under its lock).
    """
    cdef readonly tuple queues   # one per CPU with a worker, ascending
    cdef readonly tuple workers  # in the pool's thread order
    cdef readonly object idle    # deque: listed Workers, the latest last
    cdef readonly object orphans # deque: unpinned items while no CPU is online
    cdef readonly object broken  # the BrokenThreadPool message, once BROKEN
    cdef public object drained   # threading.Event: a worker found nothing to do
    cdef uint32_t state
    cdef uint32_t rr
    cdef uint32_t n_offline      # queues offline; the hooks keep it (a hint)

    def __init__(self, cpu_list, placement, drained):
        """Queues for the CPUs of `cpu_list` (ascending) that `placement`
        (the CPU of each worker, in thread order) gives a worker."""
        queues = {cpu: WorkQueue(cpu) for cpu in placement}
        self.workers = tuple([Worker(queues[cpu]) for cpu in placement])
        self.queues = tuple([queues[cpu] for cpu in cpu_list if cpu in queues])
        cdef WorkQueue q
        for q in self.queues:
            q.workers = tuple([w for w in self.workers if (<Worker>w).q is q])
        self.idle = _wq_deque()
        self.orphans = _wq_deque()
        self.drained = drained

    def bind(self, threads):
        """Give each Worker its KThread (`threads` in thread order), before
        any task is submitted."""
        cdef Worker w
        for w, k in zip(self.workers, threads):
            w.thread = k
            w.core = k._core

    def close(self, broken=None):
        """Refuse new tasks from now on: shutdown() (no argument) or broken
        with the BrokenThreadPool message `broken` (the first one stays).

        Any thread, holding the executor's shutdown lock (one writer of
        `broken`).
        """
        if broken is None:
            # SEQ_CST: the state is read after a fence (module doc).
            kp_fetch_or32(&self.state, WQ_CLOSED, KP_SEQ_CST)
        elif not (kp_load32(&self.state, KP_RELAXED) & WQ_BROKEN):
            self.broken = broken  # published by the RMW below
            # SEQ_CST as above; its RELEASE publishes `broken` to whoever
            # sees the bit (ACQUIRE).
            kp_fetch_or32(&self.state, WQ_BROKEN, KP_SEQ_CST)
        kp_fence()  # before the caller drains or fails the queues

    def closed(self):
        """Whether close() was called; a fence first, so that a caller that
        queued work before asking is ordered against close() (module doc)."""
        kp_fence()
        return kp_load32(&self.state, KP_SEQ_CST) != 0

    # -- submitting (any thread) ----------------------------------------------

    def submit(self, future, fn, args, kwargs):
        """Queue `future`'s task (in a copy of the caller's context) on an
        online worker: the most recently idle one, else round robin.

        Returns 0 once queued; 1 if refused (closed before: nothing was
        queued); 2 if queued but the executor closed meanwhile (the caller
        settles the future, as executor._late does).
        """
        # ACQUIRE: a BROKEN bit comes with its message.
        if kp_load32(&self.state, KP_ACQUIRE):
            return 1
        item = (future, PyContext_CopyCurrent(), fn, args, kwargs)
        cdef Worker w = self._pop_idle()
        cdef WorkQueue q
        if w is not None:
            if w.q.cpu == <int>kp_this_cpu() - 1:
                w = self._not_on_our_cpu(w)
            q = w.q
            q._shared.append(item)
            w.core.wake()
            kp_fence()
            if not _wq_online(q):  # went offline meanwhile: move its work on
                self._rescue(q)
        else:
            w = self._online_worker()
            if w is None:
                self._orphan(item)
            else:
                q = w.q
                q._shared.append(item)
                w.core.wake()
                kp_fence()
                if self.idle:
                    self._wake_idle()
                if not _wq_online(q):
                    self._rescue(q)
        return 2 if kp_load32(&self.state, KP_SEQ_CST) else 0

    def submit_on(self, WorkQueue q not None, future, fn, args, kwargs):
        """Queue `future`'s task on `q`'s pinned queue; returns as submit()."""
        if kp_load32(&self.state, KP_ACQUIRE):
            return 1
        q.pinned.append((future, PyContext_CopyCurrent(), fn, args, kwargs))
        # Before reading who is idle: nobody else may take a pinned task, so
        # an idle sibling that looked before our append must be the one woken.
        kp_fence()
        self._wake_queue(q)
        return 2 if kp_load32(&self.state, KP_SEQ_CST) else 0

    def extend(self, WorkQueue q not None, items):
        """Queue unpinned `items` on `q` and wake its workers (map()'s batch).

        The caller reads `closed()` and wakes idle workers (wake_idle) after
        its last extend; this fences before anything is read back.
        """
        cdef Worker w
        q._shared.extend(items)
        kp_fence()
        for w in q.workers:
            w.core.wake()
        if not _wq_online(q):
            self._rescue(q)

    cdef Worker _online_worker(self):
        # Round robin over the workers of the online CPUs; None if none is.
        cdef uint32_t i = kp_fetch_add32(&self.rr, 1, KP_RELAXED)
        # The count is stale at worst: submit re-checks the CPU it queued on.
        if kp_load32(&self.n_offline, KP_SEQ_CST) == 0:
            return <Worker>self.workers[i % len(self.workers)]
        return _wq_nth_online(self.workers, True, i)

    cdef WorkQueue _online_queue(self):
        # Round robin over the online CPUs; None if none is.
        cdef uint32_t i = kp_fetch_add32(&self.rr, 1, KP_RELAXED)
        # Stale at worst, as above: _push re-checks.
        if kp_load32(&self.n_offline, KP_SEQ_CST) == 0:
            return <WorkQueue>self.queues[i % len(self.queues)]
        return _wq_nth_online(self.queues, False, i)

    cdef bint _any_online(self) noexcept:
        cdef WorkQueue q
        for q in self.queues:
            if _wq_online(q):
                return True
        return False

    def online_queues(self):
        """The queues of the online CPUs, ascending (a snapshot)."""
        return tuple([q for q in self.queues if _wq_online(q)])

    cdef Worker _pop_idle(self):
        # The most recently idle online worker (its cache is warm).
        idle = self.idle
        cdef Worker w
        while idle:
            try:
                w = idle.pop()
            except IndexError:
                break
            kp_store32(&w.listed_word, 0, KP_SEQ_CST)
            if kp_load32(&w.idle_word, KP_SEQ_CST) and _wq_online(w.q):
                return w
        return None

    cdef Worker _not_on_our_cpu(self, Worker w):
        # Idle `w` is on the submitter's CPU: it could run only once we
        # sleep, and we would both sleep instead of spin.  Another idle
        # worker if any; `w` goes back on the list then.
        cdef Worker other = self._pop_idle()
        if other is None:
            return w
        kp_store32(&w.listed_word, 1, KP_SEQ_CST)
        self.idle.append(w)
        return other

    cdef int _wake_idle(self) except -1:
        # We queued for a busy worker, but one went idle meanwhile: it
        # listed itself and then looked at the queues, perhaps before our
        # append.  Wake it to steal the task rather than leave it waiting.
        cdef Worker v = self._pop_idle()
        if v is not None:
            v.core.wake()
        return 0

    def wake_idle(self):
        """Wake the most recently idle online worker, if any (to steal)."""
        self._wake_idle()

    cdef int _wake_queue(self, WorkQueue q) except -1:
        # Wake a worker of `q` for work just queued there: an idle one if any.
        cdef tuple workers = q.workers
        cdef Py_ssize_t n = len(workers)
        cdef Worker w
        if n > 1:
            for w in workers:
                if kp_load32(&w.idle_word, KP_SEQ_CST):
                    w.core.wake()
                    return 0
            # All busy: each looks at the queue again before it sleeps.
            w = <Worker>workers[kp_fetch_add32(&q.rr, 1, KP_RELAXED) % n]
        else:
            w = <Worker>workers[0]
        w.core.wake()
        return 0

    cdef int _push(self, WorkQueue q, item) except -1:
        q._shared.append(item)
        kp_fence()
        self._wake_queue(q)
        if self.idle:
            self._wake_idle()
        if not _wq_online(q):
            self._rescue(q)
        return 0

    cdef int _rescue(self, WorkQueue q) except -1:
        # Move `q`'s unpinned tasks to online CPUs (to orphans if none).
        cdef WorkQueue to
        shared = q._shared
        while shared:
            try:
                item = shared.popleft()
            except IndexError:
                return 0
            to = self._online_queue()
            if to is not None:
                self._push(to, item)
            else:
                self._orphan(item)
        return 0

    def rescue(self, WorkQueue q not None):
        """Move `q`'s unpinned tasks to online CPUs (to orphans if none)."""
        self._rescue(q)

    cdef int _orphan(self, item) except -1:
        self.orphans.append(item)
        kp_fence()
        # Coming online stores the word and fences before it flushes the
        # orphans, so one of us sees the other.
        if self._any_online():
            self._flush_orphans()
        return 0

    def orphan(self, item):
        """Keep unpinned `item` until a CPU is online (queued at once if one is)."""
        self._orphan(item)

    cdef int _flush_orphans(self) except -1:
        cdef WorkQueue q
        orphans = self.orphans
        while orphans:
            q = self._online_queue()
            if q is None:
                return 0
            try:
                item = orphans.popleft()
            except IndexError:
                return 0
            self._push(q, item)
        return 0

    def flush_orphans(self):
        """Queue the orphans on online CPUs (while any is online)."""
        self._flush_orphans()

    # -- hotplug (the pool's hooks, under its lock) ----------------------------

    def close_queues(self, qs):
        """The CPUs of `qs` go offline: they take no unpinned work, and what
        they hold moves on now (not only once parked: an interrupted
        offline() leaves them parking, and nothing may wait behind them)."""
        cdef WorkQueue q
        cdef uint32_t online
        qs = _wq_queue_list(qs)
        for q in qs:
            # The count first, taken back if the CPU was offline already, so
            # that whoever sees a CPU offline sees the count too.  A CAS: a
            # thread whose re-pinning failed calls this without the pool's lock.
            kp_fetch_add32(&self.n_offline, 1, KP_SEQ_CST)
            online = 1
            if not kp_cas32(&q.online_word, &online, 0, KP_SEQ_CST, KP_RELAXED):
                kp_fetch_sub32(&self.n_offline, 1, KP_SEQ_CST)
        kp_fence()
        for q in qs:
            if q._shared:
                self._rescue(q)

    def open_queues(self, qs):
        """The CPUs of `qs` came online: queue the orphans, list their idle
        workers, and wake those that have work to find."""
        cdef WorkQueue q
        cdef Worker w
        cdef uint32_t offline
        qs = _wq_queue_list(qs)
        for q in qs:
            offline = 0
            if kp_cas32(&q.online_word, &offline, 1, KP_SEQ_CST, KP_RELAXED):
                kp_fetch_sub32(&self.n_offline, 1, KP_SEQ_CST)  # after: a stale count is safe
        kp_fence()
        if self.orphans:
            self._flush_orphans()
        for q in qs:
            for w in q.workers:
                # A worker parked in place stays asleep through online(), so
                # it does not look for work on its own: list it as idle for
                # submit(), and wake it if other CPUs hold tasks to steal.
                if kp_load32(&w.idle_word, KP_SEQ_CST) and not kp_load32(&w.listed_word, KP_SEQ_CST):
                    kp_store32(&w.listed_word, 1, KP_SEQ_CST)
                    self.idle.append(w)
        # Listed, then look: a submit that found no idle worker queued
        # before this look, or sees them listed (as in should_run).
        kp_fence()
        stealable = self._stealable()
        for q in qs:
            if stealable or q.pinned:
                for w in q.workers:
                    w.core.wake()

    # -- the workers (each in its own thread) ---------------------------------

    def should_run(self, Worker w not None, cpu):
        """smpboot's thread_should_run for `w`: True if there is work for it.

        Otherwise `w` is marked idle and listed, and False is returned.
        """
        return self._should_run(w)

    cdef bint _should_run(self, Worker w) except -1:
        cdef WorkQueue q = w.q
        # Idle before the checks: a producer that queues work after them
        # sees it and wakes us, and idle() keeps that wake.
        kp_store32(&w.idle_word, 1, KP_SEQ_CST)
        kp_fence()
        if not (kp_load32(&self.state, KP_SEQ_CST) & WQ_BROKEN):
            if q.pinned or q._shared or self._stealable():
                kp_store32(&w.idle_word, 0, KP_RELAXED)
                return True
        if not kp_load32(&w.listed_word, KP_SEQ_CST):
            kp_store32(&w.listed_word, 1, KP_SEQ_CST)
            self.idle.append(w)
            kp_fence()
            # Listed, then look again: a submitter that found no idle worker
            # either queued its task before this look or sees us listed
            # after its append (and wakes us).
            if (not (kp_load32(&self.state, KP_SEQ_CST) & WQ_BROKEN)
                    and (q.pinned or q._shared or self._stealable())):
                kp_store32(&w.idle_word, 0, KP_RELAXED)
                return True
        if kp_load32(&self.state, KP_SEQ_CST) & WQ_CLOSED:
            self.drained.set()
        return False

    cdef bint _stealable(self) except -1:
        # Whether any CPU has unpinned work.
        cdef WorkQueue q
        for q in self.queues:
            if q._shared:
                return True
        return False

    cdef object _steal(self, WorkQueue thief):
        cdef WorkQueue v
        for v in self.queues:
            if v is not thief and v._shared:
                try:
                    return v._shared.popleft()
                except IndexError:
                    continue
        return None

    def run(self, Worker w not None, cpu):
        """smpboot's thread_fn for `w`: its tasks and its idle sleeps between.

        Only from `w`'s own thread.  Entered once should_run() found work;
        sleeps in idle() itself (the smpboot loop's own sleep: offline()
        parks it there) and returns only for a park or stop request, so one
        task costs one pass of this loop, not two of the smpboot loop.
        Returns None, or the OSError of re-pinning after a park in place
        (the caller reports it).
        """
        cdef KCore core = _self_core("run")
        cdef WorkQueue q = w.q
        cdef bint steal = True  # not right after a task: our queues, then sleep
        kp_store32(&w.idle_word, 0, KP_RELAXED)
        # Locals: on a free-threaded build each read of a field shared with
        # other threads is an atomic reference count.
        pinned = q.pinned
        shared = q._shared
        while True:
            item = None
            if pinned:
                try:
                    item = pinned.popleft()
                except IndexError:  # another worker or cancel_futures took it
                    pass
            if item is None and shared:
                try:
                    item = shared.popleft()
                except IndexError:
                    pass
            if item is None and steal:
                item = self._steal(q)
            if item is None:
                # As the smpboot loop: list ourselves idle, look again, sleep.
                if not self._should_run(w):
                    try:
                        core.idle()
                    except OSError as exc:  # re-pinning after a park failed
                        return exc
                    # ACQUIRE: as should_park()/should_stop().
                    if kp_load32(&core.word, KP_ACQUIRE) & (SHOULD_PARK | SHOULD_STOP):
                        return None
                    # Woken: busy while we look; nothing found, and the next
                    # _should_run marks us idle before it looks again.
                    kp_store32(&w.idle_word, 0, KP_RELAXED)
                shared = q._shared  # as it is now: a test may have wrapped it
                steal = True
                continue
            steal = False
            f, ctx, fn, args, kwargs = item
            item = None
            try:
                # ACQUIRE: a BROKEN bit comes with its message.
                if kp_load32(&self.state, KP_ACQUIRE) & WQ_BROKEN:
                    if f.set_running_or_notify_cancel():
                        f.set_exception(_wq_BrokenThreadPool(self.broken))
                elif isinstance(f, FutureCore):
                    (<FutureCore>f).run_task(ctx, fn, args, kwargs)
                else:
                    f._run(ctx, fn, args, kwargs)
            except RuntimeError:
                # The caller set it running itself: as the stdlib, fn does
                # not run and the future stays as it is (the worker survives).
                _wq_logger.critical("Exception in worker", exc_info=True)
            f = ctx = fn = args = kwargs = None
            # Back to the smpboot loop between tasks when parked or stopped:
            # offline() lets the running task finish, then the worker parks.
            if kp_load32(&core.word, KP_ACQUIRE) & (SHOULD_PARK | SHOULD_STOP):
                return None
