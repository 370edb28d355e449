"""kpark._kcore.idle(): an idle sleep that park() turns into "parked in place".

The spec is the docstrings of idle(), KCore.idle/_idle, wake(), _request()
and park() in src/kpark/_kcore.pyx, and PARKABLE/REPIN in its module
docstring.  The rules tested here:

  R1  park() of a thread asleep in idle() parks it there without waking it:
      park() returns, is_parked is True, idle() has not returned.
  R2  unpark() with no wake() since the park leaves it asleep in idle(); a
      later wake() returns True and makes idle() return.
  R3  wake() while parked in place returns False and does not let it run;
      the wake is kept: after unpark() idle() returns (once: a token).
  R4  stop() while parked in place: idle() returns, threadfn finishes, stop()
      returns its result.
  R5  idle() returns at once for a pending wake token, a pending stop (every
      time) and a pending park request (so the loop can parkme()).
  R6  a per-CPU thread whose affinity changed while parked in place is back
      on its CPU when idle() returns.
  R7  PARKABLE/REPIN/PARKED/SLEEPING in state_word as the docstrings say.
  R8  races: no lost wake-up; no work while parked (stress, two controllers).
  R9  PerCPUExecutor: offline() parks idle workers in place, a submit_on() to
      an offline CPU runs after online(), submit() after online() runs.
  R10 the same rules when the request lands while the thread still spins in
      idle() (PARKABLE, SLEEPING not yet announced): test_spin_window, in a
      child process with a long KPARK_SPIN_NS.

"Has not returned from idle()" is observed through counters the threadfn
bumps right after idle() returns (and right before parkme()), checked at
once, through the state word (which only the thread or a waker changes),
and during a bounded quiet period; "was not woken" also through the
thread's voluntary context switches in /proc.
"""
from __future__ import annotations

import os
import random
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, List, Optional

import pytest

import kpark._kcore as _kcore
from kpark import (KThread, create_on_cpu, current, parkme, schedule,
                   should_park, should_stop)
from kpark._kcore import idle
from kpark.executor import PerCPUExecutor

from conftest import allowed_cpus, spawn
from helpers import assert_stays, task_state, wait_asleep, wait_for, where

#: Deadline for what must happen (the machine is small and shared).
LONG = 10.0

# The bits of the word, from the installed build (test_bit_values_match_the_source
# checks them against the checkout's _kcore.pyx).
_BITS = dict(_kcore.BITS)
(SHOULD_STOP, SHOULD_PARK, WAKE, SLEEPING, PARKED, WOKEN, STARTED, EXITED, WAITERS,
 PER_CPU, PARKABLE, REPIN) = (_BITS[name] for name in (
    "SHOULD_STOP", "SHOULD_PARK", "WAKE", "SLEEPING", "PARKED", "WOKEN", "STARTED",
    "EXITED", "WAITERS", "PER_CPU", "PARKABLE", "REPIN"))


def bits(word: int) -> str:
    """The flag names set in `word`, for assertion messages."""
    names = [n for n, b in _BITS.items() if word & b]
    return f"{word:#x} ({'|'.join(names) or '-'})"


def word(k: KThread) -> int:
    return k._core.state_word


def has(w: int, *set_bits: int, clear: int = 0) -> bool:
    need = 0
    for b in set_bits:
        need |= b
    return (w & need) == need and not (w & clear)


def vol_switches(native_id: int) -> int:
    """voluntary_ctxt_switches of a thread of this process."""
    with open(f"/proc/self/task/{native_id}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc status")


def asleep_in_idle(k: KThread) -> bool:
    """The thread sleeps in idle() (not parked): SLEEPING|PARKABLE announced,
    and /proc says it is blocked.  Only the thread itself and a waker change
    those bits, and its only blocking call after announcing SLEEPING is the
    wait itself, so both together mean it is inside that wait."""
    return (has(word(k), SLEEPING, PARKABLE, clear=PARKED)
            and task_state(k.native_id) == "S")


