"""Benchmark 9, the limit: the token hand-off in C (no Python, no GIL), and
the GIL floor (the same hand-off where the receiver takes and drops the GIL).

Each round is one call: a fresh peer pthread and BATCH round trips, so the
time per round is BATCH round trips plus one thread start (a few percent).
"""
import pytest

_limit = pytest.importorskip("kpark._limit")

BATCH = 10_000


def test_c_limit(benchmark):
    benchmark.group = "c_limit"
    benchmark.extra_info.update({"round_trips_per_round": BATCH, "unit": "s per round"})
    benchmark.pedantic(_limit.pingpong, args=(1, BATCH, 100), rounds=20, warmup_rounds=1)


def test_gil_floor(benchmark):
    benchmark.group = "c_limit"
    benchmark.extra_info.update({"round_trips_per_round": BATCH, "unit": "s per round"})
    benchmark.pedantic(_limit.gil_pingpong, args=(1, BATCH, 100), rounds=20, warmup_rounds=1)
