# cython: language_level=3, freethreading_compatible=True
"""kpark's compiled core as one extension module.

kpark._flags (Flags), kpark._completion (Completion) and kpark._kcore (the
KThread state machine) are one .pyx each, compiled together here so that
the C they share - kp_spin.h's spin budgets, GIL-release epoch and main
thread record, kp_wait.h's wait backend - exists once, and is set up once,
below.  The three public modules re-export their names from this one.
"""
from kpark.c_spin cimport (KP_SPIN_NS_DEFAULT, KP_GIL_SPIN_NS_DEFAULT,
                           kp_main_thread_ident, kp_spin_ns, kp_gil_spin_ns)
from kpark.c_wait cimport kp_wait_init

include "_flags.pyx"
include "_completion.pyx"
include "_kcore.pyx"

import os as _os
import threading as _threading


cdef void _note_main_thread(unsigned long ident) noexcept:
    # Which thread runs Python's signal handlers (wait_step slices its waits).
    global kp_main_thread_ident
    kp_main_thread_ident = ident


cdef int _configure_spins() except -1:
    # Plain stores: this runs at import, before any kpark wait can run.
    global kp_spin_ns, kp_gil_spin_ns
    multi = len(_os.sched_getaffinity(0)) > 1
    kp_spin_ns = int(_os.environ.get("KPARK_SPIN_NS", KP_SPIN_NS_DEFAULT)) if multi else 0
    kp_gil_spin_ns = (int(_os.environ.get("KPARK_GIL_SPIN_NS", KP_GIL_SPIN_NS_DEFAULT))
                      if multi else 0)
    return 0


def spin_budgets():
    """(spin_ns, gil_spin_ns): the spin budgets every kpark wait uses.

    KPARK_SPIN_NS (default 20000): how long a waiter spins on the word it
    waits for before it sleeps; KPARK_GIL_SPIN_NS (default 5000): how long a
    woken waiter spins for its waker to drop the GIL.  Both are read once, at
    import, and are 0 when this process may use only one CPU.  Any thread.
    """
    return kp_spin_ns, kp_gil_spin_ns


kp_wait_init()
_configure_spins()
_note_main_thread(_threading.main_thread().ident)
if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(
        after_in_child=lambda: _note_main_thread(_threading.get_ident()))
