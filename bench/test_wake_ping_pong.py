"""Benchmark 1, wake ping-pong: kpark.Completion vs threading.Event, Lock hand-off and Condition."""
SPEC = "wake_ping_pong"


def test_wake_ping_pong(run_side, side):
    run_side(SPEC, side)
