"""kpark.kthread: the kernel's kthread names with the kernel's return conventions.

Each name of the module, used the way code ported from kernel/kthread.c
uses it: wake_up_process -> 1/0, kthread_park -> 0 or -ENOSYS,
kthread_stop -> threadfn's value or -EINTR, namefmt formatting, per-CPU
threads, kthread_should_stop/should_park/parkme inside the thread,
kthread_data and kthread_bind.
"""
from __future__ import annotations

import errno
import os
import threading

import pytest

import kpark
import kpark.kthread as kt
from kpark import Completion, KThread, schedule
from kpark.kthread import (kthread_bind, kthread_create, kthread_create_on_cpu,
                           kthread_data, kthread_park, kthread_parkme,
                           kthread_should_park, kthread_should_stop,
                           kthread_stop, kthread_unpark, wake_up_process)

from conftest import allowed_cpus, task_comm, wait_for

pytestmark = pytest.mark.timeout(60)

NAMES = ["kthread_create", "kthread_create_on_cpu", "kthread_bind", "wake_up_process",
         "kthread_park", "kthread_unpark", "kthread_stop", "kthread_should_stop",
         "kthread_should_park", "kthread_parkme", "kthread_data"]


def test_module_exports_every_kernel_name():
    assert sorted(kt.__all__) == sorted(NAMES)
    for name in NAMES:
        assert callable(getattr(kt, name)), name


def wake(k):
    """wake_up_process(k), then wait until threadfn was entered: a park or
    stop sent right after the first wake may otherwise come before threadfn
    runs (then threadfn never runs, as in the kernel)."""
    assert wake_up_process(k) == 1
    wait_for(lambda: k.started, msg="threadfn entered")


def smpboot_fn(log):
    """A kernel-style thread function (smpboot_thread_fn's shape)."""
    def fn(data):
        log.append(("enter", data))
        loops = 0
        while not kthread_should_stop():
            if kthread_should_park():
                log.append("parking")
                kthread_parkme()
                log.append(("unparked", kthread_should_park()))
                continue
            loops += 1
            schedule()
        log.append("exit")
        return loops
    return fn


# ---- kthread_create ---------------------------------------------------------------

def test_kthread_create_returns_a_sleeping_kthread():
    ran = []
    k = kthread_create(ran.append, "payload", "worker")
    assert isinstance(k, KThread)
    assert k.is_alive()
    assert k.started is False
    assert k.native_id is not None
    assert ran == []
    assert kthread_data(k) == "payload"
    assert kthread_stop(k) == -errno.EINTR
    assert ran == []


def test_kthread_create_formats_namefmt_with_args():
    k = kthread_create(lambda d: None, None, "worker/%d:%s", 3, "hi")
    assert k.name == "worker/3:hi"
    assert task_comm(k.native_id) == b"worker/3:hi"
    assert k in threading.enumerate()
    kthread_stop(k)


def test_kthread_create_name_without_args_is_namefmt():
    k = kthread_create(lambda d: None, None, "plain-name")
    assert k.name == "plain-name"
    assert task_comm(k.native_id) == b"plain-name"
    kthread_stop(k)


def test_kthread_create_long_name_is_cut_to_15_bytes_in_the_os():
    k = kthread_create(lambda d: None, None, "%s-%08x", "a-long-prefix", 0xABCDEF)
    assert k.name == "a-long-prefix-00abcdef"
    assert task_comm(k.native_id) == b"a-long-prefix-0"
    kthread_stop(k)


def test_kthread_create_bad_format_raises():
    with pytest.raises(TypeError):
        kthread_create(lambda d: None, None, "worker/%d", "not-a-number")


# ---- wake_up_process: 1/0 -------------------------------------------------------------

def test_wake_up_process_starts_threadfn_and_returns_1_then_0():
    entered = Completion()
    gate = threading.Event()

    def fn(data):
        entered.complete()
        gate.wait(30)
        return data * 2

    k = kthread_create(fn, 21, "wup")
    try:
        r = wake_up_process(k)
        assert r == 1 and type(r) is int      # it was asleep: first wake
        assert entered.wait(10)
        r = wake_up_process(k)                # running, not in schedule()
        assert r == 0 and type(r) is int
    finally:
        gate.set()
    assert kthread_stop(k) == 42
    assert wake_up_process(k) == 0            # exited