class Idler:
    """A KThread whose loop is the executor's shape:

        while not should_stop():
            if should_park(): parkme(); continue
            idle()

    with counters: `calls` before idle(), `returns` right after it returns,
    `parkmes` before parkme(); `affinity` records sched_getaffinity(0) after
    every return from idle().
    """

    def __init__(self, cpu: Optional[int] = None) -> None:
        self.calls = 0
        self.returns = 0
        self.parkmes = 0
        self.affinity: List[frozenset] = []
        if cpu is None:
            self.k = KThread(self._loop, name="idler")
        else:
            self.k = create_on_cpu(self._loop, None, cpu, "idler/%u")

    def _loop(self, _data: object) -> tuple:
        while not should_stop():
            if should_park():
                self.parkmes += 1
                parkme()
                continue
            self.calls += 1
            idle()
            self.returns += 1
            self.affinity.append(frozenset(os.sched_getaffinity(0)))
        return ("idler done", self.returns)

    def begin(self) -> "Idler":
        if self.k.is_per_cpu:
            self.k.unpark()      # create_on_cpu() returns it parked
        else:
            self.k.start()
        self.wait_idle()
        return self

    def wait_idle(self, returns: Optional[int] = None) -> None:
        """Wait until the thread sleeps in idle() (after `returns` returns)."""
        def ok() -> bool:
            r = self.returns
            return ((returns is None or r == returns) and self.calls == r + 1
                    and asleep_in_idle(self.k))
        wait_for(ok, timeout=LONG,
                 msg=f"thread asleep in idle() (returns={self.returns}, "
                     f"want {returns}; word {bits(word(self.k))})")

    def frozen(self, r: int, p: int) -> Callable[[], bool]:
        return lambda: self.returns == r and self.parkmes == p and self.calls == r + 1

    def park_in_place(self) -> None:
        """Park the thread asleep in idle(); check it is parked in place."""
        r, p = self.returns, self.parkmes
        assert self.k.park(timeout=LONG) is None
        w = word(self.k)
        assert self.k.is_parked
        # (REPIN may still be pending from an earlier unpark in place.)
        assert has(w, PARKED, PARKABLE, SHOULD_PARK, clear=WAKE), bits(w)
        assert self.frozen(r, p)(), "park() woke the thread out of idle()"


# ---------------------------------------------------------------------------
# basics
# ---------------------------------------------------------------------------

def test_bit_values_match_the_source():
    # The installed build's bits (kpark._kcore.BITS, what the tests below
    # decode) against the enum of the checkout's source: never skipped, and
    # it fails on a build that is older than the source, too.
    pyx = Path(__file__).resolve().parent.parent / "src" / "kpark" / "_kcore.pyx"
    enum = {name: 1 << int(shift) for name, shift in
            re.findall(r"^\s+([A-Z_]+)\s*=\s*1\s*<<\s*(\d+)\s*$", pyx.read_text(), flags=re.M)}
    assert enum, f"no bit enum found in {pyx}"
    assert _kcore.BITS == enum


@pytest.mark.timeout(30)
def test_idle_outside_a_kthread_raises():
    with pytest.raises(RuntimeError, match=r"idle\(\) must be called from inside a KThread"):
        idle()
    r = spawn(idle)
    with pytest.raises(RuntimeError, match="inside a KThread"):
        r.get()


@pytest.mark.timeout(30)
def test_idle_sleeps_until_wake_like_schedule():
    i = Idler().begin()
    w = word(i.k)
    # Asleep in idle() and parkable there; not parked, no request pending.
    assert has(w, PARKABLE, SLEEPING, STARTED, clear=PARKED | SHOULD_PARK | REPIN | WAKE), bits(w)
    assert_stays(i.frozen(0, 0), "idle() returned with nothing sent to the thread")
    for n in range(1, 4):
        assert i.k.wake() is True, "wake() of a thread asleep in idle() reported no wake-up"
        i.wait_idle(returns=n)
    assert i.parkmes == 0
    assert i.k.stop(timeout=LONG) == ("idler done", 4)


# ---------------------------------------------------------------------------
# R1 + R7: park() parks a thread asleep in idle() right there
# ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_park_parks_idle_thread_in_place_without_waking_it():
    i = Idler().begin()
    tid = i.k.native_id
    wait_asleep(tid)
    switches = vol_switches(tid)
    i.park_in_place()
    w = word(i.k)
    assert has(w, PARKED, PARKABLE, SHOULD_PARK, SLEEPING, clear=REPIN | WAKE), bits(w)
    # park() again: already parked, returns at once, nothing changes.
    assert i.k.park(timeout=LONG) is None
    assert word(i.k) == w, f"{bits(word(i.k))} != {bits(w)}"
    assert_stays(lambda: i.k.is_parked and i.frozen(0, 0)(),
                 "a thread parked in place returned from idle() or entered parkme()")
    assert task_state(tid) == "S"
    assert vol_switches(tid) == switches, "park() in place woke the thread"
    assert word(i.k) == w, f"the word moved while parked: {bits(word(i.k))} != {bits(w)}"


