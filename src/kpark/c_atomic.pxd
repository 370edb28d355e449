# C declarations for kp_atomic.h (see the header for the contract).
from libc.stdint cimport uint32_t, uint64_t

cdef extern from "kp_atomic.h" nogil:
    int KP_RELAXED
    int KP_ACQUIRE
    int KP_RELEASE
    int KP_ACQ_REL
    int KP_SEQ_CST

    uint64_t kp_load64(const uint64_t *p, int mo)
    uint64_t kp_fetch_or64(uint64_t *p, uint64_t v, int mo)
    uint64_t kp_fetch_and64(uint64_t *p, uint64_t v, int mo)

    uint32_t kp_load32(const uint32_t *p, int mo)
    void kp_store32(uint32_t *p, uint32_t v, int mo)
    uint32_t kp_fetch_add32(uint32_t *p, uint32_t v, int mo)
    uint32_t kp_fetch_sub32(uint32_t *p, uint32_t v, int mo)
    uint32_t kp_fetch_or32(uint32_t *p, uint32_t v, int mo)
    uint32_t kp_fetch_and32(uint32_t *p, uint32_t v, int mo)
    bint kp_cas32(uint32_t *p, uint32_t *expected, uint32_t desired, int mo, int fail_mo)

    void kp_fence()
    void kp_cpu_relax()
