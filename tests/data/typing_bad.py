"""Deliberate type errors against kpark's stubs (tests/test_typing.py).

Every line marked `# error` must be reported by `mypy --strict`, and no
other line: if mypy did not read kpark's .pyi stubs (kpark would be Any,
or missing), the marked lines would pass or other lines would fail.
"""
from __future__ import annotations

import kpark
import kpark.kthread
from kpark import Completion, Flags, KThread


def fn(data: int) -> int:
    return data


f = Flags()
c = Completion()
k = KThread(fn, 1, name="k")

a: str = f.test_bit(1)  # error
f.set_bit("1")  # error
b: str = f.value  # error
d: str = c.wait(0.5)  # error
c.wait(timeout="soon")  # error
e: int = c.complete()  # error
k.bind("0")  # error
g: str = k.is_parked  # error
h: str = kpark.schedule()  # error
kpark.create_on_cpu(fn, 1, cpu="0")  # error
i: str = kpark.kthread.wake_up_process(k)  # error
j: str = kpark.kthread.kthread_park(k)  # error
KThread(fn, 1, "positional-name")  # error
m: KThread = kpark.current()  # error
n: int = kpark.BACKEND  # error
