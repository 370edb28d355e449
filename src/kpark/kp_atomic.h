/* kp_atomic.h - atomic words for kpark (GCC/Clang __atomic builtins).
 *
 * Tiny inline wrappers so the Cython code can name the memory ordering of
 * every operation at the call site.  Each caller states why it needs the
 * ordering it passes; these helpers add no ordering of their own.
 */
#ifndef KP_ATOMIC_H
#define KP_ATOMIC_H

#include <stdint.h>

#define KP_RELAXED __ATOMIC_RELAXED
#define KP_ACQUIRE __ATOMIC_ACQUIRE
#define KP_RELEASE __ATOMIC_RELEASE
#define KP_ACQ_REL __ATOMIC_ACQ_REL
#define KP_SEQ_CST __ATOMIC_SEQ_CST

/* 64-bit flag words (kpark.Flags). */
static inline uint64_t kp_load64(const uint64_t *p, int mo) { return __atomic_load_n(p, mo); }
static inline uint64_t kp_fetch_or64(uint64_t *p, uint64_t v, int mo) { return __atomic_fetch_or(p, v, mo); }
static inline uint64_t kp_fetch_and64(uint64_t *p, uint64_t v, int mo) { return __atomic_fetch_and(p, v, mo); }

/* 32-bit words: futex words must be 32 bits wide. */
/* A full SEQ_CST fence: orders a store before it with a load after it. */
static inline void kp_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

static inline uint32_t kp_load32(const uint32_t *p, int mo) { return __atomic_load_n(p, mo); }
static inline void kp_store32(uint32_t *p, uint32_t v, int mo) { __atomic_store_n(p, v, mo); }
static inline uint32_t kp_fetch_add32(uint32_t *p, uint32_t v, int mo) { return __atomic_fetch_add(p, v, mo); }
static inline uint32_t kp_fetch_sub32(uint32_t *p, uint32_t v, int mo) { return __atomic_fetch_sub(p, v, mo); }
static inline uint32_t kp_fetch_or32(uint32_t *p, uint32_t v, int mo) { return __atomic_fetch_or(p, v, mo); }
static inline uint32_t kp_fetch_and32(uint32_t *p, uint32_t v, int mo) { return __atomic_fetch_and(p, v, mo); }

/* Strong compare-and-swap.  On failure *expected is refreshed with the
 * current value (loaded with `fail_mo`), so CAS loops need no extra load. */
static inline int kp_cas32(uint32_t *p, uint32_t *expected, uint32_t desired, int mo, int fail_mo)
{
    return __atomic_compare_exchange_n(p, expected, desired, 0, mo, fail_mo);
}

/* Busy-wait hint for bounded spins (never used while holding the GIL). */
static inline void kp_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
#endif
}

#endif /* KP_ATOMIC_H */
