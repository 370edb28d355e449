"""Benchmark 4, submit latency: submit(fn).result(), PerCPUExecutor vs ThreadPoolExecutor."""
SPEC = "submit_latency"


def test_submit_latency(run_side, side):
    run_side(SPEC, side)
