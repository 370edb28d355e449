# cython: language_level=3, freethreading_compatible=True
"""kpark.bench._limit: what the machine can do, for the benchmark tables.

pingpong() is the "C limit" row of `python -m kpark bench`: the token
hand-off of kpark.Completion done entirely in C between two pthreads, with
the same futex protocol, the same spin budget and the same wait backend, and
no Python and no GIL (kp_limit.h).

gil_pingpong() is the floor of any hand-off between two Python threads while
a GIL exists: the same two spinning threads, but the receiver of each
hand-off takes the GIL and drops it again, as any thread must before it runs
Python code.  Nothing built on a GIL hands a token between two Python
threads faster than this.
"""
from libc.stdint cimport uint32_t
from libc.stdlib cimport malloc, free

from kpark.c_atomic cimport (kp_load32, kp_store32, kp_fetch_add32, kp_cpu_relax,
                             KP_ACQUIRE, KP_RELEASE, KP_RELAXED)
from kpark.c_wait cimport kp_wait_init, KP_BACKEND_NAME

import os as _os

from kpark._kcore import spin_budgets

cdef extern from "<sched.h>" nogil:
    int sched_yield()

cdef extern from "kp_limit.h" nogil:
    int kp_limit_pingpong(long samples, long batch, long warmup, long spin_ns,
                          int my_cpu, int peer_cpu, double *out)

kp_wait_init()

BACKEND = KP_BACKEND_NAME.decode()


def default_spin_ns():
    """The spin budget kpark's own waits use (kpark._kcore.spin_budgets())."""
    return spin_budgets()[0]


def pingpong(long samples=100, long batch=100, long warmup=1000, spin_ns=None, cpus=None):
    """Round trips of a token between two pthreads, in C, without the GIL.

    Returns `samples` floats: the mean seconds of one round trip in each
    batch of `batch` round trips (after `warmup` unrecorded ones).  spin_ns
    defaults to kpark's own budget (default_spin_ns()); `cpus` = (mine,
    peer's) pins the two threads, None leaves them to the scheduler.
    OSError if the peer thread cannot be created or pinned.
    """
    cdef long spin = default_spin_ns() if spin_ns is None else spin_ns
    cdef int mine = -1, peer = -1
    cdef int rc
    cdef double *out
    if samples < 1 or batch < 1 or warmup < 0:
        raise ValueError("samples and batch must be >= 1, warmup >= 0")
    if cpus is not None:
        mine, peer = cpus
    out = <double *>malloc(samples * sizeof(double))
    if out == NULL:
        raise MemoryError()
    try:
        with nogil:
            rc = kp_limit_pingpong(samples, batch, warmup, spin, mine, peer, out)
        if rc != 0:
            raise OSError(rc, f"C ping-pong failed: {_os.strerror(rc)}")
        return [out[i] * 1e-9 for i in range(samples)]
    finally:
        free(out)


cdef inline void _spin_for(uint32_t *turn, uint32_t want) noexcept nogil:
    cdef long i = 0
    while kp_load32(turn, KP_ACQUIRE) != want:
        kp_cpu_relax()
        i += 1
        if (i & 0x3FF) == 0:
            sched_yield()   # the peer may need this CPU (one CPU for both sides)


cdef inline void _spin_while(uint32_t *word, uint32_t value) noexcept nogil:
    # Bounded, like kpark's own GIL-epoch spin: the release we wait for may
    # have come before ours, and then the GIL is simply free.
    cdef long i
    for i in range(2000):
        if kp_load32(word, KP_RELAXED) != value:
            return
        kp_cpu_relax()


cdef class _GilRelay:
    """The two sides of gil_pingpong(); see there.

    Each hand-off is kpark.Completion's, minus the bytecode: pass the token
    while holding the GIL, drop the GIL (PyEval_SaveThread) and bump a
    GIL-release epoch, spin until the token is back and the peer has dropped
    the GIL after passing it, take the GIL (PyEval_RestoreThread).
    """
    cdef uint32_t turn
    cdef char _pad1[60]
    cdef uint32_t epoch
    cdef char _pad2[60]
    cdef long rounds

    cdef inline void _give_and_wait(self, uint32_t me, bint wait) noexcept nogil:
        cdef uint32_t mine
        mine = kp_fetch_add32(&self.epoch, 1, KP_RELAXED) + 1
        if wait:
            _spin_for(&self.turn, me)
            _spin_while(&self.epoch, mine)

    def peer(self):
        cdef long i
        with nogil:
            self._give_and_wait(1, True)
        for i in range(self.rounds):
            kp_store32(&self.turn, 0, KP_RELEASE)
            with nogil:
                self._give_and_wait(1, i + 1 < self.rounds)

    cdef int hand_off(self, long n) except -1:
        cdef long i
        for i in range(n):
            kp_store32(&self.turn, 1, KP_RELEASE)
            with nogil:
                self._give_and_wait(0, True)
        return 0


def gil_pingpong(long samples=100, long batch=100, long warmup=1000):
    """The GIL floor: pingpong()'s token hand-off between two Python threads
    where each side holds the GIL whenever it has the token, and nothing else.

    Any hand-off between two threads that run Python code needs at least
    this: the token reaches the other thread, which must then take the GIL
    the sender dropped.  The hand-off is kpark.Completion's (token passed
    under the GIL, a GIL-release epoch to spin on) without its bytecode and
    without its system calls: nobody sleeps.  Returns `samples` floats: mean
    seconds of one round trip per batch, like pingpong().
    """
    import threading
    cdef _GilRelay relay = _GilRelay()
    cdef long i, n = samples
    cdef double t0, t1
    if samples < 1 or batch < 1 or warmup < 0:
        raise ValueError("samples and batch must be >= 1, warmup >= 0")
    relay.rounds = warmup + samples * batch
    out = []
    t = threading.Thread(target=relay.peer, name="kpark-gil-relay", daemon=True)
    t.start()
    from time import perf_counter
    relay.hand_off(warmup)
    for i in range(n):
        t0 = perf_counter()
        relay.hand_off(batch)
        t1 = perf_counter()
        out.append((t1 - t0) / batch)
    t.join()
    return out

