"""`python -m kpark`: the benchmark suite; with no arguments, `bench --quick`.

    python -m kpark                      # == python -m kpark bench --quick
    python -m kpark bench                # the full run (a few minutes)
    python -m kpark bench --quick --json out.json --plot out.png --only wake_ping_pong
"""
from __future__ import annotations

from kpark.bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
