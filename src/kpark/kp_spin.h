/* kp_spin.h - bounded spins before a sleep, and the GIL-release epoch.
 *
 * The statics below exist once: kpark._flags, kpark._completion and
 * kpark._kcore are compiled as one extension (kpark._native, _native.pyx
 * includes the three .pyx), so every wait in kpark shares one epoch, one
 * pair of spin budgets and one record of the main thread, set up once at
 * import (_native.pyx).  Include this header from that extension only.
 */
#ifndef KP_SPIN_H
#define KP_SPIN_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <stdint.h>
#include <time.h>

#include "kp_atomic.h"

/* The defaults of KPARK_SPIN_NS and KPARK_GIL_SPIN_NS (nanoseconds). */
#define KP_SPIN_NS_DEFAULT     20000L
#define KP_GIL_SPIN_NS_DEFAULT 5000L

/* Only the pthread backend needs to know whether to slice a wait for
 * signal checks; futex waits are interrupted by signals themselves. */
#ifdef KPARK_BACKEND_PTHREAD
#define KP_NEEDS_SIGNAL_SLICES 1
#else
#define KP_NEEDS_SIGNAL_SLICES 0
#endif

/* The thread that runs Python's signal handlers (set at import and in a
 * fork child).  Plain: written while no other kpark thread runs. */
static unsigned long kp_main_thread_ident = 0;

/* Spin budgets in nanoseconds (0 on one CPU, where spinning only delays the
 * thread we wait for).  Plain: written once at import, before any wait. */
static long kp_spin_ns = 0;
static long kp_gil_spin_ns = 0;

/* The GIL-release epoch: every kpark wait bumps it right after it released
 * the GIL.  A waiter whose condition came true while the epoch still holds
 * the value it saw on entry was woken by a thread that still holds the GIL;
 * that thread usually releases it moments later in a kpark wait of its own
 * (ping-pong, park/unpark round trips).  Spinning for that (bounded, without
 * the GIL) beats sleeping on the GIL's condition variable and being woken by
 * a second system call. */
static uint32_t kp_gil_epoch = 0;

static inline long kp_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

/* Spin up to budget_ns while *word == expected; returns whether it changed.
 * RELAXED loads: the caller re-reads the word with the ordering it needs. */
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

/* On a free-threaded build (Py_GIL_DISABLED, from pyconfig.h) there is no
 * GIL to hand over: a woken waiter never waits for its waker to release one,
 * so the epoch is not kept and kp_before_gil() does not spin.  Spinning there
 * only burnt up to KPARK_GIL_SPIN_NS per hand-off until the waker happened to
 * enter its next wait. */
static inline uint32_t kp_gil_released(void)
{
#ifdef Py_GIL_DISABLED
    return 0;
#else
    /* RELAXED: a hint for spinning, ordering nothing. */
    return __atomic_add_fetch(&kp_gil_epoch, 1, __ATOMIC_RELAXED);
#endif
}

/* Spin only for a peer that can act meanwhile.  `peer_cpu` is where the
 * thread we wait for runs (or last ran), as CPU + 1, 0 for unknown: when that
 * is our own CPU, spinning keeps it from running until we give up, so we
 * sleep at once instead (per-CPU workers and their controller). */
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

/* Before taking the GIL back: spin (bounded) while the thread that woke us
 * may still hold it, i.e. while the epoch is what it was on entry. */
static inline void kp_before_gil(uint32_t epoch_on_entry, uint32_t peer_cpu)
{
#ifdef Py_GIL_DISABLED
    (void)epoch_on_entry;
    (void)peer_cpu;
#else
    if (kp_gil_spin_ns > 0 && kp_peer_elsewhere(peer_cpu))
        kp_spin_while_equal(&kp_gil_epoch, epoch_on_entry, kp_gil_spin_ns);
#endif
}

#endif /* KP_SPIN_H */
