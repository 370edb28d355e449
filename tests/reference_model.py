"""A pure-Python reference model of the KThread state machine (docs/semantics.md).

tests/test_model.py runs real KThreads and checks every observation against
this model.  The model is deliberately small and independent of the Cython
code: it is the table of docs/semantics.md written out as Python.

One KThread is a `KT` value: the bits of "The word" that matter to callers
(SHOULD_STOP, SHOULD_PARK, WAKE, SLEEPING, PARKED, WOKEN, STARTED, EXITED)
plus where the thread's code is (`pc`).  The thread runs the test's
kernel-style loop (`tests/test_model.py: kloop`):

    while True:
        if should_stop(): return done          # LOOP
        if should_park(): parkme(); continue   # PARK_LOOP
        wait for a command and run it          # idle; CMD (test's own steps)

where a command is a short sequence of the thread's own operations
(`schedule()`, `schedule(timeout)`, `parkme()`, `park()` on itself,
`should_park()/should_stop()`, return, raise).

Nothing in the real system is atomic beyond one CAS on the word, so every
operation is a small program of atomic steps:

- `thread_steps(t)`: the step the thread can take next by itself (the
  "Before threadfn is entered" paragraph, the park loop, schedule()).
- `call_step(t, name, phase)`: the next step of a controller's call
  (`wake`, `park`, `unpark`, `stop`, `start`; docs/semantics.md
  "Transitions").  Blocking calls (park, stop, start) are a request step and
  a return step that is enabled once the awaited state holds; each call also
  reads one property right after it returned (the "peek": `is_parked` after
  park/unpark, `is_alive()` after stop, `started` after start).

`explore(configs, calls)` runs every interleaving of the calls' steps with
the thread's steps (a breadth-first search over a few dozen states) and
returns every *quiescent* outcome: all calls returned and the thread blocked
(first sleep, idle in its loop, parked, asleep in an untimed schedule(), or
exited).  That is the set of observations the real system may produce, so a
race between two controllers is accepted under any interleaving, not just
under the two linearizations.  Hidden state the test cannot see (a pending
WAKE token) stays a set of possibilities until an observation (a
schedule() that returns at once, or times out) decides it.

`PoolModel` is the same idea for `kpark.PerCPUThreads` online/offline.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, FrozenSet, Iterable, List, NamedTuple, Optional, Set, Tuple, Union

# -- where the thread is (KT.pc) ---------------------------------------------
FIRST = "first-sleep"      # never-woken: asleep in its first sleep
PRE = "pre-start"          # left the first sleep; stop check, then parkme check
PARK_PRE = "park-pre"      # park loop before threadfn ("never-woken | park()")
ENTER = "enter"            # the STARTED CAS, "unless SHOULD_STOP is set"
LOOP = "loop"              # threadfn's loop; idle (waiting for a command) if no request
PARK_LOOP = "park-loop"    # parkme() called by the loop because should_park()
CMD = "cmd"                # running the first step of KT.cmd
SCHED = "sched-wait"       # inside schedule() after announcing SLEEPING
PARK_CMD = "park-cmd"      # parkme() called by a command
EXITED = "exited"

_PARK_PCS = (PARK_PRE, PARK_LOOP, PARK_CMD)

# -- the thread's own operations, as command steps --------------------------
SCHEDULE = "schedule"          # schedule(): sleep until woken
SCHEDULE_T = "schedule_t"      # schedule(timeout): may time out
PARKME = "parkme"
SELF_PARK = "self_park"        # park() called by the thread on itself
QUERY = "query"                # (should_park(), should_stop())
RETURN = "return"              # threadfn returns its count
RAISE = "raise"                # threadfn raises

NOTHING = "-"                  # KT.last before any command completed


class Outcome(NamedTuple):
    """What a controller's call gave: ('ok', value, peek) or ('raise', name, peek)."""
    kind: str
    value: object
    peek: object = None


@dataclass(frozen=True)
class KT:
    """One KThread: the word's bits (docs/semantics.md, "The word") and its pc."""
    should_stop: bool = False
    should_park: bool = False
    token: bool = False        # WAKE: one remembered wake-up
    sleeping: bool = True      # SLEEPING: first sleep or schedule()
    parked: bool = False       # PARKED: announced in the park loop
    woken: bool = False        # WOKEN
    started: bool = False      # STARTED: threadfn entered
    exited: bool = False       # EXITED
    pc: str = FIRST
    cmd: Tuple[str, ...] = ()  # the command's steps still to run (first = current)
    done: int = 0              # commands completed (threadfn returns it)
    last: object = NOTHING     # result of the last completed command
    outcome: Optional[Outcome] = None   # what stop() reports, once exited

    # -- the states of docs/semantics.md, "States" --------------------------
    @property
    def state(self) -> str:
        """The docs/semantics.md state name (for messages)."""
        if self.exited:
            return "exited"
        if self.should_stop:
            return "stopping"
        if self.parked:
            return "parked"
        if self.should_park:
            return "parking"
        if self.pc == FIRST:
            return "never-woken"
        if self.sleeping:
            return "sleeping"
        return "running"

    @property
    def idle(self) -> bool:
        """In its loop, waiting for a command, nothing pending: commands may be given."""
        return self.pc == LOOP and not self.should_stop and not self.should_park


