# cython: language_level=3, freethreading_compatible=True
"""FutureCore: the state machine of PerCPUExecutor's futures, in C.

Compiled as part of kpark._native (see _native.pyx).  kpark._futures makes
the executor's future of it: class _Future(FutureCore, concurrent.futures.Future),
so isinstance() and the base class's helpers still see a stdlib Future.

State: `word`, a 32-bit word.  Its low byte is the state, whose names (what
`_state` reads) are concurrent.futures':

    PENDING --claim--> RUNNING --finish--> COMPLETING --publish--> FINISHED
    PENDING --finish--> COMPLETING        (set_result() on a pending future)
    PENDING --cancel()--> CANCELLED --set_running_or_notify_cancel()-->
                                               CANCELLED_AND_NOTIFIED

COMPLETING belongs to the one thread whose CAS took it there: it alone writes
`_result`/`_exception` (two writers of one object field would corrupt its
reference counts without a GIL), then publishes FINISHED.  It reads as RUNNING.

OBSERVED (bit 8) is set, never cleared, before anything gives the future an
observer: a Condition (`_condition`, which concurrent.futures.wait() and
as_completed() take), a waiter (`_waiters`) or a done callback.  Observers
install themselves holding `_lock` after reading the state there, and the
stdlib's contract is that a state they read under the lock is final with
respect to notification: a waiter installed on a pending future is notified
once when it becomes done, one installed on a done future never.  So:

* A transition to a state observers care about (CANCELLED,
  CANCELLED_AND_NOTIFIED, FINISHED) is a CAS that expects OBSERVED clear.
  Once OBSERVED is set that CAS fails, and the transition is made again
  holding `_lock`, with the notification, as the stdlib does it.
* The observer's fetch_or of OBSERVED and the transition's CAS are both
  SEQ_CST read-modify-writes of one word: one comes first.  If the CAS was
  first, the observer sees the done state under the lock and nothing will
  notify it; if the fetch_or was first, the CAS fails and the transition
  waits for the lock the observer holds while it reads and installs.

So a future nobody observes (every submit(fn).result()) takes no lock in its
whole life, and has none (`_lock` is made on first use); one that is
observed behaves exactly as the stdlib's.

`_done_event` (a Completion) is released with complete_all() after every
transition to a done state: result()/exception() wait on it without a lock,
and its SEQ_CST store orders `_result`/`_exception` before their ACQUIRE
reads.
"""
from _thread import RLock as _fc_RLock
from concurrent.futures import _base as _fc_base
from threading import Condition as _fc_Condition
cimport cython

cdef enum:
    F_PENDING = 0
    F_RUNNING = 1
    F_CANCELLED = 2
    F_CANCELLED_AND_NOTIFIED = 3
    F_FINISHED = 4
    F_COMPLETING = 5
    F_STATE = 0xFF
    F_OBSERVED = 1 << 8

# What `_state` reads for each state (COMPLETING reads as RUNNING).
_FC_NAMES = (_fc_base.PENDING, _fc_base.RUNNING, _fc_base.CANCELLED,
             _fc_base.CANCELLED_AND_NOTIFIED, _fc_base.FINISHED, _fc_base.RUNNING)
_fc_logger = _fc_base.LOGGER


cdef inline bint _fc_done(uint32_t v) noexcept nogil:
    v &= F_STATE
    return v == F_FINISHED or v == F_CANCELLED or v == F_CANCELLED_AND_NOTIFIED


cdef inline bint _fc_park_pending() noexcept nogil:
    # should_park() of the calling KThread, without a call (False outside one).
    cdef void *p = kp_current_get()
    # ACQUIRE, as should_park(): the caller acts on the request.
    return p != NULL and (kp_load32(&(<KCore>p).word, KP_ACQUIRE) & SHOULD_PARK) != 0


