"""Differential stress test: real KThreads against tests/reference_model.py.

A hypothesis RuleBasedStateMachine drives three KThreads
(two plain ones and one per-CPU one from create_on_cpu) and a PerCPUThreads
pool from TWO long-lived controller threads, and after every step compares
what it saw with the reference model of docs/semantics.md.

Each KThread runs a kernel-style loop (`kloop`) that records its progress
where the test can read it (`Worker`: a marker of where it is, commands done,
the last command's result, a heartbeat bumped on every pass, and for the
per-CPU thread any affinity other than its CPU seen in user code):

    while True:
        if should_stop(): return done
        if should_park(): parkme(); continue
        take a command (poll a Condition every 2 ms) and run it

A command is the thread's own side of the API, run in the thread:
schedule(), schedule(timeout), parkme(), park() on itself, should_park() /
should_stop(), return, raise (see COMMANDS).

Steps (rules):
  call     one controller call (wake/park/unpark/stop/start) on one thread;
  race     two calls on the same thread, one from each controller, released
           together by a barrier;
  command  hand an idle thread a command, then 0-2 concurrent controller
           calls (so e.g. a wake races the thread's way into schedule());
  respawn  replace an exited thread by a fresh, a started or a per-CPU one;
  disturb  widen a parked per-CPU thread's affinity (it must pin itself
           back to its CPU before running user code again);
  pool_*   offline/online/post-work-and-wake on the pool, alone or racing.

Checking: the model (reference_model.explore) gives, for the state set the
previous observations left, every outcome of the step's calls under every
interleaving with the thread's own steps; the calls' actual outcomes (return
value or exception, and the property read right after: is_parked after
park/unpark, is_alive() after stop, started after start) must be one of
them.  Then the step waits until the thread is quiescent (a state the model
lists, read twice alike: marker, SLEEPING, is_parked, started, is_alive(),
should_park, should_stop, commands done, last result) and keeps only the
model states that look like that.  Plus invariants: a parked thread's
heartbeat does not move while only wakes/parks/starts reach it; a per-CPU
thread never runs user code off its CPU; pool threads of offline CPUs are
parked and do no work, online ones do all posted work, and thread_fn only
ever runs on its CPU; the pool records no callback error.

Synchronising on "asleep in schedule()" needs the SLEEPING bit of the word
(docs/semantics.md, "The word", bit 3): there is no other way to tell a
thread that announced its sleep from one on its way there, and a wake()
gives True only for the former.  Everything else is public API.

CI runs a bounded version, test_model: KPARK_MODEL_EXAMPLES runs of up to
KPARK_MODEL_STEPS steps (default 150 x 50, 5-10 s here).  KPARK_SOAK_SECONDS=N
runs test_model_soak: the machine again and again, new seeds each time, for
N seconds.  KPARK_MODEL_DEADLINE (default 10 s) bounds every wait for what
must happen.  A failure message lists the run's last steps and outcomes; if
the failure replays, hypothesis shrinks it and prints the steps and a
@reproduce_failure blob, and if it does not (a race that went the other way
on replay) it reports a FlakyFailure that carries the original message.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
import time
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Set, Tuple

import pytest
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import kpark
from kpark import PerCPUThreads, ThreadExitedError

import reference_model as m
from reference_model import KT, Obs, Outcome

#: Anything that must happen (a park, a stop, a thread settling) happens
#: within this many seconds: generous, the machine is small and shared.
DEADLINE = float(os.environ.get("KPARK_MODEL_DEADLINE", "10"))
#: The idle loop's command poll (it re-checks should_stop/should_park).
POLL = 0.002
#: schedule(timeout) of the SCHEDULE_T command.
SHORT = 0.02
#: docs/semantics.md "The word": SLEEPING, asleep in schedule() or the first sleep.
SLEEPING_BIT = 1 << 3

EXAMPLES = int(os.environ.get("KPARK_MODEL_EXAMPLES", "150"))
STEPS = int(os.environ.get("KPARK_MODEL_STEPS", "50"))
SOAK = float(os.environ.get("KPARK_SOAK_SECONDS", "0") or 0)

CPUS = sorted(os.sched_getaffinity(0))


class WorkerError(Exception):
    """What the RAISE command makes threadfn raise."""


# -- the thread side ----------------------------------------------------------------

class Worker:
    """What one KThread's loop records; written by the thread, read by the test."""

    def __init__(self, index: int, cpu: Optional[int]) -> None:
        self.index = index
        self.cpu = cpu                  # per-CPU: the CPU it must run on
        self.cv = threading.Condition()
        self.pending: Optional[Tuple[str, ...]] = None
        self.taken = 0
        self.where = "init"
        self.done = 0
        self.last: object = m.NOTHING
        self.hb = 0
        self.bad: List[Tuple[str, Any]] = []
        self.exc: Optional[WorkerError] = None
        self.k: Any = None

    def check_cpu(self, when: str) -> None:
        if self.cpu is not None:
            aff = os.sched_getaffinity(0)
            if aff != {self.cpu}:
                self.bad.append((when, sorted(aff)))

    def take(self) -> Optional[Tuple[str, ...]]:
        """The next command, or None after one poll interval."""
        with self.cv:
            if self.pending is None:
                self.where = "idle"
                self.cv.wait(POLL)
            cmd, self.pending = self.pending, None
            if cmd is not None:
                self.taken += 1
                self.where = "cmd"
                self.cv.notify_all()
            return cmd


