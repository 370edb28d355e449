"""kpark.dask: PerCPUExecutor on dask.distributed workers.

Register the plugin and pick the executor per task::

    client.register_plugin(PerCPUExecutorPlugin())          # or: dask worker --preload kpark.dask
    with dask.annotate(executor="kpark"):
        futures = client.map(work, items)

Tasks without the annotation still run on the worker's default executor.
Needs the `dask` extra (`pip install "kpark[dask]"`).
"""
from __future__ import annotations

from typing import Any

import distributed

from kpark.executor import PerCPUExecutor

__all__ = ["PerCPUExecutorPlugin", "PerCPUThreadPoolExecutor", "dask_setup"]


class PerCPUThreadPoolExecutor(PerCPUExecutor):
    """The PerCPUExecutor the plugin gives each worker.

    distributed.Worker runs a task inside the worker's context (so that
    get_worker(), get_client() and its per-thread task accounting work) only
    in executors whose type name says "ThreadPoolExecutor"; this subclass
    changes nothing but the name.
    """


class PerCPUExecutorPlugin(distributed.WorkerPlugin):
    """A WorkerPlugin that gives every worker a PerCPUExecutor named `name`.

    setup() (on each worker, at registration or worker start) puts
    `worker.executors[name] = PerCPUExecutor(**executor_kwargs)`; teardown()
    removes it and shuts it down without waiting, cancelling the tasks still
    queued on it, as the worker does to its own executors when it closes.
    """

    def __init__(self, name: str = "kpark", **executor_kwargs: Any) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str, got {name!r}")
        self.name = name  # also the plugin's name: one plugin per executor name
        self.executor_kwargs = executor_kwargs

    def setup(self, worker: "distributed.Worker") -> None:
        """Start the executor in `worker` (the worker's event loop calls this)."""
        old = worker.executors.get(self.name)
        if isinstance(old, PerCPUExecutor):
            old.shutdown(wait=False, cancel_futures=True)
        worker.executors[self.name] = PerCPUThreadPoolExecutor(**self.executor_kwargs)

    def teardown(self, worker: "distributed.Worker") -> None:
        """Remove the executor from `worker` and shut it down (never blocks)."""
        ex = worker.executors.get(self.name)
        if isinstance(ex, PerCPUExecutor):
            del worker.executors[self.name]
            ex.shutdown(wait=False, cancel_futures=True)


async def dask_setup(worker: "distributed.Worker") -> None:
    """Preload hook: `dask worker --preload kpark.dask` adds a "kpark" executor.

    Called by distributed with the worker being started; TypeError for any
    other server (the scheduler, a nanny).
    """
    if not isinstance(worker, distributed.Worker):
        raise TypeError("kpark.dask is a worker preload (dask worker --preload kpark.dask), "
                        f"not for {type(worker).__name__}")
    await worker.plugin_add(PerCPUExecutorPlugin(), catch_errors=False)
