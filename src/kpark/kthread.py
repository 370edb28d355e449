"""The kernel's kthread names with the kernel's return conventions.

For code ported from C (kernel/kthread.c): errors come back as negative
errno values where the kernel returns them, everything else is kpark's
KThread underneath.
"""
from __future__ import annotations

import errno
from typing import Any, Callable

from kpark._kcore import parkme, should_park, should_stop
from kpark.thread import KThread, ThreadExitedError, create_on_cpu

__all__ = [
    "kthread_create", "kthread_create_on_cpu", "kthread_bind", "wake_up_process",
    "kthread_park", "kthread_unpark", "kthread_stop", "kthread_should_stop",
    "kthread_should_park", "kthread_parkme", "kthread_data",
]


def kthread_create(threadfn: Callable[[Any], Any], data: Any, namefmt: str,
                   *args: Any) -> KThread:
    """Create a sleeping KThread named `namefmt % args`; wake_up_process starts it."""
    return KThread(threadfn, data, name=namefmt % args if args else namefmt)


def kthread_create_on_cpu(threadfn: Callable[[Any], Any], data: Any, cpu: int,
                          namefmt: str) -> KThread:
    """Create a per-CPU KThread bound to `cpu`, parked; kthread_unpark starts it."""
    return create_on_cpu(threadfn, data, cpu, namefmt)


def kthread_bind(k: KThread, cpu: int) -> None:
    """Bind a not-yet-woken KThread to `cpu`."""
    k.bind(cpu)


def wake_up_process(k: KThread) -> int:
    """Wake `k`: 1 if it was asleep and this woke it, else 0."""
    return 1 if k.wake() else 0


def kthread_park(k: KThread) -> int:
    """Park `k` and wait until it is parked: 0, or -ENOSYS if it has exited."""
    try:
        k.park()
    except ThreadExitedError:
        return -errno.ENOSYS
    return 0


def kthread_unpark(k: KThread) -> None:
    """Release `k` from its park loop."""
    k.unpark()


def kthread_stop(k: KThread) -> Any:
    """Stop `k`: threadfn's return value, or -EINTR if threadfn never ran."""
    result = k.stop()
    return result if k.started else -errno.EINTR


def kthread_should_stop() -> bool:
    """In a KThread: True once kthread_stop() was called on it."""
    return should_stop()


def kthread_should_park() -> bool:
    """In a KThread: True while a park request is pending."""
    return should_park()


def kthread_parkme() -> None:
    """In a KThread: park here if asked to."""
    parkme()


def kthread_data(k: KThread) -> Any:
    """The `data` that `k` was created with."""
    return k.data
