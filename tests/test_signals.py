"""Signals and what user code inherits from a KThread.

14  (docs/semantics.md, "Signals") Ctrl-C interrupts every blocking call of
    the main thread within 100 ms, also while every worker runs Python
    code and does not block signals: test_sigint_reaches_main_*.
    The rest of rule 14 is in tests/test_process.py (test_sigint_*).
-   A KThread has the signal mask of the thread that created it, as a
    threading.Thread does; so child processes (subprocess, os.system,
    `timeout`, a forked multiprocessing.Pool) and threads started from a
    KThread or an executor task get the mask a threading.Thread's would,
    and terminate() stops them: test_children_*, test_kthreads_inherit_*.
-   Signals that hit a KThread's own waits (first sleep, schedule(),
    the park loop, Completion.wait(), idle()) change nothing:
    test_signals_at_kthreads_move_nothing.
-   A KThread constructor interrupted (KeyboardInterrupt from a signal
    handler) while it waits for the new thread to boot leaves no thread
    running outside the life cycle: the thread is stopped before threadfn
    or run(): test_interrupted_constructor_*.

Every payload (tests/scripts/*.py) runs in a fresh interpreter with a
timeout, like tests/test_process.py's.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import List

import pytest

from helpers import main_asleep
from test_process import SCRIPTS, SIGINT_LATENCY, Child, child_env, result_of, run_script

#: `timeout 1 sleep 5` must end well before sleep would (5 s); generous for
#: a loaded machine, and the exit status (124: timed out) is the real check.
TIMEOUT_BOUND = 4.0

ORIGINS = ("kthread", "task", "kthread_in_task")


@pytest.fixture(scope="module")
def masks() -> dict:
    """One run of sigmask_child.py: the probes of every origin."""
    proc = run_script("sigmask_child.py", timeout=150)
    assert proc.returncode == 0, f"payload failed:\n{proc.stdout}\n{proc.stderr}"
    return result_of(proc.stdout)


@pytest.mark.parametrize("origin", ORIGINS)
def test_children_of_kthreads_get_the_threading_mask(masks: dict, origin: str) -> None:
    """From a KThread, an executor task, and a KThread made inside a task:
    the thread's own mask, a subprocess's, an os.system() shell's and a
    threading.Thread's are those of the threading.Thread reference (empty
    here: nothing blocked); `sleep 30` dies of terminate() (SIGTERM);
    `timeout 1 sleep 5` times out (status 124) in about 1 s; a fork-context
    multiprocessing.Pool's terminate() returns."""
    ref, got = masks["thread"], masks[origin]
    # The reference works, so matching it means something.
    assert ref["own"] == masks["main"], ref
    assert ref["popen"]["rc"] == -signal.SIGTERM and ref["timeout"]["rc"] == 124, ref
    assert ref["pool"] == "terminated", ref
    assert got["own"] == ref["own"], f"{origin}: the thread's own SigBlk {got['own']}"
    assert got["popen"]["mask"] == ref["popen"]["mask"], (
        f"{origin}: a subprocess's SigBlk is {got['popen']['mask']}, "
        f"a threading.Thread's child has {ref['popen']['mask']}")
    assert got["popen"]["rc"] == -signal.SIGTERM, (
        f"{origin}: terminate() did not stop the subprocess: {got['popen']['rc']}")
    assert got["system"] == ref["system"], f"{origin}: os.system()'s shell: {got['system']}"
    assert got["thread"] == ref["thread"], f"{origin}: a threading.Thread: {got['thread']}"
    assert got["timeout"]["rc"] == 124, (
        f"{origin}: `timeout 1 sleep 5` exited {got['timeout']['rc']} after "
        f"{got['timeout']['seconds']:.2f} s (124 = timed out)")
    assert got["timeout"]["seconds"] < TIMEOUT_BOUND, got["timeout"]
    assert got["pool"] == "terminated", f"{origin}: multiprocessing.Pool.terminate() hung"


def test_kthreads_inherit_their_creators_mask(masks: dict) -> None:
    """While the main thread blocks SIGUSR1, a threading.Thread, a KThread
    and an executor worker it creates all block exactly SIGUSR1 (the
    creator's mask, nothing added)."""
    got = masks["creator_blocks_sigusr1"]
    usr1 = f"{1 << (signal.SIGUSR1 - 1):016x}"
    assert got["main"] == usr1, got
    assert got == {"main": usr1, "thread": usr1, "kthread": usr1, "task": usr1}


# ---- rule 14 with busy workers ------------------------------------------------

BUSY_REPS = 3


