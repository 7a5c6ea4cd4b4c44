"""Notebook 02's study of E2CM, built on ``methods.e2cm``: its plan, the trained-head rivals, the shared
threshold search, the evaluation tables, claims (i) and (ii), paper comparisons and generated
conclusions. Per backbone and training seed: the plain backbone (in the cpu profile the shared
reference network, form "plain"; in the paper profile the paper's own backbones), its two E2CM networks
(class-means heads fitted on it, no training): "E2CM" on flattened feature maps (the feature of the
authors' code, the headline) and "E2CM (pooled)" on globally pooled ones (ours, a sensitivity row), and
the rivals that start from the same checkpoint. Claim (i)'s headline rivals are trained as much as the
paper trains them: SDN heads on the frozen backbone, reading it on every batch, for one epoch, and
BranchyNet (heads and backbone jointly) for one epoch. "SDN (equal time)" (heads on inputs computed once,
stopped at max(E2CM's fit times, one backbone epoch) of wall clock: about 21 head epochs in the cpu
profile, the paper's no-time-limit regime) is a sensitivity row. Claim (ii): SDN and E2CM+SDN heads (linear
on pooled feature + normalised distances) trained to a validation plateau. The rivals' runs depend on measured times, so
the notebook derives them with ``method_curves``; the plan lists the runs known up front, the
unsupervised variant's autoencoders included. E2CM's own per-exit tables and the unsupervised
experiment are ``studies.e2cm_tables``."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

import pandas as pd
import torch

from ..backbones import build_backbone
from .claims import Claim, claim, paper_number
from ..data import DATASET_SHAPES, DataSpec
from ..evaluate import ThresholdSweep, evaluate_policy, select
from ..methods.e2cm import autoencoder_run, class_means_run, e2cm_policy, threshold_cloud
from ..macs import mac_table
from ..outputs import CachedOutputs, outputs_of_runs
from ..policies import MaxProbability, PerExitThresholds
from ..stats import paired_bootstrap, seed_interval
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig, TrainedRun, build_model, train_cached
from .plots import method_style, network_title
from .reference import reference_runs

__all__ = ["E2CM", "E2CM_POOLED", "FEATURES", "E2CMS", "SDN_ONE", "BRANCHY_ONE", "SDN_TIMED", "EQUAL_TIME",
           "NO_LIMIT", "CLAIM_ROWS", "CLAIM_PAIRS", "POSTER_NAMES", "HEAD_BATCH", "ABSTRACT", "every_block",
           "backbone_label", "backbone_title", "backbone_runs", "parent_runs", "e2cm_spec", "fit_e2cm", "head_runs", "plan",
           "CloudSearch", "MethodCurve", "points_table", "paired_accuracy_difference", "equal_time_budget",
           "head_steps", "rival_specs", "method_curves", "flat", "stopped_by", "no_limit_stops",
           "head_training_table", "timing_table", "plot_hulls", "operating_points", "search_fronts", "seed_means",
           "split_comparison", "combination_table", "paper_plateau", "seed_differences", "pair_claims",
           "e2cm_claims", "options", "protocol", "backbone_summary"]

# the compared methods under their display names (the names the metrics and claims use)
E2CM = "E2CM"                        # flattened feature maps: the authors' code, the headline
E2CM_POOLED = "E2CM (pooled)"        # globally average-pooled features: ours, a sensitivity row
FEATURES = {E2CM: "flatten", E2CM_POOLED: "gap"}
E2CMS = tuple(FEATURES)
SDN_ONE, BRANCHY_ONE, SDN_TIMED = "SDN (1 epoch)", "BranchyNet (1 epoch)", "SDN (equal time)"
EQUAL_TIME = (SDN_ONE, BRANCHY_ONE, SDN_TIMED)
NO_LIMIT = ("SDN (no limit)", "E2CM+SDN (no limit)")
# (a, b, role): a is claimed more accurate than b. The headline rows change nothing the paper fixes; each
# sensitivity row changes one thing: E2CM's feature, or the rival's training (inputs cached, ~21 head epochs)
CLAIM_ROWS = ((E2CM, SDN_ONE, "paper"), (E2CM, BRANCHY_ONE, "paper"), (E2CM_POOLED, SDN_ONE, "sensitivity"),
              (E2CM, SDN_TIMED, "sensitivity"), (NO_LIMIT[1], NO_LIMIT[0], "paper"))
CLAIM_PAIRS = tuple((a, b) for a, b, _ in CLAIM_ROWS)
POSTER_NAMES = {"SDN (no limit)": "SDN", "E2CM+SDN (no limit)": "E2CM+SDN"}
HEAD_BATCH = 128
# the paper's abstract (arXiv 2103.01148, IJCNN 2022), quoted by the claims
ABSTRACT = {"equal time": 'Abstract: "given a fixed training time budget, E$^2$CM achieves higher accuracy as '
                          'compared to existing early exit mechanisms"',
            "no limit": 'Abstract: "if there are no limitations on the training time budget, E$^2$CM can be '
                        "combined with an existing early exit scheme to boost the latter's performance\"",
            "unsupervised": 'Abstract: "E$^2$CM can be used to decrease the computational cost in unsupervised '
                            'learning tasks"'}


def every_block(backbone: str) -> tuple[int, ...]:
    """Exits after the stem and every block but the last (the last feeds the classifier), merged
    with the backbone's own default exits."""
    bb = build_backbone(backbone, width=0.25)
    return tuple(sorted(set(bb.default_exits) | set(range(len(bb.stages) - 1))))


