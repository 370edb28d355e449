# cython: language_level=3, freethreading_compatible=True
"""kpark.Flags: a 64-bit word of flag bits changed with atomic operations.

Compiled as part of kpark._native (see _native.pyx).

Memory ordering, chosen once for the whole class:
  - test_bit / value load with ACQUIRE, so a thread that sees a bit also
    sees everything the thread that set it wrote before setting it.
  - set_bit / clear_bit are RELEASE read-modify-writes, the other half of
    that pairing (publish, then flag).
  - test_and_set_bit / test_and_clear_bit are SEQ_CST, like the kernel's
    value-returning bitops: they are fully ordered, so they can serve as a
    try-lock or as one side of a Dekker-style handshake.
"""
from libc.stdint cimport uint64_t

from kpark.c_atomic cimport (kp_load64, kp_fetch_or64, kp_fetch_and64,
                             KP_ACQUIRE, KP_RELEASE, KP_SEQ_CST)


cdef inline uint64_t _mask(object nr) except 0:
    """The mask of bit `nr`; ValueError outside 0..63, TypeError for non-ints."""
    cdef long n
    if isinstance(nr, bool) or not isinstance(nr, int):
        raise TypeError(f"bit number must be an int, got {type(nr).__name__}")
    if not 0 <= nr <= 63:
        raise ValueError(f"bit number must be in 0..63, got {nr}")
    n = nr
    return (<uint64_t>1) << n


cdef class Flags:
    """A 64-bit flag word; every method is one atomic operation.

    Any thread may call any method.  `nr` is a bit number in 0..63.
    """
    cdef uint64_t word

    def __init__(self, value=0):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"value must be an int, got {type(value).__name__}")
        if not 0 <= value < (1 << 64):
            raise ValueError(f"value must fit in 64 unsigned bits, got {value}")
        self.word = value

    def test_bit(self, nr):
        """Return whether bit `nr` is set (ACQUIRE load)."""
        return (kp_load64(&self.word, KP_ACQUIRE) & _mask(nr)) != 0

    def set_bit(self, nr):
        """Set bit `nr` (RELEASE fetch-or)."""
        kp_fetch_or64(&self.word, _mask(nr), KP_RELEASE)

    def clear_bit(self, nr):
        """Clear bit `nr` (RELEASE fetch-and)."""
        kp_fetch_and64(&self.word, ~_mask(nr), KP_RELEASE)

    def test_and_set_bit(self, nr):
        """Set bit `nr`; return whether it was set before (SEQ_CST)."""
        cdef uint64_t m = _mask(nr)
        return (kp_fetch_or64(&self.word, m, KP_SEQ_CST) & m) != 0

    def test_and_clear_bit(self, nr):
        """Clear bit `nr`; return whether it was set before (SEQ_CST)."""
        cdef uint64_t m = _mask(nr)
        return (kp_fetch_and64(&self.word, ~m, KP_SEQ_CST) & m) != 0

    @property
    def value(self):
        """The whole word as an int (ACQUIRE load)."""
        return kp_load64(&self.word, KP_ACQUIRE)

    def __repr__(self):
        return f"Flags({kp_load64(&self.word, KP_ACQUIRE):#x})"
