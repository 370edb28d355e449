"""kpark._workqueue: WorkQueues, PerCPUExecutor's queues and worker loop.

The code is _workqueue.pyx, compiled into kpark._native (see _kcore.py);
kpark.executor keeps one per executor.
"""
from kpark._native import Worker, WorkQueue, WorkQueues

__all__ = ["Worker", "WorkQueue", "WorkQueues"]