def backbone_label(spec: RunSpec) -> str:
    """The key of a backbone in tables and metrics ("vgg13 x0.5 / cifar10")."""
    return f"{spec.model.backbone} x{spec.model.width:g} / {spec.data.name}"


def backbone_title(spec: RunSpec) -> str:
    """The backbone as a figure names it ("VGG-13 ×0.5, CIFAR-10")."""
    return network_title(spec.model.backbone, spec.model.width, spec.data.name)


def backbone_runs(backbones: list[str], widths: list[float], datasets: list[str], train_size: int | None,
                  val_size: int, test_size: int | None, epochs: int, batch_size: int, optimizer: str, lr: float,
                  weight_decay: float, label_smoothing: float, bf16: bool, channels_last: bool,
                  seeds: list[int], **_) -> list[RunSpec]:
    """The paper profile's own backbones (exits after every block, only the final classifier in the
    loss), one training per seed on a split fixed by seed 0."""
    if len(backbones) != len(widths):
        raise ValueError("backbones and widths must have one entry per backbone")
    return [RunSpec(
        f"e2cm_{name}_{dataset}_s{seed}",
        ModelSpec(name, width, every_block(name), "linear"),
        DataSpec(dataset, val_size=val_size, train_size=train_size, test_size=test_size, seed=0),
        LossSpec("weighted_ce", {"weights": "final", "label_smoothing": label_smoothing}),
        TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                    bf16=bf16, channels_last=channels_last, seed=seed))
        for dataset in datasets for name, width in zip(backbones, widths) for seed in seeds]


def parent_runs(backbones: list[str], seeds: list[int], **parameters) -> dict[tuple[str, int], RunSpec]:
    """The trained backbones E2CM and its rivals start from, keyed by (backbone label, seed): the
    shared reference network (form "plain") when ``backbones`` is empty, else the paper's own."""
    if backbones:
        specs = backbone_runs(backbones=backbones, seeds=seeds, **parameters)
    else:
        keys = ("backbone", "width", "dataset", "train_size", "val_size", "test_size", "epochs", "batch_size", "lr",
                "weight_decay", "bf16", "channels_last")
        specs = reference_runs("plain", seeds, **{k: parameters[k] for k in keys})
    return {(backbone_label(s), s.train.seed): s for s in specs}


def e2cm_spec(parent: RunSpec, feature: str = "gap", augment: bool = True) -> RunSpec:
    """E2CM on ``parent``: class-means heads after every block (a parent without exits gets them too).
    The pooled run keeps the name other notebooks share it by; another feature is named after it."""
    name = f"{parent.name}_e2cm" + ("" if feature == "gap" else f"_{feature}")
    return class_means_run(parent, feature, augment, name, exit_after=every_block(parent.model.backbone))


def fit_e2cm(parent: TrainedRun, augment: bool = True) -> dict[str, TrainedRun]:
    """Both E2CM networks of a trained backbone (``FEATURES``), fitted or found in the cache."""
    return {method: train_cached(e2cm_spec(parent.spec, feature, augment), parent.data, progress=False)
            for method, feature in FEATURES.items()}


def head_runs(parent: RunSpec, e2cm: RunSpec, head_lr: float, epochs: int, seconds: float | None = None,
              feature: str = "gap", tag: str = "", patience: int | None = None,
              head_inputs: str = "cached", min_epochs: int = 0) -> dict[str, RunSpec]:
    """The trained-head rivals of E2CM on ``parent``'s backbone, at E2CM's exits, Adam at ``head_lr``
    (the authors' optimiser), loss CE(final) + sum_i c_i CE(exit i) with c_i the exit's cost fraction
    (the authors' demo), in the parent's precision and memory layout. ``seconds``: a wall-clock budget
    (``epochs`` is then only a cap); ``patience``: stop at a validation plateau, not before ``min_epochs``.
    ``head_inputs``: the frozen-backbone heads (SDN, E2CM+SDN) train on their Linear inputs computed in
    one augmented pass ("cached", as E2CM's fit reads the backbone once) or run the backbone on every
    batch ("live", the authors' way)."""
    classes, channels, size = DATASET_SHAPES[parent.data.name]
    heads = replace(e2cm.model, head="linear", head_options={})
    fractions = mac_table(build_model(heads, classes, channels, size)).exit_fractions
    weights = [round(f / fractions[-1], 6) for f in fractions[:-1]] + [1.0]
    t = parent.train
    train = TrainConfig(epochs=epochs, batch_size=HEAD_BATCH, optimizer="adam", lr=head_lr, weight_decay=0.0,
                        schedule="constant", crop_pad=2, flip=True, bf16=t.bf16, channels_last=t.channels_last,
                        seed=t.seed, time_budget_s=seconds, patience=patience, min_epochs=min_epochs)
    loss = LossSpec("weighted_ce", {"weights": weights})
    frozen = replace(train, freeze_backbone=True, head_inputs=head_inputs)
    return {
        "SDN": RunSpec(f"{parent.name}_sdn{tag}", heads, parent.data, loss, frozen, init_from=parent),
        "BranchyNet": RunSpec(f"{parent.name}_branchy{tag}", heads, parent.data, loss, train, init_from=parent),
        "E2CM+SDN": RunSpec(f"{parent.name}_e2cm_sdn{tag}",
                            replace(e2cm.model, head="class_means_linear", head_options={"feature": feature}),
                            parent.data, loss, frozen, init_from=e2cm, init_heads=True),
    }


