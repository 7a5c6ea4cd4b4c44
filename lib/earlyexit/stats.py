"""Uncertainty for the verdicts: a paired bootstrap over test images (two rules on the same network),
a t interval over training seeds (separately trained networks) and a distribution-free interval for a
median (repeated timings, whose noise is neither normal nor symmetric).

A single 10,000-image test accuracy has a standard error near 0.4 points, so a difference of a tenth
of a point between two rules or two trainings decides nothing without one of these intervals.
"""
from __future__ import annotations

import math
import statistics
from typing import Callable, Sequence

import torch

__all__ = ["bootstrap_weighted", "bootstrap_many", "paired_bootstrap", "bootstrap_mean", "seed_interval", "seed_estimate",
           "median_interval", "T_975"]

# two-sided 95% quantiles of Student's t for 1..30 degrees of freedom
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def bootstrap_weighted(stat: Callable[[torch.Tensor], torch.Tensor], n: int, draws: int = 2000, seed: int = 0,
                       level: float = 0.95, chunk: int = 100) -> tuple[float, float, float]:
    """A statistic of n images and its percentile bootstrap interval. ``stat`` maps a [D, n] matrix of
    multiplicities (how often each image is drawn in each of D resamples; all ones for the full set)
    to D values, so per-image columns enter as matrix products, and anything built from several of
    them (a matching, a ratio, a maximum, an AUROC) is recomputed in every resample."""
    return bootstrap_many(lambda w: stat(w)[:, None], n, draws, seed, level, chunk)[0]


def bootstrap_many(stat: Callable[[torch.Tensor], torch.Tensor], n: int, draws: int = 2000, seed: int = 0,
                   level: float = 0.95, chunk: int = 100) -> list[tuple[float, float, float]]:
    """``bootstrap_weighted`` for M statistics computed together from the same resamples: ``stat``
    maps [D, n] multiplicities to [D, M] values. A statistic undefined in a resample (NaN: a cost the
    front never reaches) is left out of that statistic's quantiles."""
    g = torch.Generator().manual_seed(seed)
    values = []
    for start in range(0, draws, chunk):
        idx = torch.randint(0, n, (min(chunk, draws - start), n), generator=g)
        counts = torch.zeros(len(idx), n, dtype=torch.float64).scatter_add_(1, idx, torch.ones(idx.shape, dtype=torch.float64))
        values.append(stat(counts))
    tail = (1 - level) / 2
    bounds = torch.nanquantile(torch.cat(values).double(), torch.tensor([tail, 1 - tail], dtype=torch.float64), dim=0)
    full = stat(torch.ones(1, n, dtype=torch.float64))[0]
    return [(float(v), float(lo), float(hi)) for v, lo, hi in zip(full.tolist(), bounds[0].tolist(), bounds[1].tolist())]


def paired_bootstrap(a: torch.Tensor, b: torch.Tensor, draws: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a - b`` over images and its percentile interval, resampling images (the same
    resample for both, so what the two rules share cancels). ``a``, ``b``: per-image values [N]
    (correctness 0/1, or per-image cost)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two vectors of one length, got {tuple(a.shape)} and {tuple(b.shape)}")
    return bootstrap_mean(a - b, draws, seed, level)


def bootstrap_mean(values: torch.Tensor, draws: int = 2000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float, float]:
    """Mean of per-image ``values`` and its percentile bootstrap interval."""
    values = torch.as_tensor(values, dtype=torch.float64)
    return bootstrap_weighted(lambda w: w @ values / len(values), len(values), draws, seed, level)


def seed_interval(values: Sequence[float], bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """Mean over training seeds and its 95% t interval (needs at least 2 seeds). ``bounds``: the quantity's
    valid range (an accuracy in [0, 100] %), to which the interval is clipped: with 3 seeds a t interval
    easily passes it, and a bound is the honest end there."""
    n = len(values)
    if n < 2:
        raise ValueError("an interval over seeds needs at least 2 seeds")
    if n - 1 > len(T_975):
        raise ValueError(f"at most {len(T_975) + 1} seeds supported")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = T_975[n - 2] * sd / math.sqrt(n)
    if bounds is None:
        return mean, mean - half, mean + half
    return mean, max(bounds[0], mean - half), min(bounds[1], mean + half)


def seed_estimate(values: Sequence[float], bounds: tuple[float, float] | None = None
                  ) -> tuple[float, tuple[float, float] | None]:
    """The estimate over training seeds: their mean with its 95% t interval (``seed_interval``, clipped to
    ``bounds``), or the one seed's value and no interval, since one training says nothing about retraining."""
    if len(values) == 1:
        return float(values[0]), None
    mean, lo, hi = seed_interval(values, bounds)
    return mean, (lo, hi)


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Median of ``values`` and the distribution-free interval for the population median between two
    order statistics (the j-th smallest and the j-th largest, j as large as keeps the coverage, from the
    binomial(n, 1/2) count of values below the median, at least ``level``). It assumes only independent
    draws of one distribution, which suits wall-clock ratios with a long tail of slow calls. The bounds are
    NaN when n is too small for the level (under 6 values at 95%)."""
    ordered = sorted(float(v) for v in values)
    n = len(ordered)
    if n == 0:
        raise ValueError("a median needs at least one value")
    median = statistics.median(ordered)
    # coverage of [x_(j), x_(n+1-j)] is 1 - 2 P(B <= j - 1), B ~ binomial(n, 1/2)
    tail, j = 0.0, 0
    while j < n // 2:
        tail += math.comb(n, j) / 2 ** n
        if 1 - 2 * tail < level:
            break
        j += 1
    if j == 0:
        return median, float("nan"), float("nan")
    return median, ordered[j - 1], ordered[n - j]
