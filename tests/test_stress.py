"""Stress: random park/unpark/wake/stop interleavings from two controllers.

Several KThreads run the kernel-style loop

    while not should_stop():
        if should_park():
            parkme()
        progress += 1
        schedule()
    return progress

Two controller threads pick a random KThread and a random operation, STEPS
times each (KPARK_STRESS_STEPS, default 20000: 2-5 s here).  wake() is sent
without any lock, so wakes race freely with everything, the other
controller's park/unpark/stop included.  park, unpark and stop of one
KThread are serialised by a per-KThread lock, so the lock holder knows
exactly whether the thread must be parked, and every check is strict:

  - park() returns only when the thread is parked: is_parked and should_park
    right after it returns, and its progress counter does not move for as
    long as it stays parked (checked by whichever controller holds the lock
    next, however many wakes came in between);
  - wake() on a parked thread returns False and changes nothing;
  - park() on a parked thread returns at once and it stays parked;
  - a thread not parked by its lock holder is never parked and never has a
    park request (wakes do not park);
  - unpark() releases it: not parked at once, and it makes progress by itself;
  - a wake() on a running/sleeping (not parked) thread always leads to more
    progress (no lost wake-up, token or not);
  - stop(), parked or not, returns threadfn's result, which is the thread's
    own iteration count; stop() again returns the same; is_alive() is False;
    and that count never moves again (checked at the end);
  - every call returns: park/stop get a timeout, progress waits a deadline,
    and pytest-timeout backs it all.

Stopped KThreads are replaced by new ones, created started, parked before
threadfn ran, or never woken.  The random choices come from
random.Random(seed); the seed (KPARK_STRESS_SEED to replay the same choices;
the thread interleaving is up to the machine) is in every failure message.
"""
from __future__ import annotations

import os
import random
import sys
import threading
import time
from typing import List, Optional

import pytest

import kpark

STEPS = int(os.environ.get("KPARK_STRESS_STEPS", "20000"))
NTHREADS = int(os.environ.get("KPARK_STRESS_THREADS", "4"))
SEED = int(os.environ.get("KPARK_STRESS_SEED", str(random.SystemRandom().randrange(2**32))))

#: Deadline for anything that must happen: a park, a stop, more progress.
#: Generous: the machine is small and shared; a lost wake-up never happens.
DEADLINE = 10.0

OPS = [  # (operation, weight)
    ("wake_free", 30),      # no lock: races with everything
    ("park", 18),
    ("unpark", 18),
    ("park_again", 4),      # park() on a thread the holder knows is parked
    ("deaf", 8),            # wakes on a parked thread change nothing
    ("wake_progress", 10),  # a wake on a not-parked thread leads to progress
    ("check", 8),           # just the invariants
    ("stop", 4),            # stop (parked or not) and replace the thread
]


class Prog:
    """Written only by its KThread (under the GIL), read by controllers."""

    __slots__ = ("n", "returned")

    def __init__(self) -> None:
        self.n = 0
        self.returned = False


def kloop(p: Prog) -> int:
    while not kpark.should_stop():
        if kpark.should_park():
            kpark.parkme()
        p.n += 1
        kpark.schedule()
    p.returned = True
    return p.n


class StressFailure(AssertionError):
    pass


