"""Benchmark 3, hotplug cycle: PerCPUExecutor offline/online vs ThreadPoolExecutor re-creation."""
SPEC = "hotplug_cycle"


def test_hotplug_cycle(run_side, side):
    run_side(SPEC, side)
