/* kp_limit.h - the C limit: a token handed back and forth between two
 * pthreads with kpark's own wait protocol, with no Python and no GIL.
 *
 * Every benchmark table of `python -m kpark bench` shows this row, so each
 * kpark number can be read against what the machine itself can do.  The
 * protocol is kpark.Completion's, copied line for line in C:
 *
 *   complete(c): remember our CPU (a spin hint); count += 1 (SEQ_CST CAS);
 *                FUTEX_WAKE only if `sleepers` says someone may sleep.
 *   wait(c):     take a count if there is one; else spin up to `spin_ns` on
 *                the count (skipped when the completer last ran on our CPU);
 *                else sleepers += 1, re-check (SEQ_CST), FUTEX_WAIT on 0.
 *
 * with the same spin budget (KPARK_SPIN_NS, passed in by the caller) and the
 * same wait backend (kp_wait.h: futex, or mutex + condition variable when
 * built with KPARK_BACKEND=pthread).  What is missing is exactly what Python
 * adds: method calls, reference counting, and the GIL.
 *
 * One round trip: the caller completes `ping` and waits for `pong`; the
 * peer waits for `ping` and completes `pong`.
 */
#ifndef KP_LIMIT_H
#define KP_LIMIT_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kp_atomic.h"
#include "kp_wait.h"

struct kp_limit_completion {
    uint32_t count;
    uint32_t sleepers;
    uint32_t completer_cpu;     /* CPU + 1 of the last complete(); 0 unknown */
} __attribute__((aligned(64)));

struct kp_limit_pair {
    struct kp_limit_completion ping;
    struct kp_limit_completion pong;
    long rounds;                /* round trips the peer answers */
    long spin_ns;
    int peer_cpu;               /* -1: not pinned */
};

static inline long kp_limit_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static inline uint32_t kp_limit_this_cpu(void) { return (uint32_t)(sched_getcpu() + 1); }

static inline int kp_limit_try_consume(uint32_t *count)
{
    uint32_t v = kp_load32(count, KP_ACQUIRE);
    while (v != 0)
        if (kp_cas32(count, &v, v - 1, KP_ACQUIRE, KP_ACQUIRE))
            return 1;
    return 0;
}

static inline void kp_limit_complete(struct kp_limit_completion *c)
{
    uint32_t v = kp_load32(&c->count, KP_RELAXED);
    kp_store32(&c->completer_cpu, kp_limit_this_cpu(), KP_RELAXED);
    while (!kp_cas32(&c->count, &v, v + 1, KP_SEQ_CST, KP_RELAXED))
        ;
    if (kp_load32(&c->sleepers, KP_SEQ_CST) != 0)
        kp_wake_one(&c->count);
}

static inline void kp_limit_wait(struct kp_limit_completion *c, long spin_ns)
{
    uint32_t peer;
    if (kp_limit_try_consume(&c->count))
        return;
    peer = kp_load32(&c->completer_cpu, KP_RELAXED);
    if (spin_ns > 0 && (peer == 0 || (int)peer - 1 != sched_getcpu())) {
        long end = kp_limit_now_ns() + spin_ns;
        int i;
        for (i = 1; kp_load32(&c->count, KP_RELAXED) == 0; i++) {
            kp_cpu_relax();
            if ((i & 31) == 0 && kp_limit_now_ns() >= end)
                break;
        }
        if (kp_limit_try_consume(&c->count))
            return;
    }
    kp_fetch_add32(&c->sleepers, 1, KP_SEQ_CST);
    for (;;) {
        if (kp_load32(&c->count, KP_SEQ_CST) != 0 && kp_limit_try_consume(&c->count))
            break;
        kp_wait(&c->count, 0, NULL, 0);
        if (kp_limit_try_consume(&c->count))
            break;
    }
    kp_fetch_sub32(&c->sleepers, 1, KP_RELAXED);
}

static inline int kp_limit_pin(int cpu)
{
    cpu_set_t set;
    if (cpu < 0)
        return 0;
    if (cpu >= CPU_SETSIZE)
        return EINVAL;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set) == 0 ? 0 : errno;
}

static void *kp_limit_peer(void *arg)
{
    struct kp_limit_pair *p = (struct kp_limit_pair *)arg;
    long i;
    kp_limit_pin(p->peer_cpu);
    for (i = 0; i < p->rounds; i++) {
        kp_limit_wait(&p->ping, p->spin_ns);
        kp_limit_complete(&p->pong);
    }
    return NULL;
}

/* Hand the token back and forth `samples * batch` times (plus `warmup`
 * round trips first, not recorded).  out[i] receives the mean nanoseconds
 * of one round trip over the i-th batch.  `my_cpu`/`peer_cpu` pin the two
 * threads (-1: leave them where the scheduler puts them).  Returns 0 or an
 * errno value (thread creation or pinning failed). */
static int kp_limit_pingpong(long samples, long batch, long warmup, long spin_ns,
                             int my_cpu, int peer_cpu, double *out)
{
    struct kp_limit_pair *p;
    pthread_t peer;
    cpu_set_t saved;
    int rc, restore = 0;
    long i, j;

    if (samples < 0 || batch <= 0 || warmup < 0)
        return EINVAL;
    /* The peer pins itself and cannot report failure: check its CPU here. */
    if (peer_cpu >= 0) {
        if (peer_cpu >= CPU_SETSIZE || sched_getaffinity(0, sizeof(saved), &saved) != 0
                || !CPU_ISSET(peer_cpu, &saved))
            return EINVAL;
    }
    if (posix_memalign((void **)&p, 64, sizeof(*p)) != 0)
        return ENOMEM;
    memset(p, 0, sizeof(*p));
    p->rounds = warmup + samples * batch;
    p->spin_ns = spin_ns;
    p->peer_cpu = peer_cpu;
    if (my_cpu >= 0) {
        if (sched_getaffinity(0, sizeof(saved), &saved) == 0)
            restore = 1;
        rc = kp_limit_pin(my_cpu);
        if (rc != 0) {
            free(p);
            return rc;
        }
    }
    rc = pthread_create(&peer, NULL, kp_limit_peer, p);
    if (rc != 0)
        goto out;
    for (i = 0; i < warmup; i++) {
        kp_limit_complete(&p->ping);
        kp_limit_wait(&p->pong, spin_ns);
    }
    for (i = 0; i < samples; i++) {
        long t0 = kp_limit_now_ns();
        for (j = 0; j < batch; j++) {
            kp_limit_complete(&p->ping);
            kp_limit_wait(&p->pong, spin_ns);
        }
        out[i] = (double)(kp_limit_now_ns() - t0) / (double)batch;
    }
    pthread_join(peer, NULL);
out:
    if (restore)
        sched_setaffinity(0, sizeof(saved), &saved);
    free(p);
    return rc;
}

#endif /* KP_LIMIT_H */