def test_wake_up_process_returns_1_for_a_thread_in_schedule():
    log = []
    k = kthread_create(smpboot_fn(log), "d", "sched")
    assert wake_up_process(k) == 1
    wait_for(lambda: ("enter", "d") in log)
    # Until it is asleep in schedule() a wake only leaves a token (0) and the
    # thread goes round its loop again; sooner or later a wake finds it asleep.
    wait_for(lambda: wake_up_process(k) == 1,
             msg="wake_up_process never returned 1 for a thread in schedule()")
    loops = kthread_stop(k)
    assert isinstance(loops, int) and loops >= 1


def test_wake_up_process_on_parked_thread_returns_0_and_leaves_it_parked():
    log = []
    k = kthread_create(smpboot_fn(log), None, "wup-parked")
    wake(k)
    assert kthread_park(k) == 0
    for _ in range(20):
        assert wake_up_process(k) == 0
    assert k.is_parked
    kthread_unpark(k)
    wait_for(lambda: ("unparked", False) in log)
    kthread_stop(k)


# ---- kthread_park / kthread_unpark -----------------------------------------------------

def test_kthread_park_returns_0_once_parked_and_unpark_resumes():
    log = []
    k = kthread_create(smpboot_fn(log), None, "parkee")
    wake(k)
    r = kthread_park(k)
    assert r == 0 and type(r) is int
    assert k.is_parked
    assert "parking" in log                    # parked through kthread_parkme()
    assert kthread_park(k) == 0                # already parked: at once
    assert kthread_unpark(k) is None
    wait_for(lambda: ("unparked", False) in log)
    assert not k.is_parked
    assert kthread_park(k) == 0                # and again
    assert log.count("parking") == 2
    kthread_unpark(k)
    kthread_stop(k)
    assert log[-1] == "exit"


def test_kthread_park_of_never_woken_thread_parks_without_threadfn():
    ran = []
    k = kthread_create(ran.append, "x", "park-first")
    assert kthread_park(k) == 0
    assert k.is_parked
    assert k.started is False
    assert ran == []
    kthread_unpark(k)                          # now threadfn runs
    wait_for(lambda: ran == ["x"])
    assert kthread_stop(k) is None             # ran: its value, not -EINTR


def test_kthread_park_of_exited_thread_returns_minus_enosys():
    k = kthread_create(lambda d: "done", None, "gone")
    wake(k)
    assert kthread_stop(k) == "done"
    assert not k.is_alive()
    r = kthread_park(k)
    assert r == -errno.ENOSYS and type(r) is int
    assert kthread_park(k) == -errno.ENOSYS


def test_kthread_park_of_thread_that_exits_instead_returns_minus_enosys():
    # threadfn returns without ever calling kthread_parkme().
    release = threading.Event()
    k = kthread_create(lambda d: release.wait(30), None, "exits")
    wake(k)
    threading.Timer(0.05, release.set).start()
    assert kthread_park(k) == -errno.ENOSYS


def test_kthread_unpark_of_unparked_thread_is_a_noop():
    ran = []
    k = kthread_create(ran.append, 1, "noop")
    assert kthread_unpark(k) is None
    assert k.started is False and ran == []    # did not start it
    assert kthread_stop(k) == -errno.EINTR


# ---- kthread_stop ---------------------------------------------------------------------

def test_kthread_stop_returns_threadfn_value():
    log = []
    k = kthread_create(smpboot_fn(log), None, "stopper")
    wake(k)
    wait_for(lambda: log)
    loops = kthread_stop(k)
    assert loops >= 1
    assert log[-1] == "exit"
    assert not k.is_alive()


def test_kthread_stop_returns_any_value_including_none_and_negative():
    for value in (None, 0, -5, "s", (1, 2)):
        k = kthread_create(lambda d: d, value, "value")
        wake(k)
        wait_for(lambda: k.started)
        assert kthread_stop(k) == value


def test_kthread_stop_of_never_run_thread_returns_minus_eintr():
    ran = []
    k = kthread_create(ran.append, None, "never")
    r = kthread_stop(k)
    assert r == -errno.EINTR and type(r) is int
    assert ran == []
    assert not k.is_alive()
    assert kthread_stop(k) == -errno.EINTR     # same answer again


