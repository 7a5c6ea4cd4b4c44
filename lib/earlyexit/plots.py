"""One figure style for every notebook, and saving figures under figures/<profile>/."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

import matplotlib.pyplot as plt
import seaborn as sns

from .paths import project_root

__all__ = ["use_style", "save_figure", "figure_dir", "accuracy_vs_cost", "exit_histogram"]


def use_style() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.2)
    matplotlib.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "savefig.bbox": "tight",
                                "axes.titleweight": "bold"})


def figure_dir(profile: str) -> Path:
    return project_root() / "figures" / profile


def save_figure(fig: plt.Figure, name: str, profile: str) -> Path:
    """Save as PNG under figures/<profile>/<name>.png and return the path."""
    path = figure_dir(profile) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    return path


def accuracy_vs_cost(ax: plt.Axes, curves: dict[str, tuple[Sequence[float], Sequence[float]]],
                     reference: dict[str, tuple[float, float]] | None = None,
                     xlabel: str = "mean MACs / plain-backbone MACs") -> plt.Axes:
    """Accuracy (%) against cost for several methods; ``reference`` adds single labelled points."""
    for label, (cost, acc) in curves.items():
        ax.plot(cost, [100 * a for a in acc], marker="o", ms=4, label=label)
    for label, (cost, acc) in (reference or {}).items():
        ax.scatter([cost], [100 * acc], marker="*", s=140, zorder=5, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.legend(frameon=True)
    return ax


def exit_histogram(ax: plt.Axes, shares: dict[str, Sequence[float]], exit_labels: Sequence[str] | None = None) -> plt.Axes:
    """Share of samples (%) leaving at each exit, one bar group per method."""
    methods = list(shares)
    k = len(next(iter(shares.values())))
    labels = list(exit_labels or [f"exit {i + 1}" for i in range(k)])
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        ax.bar([i + (j - (len(methods) - 1) / 2) * width for i in range(k)], [100 * s for s in shares[m]],
               width=width, label=m)
    ax.set_xticks(range(k), labels)
    ax.set_ylabel("share of test images (%)")
    if len(methods) > 1:
        ax.legend(frameon=True)
    return ax
