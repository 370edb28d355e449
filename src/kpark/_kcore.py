"""kpark._kcore: the KThread state machine on one futex word.

The code is _kcore.pyx, compiled into kpark._native together with Flags and
Completion (one copy of the C state they share); this is its public name.
"""
from kpark._native import (BACKEND, BITS, KCore, ThreadExitedError, current, idle, parkme,
                           schedule, should_park, should_stop, spin_budgets, this_cpu)

__all__ = ["BACKEND", "BITS", "KCore", "ThreadExitedError", "current", "idle", "parkme",
           "schedule", "should_park", "should_stop", "spin_budgets", "this_cpu"]
