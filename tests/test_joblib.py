"""kpark.joblib: the "kpark" joblib backend, with the real joblib.

Skipped when joblib is not installed, unless KPARK_REQUIRE_INTEGRATIONS=1
(as CI sets): then a missing joblib fails the run.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Optional, Tuple

import pytest

if os.environ.get("KPARK_REQUIRE_INTEGRATIONS") == "1":
    import joblib
else:
    joblib = pytest.importorskip("joblib")

import kpark
import kpark.joblib  # noqa: F401  (registers the backend)

pytestmark = pytest.mark.timeout(120)

CPUS = sorted(os.sched_getaffinity(0))


def where(x: int) -> Tuple[int, Optional[int], frozenset[int], str]:
    k = kpark.current()
    return (x, k.cpu if k is not None else None, frozenset(os.sched_getaffinity(0)),
            threading.current_thread().name)


def test_parallel_runs_on_pinned_kpark_workers() -> None:
    n = 2 * len(CPUS)
    with joblib.parallel_config(backend="kpark", n_jobs=n):
        out = joblib.Parallel()(joblib.delayed(where)(i) for i in range(50))
    assert [x for x, *_ in out] == list(range(50))
    for _, cpu, aff, name in out:
        assert cpu in CPUS and aff == {cpu} and name.startswith("kpark-joblib_")
    # n workers really run at once: n tasks that each wait for all others.
    barrier = threading.Barrier(n, timeout=30)
    with joblib.parallel_config(backend="kpark", n_jobs=n):
        got = joblib.Parallel(batch_size=1)(
            joblib.delayed(lambda i: (barrier.wait(), where(i))[1])(i) for i in range(n))
    assert len({name for *_, name in got}) == n


def test_exceptions_propagate() -> None:
    def fn(i: int) -> int:
        if i == 7:
            raise KeyError("seven")
        return i

    with joblib.parallel_config(backend="kpark", n_jobs=2):
        with pytest.raises(KeyError, match="seven"):
            joblib.Parallel()(joblib.delayed(fn)(i) for i in range(30))
        # The backend is usable again afterwards.
        assert joblib.Parallel()(joblib.delayed(fn)(i) for i in range(5)) == list(range(5))


def test_return_as_generator() -> None:
    with joblib.parallel_config(backend="kpark", n_jobs=2):
        gen = joblib.Parallel(return_as="generator")(joblib.delayed(where)(i) for i in range(20))
        assert not isinstance(gen, list)
        out = list(gen)
    assert [x for x, *_ in out] == list(range(20))
    assert all(cpu in CPUS and aff == {cpu} for _, cpu, aff, _ in out)


def test_n_jobs_counts_and_cpus_keyword() -> None:
    backend = kpark.joblib.PerCPUBackend()
    assert backend.effective_n_jobs(-1) == len(CPUS) == backend.effective_n_jobs(None)
    assert backend.effective_n_jobs(3) == 3
    assert backend.effective_n_jobs(-len(CPUS) - 5) == 1
    with pytest.raises(ValueError):
        backend.effective_n_jobs(0)
    with joblib.parallel_config(backend="kpark", n_jobs=2, cpus=[CPUS[-1]]):
        out = joblib.Parallel()(joblib.delayed(where)(i) for i in range(4))
    assert {cpu for _, cpu, _, _ in out} == {CPUS[-1]}
    # n_jobs=1: joblib itself runs the calls in the caller, for any backend.
    with joblib.parallel_config(backend="kpark", n_jobs=1):
        out = joblib.Parallel()(joblib.delayed(where)(i) for i in range(2))
    assert {name for *_, name in out} == {threading.current_thread().name}


def test_sharedmem_requirement_is_met() -> None:
    seen: list = []
    with joblib.parallel_config(backend="kpark", n_jobs=2):
        joblib.Parallel(require="sharedmem")(joblib.delayed(seen.append)(i) for i in range(10))
    assert sorted(seen) == list(range(10))
