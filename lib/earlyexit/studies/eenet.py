"""Notebook 04_eenet's study: EENet (``methods.eenet``) against the budgeted rule-based baselines.

It holds the notebook's training plan (``networks``, ``plan``: the multi-exit networks EENet schedules,
one per training seed) and everything the notebook measures on them: every rule fitted on validation and
reported on test at every budget (``compare_at_budgets``), EENet against the baseline chosen on
validation with paired bootstrap intervals (``versus_best_baseline``), the utility score's AUROC gain,
the shift of the exit distribution with the budget, PABEE's patience points, the per-network study
(``study_network``), the evidence across training seeds (``across_networks``), the claims
(``network_claims``), the protocol saved with the metrics and the written conclusions.

The cpu and smoke profiles schedule the shared reference network (``studies.reference``, form
"multi", one training per seed), which notebooks 00, 01 and 03 train or reuse; nothing is trained
for this notebook alone. The paper profile keeps the paper's own networks (``settings``), trained
with EENet's depth-weighted cross-entropy, one per seed. EENet and its baselines are then fitted on
the cached validation outputs of each run, so the plan holds only the backbone trainings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..data import DataSpec
from ..evaluate import evaluate_policy
from ..macs import MacTable
from ..methods.eenet import (BudgetedFit, EENetConfig, EENetPolicy, RecipeSweep, RunLike, correctness_auroc,
                             exit_features, fit_eenet_budgets, fit_geometric, fit_searched)
from ..outputs import CachedOutputs
from ..policies import ExitPolicy, Patience
from ..stats import bootstrap_weighted, paired_bootstrap, seed_interval
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig
from .claims import Claim, claim, paper_number
from .reference import reference_runs

__all__ = ["networks", "plan", "BASELINES", "compare_at_budgets", "protocol", "patience_points", "utility_weights",
           "BudgetComparison", "versus_best_baseline", "across_networks", "exit_share_shift", "auroc_gain",
           "NetworkStudy", "study_network", "network_claims", "conclusions"]


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


def compare_at_budgets(run: RunLike, budgets: Sequence[float], config: EENetConfig = EENetConfig(),
                       seeds: Sequence[int] = (0, 1, 2), baseline_vectors: int = 2000
                       ) -> tuple[list[dict], dict[tuple[str, float], BudgetedFit]]:
    """Fit EENet (every budget in one stacked pass), both geometric baselines and both searched baselines
    (``baseline_vectors`` threshold vectors each) on validation at every budget; report each on test.
    Returns one row per (budget, method) and the fits keyed by (method, budget)."""
    test = run.outputs("test")
    log = _ReadLog(run)
    eenet = fit_eenet_budgets(log, budgets, config, seeds)
    eenet_read = tuple(sorted(set(log.read)))
    rows, fits = [], {}
    for budget in budgets:
        for fitting in (lambda r: eenet[budget], lambda r: fit_geometric(r, budget, "maxprob"),
                        lambda r: fit_geometric(r, budget, "entropy"),
                        lambda r: fit_searched(r, budget, "maxprob", baseline_vectors),
                        lambda r: fit_searched(r, budget, "entropy", baseline_vectors)):
            log = _ReadLog(run)
            fit = fitting(log)
            fit.splits_read = eenet_read if fit.method == "EENet" else tuple(sorted(set(log.read)))
            r = evaluate_policy(test, fit.policy, run.macs)
            fits[(fit.method, budget)] = fit
            rows.append({"budget": budget, "method": fit.method, "val_expected_cost": fit.expected_cost,
                         "val_cost": fit.val_cost, "val_accuracy": fit.val_accuracy, "test_cost": r.mean_fraction,
                         "test_accuracy": r.accuracy, "cost_error": (r.mean_fraction - budget) / budget,
                         "test_exit_shares": r.exit_shares, "planned_shares": fit.planned_shares})
    return rows, fits


# ---------------------------------------------------------------- tables and evidence for the verdicts
BASELINES = ("max-prob (MSDNet)", "entropy (BranchyNet)", "max-prob, searched", "entropy, searched")


def protocol(config: EENetConfig, sweep: RecipeSweep, seeds: Sequence[int], networks: Sequence[str],
             baseline_vectors: int) -> dict:
    """How every compared configuration of notebook 04 is chosen (saved with its metrics)."""
    return {
        "fitting_split": "validation: EENet schedulers, geometric ratios and every threshold",
        "baseline_selected_on": "validation",
        "baseline_rule": "per budget, the most accurate on validation of four rule-based baselines: max probability "
                         "and entropy, each with a geometric exit distribution planned to cost the budget "
                         "(validation quantile thresholds), and each searched: the most accurate of "
                         f"{baseline_vectors} random per-exit threshold vectors whose validation cost is within "
                         "the budget",
        "baseline_tuning": {"threshold_vectors_per_rule_and_budget": baseline_vectors,
                            "eenet_fits_per_budget": len(sweep.rows) // max(len(sweep.budgets), 1)},
        "patience": "PABEE patience 1..K-1: no budget knob, fixed points reported beside the curves",
        "detach_previous_scores": config.detach_previous,
        "scheduler_recipes": sweep.protocol(),
        "scheduler_selection": "per budget, the most accurate fit on validation among the scheduler seeds whose "
                               "expected cost is within the tolerance of the budget (the last seed's if none is)",
        "scheduler_seeds": list(seeds),
        "networks": list(networks),
        "reported_on": "test; per network a paired bootstrap over test images, across networks a t interval over "
                       "the training seeds' per-seed differences",
    }


def patience_points(run: RunLike) -> list[dict]:
    """PABEE's patience rule for every patience 1..K-1 on test. It has no budget knob, so it gives a
    few fixed operating points beside the budgeted curves."""
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
    """EENet beside the better of the two budgeted baselines at every budget, with the per-image
    correctness of both on test, so that any mean of the accuracy differences gets a paired
    bootstrap interval (the rules share the network and the images)."""

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
                         baselines: Sequence[str] = BASELINES, draws: int = 2000, seed: int = 0) -> BudgetComparison:
    """At every budget of ``compare_at_budgets``' rows, EENet and the baseline more accurate **on
    validation** (the same split and the same criterion that choose EENet's fit and recipe; test
    only reports), their realised test costs, the difference in points and its 95% paired bootstrap
    interval over test images."""
    test = run.outputs("test")
    by = {(r["method"], r["budget"]): r for r in rows}
    table, ours, theirs = [], [], []
    for budget in sorted({r["budget"] for r in rows}):
        best = baselines[0]
        for m in baselines[1:]:
            if by[(m, budget)]["val_accuracy"] > by[(best, budget)]["val_accuracy"]:
                best = m
        a, b = by[("EENet", budget)], by[(best, budget)]
        ours.append(_correct(test, fits[("EENet", budget)].policy, run.macs))
        theirs.append(_correct(test, fits[(best, budget)].policy, run.macs))
        _, lo, hi = paired_bootstrap(ours[-1], theirs[-1], draws, seed)
        table.append({"budget": budget, "EENet acc": a["test_accuracy"], "EENet cost": a["test_cost"],
                      "best baseline": best, "baseline val acc": by[(best, budget)]["val_accuracy"], "baseline acc": b["test_accuracy"], "baseline cost": b["test_cost"],
                      "EENet - baseline (points)": 100 * (a["test_accuracy"] - b["test_accuracy"]),
                      "95% interval low": 100 * lo, "95% interval high": 100 * hi})
    return BudgetComparison(table, torch.stack(ours), torch.stack(theirs))


def across_networks(per_seed: dict[int, dict[str, tuple[float, float, float]]]) -> dict[str, dict]:
    """Seed-level evidence: for every quantity measured on each training seed's network (value and
    its paired bootstrap interval over test images), the per-seed values, their mean and the 95% t
    interval over seeds (``stats.seed_interval``; seed s of EENet is paired with seed s of the baseline
    because both run on network s)."""
    names = next(iter(per_seed.values())).keys()
    out = {}
    for name in names:
        values = [per_seed[s][name][0] for s in per_seed]
        row = {"per_seed": {str(s): {"value": per_seed[s][name][0], "bootstrap_low": per_seed[s][name][1],
                                     "bootstrap_high": per_seed[s][name][2]} for s in per_seed}}
        if len(values) >= 2:
            mean, lo, hi = seed_interval(values)
            row.update(mean=mean, low=lo, high=hi, spread=max(values) - min(values))
        else:
            row.update(mean=values[0], low=None, high=None, spread=0.0)
        out[name] = row
    return out


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


def auroc_gain(policy: EENetPolicy, outputs: CachedOutputs, draws: int = 2000, seed: int = 0,
               level: float = 0.95) -> tuple[float, float, float]:
    """Mean over exits of the utility score's AUROC for correctness minus the better of max
    probability's and the entropy confidence's (as in ``correctness_auroc``), with a percentile
    bootstrap interval over images (one resample for every exit and score). Exits whose predictions
    are all right or all wrong have no AUROC and are left out."""
    q = policy.scores(outputs)
    n = len(outputs)
    columns = []
    for k in range(outputs.num_exits):
        z = outputs.logits[k]
        correct = z.argmax(1) == outputs.labels
        if 0 < int(correct.sum()) < n:
            feats = exit_features(z)
            columns.append((correct, (q[:, k], feats[:, -2], feats[:, -1])))
    if not columns:
        raise ValueError("no exit has both right and wrong predictions")

    def statistic(weights: torch.Tensor) -> torch.Tensor:
        gains = []
        for correct, (utility, maxprob, entropy) in columns:
            u, m, e = (_weighted_auroc(s, correct, weights) for s in (utility, maxprob, entropy))
            gains.append(u - torch.maximum(m, e))
        return torch.stack(gains, 1).nanmean(1)

    # multiplicities are small integers: exact in float32, sums taken in float64
    return bootstrap_weighted(lambda counts: statistic(counts.T.float().contiguous()), n, draws, seed, level, chunk=250)


@dataclass
class NetworkStudy:
    """Everything notebook 04 measures on one trained network (one training seed)."""

    rows: list[dict]
    fits: dict[tuple[str, float], BudgetedFit]
    versus: BudgetComparison
    patience: list[dict]
    middle: float
    auroc: list[dict]
    weights: list[dict]
    evidence: dict[str, tuple[float, float, float]]   # quantity -> (value, bootstrap low, high) on test
    final_exit_accuracy: float


def study_network(run: RunLike, budgets: Sequence[float], config: EENetConfig, seeds: Sequence[int],
                  draws: int = 2000, auroc_draws: int = 200, baseline_vectors: int = 2000) -> NetworkStudy:
    """Fit every rule on the network's validation outputs at every budget, then measure on test what
    the claims need: EENet minus the validation-chosen baseline over all budgets and the tighter half,
    the utility score's AUROC gain at the middle budget, the shift of EENet's last-exit share from the
    lowest to the highest budget, the largest relative cost error and the splits the fits read.
    ``auroc_draws``: the AUROC bootstrap re-ranks every exit's three scores per resample, the costliest
    interval here, and only supplements the interval over training seeds that decides the claim."""
    rows, fits = compare_at_budgets(run, budgets, config, seeds, baseline_vectors)
    versus = versus_best_baseline(run, rows, fits, draws=draws)
    test = run.outputs("test")
    middle = budgets[len(budgets) // 2]
    tight = [b for b in budgets if b <= sorted(budgets)[(len(budgets) - 1) // 2]]
    policy = fits[("EENet", middle)].policy
    error = 100 * max(abs(r["cost_error"]) for r in rows if r["method"] == "EENet")
    misread = sum(f.splits_read != ("val",) for f in fits.values())
    evidence = {"gain_all": versus.gain(draws=draws), "gain_tight": versus.gain(tight, draws=draws),
                "auroc_gain": auroc_gain(policy, test, auroc_draws), "last_exit_shift": exit_share_shift(run, fits, draws=draws),
                "cost_error_pct": (error, error, error), "fits_reading_other_splits": (misread, misread, misread)}
    return NetworkStudy(rows, fits, versus, patience_points(run), middle, correctness_auroc(policy, test),
                        utility_weights(policy), evidence, test.exit_accuracies()[-1])


def network_claims(evidence: dict[str, dict], config: EENetConfig, setting: str, final_accuracies: str,
                   fits: int, budgets: int) -> list[Claim]:
    """The six claims of notebook 04 from ``across_networks`` evidence: the interval is the t interval
    over training seeds of the per-seed values (each seed's own paired bootstrap interval is in the
    metrics); properties of every fit (cost error, splits read) are decided on their worst seed."""
    def seeds(name: str) -> tuple[float, tuple[float, float] | None, str]:
        e = evidence[name]
        per = "; ".join(f"seed {s}: {v['value']:+.3g} [{v['bootstrap_low']:+.3g}, {v['bootstrap_high']:+.3g}]"
                        for s, v in e["per_seed"].items())
        interval = None if e["low"] is None else (e["low"], e["high"])
        how = (f"t interval over {len(e['per_seed'])} training seeds of the per-seed value" if interval else
               "one training seed: no interval across trainings")
        return e["mean"], interval, f"{how}; per network, paired bootstrap over test images: {per}"

    worst = lambda name: max(v["value"] for v in evidence[name]["per_seed"].values())  # noqa: E731
    rival = f"{setting}; final-exit test accuracy of the networks (every rule runs on them): {final_accuracies}"
    chosen = "; the baseline is the more accurate on validation at each budget"
    out = [claim("EENet's realised cost meets the budget", "largest |realised test cost - budget| / budget over the "
                 "budgets and networks", worst("cost_error_pct"), claimed="less", than=100 * config.tolerance,
                 unit="%", setting=rival, evidence=f"deterministic property of the test split ({budgets} budgets "
                 "per network)", deterministic=True)]
    for name, statement, comparison in (
            ("gain_all", "EENet is at least as accurate as rule-based exits at equal budget",
             "EENet - best baseline test accuracy, mean over the budgets"),
            ("gain_tight", "EENet's gains come at tight budgets",
             "EENet - best baseline test accuracy, mean over the tighter half of the budgets")):
        mean, interval, how = seeds(name)
        out.append(claim(statement, comparison, mean, interval=interval, unit="points", setting=rival,
                         evidence=how + chosen))
    mean, interval, how = seeds("auroc_gain")
    out.append(claim("Utility scores predict correctness better than max probability or entropy", "test AUROC of "
                     "q_k minus the better raw confidence's, mean over exits (scheduler of the middle budget)",
                     mean, interval=interval, evidence=how, setting=rival))
    mean, interval, how = seeds("last_exit_shift")
    out.append(claim("The learned exit distribution moves to later exits as the budget grows", "share of test "
                     "images at the last exit, highest minus lowest budget", mean, interval=interval, evidence=how,
                     setting=rival))
    out.append(claim("Only validation outputs fit the scheduler and thresholds", "fits that read a split other than "
                     "validation", worst("fits_reading_other_splits"), claimed="less", than=1, unit=f"of {fits} fits",
                     setting=rival, evidence="deterministic property: every split each fit read through the run is "
                     "recorded", deterministic=True))
    return out


def conclusions(metrics: dict, claims: Sequence[Claim]) -> str:
    """The notebook's conclusions as markdown: every number read from ``metrics`` (what the notebook
    saves) or from the paper numbers, every verdict from ``claims``, given in ``network_claims``' order
    (budget adherence, gain over all budgets, gain at the tighter half, utility-score AUROC, shift to
    later exits, validation only)."""
    adherence, gain_all, gain_tight, roc_claim, shift, val_only = claims
    m, k = metrics, len(metrics["exit_fractions"])
    nets, ev = m["networks"], m["evidence"]
    first = next(iter(nets.values()))
    picked = [r["best baseline"] for n in nets.values() for r in n["eenet_vs_best_baseline"]]
    best = ", ".join(f"{name} at {picked.count(name)} of {len(picked)} (network, budget) pairs"
                     for name in dict.fromkeys(picked))
    attempts = [a for n in nets.values() for a in n["eenet_attempts"]]
    finals = ", ".join(f"seed {s} {100 * n['final_exit_accuracy']:.2f}%" for s, n in nets.items())
    recipe, sweep = m["recipe_sweep"]["chosen"], m["recipe_sweep"]
    ours_w = first["utility_weights"][0]
    paper_w = [paper_number("eenet", quantity=f"cifar10_resnet56_exit1_v_{q}").value for q in ("maxprob", "entropy")]

    def interval(c: Claim, digits: int = 2) -> str:
        inside = f" [{c.interval[0]:+.{digits}f}, {c.interval[1]:+.{digits}f}]" if c.interval else " (no interval)"
        return f"{c.ours:+.{digits}f}{inside}"

    def per_seed(name: str, digits: int = 2) -> str:
        return ", ".join(f"{v['value']:+.{digits}f}" for v in ev[name]["per_seed"].values())

    return "\n".join([
        f"**On this run** ({m['model']}, {len(nets)} training seed(s), final-exit test accuracy {finals}; exits at "
        f"{' / '.join(f'{c:.2f}' for c in m['exit_fractions'])} of the backbone's {m['backbone_MMACs']:.0f} MMACs; "
        f"{m['data']}; scheduler seeds {', '.join(map(str, m['scheduler_seeds']))}; {len(m['budgets'])} budgets; "
        f"scheduler recipe {recipe['optimizer']}, lr {recipe['lr']:g}, {recipe['epochs']} epochs, chosen on validation "
        f"from {len(sweep['summary'])} recipes x {len(sweep['seeds'])} seeds; the scheduler costs at most "
        f"{m['scheduler_macs'][-1]} MACs per image, {m['scheduler_macs_fraction']:.1e} of the backbone):",
        "",
        f"1. **Budget adherence: {adherence.verdict}.** {sum(a['accepted'] for a in attempts)} of {len(attempts)} "
        f"EENet fits landed within {100 * m['scheduler_config']['tolerance']:.0f}% of the budget on validation; the "
        f"realised test cost was within {adherence.ours:.1f}% of the budget at every budget of every network.",
        f"2. **EENet at least as accurate as the best rule-based baseline: {gain_all.verdict}.** EENet minus the "
        f"baseline chosen on validation ({best}), mean over the budgets: {interval(gain_all)} points across seeds "
        f"(per seed {per_seed('gain_all')}); at the tighter half {interval(gain_tight)} ({gain_tight.verdict}; "
        f"per seed {per_seed('gain_tight')}).",
        f"3. **Utility scores predict correctness better than raw confidence: {roc_claim.verdict}.** Test AUROC "
        f"of q_k minus the better of max probability and entropy confidence, mean over exits 1-{k}: "
        f"{interval(roc_claim, 3)} (per seed {per_seed('auroc_gain', 3)}).",
        f"4. **The learned distribution moves to later exits as the budget grows: {shift.verdict}** (last-exit "
        f"share, highest minus lowest budget: {interval(shift, 3)}; per seed {per_seed('last_exit_shift', 3)}).",
        f"5. **Validation only: {val_only.verdict}** ({m['val_images']} validation images fit everything, "
        f"{m['test_images']} test images only evaluate; {val_only.ours:.0f} {val_only.unit} read another split).",
        "",
        f"Our exit-1 utility score (seed {next(iter(nets))}) weights max probability {ours_w['v max prob']:.2f} and "
        f"entropy confidence {ours_w['v entropy conf']:.2f}; the authors' shipped CIFAR-10 scheduler has "
        f"{paper_w[0]} and {paper_w[1]}.",
    ])
