"""Bad arguments get a TypeError/ValueError that names the argument and what
was expected, raised before any side effect; KPARK_* environment variables
are validated at import with a message naming them."""
from __future__ import annotations

import os
import subprocess
import sys
import weakref

import pytest

import kpark
from kpark import KThread, create_on_cpu
from kpark.executor import PerCPUExecutor
from kpark.percpu import PerCPUThreads

CPU = sorted(os.sched_getaffinity(0))[0]
BAD_CPUS = [0.0, None, True, "0"]


@pytest.mark.timeout(60)
def test_cpu_arguments_are_checked_alike_everywhere():
    pool = PerCPUThreads(lambda c: None, lambda c: False, cpus=[CPU])
    ex = PerCPUExecutor(cpus=[CPU])
    k = KThread(lambda d: None)
    try:
        calls = {
            "pool.offline": pool.offline, "pool.online": pool.online,
            "pool.wake": pool.wake, "pool.thread": pool.thread,
            "ex.offline": ex.offline, "ex.online": ex.online,
            "ex.submit_on": lambda c: ex.submit_on(c, int),
            "bind": k.bind,
            "create_on_cpu": lambda c: create_on_cpu(lambda d: None, None, c),
        }
        for what, call in calls.items():
            for bad in BAD_CPUS:
                with pytest.raises(TypeError, match=r"cpus? must be .*int") as ei:
                    call(bad)
                assert type(bad).__name__ in str(ei.value), (what, bad, ei.value)
        with pytest.raises(TypeError, match=r"cpus must be .*int"):
            pool.offline([CPU, 0.0])
        assert pool.online_cpus == frozenset([CPU])
    finally:
        k.stop(timeout=10)
        ex.shutdown()
        pool.close()


@pytest.mark.timeout(60)
def test_namefmt_name_and_timeout_are_checked():
    with pytest.raises(TypeError, match="namefmt must be a str"):
        create_on_cpu(lambda d: None, None, CPU, namefmt=None)
    k = KThread(lambda d: None, name="before")
    try:
        with pytest.raises(TypeError, match="name must be a str"):
            k.name = 5
        assert k.name == "before"  # nothing renamed
        comm = open(f"/proc/self/task/{k.native_id}/comm").read().strip()
        assert comm == "before"
    finally:
        k.stop(timeout=10)
    with PerCPUExecutor(cpus=[CPU]) as ex:
        for chunksize in (1, 2):
            with pytest.raises(TypeError, match="timeout must be a number"):
                ex.map(abs, [1, 2], timeout="1", chunksize=chunksize)


def test_completion_supports_weak_references():
    c = kpark.Completion()
    r = weakref.ref(c)
    assert r() is c


@pytest.mark.timeout(120)
@pytest.mark.parametrize("var", ["KPARK_SPIN_NS", "KPARK_GIL_SPIN_NS"])
@pytest.mark.parametrize("value", ["abc", str(2 ** 70), "-5"])
def test_bad_spin_environment_variables_are_named(var, value):
    env = dict(os.environ, **{var: value})
    p = subprocess.run([sys.executable, "-c", "import kpark"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError") and var in last and "nanoseconds" in last, p.stderr
