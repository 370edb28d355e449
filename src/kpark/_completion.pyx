# cython: language_level=3, freethreading_compatible=True
"""kpark.Completion: the kernel's completion on a futex word.

Compiled as part of kpark._native (see _native.pyx).

State: `done`, a 32-bit futex word, counts completions not yet consumed;
DONE_ALL means complete_all() was called and every wait succeeds until
reinit().  `sleepers` counts waiters that may be asleep on `done`.

The only race that could lose a wake-up is "waiter sleeps on done == 0"
against "completer adds one and sees nobody asleep".  Both sides use SEQ_CST:
the waiter increments `sleepers` and then re-reads `done`; the completer
changes `done` and then reads `sleepers`.  In the single total order of
SEQ_CST operations one of the two second steps comes after the other side's
first, so either the waiter sees the completion or the completer sees the
sleeper and wakes it; and if the wake comes before the waiter is in the
kernel, FUTEX_WAIT finds done != 0 and returns at once.
"""
from libc.stdint cimport uint32_t

from kpark.c_atomic cimport (kp_load32, kp_store32, kp_fetch_add32,
                             kp_fetch_sub32, kp_cas32,
                             KP_RELAXED, KP_ACQUIRE, KP_RELEASE, KP_SEQ_CST)
from kpark.c_wait cimport (timespec, kp_wake_one, kp_wake_all, kp_deadline_passed,
                           KP_WAIT_TIMEDOUT)
from kpark.c_spin cimport (kp_spin_budget, kp_spin_while_equal, kp_gil_released,
                           kp_before_gil, kp_this_cpu)
from kpark.waiting cimport check_timeout, deadline_from_timeout, wait_step

cdef enum:
    DONE_ALL = 0xFFFFFFFF


cdef inline bint _try_consume(uint32_t *done) noexcept nogil:
    """Take one completion if there is one (ACQUIRE: see what complete() published)."""
    cdef uint32_t v = kp_load32(done, KP_ACQUIRE)
    while v != 0:
        if v == DONE_ALL:
            return True
        if kp_cas32(done, &v, v - 1, KP_ACQUIRE, KP_ACQUIRE):
            return True
    return False


cdef class Completion:
    """A one-shot or counting event: the kernel's `struct completion`.

    complete() releases one waiter (or lets the next wait() through at once),
    complete_all() releases every waiter until reinit().  Any thread may call
    any method.
    """
    cdef uint32_t count
    cdef uint32_t sleepers
    cdef uint32_t completer_cpu     # CPU + 1 of the last complete(): a spin hint
    cdef object __weakref__         # weakref.ref(c) works, as for threading.Event

    def __init__(self):
        self.count = 0
        self.sleepers = 0
        self.completer_cpu = 0

    def complete(self):
        """Release one waiter, or let the next wait() return at once."""
        cdef uint32_t v = kp_load32(&self.count, KP_RELAXED)
        kp_store32(&self.completer_cpu, kp_this_cpu(), KP_RELAXED)  # hint only
        while True:
            if v == DONE_ALL:
                return
            # SEQ_CST: ordered against the waiter's sleepers increment (above).
            if kp_cas32(&self.count, &v, v + 1 if v + 1 != DONE_ALL else v,
                        KP_SEQ_CST, KP_RELAXED):
                break
        if kp_load32(&self.sleepers, KP_SEQ_CST) != 0:
            kp_wake_one(&self.count)

    def complete_all(self):
        """Release every waiter, now and later, until reinit()."""
        self._complete_all()

    cdef void _complete_all(self) noexcept:
        # complete_all() for the other .pyx files of kpark._native (no Python call).
        kp_store32(&self.completer_cpu, kp_this_cpu(), KP_RELAXED)  # hint only
        # SEQ_CST for the same pairing as complete().
        kp_store32(&self.count, DONE_ALL, KP_SEQ_CST)
        if kp_load32(&self.sleepers, KP_SEQ_CST) != 0:
            kp_wake_all(&self.count)

    def try_wait(self):
        """Consume one completion without blocking; return whether there was one."""
        return _try_consume(&self.count)

    def done(self):
        """Return True when wait() would not block."""
        return kp_load32(&self.count, KP_ACQUIRE) != 0

    def reinit(self):
        """Forget every completion, complete_all() included."""
        kp_store32(&self.count, 0, KP_RELEASE)

    def wait(self, timeout=None):
        """Wait for and consume one completion.

        Blocks without the GIL; returns True, or False once `timeout` seconds
        (a float; None waits forever) have passed.  Interruptible by signals
        (KeyboardInterrupt) in the main thread.
        """
        return self._wait(timeout)

    cdef bint _wait(self, object timeout) except -1:
        # wait() for the other .pyx files of kpark._native (no Python call).
        cdef timespec deadline
        cdef bint timed
        if timeout is not None:
            check_timeout(timeout)
        if _try_consume(&self.count):
            return True
        timed = deadline_from_timeout(timeout, &deadline)
        return self._wait_slow(&deadline if timed else NULL) == 1

    cdef int _wait_slow(self, const timespec *deadline) except -1:
        cdef int ok
        cdef uint32_t epoch
        with nogil:
            epoch = kp_gil_released()
            ok = self._wait_nogil(deadline)
            if ok:
                kp_before_gil(epoch, kp_load32(&self.completer_cpu, KP_RELAXED))
        return ok

    cdef int _wait_nogil(self, const timespec *deadline) except -1 nogil:
        cdef int rc
        # Bounded spin first: the completer may be a moment away.
        if (kp_spin_while_equal(&self.count, 0,
                                kp_spin_budget(kp_load32(&self.completer_cpu, KP_RELAXED)))
                and _try_consume(&self.count)):
            return 1
        kp_fetch_add32(&self.sleepers, 1, KP_SEQ_CST)
        try:
            while True:
                # SEQ_CST re-read after announcing ourselves (see module doc).
                if kp_load32(&self.count, KP_SEQ_CST) != 0 and _try_consume(&self.count):
                    return 1
                rc = wait_step(&self.count, 0, deadline)
                # A change of the word wins over the deadline: re-check first.
                if _try_consume(&self.count):
                    return 1
                if rc == KP_WAIT_TIMEDOUT or kp_deadline_passed(deadline):
                    return 0
        finally:
            kp_fetch_sub32(&self.sleepers, 1, KP_RELAXED)

    def __repr__(self):
        cdef uint32_t v = kp_load32(&self.count, KP_ACQUIRE)
        return f"<Completion done={'all' if v == DONE_ALL else v}>"