def fresh() -> KT:
    """A KThread right after its constructor: "never-woken", in its first sleep."""
    return KT()


def parked_on_cpu() -> KT:
    """create_on_cpu(): bound and parked before threadfn (its park() woke the
    first sleep, so no WAKE token is left)."""
    return KT(should_park=True, sleeping=False, parked=True, woken=True, pc=PARK_PRE)


# -- controllers' atomic effects on the word ---------------------------------

def wake(t: KT) -> Tuple[KT, bool]:
    """wake() (semantics: "never-woken | wake()", "running | wake()",
    "sleeping | wake()", "parked | wake()" = deaf): True only if it woke a
    sleeper; else leaves one token, unless parked or exited."""
    if t.exited or t.parked:
        return t, False
    if t.sleeping:
        return replace(t, sleeping=False, woken=True), True
    return replace(t, token=True, woken=True), False


def request(t: KT, *, stop: bool = False, park: bool = False, unpark: bool = False) -> KT:
    """The request of park() (SHOULD_PARK | WOKEN), unpark() (clear SHOULD_PARK
    and PARKED; only if one is set: "a no-op unpark does nothing") or stop()
    (SHOULD_STOP, clear SHOULD_PARK and PARKED): each wakes a sleeper, releases
    the park loop when it clears PARKED, or else leaves a token.  On an exited
    thread only SHOULD_STOP is recorded."""
    if t.exited:
        return replace(t, should_stop=t.should_stop or stop)
    if unpark and not (t.should_park or t.parked):
        return t
    clear = unpark or stop
    n = replace(t, should_stop=t.should_stop or stop,
                should_park=(t.should_park or park) and not clear,
                parked=t.parked and not clear,
                woken=t.woken or park)
    if t.sleeping:
        return replace(n, sleeping=False)
    if t.parked and clear:
        return n
    return replace(n, token=True)


# -- the thread's own steps --------------------------------------------------

def _exit(t: KT, outcome: Outcome) -> KT:
    return replace(t, exited=True, pc=EXITED, cmd=(), outcome=outcome)


def _finish_cmd_step(t: KT, result: object) -> KT:
    """One command step finished with `result`: the next step, or back to the loop."""
    rest = t.cmd[1:]
    if rest:
        return replace(t, pc=CMD, cmd=rest)
    return replace(t, pc=LOOP, cmd=(), done=t.done + 1, last=result)


def _leave_park_loop(t: KT) -> KT:
    if t.pc == PARK_PRE:
        return replace(t, pc=ENTER)
    if t.pc == PARK_LOOP:
        return replace(t, pc=LOOP)
    return _finish_cmd_step(t, None)


