# C declarations for kp_spin.h (see the header for the contract).
from libc.stdint cimport uint32_t

cdef extern from "kp_spin.h" nogil:
    long KP_SPIN_NS_DEFAULT
    long KP_GIL_SPIN_NS_DEFAULT
    bint KP_NEEDS_SIGNAL_SLICES
    unsigned long kp_main_thread_ident
    long kp_spin_ns
    long kp_gil_spin_ns
    bint kp_spin_while_equal(const uint32_t *word, uint32_t expected, long budget_ns)
    uint32_t kp_gil_released()
    void kp_before_gil(uint32_t epoch_on_entry, uint32_t peer_cpu)
    long kp_spin_budget(uint32_t peer_cpu)
    uint32_t kp_this_cpu()
