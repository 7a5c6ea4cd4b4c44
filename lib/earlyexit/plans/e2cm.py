"""Runs of notebook 02_e2cm. Per (data set, backbone): the plain backbone (only the final classifier
is trained), its E2CM network (class-means heads fitted on it, no training), and the trained-head
rivals that start from the same checkpoint: SDN heads on the frozen backbone, BranchyNet (heads and
backbone jointly) and E2CM+SDN heads (linear on pooled feature + normalised distances). The
equal-training-time versions of the rivals need the backbone's measured epoch time, so the notebook
derives them with ``head_runs(..., seconds=...)`` (through ``rival_curves``); the plan lists the runs
that are known up front. The unsupervised variant's autoencoders are ordinary runs too.

Also here, because they are this notebook's and nobody else's: the tables, claims, paper comparisons
and generated conclusions built from those runs."""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Sequence

import pandas as pd

from ..backbones import build_backbone
from ..claims import Claim, claim, paper_number, paper_numbers
from ..data import DATASET_SHAPES, DataSpec
from ..e2cm import CloudSearch, MethodCurve, autoencoder_run, class_means_run, paired_accuracy_difference
from ..macs import mac_table
from ..report import comparison
from ..stats import seed_interval
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig, TrainedRun, build_model, train_cached

# the rivals of section 5 under their display names (the names the metrics and claims use)
EQUAL_TIME_RIVALS = {"SDN": "SDN (frozen backbone)", "BranchyNet": "BranchyNet (joint)"}
COMBINATION = {"SDN": "SDN", "E2CM+SDN": "E2CM+SDN"}


def every_block(backbone: str) -> tuple[int, ...]:
    """Exits after the stem and every block but the last (the last feeds the classifier), merged
    with the backbone's own default exits."""
    bb = build_backbone(backbone, width=0.25)
    return tuple(sorted(set(bb.default_exits) | set(range(len(bb.stages) - 1))))


def backbone_runs(backbones: list[str], widths: list[float], datasets: list[str], train_size: int | None,
                  val_size: int, test_size: int | None, epochs: list[int], batch_size: int, optimizer: str, lr: float,
                  weight_decay: float, label_smoothing: float, bf16: list[bool], channels_last: bool,
                  seed: int, **_) -> list[RunSpec]:
    if not len(backbones) == len(widths) == len(epochs) == len(bf16):
        raise ValueError("backbones, widths, epochs and bf16 must have one entry per backbone")
    return [RunSpec(
        f"e2cm_{name}_{dataset}",
        ModelSpec(name, width, every_block(name), "linear"),
        DataSpec(dataset, val_size=val_size, train_size=train_size, test_size=test_size, seed=seed),
        LossSpec("weighted_ce", {"weights": "final", "label_smoothing": label_smoothing}),
        TrainConfig(epochs=n, batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                    bf16=bf, channels_last=channels_last, seed=seed))
        for dataset in datasets for name, width, n, bf in zip(backbones, widths, epochs, bf16)]


def head_runs(parent: RunSpec, e2cm: RunSpec, head_lr: float, epochs: int, seconds: float | None = None,
              feature: str = "gap", tag: str = "") -> dict[str, RunSpec]:
    """The trained-head rivals of E2CM on ``parent``'s backbone, Adam at ``head_lr`` (the authors'
    optimiser), loss CE(final) + sum_i c_i CE(exit i) with c_i the exit's cost fraction (the
    authors' demo). ``seconds``: a wall-clock budget (``epochs`` is then only a cap)."""
    classes, channels, size = DATASET_SHAPES[parent.data.name]
    fractions = mac_table(build_model(parent.model, classes, channels, size)).exit_fractions
    weights = [round(f / fractions[-1], 6) for f in fractions[:-1]] + [1.0]
    t = parent.train
    train = TrainConfig(epochs=epochs, batch_size=128, optimizer="adam", lr=head_lr, weight_decay=0.0,
                        schedule="constant", crop_pad=2, flip=True, bf16=t.bf16, channels_last=t.channels_last,
                        seed=t.seed, time_budget_s=seconds)
    loss = LossSpec("weighted_ce", {"weights": weights})
    frozen = replace(train, freeze_backbone=True)
    heads = replace(parent.model, head="linear", head_options={})
    return {
        "SDN": RunSpec(f"{parent.name}_sdn{tag}", heads, parent.data, loss, frozen, init_from=parent),
        "BranchyNet": RunSpec(f"{parent.name}_branchy{tag}", heads, parent.data, loss, train, init_from=parent),
        "E2CM+SDN": RunSpec(f"{parent.name}_e2cm_sdn{tag}",
                            replace(parent.model, head="class_means_linear", head_options={"feature": feature}),
                            parent.data, loss, frozen, init_from=e2cm, init_heads=True),
    }


