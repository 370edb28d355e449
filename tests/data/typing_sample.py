"""User code calling every public name of kpark and kpark.kthread.

Not a test module: tests/test_typing.py runs `mypy --strict` on it, which
must accept it using kpark's .pyi stubs and py.typed.  Written for
Python 3.9 (no `X | Y` at run time, no builtin generics in aliases).
"""
from __future__ import annotations

import errno
import os
from typing import Dict, List, Optional

import kpark
import kpark.kthread
from kpark import (BACKEND, PerCPUExecutor, PerCPUThreads, Completion, Flags, KThread, ThreadExitedError,
                   create_on_cpu, current, parkme, schedule, should_park,
                   should_stop)
from kpark.kthread import (kthread_bind, kthread_create, kthread_create_on_cpu,
                           kthread_data, kthread_park, kthread_parkme,
                           kthread_should_park, kthread_should_stop,
                           kthread_stop, kthread_unpark, wake_up_process)

READY = 0
BUSY = 63


class Queue:
    def __init__(self) -> None:
        self.items: List[int] = []
        self.flags = Flags()
        self.ready = Completion()


def worker(q: Queue) -> int:
    """A per-CPU worker in the kernel's smpboot style."""
    done = 0
    me: Optional[KThread] = current()
    if me is not None:
        name: str = me.name
        assert name
    while not should_stop():
        if should_park():
            parkme()
            continue
        while q.items:
            q.items.pop()
            done += 1
        q.flags.set_bit(READY)
        q.ready.complete()
        woken: bool = schedule(0.5)
        if not woken:
            schedule()
    return done


def ported_fn(data: Dict[str, int]) -> int:
    while not kthread_should_stop():
        if kthread_should_park():
            kthread_parkme()
        schedule(timeout=None)
    return data["n"]


def use_flags() -> int:
    f = Flags()
    g = Flags(value=0xFF)
    f.set_bit(1)
    f.clear_bit(1)
    was_set: bool = f.test_and_set_bit(BUSY)
    was_clear: bool = not f.test_and_clear_bit(BUSY)
    on: bool = g.test_bit(3)
    word: int = f.value | g.value
    return word + int(was_set) + int(was_clear) + int(on)


def use_completion() -> bool:
    c = Completion()
    c.complete()
    c.complete_all()
    ok: bool = c.wait()
    timed: bool = c.wait(0.25)
    tried: bool = c.try_wait()
    finished: bool = c.done()
    c.reinit()
    return ok and timed and tried and finished


def use_kthread() -> Optional[int]:
    q = Queue()
    k: KThread = KThread(worker, q, name="worker")
    k2 = KThread(worker, data=q)
    k3 = KThread(worker)  # data defaults to None at run time
    del k3
    cpus = sorted(os.sched_getaffinity(0))
    k.bind(cpus[0])
    woke: bool = k.wake()
    if not woke:
        k.start()
    k.park()
    k.park(timeout=1.0)
    k.unpark()
    parked: bool = k.is_parked
    pending: bool = k.should_park
    stopping: bool = k.should_stop
    started: bool = k.started
    per_cpu: bool = k.is_per_cpu
    cpu: Optional[int] = k.cpu
    ident: Optional[int] = k.ident
    native: Optional[int] = k.native_id
    data: object = k.data
    alive: bool = k.is_alive()
    k.name = "renamed"
    try:
        result = k.stop(timeout=2.0)
    except TimeoutError:
        result = None
    k.join()
    k.join(timeout=0.1)
    k2.stop()
    print(parked, pending, stopping, started, per_cpu, cpu, ident, native, data, alive)
    return result if isinstance(result, int) else None


def use_create_on_cpu() -> None:
    q = Queue()
    cpu = min(os.sched_getaffinity(0))
    k = create_on_cpu(worker, q, cpu)
    k2 = create_on_cpu(worker, q, cpu, namefmt="pool/%u")
    k2 = create_on_cpu(worker, q, cpu, "pool/%u")
    for t in (k, k2):
        t.unpark()
        try:
            t.park()
        except ThreadExitedError as e:
            err: RuntimeError = e
            print(err)
        t.stop()


def use_kthread_module() -> int:
    data: Dict[str, int] = {"n": 3}
    k = kthread_create(ported_fn, data, "ported/%d:%s", 0, "x")
    k_plain = kthread_create(ported_fn, data, "ported")
    kthread_bind(k, min(os.sched_getaffinity(0)))
    woke: int = wake_up_process(k)
    rc: int = kthread_park(k)
    if rc == -errno.ENOSYS:
        return rc
    kthread_unpark(k)
    same: object = kthread_data(k)
    ret = kthread_stop(k)
    kthread_stop(k_plain)
    pk = kthread_create_on_cpu(ported_fn, data, min(os.sched_getaffinity(0)), "pk/%u")
    kthread_unpark(pk)
    kpark.kthread.kthread_stop(pk)
    print(woke, same)
    return ret if isinstance(ret, int) else 0


def use_percpu() -> int:
    cpus = sorted(os.sched_getaffinity(0))
    seen: List[int] = []

    def should_run(cpu: int) -> bool:
        return False

    def fn(cpu: int) -> None:
        seen.append(cpu)

    with PerCPUThreads(fn, should_run, setup=lambda cpu: None,
                       cleanup=lambda cpu, online: None, cpus=cpus[:1]) as pool:
        pool.wake(cpus[0])
        pool.offline(cpus[0])
        pool.online([cpus[0]])
        k: KThread = pool.thread(cpus[0])
        online: frozenset[int] = pool.online_cpus
        print(k.name, online, pool.cpus)
    with PerCPUExecutor(cpus=cpus, thread_name_prefix="typed") as ex:
        f = ex.submit(pow, 2, 10)
        g = ex.submit_on(cpus[0], len, "abc")
        total: int = f.result() + g.result() + sum(ex.map(abs, [-1, -2]))
        ex.offline(cpus[0], force=True)
        ex.online(cpus[0])
    return total


def main() -> None:
    backend: str = BACKEND
    version: str = kpark.__version__
    print(backend, version, use_flags(), use_completion(), use_kthread(),
          use_kthread_module(), use_percpu())
    use_create_on_cpu()


if __name__ == "__main__":
    main()
