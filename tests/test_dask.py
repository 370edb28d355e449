"""kpark.dask: PerCPUExecutorPlugin on a real distributed.LocalCluster.

Two worker processes on the loopback interface.  Skipped when distributed is
not installed, unless KPARK_REQUIRE_INTEGRATIONS=1 (as CI sets): then a
missing distributed fails the run.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Dict, Iterator, Optional

import pytest

if os.environ.get("KPARK_REQUIRE_INTEGRATIONS") == "1":
    import dask
    import distributed
else:
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")

from kpark.dask import PerCPUExecutorPlugin, PerCPUThreadPoolExecutor

pytestmark = pytest.mark.timeout(180)

CPUS = sorted(os.sched_getaffinity(0))


def probe(x: int) -> Dict[str, Any]:
    """Where a task ran, and whether it sees its dask worker."""
    import kpark
    k = kpark.current()
    try:
        worker: Optional[str] = distributed.get_worker().address
    except ValueError:
        worker = None
    return {"x": x, "cpu": k.cpu if k is not None else None,
            "affinity": sorted(os.sched_getaffinity(0)),
            "thread": threading.current_thread().name, "worker": worker,
            "pid": os.getpid()}


def _cluster(**kwargs: Any) -> Any:
    return distributed.LocalCluster(n_workers=kwargs.pop("n_workers", 2), processes=True,
                                    threads_per_worker=1, host="127.0.0.1",
                                    dashboard_address=":0", **kwargs)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with _cluster() as cluster, distributed.Client(cluster, timeout=60) as c:
        c.register_plugin(PerCPUExecutorPlugin(max_workers=2, thread_name_prefix="kp"))
        yield c


def test_annotated_tasks_run_on_pinned_kpark_workers(client: Any) -> None:
    with dask.annotate(executor="kpark"):
        futures = client.map(probe, range(20), pure=False)
    out = client.gather(futures, errors="raise")
    assert [r["x"] for r in out] == list(range(20))
    workers = set(client.scheduler_info()["workers"])
    for r in out:
        assert r["cpu"] in CPUS and r["affinity"] == [r["cpu"]], r
        assert r["thread"].startswith("kp_"), r
        assert r["worker"] in workers, r  # distributed.get_worker() works
    assert len({r["pid"] for r in out}) >= 1


def test_unannotated_tasks_still_use_the_default_executor(client: Any) -> None:
    out = client.gather(client.map(probe, range(6), pure=False))
    for r in out:
        assert r["cpu"] is None and not r["thread"].startswith("kp_"), r
        assert r["worker"] is not None


def test_each_worker_got_its_executor_and_teardown_removes_it(client: Any) -> None:
    def kinds(dask_worker: Any) -> Dict[str, Any]:
        ex = dask_worker.executors.get("kpark")
        return {"type": type(ex).__name__, "max_workers": getattr(ex, "_max_workers", None)}

    got = client.run(kinds)
    assert len(got) == 2
    assert all(v == {"type": "PerCPUThreadPoolExecutor", "max_workers": 2}
               for v in got.values())
    client.register_plugin(PerCPUExecutorPlugin(name="other", cpus=[CPUS[0]]))
    with dask.annotate(executor="other"):
        out = client.gather(client.map(probe, range(4), pure=False))
    assert {r["cpu"] for r in out} == {CPUS[0]}
    client.unregister_worker_plugin("other")
    assert all("other" not in names for names in
               client.run(lambda dask_worker: list(dask_worker.executors)).values())


def test_preload_adds_the_executor() -> None:
    with _cluster(n_workers=1, preload=["kpark.dask"]) as cluster, \
            distributed.Client(cluster, timeout=60) as c:
        with dask.annotate(executor="kpark"):
            r = c.submit(probe, 1, pure=False).result(timeout=60)
    assert r["cpu"] in CPUS and r["worker"] is not None


def test_plugin_arguments_and_executor_type() -> None:
    assert issubclass(PerCPUThreadPoolExecutor, __import__("kpark").PerCPUExecutor)
    assert PerCPUExecutorPlugin().name == "kpark"
    with pytest.raises(TypeError):
        PerCPUExecutorPlugin(name="")
