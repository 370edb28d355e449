"""kpark.bench: kpark against pure threading, side by side (`python -m kpark bench`).

Layout (this subpackage imports the rest of kpark; nothing in kpark imports it):
  workload.py        the Workload protocol, the trivial tasks, the busy-GIL thread
  kpark_side.py      the kpark half of every benchmark
  threading_side.py  the pure-threading baselines, written as well as threading allows
  suite.py           which workload runs against which, units, targets, budgets
  runner.py          calibration, interleaved rounds, medians, the C limit
  report.py          machine info, JSON rows, the table
  plot.py            the ratio chart (matplotlib: the kpark[plot] extra)
  cli.py             the command line

The C limit comes from kpark.bench._limit (kp_limit.h): the same token hand-off in
C between two pthreads, with no Python and no GIL.
"""
from kpark.bench.cli import bench, main
from kpark.bench.suite import SPECS, select

__all__ = ["SPECS", "bench", "main", "select"]
