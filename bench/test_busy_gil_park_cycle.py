"""Benchmark 8, under a busy GIL: benchmark 2 with a third thread running pure-Python CPU work."""
SPEC = "busy_gil_park_cycle"


def test_busy_gil_park_cycle(run_side, side):
    run_side(SPEC, side)
