"""Notebook 01's figures and exit-count tables (class exclusion, Wang, Li, Zhang, AICAS 2024): test
accuracy against remaining MACs, the Fig. 4 analogue (share of test images leaving at each exit), the Fig. 5
analogue (per-class shares of the early-exited images) and the mean number of remaining classes per exit,
drawn from the ``SetupEvaluation`` objects of ``studies.class_exclusion`` (matplotlib is loaded only when a
figure is drawn)."""
from __future__ import annotations

from typing import Sequence

from ..methods.class_exclusion import OperatingPoint
from .class_exclusion import METHODS, SetupEvaluation

__all__ = ["Points", "plot_accuracy_vs_macs", "operating_points", "plot_exit_points", "exit_count_rows",
           "plot_class_shares", "plot_remaining_classes"]


def _grid(panels: int, rows: int, width: float, height: float):
    import matplotlib.pyplot as plt
    return plt.subplots(rows, panels, figsize=(width * panels, height), squeeze=False)


def plot_accuracy_vs_macs(evals: dict[str, SetupEvaluation]):
    """Test accuracy against remaining MACs on the common tolerance grid, one panel per set-up; stars:
    each network with early exits disabled; dotted: the plain backbone."""
    from .plots import accuracy_vs_cost
    fig, axes = _grid(len(evals), 1, 6.2, 4.4)
    for ax, ev in zip(axes[0], evals.values()):
        grid = ", ".join(f"{100 * t:g}" for t in ev.tolerances)
        accuracy_vs_cost(ax, {f"{m} (tolerance {grid} %)": ([100 * p.test.mean_fraction for p in ev.curves[m]],
                                                            [p.test.accuracy for p in ev.curves[m]]) for m in METHODS},
                         reference={f"{m}, no early exit": (100 * ev.no_exit(m)[0], ev.no_exit(m)[1]) for m in METHODS},
                         xlabel="remaining MACs (% of the plain backbone)")
        ax.axhline(100 * ev.tests["plain"].exit_accuracies()[-1], color="gray", ls=":", lw=1, label="plain backbone")
        ax.legend(frameon=True, fontsize=8)
        ax.set_title(f"{ev.name} (test)")
    return fig


Points = dict[str, dict[str, dict[str, OperatingPoint]]]   # {label: {set-up: {method: point}}}


def operating_points(evals: dict[str, SetupEvaluation], common: float) -> Points:
    """{label: {set-up: {method: point}}} at the authors' tolerances and at one common tolerance."""
    return {"authors' tolerances": {n: ev.authors for n, ev in evals.items()},
            f"common {100 * common:g} % tolerance": {n: {m: ev.curves[m][ev.tolerances.index(common)] for m in METHODS}
                                                  for n, ev in evals.items()}}


def plot_exit_points(evals: dict[str, SetupEvaluation], points: Points):
    """Fig. 4: share of test images leaving at each exit, BC beside CR; one row per operating point."""
    from .plots import exit_histogram
    fig, axes = _grid(len(evals), len(points), 6.5, 3.5 * len(points))
    for r, (label, pts) in enumerate(points.items()):
        for ax, (name, ev) in zip(axes[r], evals.items()):
            exit_histogram(ax, {m: p.test.exit_shares for m, p in pts[name].items()},
                           [f"{i + 1}" for i in range(ev.num_exits - 1)] + ["final"])
            ax.set_ylabel(f"share of the {len(ev.tests['BC'])} test images (%)")
            ax.set_xlabel("exit point")
            ax.set_title(f"{name}: {label}", fontsize=10)
    fig.tight_layout()
    return fig


def exit_count_rows(points: Points) -> list[dict]:
    return [{"set-up": n, "operating point": label, "method": m,
             **{f"exit {i + 1}": c for i, c in enumerate(p.test.exit_counts)}}
            for label, pts in points.items() for n, by_m in pts.items() for m, p in by_m.items()]


def plot_class_shares(evals: dict[str, SetupEvaluation], classes: dict[str, Sequence[str]]):
    """Fig. 5 for the 10-class set-ups: share of each class among the early-exited test images, keyed on
    the predicted class (as the authors count) and on the true class. Returns the figure and the
    shares {(set-up, method, "predicted" | "true"): tensor}."""
    ten = [ev for ev in evals.values() if ev.tests["BC"].logits.shape[2] == 10]
    fig, axes = _grid(2, max(len(ten), 1), 6.5, 3.8 * max(len(ten), 1))
    shares, width = {}, 0.4
    for r, ev in enumerate(ten):
        by_m = {m: ev.class_shares(m) for m in METHODS}
        for ax, key in zip(axes[r], ("predicted", "true")):
            for j, m in enumerate(METHODS):
                shares[(ev.name, m, key)] = by_m[m][key]
                ax.bar([i + (j - 0.5) * width for i in range(10)], by_m[m][key].tolist(), width=width, label=m)
            ax.axhline(10, color="gray", ls=":", lw=1)
            ax.set_xticks(range(10), classes[ev.name], rotation=40, ha="right")
            ax.set(ylabel="% of early-exited images", title=f"{ev.name}: by {key} class")
            ax.legend(frameon=True)
    fig.tight_layout()
    return fig, shares


def plot_remaining_classes(evals: dict[str, SetupEvaluation]):
    """Mean |R_k| per exit at each tolerance of the grid and at the authors' tolerance. Returns the
    figure and {set-up: {label: [mean |R_k| per exit]}}."""
    fig, axes = _grid(len(evals), 1, 6, 4)
    remaining = {}
    for ax, (name, ev) in zip(axes[0], evals.items()):
        remaining[name] = {**{f"tolerance {100 * t:g} %": ev.remaining_classes(p) for t, p in zip(ev.tolerances, ev.curves["BC"])},
                           "authors' tolerance": ev.remaining_classes(ev.authors["BC"])}
        for label, values in remaining[name].items():
            style = {"ls": "--", "color": "k", "marker": "s"} if label == "authors' tolerance" else {"marker": "o"}
            ax.plot(range(1, len(values) + 1), values, label=label, **style)
        ax.set(xlabel="exit point", ylabel="mean remaining classes |R_k|", title=f"{name}: BC (test)")
        ax.legend(frameon=True, fontsize=8)
    return fig, remaining
