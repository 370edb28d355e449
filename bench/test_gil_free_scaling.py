"""Benchmark 7, GIL-free scaling: sha256 over 1 MiB on 1..ncpu workers, pinned per-CPU vs ThreadPoolExecutor."""
SPEC = "gil_free_scaling"


def test_gil_free_scaling(run_side, side):
    run_side(SPEC, side)
