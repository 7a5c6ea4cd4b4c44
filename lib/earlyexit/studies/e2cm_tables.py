"""Notebook 02's tables of E2CM on its own, no trained-head rival involved, built on ``methods.e2cm``:
the per-exit nearest-class-mean accuracies of every E2CM run (the depth trend, with how often the nearest
raw mean and the largest normalised score disagree), the pooled-versus-flattened feature ablation, and
the unsupervised experiment (``methods.e2cm.unsupervised_e2cm``: autoencoder -> k-means -> cluster means
at the encoder's exits): per (data set, seed) the operating point chosen on validation for each cost
budget, the mean curve over seeds (the red curve of the authors' slide), a summary at a few budgets, the
full-cost clustering accuracies and claim (iii). The comparison with the rivals, claims (i) and (ii),
the paper comparisons and the conclusions are ``studies.e2cm``."""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from .claims import Claim, claim
from ..evaluate import exit_scores
from ..methods.e2cm import E2CMExit, e2cm_policy
from ..outputs import CachedOutputs
from ..stats import seed_interval
from ..train import TrainedRun

__all__ = ["prediction_disagreement", "ncm_table", "feature_ablation", "UNSUP_GRID", "unsupervised_curves",
           "unsupervised_mean", "unsupervised_summary", "unsupervised_full", "unsupervised_claims"]


# ---------------------------------------------------------------- per exit
def prediction_disagreement(outputs: CachedOutputs, policy: E2CMExit) -> list[float]:
    """Share of samples per early exit where the nearest raw mean and the largest normalised score differ."""
    return [(policy.prediction(k, outputs.logits[k]) != outputs.logits[k].argmax(1)).float().mean().item()
            for k in range(outputs.num_exits - 1)]


def _labelled(label: str | tuple[str, int]) -> dict:
    """Table columns of a run label: (backbone, seed) or a backbone alone."""
    return {"backbone": label[0], "seed": label[1]} if isinstance(label, tuple) else {"backbone": label}


def ncm_table(runs: Mapping[str, TrainedRun], prediction: str = "nearest") -> pd.DataFrame:
    """Every sample forced out at each exit of each E2CM run (the last exit is the backbone's own
    classifier): train and test accuracy, cost, the distances' share of the cost spent up to the exit,
    and how often the nearest raw mean differs from the largest normalised score (the authors' demo
    prints the first two per exit)."""
    rows = []
    for label, run in runs.items():
        policy = e2cm_policy(run.net, prediction=prediction)
        test = run.outputs("test")
        train_acc, test_acc = (exit_scores(o, policy).exit_accuracies() for o in (run.outputs("train"), test))
        disagree = prediction_disagreement(test, policy) + [0.0]
        macs = run.macs
        for j, cost in enumerate(macs.exit_fractions):
            own = macs.head_macs[j] if j < len(run.net.heads) else 0
            rows.append({**_labelled(label), "exit": j + 1, "cost": cost, "train acc": train_acc[j],
                         "test acc": test_acc[j], "overhead % of cost": 100 * own / macs.exit_macs[j],
                         "nearest != argmax p": disagree[j]})
    return pd.DataFrame(rows)


def feature_ablation(gap: TrainedRun, flat: TrainedRun, prediction: str = "nearest") -> pd.DataFrame:
    """Nearest-class-mean test accuracy and cost per exit with pooled (``gap``) and flattened
    (``flat``, the authors' code) features on one backbone."""
    acc = {name: exit_scores(run.outputs("test"), e2cm_policy(run.net, prediction=prediction)).exit_accuracies()
           for name, run in (("gap", gap), ("flatten", flat))}
    return pd.DataFrame({"exit": range(1, flat.net.num_exits + 1), "gap test acc": acc["gap"],
                         "flatten test acc": acc["flatten"], "gap cost": gap.macs.exit_fractions,
                         "flatten cost": flat.macs.exit_fractions})


# ---------------------------------------------------------------- unsupervised variant
UNSUP_GRID = tuple(round(0.2 + 0.05 * i, 2) for i in range(18))   # cost budgets 0.2 ... 1.05


def unsupervised_curves(results: Mapping[tuple[str, int], dict], grid: Sequence[float] = UNSUP_GRID) -> pd.DataFrame:
    """One row per (data set, seed, budget): test clustering accuracy and cost of the point chosen on
    validation for that budget (``unsupervised_e2cm`` results keyed by (data set, seed))."""
    rows = []
    for (dataset, seed), out in results.items():
        for b in grid:
            point = out["cloud"].select(budget=b) or {}
            rows.append({"dataset": dataset, "seed": seed, "budget": b,
                         "test clustering acc": point.get("test_accuracy"), "test cost": point.get("test_cost")})
    return pd.DataFrame(rows)


def unsupervised_mean(curves: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The mean over seeds (the red curve of the authors' slide), at the budgets every seed reaches."""
    df = curves[curves["dataset"] == dataset].dropna()
    seeds = curves.loc[curves["dataset"] == dataset, "seed"].nunique()
    complete = df.groupby("budget").filter(lambda g: len(g) == seeds)
    return complete.groupby("budget")[["test cost", "test clustering acc"]].mean()


def unsupervised_summary(curves: pd.DataFrame, budgets: Sequence[float] = (0.25, 0.4, 0.6, 1.0)) -> pd.DataFrame:
    """Mean test clustering accuracy and cost over seeds at a few budgets, data sets side by side."""
    table = curves.groupby(["dataset", "budget"])[["test clustering acc", "test cost"]].mean().unstack(0)
    return table.loc[[b for b in budgets if b in table.index]]


def unsupervised_full(results: Mapping[tuple[str, int], dict]) -> list[dict]:
    """Full-cost test clustering accuracy per (data set, seed)."""
    return [{"dataset": ds, "seed": s, "full_accuracy": out["full_accuracy"]} for (ds, s), out in results.items()]


def unsupervised_claims(results: Mapping[tuple[str, int], dict], budget: float = 0.4, tolerance: float = 1.0,
                        setting: str = "") -> list[Claim]:
    """Claim (iii): cluster means give the same early exit for clustering, saving about 60% of the
    cost with a negligible drop (read here as: clustering accuracy at cost <= ``budget`` within
    ``tolerance`` points of full cost). Interval over autoencoder seeds."""
    out = []
    for dataset in dict.fromkeys(ds for ds, _ in results):
        runs = [out_ for (ds, _), out_ in results.items() if ds == dataset]
        points = [r["cloud"].select(budget=budget) for r in runs]
        drops = None if None in points else [100 * (p["test_accuracy"] - r["full_accuracy"]) for p, r in zip(points, runs)]
        interval = seed_interval(drops) if drops and len(drops) >= 2 else None
        evidence = ("no operating point that cheap for some seed" if drops is None else
                    f"t interval over {len(drops)} autoencoder seeds" if interval else "one seed: no interval across trainings")
        out.append(claim("Cluster means give early exit for unsupervised clustering with a negligible accuracy drop",
                         f"clustering accuracy at cost <= {budget:g} - at full cost, {dataset}, mean over seeds",
                         None if drops is None else sum(drops) / len(drops), claimed="greater", than=-tolerance,
                         interval=None if interval is None else interval[1:], unit="points", evidence=evidence,
                         setting=f"{dataset}, autoencoder + k-means, {setting}",
                         paper_source="defense slide 21 and the authors' summary ('up to 60% less cost with "
                                      "negligible performance drop')"))
    return out
