"""Notebook 01's figures and tables (class exclusion, Wang, Li, Zhang, AICAS 2024): test accuracy against
remaining MACs over the training seeds, the Fig. 4 analogue (share of test images leaving at each exit), the
Fig. 5 analogue (per-class shares of the early-exited images, with each class's early-exit rate beside it)
and the mean number of remaining classes per exit over the images that go on, drawn from the
``SetupEvaluation`` objects of ``studies.class_exclusion`` (matplotlib is loaded only when a figure is
drawn). Where several seeds exist, bars and curves show the mean over seeds with the 95 % t interval."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..methods.class_exclusion import OperatingPoint
from ..stats import seed_interval
from .class_exclusion import METHODS, SetupEvaluation

__all__ = ["Points", "plot_accuracy_vs_macs", "operating_points", "plot_exit_points", "exit_count_rows",
           "plot_class_shares", "class_rate_rows", "plot_remaining_classes"]


def _grid(panels: int, rows: int, width: float, height: float):
    import matplotlib.pyplot as plt
    return plt.subplots(rows, panels, figsize=(width * panels, height), squeeze=False, layout="constrained")


def _mean_and_errors(per_seed: Sequence[Sequence[float]], bounds: tuple[float, float] | None = None
                     ) -> tuple[list[float], list[list[float]] | None]:
    """Mean over seeds of each position and the distances from it to the ends of its 95 % t interval,
    clipped to ``bounds`` (``[below, above]``, as matplotlib's ``xerr``/``yerr`` take them; None for one seed)."""
    columns = list(zip(*per_seed))
    means = [sum(c) / len(c) for c in columns]
    if len(per_seed) < 2:
        return means, None
    ends = [seed_interval(c, bounds)[1:] for c in columns]
    return means, [[max(0.0, m - lo) for m, (lo, _) in zip(means, ends)],
                   [max(0.0, hi - m) for m, (_, hi) in zip(means, ends)]]


def _seed_summary(seeds: int, intervals: str = "interval") -> str:
    """How a figure summarises its training seeds: "mean of 3 seeds, 95 % t interval" (one seed: no interval)."""
    return f"mean of {seeds} seed{'s' if seeds > 1 else ''}" + (f", 95 % t {intervals}" if seeds > 1 else "")


# the library's rule names, for one colour and marker per rule across notebooks
RULE_NAMES = {"BC": "class exclusion", "CR": "confidence baseline (CR)"}


def plot_accuracy_vs_macs(seed_evals: dict[str, Sequence[SetupEvaluation]], seeds: Sequence[int]):
    """Test accuracy against remaining MACs on the common tolerance grid, one panel per set-up and one curve
    per method: at each tolerance the mean over training seeds of cost and accuracy, with their 95 % t
    intervals as bars (one seed: its points), joined in cost order and labelled with the tolerance; stars:
    each network with early exits disabled (mean over seeds); dotted: the plain backbone (mean over seeds)."""
    from .plots import panels_legend, method_style
    fig, axes = _grid(len(seed_evals), 1, 6.2, 6.0)
    many = len(seeds) > 1
    for ax, (name, evs) in zip(axes[0], seed_evals.items()):
        for m in METHODS:
            style = method_style(RULE_NAMES[m])
            costs, cost_err = _mean_and_errors([[100 * p.test.mean_fraction for p in ev.curves[m]] for ev in evs],
                                               (0.0, math.inf))
            accs, acc_err = _mean_and_errors([[100 * p.test.accuracy for p in ev.curves[m]] for ev in evs], (0.0, 100.0))
            order = sorted(range(len(costs)), key=lambda j: costs[j])
            label = f"{m}, {_seed_summary(len(seeds), 'intervals')}" if many else f"{m}, seed {seeds[0]}"
            ax.errorbar([costs[j] for j in order], [accs[j] for j in order], ms=4, capsize=2, elinewidth=0.8,
                        xerr=[[e[j] for j in order] for e in cost_err] if many else None,
                        yerr=[[e[j] for j in order] for e in acc_err] if many else None, label=label, **style)
            for j in order:
                ax.annotate(f"{100 * evs[0].tolerances[j]:g}%", (costs[j], accs[j]), textcoords="offset points",
                            xytext=(3, -9), fontsize=7, color=style["color"])
            plain_cost = sum(ev.no_exit(m)[0] for ev in evs) / len(evs)
            plain_acc = sum(ev.no_exit(m)[1] for ev in evs) / len(evs)
            ax.scatter([100 * plain_cost], [100 * plain_acc], marker="*", s=120, color=style["color"], zorder=5,
                       label=f"{m}, no early exit")
        plain = sum(ev.tests["plain"].exit_accuracies()[-1] for ev in evs) / len(evs)
        ax.axhline(100 * plain, color="gray", ls=":", lw=1, label="plain backbone (mean over seeds)")
        ax.margins(y=0.08)                  # the reference line off the frame
        ax.set(xlabel="remaining MACs (% of the plain backbone)", ylabel="test accuracy (%)",
               title=f"{evs[0].title}, test set\nlabels: validation tolerance")
    panels_legend(fig, columns=len(seed_evals))
    return fig


Points = dict[str, dict[str, dict[str, OperatingPoint]]]   # {label: {set-up: {method: point}}}


def operating_points(evals: dict[str, SetupEvaluation], common: float) -> Points:
    """{label: {set-up: {method: point}}} at the authors' tolerances and at one common tolerance."""
    return {"authors' tolerances": {n: ev.authors for n, ev in evals.items()},
            f"common {100 * common:g} % tolerance": {n: {m: ev.curves[m][ev.tolerances.index(common)] for m in METHODS}
                                                  for n, ev in evals.items()}}


def plot_exit_points(seed_evals: dict[str, Sequence[SetupEvaluation]], common: float):
    """Fig. 4: share of test images leaving at each exit, BC beside CR, one row per operating point (the
    authors' tolerances, one common tolerance): mean over training seeds with the 95 % t interval."""
    from .plots import exit_histogram, panels_legend, method_style
    seeds = len(next(iter(seed_evals.values())))
    per_seed = [operating_points({n: evs[i] for n, evs in seed_evals.items()}, common) for i in range(seeds)]
    fig, axes = _grid(len(seed_evals), len(per_seed[0]), 6.5, 3.5 * len(per_seed[0]))
    for r, label in enumerate(per_seed[0]):
        for ax, (name, evs) in zip(axes[r], seed_evals.items()):
            shares, errors, colors = {}, {}, {}
            for m in METHODS:
                key = f"{m}, {_seed_summary(seeds)}"
                shares[key], errors[key] = _mean_and_errors(
                    [pts[label][name][m].test.exit_shares for pts in per_seed], (0.0, 1.0))
                colors[key] = method_style(RULE_NAMES[m])["color"]
            exit_histogram(ax, shares, [f"{i + 1}" for i in range(evs[0].num_exits - 1)] + ["final"], errors, colors)
            ax.set_ylabel("share of test images (%)")
            ax.set_title(f"{evs[0].title}: {label}")
    panels_legend(fig, columns=1)
    return fig


def exit_count_rows(points: Points) -> list[dict]:
    return [{"set-up": n, "operating point": label, "method": m,
             **{f"exit {i + 1}": c for i, c in enumerate(p.test.exit_counts)}}
            for label, pts in points.items() for n, by_m in pts.items() for m, p in by_m.items()]


def plot_class_shares(seed_evals: dict[str, Sequence[SetupEvaluation]], classes: dict[str, Sequence[str]]):
    """Fig. 5 for the 10-class set-ups: share of each class among the early-exited test images, keyed on
    the predicted class (as the authors count) and on the true class, mean over seeds with the 95 % t
    interval. Returns the figure and the mean shares {(set-up, method, "predicted" | "true"): list}."""
    from .plots import panels_legend, method_style
    ten = {n: evs for n, evs in seed_evals.items() if evs[0].tests["BC"].logits.shape[2] == 10}
    fig, axes = _grid(2, max(len(ten), 1), 6.5, 4.6 * max(len(ten), 1))
    shares, width = {}, 0.4
    for r, (name, evs) in enumerate(ten.items()):
        for ax, key in zip(axes[r], ("predicted", "true")):
            for j, m in enumerate(METHODS):
                mean, errors = _mean_and_errors([ev.class_shares(m)[key].tolist() for ev in evs], (0.0, 100.0))
                shares[(name, m, key)] = mean
                ax.bar([i + (j - 0.5) * width for i in range(10)], mean, width=width, yerr=errors, capsize=2,
                       color=method_style(RULE_NAMES[m])["color"],
                       label=f"{m}, {_seed_summary(len(evs))}")
            ax.axhline(10, color="gray", ls=":", lw=1, label="10 % (equal shares)")
            ax.set_xticks(range(10), classes[name], rotation=90)
            ax.set(ylabel="% of early-exited images", title=f"{evs[0].title}: by {key} class")
    panels_legend(fig, columns=3)
    return fig, shares


def class_rate_rows(evs: Sequence[SetupEvaluation], classes: Sequence[str]) -> list[dict]:
    """Per class, at the authors' tolerance and as means over seeds: Fig. 5's share of the early-exited
    images (by predicted class) beside the share of the class's own images that leave early (by true
    class and by predicted class), which does not follow how often the class is predicted."""
    rows = []
    for c, label in enumerate(classes):
        row = {"class": label}
        for m in METHODS:
            shares = [ev.class_shares(m)["predicted"][c].item() for ev in evs]
            rates = {k: [ev.class_rates(m)[k][c].item() for ev in evs] for k in ("true", "predicted")}
            row[f"{m}: % of early exits (Fig. 5)"] = sum(shares) / len(evs)
            row[f"{m}: % of its true-class images leaving early"] = sum(rates["true"]) / len(evs)
            row[f"{m}: sd over seeds"] = torch.tensor(rates["true"]).std().item() if len(evs) > 1 else float("nan")
            row[f"{m}: % of images predicted as it leaving early"] = sum(rates["predicted"]) / len(evs)
        rows.append(row)
    return rows


def plot_remaining_classes(seed_evals: dict[str, Sequence[SetupEvaluation]]):
    """Mean |R_k| per exit over the images that go on past exit k, at each tolerance of the grid and at
    the authors' tolerance: mean over seeds with the 95 % t interval. Returns the figure and
    {set-up: {label: [mean over seeds per exit]}}."""
    from .plots import panels_legend
    fig, axes = _grid(len(seed_evals), 1, 6, 5.6)
    remaining = {}
    for ax, (name, evs) in zip(axes[0], seed_evals.items()):
        labels = [f"tolerance {100 * t:g} %" for t in evs[0].tolerances] + ["authors' tolerance"]
        points = [ev.curves["BC"] + [ev.authors["BC"]] for ev in evs]   # per seed, in the order of ``labels``
        per_seed = {label: [ev.remaining_classes(pts[i]) for ev, pts in zip(evs, points)]
                    for i, label in enumerate(labels)}
        remaining[name] = {}
        for label, values in per_seed.items():
            classes = float(evs[0].tests["BC"].logits.shape[2])          # at most every class remains
            remaining[name][label], errors = _mean_and_errors(values, (0.0, classes))
            style = {"ls": "--", "color": "k", "marker": "s"} if label == "authors' tolerance" else {"marker": "o"}
            ax.errorbar(range(1, len(values[0]) + 1), remaining[name][label], yerr=errors, capsize=2, label=label,
                        **style)
        ax.set_xticks(range(1, evs[0].num_exits))
        ax.set(xlabel="exit", ylabel="mean $|R_k|$, images going on",
               title=f"{evs[0].title}: BC, test\n{_seed_summary(len(evs), 'intervals')}")
    panels_legend(fig, columns=2)
    return fig, remaining