def plan(backbones: list[str], datasets: list[str], feature: str, fit_augment: bool, head_lr: float,
         combo_epochs: int, combo_backbones: list[str], unsup_datasets: list[str], unsup_seeds: list[int],
         unsup_epochs: int, unsup_channels: list[int], val_size: int, unsup_train_size: int | None,
         unsup_test_size: int | None, **parameters) -> list[RunSpec]:
    """Backbones, their E2CM networks, the no-time-limit SDN and E2CM+SDN heads, the autoencoders."""
    specs = []
    for parent in backbone_runs(backbones=backbones, datasets=datasets, val_size=val_size, **parameters):
        e2cm = class_means_run(parent, feature, fit_augment)
        specs += [parent, e2cm]
        if parent.model.backbone in combo_backbones:
            rivals = head_runs(parent, e2cm, head_lr, combo_epochs, feature=feature, tag="_full")
            specs += [rivals["SDN"], rivals["E2CM+SDN"]]
    specs += [autoencoder_run(d, s, unsup_epochs, unsup_channels, val_size, unsup_train_size, unsup_test_size)
              for d in unsup_datasets for s in unsup_seeds]
    return specs


# ---------------------------------------------------------------- the rivals, trained and searched
def rival_curves(parent: TrainedRun, e2cm: RunSpec, search: CloudSearch, methods: Mapping[str, str],
                 head_lr: float, epochs: int, seconds: float | None = None, feature: str = "gap",
                 tag: str = "") -> dict[str, MethodCurve]:
    """Train (or load) the rivals ``methods`` (head_runs key -> display name) on ``parent``'s backbone
    and search each one's thresholds exactly as E2CM's: one pipeline for sections 5 and 6."""
    specs = head_runs(parent.spec, e2cm, head_lr, epochs, seconds, feature, tag)
    return {name: search.curve(name, train_cached(specs[key], parent.data, progress=False))
            for key, name in methods.items()}