def thread_steps(t: KT) -> List[KT]:
    """The thread's next atomic step, if it can take one ([] = blocked).

    Follows docs/semantics.md "Before threadfn is entered ..." (first sleep,
    stop check, park loop, STARTED CAS), the park loop ("Phase 1 announce
    only while SHOULD_PARK && !SHOULD_STOP"), schedule() ("running |
    schedule()", "sleeping | timeout", "A stopping thread never sleeps in
    schedule()"), and the test's loop (module docstring).
    """
    pc = t.pc
    if pc == FIRST:
        return [replace(t, pc=PRE)] if (t.woken or t.should_stop) else []
    if pc == PRE:
        if t.should_stop:
            return [_exit(t, Outcome("ok", None, False))]      # threadfn never runs
        return [replace(t, pc=PARK_PRE if t.should_park else ENTER)]
    if pc in _PARK_PCS:
        if t.parked:
            return []                                           # asleep until unpark/stop
        if t.should_park and not t.should_stop:
            return [replace(t, parked=True)]                    # the announcement
        return [_leave_park_loop(t)]
    if pc == ENTER:
        if t.should_stop:
            return [_exit(t, Outcome("ok", None, False))]
        return [replace(t, started=True, pc=LOOP)]
    if pc == LOOP:
        if t.should_stop:
            return [_exit(t, Outcome("ok", t.done, False))]
        if t.should_park:
            return [replace(t, pc=PARK_LOOP)]
        return []                                               # idle: waits for a command
    if pc == SCHED:
        if not t.sleeping:
            return [_finish_cmd_step(t, True)]                 # a waker cleared SLEEPING
        if t.cmd[0] == SCHEDULE_T:
            return [_finish_cmd_step(replace(t, sleeping=False), False)]   # timed out
        return []
    if pc == CMD:
        step = t.cmd[0]
        if step in (SCHEDULE, SCHEDULE_T):
            if t.should_stop:
                return [_finish_cmd_step(t, True)]
            if t.token:
                return [_finish_cmd_step(replace(t, token=False), True)]
            return [replace(t, sleeping=True, pc=SCHED)]
        if step == PARKME:
            return [replace(t, pc=PARK_CMD) if t.should_park else _finish_cmd_step(t, None)]
        if step == SELF_PARK:
            return [_finish_cmd_step(replace(t, should_park=True), None)]
        if step == QUERY:
            return [_finish_cmd_step(t, (t.should_park, t.should_stop))]
        if step == RETURN:
            return [_exit(t, Outcome("ok", t.done, False))]
        if step == RAISE:
            return [_exit(t, Outcome("raise", "WorkerError", False))]
        raise ValueError(f"unknown command step {step!r}")
    if pc == EXITED:
        return []
    raise ValueError(f"unknown pc {pc!r}")


def dispatch(t: KT, cmd: Tuple[str, ...]) -> KT:
    """Hand an idle thread a command (the test waits until it took it)."""
    if not t.idle:
        raise ValueError(f"command {cmd} given to a thread that is not idle: {t}")
    return replace(t, pc=CMD, cmd=tuple(cmd))


# -- controllers' calls, step by step ----------------------------------------

Phase = Union[int, Outcome]     # an int: the next step to run; an Outcome: returned


def call_step(t: KT, name: str, phase: int) -> List[Tuple[KT, Phase]]:
    """The next atomic step of a controller's call ([] = still waiting).

    wake:   "| wake()" rows; one step.
    unpark: "parking | unpark()", "parked | unpark()", no-op otherwise; then
            peek is_parked.
    park:   "parked | park()" returns at once; "exited" raises
            ThreadExitedError; else request, then wait for PARKED, EXITED or
            the request withdrawn ("park() raced by unpark()"); then peek
            is_parked.
    stop:   request, then wait for EXITED; threadfn's result or exception, or
            None if it never ran; then peek is_alive().
    start:  RuntimeError if STARTED; else wake, then wait for STARTED,
            EXITED (ThreadExitedError) or PARKED (RuntimeError); then peek
            `started`.
    """
    if name == "wake":
        n, woke = wake(t)
        return [(n, Outcome("ok", woke))]
    if name == "unpark":
        if phase == 0:
            return [(request(t, unpark=True), 1)]
        return [(t, Outcome("ok", None, t.parked))]
    if name == "park":
        if phase == 0:
            if t.exited:
                return [(t, Outcome("raise", "ThreadExitedError"))]
            return [(t, 3 if t.parked else 1)]
        if phase == 1:
            if t.exited:
                return [(t, Outcome("raise", "ThreadExitedError"))]
            return [(request(t, park=True), 2)]
        if phase == 2:
            if not (t.parked or t.exited or not t.should_park):
                return []
            if t.exited and not t.parked:
                return [(t, Outcome("raise", "ThreadExitedError"))]
            return [(t, 3)]
        return [(t, Outcome("ok", None, t.parked))]
    if name == "stop":
        if phase == 0:
            return [(request(t, stop=True), 1)]
        if phase == 1:
            return [(t, 2)] if t.exited else []
        assert t.outcome is not None
        return [(t, t.outcome._replace(peek=not t.exited))]
    if name == "start":
        if phase == 0:
            if t.started:
                return [(t, Outcome("raise", "RuntimeError"))]
            return [(t, 1)]
        if phase == 1:
            return [(wake(t)[0], 2)]
        if phase == 2:
            if t.started:
                return [(t, 3)]
            if t.exited:
                return [(t, Outcome("raise", "ThreadExitedError"))]
            if t.parked:
                return [(t, Outcome("raise", "RuntimeError"))]
            return []
        return [(t, Outcome("ok", None, t.started))]
    raise ValueError(f"unknown call {name!r}")


class ModelError(AssertionError):
    """The model itself says a call can block for ever (a test design error)."""


Final = Tuple[KT, Tuple[Outcome, ...]]


