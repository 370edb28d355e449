"""Hot path rule 4: no Python object is allocated on park/unpark/wake paths.

tracemalloc sees every allocation made through Python's allocators.  After
reset_peak(), a peak above the current size means something was allocated
(and maybe freed again) in between; the calls under test must leave the
peak exactly where it was.
"""
import tracemalloc

import pytest

from kpark import Completion, KThread, parkme, schedule, should_park, should_stop

pytestmark = pytest.mark.timeout(60)


def _kernel_loop(_data):
    while not should_stop():
        if should_park():
            parkme()
            continue
        schedule()


def _allocated_during(fn, rounds=200):
    """Bytes by which the traced peak rose above the start while fn() ran."""
    assert rounds < 256  # small ints are cached: the loop counter allocates nothing
    fn()  # warm up: first calls may fill caches (method lookups, freelists)
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        i = 0
        tracemalloc.reset_peak()
        while i < rounds:
            fn()
            i += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - start


@pytest.fixture
def running():
    k = KThread(_kernel_loop)
    k.start()
    yield k
    k.stop(timeout=10)


def test_wake_allocates_nothing(running):
    k = running
    wake = k._core.wake  # the compiled entry point that KThread.wake calls
    assert _allocated_during(wake) == 0


def test_park_unpark_allocate_nothing(running):
    core = running._core

    def cycle():
        core.park()
        core.unpark()

    assert _allocated_during(cycle) == 0


def test_wake_of_parked_thread_allocates_nothing(running):
    running.park()
    try:
        assert _allocated_during(running._core.wake) == 0
    finally:
        running.unpark()


def test_completion_paths_allocate_nothing():
    c = Completion()

    def cycle():
        c.complete()
        c.wait()
        c.complete()
        c.try_wait()

    assert _allocated_during(cycle) == 0


def test_the_check_can_fail():
    # The measurement sees an allocation when there is one, and none otherwise.
    keep = []
    assert _allocated_during(lambda: keep.append(object()), rounds=10) > 0
    assert _allocated_during(lambda: None) == 0


def test_public_kthread_methods_allocate_nothing(running):
    k = running

    def cycle():
        k.wake()
        k.park()
        k.wake()
        k.unpark()

    assert _allocated_during(cycle) == 0
