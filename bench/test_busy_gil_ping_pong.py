"""Benchmark 8, under a busy GIL: benchmark 1 with a third thread running pure-Python CPU work."""
SPEC = "busy_gil_ping_pong"


def test_busy_gil_ping_pong(run_side, side):
    run_side(SPEC, side)