def test_kthread_stop_of_parked_never_run_thread_returns_minus_eintr():
    ran = []
    k = kthread_create(ran.append, None, "parked-never")
    assert kthread_park(k) == 0
    assert kthread_stop(k) == -errno.EINTR
    assert ran == []


def test_kthread_stop_releases_a_parked_thread_and_returns_its_value():
    log = []
    k = kthread_create(smpboot_fn(log), None, "stop-parked")
    wake(k)
    assert kthread_park(k) == 0
    loops = kthread_stop(k)
    assert isinstance(loops, int)
    assert log[-1] == "exit"


def test_kthread_stop_reraises_threadfn_exception():
    class Boom(Exception):
        pass

    def fn(data):
        raise Boom(data)

    k = kthread_create(fn, "bang", "raiser")
    wake(k)
    with pytest.raises(Boom, match="bang"):
        kthread_stop(k)


# ---- inside the thread ----------------------------------------------------------------

def test_should_stop_should_park_parkme_inside_a_thread():
    seen = []
    parked_once = Completion()

    def fn(data):
        seen.append(("start", kthread_should_stop(), kthread_should_park()))
        while not kthread_should_park():
            schedule()
        seen.append(("asked to park", kthread_should_stop(), kthread_should_park()))
        kthread_parkme()
        seen.append(("after parkme", kthread_should_stop(), kthread_should_park()))
        parked_once.complete()
        while not kthread_should_stop():
            schedule()
        seen.append(("stopping", kthread_should_stop(), kthread_should_park()))
        return "bye"

    k = kthread_create(fn, None, "inside")
    wake(k)
    wait_for(lambda: seen)
    assert kthread_park(k) == 0
    assert k.is_parked
    kthread_unpark(k)
    assert parked_once.wait(10)
    assert kthread_stop(k) == "bye"
    assert seen == [("start", False, False),
                    ("asked to park", False, True),
                    ("after parkme", False, False),
                    ("stopping", True, False)]


def test_kthread_parkme_without_request_returns_at_once():
    out = []

    def fn(data):
        kthread_parkme()
        out.append(kthread_should_park())
        return "ok"

    k = kthread_create(fn, None, "no-request")
    k.start()
    wait_for(lambda: out)
    assert out == [False]
    assert kthread_stop(k) == "ok"


def test_stop_releases_kthread_parkme():
    out = []

    def fn(data):
        while not kthread_should_park():
            schedule()
        kthread_parkme()
        out.append(kthread_should_stop())
        return 7

    k = kthread_create(fn, None, "stop-in-park")
    wake(k)
    assert kthread_park(k) == 0
    assert kthread_stop(k) == 7
    assert out == [True]


@pytest.mark.parametrize("fn, name", [(kthread_should_stop, "should_stop"),
                                      (kthread_should_park, "should_park"),
                                      (kthread_parkme, "parkme")])
def test_in_thread_functions_raise_outside_a_kthread(fn, name):
    with pytest.raises(RuntimeError, match=name):
        fn()
    # also from a plain threading.Thread
    errors = []
    t = threading.Thread(target=lambda: _record(errors, fn))
    t.start()
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert name in str(errors[0])


def _record(errors, fn):
    try:
        fn()
    except BaseException as e:
        errors.append(e)


# ---- kthread_data ---------------------------------------------------------------------

def test_kthread_data_is_the_data_object():
    data = {"cpu": 0, "queue": []}
    got = []
    k = kthread_create(lambda d: got.append(d), data, "data")
    assert kthread_data(k) is data
    wake(k)
    kthread_stop(k)
    assert got[0] is data
    assert kthread_data(k) is data            # still there after exit
    assert kthread_data(kthread_create(lambda d: None, None, "none")) is None


# ---- kthread_bind and kthread_create_on_cpu ----------------------------------------------

def test_kthread_bind_pins_before_threadfn_runs():
    cpu = allowed_cpus()[-1]
    got = []
    k = kthread_create(lambda d: got.append(os.sched_getaffinity(0)), None, "bound")
    assert kthread_bind(k, cpu) is None
    assert k.cpu == cpu
    assert os.sched_getaffinity(k.native_id) == {cpu}   # before anything runs
    wake(k)
    wait_for(lambda: got)
    assert got == [{cpu}]
    kthread_stop(k)


