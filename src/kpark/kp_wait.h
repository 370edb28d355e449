/* kp_wait.h - "sleep while this word still holds this value", and its wake.
 *
 * Two backends with one contract, chosen at build time:
 *   futex   (default on Linux): FUTEX_WAIT_PRIVATE / FUTEX_WAKE_PRIVATE.
 *   pthread (KPARK_BACKEND=pthread, defines KPARK_BACKEND_PTHREAD): a table of
 *           mutex + condition-variable buckets hashed by address, for systems
 *           without futexes.
 *
 * Contract of kp_wait(word, expected, deadline, check_signals):
 *   - returns KP_WAIT_CHANGED at once if *word != expected;
 *   - otherwise sleeps until a kp_wake_*(word) that follows a change of *word,
 *     the absolute CLOCK_MONOTONIC `deadline` (NULL: none), a signal, or for
 *     no reason at all (spurious wake-up).  Callers always re-read the word.
 *   - KP_WAIT_INTR means "check for Python signals, then carry on": a signal
 *     interrupted the futex, or (pthread backend, where signals do not
 *     interrupt condition waits) a 50 ms slice ended for a caller that asked
 *     for signal checks.
 * A waker changes the word first, then calls kp_wake_*; the callers make that
 * call only when the word says someone sleeps, so an uncontended wake is a
 * plain atomic operation with no system call.
 */
#ifndef KP_WAIT_H
#define KP_WAIT_H

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <time.h>

#define KP_WAIT_WOKEN    0  /* woken or spurious: re-read the word */
#define KP_WAIT_CHANGED  1  /* the word did not hold `expected` */
#define KP_WAIT_TIMEDOUT 2  /* the deadline passed */
#define KP_WAIT_INTR     3  /* check signals, then re-read the word */

/* ---- absolute CLOCK_MONOTONIC deadlines --------------------------------- */

/* Fill *out with now + seconds (seconds >= 0; huge values saturate). */
static inline void kp_deadline_after(double seconds, struct timespec *out)
{
    clock_gettime(CLOCK_MONOTONIC, out);
    if (seconds > 1e9)   /* ~31 years: treat as "far away", avoid overflow */
        seconds = 1e9;
    time_t whole = (time_t)seconds;
    long nsec = (long)((seconds - (double)whole) * 1e9);
    out->tv_sec += whole;
    out->tv_nsec += nsec;
    if (out->tv_nsec >= 1000000000L) {
        out->tv_sec += 1;
        out->tv_nsec -= 1000000000L;
    }
}

static inline int kp_deadline_passed(const struct timespec *deadline)
{
    struct timespec now;
    if (deadline == NULL)
        return 0;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > deadline->tv_sec ||
           (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

#ifndef KPARK_BACKEND_PTHREAD
/* ---- futex backend -------------------------------------------------------- */
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KP_BACKEND_NAME "futex"

static inline void kp_wait_init(void) {}

static inline int kp_wait(uint32_t *word, uint32_t expected,
                          const struct timespec *deadline, int check_signals)
{
    long rc;
    (void)check_signals;  /* a signal interrupts a futex wait by itself */
    if (deadline == NULL)
        rc = syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
    else
        /* FUTEX_WAIT takes a relative timeout, which a restart after a signal
         * would stretch; the BITSET form takes an absolute CLOCK_MONOTONIC
         * time, which it does not. */
        rc = syscall(SYS_futex, word, FUTEX_WAIT_BITSET_PRIVATE, expected,
                     deadline, NULL, FUTEX_BITSET_MATCH_ANY);
    if (rc == 0)
        return KP_WAIT_WOKEN;
    switch (errno) {
    case EAGAIN:    return KP_WAIT_CHANGED;
    case ETIMEDOUT: return KP_WAIT_TIMEDOUT;
    case EINTR:     return KP_WAIT_INTR;
    default:        return KP_WAIT_WOKEN;  /* never expected; re-read the word */
    }
}

static inline void kp_wake_one(uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static inline void kp_wake_all(uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

#else
/* ---- pthread backend ------------------------------------------------------ */
#include <pthread.h>

#define KP_BACKEND_NAME "pthread"
#define KP_BUCKETS 64
#define KP_SIGNAL_SLICE_NS 50000000L  /* 50 ms between signal checks */

struct kp_bucket {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned sleepers;          /* guarded by lock */
} __attribute__((aligned(64)));

static struct kp_bucket kp_buckets[KP_BUCKETS];
static pthread_once_t kp_buckets_once = PTHREAD_ONCE_INIT;

static void kp_buckets_reset(void)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    for (int i = 0; i < KP_BUCKETS; i++) {
        pthread_mutex_init(&kp_buckets[i].lock, NULL);
        pthread_cond_init(&kp_buckets[i].cond, &attr);
        kp_buckets[i].sleepers = 0;
    }
    pthread_condattr_destroy(&attr);
}

static void kp_buckets_first_init(void)
{
    kp_buckets_reset();
    /* A bucket lock held by another thread at fork() would stay locked
     * forever in the child, where that thread does not exist. */
    pthread_atfork(NULL, NULL, kp_buckets_reset);
}

static inline void kp_wait_init(void) { pthread_once(&kp_buckets_once, kp_buckets_first_init); }

static inline struct kp_bucket *kp_bucket_of(const uint32_t *word)
{
    uintptr_t a = (uintptr_t)word;
    return &kp_buckets[((a >> 2) * 0x9E3779B97F4A7C15ull) >> 58];
}

static inline int kp_wait(uint32_t *word, uint32_t expected,
                          const struct timespec *deadline, int check_signals)
{
    struct kp_bucket *b = kp_bucket_of(word);
    struct timespec slice;
    const struct timespec *until = deadline;
    int rc = 0, sliced = 0;

    if (check_signals) {
        kp_deadline_after(KP_SIGNAL_SLICE_NS / 1e9, &slice);
        if (deadline == NULL || slice.tv_sec < deadline->tv_sec ||
            (slice.tv_sec == deadline->tv_sec && slice.tv_nsec < deadline->tv_nsec)) {
            until = &slice;
            sliced = 1;
        }
    }
    pthread_mutex_lock(&b->lock);
    /* The waker changes the word before it takes this lock, so checking the
     * word under the lock cannot miss a change whose wake is still to come. */
    if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != expected) {
        pthread_mutex_unlock(&b->lock);
        return KP_WAIT_CHANGED;
    }
    b->sleepers++;
    if (until == NULL)
        rc = pthread_cond_wait(&b->cond, &b->lock);
    else
        rc = pthread_cond_timedwait(&b->cond, &b->lock, until);
    b->sleepers--;
    pthread_mutex_unlock(&b->lock);
    if (rc == ETIMEDOUT)
        return sliced ? KP_WAIT_INTR : KP_WAIT_TIMEDOUT;
    return KP_WAIT_WOKEN;
}

/* Words share buckets, so a wake must reach every sleeper of the bucket:
 * each re-reads its own word and sleeps again if nothing changed for it. */
static inline void kp_wake_all(uint32_t *word)
{
    struct kp_bucket *b = kp_bucket_of(word);
    pthread_mutex_lock(&b->lock);
    if (b->sleepers)
        pthread_cond_broadcast(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

static inline void kp_wake_one(uint32_t *word) { kp_wake_all(word); }

#endif /* KPARK_BACKEND_PTHREAD */

#endif /* KP_WAIT_H */
