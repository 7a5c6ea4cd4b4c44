"""The baselines EENet is compared with, each fitted on validation outputs under the same budget.

Ilhan et al. (arXiv 2301.07099) compare EENet with "existing representative early exit techniques"; the
authors' released code (git-disl/EENet, ``--edm``) names them: max probability (MSDNet) and entropy
(BranchyNet) thresholds handing out a geometric exit distribution planned to cost the budget, and a
PABEE-like patience rule. ``fit_geometric`` and ``fit_patience`` are those; ``fit_searched`` gives a
threshold rule a tuning budget like EENet's (random threshold vectors, the best within budget on
validation), an extra rival that is not the paper's. Each returns a ``methods.eenet.BudgetedFit`` and reads
only ``run.outputs("val")``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..evaluate import evaluate_policy, random_thresholds, select, sweep_thresholds
from ..policies import Entropy, MaxProbability, Patience, normalised_entropy
from .eenet import BudgetedFit, RunLike, quantile_thresholds, validation_outputs

__all__ = ["geometric_shares", "fit_geometric", "fit_searched", "fit_patience"]


def geometric_shares(costs: Sequence[float], budget: float) -> list[float]:
    """Exit shares P_k proportional to gamma^k with planned cost sum_k P_k c_k = budget, gamma found by
    bisection on log gamma (MSDNet's budgeted protocol without the one-step overshoot of the released
    ``dynamic_evaluate``, ``utils/predict_utils.py``)."""
    c = torch.tensor(costs, dtype=torch.float64)
    if not c[0] <= budget <= c[-1]:
        raise ValueError(f"budget {budget:.4f} outside [{c[0]:.4f}, {c[-1]:.4f}], the first and last exit's cost")
    k = torch.arange(len(c), dtype=torch.float64)

    def shares(log_gamma: float) -> torch.Tensor:
        return torch.softmax(k * log_gamma, 0)

    lo, hi = -50.0, 50.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if (shares(mid) * c).sum() < budget else (lo, mid)
    return shares((lo + hi) / 2).tolist()


_CONFIDENCE = {
    "maxprob": (lambda z: torch.softmax(z.float(), 1).max(1).values, MaxProbability, 1.0),
    "entropy": (lambda z: -normalised_entropy(z), Entropy, -1.0),
}


def fit_geometric(run: RunLike, budget: float, score: str = "maxprob") -> BudgetedFit:
    """Baseline: a geometric exit distribution planned to cost ``budget``, handed out by validation
    quantiles of max probability (MSDNet style) or of negative normalised entropy (BranchyNet style)."""
    if score not in _CONFIDENCE:
        raise ValueError(f"score must be one of {sorted(_CONFIDENCE)}, got {score!r}")
    val = validation_outputs(run)
    costs = run.macs.exit_fractions
    shares = geometric_shares(costs, budget)
    measure, policy_cls, sign = _CONFIDENCE[score]
    conf = torch.stack([measure(z) for z in val.logits])
    # Entropy exits when H <= t, i.e. -H >= -t: negating is exact, so val assignments match the policy.
    policy = policy_cls([sign * t for t in quantile_thresholds(conf, shares)])
    result = evaluate_policy(val, policy, run.macs)
    name = {"maxprob": "max-prob (MSDNet)", "entropy": "entropy (BranchyNet)"}[score]
    return BudgetedFit(name, budget, policy, shares, sum(s * c for s, c in zip(shares, costs)),
                       result.accuracy, result.mean_fraction)


def fit_searched(run: RunLike, budget: float, score: str = "maxprob", vectors: int = 2000, seed: int = 0) -> BudgetedFit:
    """Baseline with a tuning budget like EENet's: ``vectors`` random per-exit thresholds drawn at
    validation quantiles of the confidence (plus 'never exit'), and the most accurate on validation
    among those whose validation cost is within ``budget`` (the cheapest when none is)."""
    if score not in _CONFIDENCE:
        raise ValueError(f"score must be one of {sorted(_CONFIDENCE)}, got {score!r}")
    val = validation_outputs(run)
    measure, policy_cls, _ = _CONFIDENCE[score]
    conf = torch.stack([measure(z) for z in val.logits[:-1]])
    rule = policy_cls((0.0,) * (val.num_exits - 1))
    # validation on both sides of the sweep: the search reads nothing else
    cloud = sweep_thresholds(val, val, rule, rule.threshold_of(random_thresholds(vectors, conf, "quantile", seed)),
                             run.macs)
    i = select(cloud.val_cost, cloud.val_accuracy, budget=budget)
    policy = cloud.policy(int(cloud.val_cost.argmin()) if i is None else i)
    result = evaluate_policy(val, policy, run.macs)
    name = {"maxprob": "max-prob, searched", "entropy": "entropy, searched"}[score]
    return BudgetedFit(name, budget, policy, result.exit_shares, result.mean_fraction, result.accuracy,
                       result.mean_fraction)


def fit_patience(run: RunLike, budget: float) -> BudgetedFit | None:
    """Baseline: PABEE's patience rule, which has no budget knob, at the patience 1..K-1 most accurate on
    validation among those whose validation cost is within ``budget``; None when none is."""
    val = validation_outputs(run)
    results = {p: evaluate_policy(val, Patience(p), run.macs) for p in range(1, val.num_exits)}
    inside = [p for p, r in results.items() if r.mean_fraction <= budget]
    if not inside:
        return None
    best = max(inside, key=lambda p: (results[p].accuracy, -p))   # ties: the smaller patience, the cheaper
    r = results[best]
    return BudgetedFit("patience (PABEE)", budget, Patience(best), r.exit_shares, r.mean_fraction, r.accuracy,
                       r.mean_fraction)
