"""Notebook 02's tables of E2CM on its own and its summary, built on ``methods.e2cm`` and
``studies.e2cm``: the per-exit nearest-class-mean accuracies of every E2CM run (the depth trend, with how
often the nearest raw mean and the largest normalised score disagree), flattened against pooled features,
the unsupervised experiment (``methods.e2cm.unsupervised_e2cm``: autoencoder -> k-means -> cluster means
at the encoder's exits): per (data set, seed) the operating point chosen on validation for each cost
budget, the mean curve over seeds (the red curve of the authors' slide), a summary at a few budgets, the
full-cost clustering accuracies and claim (iii); then every paper number beside ours and the generated
conclusions. The comparison with the rivals and claims (i) and (ii) are ``studies.e2cm``."""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from .claims import Claim, claim, paper_number
from .e2cm import ABSTRACT, CLAIM_PAIRS, E2CM, E2CMS, EQUAL_TIME, NO_LIMIT, POSTER_NAMES, paper_plateau
from ..evaluate import exit_scores
from ..methods.e2cm import E2CMExit, e2cm_policy
from ..outputs import CachedOutputs, outputs_of_runs
from .report import comparison
from ..stats import seed_estimate, seed_interval
from ..train import TrainedRun

__all__ = ["prediction_disagreement", "ncm_table", "ncm_tables", "feature_table", "UNSUP_GRID", "unsupervised_curves",
           "unsupervised_mean", "unsupervised_summary", "unsupervised_full", "unsupervised_training",
           "unsupervised_claims", "paper_comparisons", "conclusions"]


# ---------------------------------------------------------------- per exit
def prediction_disagreement(outputs: CachedOutputs, policy: E2CMExit) -> list[float]:
    """Share of samples per early exit where the nearest raw mean and the largest normalised score differ."""
    return [(policy.prediction(k, outputs.logits[k]) != outputs.logits[k].argmax(1)).float().mean().item()
            for k in range(outputs.num_exits - 1)]


def _labelled(label: str | tuple[str, int]) -> dict:
    """Table columns of a run label: (backbone, seed) or a backbone alone."""
    return {"backbone": label[0], "seed": label[1]} if isinstance(label, tuple) else {"backbone": label}


def ncm_table(runs: Mapping[str | tuple[str, int], TrainedRun], prediction: str = "nearest") -> pd.DataFrame:
    """Every sample forced out at each exit of each E2CM run (the last exit is the backbone's own
    classifier): its feature, train and test accuracy, cost, the distances' share of the cost spent up to
    the exit, and how often the nearest raw mean differs from the largest normalised score (the authors'
    demo prints the first two per exit)."""
    rows = []
    for label, run in runs.items():
        feature = run.net.heads[0].feature
        policy = e2cm_policy(run.net, prediction=prediction)
        test = run.outputs("test")
        train_acc, test_acc = (exit_scores(o, policy).exit_accuracies() for o in (run.outputs("train"), test))
        disagree = prediction_disagreement(test, policy) + [0.0]
        macs = run.macs
        for j, cost in enumerate(macs.exit_fractions):
            own = macs.head_macs[j] if j < len(run.net.heads) else 0
            rows.append({**_labelled(label), "feature": feature, "exit": j + 1, "cost": cost, "train acc": train_acc[j],
                         "test acc": test_acc[j], "overhead % of cost": 100 * own / macs.exit_macs[j],
                         "nearest != argmax p": disagree[j]})
    return pd.DataFrame(rows)


def ncm_tables(e2cm_runs: Mapping[tuple[str, int], Mapping[str, TrainedRun]], prediction: str = "nearest") -> pd.DataFrame:
    """``ncm_table`` of every E2CM network ({(backbone, seed): {method: run}}), with a method column. The
    networks of one backbone share its stages, so each split costs one backbone pass for all of them."""
    for fits in e2cm_runs.values():
        for split in ("train", "test"):
            outputs_of_runs(list(fits.values()), split)
    methods = dict.fromkeys(m for fits in e2cm_runs.values() for m in fits)
    return pd.concat([ncm_table({k: fits[m] for k, fits in e2cm_runs.items()}, prediction).assign(method=m)
                      for m in methods], ignore_index=True)


