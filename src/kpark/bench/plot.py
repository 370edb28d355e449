"""`--plot FILE.png`: a bar chart of the ratios (matplotlib, the `kpark[plot]` extra)."""
from __future__ import annotations

from typing import Any, Dict, List

__all__ = ["PlotUnavailable", "check_available", "plot_ratios"]

MISSING = ("--plot needs matplotlib, which is not installed; install it with "
           "`pip install 'kpark[plot]'` (or `pip install matplotlib`)")


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
    ax.barh(range(len(rows)), ratios, color=colors)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    for i, (r, x) in enumerate(zip(rows, ratios)):
        ax.text(x * 1.05, i, f"{x:.3g}×", va="center", fontsize=8)
    ax.set_xlim(right=max(ratios + [1.0]) * 4)
    m = doc["machine"]
    ax.set_xlabel("times better than the best pure-threading baseline (log scale; > 1: kpark wins)")
    ax.set_title(f"kpark {doc['kpark']} vs threading ({doc['mode']} run)\n"
                 f"{m['cpu_model']}, {m['cpus']} CPUs, Python {m['python']} ({m['gil']}), "
                 f"{m['backend']} backend", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
