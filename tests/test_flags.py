"""kpark.Flags: a 64-bit word of atomic flag bits.

Every method against an int model (plain tests and hypothesis), the bit
range 0..63 and argument types, the `value` property, and a concurrency
test in which test_and_set_bit/clear_bit serve as a try-lock.
"""
import os
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from kpark import Flags

WORD = (1 << 64) - 1
METHODS = ("test_bit", "set_bit", "clear_bit", "test_and_set_bit", "test_and_clear_bit")


# ---- construction and the value property -------------------------------------

def test_default_value_is_zero():
    f = Flags()
    assert f.value == 0
    assert not any(f.test_bit(nr) for nr in range(64))


@pytest.mark.parametrize("value", [0, 1, 0x8000_0000_0000_0000, WORD, 0xDEAD_BEEF_0123_4567])
def test_initial_value_round_trips(value):
    f = Flags(value)
    assert f.value == value
    assert type(f.value) is int
    for nr in range(64):
        assert f.test_bit(nr) == bool(value >> nr & 1), nr


def test_value_keyword():
    assert Flags(value=5).value == 5


@pytest.mark.parametrize("value", [-1, 1 << 64, (1 << 64) + 1, -(1 << 63), 1 << 100])
def test_value_out_of_range_is_value_error(value):
    with pytest.raises(ValueError):
        Flags(value)


@pytest.mark.parametrize("value", [1.0, "1", None, b"\x01", [1]])
def test_value_of_wrong_type_is_type_error(value):
    with pytest.raises(TypeError):
        Flags(value)


def test_value_is_read_only():
    f = Flags(3)
    with pytest.raises(AttributeError):
        f.value = 4
    assert f.value == 3


def test_instances_are_independent():
    a, b = Flags(), Flags()
    a.set_bit(5)
    assert a.value == 1 << 5
    assert b.value == 0


def test_repr_shows_the_word():
    assert "0x2a" in repr(Flags(42))


# ---- each method, at both ends of the word ---------------------------------------

@pytest.mark.parametrize("nr", [0, 1, 31, 32, 62, 63])
def test_set_and_clear_bit(nr):
    f = Flags()
    assert f.set_bit(nr) is None
    assert f.value == 1 << nr
    assert f.test_bit(nr) is True
    f.set_bit(nr)                       # idempotent
    assert f.value == 1 << nr
    assert f.clear_bit(nr) is None
    assert f.value == 0
    assert f.test_bit(nr) is False
    f.clear_bit(nr)                     # idempotent
    assert f.value == 0


@pytest.mark.parametrize("nr", [0, 63])
def test_set_and_clear_leave_other_bits_alone(nr):
    others = WORD & ~(1 << nr)
    f = Flags(others)
    f.set_bit(nr)
    assert f.value == WORD
    f.clear_bit(nr)
    assert f.value == others
    assert all(f.test_bit(i) for i in range(64) if i != nr)


@pytest.mark.parametrize("nr", [0, 63])
def test_test_and_set_bit_returns_old_value(nr):
    f = Flags()
    assert f.test_and_set_bit(nr) is False
    assert f.value == 1 << nr
    assert f.test_and_set_bit(nr) is True
    assert f.value == 1 << nr


@pytest.mark.parametrize("nr", [0, 63])
def test_test_and_clear_bit_returns_old_value(nr):
    f = Flags(WORD)
    assert f.test_and_clear_bit(nr) is True
    assert f.value == WORD & ~(1 << nr)
    assert f.test_and_clear_bit(nr) is False
    assert f.value == WORD & ~(1 << nr)


def test_bit_63_is_unsigned():
    f = Flags()
    f.set_bit(63)
    assert f.value == 1 << 63 > 0
    f.set_bit(0)
    assert f.value == (1 << 63) | 1


def test_bools_are_returned():
    f = Flags(1)
    for result in (f.test_bit(0), f.test_and_set_bit(1), f.test_and_clear_bit(1)):
        assert type(result) is bool


# ---- bit numbers: range and type ---------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("nr", [-1, 64, 65, -64, 1 << 64, -(1 << 70)])
def test_bit_number_out_of_range_is_value_error(method, nr):
    f = Flags(WORD)
    with pytest.raises(ValueError):
        getattr(f, method)(nr)
    assert f.value == WORD               # nothing changed
    g = Flags()
    with pytest.raises(ValueError):
        getattr(g, method)(nr)
    assert g.value == 0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("nr", [1.0, "1", None, 0.5, b"\x01"])
def test_bit_number_of_wrong_type_is_type_error(method, nr):
    f = Flags()
    with pytest.raises(TypeError):
        getattr(f, method)(nr)
    assert f.value == 0


@pytest.mark.parametrize("method", METHODS)
def test_bool_bit_number_is_type_error(method):
    # Like the CPU numbers of bind(): a bool is rejected, not taken as 0/1.
    f = Flags()
    with pytest.raises(TypeError):
        getattr(f, method)(True)
    assert f.value == 0


def test_int_subclass_bit_number_is_accepted():
    import enum

    class Bit(enum.IntEnum):
        READY = 3

    f = Flags()
    f.set_bit(Bit.READY)
    assert f.value == 8
    assert f.test_bit(Bit.READY)


def test_bit_number_is_required():
    f = Flags()
    for method in METHODS:
        with pytest.raises(TypeError):
            getattr(f, method)()


# ---- property tests against an int model ----------------------------------------------

def _apply(model, op, nr):
    """The reference semantics on a plain int: (new model, expected result)."""
    m = 1 << nr
    old = bool(model & m)
    if op == "test_bit":
        return model, old
    if op == "set_bit":
        return model | m, None
    if op == "clear_bit":
        return model & ~m, None
    if op == "test_and_set_bit":
        return model | m, old
    if op == "test_and_clear_bit":
        return model & ~m, old
    raise AssertionError(op)