class Slot:
    """One KThread position; `lock` serialises park/unpark/stop on it."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.lock = threading.Lock()
        self.k: Optional[kpark.KThread] = None
        self.p = Prog()
        self.parked = False        # the lock holder parked it
        self.p0 = 0                # progress when it was parked
        self.seen = 0              # highest progress seen
        self.generation = 0
        self.dead: List[tuple] = []   # (Prog, result) of stopped threads


class Stress:
    def __init__(self, seed: int, steps: int, nthreads: int) -> None:
        self.seed = seed
        self.steps = steps
        self.slots = [Slot(i) for i in range(nthreads)]
        self.failed = threading.Event()
        self.failures: List[str] = []
        self.counts: dict = {}
        self.counts_lock = threading.Lock()
        self.setup_rng = random.Random(seed)
        for s in self.slots:
            self.replace(s, self.setup_rng)

    # -- helpers --------------------------------------------------------------

    def fail(self, slot: Slot, what: str) -> None:
        k = slot.k
        word = hex(k._core.state_word) if k is not None else "-"
        self.failed.set()   # the other controller stops at its next step
        raise StressFailure(
            f"seed={self.seed} slot={slot.index} gen={slot.generation} "
            f"parked(expected)={slot.parked} p0={slot.p0} progress={slot.p.n} "
            f"state_word={word}: {what}")

    def check(self, slot: Slot, cond: bool, what: str) -> None:
        if not cond:
            self.fail(slot, what)

    def wait_progress(self, slot: Slot, above: int, why: str) -> None:
        p = slot.p
        deadline = time.monotonic() + DEADLINE
        while p.n <= above:
            if time.monotonic() > deadline:
                self.fail(slot, f"no progress beyond {above} within {DEADLINE} s {why}")
            time.sleep(0.0001)

    def replace(self, slot: Slot, rng: random.Random) -> None:
        """Put a new KThread in the slot (lock held or not yet shared)."""
        slot.generation += 1
        slot.p = Prog()
        k = kpark.KThread(kloop, slot.p, name=f"stress{slot.index}.{slot.generation}")
        # Not in slot.k until set up: the other controller's free wakes would
        # start a thread that park_first must park before threadfn ran.
        slot.k = None
        slot.parked = False
        slot.p0 = 0
        slot.seen = 0
        how = rng.choice(["start", "start", "park_first", "fresh"])
        if how == "start":
            k.start()
            self.check(slot, k.started, "start() returned before threadfn was entered")
        elif how == "park_first":
            k.park(DEADLINE)        # parked without ever running threadfn
            self.check(slot, k.is_parked and not k.started and slot.p.n == 0,
                       "park() of a never-woken thread did not park it before threadfn")
            slot.parked = True
        # "fresh": never woken; a wake starts it, unpark alone does not.
        slot.k = k

    def invariants(self, slot: Slot) -> None:
        """Lock held: what must hold whatever the other controller's wakes did."""
        k, p = slot.k, slot.p
        assert k is not None
        n = p.n
        self.check(slot, k.is_alive(), "is_alive() is False for a thread nobody stopped")
        self.check(slot, not k.should_stop, "should_stop without a stop()")
        self.check(slot, n >= slot.seen, f"progress went backwards from {slot.seen}")
        slot.seen = n
        if slot.parked:
            self.check(slot, k.is_parked, "a parked thread is no longer parked")
            self.check(slot, k.should_park, "a parked thread lost should_park")
            self.check(slot, n == slot.p0, "a parked thread made progress")
        else:
            self.check(slot, not k.is_parked, "parked although nobody parked it")
            self.check(slot, not k.should_park, "a park request appeared from nowhere")

    # -- operations -----------------------------------------------------------

    def op_wake_free(self, slot: Slot, rng: random.Random) -> None:
        k = slot.k        # may be replaced under us: waking a stopped one is fine
        if k is not None:
            r = k.wake()
            if not isinstance(r, bool):
                self.fail(slot, f"wake() returned {r!r}, not a bool")

    def op_park(self, slot: Slot, rng: random.Random) -> None:
        k = slot.k
        assert k is not None
        k.park(DEADLINE)
        self.check(slot, k.is_parked and k.should_park,
                   "park() returned but the thread is not parked")
        if not slot.parked:
            slot.parked = True
            slot.p0 = slot.p.n
            self.check(slot, slot.p0 >= slot.seen, "progress went backwards")
            slot.seen = slot.p0

    def op_park_again(self, slot: Slot, rng: random.Random) -> None:
        if slot.parked:
            t0 = time.monotonic()
            slot.k.park(DEADLINE)  # type: ignore[union-attr]
            self.check(slot, slot.k.is_parked, "park() of a parked thread unparked it")  # type: ignore[union-attr]
            self.check(slot, time.monotonic() - t0 < DEADLINE / 2,
                       "park() of a parked thread did not return at once")

    def op_unpark(self, slot: Slot, rng: random.Random) -> None:
        k = slot.k
        assert k is not None
        k.unpark()
        self.check(slot, not k.is_parked and not k.should_park,
                   "still parked / park pending right after unpark()")
        if slot.parked:
            slot.parked = False
            # Released from parkme() (or, if parked before threadfn, into
            # threadfn): it goes round its loop by itself.
            self.wait_progress(slot, slot.p0, "after unpark()")

    def op_deaf(self, slot: Slot, rng: random.Random) -> None:
        if slot.parked:
            k = slot.k
            assert k is not None
            for _ in range(rng.randint(1, 5)):
                self.check(slot, k.wake() is False, "wake() of a parked thread returned True")
            self.check(slot, k.is_parked and slot.p.n == slot.p0,
                       "wake() of a parked thread changed it")

    def op_wake_progress(self, slot: Slot, rng: random.Random) -> None:
        if not slot.parked:
            n = slot.p.n
            slot.k.wake()  # type: ignore[union-attr]
            self.wait_progress(slot, n, "after wake() of a thread that is not parked")

    def op_check(self, slot: Slot, rng: random.Random) -> None:
        pass

    def op_stop(self, slot: Slot, rng: random.Random) -> None:
        k, p = slot.k, slot.p
        assert k is not None
        was_parked = slot.parked
        try:
            r = k.stop(DEADLINE)
        except TimeoutError:
            r = None
            self.fail(slot, f"stop() of a {'parked' if was_parked else 'not parked'} "
                            f"kernel-loop thread did not return within {DEADLINE} s")
        self.check(slot, not k.is_alive(), "alive after stop() returned")
        if not k.started:
            # Never entered threadfn (fresh or parked first): stop() says None.
            self.check(slot, r is None and p.n == 0 and not p.returned,
                       f"stop() of a thread that never ran returned {r!r}")
        else:
            self.check(slot, p.returned and r == p.n,
                       f"stop() returned {r!r}, threadfn's count is {p.n}")
        self.check(slot, k.stop(DEADLINE) == r, "stop() again gave another result")
        slot.dead.append((p, p.n))
        self.replace(slot, rng)

    # -- controllers -----------------------------------------------------------

    def controller(self, cid: int) -> None:
        rng = random.Random(self.seed * 2 + cid + 1)
        names = [op for op, _ in OPS]
        weights = [w for _, w in OPS]
        counts = dict.fromkeys(names, 0)
        step = 0
        try:
            for step in range(self.steps):
                if self.failed.is_set():
                    return
                slot = rng.choice(self.slots)
                op = rng.choices(names, weights)[0]
                counts[op] += 1
                if op == "wake_free":
                    self.op_wake_free(slot, rng)
                    continue
                with slot.lock:
                    if self.failed.is_set():
                        return    # do not pile follow-up failures on the first
                    self.invariants(slot)
                    getattr(self, "op_" + op)(slot, rng)
                    self.invariants(slot)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.failures.append(f"seed={self.seed} controller {cid} step {step}: "
                                 f"{type(e).__name__}: {e}")
            self.failed.set()
        finally:
            with self.counts_lock:
                for op, c in counts.items():
                    self.counts[op] = self.counts.get(op, 0) + c

    def finish(self) -> None:
        """Stop everything still running; check the dead stayed dead."""
        for slot in self.slots:
            with slot.lock:
                if slot.k is not None and slot.k.is_alive():
                    self.invariants(slot)
                    self.op_stop(slot, random.Random(0))
                    slot.k.stop(DEADLINE)  # the replacement (never woken or parked)
        for slot in self.slots:
            for p, n in slot.dead:
                self.check(slot, p.n == n, f"a stopped thread moved on from {n} to {p.n}")


