"""Plots shared by `edgevit report` and the benchmark (matplotlib, Agg, PNG + SVG).

Every function takes plain data (what report.json / bench.json hold), writes ``stem.png``
and ``stem.svg`` and returns the SVG text so an HTML page can inline it (self-contained).
SVG output is made byte-stable (no date, fixed hash salt) so the same data gives the same
files.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

MARKERS = {"edgevit": "o", "baseline": "s", "peer": "^"}
COLORS = {"edgevit": "#1f77b4", "baseline": "#555555", "peer": "#d62728"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "edgevit"
    matplotlib.rcParams["svg.fonttype"] = "none"
    import matplotlib.pyplot as plt

    return plt


def _save(fig, stem: Path) -> str:
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110, metadata={"Software": None})
    fig.savefig(stem.with_suffix(".svg"), metadata={"Date": None, "Creator": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return stem.with_suffix(".svg").read_text()


def pareto_front(points: Sequence[dict[str, Any]], x: str, y: str) -> list[dict[str, Any]]:
    """Points no other point beats on both axes (lower x, higher y), sorted by x."""
    front, best_y = [], float("-inf")
    for p in sorted(points, key=lambda p: (p[x], -p[y])):
        if p[y] > best_y:
            front.append(p)
            best_y = p[y]
    return front


def tradeoff_plot(points: Sequence[dict[str, Any]], x: str, y: str, xlabel: str, ylabel: str, title: str, stem: Path) -> str:
    """Scatter of variants (kind: edgevit / baseline / peer) with the Pareto front drawn."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for kind in MARKERS:
        chosen = [p for p in points if p["kind"] == kind]
        if chosen:
            ax.scatter([p[x] for p in chosen], [p[y] for p in chosen], marker=MARKERS[kind], color=COLORS[kind], s=46,
                       label=kind, zorder=3)
    for p in points:
        ax.annotate(p["label"], (p[x], p[y]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front = pareto_front(points, x, y)
    if len(front) > 1:
        ax.plot([p[x] for p in front], [p[y] for p in front], "--", color="#2ca02c", lw=1, label="Pareto front", zorder=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, stem)


def bit_allocation_plot(bits: dict[str, int], relevance: dict[str, float], title: str, stem: Path) -> str:
    """Bits per layer (bars) with the LRP relevance that chose them (line)."""
    plt = _pyplot()
    names = list(bits)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(names)), 4))
    ax.bar(range(len(names)), [bits[n] for n in names], color="#1f77b4", label="bits")
    ax.set_ylabel("weight bits")
    ax.set_xticks(range(len(names)), [n.replace("layers.", "L").replace("blocks.", "b") for n in names], rotation=90, fontsize=6)
    if relevance:
        twin = ax.twinx()
        twin.plot(range(len(names)), [relevance.get(n, 0.0) for n in names], ".-", color="#d62728", label="LRP relevance")
        twin.set_ylabel("relevance (normalised)")
    ax.set_title(title, fontsize=10)
    return _save(fig, stem)


def exit_histogram_plot(histograms: dict[str, Sequence[int]], title: str, stem: Path) -> str:
    """Share of images leaving at each exit (last bar = the final classifier)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    width = 0.8 / max(1, len(histograms))
    for i, (label, counts) in enumerate(histograms.items()):
        total = max(1, sum(counts))
        xs = [k + i * width for k in range(len(counts))]
        ax.bar(xs, [c / total for c in counts], width=width, label=label)
    n = max(len(c) for c in histograms.values())
    ax.set_xticks([k + 0.4 - width / 2 for k in range(n)], [f"exit {k}" for k in range(n - 1)] + ["final"])
    ax.set_ylabel("share of images")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, stem)


def bar_plot(values: dict[str, float], ylabel: str, title: str, stem: Path) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(values)), 3.6))
    ax.bar(range(len(values)), list(values.values()), color="#1f77b4")
    ax.set_xticks(range(len(values)), list(values), rotation=20, fontsize=8, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    return _save(fig, stem)