def head_training_table(curves: Mapping[str, Mapping[str, MethodCurve]], skip: Sequence[str] = ("E2CM",)) -> pd.DataFrame:
    """What each time-limited rival managed to train: optimiser steps, the same in epochs of head
    training, and the accuracy of its final exit (joint training can damage the backbone's classifier)."""
    rows = []
    for label, methods in curves.items():
        for name, c in methods.items():
            if name in skip:
                continue
            steps = sum(h.get("steps", 0) for h in c.run.history)
            rows.append({"backbone": label, "method": name, "steps": steps,
                         "epochs of heads": steps / (len(c.run.data.train) // c.run.spec.train.batch_size),
                         "final exit test acc": c.test.exit_accuracies()[-1]})
    return pd.DataFrame(rows)


def time_budget_lines(runs: Mapping[str, TrainedRun], curves: Mapping[str, Mapping[str, MethodCurve]],
                      budget_epochs: float) -> list[str]:
    """Wall clock of every method beside the budget (machine-dependent: for a cell whose output is not
    compared). E2CM's entry is the class-means fit."""
    lines = []
    for label, run in runs.items():
        budget = budget_epochs * run.seconds_per_epoch
        used = "; ".join(f"{name} {c.run.train_seconds:.0f} s" + (" (over the budget)" if c.run.train_seconds > budget else "")
                         for name, c in curves[label].items())
        lines.append(f"{label}: budget {budget:.0f} s ({budget_epochs:g} training epoch); {used}")
    return lines


def plot_hulls(ax, curves: Mapping[str, MethodCurve]) -> None:
    """Each method's hull (chosen on the search split) as evaluated on test, in % (sections 5 and 6)."""
    for name, c in curves.items():
        cost, acc = c.cloud.curve("test", "hull")
        ax.plot(cost, [100 * a for a in acc], "o-", ms=3, label=name)


def combination_table(curves: Mapping[str, Mapping[str, MethodCurve]], budgets: Sequence[float]) -> pd.DataFrame:
    """Section 6: our test accuracy (%) and cost per (backbone, method, budget) beside the poster's
    table (ResNet-152 on CIFAR-10; NaN where the poster has no such row)."""
    rows = []
    for label, methods in curves.items():
        for name, c in methods.items():
            for b in budgets:
                point = c.point(b)
                rows.append({"backbone": label, "method": name, "budget": b,
                             "ours test acc (%)": 100 * point["test_accuracy"] if point else None,
                             "ours test cost": point["test_cost"] if point else None,
                             "poster acc (%)": _poster(name, b)})
    return pd.DataFrame(rows)


def _poster(method: str, budget: float) -> float | None:
    try:
        return float(paper_number("e2cm", table="A-1", method=method, budget=budget).value)
    except ValueError:
        return None


def paper_plateau(dataset: str) -> float | None:
    """The mean clustering-accuracy plateau of the authors' unsupervised slide (None if not read off)."""
    try:
        return float(paper_number("e2cm", table="A-2", dataset=dataset).value)
    except ValueError:
        return None


# ---------------------------------------------------------------- claims and paper numbers
def equal_time_claims(curves: Mapping[str, Mapping[str, MethodCurve]], budgets: Sequence[float],
                      budget_epochs: float, setting: str) -> list[Claim]:
    """Claim (i): under a training-time budget of about one epoch E2CM is more accurate than the
    trained-head rivals at the same cost. One claim per (backbone, rival, budget): E2CM minus the rival,
    with a paired bootstrap over test images (both use the same backbone and test set)."""
    out = []
    for label, methods in curves.items():
        e2cm = methods["E2CM"]
        for name, rival in methods.items():
            if name == "E2CM":
                continue
            for b in budgets:
                out.append(_paired_claim(
                    "With the same training time (about one epoch), E2CM is more accurate than " + name,
                    e2cm, rival, b, f"{label}, {budget_epochs:g} backbone epoch(s) of wall clock, {setting}",
                    f"one seed: the {name} heads are one training, no interval across trainings",
                    paper_source="IJCNN 2022 poster and defense slide 19: fixed one-epoch budget, ResNet-152 and "
                                 "WideResNet-101 (curves only)"))
    return out


def combination_claims(curves: Mapping[str, Mapping[str, MethodCurve]], budgets: Sequence[float],
                       setting: str) -> list[Claim]:
    """Claim (ii): without a time limit, E2CM+SDN is at least as accurate as SDN at the same cost; the
    paper's number is the poster's difference at that cost."""
    out = []
    for label, methods in curves.items():
        for b in budgets:
            ours, base = _poster("E2CM+SDN", b), _poster("SDN", b)
            out.append(_paired_claim(
                "Without a time limit, E2CM combined with SDN improves on SDN", methods["E2CM+SDN"], methods["SDN"], b,
                f"{label}, heads trained to the epoch limit, {setting}",
                "one seed: each head set is one training, no interval across trainings",
                paper=None if None in (ours, base) else round(ours - base, 2),
                paper_source="IJCNN 2022 poster table, ResNet-152 on CIFAR-10"))
    return out


def _paired_claim(statement: str, a: MethodCurve, b: MethodCurve, budget: float, setting: str, seeds: str,
                  paper: float | None = None, paper_source: str = "") -> Claim:
    diff = paired_accuracy_difference(a, b, budget)
    missing = [c.name for c in (a, b) if c.point(budget) is None]
    if diff is None:
        evidence = f"{' and '.join(missing)}: no operating point costs <= {budget:g} on the search split"
    else:
        evidence = (f"paired bootstrap over {len(a.test)} test images (2000 draws), operating points chosen on "
                    f"the search split; {seeds}")
    return claim(statement, f"{a.name} - {b.name} test accuracy at cost <= {budget:g}",
                 None if diff is None else diff[0], claimed="greater", than=0.0,
                 interval=None if diff is None else diff[1:], unit="points", evidence=evidence, setting=setting,
                 paper=paper, paper_source=paper_source)


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


def paper_comparisons(e2cm: MethodCurve, label: str, combination: pd.DataFrame,
                      results: Mapping[tuple[str, int], dict], search_split: str, seed: int) -> list[dict]:
    """Every paper number beside ours: the poster table (section 6), the authors' demo (E2CM alone on
    the first backbone, costs 0.1 to 0.3) and the unsupervised plateaus."""
    out = []
    for row in combination.to_dict("records"):
        if row["method"] in COMBINATION.values():
            ours = row["ours test acc (%)"]
            out.append(comparison(f"poster table: {row['method']} accuracy at cost {row['budget']}",
                                  None if pd.isna(ours) else ours, _poster(row["method"], row["budget"]), "%",
                                  f"{row['backbone']}, JPEG CIFAR-10, seed {seed}; poster: ResNet-152 CIFAR-10"))
    for b in (0.1, 0.2, 0.3):
        point = e2cm.point(b)
        out.append(comparison(f"E2CM test accuracy at cost {b} ({label})", 100 * point["test_accuracy"] if point else None,
                              float(paper_number("e2cm", table="demo", method="E2CM", budget=b).value), "%",
                              "paper: official demo WRN-101-2 on CIFAR-10 (test point closest to the cost); ours: "
                              f"chosen on {search_split}, JPEG CIFAR-10, seed {seed}"))
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


# ---------------------------------------------------------------- options and conclusions
def options(feature: str, fit_augment: bool, prediction: str, threshold_space: str, search_split: str,
            budget_epochs: float, **_) -> dict:
    """The options a reader needs to interpret the numbers (where the paper or code leave a choice)."""
    return {"feature": feature, "fit_augment": fit_augment, "prediction": prediction,
            "threshold_space": threshold_space, "search_split": search_split, "budget_epochs": budget_epochs,
            "normalisation": "per (exit, class) mean training distance",
            "distance_macs": "K(3D-1)/2 per exit passed (the paper's FLOP count, halved)",
            "combination": "normalised distances concatenated to the pooled head input (our assumption)"}


def protocol(search_split: str, n_thresholds: int, threshold_space: str, budget_epochs: float, head_lr: float,
             combo_epochs: int, **_) -> dict:
    """How every compared configuration was chosen (for the metrics file)."""
    return {"operating points": f"most accurate point costing <= the budget on {search_split}, reported on test",
            "threshold search": f"{n_thresholds} random per-exit threshold vectors ({threshold_space}), the same for "
                                "every method (E2CM's pseudo-probability, max softmax for trained heads)",
            "equal time": f"every method starts from the same trained backbone; rivals stop after {budget_epochs:g} "
                          "backbone epoch(s) of wall clock",
            "rivals": f"Adam {head_lr:g}, loss CE(final) + sum_i c_i CE(exit i), c_i the exit's cost fraction; "
                      f"{combo_epochs} epochs without a time limit",
            "intervals": "paired bootstrap over test images (one backbone, one test set); t interval over "
                         "autoencoder seeds for the unsupervised claim"}


def backbone_summary(runs: Mapping[str, TrainedRun], e2cm_runs: Mapping[str, TrainedRun]) -> dict:
    """Per backbone: its run key and its E2CM run's, epochs, MACs and the classifier's test accuracy."""
    return {label: {"run": r.spec.key, "e2cm_run": e2cm_runs[label].spec.key, "epochs": r.spec.train.epochs,
                    "MMACs": r.macs.backbone_macs / 1e6, "test_accuracy": r.outputs("test").exit_accuracies()[-1]}
            for label, r in runs.items()}


def unsupervised_full(results: Mapping[tuple[str, int], dict]) -> list[dict]:
    """Full-cost test clustering accuracy per (data set, seed)."""
    return [{"dataset": ds, "seed": s, "full_accuracy": out["full_accuracy"]} for (ds, s), out in results.items()]


def _pct(values) -> str:
    return "/".join("n/a" if v is None or pd.isna(v) else f"{100 * v:.1f}" for v in values)


def _verdicts(claims: Sequence[Claim], comparison_start: str, setting_start: str = "") -> str:
    chosen = [c.verdict for c in claims if c.comparison.startswith(comparison_start) and c.setting.startswith(setting_start)]
    counts = {v: chosen.count(v) for v in dict.fromkeys(chosen)}
    return ", ".join(f"{v} ({n} of {len(chosen)} budgets)" for v, n in counts.items()) or "no claim"


def conclusions(metrics: dict, claims: Sequence[Claim]) -> str:
    """The notebook's conclusions as markdown, every number read from ``metrics`` and every verdict
    from ``claims`` (so the text cannot drift from the run it describes)."""
    o = metrics["options"]
    ncm = pd.DataFrame(metrics["ncm_accuracy"])
    lines = [f"Generated from this run's metrics. Options: {o['feature']} features, class means on "
             f"{'augmented' if o['fit_augment'] else 'clean'} training images, {o['prediction']} prediction, "
             f"{o['normalisation']}, {o['threshold_space']} threshold draws, operating points chosen on "
             f"{o['search_split']} and reported on test. Accuracies in %, costs as fractions of the plain backbone.", ""]
    depth = []
    for label, df in ncm.groupby("backbone", sort=False):
        early = df.iloc[:-1]
        depth.append(f"{label} from {100 * early['test acc'].iloc[0]:.1f} (first exit) to "
                     f"{100 * early['test acc'].iloc[-1]:.1f} (last early exit) against {100 * df['test acc'].iloc[-1]:.1f} "
                     f"for its classifier")
    gap = 100 * (ncm["train acc"] - ncm["test acc"]).abs().max()
    early_exits = ncm["exit"] < ncm.groupby("backbone")["exit"].transform("max")
    overhead = ncm.loc[early_exits, "overhead % of cost"].max()
    text = (f"- **Depth trend.** Nearest-class-mean test accuracy: {'; '.join(depth)}. Train and test accuracies "
            f"differ by at most {gap:.1f} points; the distances cost at most {overhead:.2g}% of the cost spent up to an "
            f"exit ({o['feature']} features).")
    if metrics.get("flatten_ablation"):
        ab = pd.DataFrame(metrics["flatten_ablation"]).iloc[:-1]
        gain = ab["flatten test acc"] - ab["gap test acc"]
        k = int(gain.idxmax())
        extra = ab["flatten cost"] - ab["gap cost"]
        text += (f" Flattened features (the authors' code) beat pooled ones at {int((gain > 0).sum())} of {len(ab)} "
                 f"early exits of the first backbone (largest gain at exit {int(ab['exit'][k])}: "
                 f"{100 * ab['flatten test acc'][k]:.1f} vs {100 * ab['gap test acc'][k]:.1f}) for "
                 f"{extra.min():.3f} to {extra.max():.3f} more cost.")
    lines.append(text)
    points = pd.DataFrame(metrics["e2cm_points"]).dropna()
    if len(points):
        loss = 100 * (points["val_accuracy"] - points["test_accuracy"])
        i = loss.idxmax()
        lines.append(f"- **Hull transfer.** E2CM operating points chosen on {o['search_split']} lose at most "
                     f"{loss.max():.1f} points on test (largest: {points['backbone'][i]} at cost <= {points['budget'][i]:g}, "
                     f"{100 * points['val_accuracy'][i]:.1f} on {o['search_split']}, {100 * points['test_accuracy'][i]:.1f} on test).")
    eq = pd.DataFrame(metrics["equal_time"])
    steps = pd.DataFrame(metrics["equal_time_steps"])
    budgets = list(dict.fromkeys(eq["budget"]))
    text = (f"- **Equal training time ({o['budget_epochs']:g} backbone epoch of wall clock), test accuracy at cost <= "
            f"{'/'.join(f'{b:g}' for b in budgets)}.**")
    for label, df in eq.groupby("backbone", sort=False):
        accs = "; ".join(f"{m} {_pct(g['test_accuracy'])}" for m, g in df.groupby("method", sort=False))
        rivals = [m for m in dict.fromkeys(df["method"]) if m != "E2CM"]
        verdicts = "; ".join(f"E2CM - {m}: {_verdicts(claims, f'E2CM - {m}', label)}" for m in rivals)
        s = steps[steps["backbone"] == label]
        heads = ", ".join(f"{m} {e:.1f}" for m, e in zip(s["method"], s["epochs of heads"]))
        finals = ", ".join(f"{m} {100 * a:.1f}" for m, a in zip(s["method"], s["final exit test acc"]))
        text += (f" {label}: {accs}. Verdicts: {verdicts}. Epochs of head training within the budget: {heads}; "
                 f"final-exit test accuracy {finals} against {100 * metrics['backbones'][label]['test_accuracy']:.1f} "
                 f"for the backbone alone.")
    lines.append(text)
    combo = pd.DataFrame(metrics["combination"])
    if len(combo):
        text = "- **E2CM+SDN vs SDN without a time limit (poster table analogue).**"
        for label, df in combo.groupby("backbone", sort=False):
            acc = {m: list(g["ours test acc (%)"]) for m, g in df.groupby("method", sort=False)}
            bs = list(dict.fromkeys(df["budget"]))
            diff = ["n/a" if pd.isna(a) or pd.isna(b) else f"{a - b:+.1f}" for a, b in zip(acc["E2CM+SDN"], acc["SDN"])]
            poster = ["n/a" if None in (_poster("E2CM+SDN", b), _poster("SDN", b)) else
                      f"{_poster('E2CM+SDN', b) - _poster('SDN', b):+.1f}" for b in bs]
            text += (f" {label} at cost <= {'/'.join(f'{b:g}' for b in bs)}: E2CM+SDN {_pct([a / 100 for a in acc['E2CM+SDN']])}"
                     f" vs SDN {_pct([a / 100 for a in acc['SDN']])} ({'/'.join(diff)} points; the poster, ResNet-152: "
                     f"{'/'.join(poster)}). Verdict: {_verdicts(claims, 'E2CM+SDN - SDN', label)}.")
        lines.append(text + " The combination's input (distances concatenated to the head's) is our assumption.")
    unsup = pd.DataFrame(metrics["unsupervised"])
    full = pd.DataFrame(metrics["unsupervised_full"])
    if len(unsup):
        parts = []
        for ds, df in unsup.groupby("dataset", sort=False):
            at = df[df["budget"] == 0.4]["test clustering acc"]
            plateau = paper_plateau(ds)
            verdict = next((c.verdict for c in claims if c.setting.startswith(f"{ds},")), "no claim")
            parts.append(f"{ds} {'n/a' if at.isna().any() else f'{100 * at.mean():.1f}'} at cost <= 0.4 vs "
                         f"{100 * full[full['dataset'] == ds]['full_accuracy'].mean():.1f} at full cost "
                         f"(paper plateau {'n/a' if plateau is None else f'{plateau:g}'}; {verdict})")
        lines.append(f"- **Unsupervised (autoencoder + k-means, {full['seed'].nunique()} seeds), mean clustering "
                     f"accuracy:** {'; '.join(parts)}.")
    lines += ["", "Limits: the supervised parts are one training each (the paired bootstrap covers the test "
              "sample, not training noise); short trainings and narrow backbones, far below the paper's "
              "ResNet-152 and WideResNet-101 accuracies, so only differences between methods are comparable."]
    return "\n".join(lines)
