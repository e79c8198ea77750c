"""Plots of the accuracy benchmark: mean ± std bars per method, and mean learning curves.

matplotlib is imported inside each function with the Agg backend (files only, no display), so that
importing :mod:`vitkd.benchmark` needs no matplotlib.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["bar_chart", "learning_curves"]

DPI = 100  # with the figure sizes below: PNGs of a few tens of KB


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(
    methods: Sequence[str],
    panels: Mapping[str, tuple[Sequence[float], Sequence[float | None]]],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """One bar panel per metric: ``panels[label] = (means, stds)``, one value per method, std None = no bar.

    The value axis spans the data (not from zero), so differences of a point are visible.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (label, (means, stds)) in zip(axes[0], panels.items(), strict=True):
        errors = [0.0 if s is None else s for s in stds]
        ax.bar(range(len(methods)), means, yerr=errors, capsize=3, color="tab:blue", alpha=0.8)
        low = min(m - e for m, e in zip(means, errors, strict=True))
        high = max(m + e for m, e in zip(means, errors, strict=True))
        margin = 0.15 * (high - low) or 1.0
        ax.set_ylim(max(low - margin, 0.0), high + margin)
        ax.set_xticks(range(len(methods)), methods, rotation=30)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return _save(fig, plt, path)


def learning_curves(curves: Mapping[str, Sequence[float]], path: str | Path, *, ylabel: str, title: str = "") -> Path:
    """One line per method: ``curves[method]`` is the value after epoch 1, 2, ..."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    for method, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=method)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