@pytest.mark.timeout(30)
def test_control_park_of_thread_in_schedule_wakes_it_into_parkme():
    """The same observation on schedule() sees the wake-up: park() of a
    thread asleep in schedule() makes it return and park in parkme(), with
    PARKED but no PARKABLE (so the counters above can tell the two apart)."""
    n = {"returns": 0, "parkmes": 0}

    def fn(_d):
        while not should_stop():
            if should_park():
                n["parkmes"] += 1
                parkme()
                continue
            schedule()
            n["returns"] += 1

    k = KThread(fn)
    k.start()
    wait_for(lambda: has(word(k), SLEEPING) and task_state(k.native_id) == "S")
    assert not word(k) & PARKABLE, "schedule() announced PARKABLE"
    k.park(timeout=LONG)
    w = word(k)
    assert has(w, PARKED, SHOULD_PARK, clear=PARKABLE), bits(w)
    assert n == {"returns": 1, "parkmes": 1}


# ---------------------------------------------------------------------------
# R2 + R7: unpark() without a wake leaves it asleep in idle()
# ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_unpark_without_wake_leaves_it_asleep_in_idle():
    i = Idler().begin()
    tid = i.k.native_id
    wait_asleep(tid)
    switches = vol_switches(tid)
    # A hotplug-like cycle, several times: parked in place, back to the idle
    # sleep, never woken.
    for cycle in range(3):
        i.park_in_place()
        before = word(i.k)
        i.k.unpark()
        w = word(i.k)
        # Right after unpark(): still asleep in idle() (PARKABLE|SLEEPING are
        # cleared by whoever wakes it), re-pin pending, request gone.
        assert not i.k.is_parked and not i.k.should_park
        assert has(w, PARKABLE, SLEEPING, REPIN, clear=PARKED | SHOULD_PARK | WAKE), \
            f"cycle {cycle}: {bits(before)} -> {bits(w)}"
        assert i.frozen(0, 0)(), f"cycle {cycle}: unpark() let idle() return"
    assert_stays(i.frozen(0, 0), "unpark() without a wake let idle() return")
    wait_asleep(tid)
    assert i.frozen(0, 0)()
    assert vol_switches(tid) == switches, "park/unpark in place woke the thread"
    # A wake now finds it asleep: True, and idle() returns (once).
    assert i.k.wake() is True
    i.wait_idle(returns=1)
    w = word(i.k)
    assert has(w, PARKABLE, SLEEPING, clear=REPIN | WAKE | PARKED), \
        f"REPIN not cleared by the thread on its way out: {bits(w)}"
    assert_stays(lambda: i.returns == 1, "one wake made idle() return more than once")
    assert i.parkmes == 0


