"""Benchmark 2, park/unpark cycle: kpark.KThread vs the same protocol on threading.Condition and vs teardown/setup."""
SPEC = "park_unpark_cycle"


def test_park_unpark_cycle(run_side, side):
    run_side(SPEC, side)
