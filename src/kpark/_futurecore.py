"""kpark._futurecore: FutureCore, the state machine of PerCPUExecutor's futures.

The code is _futurecore.pyx, compiled into kpark._native (see _kcore.py);
kpark._futures builds the executor's future on it.
"""
from kpark._native import FutureCore

__all__ = ["FutureCore"]
