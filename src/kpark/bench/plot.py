"""`--plot FILE.png`: a bar chart of the ratios (matplotlib, the `kpark[plot]` extra)."""
from __future__ import annotations

from typing import Any, Dict, List

__all__ = ["PlotUnavailable", "check_available", "plot_ratios"]

MISSING = ("--plot needs matplotlib, which is not installed; install it with "
           "`pip install 'kpark[plot]'` (or `pip install matplotlib`)")


#: Other processes' CPU share (percent) above which a run is marked noisy.
NOISY_PERCENT = 10.0


class PlotUnavailable(RuntimeError):
    """matplotlib is missing: the message says how to install it."""


def check_available() -> None:
    """Raise PlotUnavailable (with the install command) if matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise PlotUnavailable(MISSING) from exc


def plot_ratios(doc: Dict[str, Any], path: str) -> None:
    """Write a horizontal bar chart of each benchmark's ratio to `path`."""
    check_available()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: List[Dict[str, Any]] = [r for r in doc["benchmarks"] if r["ratio"] is not None]
    rows.reverse()  # first benchmark on top
    labels = [f"{r['number']} {r['title']}\nvs {r['best_baseline']}" for r in rows]
    ratios = [r["ratio"] for r in rows]
    colors = ["#2a7ab9" if x >= 1 else "#c0392b" for x in ratios]
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.8))
    # Bars grow from 1x (a tie) to the ratio, right for a win, left for a loss.
    ys = range(len(rows))
    ax.barh(ys, [x - 1.0 for x in ratios], left=1.0, color=colors)
    # Whiskers: the ratio's p10..p90 (detail.ratio_spread), where the run has it.
    lo_err, hi_err = [], []
    for r, x in zip(rows, ratios):
        s = r.get("detail", {}).get("ratio_spread") or {"p10": x, "p90": x}
        lo_err.append(max(0.0, x - s["p10"]))
        hi_err.append(max(0.0, s["p90"] - x))
    ax.errorbar(ratios, list(ys), xerr=[lo_err, hi_err], fmt="none", ecolor="black",
                elinewidth=0.8, capsize=3)
    ax.set_yticks(list(ys))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    for i, (x, hi) in enumerate(zip(ratios, hi_err)):
        ax.text(max(x + hi, 1.0) * 1.08, i, f"{x:.3g}×", va="center", fontsize=8)
    lows = [x - lo for x, lo in zip(ratios, lo_err)]
    ax.set_xlim(left=min(lows + [1.0]) / 1.5, right=max(ratios + [1.0]) * 4)
    m = doc["machine"]
    ax.set_xlabel("times better than the best pure-threading baseline (log scale; > 1: kpark "
                  "wins); whiskers: p10–p90")
    title = (f"kpark {doc['kpark']} vs threading ({doc['mode']} run)\n"
             f"{m['cpu_model']}, {m['cpus']} CPUs, Python {m['python']} ({m['gil']}), "
             f"{m['backend']} backend")
    other = m.get("other_cpu_percent")
    if other is not None and other >= NOISY_PERCENT:
        title += f"\nNOISY RUN: other processes used {other:g}% of the CPUs"
    ax.set_title(title, fontsize=9, color="#c0392b" if "NOISY" in title else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