def kloop(w: Worker) -> int:
    """threadfn: the kernel-style loop (module docstring); returns `done`."""
    w.check_cpu("threadfn entry")
    while True:
        w.hb += 1
        if kpark.should_stop():
            w.where = "gone"
            return w.done
        if kpark.should_park():
            w.where = "parkme"
            kpark.parkme()
            w.check_cpu("after the loop's parkme()")
            w.where = "loop"
            continue
        cmd = w.take()
        if cmd is None:
            continue
        w.check_cpu("command")
        result: object = None
        for step in cmd:
            if step == m.SCHEDULE:
                result = kpark.schedule()
            elif step == m.SCHEDULE_T:
                result = kpark.schedule(SHORT)
            elif step == m.PARKME:
                kpark.parkme()
                result = None
                w.check_cpu("after a command's parkme()")
            elif step == m.SELF_PARK:
                me = kpark.current()
                assert me is not None
                me.park()           # from the thread itself: only sets should_park
                result = None
            elif step == m.QUERY:
                result = (kpark.should_park(), kpark.should_stop())
            elif step == m.RETURN:
                w.where = "gone"
                return w.done
            elif step == m.RAISE:
                w.where = "gone"
                w.exc = WorkerError(f"worker {w.index}")
                raise w.exc
        w.last = result
        w.done += 1
        w.where = "loop"


def observe(w: Worker) -> Obs:
    """One read of everything the model predicts (not atomic: read it twice)."""
    k = w.k
    sleeping = bool(k._core.state_word & SLEEPING_BIT)
    return Obs(w.where, sleeping, k.is_parked, k.started, k.is_alive(),
               k.should_park, k.should_stop, w.done, w.last)


# -- the two controllers ---------------------------------------------------------