def plan(fit_augment: bool, unsup_datasets: list[str], unsup_seeds: list[int], unsup_epochs: int,
         unsup_channels: list[int], val_size: int, unsup_train_size: int | None, unsup_test_size: int | None,
         **parameters) -> list[RunSpec]:
    """Backbones and their two E2CM networks per seed, the autoencoders. The rivals' runs carry budgets
    measured on these (``method_curves``), so they are not known up front."""
    specs = []
    for parent in parent_runs(val_size=val_size, **parameters).values():
        specs += [parent] + [e2cm_spec(parent, feature, fit_augment) for feature in FEATURES.values()]
    specs += [autoencoder_run(d, s, unsup_epochs, unsup_channels, val_size, unsup_train_size, unsup_test_size)
              for d in unsup_datasets for s in unsup_seeds]
    return specs


# ---------------------------------------------------------------- one search per method
@dataclass(frozen=True)
class CloudSearch:
    """The one operating-point search every compared method gets: ``n`` random per-exit thresholds
    drawn in ``space`` on the ``split`` outputs, operating points chosen there, reported on test. One
    object, so E2CM and its trained-head rivals cannot be searched differently; each curve records
    the splits it read for what."""

    split: str = "val"
    n: int = 2000
    space: str = "quantile"
    seed: int = 0

    def curve(self, name: str, run: TrainedRun, rule: PerExitThresholds | None = None) -> "MethodCurve":
        """The cloud of ``run`` under ``rule`` (default: max softmax, the trained heads' rule)."""
        rule = rule if rule is not None else MaxProbability((0.0,) * (run.net.num_exits - 1))
        search, test = run.outputs(self.split), run.outputs("test")
        cloud = threshold_cloud(search, test, rule, run.macs, self.n, self.space, self.seed)
        reads = {"thresholds drawn on": self.split, "chosen on": self.split, "reported on": "test"}
        return MethodCurve(name, run, cloud, test, reads)


@dataclass
class MethodCurve:
    """One method on one backbone: its run, its threshold cloud and its test outputs, so that an
    operating point can be read (``point``) and scored image by image (``correct``, for the paired
    bootstrap between methods sharing a backbone and a test set); ``reads``: the split each step of
    its search read."""

    name: str
    run: TrainedRun
    cloud: ThresholdSweep
    test: CachedOutputs
    reads: Mapping[str, str] = field(default_factory=dict)

    def _index(self, budget: float) -> int | None:
        return select(self.cloud.val_cost, self.cloud.val_accuracy, budget=budget)

    def point(self, budget: float) -> dict | None:
        """The most accurate point of the search split costing at most ``budget`` (None: none is that cheap)."""
        i = self._index(budget)
        return None if i is None else self.cloud.point(i)

    def correct(self, budget: float) -> torch.Tensor | None:
        """Per test image, 1 if the operating point chosen for ``budget`` classifies it correctly."""
        i = self._index(budget)
        if i is None:
            return None
        result = evaluate_policy(self.test, self.cloud.policy(i), self.run.macs)
        return (result.prediction == self.test.labels).double()


def points_table(curves: Mapping[str, Mapping[str, MethodCurve]], budgets: Sequence[float],
                 columns: Sequence[str] = ("test_accuracy", "test_cost")) -> pd.DataFrame:
    """One row per (backbone, method, budget) with ``columns`` of the point chosen for that budget
    (NaN where the method has no point that cheap)."""
    rows = []
    for label, methods in curves.items():
        for method, curve in methods.items():
            for b in budgets:
                point = curve.point(b) or {}
                rows.append({"backbone": label, "method": method, "budget": b,
                             **{c: point.get(c, float("nan")) for c in columns}})
    return pd.DataFrame(rows)


