"""Evaluate exit policies on cached outputs; sweep thresholds on validation, report on test.

MACs follow macs.py: a sample that stops at exit k costs ``MacTable.exit_macs[k]``; fractions are
relative to the plain backbone.

The one threshold machinery of the project lives here, and every method uses it:

- **Comparison convention.** A confidence *reaches* a threshold when ``confidence >= threshold``.
  Every per-exit threshold rule (``policies.PerExitThresholds``: max-softmax, entropy via its negation,
  E2CM's class-mean pseudo-probability) decides this way, offline and in the real forward alike.
- ``sweep_thresholds`` evaluates many threshold vectors [T, K-1] at once on validation and test
  (a shared-threshold grid is the special case of identical columns; E2CM's random cloud is another).
- ``pareto_front`` (tensor-based, 10^4+ points), ``convex_hull`` of that front, and one selection
  helper, ``select``, in both directions: the cheapest point within an accuracy tolerance of a
  reference, or the most accurate point within a cost budget. Selection reads validation columns;
  the test columns of the selected point are the honest estimate.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch

from . import rehearsal
from .macs import MacTable
from .outputs import CachedOutputs
from .policies import ExitPolicy, PerExitThresholds, run_exit_policy

__all__ = ["PolicyResult", "evaluate_policy", "exit_table", "compare_real_and_offline", "ExitScores",
           "exit_scores", "random_thresholds", "threshold_outcomes", "ThresholdSweep", "sweep_thresholds", "shared_threshold_sweep",
           "pareto_front", "convex_hull", "select"]


# ---------------------------------------------------------------- one policy, exactly
@dataclass
class PolicyResult:
    accuracy: float
    mean_macs: float          # MACs per sample
    mean_fraction: float      # mean MACs / plain-backbone MACs
    exit_counts: list[int]    # samples per exit, final included
    per_class_exit_counts: torch.Tensor  # [C, K] by true class
    prediction: torch.Tensor
    exit_index: torch.Tensor

    @property
    def exit_shares(self) -> list[float]:
        n = sum(self.exit_counts)
        return [c / n for c in self.exit_counts]

    def summary(self) -> dict:
        return {"accuracy": self.accuracy, "mean_MMACs": self.mean_macs / 1e6,
                "fraction_of_backbone": self.mean_fraction, "exit_shares": self.exit_shares}


def evaluate_policy(outputs: CachedOutputs, policy: ExitPolicy, macs: MacTable) -> PolicyResult:
    """The offline twin of MultiExitNet.early_exit: same driver, cached logits instead of stages."""
    if outputs.num_exits != len(macs.exit_macs):
        raise ValueError(f"outputs have {outputs.num_exits} exits but the MAC table has {len(macs.exit_macs)}")

    def outputs_at(k, active, keep):
        gate = None if outputs.gates is None else outputs.gates[k, active]
        return outputs.logits[k, active], gate

    prediction, exit_index = run_exit_policy(policy, outputs.num_exits, len(outputs), outputs_at)
    costs = torch.tensor(macs.exit_macs, dtype=torch.float64)[exit_index]
    k, c = outputs.num_exits, outputs.logits.shape[2]
    per_class = torch.zeros(c, k, dtype=torch.long)
    per_class.index_put_((outputs.labels, exit_index), torch.ones_like(exit_index), accumulate=True)
    return PolicyResult(
        accuracy=(prediction == outputs.labels).float().mean().item(),
        mean_macs=costs.mean().item(), mean_fraction=costs.mean().item() / macs.backbone_macs,
        exit_counts=torch.bincount(exit_index, minlength=k).tolist(),
        per_class_exit_counts=per_class, prediction=prediction, exit_index=exit_index)


def exit_table(outputs: CachedOutputs, macs: MacTable) -> list[dict]:
    """Accuracy of each exit taken alone (every sample forced out there) beside its cost."""
    return [{"exit": k + 1, "accuracy": acc, "MMACs": m / 1e6, "fraction of backbone": f}
            for k, (acc, m, f) in enumerate(zip(outputs.exit_accuracies(), macs.exit_macs, macs.exit_fractions))]


@torch.no_grad()
def compare_real_and_offline(net, loader, outputs: CachedOutputs, policy: ExitPolicy, macs: MacTable) -> dict:
    """Run the real early-exit forward over a split and count agreement with the offline evaluator."""
    offline = evaluate_policy(outputs, policy, macs)
    preds, exits, spent = [], [], []
    for x, _ in loader:
        r = net.early_exit(x, policy, macs.exit_macs)
        preds.append(r.prediction)
        exits.append(r.exit_index)
        spent.append(r.macs)
    pred, exit_index, spent = torch.cat(preds), torch.cat(exits), torch.cat(spent)
    return {"images": len(pred), "same_prediction": int((pred == offline.prediction).sum()),
            "same_exit": int((exit_index == offline.exit_index).sum()),
            "real_mean_MMACs": spent.mean().item() / 1e6, "offline_mean_MMACs": offline.mean_macs / 1e6,
            "real_accuracy": (pred == outputs.labels).float().mean().item(), "offline_accuracy": offline.accuracy}


# ---------------------------------------------------------------- many threshold vectors at once
@dataclass
class ExitScores:
    """What a per-exit threshold rule sees: confidence at each early exit [K-1, N], prediction at
    every exit [K, N], and the labels predictions are scored against [N]."""

    confidence: torch.Tensor
    prediction: torch.Tensor
    labels: torch.Tensor

    def exit_accuracies(self) -> list[float]:
        return (self.prediction == self.labels).float().mean(1).tolist()


def exit_scores(outputs: CachedOutputs, rule: PerExitThresholds, labels: torch.Tensor | None = None) -> ExitScores:
    """Confidences and predictions of ``rule`` at every exit, computed once for a whole sweep.
    ``labels`` replaces the true labels (E2CM's unsupervised variant scores against clusters)."""
    k = outputs.num_exits
    gate = (lambda j: None) if outputs.gates is None else (lambda j: outputs.gates[j])  # noqa: E731
    conf = torch.stack([rule.confidence(j, outputs.logits[j], gate(j)) for j in range(k - 1)])
    pred = torch.stack([rule.prediction(j, outputs.logits[j]) for j in range(k)])
    return ExitScores(conf, pred, outputs.labels if labels is None else labels)


def random_thresholds(n: int, confidence: torch.Tensor, space: str = "quantile", seed: int = 0) -> torch.Tensor:
    """``n`` random per-exit thresholds [n, K-1] on a confidence [K-1, N], plus 'never exit' last.

    'uniform' draws t ~ U(0,1) per exit, as the E2CM authors' demo does; 'quantile' draws u ~ U(0,1)
    and takes the u-quantile of that exit's confidence, which searches the same family of rules but
    spreads the draws where the confidences lie (class-mean pseudo-probabilities sit in a narrow band)."""
    if space not in ("uniform", "quantile"):
        raise ValueError(f"space must be 'uniform' or 'quantile', got {space!r}")
    n = rehearsal.cap(n, rehearsal.THRESHOLD_VECTORS)
    g = torch.Generator().manual_seed(seed)
    j = confidence.shape[0]
    u = torch.rand(n, j, generator=g, dtype=torch.float64)
    if space == "uniform":
        t = u.float()
    else:
        ordered = confidence.sort(1).values
        pos = (u * (ordered.shape[1] - 1)).round().long()
        t = torch.stack([ordered[k][pos[:, k]] for k in range(j)], 1).float()
    return torch.cat([t, torch.full((1, j), float("inf"))])


def _exit_points(confidence: torch.Tensor, cuts: torch.Tensor) -> torch.Tensor:
    """Exit index [T, N]: the first exit whose confidence reaches its cut, the final one otherwise."""
    fire = confidence[None] >= cuts[:, :, None]
    fire = torch.cat([fire, torch.ones(len(cuts), 1, fire.shape[2], dtype=torch.bool)], 1)
    return fire.to(torch.uint8).argmax(1)


def _outcomes(scores: ExitScores, costs: torch.Tensor, cuts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per threshold vector and row: right or wrong [T, N] and the cost paid [T, N]."""
    at = _exit_points(scores.confidence, cuts)
    correct = scores.prediction == scores.labels
    return correct[at, torch.arange(correct.shape[1])], costs[at]


def _accuracy_and_cost(scores: ExitScores, costs: torch.Tensor, cuts: torch.Tensor,
                       chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    accs, spent = [], []
    for c in cuts.split(chunk):
        right, paid = _outcomes(scores, costs, c)
        accs.append(right.double().mean(1))
        spent.append(paid.mean(1))
    return torch.cat(accs), torch.cat(spent)


def threshold_outcomes(outputs: CachedOutputs, rule: PerExitThresholds, thresholds: torch.Tensor,
                       macs: MacTable) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row outcomes of threshold vectors [T, K-1] (the rule's own unit): correct [T, N] (bool) and
    cost [T, N] (fraction of the plain backbone), for bootstraps over rows."""
    thresholds = torch.as_tensor(thresholds, dtype=torch.float32)
    costs = torch.tensor(macs.exit_fractions, dtype=torch.float64)
    return _outcomes(exit_scores(outputs, rule), costs, rule.cut(thresholds))


@dataclass
class ThresholdSweep:
    """Threshold vectors [T, K-1] (in the rule's own unit) with accuracy and cost (fraction of the
    plain backbone) on validation and test. Fronts and selections read the validation columns."""

    rule: PerExitThresholds
    thresholds: torch.Tensor
    val_accuracy: torch.Tensor
    val_cost: torch.Tensor
    test_accuracy: torch.Tensor
    test_cost: torch.Tensor

    def __len__(self) -> int:
        return len(self.thresholds)

    def policy(self, i: int) -> PerExitThresholds:
        return replace(self.rule, thresholds=tuple(self.thresholds[i].tolist()))

    def point(self, i: int) -> dict:
        return {"thresholds": self.thresholds[i].tolist(), "val_accuracy": float(self.val_accuracy[i]),
                "val_cost": float(self.val_cost[i]), "test_accuracy": float(self.test_accuracy[i]),
                "test_cost": float(self.test_cost[i])}

    def front(self, kind: str = "pareto") -> list[int]:
        """Validation front ('pareto' or its 'hull'), by increasing cost."""
        front = pareto_front(self.val_cost, self.val_accuracy)
        if kind == "pareto":
            return front
        if kind == "hull":
            return convex_hull(self.val_cost, self.val_accuracy, front)
        raise ValueError(f"kind must be 'pareto' or 'hull', got {kind!r}")

    def curve(self, split: str = "test", kind: str = "pareto") -> tuple[list[float], list[float]]:
        """(cost, accuracy) on ``split`` of the validation front's points."""
        cost, acc = (self.test_cost, self.test_accuracy) if split == "test" else (self.val_cost, self.val_accuracy)
        idx = self.front(kind)
        return [float(cost[i]) for i in idx], [float(acc[i]) for i in idx]

    def select(self, *, budget: float | None = None, reference: float | None = None,
               tolerance: float | None = None) -> dict | None:
        """The point chosen on validation (see ``select``), reported on both splits."""
        i = select(self.val_cost, self.val_accuracy, budget=budget, reference=reference, tolerance=tolerance)
        return None if i is None else self.point(i)


def sweep_thresholds(val: CachedOutputs, test: CachedOutputs, rule: PerExitThresholds, thresholds: torch.Tensor,
                     macs: MacTable, val_labels: torch.Tensor | None = None,
                     test_labels: torch.Tensor | None = None) -> ThresholdSweep:
    """Evaluate every row of ``thresholds`` [T, K-1] (the rule's own unit) on both splits at once.
    ``rule`` is a template: its own thresholds are ignored. Labels may be replaced (see ``exit_scores``)."""
    thresholds = torch.as_tensor(thresholds, dtype=torch.float32)
    if thresholds.ndim != 2 or thresholds.shape[1] != val.num_exits - 1:
        raise ValueError(f"thresholds must be [T, {val.num_exits - 1}], got {tuple(thresholds.shape)}")
    costs = torch.tensor(macs.exit_fractions, dtype=torch.float64)
    cuts = rule.cut(thresholds)
    v = _accuracy_and_cost(exit_scores(val, rule, val_labels), costs, cuts)
    t = _accuracy_and_cost(exit_scores(test, rule, test_labels), costs, cuts)
    return ThresholdSweep(rule, thresholds, v[0], v[1], t[0], t[1])


def shared_threshold_sweep(val: CachedOutputs, test: CachedOutputs, rule: PerExitThresholds, grid: Sequence[float],
                           macs: MacTable) -> ThresholdSweep:
    """One threshold shared by all early exits, for each value of ``grid``."""
    column = torch.tensor([float(t) for t in grid])[:, None]
    return sweep_thresholds(val, test, rule, column.expand(-1, val.num_exits - 1), macs)


# ---------------------------------------------------------------- fronts and selection
def pareto_front(cost: torch.Tensor, accuracy: torch.Tensor) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and accuracy (higher), by
    increasing cost; among equal-cost points only the most accurate. O(T log T)."""
    cost, accuracy = torch.as_tensor(cost, dtype=torch.float64), torch.as_tensor(accuracy, dtype=torch.float64)
    by_acc = torch.sort(-accuracy, stable=True).indices          # ties in cost: most accurate first
    order = by_acc[torch.sort(cost[by_acc], stable=True).indices]
    acc_sorted = accuracy[order]
    best_before = torch.cat([torch.tensor([-torch.inf], dtype=torch.float64), torch.cummax(acc_sorted, 0).values[:-1]])
    return order[acc_sorted > best_before].tolist()


def convex_hull(cost: torch.Tensor, accuracy: torch.Tensor, front: Sequence[int] | None = None) -> list[int]:
    """The upper-left convex chain of the Pareto front (what the E2CM demo plots): no kept point
    lies below the segment joining its neighbours."""
    front = pareto_front(cost, accuracy) if front is None else list(front)
    hull: list[int] = []
    for i in front:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (float(cost[b]) - float(cost[a])) * (float(accuracy[i]) - float(accuracy[a])) - \
                    (float(accuracy[b]) - float(accuracy[a])) * (float(cost[i]) - float(cost[a]))
            if cross < 0:
                break
            hull.pop()
        hull.append(i)
    return hull


def select(cost: torch.Tensor, accuracy: torch.Tensor, *, budget: float | None = None,
           reference: float | None = None, tolerance: float | None = None) -> int | None:
    """One operating point, in either direction (None if no point qualifies):
    ``budget``: the most accurate point costing at most ``budget`` (cheapest among equals);
    ``reference`` and ``tolerance``: the cheapest point with accuracy >= reference - tolerance
    (most accurate among equals). Call it with validation columns."""
    cost, accuracy = torch.as_tensor(cost, dtype=torch.float64), torch.as_tensor(accuracy, dtype=torch.float64)
    if (budget is None) == (reference is None or tolerance is None):
        raise ValueError("give either budget, or reference and tolerance")
    if budget is not None:
        ok = torch.nonzero(cost <= budget + 1e-12).flatten()
        primary, secondary = accuracy, -cost
    else:
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        ok = torch.nonzero(accuracy >= reference - tolerance - 1e-12).flatten()
        primary, secondary = -cost, accuracy
    if len(ok) == 0:
        return None
    best = ok[primary[ok] == primary[ok].max()]
    return int(best[secondary[best].argmax()])
