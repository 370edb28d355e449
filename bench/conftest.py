"""pytest-benchmark runner for kpark's benchmark suite (the same workloads as
`python -m kpark bench`, from kpark.bench.suite).

    pytest bench/ --benchmark-only                      # run, grouped per benchmark
    pytest bench/ --benchmark-only --benchmark-autosave # keep the run in .benchmarks/
    pytest bench/ --benchmark-only --benchmark-compare  # against the last saved run

Each test module names its benchmark (SPEC); every side of that benchmark
(kpark, each pure-threading baseline, and the kpark variants the CLI reports
as detail) becomes one parametrized test in the benchmark's group.  A round
is ROUND_OPS[benchmark] operations (round trips, cycles, map() calls...) in
one run() call, the same loop the CLI times, so the group's name says what
one round is: divide by that count for the time per operation.  The
repository's pyproject limits plain `pytest` to tests/, so this directory
only runs when named.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable, Dict, List

import pytest

from kpark.bench.suite import Ctx, Spec, busy_context, select
from kpark.bench.workload import Workload

try:
    import pytest_benchmark  # noqa: F401
except ImportError:  # pragma: no cover - only without the plugin
    @pytest.fixture
    def benchmark() -> None:
        pytest.skip("pytest-benchmark is not installed: pip install pytest-benchmark")

#: Seconds of timed rounds per side.
SIDE_BUDGET_S = 1.0
#: Operations per timed round, the same for every side of a benchmark so the
#: group's rows compare directly.
ROUND_OPS = {"wake_ping_pong": 100, "park_unpark_cycle": 20, "hotplug_cycle": 5,
             "submit_latency": 50, "map_throughput": 1, "flag_ops": 1000,
             "gil_free_scaling": 1, "busy_gil_ping_pong": 1, "busy_gil_park_cycle": 1}


def _ctx() -> Ctx:
    return Ctx(quick=False, cpus=sorted(os.sched_getaffinity(0)))


def _sides(spec: Spec) -> Dict[str, Callable[[], Workload]]:
    """Side keys ("case: label" when a benchmark has several cases) -> factory."""
    out: Dict[str, Callable[[], Workload]] = {}
    for ci, case in enumerate(spec.cases(_ctx())):
        for si, w in enumerate([case.kpark, *case.baselines, *case.extras]):
            key = f"{case.label}: {w.label}" if case.label else w.label

            def make(ci: int = ci, si: int = si) -> Workload:
                c = spec.cases(_ctx())[ci]
                return [c.kpark, *c.baselines, *c.extras][si]
            out[key] = make
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    name = getattr(metafunc.module, "SPEC", None)
    if name is not None and "side" in metafunc.fixturenames:
        keys: List[str] = list(_sides(select([name])[0]))
        metafunc.parametrize("side", keys, ids=keys)


@pytest.fixture
def run_side(benchmark: Any) -> Callable[[str, str], None]:
    """run_side(spec_name, side_key): benchmark one side of one benchmark."""

    def run(name: str, key: str) -> None:
        spec = select([name])[0]
        w = _sides(spec)[key]()
        n = ROUND_OPS[spec.name]
        benchmark.group = f"{spec.name}: time per {n} operation{'s' if n > 1 else ''}"
        benchmark.extra_info.update({"unit": spec.unit, "side": w.label, "tasks_per_op": w.ops,
                                     "ops_per_round": n,
                                     "benchmark": f"{spec.number} {spec.title}"})
        busy = busy_context(spec)
        with busy if busy is not None else contextlib.nullcontext(), w:
            w.run(n)  # warm up, and time one round
            t0 = time.perf_counter()
            w.run(n)
            per_round = max(time.perf_counter() - t0, 1e-9)
            rounds = max(3, min(300, int(SIDE_BUDGET_S / per_round)))
            benchmark.pedantic(w.run, args=(n,), iterations=1, rounds=rounds, warmup_rounds=1)
    return run
