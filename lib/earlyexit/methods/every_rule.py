"""Every exit rule of the library on one network, on equal terms: its validation front, the oracle bound and
one operating point per rule.

What it is for: a network of your own (``earlyexit.wrap``) with exit heads, and the question "which rule,
and what does it buy?". ``rule_fronts`` fits each rule on the validation outputs only, with the same tuning
budget for every threshold rule (``vectors`` random per-exit vectors at validation quantiles of the rule's
own score, ``grid`` shared thresholds and "never exit"), and reads each rule's validation Pareto front on
test (``fronts.Front``); ``Front.oracle()`` is the best any rule could do with the same heads.
``operating_points`` picks one point per rule by one validation rule. ``run`` is anything with ``macs`` (a
``MacTable``) and ``outputs(split)`` returning the split's ``CachedOutputs`` (a ``train.TrainedRun`` is one)::

    found = rule_fronts(run, rules=("max-softmax", "entropy", "patience (PABEE)"))
    table = operating_points(found, within=0.01)      # one row per rule: validation choice, test outcome

The rules: max-softmax and entropy thresholds, patience (PABEE), the single-class confidence rule and class
exclusion (Wang, Li, Zhang; its sigmoid scores are read from the same heads, which were not trained for it),
and EENet's scheduler at ``eenet_budgets`` budgets (Ilhan et al.). E2CM's class means and differentiable
branching's gates are other heads on the network: fit them (``methods.e2cm``, ``methods.differentiable_
branching``) and pass that run with ``e2cm`` / ``gates`` to add them.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ..fronts import Front, RunLike, patience_candidates, policy_front, threshold_front
from ..policies import Entropy, GateThreshold, MaxProbability
from .class_exclusion import confident_candidates, exclusion_candidates
from .e2cm import e2cm_policy
from .eenet import EENetConfig, budget_grid, fit_eenet_budgets

__all__ = ["RULES", "rule_fronts", "operating_points"]

RULES = ("max-softmax", "entropy", "patience (PABEE)", "confidence baseline (CR)", "EENet", "class exclusion")
_VECTORS = "vectors (random at validation quantiles, shared, never)"


def rule_fronts(run: RunLike, network: str = "network", rules: Sequence[str] = RULES, vectors: int = 2000,
                grid: int = 41, seed: int = 0, *, exclusion_run: RunLike | None = None, restrict_final: bool = True,
                eenet_budgets: int = 6, eenet_config: EENetConfig = EENetConfig(),
                scheduler_seeds: Sequence[int] = (0, 1, 2), e2cm: RunLike | None = None,
                e2cm_prediction: str = "nearest", gates: RunLike | None = None) -> dict[str, Front]:
    """Each rule of ``rules`` on ``run`` (class exclusion on ``exclusion_run`` when given, e.g. a network
    trained with its loss), plus E2CM on ``e2cm`` and hard gates on ``gates`` when given: rule -> ``Front``.
    Every choice reads the validation split; the test split is read only at each front's points."""
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise ValueError(f"unknown rule(s) {unknown}; choose from {', '.join(RULES)}")
    early = len(run.macs.exit_macs) - 1
    makers = {
        "max-softmax": lambda: threshold_front("max-softmax", network, run, MaxProbability((0.0,) * early), vectors,
                                               grid, seed),
        "entropy": lambda: threshold_front("entropy", network, run, Entropy((0.0,) * early), vectors, grid, seed),
        "patience (PABEE)": lambda: policy_front("patience (PABEE)", network, run, patience_candidates(early + 1),
                                                 "patience values"),
        "confidence baseline (CR)": lambda: policy_front(
            "confidence baseline (CR)", network, run, confident_candidates(run.outputs("val"), vectors, grid, seed),
            f"tau {_VECTORS}"),
        "class exclusion": lambda: _exclusion(exclusion_run or run, network if exclusion_run is None else "BC",
                                              vectors, grid, seed, restrict_final),
        "EENet": lambda: _eenet(run, network, eenet_budgets, eenet_config, scheduler_seeds),
    }
    found = {rule: makers[rule]() for rule in RULES if rule in rules}
    if e2cm is not None:
        found["E2CM"] = threshold_front("E2CM", "E2CM", e2cm, e2cm_policy(e2cm.net, prediction=e2cm_prediction),
                                        vectors, grid, seed)
    if gates is not None:
        found["gates (diff. branching)"] = threshold_front(
            "gates (diff. branching)", "gated", gates, GateThreshold((0.0,) * (len(gates.macs.exit_macs) - 1)),
            vectors, grid, seed)
    return found


def _exclusion(run: RunLike, network: str, vectors: int, grid: int, seed: int, restrict_final: bool) -> Front:
    return policy_front("class exclusion", network, run,
                        exclusion_candidates(run.outputs("val"), vectors, grid, seed, restrict_final),
                        f"beta {_VECTORS}")


def _eenet(run: RunLike, network: str, budgets: int, config: EENetConfig, seeds: Sequence[int]) -> Front:
    fits = fit_eenet_budgets(run, budget_grid(run, budgets), config, seeds)
    return policy_front("EENet", network, run, [f.policy for f in fits.values()],
                        f"budgets, each the best of {len(seeds)} scheduler fits in budget on validation")


def operating_points(found: Mapping[str, Front], within: float = 0.01) -> list[dict]:
    """One point per rule, chosen on validation by one rule for all: the cheapest point of its front whose
    validation accuracy is within ``within`` (a fraction) of the front's most accurate validation point;
    with what it does on test. Accuracies and costs are fractions (cost: of the plain backbone's MACs)."""
    rows = []
    for rule, front in found.items():
        reach = front.val_accuracy.max() - within
        i = int(torch.nonzero(front.val_accuracy >= reach).flatten()[front.val_cost[front.val_accuracy >= reach]
                                                                       .argmin()])
        test_cost, test_accuracy = front.curve()
        oracle_cost, oracle_accuracy = front.oracle()
        rows.append({"rule": rule, "network": front.network, "candidates": front.candidates,
                     "val cost": float(front.val_cost[i]), "val accuracy": float(front.val_accuracy[i]),
                     "test cost": float(test_cost[0, i]), "test accuracy": float(test_accuracy[0, i]),
                     "oracle point cost": float(oracle_cost[0, -1]),
                     "oracle point accuracy": float(oracle_accuracy[0, -1]), "policy": front.policies[i]})
    return rows
