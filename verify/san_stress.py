"""Stress workload for verify/sanitize.sh tsan: every kpark operation, from
several threads at once, for ThreadSanitizer to watch.

    python verify/san_stress.py [STEPS]      (default 3000, KPARK_SAN_STEPS)

- NKT KThreads run the kernel-style loop (should_stop / should_park +
  parkme / schedule, timed or not) and complete a Completion each round;
  one of them is a per-CPU thread (create_on_cpu) when CPU 0 is allowed.
- Three controller threads each make STEPS random calls on random KThreads:
  wake, park(timeout), unpark, stop (then a new KThread: started, parked
  before threadfn, or left never woken), Completion waits, and Flags ops.
- Two plain threads play ping-pong on a pair of Completions, with
  complete_all()/reinit() rounds.
Checks only what must hold whatever the interleaving (every park/stop
returns in time, stop() returns threadfn's result, the ping-pong finishes);
the point is the sanitizer's report.  Exit status 0 when all checks held.
"""
from __future__ import annotations

import os
import random
import sys
import threading
import time

import kpark

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("KPARK_SAN_STEPS", "3000"))
NKT = 4
DEADLINE = 60.0          # sanitizers slow everything down; a hang is a failure
failures = []


class State:
    def __init__(self) -> None:
        self.rounds = 0
        self.done = kpark.Completion()
        self.flags = kpark.Flags()


def kloop(st: State) -> int:
    timed = random.Random(id(st)).random() < 0.5
    while not kpark.should_stop():
        if kpark.should_park():
            kpark.parkme()
        st.rounds += 1
        st.flags.set_bit(st.rounds % 64)
        st.done.complete()
        kpark.schedule(0.01 if timed else None)
    return st.rounds


def new_kthread(rng: random.Random):
    st = State()
    how = rng.randrange(3)
    k = kpark.KThread(kloop, st)
    if how == 0:
        k.start()
    elif how == 1:
        k.park()          # parked before threadfn ran; unpark() starts it
    return k, st


def make_percpu():
    allowed = sorted(os.sched_getaffinity(0))
    st = State()
    return kpark.create_on_cpu(kloop, st, allowed[0], namefmt="san/%u"), st


slots_lock = threading.Lock()
slots: list = []
counts = [0] * 21


def controller(seed: int) -> None:
    rng = random.Random(seed)
    try:
        for _ in range(STEPS):
            with slots_lock:
                i = rng.randrange(len(slots))
                k, st = slots[i]
            op = rng.random()
            if op < 0.35:
                k.wake()
            elif op < 0.55:
                try:
                    k.park(DEADLINE)
                except kpark.ThreadExitedError:
                    pass
            elif op < 0.80:
                k.unpark()
            elif op < 0.85:
                r = k.stop(DEADLINE)
                if r is not None and r != st.rounds:
                    failures.append(f"stop() returned {r}, thread counted {st.rounds}")
                with slots_lock:
                    if slots[i][0] is k:
                        slots[i] = new_kthread(rng) if i else make_percpu_or_plain(rng)
            elif op < 0.95:
                st.done.wait(0.001)
                st.done.try_wait()
            else:
                _ = k.is_parked, k.should_park, k.should_stop, k.started, k.is_alive()
                st.flags.test_and_set_bit(rng.randrange(64))
                st.flags.clear_bit(rng.randrange(64))
            counts[int(op * 20)] += 1
    except Exception as e:  # noqa: BLE001 - reported as a failure
        failures.append(f"controller {seed}: {e!r}")


def make_percpu_or_plain(rng: random.Random):
    try:
        return make_percpu()
    except (ValueError, OSError):
        return new_kthread(rng)


def pingpong(n: int) -> None:
    a, b = kpark.Completion(), kpark.Completion()

    def other() -> None:
        for _ in range(n):
            if not a.wait(DEADLINE):
                failures.append("ping-pong: no ping")
                return
            b.complete()

    t = threading.Thread(target=other)
    t.start()
    for _ in range(n):
        a.complete()
        if not b.wait(DEADLINE):
            failures.append("ping-pong: no pong")
            break
    t.join()
    c = kpark.Completion()
    waiters = [threading.Thread(target=lambda: c.wait(DEADLINE) or failures.append("complete_all lost"))
               for _ in range(3)]
    for w in waiters:
        w.start()
    c.complete_all()
    for w in waiters:
        w.join()
    c.reinit()
    if c.done():
        failures.append("reinit() left it done")


def main() -> int:
    t0 = time.monotonic()
    rng = random.Random(1)
    slots.append(make_percpu_or_plain(rng))
    for _ in range(NKT - 1):
        slots.append(new_kthread(rng))
    threads = [threading.Thread(target=controller, args=(s,)) for s in (11, 22, 33)]
    threads.append(threading.Thread(target=pingpong, args=(STEPS,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, st in slots:
        k.unpark()
        r = k.stop(DEADLINE)
        if r is not None and r != st.rounds:
            failures.append(f"final stop() returned {r}, thread counted {st.rounds}")
    for f in failures:
        print("FAIL:", f)
    rounds = sum(st.rounds for _, st in slots)
    print(f"san_stress: {STEPS} steps x 3 controllers, {NKT} KThreads ({rounds} rounds in the last ones), "
          f"{time.monotonic() - t0:.1f}s, {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
