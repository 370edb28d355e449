""""Allowed CPUs" means the process's: the main thread's affinity.

docs/semantics.md ("Allowed CPUs") and docs/smpboot.md: every default
(PerCPUExecutor/PerCPUThreads `cpus`, joblib's n_jobs), every check
(bind, create_on_cpu) and every message uses this process's allowed CPUs,
os.sched_getaffinity(os.getpid()), whichever thread asks: a caller that
narrowed its own affinity (a pinned task, a thread that called
os.sched_setaffinity(0, ...)) still sees the process's CPUs.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List

import pytest

from kpark import KThread, PerCPUExecutor, PerCPUThreads, create_on_cpu
from kpark.percpu import available_cpus

from conftest import spawn


def process_cpus() -> List[int]:
    return sorted(os.sched_getaffinity(os.getpid()))


@pytest.fixture
def pinned_and_other() -> List[int]:
    cpus = process_cpus()
    if len(cpus) < 2:
        pytest.skip(f"this process may use one CPU only ({cpus}): no thread can have "
                    "a narrower affinity than the process, so there is nothing to tell apart")
    return cpus[:2]


def observe(pin: int, other: int) -> Dict[str, Any]:
    """What the defaults, checks and messages give to a caller whose own
    affinity is {pin} (asserted first)."""
    assert os.sched_getaffinity(0) == {pin}
    out: Dict[str, Any] = {}
    with PerCPUExecutor() as ex:
        out["executor_cpus"] = list(ex.cpus)
    pool = PerCPUThreads(lambda cpu: None, lambda cpu: False)
    try:
        out["pool_cpus"] = list(pool.cpus)
    finally:
        pool.close()
    k = create_on_cpu(lambda d: os.sched_getaffinity(0), None, other)
    try:
        out["create_on_cpu"] = k.cpu
        k.unpark()
        k.join(10)          # threadfn returns by itself
    finally:
        out["create_on_cpu_affinity"] = sorted(k.stop())
    b = KThread(lambda d: os.sched_getaffinity(0))
    b.bind(other)
    b.start()
    b.join(10)
    out["bind_affinity"] = sorted(b.stop())
    bad = max(process_cpus()) + 1
    with pytest.raises(ValueError) as info:
        create_on_cpu(lambda d: None, None, bad)
    out["message"] = str(info.value)
    out["available"] = sorted(available_cpus())
    try:
        import kpark.joblib
    except ImportError:
        out["n_jobs"] = None
    else:
        out["n_jobs"] = kpark.joblib.PerCPUBackend().effective_n_jobs(-1)
    return out


def in_pinned_thread(pin: int, other: int) -> Dict[str, Any]:
    def body() -> Dict[str, Any]:
        os.sched_setaffinity(0, {pin})
        return observe(pin, other)
    return spawn(body).get(timeout=30)


def in_pinned_task(pin: int, other: int) -> Dict[str, Any]:
    with PerCPUExecutor(cpus=[pin]) as ex:
        return ex.submit_on(pin, observe, pin, other).result(timeout=30)


CALLERS: Dict[str, Callable[[int, int], Dict[str, Any]]] = {
    "thread": in_pinned_thread, "task": in_pinned_task}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_a_pinned_caller_sees_the_process_allowed_cpus(caller: str,
                                                       pinned_and_other: List[int]) -> None:
    """From a thread pinned to one CPU (os.sched_setaffinity(0, {cpu})) and
    from an executor task pinned there: PerCPUExecutor() and PerCPUThreads()
    default to the process's CPUs; create_on_cpu() and bind() accept another
    CPU the process allows (and the thread runs there); the error for a CPU
    outside names the process's allowed CPUs; available_cpus() and joblib's
    n_jobs=-1 count the process's CPUs."""
    pin, other = pinned_and_other
    cpus = process_cpus()
    out = CALLERS[caller](pin, other)
    assert out["executor_cpus"] == cpus, out
    assert out["pool_cpus"] == cpus, out
    assert out["create_on_cpu"] == other and out["create_on_cpu_affinity"] == [other], out
    assert out["bind_affinity"] == [other], out
    bad = max(cpus) + 1
    assert out["message"] == f"CPU {bad} is not in this process's allowed CPUs {cpus}", out
    assert set(out["available"]) <= set(cpus) and pin in out["available"], out
    assert out["available"] == sorted(available_cpus()), out
    if out["n_jobs"] is not None:
        assert out["n_jobs"] == len(cpus), out