def paired_accuracy_difference(a: MethodCurve, b: MethodCurve, budget: float, draws: int = 2000,
                               seed: int = 0) -> tuple[float, float, float] | None:
    """Test accuracy of ``a`` minus ``b`` at ``budget`` in points, with its 95% paired bootstrap
    interval over test images (both methods sit on one backbone and one test set, so what they
    share cancels). None when either has no point that cheap."""
    ca, cb = a.correct(budget), b.correct(budget)
    if ca is None or cb is None:
        return None
    if not torch.equal(a.test.labels, b.test.labels):
        raise ValueError(f"{a.name} and {b.name} were not evaluated on the same test images")
    mean, lo, hi = paired_bootstrap(ca, cb, draws, seed)
    return 100 * mean, 100 * lo, 100 * hi


# ---------------------------------------------------------------- the rivals, trained and searched
def equal_time_budget(parent: TrainedRun, e2cms: Iterable[TrainedRun]) -> float:
    """The sensitivity row's training time: max(E2CM's measured fit times, one backbone epoch), in seconds."""
    return max([parent.seconds_per_epoch] + [e.train_seconds for e in e2cms])


def head_steps(run: TrainedRun) -> int:
    """Optimiser steps a run took (all epochs)."""
    return sum(h.get("steps", 0) for h in run.history)


