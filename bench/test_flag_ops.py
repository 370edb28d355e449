"""Benchmark 6, flag ops: Flags.test_and_set_bit + clear_bit vs an int guarded by threading.Lock."""
SPEC = "flag_ops"


def test_flag_ops(run_side, side):
    run_side(SPEC, side)
