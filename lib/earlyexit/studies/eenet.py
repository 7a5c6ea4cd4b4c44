"""Notebook 04_eenet's study: EENet (``methods.eenet``) against the budgeted rule-based baselines.

It holds the notebook's training plan (``networks``, ``plan``: the multi-exit networks EENet schedules,
one per training seed), the paper's exit count (``headline_exits``, ``ExitSubset``: a subset of the
network's exits fixed by a rule that reads only the MAC table), and everything the notebook measures on
them: the scheduler recipe chosen on validation over several networks and budgets (``choose_recipe``),
every rule fitted on validation and reported on test at every budget (``compare_at_budgets``), EENet
against the baseline chosen on validation, from the paper's pool or with the searched baselines added,
with paired bootstrap intervals (``versus_best_baseline``), the utility score's AUROC gain per exit
(``auroc_gains``), the shift of the exit distribution with the budget, PABEE's patience points, the
per-network study (``study_network``) and the evidence across training seeds (``across_networks``).
The claims, the comparison with the authors' released files and the conclusions are
``studies.eenet_tables``.

The cpu and smoke profiles schedule the shared reference network (``studies.reference``, form
"multi", one training per seed), which notebooks 00, 01 and 03 train or reuse; nothing is trained
for this notebook alone. The paper profile keeps the paper's own networks (``settings``), trained
with EENet's depth-weighted cross-entropy, one per seed. EENet and its baselines are then fitted on
the cached validation outputs of each run, so the plan holds only the backbone trainings.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..data import DataSpec
from ..evaluate import evaluate_policy
from ..macs import MacTable
from ..methods.eenet import (BudgetedFit, EENetConfig, EENetPolicy, Recipe, RecipeSweep, RunLike, budget_grid,
                             correctness_auroc, exit_features, fit_eenet_budgets, pool_sweeps, sweep_recipes)
from ..methods.eenet_baselines import fit_geometric, fit_patience, fit_searched
from ..outputs import CachedOutputs
from ..policies import ExitPolicy, Patience
from ..stats import bootstrap_many, paired_bootstrap, seed_interval
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig
from .reference import reference_runs

__all__ = ["networks", "plan", "headline_exits", "exit_rule", "ExitSubset", "choose_recipe", "PAPER_BASELINES",
           "SEARCHED_BASELINES", "BASELINES", "compare_at_budgets", "protocol", "patience_points", "utility_weights",
           "BudgetComparison", "versus_best_baseline", "across_networks", "exit_share_shift", "auroc_gains",
           "NetworkStudy", "study_network"]


SETTING_KEYS = {"name", "dataset", "backbone", "width", "exit_after", "head", "head_options"}


def networks(backbone: str, width: float, dataset: str, train_size: int | None, val_size: int,
             test_size: int | None, epochs: int, batch_size: int, lr: float, weight_decay: float, bf16: bool,
             channels_last: bool, seeds: list[int], settings: list[dict] | None = None, schedule: str = "onecycle",
             **_) -> dict[str, list[RunSpec]]:
    """Setting name -> one run per training seed. Without ``settings``: the reference network
    ("reference"); with them, one multi-exit network per setting {name, dataset, backbone, width,
    exit_after, head, head_options}, the first of which gets every figure."""
    if not settings:
        return {"reference": reference_runs("multi", seeds, backbone=backbone, width=width, dataset=dataset,
                                            train_size=train_size, val_size=val_size, test_size=test_size,
                                            epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                            bf16=bf16, channels_last=channels_last)}
    out = {}
    for s in settings:
        unknown = set(s) - SETTING_KEYS
        if unknown:
            raise ValueError(f"unknown setting key(s) {sorted(unknown)}")
        out[s["name"]] = [RunSpec(
            f"eenet_{s['name']}_s{seed}",
            ModelSpec(s["backbone"], s.get("width", 1.0), tuple(s["exit_after"]), s.get("head", "linear"),
                      dict(s.get("head_options", {}))),
            DataSpec(s["dataset"], val_size=val_size, train_size=train_size, test_size=test_size, seed=0),
            LossSpec("weighted_ce", {"weights": "depth"}),
            TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, schedule=schedule,
                        bf16=bf16, channels_last=channels_last, seed=seed)) for seed in seeds]
    return out


def plan(**parameters) -> list[RunSpec]:
    """Every run of ``networks``, setting by setting."""
    return [spec for runs in networks(**parameters).values() for spec in runs]


# ---------------------------------------------------------------- the paper's exit count
def headline_exits(exit_fractions: Sequence[float], targets: Sequence[float] | None) -> list[int]:
    """The exits (0-based) nearest each of ``targets`` (fractions of the backbone's MACs; the earlier exit on
    a tie), plus the final exit, without repeats. The rule reads only the MAC table, so the subset is fixed
    before any result; ``None`` keeps every exit (a network that already has the paper's exit count)."""
    k = len(exit_fractions)
    if targets is None:
        return list(range(k))
    nearest = {min(range(k), key=lambda i: (abs(exit_fractions[i] - t), i)) for t in targets}
    return sorted(nearest | {k - 1})


def exit_rule(targets: Sequence[float] | None) -> str:
    """``headline_exits``' rule in words, for the protocol and the notebook."""
    if targets is None:
        return "every exit of the network"
    return f"the exits nearest {', '.join(f'{t:g}' for t in targets)} of the backbone's MACs, plus the final exit"


class ExitSubset:
    """A trained run seen through some of its exits (0-based, ending with the final one): the same network
    and the same cached outputs restricted to those exits, nothing retrained. Its MAC table counts every
    stage up to a kept exit and only the kept exits' heads, as an early exit that evaluates only those
    heads spends."""

    def __init__(self, run: RunLike, exits: Sequence[int]):
        exits, total = [int(k) for k in exits], len(run.macs.exit_stage)
        if not exits or exits != sorted(set(exits)) or exits[0] < 0 or exits[-1] != total - 1:
            raise ValueError(f"exits must be increasing indices ending with the final exit {total - 1}, got {exits}")
        m = run.macs
        self.run, self.exits = run, exits
        self.macs = MacTable(m.stage_macs, [m.head_macs[k] for k in exits], [m.exit_stage[k] for k in exits],
                             m.backbone_macs)

    def outputs(self, split: str, *args, **kwargs) -> CachedOutputs:
        out = self.run.outputs(split, *args, **kwargs)
        keep = torch.tensor(self.exits)
        return CachedOutputs(out.logits[keep], out.labels, None if out.gates is None else out.gates[keep])


# ---------------------------------------------------------------- every rule at every budget
class _ReadLog:
    """A run as the fitting functions see it: records every split they read, so that "fitted on
    validation only" is checked on each fit rather than assumed."""

    def __init__(self, run: RunLike):
        self.run, self.read = run, []

    @property
    def macs(self) -> MacTable:
        return self.run.macs

    def outputs(self, split: str, *args, **kwargs) -> CachedOutputs:
        self.read.append(split)
        return self.run.outputs(split, *args, **kwargs)


def choose_recipe(runs: Sequence[RunLike], names: Sequence[str], budget_indices: Sequence[int], num_budgets: int,
                  recipes: Sequence[Recipe], config: EENetConfig, seeds: Sequence[int]) -> RecipeSweep:
    """The scheduler recipe, chosen on validation: every recipe with every scheduler seed at the budgets
    ``budget_indices`` of each run's ``budget_grid(run, num_budgets)`` (e.g. [0, -1]: the tightest and the
    loosest), on the validation outputs of each of ``runs``, pooled by ``methods.eenet.pool_sweeps``."""
    sweeps = []
    for run in runs:
        grid = budget_grid(run, num_budgets)
        sweeps.append(sweep_recipes(run, sorted({grid[i] for i in budget_indices}), recipes, config, seeds))
    return pool_sweeps(sweeps, names)


PAPER_BASELINES = ("max-prob (MSDNet)", "entropy (BranchyNet)", "patience (PABEE)")
SEARCHED_BASELINES = ("max-prob, searched", "entropy, searched")
BASELINES = PAPER_BASELINES + SEARCHED_BASELINES


def compare_at_budgets(run: RunLike, budgets: Sequence[float], config: EENetConfig = EENetConfig(),
                       seeds: Sequence[int] = (0, 1, 2), baseline_vectors: int = 2000
                       ) -> tuple[list[dict], dict[tuple[str, float], BudgetedFit]]:
    """Fit on validation at every budget EENet (every budget in one stacked pass) and the paper's baselines
    (max probability and entropy with a geometric exit distribution, patience at the most accurate value
    within the budget: patience 1, every image at the first exit, fits any budget of the grid), plus, with
    ``baseline_vectors`` > 0, both searched baselines (that many threshold vectors each); report each on
    test. Returns one row per (budget, method) and the fits keyed by (method, budget)."""
    test = run.outputs("test")
    log = _ReadLog(run)
    eenet = fit_eenet_budgets(log, budgets, config, seeds)
    eenet_read = tuple(sorted(set(log.read)))
    fitters = [lambda r, b: eenet[b], lambda r, b: fit_geometric(r, b, "maxprob"),
               lambda r, b: fit_geometric(r, b, "entropy"), fit_patience]
    if baseline_vectors > 0:
        fitters += [lambda r, b: fit_searched(r, b, "maxprob", baseline_vectors),
                    lambda r, b: fit_searched(r, b, "entropy", baseline_vectors)]
    rows, fits = [], {}
    for budget in budgets:
        for fitting in fitters:
            log = _ReadLog(run)
            fit = fitting(log, budget)
            if fit is None:   # a budget below the first exit's cost: no patience value meets it
                continue
            fit.splits_read = eenet_read if fit.method == "EENet" else tuple(sorted(set(log.read)))
            r = evaluate_policy(test, fit.policy, run.macs)
            fits[(fit.method, budget)] = fit
            rows.append({"budget": budget, "method": fit.method, "val_expected_cost": fit.expected_cost,
                         "val_cost": fit.val_cost, "val_accuracy": fit.val_accuracy, "test_cost": r.mean_fraction,
                         "test_accuracy": r.accuracy, "cost_error": (r.mean_fraction - budget) / budget,
                         "test_exit_shares": r.exit_shares, "planned_shares": fit.planned_shares})
    return rows, fits


# ---------------------------------------------------------------- tables and evidence for the verdicts
def protocol(config: EENetConfig, sweep: RecipeSweep, seeds: Sequence[int], networks: Sequence[str],
             baseline_vectors: int, exits: Sequence[int], exit_rule: str) -> dict:
    """How every compared configuration of notebook 04 is chosen (saved with its metrics)."""
    return {
        "fitting_split": "validation: EENet schedulers, their recipe, geometric ratios, patience values and every "
                         "threshold",
        "headline_exits": {"exits": [k + 1 for k in exits], "rule": exit_rule,
                           "fixed": "before any result: the rule reads only the MAC table"},
        "baseline_selected_on": "validation",
        "baseline_rule": "per budget, the most accurate on validation of the paper's baselines: max probability and "
                         "entropy, each with a geometric exit distribution planned to cost the budget (validation "
                         "quantile thresholds), and patience (PABEE) at the most accurate value whose validation cost "
                         "is within the budget (patience 1 sends every image to the first exit, so one always is)",
        "searched_baselines": "sensitivity only: max probability and entropy each searched, the most accurate of "
                              f"{baseline_vectors} random per-exit threshold vectors whose validation cost is within "
                              "the budget, added to the pool",
        "baseline_tuning": {"threshold_vectors_per_searched_rule_and_budget": baseline_vectors,
                            "patience_values_per_budget": "every value 1..K-1",
                            "eenet_fits_per_budget": len(seeds), "eenet_recipe_sweep_fits": len(sweep.rows)},
        "patience": "PABEE patience 1..K-1: no budget knob; in the pool at a budget through the value chosen on "
                    "validation, and every value reported beside the curves",
        "detach_previous_scores": config.detach_previous,
        "scheduler_recipes": sweep.protocol(),
        "scheduler_selection": "per budget, the most accurate fit on validation among the scheduler seeds whose "
                               "expected cost is within the tolerance of the budget (the last seed's if none is)",
        "scheduler_seeds": list(seeds),
        "networks": list(networks),
        "reported_on": "test; per network a paired bootstrap over test images; the estimate is the mean over the "
                       "training seeds and its interval the t interval over their per-seed values",
    }


def patience_points(run: RunLike) -> list[dict]:
    """PABEE's patience rule for every patience 1..K-1 on test: a few fixed operating points beside the
    budgeted curves."""
    test = run.outputs("test")
    rows = []
    for p in range(1, len(run.macs.exit_fractions)):
        s = evaluate_policy(test, Patience(p), run.macs).summary()
        rows.append({"method": f"patience {p} (PABEE)", "accuracy": s["accuracy"],
                     "fraction_of_backbone": s["fraction_of_backbone"], "exit_shares": s["exit_shares"]})
    return rows


def utility_weights(policy: EENetPolicy) -> list[dict]:
    """What each exit's linear utility score relies on: its weights on max probability, on the
    entropy confidence and on the earlier exits' scores, and the largest class-wise weight."""
    rows = []
    for k, layer in enumerate(policy.scheduler.score):
        w = layer.weight[0].detach()
        c = w.numel() - 2 - k
        rows.append({"exit": k + 1, "v max prob": w[c].item(), "v entropy conf": w[c + 1].item(),
                     "v earlier scores": [round(x, 3) for x in w[c + 2:].tolist()],
                     "max |w class|": w[:c].abs().max().item()})
    return rows


@dataclass
class BudgetComparison:
    """EENet beside the best baseline of a pool at every budget, with the per-image correctness of both
    on test, so that any mean of the accuracy differences gets a paired bootstrap interval (the rules
    share the network and the images)."""

    table: list[dict]                # one row per budget
    eenet_correct: torch.Tensor      # [B, N] 0/1 on test
    baseline_correct: torch.Tensor   # [B, N] 0/1 on test, the best baseline of that budget

    def gain(self, budgets: Sequence[float] | None = None, draws: int = 2000,
             seed: int = 0) -> tuple[float, float, float]:
        """Mean over ``budgets`` (all by default) of EENet's accuracy minus the best baseline's, in
        points, with a 95% paired bootstrap interval over test images (one resample for every budget)."""
        keep = [i for i, r in enumerate(self.table) if budgets is None or r["budget"] in budgets]
        if not keep:
            raise ValueError("no budget of the table selected")
        mean, lo, hi = paired_bootstrap(self.eenet_correct[keep].mean(0), self.baseline_correct[keep].mean(0),
                                        draws, seed)
        return 100 * mean, 100 * lo, 100 * hi


def versus_best_baseline(run: RunLike, rows: Sequence[dict], fits: dict[tuple[str, float], BudgetedFit],
                         baselines: Sequence[str] = PAPER_BASELINES, draws: int = 2000,
                         seed: int = 0) -> BudgetComparison:
    """At every budget of ``compare_at_budgets``' rows, EENet and the baseline of the pool ``baselines``
    more accurate **on validation** (the split and criterion that choose EENet's fit and recipe; test only
    reports; a baseline absent at a budget is not in its pool there; ties go to the earlier in the pool),
    their realised test costs, the difference in points and its 95% paired bootstrap interval over test
    images."""
    test = run.outputs("test")
    by = {(r["method"], r["budget"]): r for r in rows}
    table, ours, theirs = [], [], []
    for budget in sorted({r["budget"] for r in rows}):
        pool = [m for m in baselines if (m, budget) in by]
        if not pool:
            raise ValueError(f"no baseline of {list(baselines)} at budget {budget}")
        best = max(pool, key=lambda m: by[(m, budget)]["val_accuracy"])
        a, b = by[("EENet", budget)], by[(best, budget)]
        ours.append(_correct(test, fits[("EENet", budget)].policy, run.macs))
        theirs.append(_correct(test, fits[(best, budget)].policy, run.macs))
        _, lo, hi = paired_bootstrap(ours[-1], theirs[-1], draws, seed)
        table.append({"budget": budget, "EENet acc": a["test_accuracy"], "EENet cost": a["test_cost"],
                      "best baseline": best, "baseline val acc": b["val_accuracy"], "baseline acc": b["test_accuracy"],
                      "baseline cost": b["test_cost"],
                      "EENet - baseline (points)": 100 * (a["test_accuracy"] - b["test_accuracy"]),
                      "95% interval low": 100 * lo, "95% interval high": 100 * hi})
    return BudgetComparison(table, torch.stack(ours), torch.stack(theirs))


def across_networks(per_seed: dict[int, dict[str, tuple[float, float, float]]]) -> dict[str, dict]:
    """Seed-level evidence: for every quantity measured on each training seed's network (value and its
    paired bootstrap interval over test images), the per-seed values, their mean and the 95% t interval
    over seeds (``stats.seed_interval``; seed s of EENet is paired with seed s of the baseline because both
    run on network s). A quantity undefined on some seed (NaN: an AUROC at an exit no test image leaves
    at) gets no mean and names those seeds under ``undefined_on``."""
    names = next(iter(per_seed.values())).keys()
    out = {}
    for name in names:
        values = [per_seed[s][name][0] for s in per_seed]
        row = {"per_seed": {str(s): {"value": _defined(per_seed[s][name][0]),
                                     "bootstrap_low": _defined(per_seed[s][name][1]),
                                     "bootstrap_high": _defined(per_seed[s][name][2])} for s in per_seed}}
        undefined = [str(s) for s, v in zip(per_seed, values) if math.isnan(v)]
        if undefined:
            row.update(mean=None, low=None, high=None, spread=None, undefined_on=undefined)
        elif len(values) >= 2:
            mean, lo, hi = seed_interval(values, _bounds(name))
            row.update(mean=mean, low=lo, high=hi, spread=max(values) - min(values))
        else:
            row.update(mean=values[0], low=None, high=None, spread=0.0)
        out[name] = row
    return out


def _bounds(quantity: str) -> tuple[float, float] | None:
    """The valid range of an evidence quantity, to which its seed interval is clipped: a difference of
    accuracies in points, of AUROCs or of shares of images; None where there is no natural bound."""
    if quantity.startswith("gain"):
        return (-100.0, 100.0)
    if quantity.startswith("auroc_exit_") or quantity == "last_exit_shift":
        return (-1.0, 1.0)
    return None


def _defined(value: float) -> float | None:
    return None if math.isnan(value) else value


def _correct(outputs: CachedOutputs, policy: ExitPolicy, macs: MacTable) -> torch.Tensor:
    return (evaluate_policy(outputs, policy, macs).prediction == outputs.labels).float()


def exit_share_shift(run: RunLike, fits: dict[tuple[str, float], BudgetedFit], method: str = "EENet",
                     at_exit: int = -1, draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Share of test images leaving at ``at_exit`` under ``method``'s rule fitted at the highest budget
    minus that at the lowest budget, with a 95% paired bootstrap interval over test images: positive
    when the rule moves samples to that exit as the budget grows."""
    test = run.outputs("test")
    budgets = sorted(b for m, b in fits if m == method)
    k = at_exit % test.num_exits
    at = [(evaluate_policy(test, fits[(method, b)].policy, run.macs).exit_index == k).float()
          for b in (budgets[-1], budgets[0])]
    return paired_bootstrap(at[0], at[1], draws, seed)


def _weighted_auroc(score: torch.Tensor, positive: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``auroc`` of one score under many weightings of the samples at once: weights [N, D] -> [D], one
    column per weighting (a bootstrap resample weights each sample by how often it was drawn). Samples
    are sorted by score once; a positive counts the negative weight strictly below its score plus half
    of the negative weight tied with it."""
    order = torch.argsort(score.double())
    _, group, counts = torch.unique_consecutive(score.double()[order], return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0)
    is_pos = positive.bool()[order]
    w = weights[order]
    neg = torch.cat([w.new_zeros(1, w.shape[1]), torch.cumsum(w * ~is_pos[:, None], 0)])  # row j: the first j
    pos_w = w[is_pos]
    tied = neg[(ends - counts)[group][is_pos]] + neg[ends[group][is_pos]]
    return (pos_w * tied).sum(0, dtype=torch.float64) / 2 / (pos_w.sum(0, dtype=torch.float64) * neg[-1].double())


def auroc_gains(policy: EENetPolicy, outputs: CachedOutputs, exits: Sequence[int], draws: int = 2000, seed: int = 0,
                level: float = 0.95) -> dict[int, tuple[float, float, float]]:
    """Per exit k of ``exits`` (0-based): the utility score's AUROC for correctness at k minus the better of
    max probability's and the entropy confidence's (as in ``correctness_auroc``), with a percentile
    bootstrap interval over images (one resample for every exit and score). Exits whose predictions are
    all right or all wrong have no AUROC and are left out of the result."""
    q = policy.scores(outputs)
    n = len(outputs)
    columns = {}
    for k in exits:
        z = outputs.logits[k]
        correct = z.argmax(1) == outputs.labels
        if 0 < int(correct.sum()) < n:
            feats = exit_features(z)
            columns[k] = (correct, (q[:, k], feats[:, -2], feats[:, -1]))
    if not columns:
        return {}

    def statistic(weights: torch.Tensor) -> torch.Tensor:
        gains = []
        for correct, (utility, maxprob, entropy) in columns.values():
            u, m, e = (_weighted_auroc(s, correct, weights) for s in (utility, maxprob, entropy))
            gains.append(u - torch.maximum(m, e))
        return torch.stack(gains, 1)

    # multiplicities are small integers: exact in float32, sums taken in float64
    values = bootstrap_many(lambda counts: statistic(counts.T.float().contiguous()), n, draws, seed, level, chunk=250)
    return dict(zip(columns, values))


@dataclass
class NetworkStudy:
    """Everything notebook 04 measures on one trained network (one training seed) through one exit set."""

    rows: list[dict]
    fits: dict[tuple[str, float], BudgetedFit]
    versus: BudgetComparison                 # the paper's baselines
    versus_searched: BudgetComparison | None  # the searched baselines added to the pool
    patience: list[dict]
    middle: float
    auroc: list[dict]
    weights: list[dict]
    evidence: dict[str, tuple[float, float, float]]   # quantity -> (value, bootstrap low, high) on test
    final_exit_accuracy: float


def study_network(run: RunLike, budgets: Sequence[float], config: EENetConfig, seeds: Sequence[int],
                  draws: int = 2000, auroc_draws: int = 200, baseline_vectors: int = 2000) -> NetworkStudy:
    """Fit every rule on the network's validation outputs at every budget, then measure on test what the
    claims need: EENet minus the validation-chosen baseline of the paper's pool over all budgets and the
    tighter half (and over all budgets with the searched baselines added, when ``baseline_vectors`` > 0),
    the utility score's AUROC gain at each exit under the scheduler of the middle budget (NaN at an exit
    where no test image leaves: its score decides nothing there and its loss weighs it near 0), the shift
    of EENet's last-exit share from the lowest to the highest budget, the largest relative cost error and
    the splits the fits read. ``auroc_draws``: the AUROC bootstrap re-ranks every exit's three scores per
    resample, the costliest interval here, and only supplements the interval over training seeds."""
    rows, fits = compare_at_budgets(run, budgets, config, seeds, baseline_vectors)
    versus = versus_best_baseline(run, rows, fits, PAPER_BASELINES, draws=draws)
    searched = versus_best_baseline(run, rows, fits, BASELINES, draws=draws) if baseline_vectors > 0 else None
    test = run.outputs("test")
    middle = budgets[len(budgets) // 2]
    tight = [b for b in budgets if b <= sorted(budgets)[(len(budgets) - 1) // 2]]
    policy = fits[("EENet", middle)].policy
    leaving = evaluate_policy(test, policy, run.macs).exit_counts
    gains = auroc_gains(policy, test, [k for k, c in enumerate(leaving) if c > 0], auroc_draws)
    error = 100 * max(abs(r["cost_error"]) for r in rows if r["method"] == "EENet")
    misread = sum(f.splits_read != ("val",) for f in fits.values())
    evidence = {"gain_all": versus.gain(draws=draws), "gain_tight": versus.gain(tight, draws=draws),
                **({"gain_all_searched": searched.gain(draws=draws)} if searched else {}),
                **{f"auroc_exit_{k + 1}": gains.get(k, (math.nan,) * 3) for k in range(test.num_exits)},
                "last_exit_shift": exit_share_shift(run, fits, draws=draws),
                "cost_error_pct": (error, error, error), "fits_reading_other_splits": (misread, misread, misread)}
    auroc = [{**r, "test images leaving here": c} for r, c in zip(correctness_auroc(policy, test), leaving)]
    return NetworkStudy(rows, fits, versus, searched, patience_points(run), middle, auroc, utility_weights(policy),
                        evidence, test.exit_accuracies()[-1])