@pytest.mark.timeout(60 + STEPS // 200)
def test_random_interleavings_two_controllers() -> None:
    """Thousands of random park/unpark/wake/stop steps from two controllers
    (see the module docstring for every invariant checked after each step)."""
    t0 = time.monotonic()
    # Switch the GIL more often than the default 5 ms, so the controllers'
    # and KThreads' Python code interleaves at many more points.
    print(f"stress seed={SEED} (KPARK_STRESS_SEED={SEED} replays the choices)")
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    try:
        s = Stress(SEED, STEPS, NTHREADS)
        run_controllers(s)
    finally:
        sys.setswitchinterval(old_interval)
    took = time.monotonic() - t0
    print(f"stress seed={SEED} steps={STEPS}x2 threads={NTHREADS} "
          f"{took:.1f} s ops={s.counts}")
    # Both controllers really did the work (no op starved by the weights).
    assert all(s.counts[op] > 0 for op, _ in OPS) or STEPS < 200, s.counts


def run_controllers(s: Stress) -> None:
    ctl = [threading.Thread(target=s.controller, args=(i,), name=f"controller{i}",
                            daemon=True) for i in range(2)]
    for t in ctl:
        t.start()
    for t in ctl:
        t.join(30 + STEPS // 200)
    hung = [t.name for t in ctl if t.is_alive()]
    assert not hung, f"seed={SEED}: {hung} did not finish (a call never returned)"
    assert not s.failures, "\n".join(s.failures)
    s.finish()


@pytest.mark.timeout(30)
def test_stop_parked_kernel_loop_thread() -> None:
    """The stress loop's basic case, alone: stop() of a thread parked in its
    kernel-style loop (parkme() returns, the loop goes on to schedule())
    must return threadfn's result (semantics 10: stop wakes the thread out
    of the park loop and waits for it to exit)."""
    p = Prog()
    k = kpark.KThread(kloop, p)
    k.start()
    k.park(DEADLINE)
    assert k.is_parked
    hung = ""
    try:
        r = k.stop(DEADLINE)
    except TimeoutError:
        hung = (f"stop() of a parked kernel-loop thread did not return within "
                f"{DEADLINE} s: state word {k._core.state_word:#x}, progress {p.n}")
    if hung:
        pytest.fail(hung)
    assert r == p.n and p.returned and not k.is_alive()
