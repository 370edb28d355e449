# cython: language_level=3, freethreading_compatible=True
"""kpark's compiled core as one extension module.

kpark._flags (Flags), kpark._completion (Completion), kpark._kcore (the
KThread state machine), kpark._futurecore (the executor's future) and
kpark._workqueue (the executor's queues and worker loop) are one .pyx each,
compiled together here so that the C they share - kp_spin.h's spin
budgets, GIL-release epoch and main thread record, kp_wait.h's wait
backend - exists once, and is set up once, below; the future calls the
completion and reads the KThread word, and the worker loop sleeps on it and
runs the future, without a Python call.  The five modules of those names
re-export theirs from this one.
"""
from kpark.c_spin cimport (KP_SPIN_NS_DEFAULT, KP_GIL_SPIN_NS_DEFAULT,
                           kp_main_thread_ident, kp_spin_ns, kp_gil_spin_ns)
from kpark.c_wait cimport kp_wait_init

include "_flags.pyx"
include "_completion.pyx"
include "_kcore.pyx"
include "_futurecore.pyx"
include "_workqueue.pyx"

import os as _os
import threading as _threading


cdef void _note_main_thread(unsigned long ident) noexcept:
    # Which thread runs Python's signal handlers (wait_step slices its waits).
    global kp_main_thread_ident
    kp_main_thread_ident = ident


# Spin budgets above a second are a mistake (a waiter would burn a CPU that
# long before sleeping); the bound also keeps them inside the C type.
_SPIN_NS_MAX = 1_000_000_000


def _spin_ns_from_env(name, default):
    """The KPARK_*_SPIN_NS variable `name`, validated: ValueError names it."""
    raw = _os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        value = -1
    if not 0 <= value <= _SPIN_NS_MAX:
        raise ValueError(f"{name} must be a whole number of nanoseconds from 0 to "
                         f"{_SPIN_NS_MAX}, got {raw!r}")
    return value


cdef int _configure_spins() except -1:
    # Plain stores: this runs at import, before any kpark wait can run.
    # Both variables are validated even where they go unused (one CPU).
    global kp_spin_ns, kp_gil_spin_ns
    spin = _spin_ns_from_env("KPARK_SPIN_NS", KP_SPIN_NS_DEFAULT)
    gil_spin = _spin_ns_from_env("KPARK_GIL_SPIN_NS", KP_GIL_SPIN_NS_DEFAULT)
    # The process's allowed CPUs (the main thread's affinity), as everywhere
    # in kpark (kpark.thread._allowed_cpus), whichever thread imports.
    multi = len(_os.sched_getaffinity(_os.getpid())) > 1
    kp_spin_ns = spin if multi else 0
    kp_gil_spin_ns = gil_spin if multi else 0
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
