"""Evaluate exit policies on cached outputs; sweep thresholds on validation, report on test.

MACs follow macs.py: a sample that stops at exit k costs ``MacTable.exit_macs[k]``; fractions are
relative to the plain backbone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch

from .macs import MacTable
from .outputs import CachedOutputs
from .policies import ExitPolicy, run_exit_policy

__all__ = ["PolicyResult", "evaluate_policy", "threshold_sweep", "pareto_front", "cheapest_within"]


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


def threshold_sweep(val: CachedOutputs, test: CachedOutputs, make_policy: Callable[[float], ExitPolicy],
                    grid: Iterable[float], macs: MacTable) -> list[dict]:
    """Evaluate one threshold shared by all early exits, for each value of ``grid``, on both splits."""
    rows = []
    for t in grid:
        policy = make_policy(float(t))
        v, s = evaluate_policy(val, policy, macs), evaluate_policy(test, policy, macs)
        rows.append({"threshold": float(t), "val_accuracy": v.accuracy, "val_fraction": v.mean_fraction,
                     "test_accuracy": s.accuracy, "test_fraction": s.mean_fraction,
                     "test_exit_shares": s.exit_shares})
    return rows


def pareto_front(rows: Sequence[dict], cost: str = "val_fraction", quality: str = "val_accuracy") -> list[dict]:
    """Rows not beaten on both cost (lower) and quality (higher), sorted by cost. Fitted on
    validation columns by default so the test columns of the kept rows are honest estimates."""
    front, best = [], -float("inf")
    for row in sorted(rows, key=lambda r: (r[cost], -r[quality])):
        if row[quality] > best:
            front.append(row)
            best = row[quality]
    return front


def cheapest_within(rows: Sequence[dict], reference_accuracy: float, tolerance: float,
                    cost: str = "val_fraction", quality: str = "val_accuracy") -> dict:
    """The cheapest row whose (validation) accuracy is at least reference - tolerance."""
    ok = [r for r in rows if r[quality] >= reference_accuracy - tolerance]
    if not ok:
        raise ValueError(f"no setting keeps accuracy within {tolerance} of {reference_accuracy:.4f}")
    return min(ok, key=lambda r: r[cost])


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
