"""kpark._flags: Flags, a 64-bit word of atomic flag bits.

The code is _flags.pyx, compiled into kpark._native (see _kcore.py).
"""
from kpark._native import Flags

__all__ = ["Flags"]