ops = st.lists(st.tuples(st.sampled_from(METHODS), st.integers(0, 63)), max_size=200)


@settings(max_examples=300, deadline=None)
@given(initial=st.integers(0, WORD), program=ops)
def test_matches_int_model(initial, program):
    f = Flags(initial)
    model = initial
    for op, nr in program:
        model, expected = _apply(model, op, nr)
        assert getattr(f, op)(nr) == expected, (op, nr)
        assert f.value == model, (op, nr)


@settings(max_examples=200, deadline=None)
@given(initial=st.integers(0, WORD), nr=st.integers())
def test_any_int_outside_range_is_rejected_without_change(initial, nr):
    f = Flags(initial)
    for op in METHODS:
        if 0 <= nr <= 63:
            model, expected = _apply(initial, op, nr)
            assert getattr(f, op)(nr) == expected
            f = Flags(initial)
        else:
            with pytest.raises(ValueError):
                getattr(f, op)(nr)
            assert f.value == initial


@settings(max_examples=200, deadline=None)
@given(value=st.integers())
def test_constructor_accepts_exactly_64_unsigned_bits(value):
    if 0 <= value <= WORD:
        assert Flags(value).value == value
    else:
        with pytest.raises(ValueError):
            Flags(value)


# ---- concurrency ------------------------------------------------------------------------

def _run_threads(n, target):
    errors = []
    barrier = threading.Barrier(n, timeout=30)

    def body(i):
        try:
            barrier.wait()
            target(i)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "threads hung"
    if errors:
        raise errors[0]


def _trylock_counter(lock_acquire, lock_release, nthreads=6, iters=400):
    """Threads increment a plain list counter only while holding the lock.

    The critical section reads the counter, gives the CPU and the GIL away,
    then writes it back and checks that nobody else got in meanwhile: a
    try-lock that lets two holders in loses updates and trips the owner
    check.  Every third pass sleeps 50 µs there (a real sleep: on CPython
    3.9 a thread that drops the GIL for sched_yield() takes it straight
    back, so nobody else would get in).
    """
    counter = [0]
    owner = [None]
    overlaps = []

    def worker(i):
        done = 0
        while done < iters:
            if not lock_acquire():
                os.sched_yield()
                continue
            try:
                if owner[0] is not None:
                    overlaps.append((owner[0], i))
                owner[0] = i
                v = counter[0]
                if done % 3 == 0:
                    time.sleep(0.00005)
                counter[0] = v + 1
                if owner[0] != i:
                    overlaps.append((owner[0], i))
                owner[0] = None
            finally:
                lock_release()
            done += 1

    _run_threads(nthreads, worker)
    return counter[0], nthreads * iters, overlaps


@pytest.mark.timeout(60)
@pytest.mark.parametrize("nr", [0, 63])
def test_test_and_set_bit_is_a_try_lock(nr):
    f = Flags()
    other = 0 if nr == 63 else 63
    f.set_bit(other)        # a bit that must survive all the traffic on `nr`
    count, expected, overlaps = _trylock_counter(
        lambda: not f.test_and_set_bit(nr), lambda: f.clear_bit(nr))
    assert overlaps == []
    assert count == expected
    assert f.value == 1 << other


@pytest.mark.timeout(60)
def test_test_and_clear_bit_is_a_try_lock():
    # The same lock the other way round: bit set = free.
    f = Flags(1 << 17)
    count, expected, overlaps = _trylock_counter(
        lambda: f.test_and_clear_bit(17), lambda: f.set_bit(17))
    assert overlaps == []
    assert count == expected
    assert f.value == 1 << 17


@pytest.mark.timeout(60)
def test_trylock_harness_detects_a_broken_lock():
    # Guards the test above: with a "lock" that always succeeds the harness
    # must see overlapping holders and lost updates.
    count, expected, overlaps = _trylock_counter(lambda: True, lambda: None, iters=200)
    assert overlaps or count != expected


@pytest.mark.timeout(60)
def test_threads_on_distinct_bits_do_not_disturb_each_other():
    # Each thread owns some bits and toggles them; a read-modify-write that
    # is not atomic would lose another thread's change to the same word.
    f = Flags()
    nthreads = 8
    iters = 3000

    def worker(i):
        mine = [i, i + 8, i + 56]             # bits 0..63 spread over the word
        for n in range(iters):
            for b in mine:
                assert f.test_and_set_bit(b) is False
            for b in mine:
                assert f.test_bit(b)
            if n % 2:
                for b in mine:
                    assert f.test_and_clear_bit(b) is True
            else:
                for b in mine:
                    f.clear_bit(b)
            for b in mine:
                assert not f.test_bit(b)
        for b in mine:
            f.set_bit(b)

    _run_threads(nthreads, worker)
    expected = 0
    for i in range(nthreads):
        for b in (i, i + 8, i + 56):
            expected |= 1 << b
    assert f.value == expected


@pytest.mark.timeout(60)
def test_exactly_one_winner_per_round():
    # test_and_set_bit as a one-shot election: in every round exactly one of
    # the racing threads sees the bit clear.
    f = Flags()
    nthreads = 4
    rounds = 300
    wins = [[0] * rounds for _ in range(nthreads)]
    barrier = threading.Barrier(nthreads, timeout=30)

    def worker(i):
        for r in range(rounds):
            barrier.wait()
            if not f.test_and_set_bit(r % 64):
                wins[i][r] = 1
            barrier.wait()
            if i == 0:
                f.clear_bit(r % 64)
            barrier.wait()

    _run_threads(nthreads, worker)
    for r in range(rounds):
        assert sum(wins[i][r] for i in range(nthreads)) == 1, r
    assert f.value == 0
