"""Benchmark 5, map throughput: list(ex.map(fn, range(100_000))), both executors."""
SPEC = "map_throughput"


def test_map_throughput(run_side, side):
    run_side(SPEC, side)
