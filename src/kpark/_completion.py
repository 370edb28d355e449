"""kpark._completion: Completion, the kernel's completion on a futex word.

The code is _completion.pyx, compiled into kpark._native (see _kcore.py).
"""
from kpark._native import Completion

__all__ = ["Completion"]
