"""Plots of the accuracy benchmark: values with confidence intervals per method, and reliability diagrams.

matplotlib is imported inside each function with the Agg backend (files only, no display), so that
importing :mod:`vitkd.benchmark` needs no matplotlib.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["interval_panels", "reliability_diagrams"]

DPI = 100  # with the figure sizes below: PNGs of a few tens of KB


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def interval_panels(
    panels: Mapping[str, Mapping[str, tuple[float, float, float]]],
    path: str | Path,
    *,
    xlabel: str,
    zero_line: bool = False,
    title: str = "",
) -> Path:
    """One horizontal panel per entry: ``panels[panel title][label] = (value, low, high)``, drawn as a dot
    with its interval, labels top to bottom in the mapping's order; ``zero_line`` marks x = 0."""
    plt = _pyplot()
    rows = max(len(p) for p in panels.values())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 0.9 + 0.38 * rows), squeeze=False)
    for ax, (panel_title, entries) in zip(axes[0], panels.items(), strict=True):
        labels = list(entries)
        ys = range(len(labels))[::-1]
        for y, label in zip(ys, labels, strict=True):
            value, low, high = entries[label]
            ax.plot([low, high], [y, y], color="tab:blue", linewidth=2)
            ax.plot([value], [y], "o", color="tab:blue", markersize=5)
        if zero_line:
            ax.axvline(0.0, color="grey", linestyle="--", linewidth=1)
        ax.set_yticks(list(ys), labels)
        ax.set_xlabel(xlabel)
        ax.set_title(panel_title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, plt, path)


def reliability_diagrams(models: Mapping[str, Sequence[Mapping[str, float | None]]], path: str | Path,
                         *, title: str = "") -> Path:
    """One panel per model: ``models[name]`` = equal-width confidence bins (dicts with ``count``,
    ``accuracy``, ``confidence`` in [0, 1], as :func:`vitkd.benchmark.accuracy.reliability_bins` gives);
    bars of accuracy per bin against the diagonal, and the bins' share of samples below."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(models), figsize=(3.4 * len(models), 4.6), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    for column, (name, bins) in enumerate(models.items()):
        width = 1.0 / len(bins)
        centres = [(i + 0.5) * width for i in range(len(bins))]
        total = sum(b["count"] for b in bins)
        top, bottom = axes[0][column], axes[1][column]
        top.bar(centres, [b["accuracy"] or 0.0 for b in bins], width=width, edgecolor="black", color="tab:blue",
                alpha=0.8, label="accuracy")
        top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
        top.set_title(name, fontsize=10)
        top.set_ylim(0, 1)
        top.set_ylabel("accuracy" if column == 0 else "")
        bottom.bar(centres, [b["count"] / total for b in bins], width=width, color="grey")
        bottom.set_xlabel("confidence")
        bottom.set_ylabel("share" if column == 0 else "")
    axes[0][0].legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
