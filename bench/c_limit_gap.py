"""How far kpark's ping-pong stands from the C limit, placement by placement.

    python bench/c_limit_gap.py [rounds]

The C limit of a hand-off depends on where the host puts the two vCPUs
(about 0.09 µs when they share a cache, about 0.37 µs when they do not, on
the development VM), and the placement changes while a benchmark runs.  So
this takes, `rounds` times (default 60), three short back-to-back samples —
the C ping-pong (kpark._limit.pingpong), the GIL floor
(kpark._limit.gil_pingpong) and kpark.Completion's ping-pong — files each
round under the placement its C sample shows, and prints per placement the
medians and the ratios to the C limit.  docs/performance.md quotes it.
"""
import statistics
import sys
from time import perf_counter

from kpark._limit import gil_pingpong, pingpong
from kpark.bench.kpark_side import CompletionPingPong

#: A C round trip below this many seconds means the two vCPUs share a cache.
SHARED_CACHE_S = 0.2e-6


def completion_round_trip(pp: CompletionPingPong, n: int = 2000) -> float:
    t0 = perf_counter()
    pp.run(n)
    return (perf_counter() - t0) / n


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    groups: dict = {"shared cache": [], "no shared cache": []}
    with CompletionPingPong() as pp:
        pp.run(2000)
        for _ in range(rounds):
            c = statistics.median(pingpong(samples=5, batch=400, warmup=200))
            floor = statistics.median(gil_pingpong(samples=5, batch=400, warmup=200))
            k = completion_round_trip(pp)
            c2 = statistics.median(pingpong(samples=5, batch=400, warmup=200))
            if (c < SHARED_CACHE_S) != (c2 < SHARED_CACHE_S):
                continue  # the placement changed during the round
            key = "shared cache" if c < SHARED_CACHE_S else "no shared cache"
            groups[key].append(((c + c2) / 2, floor, k))
    for key, rows in groups.items():
        if not rows:
            print(f"{key:16} no rounds")
            continue
        c, floor, k = (statistics.median(col) for col in zip(*rows))
        print(f"{key:16} rounds {len(rows):3}  C limit {c * 1e6:.3f} µs  "
              f"GIL floor {floor * 1e6:.3f} µs ({floor / c:.2f}x)  "
              f"kpark.Completion {k * 1e6:.3f} µs ({k / c:.2f}x)")


if __name__ == "__main__":
    main()
