"""A rule's operating points and the oracle bound: comparing exit rules on equal terms on any network.

A rule's candidates (threshold vectors, policies) are evaluated on the validation split; its front is the
validation Pareto front of those candidates, read on test row by row (``Front``), so that any statistic of
the front (accuracy at a cost, the cost of an accuracy) gets a bootstrap interval by resampling test images
(``stats.bootstrap_many``).

- ``threshold_front``: a per-exit threshold rule given ``vectors`` random per-exit vectors drawn at
  validation quantiles of its own per-row score, plus ``grid`` thresholds shared by every exit and "never
  exit" (``score_vectors``); ``policy_front``: any list of candidate policies (``patience_candidates``).
- ``oracle_curve``: the best any exit policy can do with given heads. A row is right exactly when it
  leaves at an exit whose prediction is right, so at a mean cost the most rows are right when the rows are
  served in order of the cost of their first right exit; a row that no exit gets right leaves at the first
  exit, where it costs least. The end of the curve is the oracle point.
- ``fixed_cost_rows`` and ``reach_rows``: test accuracy at chosen normalised costs, interpolated along a
  front, with the share of the oracle's saving at that accuracy; the cost a front needs to come within a
  tolerance of the most accurate final exit among the networks compared.

Costs are MACs over the plain backbone's (``MacTable.exit_fractions``). Notebook 05 compares every rule of
the library with these on the reference network; ``methods.every_rule`` on a network of your own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np
import torch

from .evaluate import evaluate_policy, exit_scores, pareto_front, random_thresholds, sweep_thresholds, \
    threshold_outcomes
from .macs import MacTable
from .outputs import CachedOutputs
from .policies import ExitPolicy, Patience, PerExitThresholds
from .stats import bootstrap_many

__all__ = ["RunLike", "Front", "score_vectors", "threshold_front", "policy_front", "patience_candidates",
           "first_right_cost", "oracle_curve", "oracle_cost", "curve_accuracy", "accuracy_band", "curve_cost_to_reach",
           "fixed_cost_rows", "final_exits", "best_accuracy", "reach_rows", "nearest_point"]


class RunLike(Protocol):
    macs: MacTable

    def outputs(self, split: str) -> CachedOutputs: ...


@dataclass
class Front:
    """One rule's operating points, chosen on validation (its Pareto front there, by increasing
    validation cost), with what each does to every test row."""

    method: str
    network: str
    tuning: str                   # how the candidates were made and chosen
    candidates: int               # configurations evaluated on validation
    policies: list[ExitPolicy]
    val_cost: torch.Tensor        # [P] mean cost on validation
    val_accuracy: torch.Tensor    # [P]
    test_correct: torch.Tensor    # [P, N] bool
    test_cost: torch.Tensor       # [P, N] float64, cost paid by each row
    exit_correct: torch.Tensor    # [K, N] bool: the rule's prediction at each exit is right (test)
    exit_costs: list[float]       # cost of leaving at each exit

    @property
    def final_correct(self) -> torch.Tensor:
        return self.exit_correct[-1]

    def curve(self, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(cost, accuracy) of every point on test, [D, P] for row multiplicities ``weights`` [D, N]
        (a bootstrap resample per row of ``weights``; None: the test set itself, D = 1)."""
        n = self.test_correct.shape[1]
        w = torch.ones(1, n, dtype=torch.float64) if weights is None else weights
        total = w.sum(1, keepdim=True)
        return w @ self.test_cost.T / total, w @ self.test_correct.double().T / total

    def oracle(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The oracle curve (cost, accuracy) of this front's network on test, [1, M+1] (``oracle_curve``)."""
        return oracle_curve(first_right_cost(self.exit_correct, self.exit_costs), self.exit_costs[0])

    def points(self) -> list[dict]:
        """Each point on both splits (accuracy and cost as fractions)."""
        cost, acc = self.curve()
        return [{"method": self.method, "val_cost": float(vc), "val_accuracy": float(va), "test_cost": float(tc),
                 "test_accuracy": float(ta)}
                for vc, va, tc, ta in zip(self.val_cost, self.val_accuracy, cost[0], acc[0])]


# ---------------------------------------------------------------- candidates and fronts
def score_vectors(score: torch.Tensor, vectors: int, grid: int, seed: int) -> torch.Tensor:
    """Cuts on a per-row score [K-1, N] (a row leaves exit k alone when its score reaches the cut):
    ``vectors`` random per-exit quantile vectors, ``grid`` cuts shared by all exits at evenly spaced
    quantiles of the pooled score, and +inf ('never exit'). [T, K-1]."""
    pooled = score.flatten().double()
    shared = torch.quantile(pooled[torch.isfinite(pooled)], torch.linspace(0, 1, grid, dtype=torch.float64))
    cloud = random_thresholds(vectors, score, "quantile", seed)     # ends with the 'never' row
    return torch.cat([shared.float()[:, None].expand(-1, score.shape[0]), cloud])


def threshold_front(method: str, network: str, run: RunLike, rule: PerExitThresholds, vectors: int, grid: int,
                    seed: int = 0) -> Front:
    """A per-exit threshold rule (``rule`` is a template): its candidates on validation, the Pareto
    front there, the front's points on test."""
    val, test = run.outputs("val"), run.outputs("test")
    cuts = score_vectors(exit_scores(val, rule).confidence, vectors, grid, seed)
    thresholds = rule.threshold_of(cuts)
    sweep = sweep_thresholds(val, val, rule, thresholds, run.macs)   # validation only: test is read below
    front = pareto_front(sweep.val_cost, sweep.val_accuracy)
    correct, cost = threshold_outcomes(test, rule, thresholds[front], run.macs)
    scores = exit_scores(test, rule)
    return Front(method, network, f"{len(cuts)} threshold vectors ({vectors} random at validation quantiles, "
                 f"{grid} shared, never), validation Pareto front", len(cuts), [sweep.policy(i) for i in front],
                 sweep.val_cost[front], sweep.val_accuracy[front], correct, cost, scores.prediction == scores.labels,
                 list(run.macs.exit_fractions))


def policy_front(method: str, network: str, run: RunLike, policies: Sequence[ExitPolicy], tuning: str) -> Front:
    """Any rules (one policy per candidate): each evaluated on validation, the Pareto front there read
    on test. The per-exit predictions of the oracle are the heads' argmax."""
    val, test = run.outputs("val"), run.outputs("test")
    results = [evaluate_policy(val, p, run.macs) for p in policies]
    cost = torch.tensor([r.mean_fraction for r in results], dtype=torch.float64)
    acc = torch.tensor([r.accuracy for r in results], dtype=torch.float64)
    front = pareto_front(cost, acc)
    fractions = torch.tensor(run.macs.exit_fractions, dtype=torch.float64)
    tests = [evaluate_policy(test, policies[i], run.macs) for i in front]
    return Front(method, network, f"{len(policies)} {tuning}, validation Pareto front", len(policies),
                 [policies[i] for i in front], cost[front], acc[front],
                 torch.stack([r.prediction == test.labels for r in tests]),
                 torch.stack([fractions[r.exit_index] for r in tests]), test.logits.argmax(2) == test.labels,
                 list(run.macs.exit_fractions))


def patience_candidates(num_exits: int) -> list[Patience]:
    """Every patience the network allows (``num_exits``: nobody leaves before the final exit)."""
    return [Patience(p) for p in range(1, num_exits + 1)]


# ---------------------------------------------------------------- the oracle
def first_right_cost(exit_correct: torch.Tensor, exit_costs: Sequence[float]) -> torch.Tensor:
    """Per row, the cost of the first exit whose prediction is right; +inf when none is. [N]"""
    costs = torch.tensor(list(exit_costs), dtype=torch.float64)
    right = exit_correct.bool()
    first = right.to(torch.uint8).argmax(0)
    return torch.where(right.any(0), costs[first], torch.full_like(costs[first], torch.inf))


def oracle_curve(first_cost: torch.Tensor, cheapest: float, weights: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The oracle's (cost, accuracy) as rows are served in order of ``first_cost`` [N] (rows not served
    leave at the cheapest exit, cost ``cheapest``), [D, M+1] for M servable rows: the first point serves
    nobody, the last every servable row. ``weights`` [D, N]: row multiplicities (None: D = 1)."""
    order = torch.argsort(first_cost, stable=True)
    servable = order[torch.isfinite(first_cost[order])]
    w = torch.ones(1, len(first_cost), dtype=torch.float64) if weights is None else weights
    total = w.sum(1, keepdim=True)
    ws = w[:, servable]
    extra = (first_cost[servable] - cheapest)[None] * ws            # what serving a row adds to the cost
    zero = torch.zeros(len(w), 1, dtype=torch.float64)
    cost = cheapest + torch.cat([zero, extra.cumsum(1)], 1) / total
    acc = torch.cat([zero, ws.cumsum(1)], 1) / total
    return cost, acc


def oracle_cost(cost: torch.Tensor, accuracy: torch.Tensor, target: float | torch.Tensor) -> torch.Tensor:
    """The oracle's least cost at accuracy ``target`` (per row of a [D, M] curve; NaN above its reach)."""
    target = torch.as_tensor(target, dtype=torch.float64).reshape(-1).expand(len(cost))
    out = torch.full((len(cost),), float("nan"), dtype=torch.float64)
    for d in range(len(cost)):
        if target[d] <= accuracy[d, -1]:
            out[d] = float(np.interp(float(target[d]), accuracy[d].numpy(), cost[d].numpy()))
    return out


# ---------------------------------------------------------------- reading a front
def curve_accuracy(cost: torch.Tensor, accuracy: torch.Tensor, at: Sequence[float]) -> torch.Tensor:
    """Accuracy at each cost of ``at`` on each row of [D, P] curves, [D, A]: linear between the points
    sorted by cost (a mixture of the two neighbouring policies achieves it); beyond the costliest point
    its accuracy (spending less is allowed); NaN below the cheapest."""
    out = torch.empty(len(cost), len(at), dtype=torch.float64)
    for d in range(len(cost)):
        order = torch.argsort(cost[d], stable=True)
        x, y = cost[d, order].numpy(), accuracy[d, order].numpy()
        out[d] = torch.from_numpy(np.interp(np.asarray(at, dtype=np.float64), x, y, left=float("nan"),
                                            right=float(y[-1])))
    return out


def accuracy_band(front: Front, at: Sequence[float], draws: int = 1000, seed: int = 0) -> list[tuple[float, float, float]]:
    """The front's test accuracy at each cost of ``at`` with its 95% bootstrap interval over test images."""
    return bootstrap_many(lambda w: curve_accuracy(*front.curve(w), at), front.test_correct.shape[1], draws, seed)


def curve_cost_to_reach(cost: torch.Tensor, accuracy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The least cost at which each [D, P] curve (points sorted by cost, linear between them) reaches
    ``target`` [D]; NaN when it never does."""
    out = torch.full((len(cost),), float("nan"), dtype=torch.float64)
    for d in range(len(cost)):
        order = torch.argsort(cost[d], stable=True)
        x, y, t = cost[d, order], accuracy[d, order], float(target[d])
        hit = torch.nonzero(y >= t).flatten()
        if len(hit) == 0:
            continue
        i = int(hit[0])
        if i == 0 or y[i] == y[i - 1]:
            out[d] = x[i]
        else:
            out[d] = x[i - 1] + (t - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1])
    return out


def _saving_share(cost: float, oracle_at_accuracy: float) -> float:
    """Share of the oracle's saving (1 - its cost at the same accuracy) that a point at ``cost`` saves."""
    if not np.isfinite(oracle_at_accuracy) or oracle_at_accuracy >= 1.0:
        return float("nan")
    return (1.0 - cost) / (1.0 - oracle_at_accuracy)


def fixed_cost_rows(front: Front, costs: Sequence[float], draws: int = 1000, seed: int = 0) -> list[dict]:
    """Per cost: the front's test accuracy there (interpolated) with its 95% bootstrap interval over
    test images, the oracle's least cost at that accuracy and the share of the oracle's saving the
    rule achieves (1 - cost) / (1 - oracle cost)."""
    stats = accuracy_band(front, costs, draws, seed)
    oc, oa = front.oracle()
    rows = []
    for c, (acc, lo, hi) in zip(costs, stats):
        o = float(oracle_cost(oc, oa, acc)[0]) if np.isfinite(acc) else float("nan")
        rows.append({"method": front.method, "network": front.network, "cost": c, "accuracy": acc, "low": lo,
                     "high": hi, "oracle cost at this accuracy": o, "share of oracle saving": _saving_share(c, o)})
    return rows


def final_exits(fronts: Mapping[str, Front]) -> torch.Tensor:
    """[R, N] per-row test correctness of the final exit of each distinct network among ``fronts``."""
    finals = {f.network: f.final_correct for f in fronts.values()}
    return torch.stack(list(finals.values()))


def best_accuracy(reference: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """[D] accuracy of the most accurate row of ``reference`` ([R, N] per-row correctness) under each
    of the row multiplicities ``weights`` ([D, N]; None: the test set itself, D = 1)."""
    ref = reference.double()
    w = torch.ones(1, ref.shape[1], dtype=torch.float64) if weights is None else weights
    return (w @ ref.T / w.sum(1, keepdim=True)).max(1).values


def reach_rows(front: Front, within: float, reference: torch.Tensor | None = None, draws: int = 1000,
               seed: int = 0) -> dict:
    """The cost at which the front comes within ``within`` (a fraction, 0.01 = one point) of the most
    accurate of the ``reference`` final exits ([R, N] per-row correctness; default: the front's own
    network's), with a 95% bootstrap interval (the reference resampled with the same rows)."""
    n = front.test_correct.shape[1]
    ref = front.final_correct[None] if reference is None else reference

    def stat(w):
        return curve_cost_to_reach(*front.curve(w), best_accuracy(ref, w) - within)[:, None]

    (cost, lo, hi), = bootstrap_many(stat, n, draws, seed)
    best = float(best_accuracy(ref)[0])
    return {"method": front.method, "network": front.network,
            "final-exit accuracy": float(front.final_correct.double().mean()), "reference accuracy": best,
            "target accuracy": best - within, "cost": cost, "low": lo, "high": hi}


def nearest_point(front: Front, cost: float) -> int:
    """Index of the front's point whose test cost is nearest ``cost``."""
    test_cost, _ = front.curve()
    return int((test_cost[0] - cost).abs().argmin())