#: The child of test_spin_window.  With a huge KPARK_SPIN_NS the thread
#: spins in idle() (PARKABLE, not yet SLEEPING) long enough for the main
#: thread, on another CPU, to act in that window every time.
_SPIN_CHILD = r"""
import json, os, sys, time
from kpark import create_on_cpu, parkme, should_park, should_stop
from kpark._kcore import idle
PARKABLE, SLEEPING, PARKED = 1 << 10, 1 << 3, 1 << 4
main_cpu, cpu, scenario = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
box = {"returns": 0}

def fn(_d):
    while not should_stop():
        if should_park():
            parkme()
            continue
        idle()
        box["returns"] += 1
    return box["returns"]

def until(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return False
        time.sleep(0.0005)
    return True

def state(tid):
    with open(f"/proc/self/task/{tid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]

k = create_on_cpu(fn, None, cpu)
os.sched_setaffinity(0, {main_cpu})     # this thread only: the waker elsewhere
k.unpark()
w = lambda: k._core.state_word
out = {"spinning": until(lambda: w() & PARKABLE)}
out["before"] = w()                     # PARKABLE, not SLEEPING: spinning
steps = scenario.split("+")
for step in steps:
    if step == "park":
        k.park(timeout=10)
    elif step == "asleep":              # the spin ran out: in the kernel now
        out["asleep"] = until(lambda: state(k.native_id) == "S")
    elif step == "unpark":
        k.unpark()
    elif step == "wake":
        out["wake"] = k.wake()
    elif step == "stop":
        out["stop"] = k.stop(timeout=10)
    out[step + "_word"] = w()
out["returned"] = until(lambda: box["returns"] == 1, timeout=10.0)
print("RESULT " + json.dumps(out), flush=True)
if not out["returned"]:
    os._exit(0)                         # the thread is lost in idle(): stop() would hang
if "stop" not in steps:
    print("STOP " + json.dumps(k.stop(timeout=10)), flush=True)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scenario", [
    "wake",                         # a wake that finds it spinning is a token
    "stop",
    "park+asleep+unpark+wake",      # parked before SLEEPING: unpark must set it
    "park+asleep+wake+unpark",      # the kept wake wakes it out
    "park+unpark+wake",             # released while still spinning
])
def test_spin_window(two_cpus, scenario):
    """Requests that land while the thread still spins in idle() (PARKABLE,
    not SLEEPING yet).  Runs in a child with KPARK_SPIN_NS = 0.5 s, the main
    thread and the idler pinned to different CPUs, so that every request
    lands in the spin window.  In every case idle() returns exactly when the
    rules say (no lost wake-up), e.g. a thread parked before it announced
    SLEEPING goes to sleep parked, and unpark() must put it back to a sleep
    that wake() reaches."""
    import json
    import subprocess
    import sys
    main_cpu, cpu = two_cpus
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(_kcore.__file__)))
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["KPARK_SPIN_NS"] = str(500_000_000)
    try:
        p = subprocess.run([sys.executable, "-c", _SPIN_CHILD, str(main_cpu), str(cpu), scenario],
                           env=env, capture_output=True, text=True, timeout=45,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"child hung\nstdout:\n{e.stdout}\nstderr:\n{e.stderr}")
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"no result (rc {p.returncode})\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    out = json.loads(lines[0][len("RESULT "):])
    got = {key: (bits(v) if key.endswith("_word") or key == "before" else v)
           for key, v in out.items()}
    assert out["spinning"], f"the child's idler never reached idle(): {got}"
    assert has(out["before"], PARKABLE, clear=SLEEPING), f"not in the spin window: {got}"
    if "park_word" in out:
        assert has(out["park_word"], PARKED, PARKABLE, SHOULD_PARK, clear=SLEEPING), \
            f"park() did not land in the spin window: {got}"
    if "asleep" in out:
        assert out["asleep"], f"the idler kept spinning after 20 s: {got}"
        assert has(out["asleep_word"], PARKED, PARKABLE, clear=SLEEPING), got
    if scenario.startswith("park+asleep+unpark"):
        assert has(out["unpark_word"], PARKABLE, SLEEPING, REPIN, clear=PARKED | SHOULD_PARK), \
            f"unpark() did not put it back to its idle sleep: {got}"
    if scenario == "park+unpark+wake":
        assert has(out["unpark_word"], PARKABLE, SLEEPING, REPIN, clear=PARKED | SHOULD_PARK), got
    if scenario in ("wake", "park+asleep+wake+unpark"):
        assert out["wake"] is False, f"wake() of a spinning/parked thread reported a wake-up: {got}"
    elif "wake" in out:
        assert out["wake"] is True, f"wake() after unpark() found no sleeper: {got}"
    if scenario == "stop":
        assert out["stop"] == 1, got
    assert out["returned"], f"lost wake-up: idle() did not return: {got}"
    assert p.returncode == 0 and ("STOP 2" in p.stdout or scenario == "stop"), \
        (p.returncode, p.stdout, p.stderr)


# ---------------------------------------------------------------------------
# R3 + R7: a wake while parked in place is kept for unpark()
# ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
@pytest.mark.parametrize("wakes", [1, 3])
def test_wake_while_parked_in_place_is_kept_until_unpark(wakes):
    i = Idler().begin()
    i.park_in_place()
    for _ in range(wakes):
        assert i.k.wake() is False, "wake() of a parked thread reported a wake-up"
    w = word(i.k)
    assert has(w, PARKED, PARKABLE, SHOULD_PARK, WAKE), bits(w)
    assert_stays(lambda: i.k.is_parked and i.frozen(0, 0)(),
                 "wake() let a thread parked in place run")
    i.k.unpark()
    assert not i.k.is_parked
    # The kept wake is this wake-up: idle() returns once (a token, not a
    # count), and the thread goes back to sleep in idle().
    i.wait_idle(returns=1)
    assert_stays(lambda: i.returns == 1, "the kept wake made idle() return twice")
    w = word(i.k)
    assert has(w, PARKABLE, SLEEPING, clear=WAKE | REPIN | PARKED | SHOULD_PARK), bits(w)
    assert i.parkmes == 0


# ---------------------------------------------------------------------------
# R4 + R7: stop() while parked in place
# ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
@pytest.mark.parametrize("wake_first", [False, True])
def test_stop_while_parked_in_place_returns_from_idle(wake_first):
    i = Idler().begin()
    i.park_in_place()
    if wake_first:
        assert i.k.wake() is False
    assert i.k.stop(timeout=LONG) == ("idler done", 1)
    assert (i.calls, i.returns, i.parkmes) == (1, 1, 0)
    assert not i.k.is_alive()
    w = word(i.k)
    assert has(w, EXITED, SHOULD_STOP, clear=PARKED | PARKABLE | REPIN | SLEEPING), bits(w)


@pytest.mark.timeout(30)
def test_stop_while_asleep_in_idle():
    i = Idler().begin()
    assert i.k.stop(timeout=LONG) == ("idler done", 1)
    w = word(i.k)
    assert has(w, EXITED, clear=PARKABLE | REPIN | SLEEPING), bits(w)


@pytest.mark.timeout(30)
def test_stop_after_unpark_in_place_without_wake():
    i = Idler().begin()
    i.park_in_place()
    i.k.unpark()
    assert has(word(i.k), REPIN, SLEEPING, PARKABLE)
    assert i.k.stop(timeout=LONG) == ("idler done", 1)
    w = word(i.k)
    assert has(w, EXITED, clear=PARKABLE | REPIN | SLEEPING), bits(w)


# ---------------------------------------------------------------------------
# R5: idle() returns at once for a token, a stop, a park request
# ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_idle_returns_at_once_for_a_pending_wake_token():
    go = threading.Event()
    back = [threading.Event(), threading.Event()]

    def fn(_d):
        assert go.wait(LONG)
        idle()                  # the token: at once
        back[0].set()
        idle()                  # token used up: sleeps until the next wake
        back[1].set()
        return "ok"

    k = KThread(fn)
    k.start()
    wait_for(lambda: task_state(k.native_id) == "S")   # blocked on go, not in idle()
    assert not word(k) & (PARKABLE | SLEEPING)
    assert k.wake() is False, "wake() of a running thread reported a wake-up"
    assert word(k) & WAKE
    go.set()
    assert back[0].wait(LONG), "idle() slept despite a pending wake token"
    wait_for(lambda: asleep_in_idle(k), msg="second idle() sleeps (one token only)")
    assert not back[1].is_set()
    assert not word(k) & WAKE
    assert k.wake() is True
    assert back[1].wait(LONG)
    assert k.stop(timeout=LONG) == "ok"


@pytest.mark.timeout(30)
def test_idle_never_sleeps_once_stop_is_pending():
    go = threading.Event()
    returned: List[int] = []

    def fn(_d):
        assert go.wait(LONG)
        for n in range(3):
            idle()
            returned.append(n)
        return "stopped"

    k = KThread(fn)
    k.start()
    stopper = spawn(lambda: k.stop(timeout=LONG))
    wait_for(lambda: k.should_stop, msg="stop() was called")
    go.set()
    assert stopper.get(LONG + 5) == "stopped"
    assert returned == [0, 1, 2]


@pytest.mark.timeout(30)
def test_idle_returns_at_once_for_own_park_request_then_parkme():
    seen: dict = {}
    after = threading.Event()

    def fn(_d):
        me = current()
        me.park()               # from itself: only sets should_park, no token
        seen["word"] = me._core.state_word
        idle()
        idle()                  # still pending: at once again
        seen["returned"] = True
        parkme()
        after.set()
        while not should_stop():
            idle()
        return "ok"

    k = KThread(fn)
    k.start()
    wait_for(lambda: k.is_parked, msg="the thread parked in parkme() after idle()")
    assert seen.get("returned") is True
    assert has(seen["word"], SHOULD_PARK, clear=WAKE), \
        f"the test needs a park request without a token: {bits(seen['word'])}"
    w = word(k)
    assert has(w, PARKED, SHOULD_PARK, clear=PARKABLE), bits(w)  # parkme(), not in place
    assert not after.is_set()
    k.unpark()
    assert after.wait(LONG)
    assert k.stop(timeout=LONG) == "ok"


@pytest.mark.timeout(30)
def test_idle_returns_for_park_from_another_thread_while_running():
    """The executor's race: park() comes after the loop checked should_park()
    and before it sleeps; idle() returns and the loop parks in parkme()."""
    go = threading.Event()
    steps: List[str] = []

    def fn(_d):
        assert go.wait(LONG)
        idle()
        steps.append("idle returned")
        assert should_park()
        parkme()
        steps.append("unparked")
        return steps

    k = KThread(fn)
    k.start()
    wait_for(lambda: task_state(k.native_id) == "S")
    parker = spawn(lambda: k.park(timeout=LONG))
    wait_for(lambda: k.should_park)
    go.set()
    parker.get(LONG + 5)
    assert k.is_parked and steps == ["idle returned"]
    assert not word(k) & PARKABLE
    k.unpark()
    assert k.stop(timeout=LONG) == ["idle returned", "unparked"]


# ---------------------------------------------------------------------------
# R6: a per-CPU thread is re-pinned when it leaves idle() after a park in place
# ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["unpark_then_wake", "wake_then_unpark", "stop",
                                 "cycles_then_wake"])
def test_per_cpu_thread_repinned_after_park_in_place(two_cpus, how):
    other, cpu = two_cpus
    i = Idler(cpu=cpu).begin()
    tid = i.k.native_id
    assert i.affinity == [] and os.sched_getaffinity(tid) == {cpu}
    i.park_in_place()
    assert word(i.k) & PER_CPU
    os.sched_setaffinity(tid, {other})
    assert os.sched_getaffinity(tid) == {other}
    if how == "stop":
        assert i.k.stop(timeout=LONG) == ("idler done", 1)
    else:
        if how == "wake_then_unpark":
            assert i.k.wake() is False
            i.k.unpark()
        else:
            if how == "cycles_then_wake":
                for _ in range(3):
                    i.k.unpark()
                    i.park_in_place()
            i.k.unpark()
            assert has(word(i.k), REPIN, SLEEPING, PARKABLE)
            assert_stays(i.frozen(0, 0), "unpark() let idle() return")
            assert i.k.wake() is True
        i.wait_idle(returns=1)
        assert not word(i.k) & REPIN
    assert i.affinity == [frozenset({cpu})], \
        f"idle() returned on {i.affinity}, not re-pinned to CPU {cpu}"


@pytest.mark.timeout(30)
def test_per_cpu_thread_not_repinned_by_a_plain_wake_out_of_idle(two_cpus):
    """REPIN is only set by releasing a park in place: a thread merely woken
    out of idle() keeps whatever affinity it was given (as after schedule())."""
    other, cpu = two_cpus
    i = Idler(cpu=cpu).begin()
    os.sched_setaffinity(i.k.native_id, {other})
    assert not word(i.k) & REPIN
    assert i.k.wake() is True
    i.wait_idle(returns=1)
    assert i.affinity == [frozenset({other})]


# ---------------------------------------------------------------------------
# R8: races (two controllers hammering park/unpark/wake)
# ---------------------------------------------------------------------------

class RWLock:
    """Shared/exclusive lock with writer preference (no writer starvation)."""

    def __init__(self) -> None:
        self._c = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def shared(self):
        with self._c:
            while self._writer or self._writers_waiting:
                self._c.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._c:
                self._readers -= 1
                self._c.notify_all()

    @contextmanager
    def exclusive(self):
        with self._c:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._c.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._c:
                self._writer = False
                self._c.notify_all()


@pytest.mark.timeout(60)
def test_stress_no_lost_wakeup_and_no_work_while_parked():
    """Two controllers hammer one idle()-looping thread with wake() (each
    after producing one unit of work), racing park()/unpark() (shared lock:
    they race each other, the thread and wake()), and checked park sessions
    (exclusive lock: nobody unparks meanwhile):

      session: park(); is_parked must be True; the controller then produces
      and wakes (wake() must return False: parked) and checks that the
      thread made no pass (its `passes` did not move, and the thread itself
      sees no session flag at the start of a pass) until the controller
      unparks it.

    Every so often both controllers stop at a barrier; the test thread then
    unparks (the only release; no extra wake) and everything produced must
    be consumed: a wake lost anywhere before the barrier leaves work behind.
    Then the thread must be asleep in idle(), and a wake finds it asleep.
    """
    k_box: List[KThread] = []
    st = {"produced": 0, "consumed": 0, "passes": 0, "session": False,
          "violations": [], "in_place": 0, "in_loop": 0, "false_wakes": 0}
    plock = threading.Lock()

    def threadfn(_d):
        while not should_stop():
            if should_park():
                parkme()
                continue
            if st["session"]:
                st["violations"].append(f"pass {st['passes']} during a park session")
            st["passes"] += 1
            st["consumed"] = st["produced"]
            sum(range(200))            # a little work: park() may catch us here
            idle()
        return st["passes"]

    k = KThread(threadfn, name="idle-stress")
    k_box.append(k)
    k.start()
    rw = RWLock()
    barrier = threading.Barrier(3, timeout=LONG * 3)
    done = threading.Event()
    errors: List[BaseException] = []

    def produce_and_wake() -> bool:
        with plock:
            st["produced"] += 1
        return k.wake()

    def session() -> None:
        with rw.exclusive():
            k.park(timeout=LONG)
            w = k._core.state_word
            if not k.is_parked:
                st["violations"].append(f"park() returned unparked: {bits(w)}")
                return
            st["in_place" if w & PARKABLE else "in_loop"] += 1
            st["session"] = True
            p0 = st["passes"]
            for _ in range(2):
                if produce_and_wake():
                    st["violations"].append("wake() of a parked thread returned True")
                time.sleep(0)
            if st["passes"] != p0 or not k.is_parked:
                st["violations"].append(
                    f"thread moved while parked: passes {p0}->{st['passes']}, "
                    f"word {bits(k._core.state_word)}")
            st["session"] = False
            k.unpark()

    def controller(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            while True:
                for _ in range(60):
                    x = rnd.random()
                    if x < 0.45:
                        if not produce_and_wake():
                            st["false_wakes"] += 1
                    elif x < 0.75:
                        with rw.shared():
                            if rnd.random() < 0.5:
                                k.park(timeout=LONG)
                            else:
                                k.unpark()
                    else:
                        session()
                    if rnd.random() < 0.1:
                        time.sleep(0)
                barrier.wait()          # quiesce: the test thread checks
                barrier.wait()
                if done.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)
            barrier.abort()

    seed = random.randrange(1 << 30)
    ctl = [threading.Thread(target=controller, args=(seed + n,), daemon=True)
           for n in range(2)]
    for t in ctl:
        t.start()
    rounds = 0
    end = time.monotonic() + 1.5
    finished = False
    try:
        while True:
            barrier.wait()
            rounds += 1
            assert not errors, errors
            assert not st["violations"], st["violations"][:5]
            k.unpark()
            wait_for(lambda: st["consumed"] == st["produced"], timeout=LONG,
                     msg=f"round {rounds} (seed {seed}): lost wake-up: consumed "
                         f"{st['consumed']} of {st['produced']}, word "
                         f"{bits(k._core.state_word)}")
            wait_for(lambda: asleep_in_idle(k), timeout=LONG,
                     msg=f"round {rounds}: thread back asleep in idle(), word "
                         f"{bits(k._core.state_word)}")
            p = st["passes"]
            assert k.wake() is True
            wait_for(lambda: st["passes"] == p + 1 and asleep_in_idle(k), timeout=LONG)
            if time.monotonic() >= end:
                done.set()
            barrier.wait()
            if done.is_set():
                break
        finished = True
    finally:
        done.set()
        if not finished:
            barrier.abort()     # a check failed: release the controllers
        for t in ctl:
            t.join(LONG)
    print(f"stress: seed {seed}, rounds {rounds}, {st}")
    assert not errors, errors
    assert not st["violations"], (seed, st["violations"][:5])
    # The races the test is about did happen.
    assert st["in_place"] > 0 and st["in_loop"] > 0, st
    assert rounds >= 2, rounds
    assert k.stop(timeout=LONG) == st["passes"]


# ---------------------------------------------------------------------------
# R9: PerCPUExecutor relies on idle()
# ---------------------------------------------------------------------------

def one_cpu_executor(cpu: int) -> PerCPUExecutor:
    ex = PerCPUExecutor(cpus=[cpu])
    # The worker's first loop runs should_run (False) and sleeps in idle().
    wait_for(lambda: asleep_in_idle(ex.threads.thread(cpu)),
             msg="the idle worker sleeps in idle()")
    return ex


@pytest.mark.timeout(60)
def test_executor_offline_parks_idle_worker_in_place_without_waking_it():
    cpu = allowed_cpus()[-1]
    with one_cpu_executor(cpu) as ex:
        k = ex.threads.thread(cpu)
        tid = k.native_id
        wait_asleep(tid)
        switches = vol_switches(tid)
        for cycle in range(3):
            ex.offline(cpu, force=True)
            w = word(k)
            assert k.is_parked, f"cycle {cycle}: offline() returned, worker not parked"
            assert has(w, PARKED, PARKABLE, SHOULD_PARK), f"cycle {cycle}: {bits(w)}"
            ex.online(cpu)
            w = word(k)
            assert not k.is_parked
            assert has(w, PARKABLE, SLEEPING, REPIN, clear=PARKED | SHOULD_PARK), \
                f"cycle {cycle}: online() did not leave the worker asleep: {bits(w)}"
        wait_asleep(tid)
        assert vol_switches(tid) == switches, \
            "offline()/online() woke the idle worker"
        # And it still takes work.
        assert ex.submit(where).result(LONG) == (cpu, frozenset({cpu}))


@pytest.mark.timeout(60)
def test_executor_submit_on_offline_cpu_runs_after_online():
    cpu = allowed_cpus()[-1]
    with one_cpu_executor(cpu) as ex:
        k = ex.threads.thread(cpu)
        ex.offline(cpu, force=True)
        assert k.is_parked and word(k) & PARKABLE
        f = ex.submit_on(cpu, where)
        # The wake of submit_on() is kept, the worker stays parked.
        assert has(word(k), PARKED, PARKABLE, WAKE), bits(word(k))
        assert_stays(lambda: not f.done() and k.is_parked,
                     "a task ran on an offline CPU")
        ex.online(cpu)
        assert f.result(LONG) == (cpu, frozenset({cpu}))


@pytest.mark.timeout(60)
def test_executor_submit_after_online_runs():
    cpu = allowed_cpus()[-1]
    with one_cpu_executor(cpu) as ex:
        for n in range(3):
            ex.offline(cpu, force=True)
            ex.online(cpu)
            assert ex.submit(lambda n=n: (n, where())).result(LONG) == \
                (n, (cpu, frozenset({cpu})))
            assert ex.submit_on(cpu, where).result(LONG) == (cpu, frozenset({cpu}))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("submit_while_offline", [True, False])
def test_executor_worker_repinned_after_park_in_place(two_cpus, submit_while_offline):
    other, cpu = two_cpus
    with one_cpu_executor(cpu) as ex:
        k = ex.threads.thread(cpu)
        ex.offline(cpu, force=True)
        assert word(k) & PARKABLE
        os.sched_setaffinity(k.native_id, {other})
        if submit_while_offline:
            f = ex.submit_on(cpu, where)
            ex.online(cpu)
        else:
            ex.online(cpu)
            f = ex.submit_on(cpu, where)
        assert f.result(LONG) == (cpu, frozenset({cpu}))


@pytest.mark.timeout(60)
def test_executor_online_wakes_worker_to_steal_work_queued_elsewhere(two_cpus):
    """online() leaves a worker parked in place asleep, so it must wake it
    when another CPU's queue holds unpinned tasks it could steal (a task
    stuck behind a busy worker would otherwise wait for that worker)."""
    c0, c1 = two_cpus
    release = threading.Event()
    started = threading.Event()

    def blocker() -> str:
        started.set()
        release.wait(LONG)
        return "blocker"

    ex = PerCPUExecutor(cpus=[c0, c1])
    try:
        k0 = ex.threads.thread(c0)
        wait_for(lambda: asleep_in_idle(k0), msg="c0's worker sleeps in idle()")
        ex.offline(c0)
        assert has(word(k0), PARKED, PARKABLE), bits(word(k0))
        fb = ex.submit(blocker)               # c1 is the only online CPU
        assert started.wait(LONG)
        ft = ex.submit(where)                 # queued behind the blocker on c1
        ex.online(c0)
        assert ft.result(LONG) == (c0, frozenset({c0})), \
            "the onlined idle worker did not steal the queued task"
        assert not fb.done()
        release.set()
        assert fb.result(LONG) == "blocker"
    finally:
        release.set()
        ex.shutdown()
