# C declarations for kp_wait.h (see the header for the contract).
from libc.stdint cimport uint32_t

cdef extern from "<time.h>" nogil:
    cdef struct timespec:
        long tv_sec
        long tv_nsec

cdef extern from "kp_wait.h" nogil:
    const char *KP_BACKEND_NAME
    int KP_WAIT_WOKEN
    int KP_WAIT_CHANGED
    int KP_WAIT_TIMEDOUT
    int KP_WAIT_INTR

    void kp_deadline_after(double seconds, timespec *out)
    bint kp_deadline_passed(const timespec *deadline)
    void kp_wait_init()
    int kp_wait(uint32_t *word, uint32_t expected, const timespec *deadline, int check_signals)
    void kp_wake_one(uint32_t *word)
    void kp_wake_all(uint32_t *word)