class GroupChild(Child):
    """A Child in its own process group, so killpg() reaches only it."""

    def __init__(self, name: str, *args: str) -> None:
        self.err = tempfile.TemporaryFile()
        self.p = subprocess.Popen([sys.executable, os.path.join(SCRIPTS, name), *args],
                                  env=child_env(), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self.err,
                                  start_new_session=True)
        self.buf = b""
        self.lines: List[str] = []


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["kill", "killpg"])
@pytest.mark.parametrize("call", ["result", "join", "wait", "sleep"])
def test_sigint_reaches_main_while_workers_run_python(call: str, how: str) -> None:
    """Every executor worker (one per CPU) and one more KThread run Python
    loops without blocking signals; the main thread blocks in `call`
    (Future.result(), KThread.join(), Completion.wait(), time.sleep()).  A
    SIGINT sent to the process (os.kill) or to its process group (killpg,
    what a terminal's Ctrl-C does) raises KeyboardInterrupt in the main
    thread within 100 ms, each of BUSY_REPS times.  (Had a worker taken
    the signal, an untimed futex wait of the main thread would not even
    wake: the child would hang.)"""
    child = GroupChild("sigint_busy_child.py", call, str(BUSY_REPS))
    sent: List[float] = []
    try:
        for rep in range(BUSY_REPS):
            child.expect(f"READY {rep}")
            if not main_asleep(child.p.pid):
                child.fail(f"the child's main thread never blocked in {call}()")
            sent.append(time.monotonic())
            if how == "kill":
                os.kill(child.p.pid, signal.SIGINT)
            else:
                os.killpg(child.p.pid, signal.SIGINT)
            child.expect(f"CAUGHT {rep}", timeout=30)
        res = child.finish(timeout=30)
    finally:
        child.close()
    latencies = [c - s for s, c in zip(sent, res["caught"])]
    assert len(latencies) == BUSY_REPS, res
    for inner in res["inner"]:
        # Raised by the wait itself (the signal woke it), not before it.
        expected = ("<lambda>",) if call == "sleep" else (".pyx", ".pxd")
        where = inner.rsplit(":", 1)[1] if call == "sleep" else inner.split(":")[0]
        assert where.endswith(expected), f"KeyboardInterrupt raised at {inner}"
    assert all(0 <= lat < SIGINT_LATENCY for lat in latencies), (
        f"{call}() took {[round(x * 1000, 2) for x in latencies]} ms to raise "
        f"KeyboardInterrupt with {res['workers']} busy KThreads "
        f"(limit {SIGINT_LATENCY * 1000:.0f} ms; backend {res['backend']})")


# ---- an interrupted constructor -----------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("variant", ["run", "threadfn"])
def test_interrupted_constructor_leaves_no_thread_outside_the_life_cycle(variant: str) -> None:
    """A KeyboardInterrupt (from a SIGUSR1 handler) lands in the constructor
    while it waits for the new thread, which is held at the moment it looks
    up run() (boot_interrupt_child.py).  The constructor raises it; the
    thread then boots into its first sleep, finds the stop, and exits
    without calling run()/threadfn: nothing of the user's runs, the thread
    is not alive, no traceback, and the process exits at once."""
    proc = run_script("boot_interrupt_child.py", variant, timeout=30)
    assert proc.returncode == 0, f"payload failed:\n{proc.stdout}\n{proc.stderr}"
    res = result_of(proc.stdout)
    assert res["outcome"] == "KeyboardInterrupt", res
    assert res["ran"] == [], f"user code ran although the constructor raised: {res}"
    assert res["alive"] is False, f"the thread never exited: {res}"
    assert res["should_stop"] is True and res["started"] is False, res
    assert "Traceback" not in proc.stderr, proc.stderr


# ---- signals that hit the KThreads themselves ----------------------------------

@pytest.mark.timeout(60)
def test_signals_at_kthreads_move_nothing() -> None:
    """KThreads can take signals now: 300 rounds of SIGUSR1 at a never-woken
    thread, threads asleep in schedule() and schedule(60), a parked one, one
    in Completion.wait() and an idle executor worker make none of them move
    (no start, no extra round, no timeout, still parked, still waiting);
    afterwards each obeys wake/unpark/complete/a task/stop
    (worker_signal_child.py asserts both)."""
    proc = run_script("worker_signal_child.py", "300", timeout=45)
    assert proc.returncode == 0, f"payload failed:\n{proc.stdout}\n{proc.stderr}"
    res = result_of(proc.stdout)
    assert res["caught"] > 0, res

