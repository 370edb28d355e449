# C declarations for kp_sched.h (see the header for the contract).

cdef extern from "kp_sched.h" nogil:
    int kp_pin_self(int cpu)
    int kp_name_self(const char *name)
    void *kp_current_get()
    void kp_current_set(void *k)