def explore(configs: Iterable[KT], calls: Tuple[str, ...]) -> Set[Final]:
    """Every quiescent end of running `calls` concurrently from `configs`.

    All interleavings of the calls' steps and the thread's steps; an end is a
    state where every call returned and the thread cannot move by itself.
    Returns {(KT, (outcome of call 0, outcome of call 1, ...))}.
    """
    start: Set[Tuple[KT, Tuple[Phase, ...]]] = {(t, tuple(0 for _ in calls)) for t in configs}
    seen = set(start)
    todo = list(start)
    finals: Set[Final] = set()
    while todo:
        t, phases = todo.pop()
        succ: List[Tuple[KT, Tuple[Phase, ...]]] = [(n, phases) for n in thread_steps(t)]
        for i, ph in enumerate(phases):
            if isinstance(ph, Outcome):
                continue
            for n, nph in call_step(t, calls[i], ph):
                succ.append((n, phases[:i] + (nph,) + phases[i + 1:]))
        if not succ:
            if all(isinstance(ph, Outcome) for ph in phases):
                finals.add((t, phases))     # type: ignore[arg-type]
            else:
                raise ModelError(f"calls {calls} can block for ever in {t} at {phases}")
        for s in succ:
            if s not in seen:
                seen.add(s)
                todo.append(s)
    return finals


# -- what the test can observe --------------------------------------------------

class Obs(NamedTuple):
    """One quiescent observation of a KThread running the test's loop."""
    where: str          # the loop's own marker: init / idle / parkme / cmd / gone
    sleeping: bool      # SLEEPING (first sleep or schedule()); semantics.md "The word"
    parked: bool        # is_parked
    started: bool       # started
    alive: bool         # is_alive()
    should_park: bool   # should_park
    should_stop: bool   # should_stop
    done: int           # commands completed
    last: object        # result of the last command


def where(t: KT) -> str:
    """The marker the test's loop keeps for `t.pc`."""
    if t.pc in (FIRST, PRE, PARK_PRE, ENTER):
        return "init"
    if t.pc == EXITED:
        return "gone" if t.started else "init"
    return {LOOP: "idle", PARK_LOOP: "parkme", CMD: "cmd", SCHED: "cmd", PARK_CMD: "cmd"}[t.pc]


def observe(t: KT) -> Obs:
    """What the test sees of a quiescent `t`."""
    return Obs(where(t), t.sleeping, t.parked, t.started, not t.exited,
               t.should_park, t.should_stop, t.done, t.last)


def quiescent(t: KT) -> bool:
    return not thread_steps(t)


# -- kpark.PerCPUThreads ------------------------------------------------------

class PoolModel:
    """PerCPUThreads.offline/online (docs/smpboot.md): the set of CPUs online.

    offline()/online() run under the pool's lock, so two concurrent calls are
    linearizable: the result is one of the two orders.  `online_sets` is the
    set of online-CPU sets the observations so far allow.
    """

    def __init__(self, cpus: Iterable[int]) -> None:
        self.cpus = frozenset(cpus)
        self.online_sets: Set[FrozenSet[int]] = {self.cpus}

    @staticmethod
    def apply(online: FrozenSet[int], op: str, cpus: FrozenSet[int]) -> FrozenSet[int]:
        if op == "offline":
            return online - cpus
        if op == "online":
            return online | cpus
        if op == "wake":
            return online
        raise ValueError(op)

    def run(self, ops: List[Tuple[str, FrozenSet[int]]]) -> Dict[FrozenSet[int], List[Set[FrozenSet[int]]]]:
        """All orders of `ops` (one or two): {final online set: per op, the
        online sets it may have seen at its linearization point}."""
        orders = [list(range(len(ops)))]
        if len(ops) == 2:
            orders.append([1, 0])
        out: Dict[FrozenSet[int], List[Set[FrozenSet[int]]]] = {}
        for online in self.online_sets:
            for order in orders:
                cur = online
                seen: List[Optional[FrozenSet[int]]] = [None] * len(ops)
                for i in order:
                    seen[i] = cur
                    cur = self.apply(cur, ops[i][0], ops[i][1])
                slot = out.setdefault(cur, [set() for _ in ops])
                for i, s in enumerate(seen):
                    assert s is not None
                    slot[i].add(s)
        return out

    @staticmethod
    def wake_allowed(cpu: int, seen: Set[FrozenSet[int]]) -> Set[bool]:
        """pool.wake(cpu): False while the CPU's thread is parked (offline: a
        parked thread is deaf); either answer while it runs."""
        if any(cpu in s for s in seen):
            return {True, False}
        return {False}