def rival_specs(parent: TrainedRun, e2cms: Mapping[str, TrainedRun], head_lr: float, patience: int,
                max_epochs: int, min_steps: int = 0, head_inputs: str = "cached") -> dict[str, RunSpec]:
    """The rivals under their display names, all at E2CM's exits. As the paper trains them: SDN heads on
    the frozen backbone, which runs on every batch, for one epoch; BranchyNet (heads and backbone
    jointly) for one epoch. Sensitivity: SDN heads stopped at the equal-time budget on ``head_inputs``
    (cached: about 21 head epochs fit in it). No time limit: SDN and E2CM+SDN (on the pooled E2CM's
    distances) train until the validation accuracy of their heads stalls for ``patience`` epochs, and
    never stop before ``min_steps`` (the equal-time SDN's steps): no plateau counts before then, and
    the epoch cap is raised to leave ``patience`` epochs after them."""
    per_epoch = max(1, len(parent.data.train) // HEAD_BATCH)
    floor = math.ceil(min_steps / per_epoch)
    pooled = e2cms[E2CM_POOLED].spec
    budget = equal_time_budget(parent, e2cms.values())
    timed = head_runs(parent.spec, pooled, head_lr, 1000, budget, "gap", "_equal_time", head_inputs=head_inputs)
    live = head_runs(parent.spec, pooled, head_lr, 1, None, "gap", "_1epoch_live", head_inputs="live")
    joint = head_runs(parent.spec, pooled, head_lr, 1, None, "gap", "_1epoch")
    full = head_runs(parent.spec, pooled, head_lr, max(max_epochs, floor + patience), None, "gap", "_plateau",
                     patience, head_inputs, floor)
    return {SDN_ONE: live["SDN"], BRANCHY_ONE: joint["BranchyNet"], SDN_TIMED: timed["SDN"],
            "SDN (no limit)": full["SDN"], "E2CM+SDN (no limit)": full["E2CM+SDN"]}


def method_curves(parent: TrainedRun, e2cms: Mapping[str, TrainedRun], searches: Sequence[CloudSearch],
                  head_lr: float, patience: int, max_epochs: int, prediction: str = "nearest",
                  head_inputs: str = "cached") -> dict[str, dict[str, MethodCurve]]:
    """Every method on one backbone seed (``e2cms``: ``fit_e2cm``'s networks), trained (or loaded) and
    searched by each of ``searches`` exactly alike: {search split: {method: curve}}. The no-limit heads
    start after the equal-time SDN so that they can be held to at least its steps."""
    runs = dict(e2cms)
    specs = rival_specs(parent, e2cms, head_lr, patience, max_epochs, head_inputs=head_inputs)
    runs[SDN_TIMED] = train_cached(specs[SDN_TIMED], parent.data, progress="summary")
    specs = rival_specs(parent, e2cms, head_lr, patience, max_epochs, head_steps(runs[SDN_TIMED]), head_inputs)
    runs.update({name: train_cached(spec, parent.data, progress="summary") for name, spec in specs.items()
                 if name not in runs})
    for split in {s.split for s in searches} | {"test"}:
        outputs_of_runs(list(runs.values()), split)   # one backbone pass for every head-only rival
    rules = {name: e2cm_policy(e2cms[name].net, prediction=prediction) for name in e2cms}
    order = [m for m in E2CMS + EQUAL_TIME + NO_LIMIT if m in runs]
    return {s.split: {name: s.curve(name, runs[name], rules.get(name)) for name in order} for s in searches}


def flat(curves: Mapping[tuple[str, int], Mapping[str, Mapping[str, MethodCurve]]], split: str,
         methods: Sequence[str] | None = None) -> dict[tuple[str, int], dict[str, MethodCurve]]:
    """{(backbone, seed): {method: curve}} of one search split, optionally only ``methods``."""
    return {key: {m: c for m, c in by_split[split].items() if methods is None or m in methods}
            for key, by_split in curves.items()}


def _key_columns(key: tuple[str, int]) -> dict:
    return {"backbone": key[0], "seed": key[1]}


def stopped_by(method: str, run: TrainedRun) -> str:
    """Why a compared method's training ended: E2CM's fit, the time budget, a validation plateau or
    the epoch cap (a 'no time limit' run that hit its cap did not reach a plateau)."""
    cfg = run.spec.train
    if method in E2CMS:
        return "fit only"
    if cfg.time_budget_s and run.epochs_trained < cfg.epochs:
        return "time budget"
    return "validation plateau" if cfg.patience and run.epochs_trained < cfg.epochs else f"{cfg.epochs} epoch(s)"


def no_limit_stops(curves: Mapping[tuple[str, int], Mapping[str, MethodCurve]]) -> str:
    """How the 'no time limit' heads ended, for the claim's setting: a plateau, or how many hit the cap."""
    stops = [stopped_by(name, c.run) for methods in curves.values() for name, c in methods.items() if name in NO_LIMIT]
    capped = [s for s in stops if s != "validation plateau"]
    if not capped:
        return "heads trained to a validation plateau"
    return (f"heads trained to a validation plateau or an epoch cap: {len(capped)} of {len(stops)} runs stopped at "
            f"the cap ({capped[0]}) before a plateau")


def head_training_table(curves: Mapping[tuple[str, int], Mapping[str, MethodCurve]]) -> pd.DataFrame:
    """What each method trained: optimiser steps, the same in head epochs, how it read the backbone (its
    fit, every batch, inputs computed once, or trained with it), why it stopped, and the accuracy of its final exit
    (joint training can damage the backbone's classifier; E2CM's is the backbone's)."""
    rows = []
    for key, methods in curves.items():
        for name, c in methods.items():
            run, cfg = c.run, c.run.spec.train
            steps = head_steps(run)
            per_epoch = max(1, len(run.data.train) // cfg.batch_size)
            reads = ("fit pass" if name in E2CMS else "joint training" if not cfg.freeze_backbone
                     else "cached" if cfg.head_inputs == "cached" else "live")
            rows.append({**_key_columns(key), "method": name, "steps": steps, "epochs of heads": steps / per_epoch,
                         "backbone read": reads, "stopped by": stopped_by(name, run),
                         "final exit test acc": c.test.exit_accuracies()[-1]})
    return pd.DataFrame(rows)


def timing_table(runs: Mapping[tuple[str, int], TrainedRun], e2cm_runs: Mapping[tuple[str, int], Mapping[str, TrainedRun]],
                 curves: Mapping[tuple[str, int], Mapping[str, MethodCurve]]) -> pd.DataFrame:
    """Wall clock per backbone seed: one backbone epoch, E2CM's fits, the equal-time budget and what
    each rival used (machine-dependent: for a cell whose output is not compared)."""
    rows = []
    for key, run in runs.items():
        fits = e2cm_runs[key]
        row = {**_key_columns(key), "backbone epoch (s)": run.seconds_per_epoch,
               **{f"{m} fit (s)": e.train_seconds for m, e in fits.items()},
               "equal-time budget (s)": equal_time_budget(run, fits.values())}
        rows.append({**row, **{f"{m} (s)": c.run.train_seconds for m, c in curves[key].items() if m not in E2CMS}})
    return pd.DataFrame(rows)


def plot_hulls(ax, curves: Mapping[str, MethodCurve]) -> None:
    """Each method's hull (chosen on the search split) as evaluated on test, in % (one backbone seed)."""
    for i, (name, c) in enumerate(curves.items()):
        cost, acc = c.cloud.curve("test", "hull")
        order = sorted(range(len(cost)), key=lambda j: cost[j])
        ax.plot([cost[j] for j in order], [100 * acc[j] for j in order], ms=3.5, lw=1.2, label=name,
                **method_style(name, i))


def plot_budget_means(ax, points: pd.DataFrame, split: str, backbone: str, methods: Sequence[str],
                      budgets: Sequence[float]) -> None:
    """At each claim budget, each method's mean test accuracy (%) over seeds at its mean test cost, with the
    95% t interval of the mean as a bar: the numbers the claims compare, drawn over one seed's hulls."""
    df = points[(points["search split"] == split) & (points["backbone"] == backbone)].dropna(subset=["test accuracy"])
    for i, name in enumerate(methods):
        style = method_style(name, i)
        for b in budgets:
            g = df[(df["method"] == name) & (df["budget"] == b)]
            if len(g) < 2:
                continue
            mean, lo, hi = seed_interval(list(100 * g["test accuracy"]), (0.0, 100.0))
            ax.errorbar([g["test cost"].mean()], [mean], yerr=[[mean - lo], [hi - mean]], fmt=style["marker"],
                        color=style["color"], mfc=style.get("mfc", style["color"]), ms=6, capsize=3)


def operating_points(curves: Mapping[tuple[str, int], Mapping[str, Mapping[str, MethodCurve]]],
                     budgets: Sequence[float]) -> pd.DataFrame:
    """Per (backbone, seed, search split, method, budget): the thresholds chosen on the search split
    (the most accurate point costing at most the budget there), its accuracy and cost on that split
    and on test, and the splits the search read. Nothing here reads test outputs to choose (a test
    poisons their labels and logits to check)."""
    rows = []
    for key, by_split in curves.items():
        for split, methods in by_split.items():
            for name, c in methods.items():
                for b in budgets:
                    point = c.point(b) or {}
                    rows.append({**_key_columns(key), "search split": split, "method": name, "budget": b,
                                 "thresholds": point.get("thresholds"),
                                 "search accuracy": point.get("val_accuracy", float("nan")),
                                 "search cost": point.get("val_cost", float("nan")),
                                 "test accuracy": point.get("test_accuracy", float("nan")),
                                 "test cost": point.get("test_cost", float("nan")), **c.reads})
    return pd.DataFrame(rows)


def search_fronts(curves: Mapping[tuple[str, int], Mapping[str, Mapping[str, MethodCurve]]]) -> pd.DataFrame:
    """Every method's hull on its search split, each point with its cost and accuracy there and on test,
    per backbone seed and search split: the curves the claims' operating points come from."""
    rows = []
    for key, by_split in curves.items():
        for split, methods in by_split.items():
            for name, c in methods.items():
                for i in c.cloud.front("hull"):
                    p = c.cloud.point(i)
                    rows.append({**_key_columns(key), "search split": split, "method": name,
                                 "search cost": p["val_cost"], "search accuracy": p["val_accuracy"],
                                 "test cost": p["test_cost"], "test accuracy": p["test_accuracy"]})
    return pd.DataFrame(rows)


def seed_means(points: pd.DataFrame, split: str, methods: Sequence[str]) -> pd.DataFrame:
    """Mean test accuracy (%) over seeds per (backbone, budget) and method, for one search split."""
    df = points[(points["search split"] == split) & points["method"].isin(methods)]
    return (100 * df.pivot_table(index=["backbone", "budget"], columns="method", values="test accuracy",
                                 aggfunc="mean", sort=False))[list(dict.fromkeys(df["method"]))]


def split_comparison(points: pd.DataFrame) -> pd.DataFrame:
    """Mean test accuracy (%) over seeds with thresholds searched on each split side by side (the
    paper searched on training data; validation is our default)."""
    table = 100 * points.pivot_table(index=["backbone", "method", "budget"], columns="search split",
                                     values="test accuracy", aggfunc="mean", sort=False)
    return table.rename(columns=lambda s: f"test acc (%), searched on {s}")


def _poster(method: str, budget: float) -> float | None:
    try:
        return float(paper_number("e2cm", table="A-1", method=POSTER_NAMES.get(method, method), budget=budget).value)
    except ValueError:
        return None


def combination_table(points: pd.DataFrame, split: str) -> pd.DataFrame:
    """Section 6: our mean test accuracy (%) over seeds per (backbone, method, budget) beside the
    poster's table (ResNet-152 on CIFAR-10; NaN where the poster has no such row)."""
    df = points[(points["search split"] == split) & points["method"].isin(NO_LIMIT)]
    table = df.groupby(["backbone", "method", "budget"], sort=False)["test accuracy"].mean().reset_index()
    table["ours test acc (%)"] = 100 * table.pop("test accuracy")
    table["poster acc (%)"] = [_poster(m, b) for m, b in zip(table["method"], table["budget"])]
    return table


def paper_plateau(dataset: str) -> float | None:
    """The mean clustering-accuracy plateau of the authors' unsupervised slide (None if not read off)."""
    try:
        return float(paper_number("e2cm", table="A-2", dataset=dataset).value)
    except ValueError:
        return None


# ---------------------------------------------------------------- claims and paper numbers
def seed_differences(curves: Mapping[tuple[str, int], Mapping[str, MethodCurve]], pairs: Sequence[tuple[str, str]],
                     budgets: Sequence[float]) -> pd.DataFrame:
    """Per backbone seed, method a minus method b test accuracy (points) at each budget, with each
    method's final-exit test accuracy (%); NaN where either has no point that cheap."""
    rows = []
    for key, methods in curves.items():
        for a, b in pairs:
            for budget in budgets:
                pa, pb = methods[a].point(budget), methods[b].point(budget)
                diff = float("nan") if pa is None or pb is None else 100 * (pa["test_accuracy"] - pb["test_accuracy"])
                rows.append({**_key_columns(key), "a": a, "b": b, "budget": budget, "difference": diff,
                             "a final exit (%)": 100 * methods[a].test.exit_accuracies()[-1],
                             "b final exit (%)": 100 * methods[b].test.exit_accuracies()[-1]})
    return pd.DataFrame(rows)


def pair_claims(curves: Mapping[tuple[str, int], Mapping[str, MethodCurve]], statement: str,
                rows: Sequence[tuple[str, str, str]], budgets: Sequence[float], setting: str, paper_source: str,
                statement_source: str, threshold_source: str, notes: Mapping[str, str] | None = None,
                poster: bool = False) -> list[Claim]:
    """One claim per (backbone, (a, b, role) of ``rows``, budget): a minus b, test accuracy at cost <=
    budget, compared with 0. With >= 2 seeds the estimate is the mean of the per-seed differences (seed s
    of a with seed s of b, both on backbone seed s) and the interval their t interval; with one seed, a
    paired bootstrap over test images. The comparison names both methods' final-exit accuracies (mean over
    seeds) so a training gap is visible; ``notes[b]`` says how a sensitivity row departs from the headline."""
    diffs = seed_differences(curves, [(a, b) for a, b, _ in rows], budgets)
    roles = {(a, b): role for a, b, role in rows}
    out = []
    for (label, a, b, budget), df in diffs.groupby(["backbone", "a", "b", "budget"], sort=False):
        values = df["difference"].tolist()
        finals = f"final exits {a} {df['a final exit (%)'].mean():.1f}%, {b} {df['b final exit (%)'].mean():.1f}%"
        seeds = df["seed"].tolist()
        interval, ours = None, None
        if df["difference"].isna().any():
            evidence = f"no operating point costs <= {budget:g} on the search split for some seed"
        elif len(values) >= 2:
            ours, lo, hi = seed_interval(values)
            interval = (lo, hi)
            evidence = (f"mean and t interval over {len(values)} backbone seeds of the per-seed difference "
                        f"({', '.join(f'{v:+.2f}' for v in values)}); operating points chosen on the search split")
        else:
            key = (label, seeds[0])
            ours, lo, hi = paired_accuracy_difference(curves[key][a], curves[key][b], budget)
            interval = (lo, hi)
            evidence = "one network: paired bootstrap over test images, no interval across trainings"
        paper = None
        if poster and None not in (_poster(a, budget), _poster(b, budget)):
            paper = round(_poster(a, budget) - _poster(b, budget), 2)
        note = (notes or {}).get(a if a in (notes or {}) else b, "")
        out.append(claim(statement, f"{a} - {b} test accuracy at cost <= {budget:g} ({finals})", ours,
                         claimed="greater", than=0.0, interval=interval, unit="points", evidence=evidence,
                         setting=f"{label}, seeds {seeds}, {setting}" + (f"; {note}" if note else ""), paper=paper,
                         paper_source=paper_source, statement_source=statement_source,
                         threshold_source=threshold_source, role=roles[(a, b)]))
    return out


def e2cm_claims(curves: Mapping[tuple[str, int], Mapping[str, MethodCurve]], budgets: Sequence[float],
                setting: str, timed_epochs: float | None = None) -> list[Claim]:
    """Claim (i): with the same training time E2CM is more accurate than each trained-head rival at the
    same cost (headline: the paper's feature and rivals trained as the paper trains them; sensitivity
    rows change one of them); claim (ii): without a time limit E2CM+SDN improves on SDN (the poster's
    table). ``timed_epochs``: the equal-time SDN's mean head epochs, for its row's note."""
    costs = (f"costs <= {'/'.join(f'{b:g}' for b in budgets)}: the IJCNN 2022 poster table's normalised costs "
             "(0.15-0.30), where defense slide 19's equal-time curves separate")
    timed = "" if timed_epochs is None else f"about {timed_epochs:.0f} "
    notes = {E2CM_POOLED: "sensitivity: E2CM on globally pooled features (ours; the authors' code compares "
                          "flattened maps), rivals as in the headline",
             SDN_TIMED: f"sensitivity: SDN heads on inputs computed in one pass, {timed}head epochs in the "
                        "equal-time budget (the paper's no-time-limit regime, not its one-epoch one)"}
    equal = pair_claims(curves, "With the same training time, E2CM is more accurate than early exits that train "
                        "internal classifiers", CLAIM_ROWS[:-1], budgets, f"equal training time, {setting}",
                        "IJCNN 2022 poster and defense slide 19: one epoch of training, ResNet-152 and "
                        "WideResNet-101 (curves only)", ABSTRACT["equal time"],
                        f'Abstract: "higher accuracy": any lead, so the difference is compared with 0; {costs}', notes)
    combo = pair_claims(curves, "Without a time limit, E2CM combined with SDN improves on SDN", CLAIM_ROWS[-1:],
                        budgets, f"{no_limit_stops(curves)}, {setting}; E2CM+SDN's input (pooled feature and "
                        "normalised distances) is our reading", "IJCNN 2022 poster table, ResNet-152 on CIFAR-10",
                        ABSTRACT["no limit"], "Abstract: \"boost the latter's performance\": compared with 0; "
                        "at the poster table's costs 0.15-0.30", poster=True)
    return equal + combo


# ---------------------------------------------------------------- options, protocol, summary
def options(fit_augment: bool, prediction: str, threshold_space: str, search_splits: list[str],
            backbones: list[str], seeds: list[int], head_inputs: str = "cached", **_) -> dict:
    """The options a reader needs to interpret the numbers (where the paper or code leave a choice)."""
    return {"features": dict(FEATURES), "headline": E2CM, "fit_augment": fit_augment, "prediction": prediction,
            "exit test": "max p > t (strict)", "threshold_space": threshold_space, "search_split": search_splits[0],
            "also_searched_on": search_splits[1:], "backbones": backbones or "shared reference network (plain form)",
            "seeds": seeds, "normalisation": "per (exit, class) mean training distance",
            "distance_macs": "K(3D-1)/2 per exit passed (the paper's K(3D-1) FLOPs, as MACs)",
            "combination": "normalised distances (pooled E2CM) concatenated to the pooled feature (our assumption)",
            "head_inputs": head_inputs}


def protocol(runs: Mapping[tuple[str, int], TrainedRun], e2cm_runs: Mapping[tuple[str, int], Mapping[str, TrainedRun]],
             training: pd.DataFrame, reads: pd.DataFrame, search_splits: list[str], n_thresholds: int,
             threshold_space: str, head_lr: float, head_patience: int, head_max_epochs: int,
             head_inputs: str = "cached", unsup_reads: Mapping[str, str] | None = None, **_) -> dict:
    """How every compared configuration was chosen (the metrics file's protocol object); ``reads``:
    the distinct (search split, method, splits read) rows of the operating points."""
    name = lambda key: f"{key[0]}, seed {key[1]}"  # noqa: E731
    no_limit = training[training["method"].isin(NO_LIMIT)]
    return {
        "equal_time_budget_s": {name(k): equal_time_budget(r, e2cm_runs[k].values()) for k, r in runs.items()},
        "e2cm_fit_s": {f"{name(k)}, {m}": e.train_seconds for k in runs for m, e in e2cm_runs[k].items()},
        "no_limit_head_epochs": {f"{r['backbone']}, seed {r['seed']}, {r['method']}": r["epochs of heads"]
                                 for r in no_limit.to_dict("records")},
        "threshold_search_splits": {"decides": search_splits[0], "reported": list(search_splits),
                                    "each search read": reads.to_dict("records"),
                                    "unsupervised": dict(unsup_reads or {})},
        "operating points": "most accurate point costing <= the budget on the search split, reported on test",
        "threshold search": f"{n_thresholds} random per-exit threshold vectors ({threshold_space}), the same for "
                            "every method (E2CM's pseudo-probability, exit on max p > t; max softmax >= t for "
                            "trained heads)",
        "equal time (headline)": "every method starts from the same trained backbone; E2CM fits class means in one "
                                 "pass (flattened maps: two); SDN heads train one epoch on the frozen backbone, "
                                 "which runs on every batch; BranchyNet trains heads and backbone jointly for one "
                                 "epoch (the paper's one-epoch budget)",
        "equal time (sensitivity)": f"SDN heads stop after max(E2CM's fit times, one backbone epoch) of wall clock, "
                                    f"on {head_inputs} inputs",
        "no time limit": f"SDN and E2CM+SDN heads train until the mean validation accuracy of their exits has "
                         f"not improved for {head_patience} epochs (no plateau counts before they have taken "
                         f"the equal-time SDN's steps) or for at most {head_max_epochs} epochs "
                         "(no_limit_head_epochs says which); the last epoch's weights are kept",
        "rivals": f"Adam {head_lr:g}, loss CE(final) + sum_i c_i CE(exit i), c_i the exit's cost fraction, in the "
                  "backbone's precision and memory layout",
        "head_inputs": ("the equal-time and no-limit SDN and E2CM+SDN heads train on their Linear inputs computed in "
                        "one pass over the augmented training images, which their time counts"
                        if head_inputs == "cached" else "every frozen-backbone head runs the backbone on every batch"),
        "intervals": "mean and t interval over backbone seeds of the per-seed difference (one seed: paired bootstrap "
                     "over test images); t interval over autoencoder seeds for the unsupervised claim"}


def backbone_summary(runs: Mapping[tuple[str, int], TrainedRun],
                     e2cm_runs: Mapping[tuple[str, int], Mapping[str, TrainedRun]]) -> list[dict]:
    """Per backbone seed: its run key and its E2CM runs', epochs, MACs and the classifier's test accuracy."""
    return [{**_key_columns(k), "run": r.spec.key, "e2cm_runs": {m: e.spec.key for m, e in e2cm_runs[k].items()},
             "epochs": r.spec.train.epochs, "MMACs": r.macs.backbone_macs / 1e6,
             "test_accuracy": r.outputs("test").exit_accuracies()[-1]} for k, r in runs.items()]