# No tp_clear: a collected cycle must not leave _done_event None under a
# method that runs meanwhile (a callback, a weakref's); the cycle is broken
# at its other members.
@cython.no_gc_clear
cdef class FutureCore:
    """A Future's state, result and waiting, with no lock until observed.

    Any thread may call any method; `_run` is the executor worker's.
    """
    cdef uint32_t word
    cdef object _rlock                  # `_lock`, made on first use
    cdef readonly object _result
    cdef readonly object _exception
    cdef Completion _done_event
    cdef readonly object _cond          # under _lock: the Condition, once asked for
    cdef list _waiter_list              # under _lock
    cdef list _callbacks                # under _lock; None once invoked

    def __cinit__(self):
        self._done_event = Completion.__new__(Completion)

    def __init__(self):
        pass  # not concurrent.futures.Future.__init__: no Condition up front

    # -- observers (the slow path) -------------------------------------------

    @property
    def _lock(self):
        """The RLock of every transition once observed (made on first use)."""
        # A critical section (no-op with a GIL): two first users make one lock.
        with cython.critical_section(self):
            if self._rlock is None:
                self._rlock = _fc_RLock()
            return self._rlock

    cdef inline void _observe(self) noexcept:
        # SEQ_CST: ordered against every transition's CAS (module doc).
        kp_fetch_or32(&self.word, F_OBSERVED, KP_SEQ_CST)

    @property
    def _condition(self):
        """The Condition on `_lock` that wait()/as_completed() hold (made once)."""
        self._observe()
        lock = self._lock
        with lock:
            if self._cond is None:
                self._cond = _fc_Condition(lock)
            return self._cond

    @property
    def _waiters(self):
        """The stdlib's waiter list; wait()/as_completed() use it holding `_condition`."""
        self._observe()
        with self._lock:
            if self._waiter_list is None:
                self._waiter_list = []
            return self._waiter_list

    @property
    def _state(self):
        """The state by its concurrent.futures name (a snapshot)."""
        # ACQUIRE: a reader that sees FINISHED may read the result.
        return _FC_NAMES[kp_load32(&self.word, KP_ACQUIRE) & F_STATE]

    # -- transitions ----------------------------------------------------------

    cdef bint _claim(self, uint32_t frm, uint32_t to) noexcept:
        """CAS the state from `frm` to `to` keeping OBSERVED; False if not in `frm`.

        For transitions no observer is told of (to RUNNING or COMPLETING): no
        lock even when observed.
        """
        cdef uint32_t v = kp_load32(&self.word, KP_RELAXED)
        while (v & F_STATE) == frm:
            # ACQ_REL: the claim is taken once; what its winner writes next
            # is published by the transition that follows it.
            if kp_cas32(&self.word, &v, to | (v & F_OBSERVED), KP_ACQ_REL, KP_RELAXED):
                return True
        return False

    cdef int _settle(self, uint32_t frm, uint32_t to, object notify) except -1:
        """Move the state from `frm` to `to` and tell the observers (module doc).

        `notify`: the waiter method's name (add_result, ...) or None; the
        Condition is notified for every settle.  Returns 1 if moved, 0 if the
        state was no longer `frm`.  The caller then calls _released().
        """
        cdef uint32_t v = frm
        # SEQ_CST, expecting OBSERVED clear: the pairing with _observe().
        if kp_cas32(&self.word, &v, to, KP_SEQ_CST, KP_RELAXED):
            return 1
        if (v & F_STATE) != frm:
            return 0
        with self._lock:
            v = kp_load32(&self.word, KP_RELAXED)
            while True:
                if (v & F_STATE) != frm:
                    return 0
                # SEQ_CST as above; under the lock only OBSERVED could change.
                if kp_cas32(&self.word, &v, to | (v & F_OBSERVED), KP_SEQ_CST, KP_RELAXED):
                    break
            if notify is not None and self._waiter_list:
                for waiter in self._waiter_list:
                    getattr(waiter, notify)(self)
            if self._cond is not None:
                self._cond.notify_all()
        return 1

    cdef int _released(self) except -1:
        """After a transition to a done state: wake the waiters, run the callbacks."""
        cdef list callbacks
        self._done_event._complete_all()
        if not (kp_load32(&self.word, KP_RELAXED) & F_OBSERVED):
            return 0  # no callback without OBSERVED (add_done_callback sets it)
        with self._lock:
            callbacks = self._callbacks
            self._callbacks = None
        if callbacks:
            for fn in callbacks:
                try:
                    fn(self)
                except Exception:
                    _fc_logger.exception("exception calling callback for %r", self)
        return 0

    cdef int _finish(self, object result, object exc, bint quiet) except -1:
        """PENDING/RUNNING -> FINISHED with `result` or `exc`.

        InvalidStateError if already done, unless `quiet` (the worker: the
        first to finish wins).
        """
        # RUNNING is the worker's case; PENDING a user's set_result().  The
        # loop retries only if a concurrent claim moved PENDING to RUNNING.
        while not (self._claim(F_RUNNING, F_COMPLETING)
                   or self._claim(F_PENDING, F_COMPLETING)):
            if (kp_load32(&self.word, KP_RELAXED) & F_STATE) == F_RUNNING:
                continue
            if quiet:
                return 0
            raise _fc_base.InvalidStateError(f"{self._state}: {self!r}")
        # Ours alone until published (COMPLETING).
        self._result = result
        self._exception = exc
        self._settle(F_COMPLETING, F_FINISHED,
                     "add_result" if exc is None else "add_exception")
        self._released()
        return 0

    # -- the worker's use -----------------------------------------------------

    def _run(self, ctx, fn, args, kwargs):
        """Run fn(*args, **kwargs) in `ctx` unless cancelled; finish the future.

        The worker's whole use: set_running_or_notify_cancel(), the call,
        set_result() or set_exception().  RuntimeError (as the stdlib) if the
        future was not pending; a cancelled one is notified and not run.  If
        the calling KThread has a park request once fn returns,
        `_parked_after_task()` (the subclass's) may raise to fail the task.
        """
        self.run_task(ctx, fn, args, kwargs)

    cdef int run_task(self, ctx, fn, args, kwargs) except -1:
        # _run without a Python call (kpark._workqueue's worker loop).
        if not self._claim(F_PENDING, F_RUNNING):
            if not self.set_running_or_notify_cancel():
                return 0
        try:
            result = ctx.run(fn, *args, **kwargs)
            if _fc_park_pending():
                self._parked_after_task()
        except BaseException as exc:
            self._finish(None, exc, True)
            return 0
        self._finish(result, None, True)
        return 0

    def _parked_after_task(self):
        """Hook: the worker running this future's task has a park request."""

    # -- concurrent.futures.Future's API ---------------------------------------

    def set_running_or_notify_cancel(self):
        """Future.set_running_or_notify_cancel: True if it may run, False if cancelled."""
        if self._claim(F_PENDING, F_RUNNING):
            return True
        if self._settle(F_CANCELLED, F_CANCELLED_AND_NOTIFIED, "add_cancelled"):
            return False
        state = self._state
        _fc_logger.critical("Future %s in unexpected state: %s", id(self), state)
        raise RuntimeError("Future in unexpected state")

    def set_result(self, result):
        """Future.set_result: InvalidStateError if already done."""
        self._finish(result, None, False)

    def set_exception(self, exception):
        """Future.set_exception: InvalidStateError if already done."""
        self._finish(None, exception, False)

    def cancel(self):
        """Future.cancel: True if cancelled (now or before), False if running or done."""
        cdef uint32_t s
        if self._settle(F_PENDING, F_CANCELLED, None):
            self._released()
            return True
        s = kp_load32(&self.word, KP_ACQUIRE) & F_STATE
        return s == F_CANCELLED or s == F_CANCELLED_AND_NOTIFIED

    def cancelled(self):
        cdef uint32_t s = kp_load32(&self.word, KP_ACQUIRE) & F_STATE
        return s == F_CANCELLED or s == F_CANCELLED_AND_NOTIFIED

    def running(self):
        cdef uint32_t s = kp_load32(&self.word, KP_ACQUIRE) & F_STATE
        return s == F_RUNNING or s == F_COMPLETING

    def done(self):
        return _fc_done(kp_load32(&self.word, KP_ACQUIRE))

    def add_done_callback(self, fn):
        """Future.add_done_callback: fn(future) once done (now, if it is)."""
        self._observe()
        with self._lock:
            if not _fc_done(kp_load32(&self.word, KP_RELAXED)):
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        try:
            fn(self)
        except Exception:
            _fc_logger.exception("exception calling callback for %r", self)

    cdef uint32_t _wait_done(self, object timeout) except 0xFFFFFFFF:
        """Block until done or `timeout` seconds passed; return the state.

        No lock: the SEQ_CST complete_all() after the transition pairs with
        the wait's ACQUIRE, so the result written before it is visible.
        """
        cdef Completion done = self._done_event
        if timeout is not None and not timeout > 0:
            timeout = 0.0  # as threading.Condition.wait: negative or NaN, no wait
        # A completion at the deadline still counts, as the stdlib's re-check.
        if (kp_load32(&done.count, KP_ACQUIRE) != 0 or done._wait(timeout)
                or kp_load32(&done.count, KP_ACQUIRE) != 0):
            return kp_load32(&self.word, KP_ACQUIRE) & F_STATE
        return F_PENDING

    def result(self, timeout=None):
        """Future.result: the result, or raise its exception, CancelledError or TimeoutError."""
        cdef uint32_t s = self._wait_done(timeout)
        if s == F_FINISHED:
            exc = self._exception
            if not exc:  # as the stdlib: a falsy exception counts as none
                return self._result
            try:
                raise exc
            finally:
                exc = None  # no reference cycle through the traceback
        if s == F_CANCELLED or s == F_CANCELLED_AND_NOTIFIED:
            raise _fc_base.CancelledError()
        raise _fc_base.TimeoutError()

    def exception(self, timeout=None):
        """Future.exception: the exception or None, or raise CancelledError or TimeoutError."""
        cdef uint32_t s = self._wait_done(timeout)
        if s == F_FINISHED:
            return self._exception
        if s == F_CANCELLED or s == F_CANCELLED_AND_NOTIFIED:
            raise _fc_base.CancelledError()
        raise _fc_base.TimeoutError()
