#!/bin/bash
# The 16-CPU scaling run recorded in docs/performance.md ("On 16 CPUs").
# Builds kpark in place with the machine's own python3 (Cython and a C
# compiler must be there; nothing is fetched), then runs, into $OUT:
#   machine.txt   CPUs, kernel, Python, Cython
#   tests.log     the test suite (SPIN models skipped), a check that nothing
#                 assumes two CPUs
#   scaling.json  benchmark 7 (GIL-free scaling) on 1..ncpu workers
#   quick.json    python -m kpark bench --quick
#   hotplug.txt   bench/hotplug_breakdown.py; c_limit_gap.txt: bench/c_limit_gap.py
# Usage: OUT=/some/dir bench/device_run.sh   (about 5 minutes on 16 CPUs)
set -u
OUT=${OUT:-/tmp/kpark-device}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
{
    echo "nproc $(nproc)"; uname -r; python3 -V
    python3 -c 'import Cython; print("Cython", Cython.__version__)'
    grep -m1 "model name" /proc/cpuinfo
    python3 -c 'import os; print("affinity", sorted(os.sched_getaffinity(0)))'
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"
python3 setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
export PYTHONPATH=src PYTHONUNBUFFERED=1
KPARK_SPIN=0 timeout 150 python3 -m pytest tests -q -p no:cacheprovider > "$OUT/tests.log" 2>&1
echo "tests rc=$?"; tail -3 "$OUT/tests.log"
timeout 150 python3 -m kpark bench --only gil_free_scaling --json "$OUT/scaling.json" --no-progress
timeout 120 python3 -m kpark bench --quick --json "$OUT/quick.json" --no-progress
timeout 60 python3 bench/hotplug_breakdown.py 2000 > "$OUT/hotplug.txt" 2>&1; cat "$OUT/hotplug.txt"
timeout 90 python3 bench/c_limit_gap.py 40 > "$OUT/c_limit_gap.txt" 2>&1; cat "$OUT/c_limit_gap.txt"