def feature_table(ncm: pd.DataFrame) -> pd.DataFrame:
    """Nearest-class-mean test accuracy and cost per exit, mean over seeds, one column pair per
    feature (flattened maps: the authors' code; pooled: ours), backbones one under the other."""
    table = ncm.pivot_table(index=["backbone", "exit"], columns="feature", values=["test acc", "cost"],
                            aggfunc="mean", sort=False)
    return table.rename(columns={"gap": "pooled", "flatten": "flattened"})


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
    """The mean over seeds (the red curve of the authors' slide), at the budgets every seed reaches; with
    several seeds also the 95% t interval of the mean accuracy ("low", "high", clipped to [0, 1])."""
    df = curves[curves["dataset"] == dataset].dropna()
    seeds = curves.loc[curves["dataset"] == dataset, "seed"].nunique()
    complete = df.groupby("budget").filter(lambda g: len(g) == seeds)
    mean = complete.groupby("budget")[["test cost", "test clustering acc"]].mean()
    if seeds > 1:
        bounds = complete.groupby("budget")["test clustering acc"].apply(
            lambda g: seed_interval(list(g), (0.0, 1.0))[1:])
        mean["low"], mean["high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    return mean


def unsupervised_summary(curves: pd.DataFrame, budgets: Sequence[float] = (0.25, 0.4, 0.6, 1.0)) -> pd.DataFrame:
    """Mean test clustering accuracy and cost over seeds at a few budgets, data sets side by side."""
    table = curves.groupby(["dataset", "budget"])[["test clustering acc", "test cost"]].mean().unstack(0)
    return table.loc[[b for b in budgets if b in table.index]]


def unsupervised_full(results: Mapping[tuple[str, int], dict]) -> list[dict]:
    """Full-cost test clustering accuracy per (data set, seed)."""
    return [{"dataset": ds, "seed": s, "full_accuracy": out["full_accuracy"], "epochs": out.get("autoencoder_epochs")}
            for (ds, s), out in results.items()]


def unsupervised_training(results: Mapping[tuple[str, int], dict]) -> pd.DataFrame:
    """The autoencoders' epochs and training reconstruction loss per epoch (whether it still falls)."""
    return pd.DataFrame([{"dataset": ds, "seed": s, "epochs": out["autoencoder_epochs"],
                          **{f"loss epoch {e + 1}": v for e, v in enumerate(out["autoencoder_loss"])}}
                         for (ds, s), out in results.items()])


def unsupervised_claims(results: Mapping[tuple[str, int], dict], budget: float = 0.4, tolerance: float = 1.0,
                        setting: str = "") -> list[Claim]:
    """Claim (iii): cluster means give the same early exit for clustering, saving about 60% of the
    cost with a negligible drop (read here as: clustering accuracy at cost <= ``budget`` within
    ``tolerance`` points of full cost). Interval over autoencoder seeds. A sensitivity row: the
    clustering network and its training are ours, the paper does not document them."""
    out = []
    for dataset in dict.fromkeys(ds for ds, _ in results):
        runs = [out_ for (ds, _), out_ in results.items() if ds == dataset]
        points = [r["cloud"].select(budget=budget) for r in runs]
        drops = None if None in points else [100 * (p["test_accuracy"] - r["full_accuracy"]) for p, r in zip(points, runs)]
        ours, interval = (None, None) if drops is None else seed_estimate(drops)
        evidence = ("no operating point that cheap for some seed" if drops is None else
                    f"mean and t interval over {len(drops)} autoencoder seeds" if interval else "one seed: no interval across trainings")
        epochs = sorted({r["autoencoder_epochs"] for r in runs if "autoencoder_epochs" in r})
        trained = f", autoencoder {'/'.join(map(str, epochs))} epoch(s)" if epochs else ""
        out.append(claim("Cluster means give early exit for unsupervised clustering with a negligible accuracy drop",
                         f"clustering accuracy at cost <= {budget:g} - at full cost, {dataset}, mean over seeds",
                         ours, claimed="greater", than=-tolerance, interval=interval, unit="points", evidence=evidence,
                         setting=f"{dataset}, our autoencoder + k-means (the paper's clustering network is not "
                                 f"documented){trained}, {setting}",
                         paper_source="defense slide 21 and the authors' summary ('up to 60% less cost with "
                                      "negligible performance drop')",
                         statement_source=ABSTRACT["unsupervised"] + "; the authors' summary: up to 60% less cost "
                                          "\"with negligible performance drop\"",
                         threshold_source=f"our reading: 'negligible' taken as within {tolerance:g} point(s) of the "
                                          f"full-cost clustering accuracy at cost <= {budget:g} (the '60% less cost'); "
                                          "the paper gives no number for it",
                         role="sensitivity"))
    return out


# ---------------------------------------------------------------- paper numbers and conclusions
def paper_comparisons(points: pd.DataFrame, combination: pd.DataFrame, results: Mapping[tuple[str, int], dict],
                      split: str) -> list[dict]:
    """Every paper number beside ours: the poster table (section 6), the authors' demo (E2CM alone,
    costs 0.1 to 0.3, mean over backbone seeds) and the unsupervised plateaus."""
    out = []
    for row in combination.to_dict("records"):
        ours = row["ours test acc (%)"]
        out.append(comparison(f"poster table: {POSTER_NAMES[row['method']]} accuracy at cost {row['budget']}",
                              None if pd.isna(ours) else ours, row["poster acc (%)"], "%",
                              f"{row['backbone']}, JPEG CIFAR-10, mean over seeds; poster: ResNet-152 CIFAR-10"))
    e2cm = points[(points["search split"] == split) & (points["method"] == E2CM)]
    for label, df in e2cm.groupby("backbone", sort=False):
        for b in (0.1, 0.2, 0.3):
            acc = df[df["budget"] == b]["test accuracy"]
            out.append(comparison(f"E2CM test accuracy at cost {b} ({label})",
                                  None if acc.empty or acc.isna().any() else 100 * acc.mean(),
                                  float(paper_number("e2cm", table="demo", method="E2CM", budget=b).value), "%",
                                  "paper: official demo WRN-101-2 on CIFAR-10 (test point closest to the cost); ours: "
                                  f"chosen on {split}, JPEG CIFAR-10, mean over {df['seed'].nunique()} seed(s)"))
    for dataset in dict.fromkeys(ds for ds, _ in results):
        full = [r["full_accuracy"] for (ds, _), r in results.items() if ds == dataset]
        at40 = [r["cloud"].select(budget=0.4) for (ds, _), r in results.items() if ds == dataset]
        out.append(comparison(f"unsupervised {dataset}: mean clustering accuracy at full cost", 100 * sum(full) / len(full),
                              paper_plateau(dataset), "%",
                              f"{len(full)} seeds; paper: red-curve plateau read off the slide (±2)"))
        if None not in at40:
            out.append(comparison(f"unsupervised {dataset}: mean clustering accuracy at cost 0.4",
                                  100 * sum(p["test_accuracy"] for p in at40) / len(at40), None, "%", f"{len(at40)} seeds"))
    return out


def _verdicts(claims: Sequence[Claim], comparison_start: str) -> str:
    chosen = [c.label for c in claims if c.comparison.startswith(comparison_start)]
    counts = {v: chosen.count(v) for v in dict.fromkeys(chosen)}
    return ", ".join(f"{v} ({n} of {len(chosen)} budgets)" for v, n in counts.items()) or "no claim"


def _mean_sd(values: pd.Series) -> str:
    v = 100 * values
    return "n/a" if v.isna().any() else f"{v.mean():.1f}" + (f" ± {v.std():.1f}" if len(v) > 1 else "")


def conclusions(metrics: dict, claims: Sequence[Claim]) -> str:
    """The notebook's conclusions as markdown, every number read from ``metrics`` and every verdict
    from ``claims`` (so the text cannot drift from the run it describes)."""
    o = metrics["options"]
    ncm = pd.DataFrame(metrics["ncm_accuracy"])
    seeds = ncm["seed"].nunique()
    lines = [f"Generated from this run's metrics. {seeds} backbone seed(s); means ± standard deviation over seeds. "
             f"{E2CM} compares flattened feature maps (the authors' code), {E2CMS[1]} pooled ones; class means on "
             f"{'augmented' if o['fit_augment'] else 'clean'} training images, {o['prediction']} prediction, exit on "
             f"{o['exit test']}, {o['threshold_space']} threshold draws, operating points chosen on "
             f"{o['search_split']} and reported on test. Accuracies in %, costs as fractions of the plain backbone.", ""]
    depth = []
    for (label, method), df in ncm.groupby(["backbone", "method"], sort=False):
        first, last = df["exit"].min(), df["exit"].max()
        pick = lambda e: _mean_sd(df[df["exit"] == e]["test acc"])  # noqa: E731
        early = df[df["exit"] < last]
        depth.append(f"{method} ({label}) from {pick(first)} (first exit) to {pick(last - 1)} (last early exit) "
                     f"against {pick(last)} for the classifier, distances at most "
                     f"{early['overhead % of cost'].max():.2g}% of the cost spent up to an exit")
    lines.append(f"- **Depth trend.** Nearest-class-mean test accuracy: {'; '.join(depth)}. Train and test "
                 f"accuracies differ by at most {100 * (ncm['train acc'] - ncm['test acc']).abs().max():.1f} points.")
    points = pd.DataFrame(metrics["operating_points"])
    claimed = set(pd.DataFrame(metrics["per_seed_differences"])["budget"])   # the budgets the claims judge
    points = points[points["budget"].isin(claimed)]
    main = points[points["search split"] == o["search_split"]]
    for title, methods in (("Equal training time", E2CMS + EQUAL_TIME), ("Without a time limit", NO_LIMIT)):
        df = main[main["method"].isin(methods)]
        budgets = list(dict.fromkeys(df["budget"]))
        accs = "; ".join(f"{m} {'/'.join(_mean_sd(g[g['budget'] == b]['test accuracy']) for b in budgets)}"
                         for m, g in df.groupby("method", sort=False))
        verdicts = "; ".join(f"{a} - {b}: {_verdicts(claims, f'{a} - {b} test')}"
                             for a, b in CLAIM_PAIRS if a in methods and b in methods)
        lines.append(f"- **{title}, test accuracy at cost <= {'/'.join(f'{b:g}' for b in budgets)}.** {accs}. "
                     f"Verdicts: {verdicts}.")
    training = pd.DataFrame(metrics["head_training"])
    t = (training[~training["method"].isin(E2CMS)].groupby("method", sort=False)
         .agg(epochs=("epochs of heads", "mean"), read=("backbone read", "first"),
              final=("final exit test acc", "mean")))
    lines.append("- **Training the rivals got** (mean head epochs, how the heads read the backbone; final-exit test "
                 "accuracy): " + "; ".join(f"{m} {r.epochs:.1f}, {r.read} ({100 * r.final:.1f})"
                                           for m, r in t.iterrows()) + ".")
    other = [s for s in points["search split"].unique() if s != o["search_split"]]
    for split in other:
        both = points.pivot_table(index=["method", "budget"], columns="search split", values="test accuracy")
        gap = 100 * (both[split] - both[o["search_split"]])
        lines.append(f"- **Thresholds searched on {split}** (the paper's protocol) instead of {o['search_split']}: "
                     f"test accuracy moves by {gap.min():+.1f} to {gap.max():+.1f} points across methods and budgets.")
    unsup = pd.DataFrame(metrics["unsupervised"])
    full = pd.DataFrame(metrics["unsupervised_full"])
    if len(unsup):
        parts = []
        for ds, df in unsup.groupby("dataset", sort=False):
            at = df[df["budget"] == 0.4]["test clustering acc"]
            plateau = paper_plateau(ds)
            verdict = next((c.label for c in claims if c.setting.startswith(f"{ds},")), "no claim")
            parts.append(f"{ds} {'n/a' if at.isna().any() else f'{100 * at.mean():.1f}'} at cost <= 0.4 vs "
                         f"{100 * full[full['dataset'] == ds]['full_accuracy'].mean():.1f} at full cost "
                         f"(paper plateau {'n/a' if plateau is None else f'{plateau:g}'}; {verdict})")
        epochs = "/".join(str(int(e)) for e in sorted(set(full["epochs"].dropna()))) or "?"
        lines.append(f"- **Unsupervised (autoencoder trained {epochs} epoch(s) + k-means, {full['seed'].nunique()} "
                     f"seeds), mean clustering accuracy:** {'; '.join(parts)}.")
    lines += ["", "Limits: narrow backbones after short trainings, far below the paper's ResNet-152 and "
              "WideResNet-101 accuracies, so only differences between methods are comparable; the combination's "
              "input (distances concatenated to the pooled feature) and the unsupervised set-up are our assumptions."]
    return "\n".join(lines)