def test_kthread_bind_after_wake_raises():
    k = kthread_create(lambda d: None, None, "late-bind")
    wake(k)
    with pytest.raises(RuntimeError):
        kthread_bind(k, allowed_cpus()[0])
    kthread_stop(k)


def test_kthread_bind_rejects_bad_cpus():
    k = kthread_create(lambda d: None, None, "bad-bind")
    allowed = allowed_cpus()
    outside = max(allowed) + 1
    with pytest.raises(ValueError, match=str(outside)):
        kthread_bind(k, outside)
    with pytest.raises(ValueError):
        kthread_bind(k, -1)
    with pytest.raises(TypeError):
        kthread_bind(k, "0")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        kthread_bind(k, 0.0)  # type: ignore[arg-type]
    assert k.cpu is None
    kthread_stop(k)


@pytest.mark.parametrize("which", ["first", "last"])
def test_kthread_create_on_cpu(which):
    cpus = allowed_cpus()
    cpu = cpus[0] if which == "first" else cpus[-1]
    log = []
    inside = []

    def fn(data):
        inside.append(os.sched_getaffinity(0))
        return smpboot_fn(log)(data)

    k = kthread_create_on_cpu(fn, "per-cpu-data", cpu, "kworker/%u")
    assert k.name == f"kworker/{cpu}"
    assert task_comm(k.native_id) == f"kworker/{cpu}".encode()
    assert k.cpu == cpu
    assert k.is_per_cpu
    assert k.is_parked                      # created parked
    assert k.started is False and inside == []
    assert kthread_data(k) == "per-cpu-data"
    assert os.sched_getaffinity(k.native_id) == {cpu}
    assert wake_up_process(k) == 0          # parked: deaf
    assert k.started is False
    kthread_unpark(k)                       # starts threadfn on its CPU
    wait_for(lambda: inside)
    assert inside == [{cpu}]
    wait_for(lambda: ("enter", "per-cpu-data") in log)
    assert kthread_park(k) == 0
    kthread_unpark(k)
    wait_for(lambda: ("unparked", False) in log)
    assert isinstance(kthread_stop(k), int)


def test_kthread_create_on_cpu_never_unparked_stop_returns_minus_eintr():
    ran = []
    k = kthread_create_on_cpu(ran.append, None, allowed_cpus()[0], "pcpu/%u")
    assert kthread_stop(k) == -errno.EINTR
    assert ran == []


def test_kthread_create_on_cpu_rejects_bad_cpus():
    outside = max(allowed_cpus()) + 1
    with pytest.raises(ValueError, match=str(outside)):
        kthread_create_on_cpu(lambda d: None, None, outside, "x/%u")
    with pytest.raises(ValueError):
        kthread_create_on_cpu(lambda d: None, None, -1, "x/%u")
    with pytest.raises(TypeError):
        kthread_create_on_cpu(lambda d: None, None, "0", "x/%u")  # type: ignore[arg-type]


def test_kthread_create_on_cpu_pins_again_after_affinity_changed_while_parked():
    cpus = allowed_cpus()
    if len(cpus) < 2:
        pytest.skip(f"needs 2 CPUs in os.sched_getaffinity(0), have {cpus}")
    cpu = cpus[0]
    seen = []

    def fn(data):
        while not kthread_should_stop():
            if kthread_should_park():
                kthread_parkme()
                seen.append(os.sched_getaffinity(0))
                continue
            schedule()

    k = kthread_create_on_cpu(fn, None, cpu, "repin/%u")
    kthread_unpark(k)
    wait_for(lambda: k.started)
    assert kthread_park(k) == 0
    os.sched_setaffinity(k.native_id, set(cpus))     # "CPU hotplug" moved it
    kthread_unpark(k)
    wait_for(lambda: seen)
    assert seen == [{cpu}]
    kthread_stop(k)


def test_compat_threads_are_kpark_threads():
    k = kthread_create(lambda d: kpark.current(), None, "who")
    wake(k)
    wait_for(lambda: k.started)
    assert kthread_stop(k) is k
