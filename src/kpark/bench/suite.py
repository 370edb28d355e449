"""The benchmarks of `python -m kpark bench`: what runs against what, and the targets.

Each Spec names the kpark workload, its pure-threading baselines (the
classes live in kpark_side.py and threading_side.py), the unit, the project's
speed targets, and how much time the runner may spend on it.  The pytest-benchmark
suite in the repository's bench/ directory builds its workloads from these
same specs, so both runners measure the same code.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

from kpark.bench import kpark_side as K
from kpark.bench import threading_side as T
from kpark.bench.workload import BusyGIL, SwitchInterval, Workload

__all__ = ["Ctx", "Case", "Target", "Spec", "SPECS", "spec_names", "select"]

#: Items of one map() call (100_000 in a full run; --quick uses fewer).
MAP_ITEMS = 100_000
MAP_ITEMS_QUICK = 20_000
#: chunksize of the chunked map() measured beside the per-item row.
MAP_CHUNK = 256
#: Size of one GIL-releasing task's input (sha256 over 1 MiB).
SHA_BYTES = 1 << 20
#: GIL-releasing tasks per sample, per worker.
SHA_TASKS_PER_WORKER = 4
#: Pure-Python tasks per sample, per worker.
PY_TASKS_PER_WORKER = 4

#: A free-threaded build with the GIL off: benchmark 8's busy thread then has
#: no GIL to hold, and its rows measure a busy third thread on the CPUs.
GIL_DISABLED = not getattr(sys, "_is_gil_enabled", lambda: True)()
_BUSY = "busy thread, no GIL" if GIL_DISABLED else "busy GIL"
_BUSY_NOTE = ("a third thread running pure-Python CPU work (no GIL: it only takes a CPU)"
              if GIL_DISABLED else "a third thread running pure-Python CPU work")


@dataclass
class Ctx:
    """What the workload factories need to know about this run."""
    quick: bool
    cpus: List[int]
    data: bytes = b""

    @property
    def ncpu(self) -> int:
        return len(self.cpus)


@dataclass
class Case:
    """One measurement: the kpark workload against its baselines.

    `extras` are measured alongside and reported in the JSON detail only
    (variants of the kpark side that explain a number, never baselines).
    """
    label: str
    kpark: Workload
    baselines: List[Workload]
    extras: List[Workload] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """A speed target of the project (docs/performance.md lists them).

    kind "speedup": kpark at least `factor` times better than the baseline
    labelled `ref` (None: the best baseline); factor 1 means strictly better.
    kind "c_limit": kpark within `factor` times the C limit.
    """
    kind: str
    factor: float
    ref: Optional[str] = None

    def describe(self) -> str:
        if self.kind == "c_limit":
            return f"<= {self.factor:g}x C limit"
        ref = self.ref or "best baseline"
        if self.factor == 1:
            return f"faster than {ref}"
        return f">= {self.factor:g}x {ref}"


@dataclass(frozen=True)
class Spec:
    """One benchmark of the suite."""
    number: str               # the row's number in the tables (8 has two rows: 8a, 8b)
    name: str                 # stable key (JSON, --only, pytest groups)
    title: str
    unit: str                 # "µs", "ns" or "tasks/s"
    cases: Callable[[Ctx], List[Case]]
    targets: Tuple[Target, ...] = ()
    #: "round_trip": the C ping-pong; "cycle": two C round trips (a park/unpark
    #: cycle is four hand-offs); None: no C counterpart.
    c_limit: Optional[str] = None
    busy_gil: bool = False
    #: Seconds per side (all rounds together) for quick/full runs.
    budget: Tuple[float, float] = (0.3, 2.0)
    min_samples: Tuple[int, int] = (5, 15)
    max_batch: int = 100_000
    #: Seconds of one sample, quick/full (None: the runner's default).  Under a
    #: busy GIL a sample must span many switch intervals: the stalls come in
    #: bursts of one interval, and a short sample can fall between them.
    sample_s: Optional[Tuple[float, float]] = None
    #: "floor" rows show a number, not a contest (the C limit itself).
    floor: bool = False
    note: str = ""

    @property
    def higher_is_better(self) -> bool:
        return self.unit == "tasks/s"


def _one(kpark: Workload, *baselines: Workload) -> List[Case]:
    return [Case("", kpark, list(baselines))]


#: The switch interval of the "what a user can do" variant under a busy GIL.
SHORT_SWITCH_INTERVAL = 0.0005


def _ping_pong(ctx: Ctx) -> List[Case]:
    return _one(K.CompletionPingPong(), T.EventPingPong(), T.LockPingPong(),
                T.ConditionPingPong())


def _busy_ping_pong(ctx: Ctx) -> List[Case]:
    cases = _ping_pong(ctx)
    if not GIL_DISABLED:  # no GIL: no switch interval to shorten
        cases[0].extras.append(SwitchInterval(K.CompletionPingPong(), SHORT_SWITCH_INTERVAL))
    return cases


def _park_cycle(ctx: Ctx) -> List[Case]:
    return _one(K.KThreadParkCycle(), T.ConditionParkCycle(), T.TeardownSetupCycle())


def _busy_park_cycle(ctx: Ctx) -> List[Case]:
    cases = _park_cycle(ctx)
    if not GIL_DISABLED:
        cases[0].extras.append(SwitchInterval(K.KThreadParkCycle(), SHORT_SWITCH_INTERVAL))
    return cases


def _hotplug(ctx: Ctx) -> List[Case]:
    return _one(K.ExecutorHotplug(ctx.cpus), T.ThreadPoolRecreate(ctx.ncpu))


def _submit(ctx: Ctx) -> List[Case]:
    return _one(K.ExecutorSubmit(ctx.cpus), T.ThreadPoolSubmit(ctx.ncpu))


def _map(ctx: Ctx) -> List[Case]:
    items = MAP_ITEMS_QUICK if ctx.quick else MAP_ITEMS
    # The row: one task per item on both sides; chunking is the extra.
    cases = _one(K.ExecutorMap(items, ctx.cpus), T.ThreadPoolMap(ctx.ncpu, items))
    cases[0].extras.append(K.ExecutorMap(items, ctx.cpus, chunksize=MAP_CHUNK))
    return cases


def _flags(ctx: Ctx) -> List[Case]:
    return _one(K.FlagsOps(), T.LockedIntFlags(), T.LockedIntFlagsInline())


def scaling_workers(ctx: Ctx) -> List[int]:
    """Worker counts of the GIL-free scaling benchmark: 1..ncpu (quick: 1 and ncpu)."""
    if ctx.quick:
        return sorted({1, ctx.ncpu})
    return list(range(1, ctx.ncpu + 1))


def _scaling(ctx: Ctx) -> List[Case]:
    if not ctx.data:
        ctx.data = os.urandom(SHA_BYTES)
    cases = []
    for k in scaling_workers(ctx):
        tasks = SHA_TASKS_PER_WORKER * k
        cases.append(Case(f"{k} worker{'s' if k > 1 else ''}",
                          K.ExecutorScaling(ctx.cpus[:k], tasks, ctx.data),
                          [T.ThreadPoolScaling(k, tasks, ctx.data)]))
    return cases


def _py_scaling(ctx: Ctx) -> List[Case]:
    cases = []
    for k in scaling_workers(ctx):
        tasks = PY_TASKS_PER_WORKER * k
        cases.append(Case(f"{k} worker{'s' if k > 1 else ''}",
                          K.ExecutorPyScaling(ctx.cpus[:k], tasks),
                          [T.ThreadPoolPyScaling(k, tasks)]))
    return cases


SPECS: Tuple[Spec, ...] = (
    Spec("1", "wake_ping_pong", "wake ping-pong", "µs", _ping_pong,
         targets=(Target("speedup", 4, T.EventPingPong.label),
                  Target("speedup", 2, T.LockPingPong.label),
                  Target("c_limit", 2)),
         c_limit="round_trip",
         note="round trip: two threads hand a token back and forth"),
    Spec("2", "park_unpark_cycle", "park/unpark cycle", "µs", _park_cycle,
         targets=(Target("speedup", 4, T.ConditionParkCycle.label),
                  Target("speedup", 10, T.TeardownSetupCycle.label)),
         c_limit="cycle",
         note="unpark, one pass + acknowledgement, park; C limit: two round trips"),
    Spec("3", "hotplug_cycle", "hotplug cycle", "µs", _hotplug,
         targets=(Target("speedup", 10, T.ThreadPoolRecreate.label),),
         budget=(0.6, 3.0),
         note="all CPUs offline, online, one task round trip"),
    Spec("4", "submit_latency", "submit latency", "µs", _submit,
         targets=(Target("speedup", 12, T.ThreadPoolSubmit.label),),
         note="submit(fn).result(), trivial fn"),
    Spec("5", "map_throughput", "map throughput", "tasks/s", _map,
         targets=(Target("speedup", 5, T.ThreadPoolMap.label),),
         budget=(1.5, 8.0), min_samples=(2, 5), max_batch=1,
         note="list(ex.map(fn, range(N))), trivial fn, one task per item"),
    Spec("6", "flag_ops", "flag ops", "ns", _flags,
         targets=(Target("speedup", 1),),
         budget=(0.2, 1.0),
         note="test_and_set_bit + clear_bit from Python"),
    Spec("7", "gil_free_scaling", "GIL-free scaling", "tasks/s", _scaling,
         budget=(0.4, 2.0), min_samples=(3, 10), max_batch=4,
         note="sha256 over 1 MiB per task; value at ncpu workers"),
    Spec("10", "python_scaling", "pure-Python scaling", "tasks/s", _py_scaling,
         budget=(0.4, 2.0), min_samples=(3, 10), max_batch=4,
         note="pure-Python loop per task, no lock, nothing released; value at "
              "ncpu workers (scales only without a GIL)"),
    Spec("8a", "busy_gil_ping_pong", f"{_BUSY}: ping-pong", "µs", _busy_ping_pong,
         c_limit="round_trip", busy_gil=True,
         budget=(0.5, 3.0), min_samples=(6, 24), sample_s=(0.05, 0.1),
         # Calibrated while the GIL happens to be quiet, a large batch takes
         # seconds once switch-interval stalls (ms per operation) set in.
         max_batch=20,
         note=f"benchmark 1 with {_BUSY_NOTE}"),
    Spec("8b", "busy_gil_park_cycle", f"{_BUSY}: park cycle", "µs", _busy_park_cycle,
         c_limit="cycle", busy_gil=True,
         budget=(0.5, 3.0), min_samples=(6, 24), sample_s=(0.05, 0.1),
         # Calibrated while the GIL happens to be quiet, a large batch takes
         # seconds once switch-interval stalls (ms per operation) set in.
         max_batch=20,
         note=f"benchmark 2 with {_BUSY_NOTE}"),
    Spec("9", "c_limit", "C limit (no Python, no GIL)", "µs", lambda ctx: [],
         c_limit="round_trip", floor=True,
         note="the token hand-off of benchmark 1 in C between two pthreads"),
)

def spec_names() -> List[str]:
    return [s.name for s in SPECS]


def select(only: Optional[Sequence[str]]) -> List[Spec]:
    """The specs named in `only` (names, unique prefixes or row numbers); all for None.

    ValueError naming the choices for an unknown name.
    """
    if not only:
        return list(SPECS)
    chosen: List[Spec] = []
    for raw in only:
        for word in raw.split(","):
            word = word.strip()
            if not word:
                continue
            match = [s for s in SPECS if word in (s.name, s.number)]
            if not match:
                match = [s for s in SPECS if s.name.startswith(word)]
            if not match:
                raise ValueError(f"unknown benchmark {word!r}; choose from "
                                 f"{', '.join(spec_names())}")
            for s in match:
                if s not in chosen:
                    chosen.append(s)
    return [s for s in SPECS if s in chosen]


def busy_context(spec: Spec) -> Optional[BusyGIL]:
    """The BusyGIL context a spec runs under, or None."""
    return BusyGIL() if spec.busy_gil else None
