"""Subprocess payload for tests/test_process.py (semantics 15).

    python fork_child.py FORKER FORKS

FORKER  main: the main thread calls os.fork();
        thread: a plain threading.Thread calls it (the child goes on in it).
FORKS   how many times to fork (while another thread keeps waking a KThread,
        so some forks land in the middle of a wake).

Before forking, this process holds KThreads in every state: never woken,
parked in parkme(), parked before threadfn ran, asleep in schedule(),
per-CPU and parked by create_on_cpu(), looping with schedule(0.001),
being woken in a tight loop, and already exited.  Each fork child checks
that every inherited KThread reports exited at once (is_alive() False,
is_parked False, park() raises ThreadExitedError, stop() and join() return
None, wake() False, unpark() a no-op, gone from threading.enumerate(), all
in well under a second) and that new KThreads, create_on_cpu() and
Completion work; it reports JSON through a pipe and leaves with os._exit:
0 if every check passed, 1 otherwise.  A SIGALRM kills a child that hangs.
Then the parent checks its own KThreads were not affected and prints
"RESULT <json>".
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback

import kpark
from kpark import ThreadExitedError

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from helpers import Prog, asleep, kloop, wait_for  # noqa: E402

FORKER, FORKS = sys.argv[1], int(sys.argv[2])
DEADLINE = 10.0
CHILD_ALARM = 20        # seconds before a hung child is killed by SIGALRM


def ticker(p: Prog) -> int:
    while not kpark.should_stop():
        p.n += 1
        kpark.schedule(0.001)
    return p.n


def new_kthreads_work(cpu: int) -> dict:
    """Create, wake, park, unpark and stop fresh KThreads; per-CPU too."""
    out = {}
    p = Prog()
    k = kpark.KThread(kloop, p, name="child-new")
    assert k.is_alive() and not k.started
    assert k.wake() is True                      # asleep in its first sleep
    wait_for(lambda: p.n >= 1, DEADLINE, "new KThread runs threadfn")
    k.park(DEADLINE)
    assert k.is_parked
    n = p.n
    for _ in range(3):
        assert k.wake() is False                 # parked: deaf
    assert p.n == n and k.is_parked
    k.unpark()
    assert not k.is_parked
    wait_for(lambda: p.n > n, DEADLINE, "new KThread runs after unpark")
    n = p.n
    k.wake()
    wait_for(lambda: p.n > n, DEADLINE, "new KThread runs after wake")
    r = k.stop(DEADLINE)
    assert r == p.n and not k.is_alive(), (r, p.n)
    out["new"] = r

    q = Prog()
    pc = kpark.create_on_cpu(kloop, q, cpu, "child/%u")
    assert pc.is_parked and pc.is_per_cpu and pc.cpu == cpu and not pc.started
    pc.unpark()
    wait_for(lambda: q.n >= 1, DEADLINE, "per-CPU KThread runs after unpark")
    assert os.sched_getaffinity(pc.native_id) == {cpu}
    pc.park(DEADLINE)
    pc.unpark()
    r = pc.stop(DEADLINE)
    assert r == q.n, (r, q.n)
    out["per_cpu"] = r

    c = kpark.Completion()
    kc = kpark.KThread(lambda comp: comp.complete(), c)
    kc.start()
    assert c.wait(DEADLINE) is True
    kc.stop(DEADLINE)
    out["completion"] = True
    return out


def child(inherited: dict, cpu: int, wfd: int) -> None:
    """Runs in the fork child; never returns."""
    code = 1
    report: dict = {}
    try:
        signal.alarm(CHILD_ALARM)
        t0 = time.monotonic()
        # By identity: idents (pthread_t) are reused, e.g. the forking
        # thread may have the ident a finished KThread had.
        enumerated = {id(t) for t in threading.enumerate()}
        for name, k in inherited.items():
            s0 = time.monotonic()
            rec = {"alive": k.is_alive(), "parked": k.is_parked,
                   "enumerated": id(k) in enumerated}
            try:
                k.park(DEADLINE)
                rec["park"] = "returned"
            except ThreadExitedError:
                rec["park"] = "ThreadExitedError"
            except BaseException as e:  # noqa: BLE001 - reported
                rec["park"] = repr(e)
            try:
                k.park()                               # untimed: still no block
                rec["park_untimed"] = "returned"
            except ThreadExitedError:
                rec["park_untimed"] = "ThreadExitedError"
            rec["stop"] = repr(k.stop(DEADLINE))
            rec["stop_again"] = repr(k.stop())
            rec["join"] = repr(k.join(DEADLINE))
            rec["wake"] = k.wake()
            k.unpark()
            rec["alive_after"] = k.is_alive()
            rec["seconds"] = time.monotonic() - s0
            report[name] = rec
        report["_inherited_seconds"] = time.monotonic() - t0
        report["_new"] = new_kthreads_work(cpu)
        code = 0
    except BaseException:  # noqa: BLE001 - reported to the parent
        report["_error"] = traceback.format_exc()
    finally:
        try:
            os.write(wfd, json.dumps(report).encode())
            os.close(wfd)
        finally:
            os._exit(code)


def forker(inherited: dict, cpu: int, out: list) -> None:
    for i in range(FORKS):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            child(inherited, cpu, w)
        os.close(w)
        chunks = []
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        raw = b"".join(chunks).decode()
        out.append({"status": status,
                    "exitcode": os.waitstatus_to_exitcode(status),
                    "report": json.loads(raw) if raw else None})


def main() -> None:
    cpu = min(os.sched_getaffinity(0))
    progs = {name: Prog() for name in
             ("never", "parked", "parked_early", "sleeping", "per_cpu",
              "ticking", "churned", "exited")}
    ks = {}
    ks["never"] = kpark.KThread(kloop, progs["never"])
    ks["parked"] = kpark.KThread(kloop, progs["parked"])
    ks["parked"].start()
    ks["parked"].park(DEADLINE)
    ks["parked_early"] = kpark.KThread(kloop, progs["parked_early"])
    ks["parked_early"].park(DEADLINE)
    ks["sleeping"] = kpark.KThread(kloop, progs["sleeping"])
    ks["sleeping"].start()
    wait_for(lambda: progs["sleeping"].n >= 1 and asleep(ks["sleeping"].native_id),
             DEADLINE, "sleeping KThread asleep in schedule()")
    ks["per_cpu"] = kpark.create_on_cpu(kloop, progs["per_cpu"], cpu)
    ks["ticking"] = kpark.KThread(ticker, progs["ticking"])
    ks["ticking"].start()
    ks["churned"] = kpark.KThread(kloop, progs["churned"])
    ks["churned"].start()
    ks["exited"] = kpark.KThread(lambda d: 42)
    ks["exited"].start()
    ks["exited"].join(DEADLINE)
    assert not ks["exited"].is_alive()

    # Keep waking "churned" from another thread while forking.
    churn_stop = threading.Event()

    def churn() -> None:
        while not churn_stop.is_set():
            ks["churned"].wake()

    churner = threading.Thread(target=churn, name="churner")
    churner.start()

    before = {name: progs[name].n for name in progs}
    forks: list = []
    if FORKER == "main":
        forker(ks, cpu, forks)
    else:
        t = threading.Thread(target=forker, args=(ks, cpu, forks), name="forker")
        t.start()
        t.join(CHILD_ALARM * FORKS + 10)
        assert not t.is_alive()
    churn_stop.set()
    churner.join(DEADLINE)

    # The parent's KThreads are unaffected.
    parent: dict = {}
    assert all(k.is_alive() for n, k in ks.items() if n != "exited")
    assert ks["parked"].is_parked and progs["parked"].n == before["parked"]
    assert ks["parked_early"].is_parked and not ks["parked_early"].started
    assert ks["per_cpu"].is_parked and not ks["per_cpu"].started
    assert not ks["never"].started and progs["never"].n == 0
    for name in ("parked", "parked_early", "per_cpu"):
        n = progs[name].n
        ks[name].unpark()
        wait_for(lambda: progs[name].n > n, DEADLINE, f"{name} runs after unpark")
    ks["never"].start()
    wait_for(lambda: progs["never"].n >= 1, DEADLINE, "never-woken one runs after start")
    n = progs["sleeping"].n
    ks["sleeping"].wake()
    wait_for(lambda: progs["sleeping"].n > n, DEADLINE, "sleeping one runs after wake")
    n = progs["ticking"].n
    wait_for(lambda: progs["ticking"].n > n, DEADLINE, "ticking one keeps ticking")
    for name, k in ks.items():
        r = k.stop(DEADLINE)
        parent[name] = r
        expected = 42 if name == "exited" else progs[name].n
        assert r == expected, (name, r, expected)
        assert not k.is_alive()
    print("RESULT", json.dumps({"forks": forks, "parent": parent,
                                "backend": kpark.BACKEND}), flush=True)


if __name__ == "__main__":
    main()
