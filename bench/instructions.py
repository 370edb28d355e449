"""Instructions per operation of kpark's Python-level hot paths, under callgrind.

    python bench/instructions.py [--ops N] [WHAT ...]

WHAT is any of: submit (PerCPUExecutor.submit(noop).result()), future (a
_Future's life cycle in one KThread: made, run, result read), hotplug
(offline(all), online(all), one submit round trip); default: all three.

Wall-clock times on a shared 2-CPU machine swing by 2x from one hour to the
next; instruction counts do not.  Each WHAT runs twice under
`valgrind --tool=callgrind`, with 0 and with N operations after the same
warm-up, and the difference over N is printed: what one operation costs,
with interpreter start-up and imports subtracted.  The spin budgets are set
to 0 (a spinning waiter would count the time it waits) and the hash seed is
fixed, so a rerun gives the same figure within about 1 %.  Needs valgrind
(apt-get install valgrind); runs with the interpreter running it.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

# One child program per WHAT; {n} is the number of measured operations.
PROGRAMS = {
    "submit": """
from kpark import PerCPUExecutor
def noop(): pass
with PerCPUExecutor() as ex:
    for _ in range(200): ex.submit(noop).result()
    for _ in range({n}): ex.submit(noop).result()
""",
    "future": """
from contextvars import copy_context
from kpark import KThread
from kpark._futures import _Future
def noop(): pass
def body(ctx):  # in a KThread, as the executor's workers run futures
    for _ in range(200): f = _Future(); f._run(ctx, noop, (), {{}}); f.result()
    for _ in range({n}): f = _Future(); f._run(ctx, noop, (), {{}}); f.result()
k = KThread(body, copy_context())
k.start()
k.join()
""",
    "hotplug": """
from kpark import PerCPUExecutor
def noop(): pass
with PerCPUExecutor() as ex:
    cpus = list(ex.cpus)
    for i in range(50 + {n}):
        ex.offline(cpus, force=True); ex.online(cpus); ex.submit(noop).result()
""",
}


def collected(program: str) -> int:
    """Instructions callgrind counted over a run of `program` (a Python source)."""
    env = dict(os.environ, PYTHONHASHSEED="0", KPARK_SPIN_NS="0", KPARK_GIL_SPIN_NS="0")
    with tempfile.NamedTemporaryFile("w", suffix=".py") as src:
        src.write(program)
        src.flush()
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
             sys.executable, src.name],
            env=env, capture_output=True, text=True, check=True).stderr
    m = re.search(r"Collected : (\d+)", out)
    if m is None:
        raise SystemExit(f"no callgrind total in:\n{out}")
    return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="*", help=f"any of {', '.join(PROGRAMS)} (default: all)")
    ap.add_argument("--ops", type=int, default=2000, help="measured operations (default 2000)")
    args = ap.parse_args()
    unknown = [w for w in args.what if w not in PROGRAMS]
    if unknown:
        ap.error(f"unknown {', '.join(unknown)}; choose from {', '.join(PROGRAMS)}")
    print(f"{sys.implementation.name} {sys.version.split()[0]}"
          f"{' free-threaded' if not getattr(sys, '_is_gil_enabled', lambda: True)() else ''}")
    for what in args.what or PROGRAMS:
        base = collected(PROGRAMS[what].format(n=0))
        total = collected(PROGRAMS[what].format(n=args.ops))
        print(f"{what:8s} {(total - base) / args.ops:10,.0f} instructions per operation")


if __name__ == "__main__":
    main()
