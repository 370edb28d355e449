# Inline helpers for the modules that block: timeouts to deadlines, and one
# wait step that takes the GIL back to run signal handlers.  For the .pyx
# files of kpark._native only (kp_spin.h's statics).
from libc.math cimport isnan
from libc.stdint cimport uint32_t
from cpython.exc cimport PyErr_CheckSignals

from kpark.c_spin cimport KP_NEEDS_SIGNAL_SLICES, kp_main_thread_ident
from kpark.c_wait cimport timespec, kp_deadline_after, kp_wait, KP_WAIT_INTR


cdef extern from "pythread.h":
    unsigned long PyThread_get_thread_ident() nogil


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
