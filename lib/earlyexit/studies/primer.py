"""Runs of notebook 00_primer, and the few computations its sections share.

The primer's network is the shared reference network in its ``multi`` form (``reference.py``): a
linear exit after every stage, trained jointly, one training per seed. Notebooks 01, 03 and 04 find
the same trainings in the cache, so the seed-to-seed spread reported here is the noise floor of
their networks too. The tutorial sections work on the first seed; the spread section on all.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt

from ..evaluate import ThresholdSweep, shared_threshold_sweep
from ..macs import MacTable
from ..outputs import CachedOutputs
from ..policies import MaxProbability
from ..stats import seed_interval
from ..train import RunSpec
from .reference import reference_runs

__all__ = ["plan", "THRESHOLD_GRID", "maxprob_choice", "seed_spread", "spread_sentence", "plot_seed_spread"]

# thresholds tried for max-softmax (and entropy): 0, 0.025, ..., 1
THRESHOLD_GRID = [i / 40 for i in range(41)]


def plan(seeds: list[int], backbone: str, width: float, dataset: str, train_size: int | None, val_size: int,
         test_size: int | None, epochs: int, batch_size: int, lr: float, weight_decay: float, bf16: bool,
         channels_last: bool, **_) -> list[RunSpec]:
    """The reference network in its multi-exit form, one run per training seed (the first seed first)."""
    return reference_runs("multi", seeds, backbone=backbone, width=width, dataset=dataset, train_size=train_size,
                          val_size=val_size, test_size=test_size, epochs=epochs, batch_size=batch_size, lr=lr,
                          weight_decay=weight_decay, bf16=bf16, channels_last=channels_last)


def maxprob_choice(val: CachedOutputs, test: CachedOutputs, macs: MacTable, tolerance: float,
                   grid: Sequence[float] = THRESHOLD_GRID) -> tuple[ThresholdSweep, dict]:
    """The max-softmax sweep over one shared threshold and its operating point: the cheapest threshold
    whose *validation* accuracy is within ``tolerance`` of the final exit's validation accuracy. Test
    labels never enter the choice (tests/test_primer.py poisons them to check)."""
    never = (0.0,) * (val.num_exits - 1)  # a template: the sweep sets the thresholds
    sweep = shared_threshold_sweep(val, test, MaxProbability(never), grid, macs)
    return sweep, sweep.select(reference=val.exit_accuracies()[-1], tolerance=tolerance)


def seed_spread(per_seed: dict[int, Sequence[float]], label: str = "exit",
                bounds: tuple[float, float] | None = (0.0, 1.0)) -> list[dict]:
    """One row per exit: each seed's value, the mean, the standard deviation over seeds and the 95%
    t interval of the mean (``stats.seed_interval``: ``low``, ``high``, clipped to ``bounds``, by default
    those of an accuracy as a fraction). ``per_seed`` maps seed -> one value per exit."""
    seeds = list(per_seed)
    if len(seeds) < 2:
        raise ValueError("a spread over seeds needs at least 2 seeds")
    exits = len(per_seed[seeds[0]])
    rows = []
    for k in range(exits):
        values = [float(per_seed[s][k]) for s in seeds]
        mean, lo, hi = seed_interval(values, bounds)
        sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        name = f"{label} {k + 1}" if k < exits - 1 else f"{label} {k + 1} (final)"
        rows.append({label: name, **{f"seed {s}": v for s, v in zip(seeds, values)},
                     "mean": mean, "sd": sd, "low": lo, "high": hi})
    return rows


def spread_sentence(rows: list[dict]) -> str:
    """What a reader takes from the spread table, with its numbers (in points of accuracy)."""
    final, sds = rows[-1], [r["sd"] for r in rows]
    seeds = sum(1 for key in final if key.startswith("seed "))
    widest = max(range(len(rows)), key=lambda k: sds[k])
    return (f"Over {seeds} training seeds the final exit reaches {100 * final['mean']:.2f}% on average "
            f"(95% interval {100 * final['low']:.2f}-{100 * final['high']:.2f}%, standard "
            f"deviation {100 * final['sd']:.2f} points); the standard deviation per exit ranges from "
            f"{100 * min(sds):.2f} to {100 * max(sds):.2f} points (largest at exit {widest + 1}). A difference "
            f"between two separately trained networks smaller than about twice that is within training noise.")


def plot_seed_spread(ax: plt.Axes, rows: list[dict], fractions: Sequence[float]) -> plt.Axes:
    """Each exit's test accuracy (%) against its cumulative MACs: every seed faint, the mean over seeds
    with its 95% t interval as bars (``seed_spread``'s rows, accuracies as fractions)."""
    seeds = [key for key in rows[0] if key.startswith("seed ")]
    for j, key in enumerate(seeds):
        ax.plot(fractions, [100 * r[key] for r in rows], "o", color="0.6", ms=3, alpha=0.7,
                label="one training seed" if j == 0 else None)
    mean = [100 * r["mean"] for r in rows]
    ax.errorbar(fractions, mean, yerr=[[m - 100 * r["low"] for m, r in zip(mean, rows)],
                                       [100 * r["high"] - m for m, r in zip(mean, rows)]],
                fmt="o-", color="k", ms=4, capsize=3, label=f"mean of {len(seeds)} seeds, 95% t interval")
    for k, (x, y) in enumerate(zip(fractions, mean)):
        ax.annotate(str(k + 1), (x, y), textcoords="offset points", xytext=(-4, 6), fontsize=8)
    ax.set(xlabel="cumulative MACs / plain backbone (exit k labelled k)", ylabel="test accuracy (%)")
    ax.legend(frameon=True, loc="lower right")
    return ax
