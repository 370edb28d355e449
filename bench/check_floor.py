#!/usr/bin/env python3
"""CI floor for `python -m kpark bench --quick --json FILE`.

    python bench/check_floor.py FILE

Exits 1, naming each offender, if kpark is slower than its best pure-threading
baseline (ratio < 1) on wake ping-pong, park/unpark cycle or hotplug cycle,
or if one of them is missing from FILE.  A noise-proof floor: the speed
targets (4x, 10x, ...) are reported by the benchmark itself, not asserted here.
"""
from __future__ import annotations

import json
import sys
from typing import List, Optional

FLOOR = ("wake_ping_pong", "park_unpark_cycle", "hotplug_cycle")


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: check_floor.py BENCH.json", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as f:
        doc = json.load(f)
    rows = {row["name"]: row for row in doc.get("benchmarks", [])}
    problems = []
    for name in FLOOR:
        row = rows.get(name)
        if row is None:
            problems.append(f"{name}: missing from {args[0]} (run without --only)")
        elif row.get("ratio") is None:
            problems.append(f"{name}: no ratio (no baseline measured)")
        elif row["ratio"] < 1:
            problems.append(f"{name}: kpark is slower than {row.get('best_baseline')}: "
                            f"ratio {row['ratio']:.3g} < 1")
        else:
            print(f"ok   {name}: ratio {row['ratio']:.3g} vs {row.get('best_baseline')}")
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
