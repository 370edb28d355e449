"""Subprocess payload for tests/test_lifetime.py: executors and pools inherited by fork.

    python fork_pool_child.py MODE

Before forking, this process holds a PerCPUExecutor (one worker per CPU,
every worker blocked inside a task, unpinned and pinned tasks queued behind
them, follow_affinity on) and a PerCPUThreads pool whose threads are inside
thread_fn.  Then:

MODE  exit:  os.fork(); the child touches nothing inherited and ends with
             sys.exit(0), a normal interpreter exit (threading's shutdown,
             kpark's at-exit drain, atexit handlers).
      calls: os.fork(); the child calls every operation of the inherited
             executor and pool, records what each did and how long it took,
             checks a new executor and pool work, and ends as in "exit".
      mp:    a multiprocessing 'fork' Process whose target calls submit()
             on the inherited executor and returns (multiprocessing runs
             threading's shutdown in the child, then leaves).

The child's report goes through a pipe from an atexit handler, so it comes
only if the exit got that far.  The parent waits for the child with a
deadline (killing it if it hangs), then releases its blocked tasks, checks
that its executor and pool still work and prints "RESULT <json>".
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading
import time
import warnings

from concurrent.futures.thread import BrokenThreadPool

import kpark
from kpark import PerCPUExecutor, PerCPUThreads

MODE = sys.argv[1]
DEADLINE = 20.0
CPUS = sorted(os.sched_getaffinity(0))

warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads


def outcome(fn, *args, **kwargs) -> dict:
    """What calling fn did: its result or exception, and how long it took."""
    t0 = time.monotonic()
    try:
        value = fn(*args, **kwargs)
        out = {"ok": repr(value)[:80]}
    except BaseException as exc:  # noqa: BLE001  (the report says what it was)
        out = {"exc": type(exc).__name__, "msg": str(exc)[:200]}
    out["seconds"] = round(time.monotonic() - t0, 3)
    return out


# ---- the parent's executor and pool ------------------------------------------

gate = threading.Event()
running = threading.Semaphore(0)


def blocked(tag: str) -> str:
    running.release()
    assert gate.wait(60)
    return tag


ex = PerCPUExecutor()
ex.follow_affinity(0.05)
busy = [ex.submit(blocked, f"busy{i}") for i in range(len(ex._threads))]
for _ in busy:
    assert running.acquire(timeout=DEADLINE), "every worker inside its task"
queued = [ex.submit(pow, 2, i) for i in range(4)]
pinned = [ex.submit_on(cpu, pow, 3, cpu) for cpu in ex.cpus]

pool_gate = threading.Event()
in_fn = threading.Semaphore(0)
pool_done = {cpu: 0 for cpu in CPUS}
pool_lock = threading.Lock()


def pool_should_run(cpu: int) -> bool:
    with pool_lock:
        return pool_done[cpu] == 0


def pool_fn(cpu: int) -> None:
    in_fn.release()
    assert pool_gate.wait(60)
    with pool_lock:
        pool_done[cpu] += 1


pool = PerCPUThreads(pool_fn, pool_should_run)
for _ in CPUS:
    assert in_fn.acquire(timeout=DEADLINE), "every pool thread inside thread_fn"


# ---- the child ------------------------------------------------------------------

def child_calls() -> dict:
    """Every operation on the inherited executor and pool, and new ones."""
    cpu = CPUS[0]
    r: dict = {}
    r["ex_online_cpus"] = sorted(ex.online_cpus)
    r["submit"] = outcome(ex.submit, pow, 2, 2)
    r["submit_on"] = outcome(ex.submit_on, cpu, pow, 2, 2)
    r["map"] = outcome(ex.map, abs, [1, 2])
    r["ex_offline"] = outcome(ex.offline, cpu)
    r["ex_online"] = outcome(ex.online, cpu)
    r["ex_follow"] = outcome(ex.follow_affinity, 0.05)
    r["ex_follow_none"] = outcome(ex.follow_affinity, None)
    r["pool_online_cpus"] = sorted(pool.online_cpus)
    r["pool_wake"] = outcome(pool.wake, cpu)
    r["pool_offline"] = outcome(pool.offline, cpu)
    r["pool_online"] = outcome(pool.online, cpu)
    r["pool_follow"] = outcome(pool.follow_affinity, 0.05)
    r["pool_close"] = outcome(pool.close)
    r["pool_closed"] = pool.closed
    r["shutdown"] = outcome(ex.shutdown, wait=True)
    r["shutdown_again"] = outcome(ex.shutdown, wait=True)
    r["queued"] = [type(f.exception(0)).__name__ for f in queued + pinned]
    r["busy_done"] = [f.done() for f in busy]   # were running at fork: never finish here
    with PerCPUExecutor() as new:
        r["new_executor"] = new.submit(pow, 2, 5).result(DEADLINE)
    seen: list = []
    with PerCPUThreads(lambda c: seen.append(c), lambda c: not seen, cpus=cpu) as p:
        t0 = time.monotonic()
        while not seen and time.monotonic() - t0 < DEADLINE:
            time.sleep(0.001)
        p.wake(cpu)
    r["new_pool"] = seen[:1]
    return r


def in_child(wfd: int) -> None:
    """The fork child's life: report from atexit, then a normal exit."""
    signal.alarm(int(DEADLINE))  # a hung child dies of SIGALRM
    report: dict = {}

    def send() -> None:  # registered first: runs last of the atexit handlers
        report["atexit"] = True
        os.write(wfd, json.dumps(report).encode())
        os.close(wfd)

    atexit.register(send)
    if MODE == "calls":
        try:
            report.update(child_calls())
        except BaseException as exc:  # noqa: BLE001
            report["_error"] = repr(exc)
    report["threads_at_end"] = threading.active_count()
    sys.exit(0)


def wait_child(pid: int) -> int:
    """The child's exit status; it is killed (and reported hung) past DEADLINE."""
    end = time.monotonic() + DEADLINE + 5
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -999  # hung


def mp_target(conn) -> None:  # type: ignore[no-untyped-def]
    conn.send(outcome(ex.submit, pow, 2, 2))
    conn.close()


result: dict = {"mode": MODE}
t_fork = time.monotonic()
if MODE in ("exit", "calls"):
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        in_child(wfd)
    os.close(wfd)
    result["exitcode"] = wait_child(pid)
    data = b""
    while True:
        chunk = os.read(rfd, 65536)
        if not chunk:
            break
        data += chunk
    os.close(rfd)
    result["child"] = json.loads(data) if data else None
else:
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    r_conn, w_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=mp_target, args=(w_conn,))
    proc.start()
    w_conn.close()
    proc.join(DEADLINE)
    if proc.is_alive():
        proc.kill()
        proc.join()
        result["exitcode"] = -999
    else:
        result["exitcode"] = proc.exitcode
    result["child"] = r_conn.recv() if r_conn.poll(1) else None
result["child_seconds"] = round(time.monotonic() - t_fork, 3)

# ---- the parent goes on --------------------------------------------------------

gate.set()
pool_gate.set()
result["parent_busy"] = [f.result(DEADLINE) for f in busy]
result["parent_queued"] = [f.result(DEADLINE) for f in queued + pinned]
result["parent_submit"] = ex.submit(pow, 2, 10).result(DEADLINE)
ex.shutdown(wait=True)
t0 = time.monotonic()
while sum(pool_done.values()) < len(CPUS) and time.monotonic() - t0 < DEADLINE:
    time.sleep(0.001)
pool.close()
result["parent_pool_done"] = sum(pool_done.values())
print("RESULT " + json.dumps(result), flush=True)
