# Shared inline helpers for the modules that block: timeouts to deadlines,
# and one wait step that takes the GIL back to run signal handlers.
from libc.math cimport isnan
from libc.stdint cimport uint32_t
from cpython.exc cimport PyErr_CheckSignals

from kpark.c_atomic cimport kp_cpu_relax
from kpark.c_wait cimport (timespec, kp_deadline_after, kp_wait, KP_WAIT_INTR,
                           KP_BACKEND_NAME)


cdef extern from "pythread.h":
    unsigned long PyThread_get_thread_ident() nogil


cdef extern from *:
    """
    #ifndef _GNU_SOURCE
    #define _GNU_SOURCE
    #endif
    #include <sched.h>
    #include <time.h>
    #include "kp_atomic.h"
    /* Only the pthread backend needs to know whether to slice a wait for
     * signal checks; futex waits are interrupted by signals themselves. */
    #ifdef KPARK_BACKEND_PTHREAD
    #define KP_NEEDS_SIGNAL_SLICES 1
    #else
    #define KP_NEEDS_SIGNAL_SLICES 0
    #endif
    static unsigned long kp_main_thread_ident = 0;

    /* Spin budgets in nanoseconds (0 on one CPU, where spinning only delays
     * the thread we wait for); set at import, see set_spin_budgets(). */
    static long kp_spin_ns = 0;
    static long kp_gil_spin_ns = 0;

    static inline long kp_now_ns(void)
    {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return t.tv_sec * 1000000000L + t.tv_nsec;
    }

    /* Spin up to budget_ns while *word == expected; returns whether it changed. */
    static inline int kp_spin_while_equal(const uint32_t *word, uint32_t expected, long budget_ns)
    {
        long end;
        int i;
        if (budget_ns <= 0)
            return 0;
        end = kp_now_ns() + budget_ns;
        for (i = 1; __atomic_load_n(word, __ATOMIC_RELAXED) == expected; i++) {
            kp_cpu_relax();
            if ((i & 31) == 0 && kp_now_ns() >= end)
                return 0;
        }
        return 1;
    }

    /* The GIL-release epoch: every kpark wait bumps it right after it
     * released the GIL.  A waiter whose condition came true while the epoch
     * still holds the value it saw on entry was woken by a thread that still
     * holds the GIL; that thread usually releases it moments later in a kpark
     * wait of its own (ping-pong, park/unpark round trips).  Spinning for
     * that (bounded, without the GIL) beats sleeping on the GIL's condition
     * variable and being woken by a second system call.  The counter is
     * shared by kpark's modules: _kcore owns it, the others borrow it. */
    static uint32_t kp_gil_epoch_own = 0;
    static uint32_t *kp_gil_epoch = &kp_gil_epoch_own;

    static inline void kp_share_gil_epoch(uint32_t *owner) { kp_gil_epoch = owner; }

    static inline uint32_t kp_gil_released(void)
    {
        /* RELAXED: a hint for spinning, ordering nothing. */
        return __atomic_add_fetch(kp_gil_epoch, 1, __ATOMIC_RELAXED);
    }

    /* Spin only for a peer that can act meanwhile.  `peer_cpu` is where the
     * thread we wait for runs (or last ran), as CPU + 1, 0 for unknown: when
     * that is our own CPU, spinning keeps it from running until we give up,
     * so we sleep at once instead (per-CPU workers and their controller). */
    static inline int kp_peer_elsewhere(uint32_t peer_cpu)
    {
        return peer_cpu == 0 || (int)peer_cpu - 1 != sched_getcpu();
    }

    static inline long kp_spin_budget(uint32_t peer_cpu)
    {
        return kp_spin_ns > 0 && kp_peer_elsewhere(peer_cpu) ? kp_spin_ns : 0;
    }

    /* This thread's CPU as CPU + 1, for peers' kp_spin_budget. */
    static inline uint32_t kp_this_cpu(void) { return (uint32_t)(sched_getcpu() + 1); }

    static inline void kp_before_gil(uint32_t epoch_on_entry, uint32_t peer_cpu)
    {
        if (kp_gil_spin_ns > 0 && kp_peer_elsewhere(peer_cpu))
            kp_spin_while_equal(kp_gil_epoch, epoch_on_entry, kp_gil_spin_ns);
    }
    """
    bint KP_NEEDS_SIGNAL_SLICES
    unsigned long kp_main_thread_ident
    long kp_spin_ns
    long kp_gil_spin_ns
    uint32_t *kp_gil_epoch
    bint kp_spin_while_equal(const uint32_t *word, uint32_t expected, long budget_ns) nogil
    void kp_share_gil_epoch(uint32_t *owner)
    uint32_t kp_gil_released() nogil
    void kp_before_gil(uint32_t epoch_on_entry, uint32_t peer_cpu) nogil
    long kp_spin_budget(uint32_t peer_cpu) nogil
    uint32_t kp_this_cpu() nogil


cdef inline int configure_spins() except -1:
    """Set this module's spin budgets from the environment (import time).

    KPARK_SPIN_NS: spin on the awaited word before sleeping (default 20 us);
    KPARK_GIL_SPIN_NS: spin for the waker's GIL release (default 5 us).
    Both are 0 when this process may use only one CPU.
    """
    global kp_spin_ns, kp_gil_spin_ns
    import os
    multi = len(os.sched_getaffinity(0)) > 1
    kp_spin_ns = int(os.environ.get("KPARK_SPIN_NS", 20000)) if multi else 0
    kp_gil_spin_ns = int(os.environ.get("KPARK_GIL_SPIN_NS", 5000)) if multi else 0
    return 0


cdef inline void note_main_thread(unsigned long ident) noexcept:
    """Record which thread runs Python's signal handlers (import, fork)."""
    global kp_main_thread_ident
    kp_main_thread_ident = ident


cdef inline int check_timeout(object timeout) except -1:
    """ValueError for a negative or NaN timeout, even where no wait follows."""
    cdef double seconds
    if timeout is not None:
        seconds = timeout
        if isnan(seconds) or seconds < 0:
            raise ValueError(f"timeout must be a non-negative number, got {timeout!r}")
    return 0


cdef inline bint deadline_from_timeout(object timeout, timespec *out) except -1:
    """Turn a timeout in seconds into an absolute CLOCK_MONOTONIC deadline.

    Returns False for None (wait forever), True once *out is set.  A negative
    or NaN timeout raises ValueError, as threading's waits do.
    """
    cdef double seconds
    if timeout is None:
        return False
    seconds = timeout
    if isnan(seconds) or seconds < 0:
        raise ValueError(f"timeout must be a non-negative number, got {timeout!r}")
    kp_deadline_after(seconds, out)
    return True


cdef inline int wait_step(uint32_t *word, uint32_t expected,
                          const timespec *deadline) except -1 nogil:
    """Sleep once on `word` while it holds `expected` (kp_wait's contract).

    Called without the GIL.  A signal takes the GIL back to run Python's
    handlers: a handler that raises (KeyboardInterrupt) makes this raise, so
    the caller must leave its shared state consistent before each call.
    Returns the KP_WAIT_* code otherwise.
    """
    cdef bint slices = (KP_NEEDS_SIGNAL_SLICES and
                        PyThread_get_thread_ident() == kp_main_thread_ident)
    cdef int rc = kp_wait(word, expected, deadline, slices)
    if rc == KP_WAIT_INTR:
        with gil:
            PyErr_CheckSignals()
    return rc
