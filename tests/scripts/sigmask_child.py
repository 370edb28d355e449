"""Subprocess payload for tests/test_signals.py: what user code inherits.

    python sigmask_child.py

Runs one probe in each of these origins and prints "RESULT <json>", a dict
origin -> what the probe saw:

    thread          a threading.Thread started by the main thread (the
                    reference: what kpark's threads must match)
    kthread         a KThread started by the main thread
    task            a PerCPUExecutor task
    kthread_in_task a KThread created and started inside a task

and, under "creator_blocks_sigusr1", the own SigBlk of a threading.Thread,
a KThread and an executor worker created while the main thread blocks
SIGUSR1 (each must inherit that mask, as a threading.Thread does).

The probe records the calling thread's own blocked signals (SigBlk of its
/proc/self/task/<tid>/status), then from that thread: starts `sleep 30`
with subprocess.Popen, reads the child's SigBlk and terminate()s it
(returncode, or "hung" if it is still alive 5 s later); runs
`timeout 1 sleep 5` (exit status and seconds); runs os.system() on a shell
that prints its own SigBlk; starts a threading.Thread that reads its own
SigBlk; and terminate()s a fork-context multiprocessing.Pool whose worker
sleeps in a task ("hung" if terminate() has not returned 10 s later: then
the pool's workers are killed with SIGKILL so the probe can go on).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import tempfile
import threading
import time
import warnings

import kpark

POPEN_WAIT = 5.0
POOL_WAIT = 10.0


def sigblk(path: str) -> str:
    with open(path) as f:
        for line in f:
            if line.startswith("SigBlk:"):
                return line.split()[1]
    raise AssertionError(f"no SigBlk in {path}")


def own_sigblk() -> str:
    return sigblk(f"/proc/self/task/{threading.get_native_id()}/status")


def popen_probe() -> dict:
    p = subprocess.Popen(["sleep", "30"])
    try:
        # Popen returns once the child has exec'd (its error pipe closed):
        # this is sleep's own mask.
        mask = sigblk(f"/proc/{p.pid}/status")
        p.terminate()
        try:
            rc: object = p.wait(POPEN_WAIT)
        except subprocess.TimeoutExpired:
            rc = "hung"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return {"mask": mask, "rc": rc}


def timeout_probe() -> dict:
    t0 = time.monotonic()
    rc = subprocess.call(["timeout", "1", "sleep", "5"])
    return {"rc": rc, "seconds": time.monotonic() - t0}


def system_probe() -> str:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "sigblk")
        # The shell's own mask (grep reads /proc/self of the shell's child,
        # which inherits it unchanged).
        status = os.system(f"grep SigBlk /proc/self/status > {out}")
        assert status == 0, status
        with open(out) as f:
            return f.read().split()[1]


def thread_probe() -> str:
    got: list = []
    t = threading.Thread(target=lambda: got.append(own_sigblk()))
    t.start()
    t.join()
    return got[0]


def pool_probe() -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
        pool = multiprocessing.get_context("fork").Pool(1)
    pids = [p.pid for p in pool._pool]  # type: ignore[attr-defined]
    pool.apply_async(time.sleep, (30,))
    time.sleep(0.2)   # let the worker take the task (either way it must die)
    t = threading.Thread(target=pool.terminate, daemon=True)
    t.start()
    t.join(POOL_WAIT)
    if not t.is_alive():
        return "terminated"
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    t.join(POOL_WAIT)
    return "hung"


def probe(_data: object = None) -> dict:
    return {"own": own_sigblk(), "popen": popen_probe(), "timeout": timeout_probe(),
            "system": system_probe(), "thread": thread_probe(), "pool": pool_probe()}


def in_thread() -> dict:
    got: list = []
    t = threading.Thread(target=lambda: got.append(probe()))
    t.start()
    t.join()
    return got[0]


def in_kthread() -> dict:
    k = kpark.KThread(probe, name="probe")
    k.start()
    return k.stop()


def creator_masks() -> dict:
    """The own masks of threads whose creator (the main thread) blocks
    SIGUSR1: each kind must inherit exactly that mask."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        got: list = []
        t = threading.Thread(target=lambda: got.append(own_sigblk()))
        t.start()
        t.join()
        k = kpark.KThread(lambda _: own_sigblk())
        k.start()
        with kpark.PerCPUExecutor(max_workers=1) as ex:
            task = ex.submit(own_sigblk).result()
        return {"main": own_sigblk(), "thread": got[0], "kthread": k.stop(), "task": task}
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def main() -> None:
    result = {"main": own_sigblk(), "thread": in_thread(), "kthread": in_kthread()}
    with kpark.PerCPUExecutor() as ex:
        result["task"] = ex.submit(probe).result()
        result["kthread_in_task"] = ex.submit(in_kthread).result()
    result["creator_blocks_sigusr1"] = creator_masks()
    print("RESULT", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
