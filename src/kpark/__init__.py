"""kpark: the Linux kernel's kthread park/unpark facility for Python threads.

Threads that park when their CPU goes away and unpark when it returns,
instead of being torn down and made again, on a compiled futex hot path.
"""
from kpark._completion import Completion
from kpark._flags import Flags
from kpark._kcore import BACKEND, current, parkme, schedule, should_park, should_stop
from kpark.thread import KThread, ThreadExitedError, create_on_cpu
from kpark.percpu import PerCPUThreads  # noqa: E402  (after thread: exit order)
from kpark.executor import PerCPUExecutor  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "BACKEND", "Completion", "Flags", "KThread", "PerCPUExecutor", "PerCPUThreads",
    "ThreadExitedError",
    "create_on_cpu", "current", "parkme", "schedule", "should_park", "should_stop",
]
