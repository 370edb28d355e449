"""kpark._janitor: releases the threads of pools and executors nobody refers to.

A pool or executor that becomes unreachable without close()/shutdown() must
let its OS threads go, as ThreadPoolExecutor's workers do when it is
collected.  The weakref finalizer that notices runs in whatever thread drops
the last reference: maybe one of the pool's own threads, maybe one holding a
lock the release would need (threading's own, while it starts a thread).
So the finalizer only queues the release and wakes this module's KThread,
neither of which takes a lock or waits (`release_later`); the janitor runs
the releases, one after another, where any call is safe.  Nobody waits for
a release.

The janitor runs while some pool may need it: each pool `enroll()`s in its
constructor (which starts the janitor if needed) and is `discharge()`d once
closed or released; the discharge that leaves none stops the janitor, so a
process whose pools are all gone has no janitor thread.  In a fork child it
is gone, as every KThread is, and so are the parent's pools.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import deque
from typing import Callable, Deque, List, Optional

from kpark._kcore import current, schedule, should_stop
from kpark.thread import KThread

__all__: List[str] = []

_jobs: Deque[Callable[[], object]] = deque()
# _lock guards _enrolled and _janitor; a finalizer never takes it.
_lock = threading.Lock()
_enrolled = 0
_janitor: Optional[KThread] = None


def enroll() -> None:
    """Count one more pool that may need releasing; start the janitor if none runs.

    Constructors call it, before making their threads.  Blocks only while
    a new janitor starts.  Returns None; raises what starting a thread
    raises (nothing is counted then).
    """
    global _enrolled, _janitor
    with _lock:
        if _janitor is None or not _janitor.is_alive():  # (stopped at exit)
            # Published before it runs: _run ends once it is not _janitor.
            _janitor = k = KThread(_run, name="kpark-janitor")
            try:
                k.start()
            except BaseException:
                _janitor = None
                k.stop()
                raise
        _enrolled += 1


def discharge() -> None:
    """Count one pool less: closed, released, or never finished constructing.

    Any thread, not from a finalizer (it may wait for the janitor to
    exit).  The discharge that leaves no pool stops the janitor; from the
    janitor itself, the janitor ends after its current job.  Returns None.
    """
    global _enrolled, _janitor
    retired = None
    with _lock:
        _enrolled -= 1
        if _enrolled == 0:
            retired, _janitor = _janitor, None
    if retired is not None and retired is not current():
        retired.stop()  # its jobs are short: request_stop()s, a thread start


def release_later(release: Callable[[], object]) -> None:
    """Queue `release()` for the janitor and wake it.

    Any thread, any context (a weakref finalizer, a thread holding locks):
    takes no lock and never blocks.  The caller's pool is enrolled, so a
    janitor runs.  Returns None.
    """
    _jobs.append(release)  # deque.append: atomic on every build
    k = _janitor
    if k is not None:
        k.wake()  # leaves a token if it is busy: it looks at _jobs again


def _run(_: object) -> None:
    """The janitor's threadfn: run queued releases; sleep when there are none."""
    me = current()
    while True:
        while _jobs:
            try:
                job = _jobs.popleft()
            except IndexError:
                break
            try:
                job()
            except BaseException:  # a release never takes the janitor down
                logging.getLogger("kpark").exception("releasing an unreachable pool failed")
            del job
        if _janitor is not me:
            return  # retired by the last discharge (from this thread's job)
        # A release_later() after the check left a wake token: no job waits.
        schedule()
        if should_stop():
            return


def _after_fork_in_child() -> None:
    # The janitor did not survive fork(); the parent's pools are closed here
    # (kpark.percpu's hook) and their queued releases are not ours.
    global _lock, _enrolled, _janitor
    _lock = threading.Lock()
    _enrolled = 0
    _janitor = None
    _jobs.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
