"""Runs the specs: calibrates batches, interleaves the sides, takes medians.

Method, for every benchmark:
  * all sides (kpark, each baseline, the detail-only extras) are built first
    and stay up together, in this one process;
  * each side's batch is calibrated to about a tenth of a sample, and one
    sample repeats that batch until SAMPLE_S (or the spec's sample_s) has
    passed: a sample is the mean time of one operation over at least that
    long, so timer overhead stays out of sub-microsecond numbers and
    periodic stalls (a busy GIL's switch interval) are counted at their
    real rate;
  * the sides take turns, round by round, in a rotating order, so a burst of
    load from elsewhere hits all of them alike;
  * the reported value is the median over all samples (µs or ns per
    operation, or tasks per second from the median time per operation).
"""
from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from kpark.bench import _limit
from kpark.bench.suite import Case, Ctx, Spec, busy_context, scaling_workers
from kpark.bench.workload import BusyGIL, Workload

__all__ = ["SideResult", "CaseResult", "SpecResult", "run_specs", "Progress"]

#: Target seconds of one sample, quick/full.
SAMPLE_S = (0.002, 0.005)
#: Rounds of interleaving, quick/full.
ROUNDS = (3, 5)

Progress = Callable[[float, str], None]


@dataclass
class SideResult:
    """One side's samples: seconds per operation, and tasks per operation."""
    label: str
    samples: List[float]
    batch: int
    ops: int

    def median(self) -> float:
        return statistics.median(self.samples)

    def value(self, unit: str) -> float:
        return self._convert(self.median(), unit)

    def _convert(self, seconds: float, unit: str) -> float:
        if unit == "tasks/s":
            return self.ops / seconds
        return seconds * (1e9 if unit == "ns" else 1e6)

    def spread(self, unit: str) -> Dict[str, Any]:
        qs = sorted(self.samples)
        lo, hi = qs[len(qs) // 10], qs[(len(qs) * 9) // 10]
        a, b = self._convert(lo, unit), self._convert(hi, unit)
        return {"p10": min(a, b), "p90": max(a, b), "samples": len(qs), "batch": self.batch}


@dataclass
class CaseResult:
    label: str
    kpark: SideResult
    baselines: List[SideResult]
    extras: List[SideResult] = field(default_factory=list)


@dataclass
class SpecResult:
    spec: Spec
    cases: List[CaseResult]
    c_limit: Optional[float] = None       # in the spec's unit
    detail: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


# -- timing ------------------------------------------------------------------------

def _time(w: Workload, n: int) -> float:
    t0 = time.perf_counter()
    w.run(n)
    return time.perf_counter() - t0


def _calibrate(w: Workload, sample_s: float, max_batch: int) -> int:
    """A batch size whose run takes about sample_s (1 for slow operations)."""
    _time(w, 1)  # warm up: first calls, caches, thread placement
    n = 1
    while n < max_batch:
        dt = _time(w, n)
        if dt >= sample_s * 0.5:
            break
        grow = sample_s / dt if dt > 0 else 10.0
        n = min(max_batch, max(n * 2, int(n * grow)))
    return n


def _sample(w: Workload, n: int, sample_s: float) -> float:
    """Seconds per operation over batches of n, for at least sample_s."""
    t0 = time.perf_counter()
    done = 0
    while True:
        w.run(n)
        done += n
        elapsed = time.perf_counter() - t0
        if elapsed >= sample_s:
            return elapsed / done


def _measure_case(case: Case, quick: bool, spec: Spec,
                  tick: Callable[[str], None]) -> CaseResult:
    q = 0 if quick else 1
    sides = [case.kpark, *case.baselines, *case.extras]
    sample_s = spec.sample_s[q] if spec.sample_s else SAMPLE_S[q]
    budget_s, min_samples, max_batch = spec.budget[q], spec.min_samples[q], spec.max_batch
    rounds = ROUNDS[q]
    with contextlib.ExitStack() as stack:
        for w in sides:
            stack.enter_context(w)
        batches = []
        for w in sides:
            tick(f"calibrating {w.label}")
            batches.append(_calibrate(w, min(sample_s / 10, SAMPLE_S[q]), max_batch))
        samples: List[List[float]] = [[] for _ in sides]
        per_round_s = budget_s / rounds
        per_round_min = max(1, math.ceil(min_samples / rounds))
        for r in range(rounds):
            order = list(range(len(sides)))
            order = order[r % len(order):] + order[:r % len(order)]
            for i in order:
                w, n = sides[i], batches[i]
                tick(f"{w.label} (round {r + 1}/{rounds})")
                end = time.perf_counter() + per_round_s
                got = 0
                while got < per_round_min or time.perf_counter() < end:
                    samples[i].append(_sample(w, n, sample_s))
                    got += 1
    results = [SideResult(w.label, s, n, w.ops) for w, s, n in zip(sides, samples, batches)]
    nb = len(case.baselines)
    return CaseResult(case.label, results[0], results[1:1 + nb], results[1 + nb:])


# -- the C limit -----------------------------------------------------------------

def c_round_trip(quick: bool, cpus: Sequence[int]) -> Dict[str, Any]:
    """The C ping-pong (µs per round trip): pinned to two CPUs and unpinned.

    Each variant is measured in REPEATS interleaved runs; `value` is the
    lowest median of all: a limit is what the machine can do, and a run
    that shared a CPU with another process does not show that.
    """
    lim = _limit
    samples, batch = (40, 500) if quick else (100, 1000)
    out: Dict[str, Any] = {"spin_ns": lim.default_spin_ns()}
    variants: Dict[str, Any] = {"unpinned": None}
    if len(cpus) > 1:
        variants["pinned"] = (cpus[0], cpus[1])
    for name in variants:
        out[name] = float("inf")
    for _ in range(REPEATS):
        for name, pin in variants.items():
            med = statistics.median(lim.pingpong(samples, batch, 1000, cpus=pin)) * 1e6
            out[name] = min(out[name], med)
    out["value"] = min(out[name] for name in variants)
    return out


#: Runs of each floor/limit measurement; the best median is reported.
REPEATS = 3


def gil_floor(quick: bool) -> Optional[Tuple[float, float, float]]:
    """kpark.bench._limit.gil_pingpong: the least a hand-off between Python threads
    costs.  Returns (GIL floor µs per round trip, the C ping-pong µs measured
    right beside it, their ratio), or None on one CPU.

    Of REPEATS (floor, C) pairs, the one with the median ratio: where the
    host puts the two vCPUs changes both numbers several-fold and can change
    between two benchmarks of one run, so a floor is only compared with the
    C figure taken beside it, and the three numbers returned divide.
    """
    lim = _limit
    if len(os.sched_getaffinity(0)) < 2:
        return None  # both sides spin: on one CPU that measures the scheduler
    samples, batch = (40, 500) if quick else (100, 1000)
    pairs = []
    for _ in range(REPEATS):
        floor = statistics.median(lim.gil_pingpong(samples, batch, 1000))
        c = statistics.median(lim.pingpong(samples, batch, 1000))
        pairs.append((floor, c))
    pairs.sort(key=lambda p: p[0] / p[1])
    floor, c = pairs[len(pairs) // 2]
    return floor * 1e6, c * 1e6, floor / c


def bytecode_per_side() -> float:
    """µs of bytecode one side of the Completion ping-pong runs per round trip.

    Measured in one thread (complete() then wait() on the same Completion:
    the loop, both calls, no hand-off), best of five.
    """
    from kpark import Completion
    c = Completion()
    complete, wait = c.complete, c.wait
    n = 20_000
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            complete()
            wait()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


# -- the suite ---------------------------------------------------------------------

def run_specs(specs: Sequence[Spec], quick: bool, progress: Optional[Progress] = None,
              cpus: Optional[List[int]] = None) -> List[SpecResult]:
    """Run `specs` in order; return their results (the C limit row included)."""
    ctx = Ctx(quick=quick, cpus=sorted(os.sched_getaffinity(0)) if cpus is None else cpus)
    total = len(specs)
    done = 0
    c_cache: Dict[str, Any] = {}

    def report(text: str) -> None:
        if progress is not None:
            progress(done / total if total else 1.0, text)

    def c_plain() -> Dict[str, Any]:
        if not c_cache:
            report("C limit")
            c_cache.update(c_round_trip(quick, ctx.cpus) or {"value": None})
        return c_cache

    results: List[SpecResult] = []
    for spec in specs:
        t0 = time.perf_counter()

        def tick(text: str, spec: Spec = spec) -> None:
            report(f"{spec.number} {spec.title}: {text}")

        result = SpecResult(spec, [])
        if spec.floor:
            c = c_plain()
            result.c_limit = c.get("value")
            result.detail.update({k: v for k, v in c.items() if k != "value"})
            tick("GIL floor")
            measured = gil_floor(quick)
            side = bytecode_per_side()
            # The GIL floor: the same hand-off between two Python threads with
            # no bytecode at all; what the GIL alone costs on top of C.
            result.detail["gil_floor"] = measured[0] if measured else None
            result.detail["gil_floor_c_beside"] = measured[1] if measured else None
            result.detail["gil_floor_vs_c_limit"] = measured[2] if measured else None
            result.detail["bytecode_per_side"] = side
        else:
            busy = busy_context(spec)
            with busy if busy is not None else contextlib.nullcontext():
                for case in spec.cases(ctx):
                    result.cases.append(_measure_case(case, quick, spec, tick))
                if spec.c_limit is not None:
                    if busy is not None:
                        tick("C limit under the busy thread")
                        c = c_busy(ctx.cpus)
                    else:
                        c = c_plain()
                    value = c.get("value")
                    if value is not None and spec.c_limit == "cycle":
                        value *= 2
                    result.c_limit = value
            if isinstance(busy, BusyGIL):
                result.detail["busy_loops"] = busy.loops
        _add_detail(spec, ctx, result)
        result.seconds = time.perf_counter() - t0
        results.append(result)
        done += 1
        report(f"{spec.number} {spec.title}: done")
    return results


def c_busy(cpus: Sequence[int]) -> Dict[str, Any]:
    """The C ping-pong while the busy-GIL thread runs: it needs no GIL, only CPUs."""
    lim = _limit
    # Few, short batches: a CPU shared with the busy thread can stall a
    # round trip for a whole scheduler slice.
    return {"value": statistics.median(lim.pingpong(20, 20, 20)) * 1e6}


def _add_detail(spec: Spec, ctx: Ctx, result: SpecResult) -> None:
    import sys
    unit = spec.unit
    spread: Dict[str, Any] = {}
    for case in result.cases:
        for side in [case.kpark, *case.baselines, *case.extras]:
            key = f"{case.label}: {side.label}" if case.label else side.label
            spread[key] = side.spread(unit)
    if spread:
        result.detail["spread"] = spread
    if result.cases and result.cases[0].extras:
        result.detail["variants"] = {
            side.label: side.value(unit) for side in result.cases[0].extras}
    if spec.busy_gil:
        result.detail["switch_interval_s"] = sys.getswitchinterval()
    if spec.name == "map_throughput" and result.cases:
        result.detail["items"] = result.cases[0].kpark.ops
    if spec.name in ("gil_free_scaling", "python_scaling") and result.cases:
        per: Dict[str, Dict[str, float]] = {}
        for k, case in zip(scaling_workers(ctx), result.cases):
            per[str(k)] = {case.kpark.label: case.kpark.value(unit),
                           **{b.label: b.value(unit) for b in case.baselines}}
        result.detail["workers"] = per