class Job:
    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.value: Any = None
        self.exc: Optional[BaseException] = None

    def __call__(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.exc = e
        finally:
            self.done.set()

    def result(self, what: str) -> Any:
        if not self.done.wait(DEADLINE + 5):
            raise AssertionError(f"{what} did not return within {DEADLINE + 5} s")
        if self.exc is not None:
            raise self.exc
        return self.value


class Controller:
    """A long-lived thread that runs the calls it is handed, one at a time."""

    def __init__(self, n: int) -> None:
        self.q: "queue.SimpleQueue[Optional[Job]]" = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=f"model-ctl{n}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            job = self.q.get()
            if job is None:
                return
            job()

    def submit(self, fn: Callable[[], Any]) -> Job:
        job = Job(fn)
        self.q.put(job)
        return job

    def close(self) -> None:
        self.q.put(None)


def call_op(w: Worker, op: str) -> Outcome:
    """Run one controller call on w's thread; its Outcome (see reference_model)."""
    k = w.k
    try:
        if op == "wake":
            return Outcome("ok", k.wake())
        if op == "park":
            k.park(DEADLINE)
            return Outcome("ok", None, k.is_parked)
        if op == "unpark":
            k.unpark()
            return Outcome("ok", None, k.is_parked)
        if op == "stop":
            try:
                value = k.stop(DEADLINE)
            except WorkerError as e:
                same = "WorkerError" if e is w.exc else "WorkerError (another object)"
                return Outcome("raise", same, k.is_alive())
            return Outcome("ok", value, k.is_alive())
        if op == "start":
            k.start()
            return Outcome("ok", None, k.started)
    except ThreadExitedError:        # before RuntimeError: it is one
        return Outcome("raise", "ThreadExitedError")
    except RuntimeError:
        return Outcome("raise", "RuntimeError")
    except TimeoutError:
        return Outcome("raise", "TimeoutError")
    raise ValueError(op)


def run_concurrently(ctls: List[Controller], jobs: List[Tuple[int, Callable[[], Any]]],
                     what: str) -> List[Any]:
    """Run each fn on its controller; with two, release them together."""
    if len(jobs) > 1:
        barrier = threading.Barrier(len(jobs))

        def gated(fn: Callable[[], Any]) -> Callable[[], Any]:
            def run() -> Any:
                barrier.wait(DEADLINE)
                return fn()
            return run
        handles = [ctls[c].submit(gated(fn)) for c, fn in jobs]
    else:
        handles = [ctls[c].submit(fn) for c, fn in jobs]
    return [h.result(what) for h in handles]


# -- the pool -----------------------------------------------------------------------

class Pool:
    """A PerCPUThreads over all allowed CPUs with work counters per CPU."""

    def __init__(self) -> None:
        self.posted = dict.fromkeys(CPUS, 0)
        self.processed = dict.fromkeys(CPUS, 0)
        self.bad: List[Tuple[int, Any]] = []
        self.frozen: Dict[int, int] = {}      # offline CPU -> processed when it went down
        self.pool = PerCPUThreads(self.thread_fn, self.should_run, cpus=CPUS,
                                  thread_comm="kpmodel/%u")

    def should_run(self, cpu: int) -> bool:
        return self.processed[cpu] < self.posted[cpu]

    def thread_fn(self, cpu: int) -> None:
        aff = os.sched_getaffinity(0)
        if aff != {cpu}:
            self.bad.append((cpu, sorted(aff)))
        self.processed[cpu] += 1


def wait_until(cond: Callable[[], bool]) -> bool:
    """Poll a state that must eventually hold; False if it did not within DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while not cond():
        if time.monotonic() > deadline:
            return cond()
        time.sleep(0.0005)
    return True


# -- the state machine ------------------------------------------------------------

OPS = st.sampled_from(["wake"] * 3 + ["park"] * 3 + ["unpark"] * 3 + ["stop", "start"])
COMMANDS = st.sampled_from(
    [(m.SCHEDULE,)] * 2 + [(m.SCHEDULE_T,)] * 2 + [(m.PARKME,), (m.SELF_PARK,)]
    + [(m.SELF_PARK, m.PARKME)] * 2 + [(m.PARKME, m.SCHEDULE)]
    # parkme() then schedule(): stop() releases the park loop without a
    # token, and schedule() must still return ("A stopping thread never sleeps")
    + [(m.SELF_PARK, m.PARKME, m.SCHEDULE)] * 3
    + [(m.QUERY,), (m.RETURN,), (m.RAISE,)])
#: How respawn() replaces an exited thread: fresh, fresh + start(), per-CPU on a CPU.
RESPAWN = st.sampled_from(["fresh", "start"] + CPUS)
NWORKERS = 3
WORKER = st.integers(0, NWORKERS - 1)
CTL = st.integers(0, 1)
CPU_SETS = st.sets(st.sampled_from(CPUS), min_size=1).map(frozenset)
POOL_OPS = st.sampled_from(["offline", "online", "wake"])


def _describe(configs: Set[KT]) -> str:
    return "; ".join(sorted(f"{t.state}/{t.pc} token={t.token} done={t.done}" for t in configs))


class KParkMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ctl = [Controller(0), Controller(1)]
        self.trace: List[str] = []      # this run's steps, for failure messages
        self.workers: List[Worker] = []
        self.models: List[Set[KT]] = []
        self.parked_hb: List[Optional[int]] = []
        for i in range(NWORKERS):
            self.workers.append(Worker(i, None))
            self.models.append(set())
            self.parked_hb.append(None)
            self._spawn(i, CPUS[-1] if i == NWORKERS - 1 else None)
        self._step(1, None, [(0, "start")])
        self.pool = Pool()
        self.pool_model = m.PoolModel(CPUS)

    # -- helpers ------------------------------------------------------------------

    def _spawn(self, i: int, cpu: Optional[int]) -> None:
        w = Worker(i, cpu)
        self.trace.append(f"spawn worker {i} " + ("fresh" if cpu is None else f"on CPU {cpu}"))
        if cpu is None:
            w.k = kpark.KThread(kloop, w, name=f"kpmodel{i}")
            self.models[i] = {m.fresh()}
        else:
            # create_on_cpu() parks the new thread with no timeout: a
            # controller runs it, so a park that never returns is reported.
            w.k, = self._calls([(0, lambda: kpark.create_on_cpu(kloop, w, cpu, namefmt=f"kpmodel{i}/%u"))],
                f"create_on_cpu(..., {cpu})")
            self.models[i] = {m.parked_on_cpu()}
        self.workers[i] = w
        self.parked_hb[i] = None
        self._settle(i, self.models[i], (), None)

    def _fail(self, i: int, what: str) -> None:
        w = self.workers[i]
        self._raise(f"worker {i} ({'per-CPU' if w.cpu is not None else 'plain'}) {what}\n"
                    f"  model before: {_describe(self.models[i])}\n"
                    f"  word now: {w.k._core.state_word:#x}, observed now: {observe(w)}")

    def _calls(self, jobs: List[Tuple[int, Callable[[], Any]]], what: str) -> List[Any]:
        try:
            return run_concurrently(self.ctl, jobs, what)
        except AssertionError as e:     # a call that did not return
            self._raise(str(e))
            raise

    def _raise(self, what: str) -> None:
        # hypothesis prints the shrunk steps only if the failure replays; a
        # race may not, so the message carries this run's own steps too.
        steps = self.trace[-40:]
        raise AssertionError(what + f"\n  this run's last {len(steps)} steps:\n    "
                             + "\n    ".join(steps))

    def _settle(self, i: int, finals: Set[KT], ops: Tuple[str, ...],
                cmd: Optional[Tuple[str, ...]]) -> None:
        """Wait until worker i is quiescent as one of `finals`; keep those that match."""
        w = self.workers[i]
        expected = {m.observe(t) for t in finals}
        deadline = time.monotonic() + DEADLINE
        prev = None
        while True:
            o = observe(w)
            if o in expected and o == prev:
                break
            if time.monotonic() > deadline:
                self._fail(i, f"did not settle into a state the model allows within {DEADLINE} s "
                              f"after {cmd or ''} {ops}:\n  observed {o}\n  allowed "
                              + "\n           ".join(map(str, sorted(expected, key=str))))
            prev = o
            time.sleep(0.0002)
        self.models[i] = {t for t in finals if m.observe(t) == o}
        note(f"  worker {i} -> {o}; model: {_describe(self.models[i])}")
        if w.bad:
            self._fail(i, f"ran user code off its CPU {w.cpu}: {w.bad}")
        # A parked thread runs no user code: its loop's heartbeat is frozen as
        # long as nothing but wakes (deaf), parks (no-ops) and starts reach it.
        if (o.parked and self.parked_hb[i] is not None and cmd is None
                and set(ops) <= {"wake", "park", "start"} and w.hb != self.parked_hb[i]):
            self._fail(i, f"made progress while parked: heartbeat {self.parked_hb[i]} -> {w.hb} "
                          f"after {ops}")
        self.parked_hb[i] = w.hb if o.parked else None

    def _dispatch(self, i: int, cmd: Tuple[str, ...]) -> None:
        w = self.workers[i]
        with w.cv:
            n = w.taken
            w.pending = cmd
            w.cv.notify_all()
            self.trace.append(f"worker {i}: command {cmd}")
            if not w.cv.wait_for(lambda: w.taken > n, DEADLINE):
                self._fail(i, f"did not take command {cmd} while idle")

    def _step(self, i: int, cmd: Optional[Tuple[str, ...]], calls: List[Tuple[int, str]]) -> None:
        w = self.workers[i]
        configs = self.models[i]
        if cmd is not None:
            configs = {m.dispatch(t, cmd) for t in configs}
            self._dispatch(i, cmd)
        ops = tuple(op for _, op in calls)
        def job(op: str) -> Callable[[], Outcome]:
            return lambda: call_op(w, op)
        outcomes = tuple(self._calls([(c, job(op)) for c, op in calls], f"worker {i}: {ops}"))
        self.trace.append(f"worker {i}: cmd={cmd} calls={calls} -> {outcomes}")
        note(self.trace[-1])
        finals = m.explore(configs, ops)
        allowed = {o for _, o in finals}
        if outcomes not in allowed:
            self._fail(i, f"after {cmd or ''} {calls}: outcomes {outcomes} not allowed; "
                          f"the model allows " + "\n    ".join(map(str, sorted(allowed, key=str))))
        self._settle(i, {t for t, o in finals if o == outcomes}, ops, cmd)

    # Rules draw only fixed choices and look at the state afterwards: which
    # threads are idle, parked or exited depends on the interleaving, and
    # hypothesis needs the same choices to draw the same way every time.

    def _is_idle(self, i: int) -> bool:
        return all(t.idle for t in self.models[i])

    # -- rules: KThreads ------------------------------------------------------------

    @rule(i=WORKER, op=OPS, c=CTL)
    def call(self, i: int, op: str, c: int) -> None:
        self._step(i, None, [(c, op)])

    @rule(i=WORKER, a=OPS, b=OPS)
    def race(self, i: int, a: str, b: str) -> None:
        self._step(i, None, [(0, a), (1, b)])

    @rule(i=WORKER, cmd=COMMANDS, ops=st.lists(OPS, max_size=2))
    def command(self, i: int, cmd: Tuple[str, ...], ops: List[str]) -> None:
        """The thread runs `cmd` while the controllers call `ops`: worker i,
        or if it is not idle, the next idle one (else only the calls)."""
        for j in range(NWORKERS):
            if self._is_idle((i + j) % NWORKERS):
                self._step((i + j) % NWORKERS, cmd, list(enumerate(ops)))
                return
        self._step(i, None, list(enumerate(ops)))

    @rule(i=WORKER, how=RESPAWN)
    def respawn(self, i: int, how: Any) -> None:
        """Replace worker i, if it exited (else the next exited one)."""
        for j in range(NWORKERS):
            k = (i + j) % NWORKERS
            if all(t.exited for t in self.models[k]):
                self._spawn(k, how if isinstance(how, int) else None)
                if how == "start":
                    self._step(k, None, [(i % 2, "start")])
                return

    @rule(i=WORKER)
    def disturb(self, i: int) -> None:
        """Widen a parked per-CPU thread's affinity: unpark must undo it."""
        w = self.workers[i]
        if w.cpu is not None and all(t.parked for t in self.models[i]):
            self.trace.append(f"disturb worker {i}")
            os.sched_setaffinity(w.k.native_id, set(CPUS))

    # -- rules: the pool ----------------------------------------------------------

    def _pool_step(self, ops: List[Tuple[int, str, FrozenSet[int]]]) -> None:
        pool = self.pool
        p = pool.pool

        def job(op: str, cpus: FrozenSet[int]) -> Callable[[], Any]:
            cpu = min(cpus)
            if op == "wake":
                pool.posted[cpu] += 1
                return lambda: p.wake(cpu)
            return lambda: getattr(p, op)(sorted(cpus))
        jobs = [(c, job(op, cpus)) for c, op, cpus in ops]
        results = self._calls(jobs, f"pool {ops}")
        self.trace.append(f"pool: {ops} -> {results}")
        note(self.trace[-1])
        finals = self.pool_model.run([(op, cpus) for _, op, cpus in ops])
        online = p.online_cpus
        if online not in finals:
            self._raise(f"pool: online_cpus {sorted(online)} after {ops}; the model "
                                 f"allows {[sorted(s) for s in finals]}")
        for (c, op, cpus), r, seen in zip(ops, results, finals[online]):
            if op == "wake":
                ok = r in m.PoolModel.wake_allowed(min(cpus), seen)
            else:
                ok = r is None
            if not ok:
                self._raise(f"pool: {op}({sorted(cpus)}) gave {r!r} in {ops}, "
                                     f"online before it: {[sorted(s) for s in seen]}")
        self.pool_model.online_sets = {online}
        self._pool_settle(ops)

    def _pool_settle(self, ops: List[Tuple[int, str, FrozenSet[int]]]) -> None:
        pool = self.pool
        online = pool.pool.online_cpus
        for cpu in CPUS:
            k = pool.pool.thread(cpu)
            if k.is_parked != (cpu not in online):
                self._raise(f"pool: CPU {cpu} {'on' if cpu in online else 'off'}line "
                                     f"but is_parked={k.is_parked}")
            if cpu in online:
                pool.frozen.pop(cpu, None)
                if not wait_until(lambda: pool.processed[cpu] == pool.posted[cpu]):
                    self._raise(f"pool: online CPU {cpu} did {pool.processed[cpu]} of "
                                f"{pool.posted[cpu]} posted work items within {DEADLINE} s "
                                f"(lost wake-up?)")
            elif any(op == "online" and cpu in cpus for _, op, cpus in ops):
                pool.frozen[cpu] = pool.processed[cpu]   # it may have run in between
            else:
                was = pool.frozen.setdefault(cpu, pool.processed[cpu])
                if pool.processed[cpu] != was:
                    self._raise(f"pool: offline CPU {cpu} did work: "
                                         f"{was} -> {pool.processed[cpu]}")
        if pool.bad:
            self._raise(f"pool: thread_fn ran off its CPU: {pool.bad}")
        if pool.pool.errors:
            self._raise(f"pool: callback errors {pool.pool.errors}")

    @rule(c=CTL, op=POOL_OPS, cpus=CPU_SETS)
    def pool_call(self, c: int, op: str, cpus: FrozenSet[int]) -> None:
        self._pool_step([(c, op, cpus)])

    @rule(a=POOL_OPS, ca=CPU_SETS, b=POOL_OPS, cb=CPU_SETS)
    def pool_race(self, a: str, ca: FrozenSet[int], b: str, cb: FrozenSet[int]) -> None:
        self._pool_step([(0, a, ca), (1, b, cb)])

    @rule(cpu=st.sampled_from(CPUS))
    def pool_disturb(self, cpu: int) -> None:
        """Widen an offline CPU's (parked) pool thread's affinity."""
        if cpu not in self.pool.pool.online_cpus:
            self.trace.append(f"disturb pool CPU {cpu}")
            tid = self.pool.pool.thread(cpu).native_id
            assert tid is not None
            os.sched_setaffinity(tid, set(CPUS))

    @invariant()
    def controllers_alive(self) -> None:
        assert all(c.thread.is_alive() for c in self.ctl)

    def teardown(self) -> None:
        """Stop every thread, bounded in time even if the core is broken: ask
        all to stop at once (stop(0)), then wait for them together."""
        own = [w.k for w in self.workers]
        pooled = [self.pool.pool.thread(c) for c in CPUS]
        ks = own + pooled
        for k in ks:
            try:
                # The pool's threads refuse stop() from anyone but their pool;
                # its own stop path, bounded here, stands in for close().
                (k.stop if k in own else k._owner_stop)(0)
            except BaseException:  # noqa: BLE001 - TimeoutError, or threadfn's exception
                pass
            # A no-op after stop(); it frees a parked thread if a broken
            # stop() did not (so a failing run still ends quickly).
            k.unpark()
        deadline = time.monotonic() + DEADLINE
        for k in ks:
            k.join(max(0.0, deadline - time.monotonic()))
        if not any(k.is_alive() for k in ks):
            try:
                self.pool.pool.close()      # its threads exited: returns at once
            except BaseException:  # noqa: BLE001 - reported by the steps already
                pass
        for c in self.ctl:
            c.close()


SETTINGS = settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                    derandomize=False, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _run(s: settings) -> None:
    old = sys.getswitchinterval()
    # Switch the GIL more often than every 5 ms: more interleavings of the
    # controllers' and the threads' Python code.
    sys.setswitchinterval(0.0005)
    try:
        run_state_machine_as_test(KParkMachine, settings=s)
    finally:
        sys.setswitchinterval(old)


# A failing run may take hypothesis's whole shrinking budget (300 s) when
# each failing example waits out DEADLINE for a call that hangs.
@pytest.mark.timeout(600)
def test_model() -> None:
    """The bounded run (CI): every observation agrees with the reference model."""
    _run(SETTINGS)


@pytest.mark.skipif(SOAK <= 0, reason="soak mode: set KPARK_SOAK_SECONDS")
@pytest.mark.timeout(int(SOAK) + 600)
def test_model_soak() -> None:
    """KPARK_SOAK_SECONDS of runs with new seeds (local only)."""
    end = time.monotonic() + SOAK
    runs = 0
    while time.monotonic() < end:
        _run(settings(SETTINGS, max_examples=max(EXAMPLES, 50), database=None))
        runs += 1
    print(f"model soak: {runs} runs of {max(EXAMPLES, 50)} examples x {STEPS} steps "
          f"in {SOAK:.0f} s")


def test_reference_model_itself() -> None:
    """The model's own sanity: a few rows of docs/semantics.md, explicitly."""
    f = {m.fresh()}
    (t, (o,)), = m.explore(f, ("wake",))
    assert o == Outcome("ok", True) and t.started and t.idle and not t.token
    (t, (o,)), = m.explore(f, ("park",))
    assert o.peek is True and t.parked and not t.started and not t.token
    (t, (o,)), = m.explore(f, ("stop",))
    assert o == Outcome("ok", None, False) and t.exited and not t.started
    idle = {t for t, _ in m.explore(f, ("start",))}
    (t, (o,)), = m.explore(idle, ("wake",))
    assert o.value is False and t.token                 # running | wake(): token
    (p, (o,)), = m.explore(idle, ("park",))
    assert p.parked and p.token                         # park() of a running thread: token
    (t, (o,)), = m.explore({p}, ("wake",))
    assert o.value is False and t == p                  # parked | wake(): deaf
    # park() raced by unpark(): returns, parked or not, never hangs.
    ends = m.explore(idle, ("park", "unpark"))
    assert {t.parked for t, _ in ends} == {True, False}
    # A wake racing the thread's way into schedule(): True or False, never lost.
    s = {m.dispatch(t, (m.SCHEDULE,)) for t in idle}
    ends = m.explore(s, ("wake",))
    assert {o[0].value for _, o in ends} == {True, False}
    assert all(t.last is True and t.idle and not t.token for t, _ in ends)
