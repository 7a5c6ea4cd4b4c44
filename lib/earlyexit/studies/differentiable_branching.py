"""Notebook 03's study of differentiable branching (Scardapane et al., ICASSP 2020) against BranchyNet,
built on ``earlyexit.methods.differentiable_branching``: its training plan per recipe (``recipes``,
``layout``, ``plan``: the paper's recipe as the headline, with per data set and backbone the plain backbone,
BranchyNet and the proposed network at a lambda fixed in advance for every seed, one network per lambda of
a grid trained from scratch, and one per initial gate bias; the shared reference recipe as a sensitivity),
the trained runs grouped as the tables read them (``group_runs``, ``BackboneRuns``), the choices made on
validation (the gate bias: ``choose_gate_bias``; lambda by the rule that also picks BranchyNet's thresholds,
the cheapest within a tolerance of the best accuracy the method reaches: ``select_lambda``,
``lambda_choice``), and the paper's Table 1 per seed (``table1``). The claims, the conclusions and the protocol are in
``studies.differentiable_branching_claims``; Table 2, the batch-1 latency, the gate figures, the collapse
watch's tables, the numbers beside the paper's and the metrics in ``studies.differentiable_branching_tables``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Protocol, Sequence

import pandas as pd
import torch

from ..data import DATASET_SHAPES, DataSpec
from ..evaluate import PolicyResult, evaluate_policy, select
from ..macs import MacTable, mac_table
from ..methods.differentiable_branching import (BranchyChoice, Collapse, ensemble_accuracy, entropy_candidates,
                                                fit_branchynet, gate_bias_value, hard_gate_rule,
                                                normalised_exit_costs)
from ..multiexit import MultiExitNet
from ..outputs import CachedOutputs
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig, build_model
from .claims import PaperNumber, paper_number
from .reference import reference_run

__all__ = ["PAPER", "PAPER_BACKBONES", "GATE_GRID", "RECIPES", "KINDS", "RunLike", "BackboneRuns", "Layout",
           "bias_label", "layout", "recipes", "plan", "group_runs", "GateChoice", "choose_gate_bias", "LambdaChoice",
           "select_lambda", "lambda_choice", "candidate_budget", "paper_value", "exit_list", "parse_exit_list",
           "T1_COLUMNS", "Table1", "table1"]

PAPER = "differentiable_branching"         # data/paper_numbers/<PAPER>.csv
PAPER_BACKBONES = {"vgg13": "vgg13", "resnet18_cifar": "resnet18", "alexnet_cifar": "alexnet"}
GATE_GRID = tuple(i / 50 for i in range(1, 50))    # hard-gate thresholds t of the accuracy-vs-MACs curves
# the paper's recipe (the headline) and the shared reference network's (a labelled sensitivity)
RECIPES = {"paper": "paper recipe (Adam 1e-3, batch 128, end to end)",
           "reference": "reference recipe (SGD one-cycle, the shared reference network's)"}


# ---------------------------------------------------------------- the notebook's runs
class RunLike(Protocol):
    """What the tables read from a trained run (``train.TrainedRun``)."""
    net: MultiExitNet
    macs: MacTable
    spec: Any

    def outputs(self, split: str) -> CachedOutputs: ...

    def loader(self, split: str, batch_size: int = 500) -> Any: ...

    @property
    def epochs_trained(self) -> int: ...

    def epoch_outputs(self, epoch: int) -> CachedOutputs: ...


KINDS = ("plain", "branchynet", "proposed", "grid", "option")


@dataclass
class BackboneRuns:
    """The runs compared on one data set and backbone under one recipe: per training seed the plain
    backbone, BranchyNet and the proposed method at the lambda fixed in advance (gate bias ``gate_bias``);
    per lambda of the grid one network (the first seed); per initial gate bias one network (the first seed,
    the fixed lambda). Cached outputs are read from disk once and kept here, since every table reads them
    again."""
    dataset: str
    backbone: str
    plain: dict[int, RunLike]
    branchynet: dict[int, RunLike]
    proposed: dict[int, RunLike]
    grid: dict[float, RunLike]
    headline_lambda: float
    gate_options: dict[str, RunLike] = field(default_factory=dict)
    gate_bias: str = "pytorch"
    recipe: str = "paper"
    named: bool = False      # labels start with the backbone and data set (several settings in one run)
    _outputs: dict = field(default_factory=dict, repr=False)

    def run(self, kind: str, key: int | float | str) -> RunLike:
        """``kind``: 'plain', 'branchynet', 'proposed' (key: seed), 'grid' (key: lambda) or 'option' (key:
        gate bias label)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return (self.gate_options if kind == "option" else getattr(self, kind))[key]

    def outputs(self, kind: str, key: int | float | str, split: str) -> CachedOutputs:
        if (kind, key, split) not in self._outputs:
            self._outputs[(kind, key, split)] = self.run(kind, key).outputs(split)
        return self._outputs[(kind, key, split)]

    @property
    def seeds(self) -> list[int]:
        return list(self.proposed)

    @property
    def paper_backbone(self) -> str:
        return PAPER_BACKBONES.get(self.backbone, self.backbone)

    def label(self, kind: str, key: int | float | str) -> str:
        """A gated network's readable name, the same for equal configurations ('λ=0.001 fair s0'; 'ref '
        in front under the reference recipe)."""
        lam, bias, seed = self.headline_lambda, self.gate_bias, self.seeds[0]
        if kind == "proposed":
            seed = key
        elif kind == "grid":
            lam = key
        elif kind == "option":
            bias = key
        else:
            raise ValueError(f"{kind!r} networks have no gates")
        setting = f"{self.backbone} {self.dataset} " if self.named else ""
        return f"{setting}{'ref ' if self.recipe == 'reference' else ''}λ={lam:g} {bias} s{seed}"

    def gated(self) -> dict[str, tuple[str, int | float | str]]:
        """Every distinct gated network: label -> (kind, key); the grid's fixed lambda and the chosen gate
        bias are the first seed's proposed network, listed once."""
        out: dict[str, tuple[str, Any]] = {}
        for kind, keys in (("proposed", self.proposed), ("grid", self.grid), ("option", self.gate_options)):
            for key in keys:
                out.setdefault(self.label(kind, key), (kind, key))
        return out

    def all_runs(self) -> dict[str, RunLike]:
        """Every run by a readable label ('plain s0', 'λ=0.1 fair s0', ...)."""
        out = {f"{k} s{s}": r for k in ("plain", "branchynet") for s, r in getattr(self, k).items()}
        return {**out, **{label: self.run(*where) for label, where in self.gated().items()}}


@dataclass
class Layout:
    """The run specs of one (data set, backbone) and recipe: per seed, per lambda, per gate bias."""
    plain: dict[int, RunSpec] = field(default_factory=dict)
    branchynet: dict[int, RunSpec] = field(default_factory=dict)
    proposed: dict[int, RunSpec] = field(default_factory=dict)
    grid: dict[float, RunSpec] = field(default_factory=dict)
    gate_options: dict[str, RunSpec] = field(default_factory=dict)

    def specs(self) -> list[RunSpec]:
        return [*self.plain.values(), *self.branchynet.values(), *self.proposed.values(), *self.grid.values(),
                *self.gate_options.values()]


def _name(dataset: str, backbone: str, width: float, method: str, seed: int) -> str:
    return f"db_{dataset}_{backbone}x{width:g}_{method}_s{seed}"


def bias_label(option: str | float) -> str:
    """'fair', 'shut', 'pytorch' or the number ('-2.5')."""
    return option if isinstance(option, str) else f"{option:g}"


def layout(datasets: list[str], backbones: list[str], width: float, exit_after: dict[str, list[int]],
           head_features: str, head_width: int, head_pool: int, train_size: int | None, val_size: int,
           test_size: int | None, epochs: int, batch_size: int, optimizer: str, schedule: str, lr: float,
           weight_decay: float, augment: bool, seeds: list[int], split_seed: int, headline_lambda: float,
           lambda_grid: list[float], mixing: str, cost_reference: str, branchynet_weights: str | list[float],
           bf16: bool, channels_last: bool, reference: bool = False, gate_bias: str | float = "pytorch",
           gate_bias_options: Sequence[str | float] = (), **_) -> dict[tuple[str, str], Layout]:
    """Every run of one recipe, grouped per (data set, backbone):

    - ``plain`` and ``branchynet`` for every training seed. With ``reference=True`` these are the shared
      reference network's "plain" and "multi" forms (``studies.reference``), which every notebook finds in
      one cache; otherwise this notebook's own runs under the given recipe.
    - ``proposed``: the gated network trained with the soft-conditional loss at ``headline_lambda`` (fixed
      before any run) for every seed, with the same heads as BranchyNet plus one linear gate per head whose
      initial bias is ``gate_bias`` (``methods.differentiable_branching.gate_bias_value``).
    - ``grid``: one network per lambda of ``lambda_grid``, trained from scratch end to end like ``proposed``
      (the first seed; the fixed lambda's is the first seed's proposed network).
    - ``gate_options``: one network per initial gate bias of ``gate_bias_options`` at the fixed lambda (the
      first seed; the chosen bias's is the first seed's proposed network).
    Every gated run keeps its validation outputs after every epoch, so the gates can be followed through
    training.
    """
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"give distinct training seeds, got {seeds}")
    if reference and (head_features != "linear" or head_pool != 1 or optimizer != "sgd" or schedule != "onecycle"
                      or not augment or exit_after):
        raise ValueError("the reference network has linear global-average-pool heads at the default exits and "
                         "trains with SGD, one-cycle and crops/flips: set reference=False for another set-up")
    train = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                        schedule=schedule, crop_pad=2 if augment else 0, flip=augment, bf16=bf16,
                        channels_last=channels_last)
    head = {"features": head_features, "pool": head_pool, **({"width": head_width} if head_features == "conv" else {})}
    labels = [bias_label(o) for o in gate_bias_options]
    if len(set(labels)) != len(labels) or (labels and bias_label(gate_bias) not in labels):
        raise ValueError(f"gate_bias_options {list(gate_bias_options)} must be distinct and hold gate_bias "
                         f"{gate_bias!r}")
    out = {}
    for dataset in datasets:
        data = DataSpec(dataset, val_size=val_size, train_size=train_size, test_size=test_size, seed=split_seed)
        classes, channels, size = DATASET_SHAPES[dataset]
        for backbone in backbones:
            exits = exit_after.get(backbone)
            exits = None if exits is None else tuple(exits)
            net = build_model(ModelSpec(backbone, width, exits, "gated", head), classes, channels, size)
            costs = [round(c, 6) for c in normalised_exit_costs(mac_table(net), cost_reference)]

            def gated(lam: float, bias: str | float, seed: int) -> RunSpec:
                value = gate_bias_value(bias, net.num_exits)
                tag = "" if value is None else f"_{bias_label(bias)}"
                model = ModelSpec(backbone, width, exits, "gated",
                                  head if value is None else {**head, "gate_bias": value})
                return RunSpec(_name(dataset, backbone, width, f"{'ref_' if reference else ''}lam{lam:g}{tag}", seed),
                               model, data, LossSpec("soft_conditional", {"costs": costs, "lam": float(lam),
                                                                          "mixing": mixing}),
                               replace(train, seed=seed, keep_epoch_outputs=True))

            lay = Layout()
            for seed in seeds:
                if reference:
                    ref = dict(backbone=backbone, width=width, dataset=dataset, train_size=train_size,
                               val_size=val_size, test_size=test_size, epochs=epochs, batch_size=batch_size, lr=lr,
                               weight_decay=weight_decay, bf16=bf16, channels_last=channels_last,
                               split_seed=split_seed)
                    lay.plain[seed] = reference_run("plain", seed, **ref)
                    lay.branchynet[seed] = reference_run("multi", seed, **ref)
                else:
                    cfg = replace(train, seed=seed)
                    lay.plain[seed] = RunSpec(_name(dataset, backbone, width, "plain", seed),
                                              ModelSpec(backbone, width, ()), data,
                                              LossSpec("weighted_ce", {"weights": "uniform"}), cfg)
                    branchy_head = "conv" if head_features == "conv" else "linear"
                    opts = {k: v for k, v in head.items() if k != "features"}
                    lay.branchynet[seed] = RunSpec(_name(dataset, backbone, width, "branchynet", seed),
                                                   ModelSpec(backbone, width, exits, branchy_head, opts), data,
                                                   LossSpec("weighted_ce", {"weights": branchynet_weights}), cfg)
                lay.proposed[seed] = gated(headline_lambda, gate_bias, seed)
            lay.grid = {float(lam): gated(lam, gate_bias, seeds[0]) for lam in lambda_grid}
            lay.gate_options = {bias_label(o): gated(headline_lambda, o, seeds[0]) for o in gate_bias_options}
            out[(dataset, backbone)] = lay
    return out


def recipes(reference_recipe: dict | None = None, **parameters) -> dict[str, dict[tuple[str, str], Layout]]:
    """Recipe ('paper', 'reference') -> ``layout``: the notebook's parameters are the paper's recipe; the
    reference recipe (``reference_recipe``: its training values and lambda, None for none) trains the plain
    and BranchyNet rows as the shared reference network and its gated network with PyTorch's default gate
    initialisation, without grid or gate options (the runs notebook 05 compares)."""
    out = {"paper": layout(**parameters)}
    if reference_recipe:
        out["reference"] = layout(**{**parameters, "gate_bias": "pytorch", **reference_recipe, "reference": True,
                                     "lambda_grid": [], "gate_bias_options": []})
    return out


def plan(**parameters) -> list[RunSpec]:
    """Every training of the notebook, each once (a grid or gate-option run equal to a proposed run is the
    same spec)."""
    specs: dict[str, RunSpec] = {}
    for layouts in recipes(**parameters).values():
        for lay in layouts.values():
            for spec in lay.specs():
                if specs.setdefault(spec.name, spec) != spec:
                    raise ValueError(f"two runs named {spec.name!r} differ")
    return list(specs.values())


def group_runs(runs: dict, layouts: dict[tuple[str, str], Layout], headline_lambda: float,
               gate_bias: str | float = "pytorch", recipe: str = "paper") -> dict[tuple[str, str], BackboneRuns]:
    """The trained runs (by run name) grouped per (data set, backbone), as every table compares them; with
    more than one setting every gated network's label names its backbone and data set."""
    def pick(specs: dict) -> dict:
        return {k: runs[s.name] for k, s in specs.items()}

    return {(d, bb): BackboneRuns(d, bb, pick(lay.plain), pick(lay.branchynet), pick(lay.proposed), pick(lay.grid),
                                  headline_lambda, pick(lay.gate_options), bias_label(gate_bias), recipe,
                                  named=len(layouts) > 1)
            for (d, bb), lay in layouts.items()}


# ---------------------------------------------------------------- the gate bias and lambda, chosen on validation
def _bias_option(label: str) -> str | float:
    try:
        return float(label)
    except ValueError:
        return label


@dataclass
class GateChoice:
    frame: pd.DataFrame     # per gate bias, in the order of preference: validation accuracy, cost, collapse
    picked: str             # what the rule picks
    used: str               # the gate bias of the headline runs (the gate_bias parameter, fixed before the runs)

    @property
    def agrees(self) -> bool:
        return self.picked == self.used


def choose_gate_bias(group: BackboneRuns, watch: dict[str, Collapse], mixing: str, gate_threshold: float,
                     tolerance: float) -> GateChoice:
    """The initial gate bias by one rule on validation, over the first seed's networks at the fixed lambda:
    the first option, in the listed order of preference, whose network the collapse watch (``watch``, by
    network label) does not flag and whose validation ensemble accuracy is within ``tolerance`` of the best
    unflagged option's; when every option collapsed, the same rule over all of them."""
    rows = []
    for label, run in group.gate_options.items():
        val = group.outputs("option", label, "val")
        v = evaluate_policy(val, hard_gate_rule(val.num_exits, gate_threshold), run.macs)
        c = watch[group.label("option", label)]
        rows.append({"gate bias": label, "bias value": gate_bias_value(_bias_option(label), val.num_exits),
                     "val ensemble acc": ensemble_accuracy(val, mixing), "val hard-exit acc": v.accuracy,
                     "val MACs / plain": v.mean_fraction, "val exits": exit_list(v.exit_shares),
                     "collapsed": c.collapsed, "collapse watch": c.describe()})
    frame = pd.DataFrame(rows)
    pool = frame[~frame["collapsed"]] if (~frame["collapsed"]).any() else frame
    best = pool["val ensemble acc"].max()
    picked = pool[pool["val ensemble acc"] >= best - tolerance - 1e-12]["gate bias"].iloc[0]
    frame["picked by the rule"] = frame["gate bias"] == picked
    frame["used by the headline runs"] = frame["gate bias"] == group.gate_bias
    return GateChoice(frame, picked, group.gate_bias)


@dataclass
class LambdaChoice:
    frame: pd.DataFrame                 # per lambda: validation and test ensemble, hard-exit accuracy and cost
    chosen: float
    reference: float                    # best validation ensemble accuracy of the grid
    hard: dict[float, PolicyResult]     # hard-gate exits on test, per lambda

    @property
    def ties(self) -> list[float]:
        """The lambdas whose validation cost and hard-exit accuracy equal the chosen one's (the rule's last
        tie-break, the smaller lambda, decided between them)."""
        return self.frame.loc[self.frame["tied with chosen"], "lambda"].tolist()


def select_lambda(models: dict[float, tuple[CachedOutputs, CachedOutputs, MacTable]], mixing: str,
                  gate_threshold: float, tolerance: float) -> LambdaChoice:
    """The cheapest hard-exit model on validation whose hard-exit accuracy is within ``tolerance`` of the
    best validation ensemble accuracy of the grid (``models``: lambda -> (val, test, MAC table)); equal cost:
    the more accurate; still equal: the smaller lambda. Where no model qualifies, the most accurate hard-exit
    model on validation (the frame says so). The frame shows which lambdas tie with the chosen one and which
    give identical validation results (models that do not differ)."""
    lams = sorted(models)
    rows, hard = [], {}
    for lam in lams:
        val, test, macs = models[lam]
        rule = hard_gate_rule(val.num_exits, gate_threshold)
        v, hard[lam] = evaluate_policy(val, rule, macs), evaluate_policy(test, rule, macs)
        rows.append({"lambda": lam, "val ensemble acc": ensemble_accuracy(val, mixing), "val hard-exit acc": v.accuracy,
                     "val MACs / plain": v.mean_fraction, "test ensemble acc": ensemble_accuracy(test, mixing),
                     "test hard-exit acc": hard[lam].accuracy, "test MACs / plain": hard[lam].mean_fraction,
                     "test exits": exit_list(hard[lam].exit_shares)})
    frame = pd.DataFrame(rows)
    reference = float(frame["val ensemble acc"].max())
    cost, acc = torch.tensor(frame["val MACs / plain"].values), torch.tensor(frame["val hard-exit acc"].values)
    i = select(cost, acc, reference=reference, tolerance=tolerance)
    frame["within tolerance"] = (acc >= reference - tolerance - 1e-12).tolist()
    if i is None:
        i = select(cost, acc, budget=float(cost.max()))
    frame["chosen"] = [k == i for k in range(len(lams))]
    same = (cost - cost[i]).abs().le(1e-12) & (acc - acc[i]).abs().le(1e-12)
    frame["tied with chosen"] = [bool(same[k]) and k != i for k in range(len(lams))]
    keys = ["val ensemble acc", "val hard-exit acc", "val MACs / plain"]
    frame["same validation results as"] = [
        ", ".join(f"{other['lambda']:g}" for _, other in frame.iterrows()
                  if other["lambda"] != row["lambda"] and all(other[k] == row[k] for k in keys))
        for _, row in frame.iterrows()]
    return LambdaChoice(frame, lams[i], reference, hard)


def lambda_choice(group: BackboneRuns, mixing: str, gate_threshold: float, tolerance: float) -> LambdaChoice:
    """``select_lambda`` over the group's grid."""
    return select_lambda({lam: (group.outputs("grid", lam, "val"), group.outputs("grid", lam, "test"), r.macs)
                          for lam, r in group.grid.items()}, mixing, gate_threshold, tolerance)


def candidate_budget(groups: Iterable[BackboneRuns], gate_grid: Sequence[float] = GATE_GRID) -> int:
    """The proposed method's tuning budget per backbone: its distinct gated trainings (seeds, grid, gate
    biases) times the gate thresholds a reader could sweep (only t is fixed here, so this overstates it)."""
    return max(len(g.gated()) for g in groups) * len(gate_grid)


# ---------------------------------------------------------------- the paper's Table 1
def paper_value(**where: str | float | int) -> PaperNumber | None:
    """The paper's number matching ``where`` (see ``claims.paper_number``), None where the slides give none."""
    try:
        return paper_number(PAPER, **where)
    except ValueError:
        return None


def _paper_accuracy(group: BackboneRuns, method: str) -> float:
    p = paper_value(table=1, dataset=group.dataset, backbone=group.paper_backbone, method=method,
                    quantity="test_accuracy")
    return float("nan") if p is None else p.value / 100


def exit_list(shares: Sequence[float]) -> str:
    """Shares of inputs per exit as the paper's Table 2 writes them ('#1: 1.3%, #4: 82.1%'), exits from 1."""
    return ", ".join(f"#{k + 1}: {100 * s:.1f}%" for k, s in enumerate(shares) if s > 0)


def parse_exit_list(text: str) -> dict[int, float]:
    """Inverse of ``exit_list``: exit number -> share (0-1), e.g. for the paper's Table 2 cells."""
    return {int(k): float(v) / 100 for k, v in re.findall(r"#(\d+):\s*([\d.]+)%", text)}


T1_COLUMNS = ("plain", "BranchyNet (final exit)", "BranchyNet (entropy exits)", "BranchyNet MACs / plain",
              "proposed (ensemble)", "proposed (final exit)", "proposed (hard exits)", "proposed MACs / plain")


@dataclass
class Table1:
    per_seed: pd.DataFrame
    summary: pd.DataFrame
    branchynet: dict[tuple[str, str, int], BranchyChoice]
    hard: dict[tuple[str, str, int], PolicyResult]          # the proposed method's hard exits on test

    def values(self, dataset: str, backbone: str, column: str) -> list[float]:
        """``column`` of Table 1 per seed, in seed order."""
        part = self.per_seed[(self.per_seed.dataset == dataset) & (self.per_seed.backbone == backbone)]
        return part.sort_values("seed")[column].tolist()


def table1(groups: Iterable[BackboneRuns], mixing: str, gate_threshold: float, tolerance: float, bnet_shared: int,
           bnet_random: int, gate_grid: Sequence[float] = GATE_GRID) -> Table1:
    """The paper's Table 1 per training seed: plain, BranchyNet (final exit, and per-exit entropy exits chosen
    on validation), the proposed network at the lambda fixed in advance (ensemble, final exit, hard exits);
    then mean and standard deviation over seeds beside the paper's numbers. BranchyNet gets at least as
    many candidate threshold vectors as ``candidate_budget``."""
    groups = list(groups)
    budget = candidate_budget(groups, gate_grid)
    rows, summary, branchy, hard = [], [], {}, {}
    for g in groups:
        for seed in g.seeds:
            b_val, b_test = g.outputs("branchynet", seed, "val"), g.outputs("branchynet", seed, "test")
            candidates = entropy_candidates(b_val.logits.shape[2], b_val.num_exits - 1, bnet_shared, bnet_random, seed)
            if len(candidates) < budget:
                raise ValueError(f"BranchyNet gets {len(candidates)} threshold vectors, fewer than the proposed "
                                 f"method's {budget} (trainings x gate thresholds)")
            b = branchy[(g.dataset, g.backbone, seed)] = fit_branchynet(
                b_val, b_test, g.run("branchynet", seed).macs, candidates, tolerance)
            test, run = g.outputs("proposed", seed, "test"), g.run("proposed", seed)
            h = hard[(g.dataset, g.backbone, seed)] = evaluate_policy(
                test, hard_gate_rule(run.net.num_exits, gate_threshold), run.macs)
            rows.append({"dataset": g.dataset, "backbone": g.backbone, "seed": seed,
                         "plain": g.outputs("plain", seed, "test").exit_accuracies()[-1],
                         "BranchyNet (final exit)": b_test.exit_accuracies()[-1],
                         "BranchyNet (entropy exits)": b.point["test_accuracy"],
                         "BranchyNet MACs / plain": b.point["test_cost"],
                         "proposed (ensemble)": ensemble_accuracy(test, mixing),
                         "proposed (final exit)": test.exit_accuracies()[-1],
                         "proposed (hard exits)": h.accuracy, "proposed MACs / plain": h.mean_fraction})
        part = pd.DataFrame(rows[-len(g.seeds):])
        summary.append({"dataset": g.dataset, "backbone": g.backbone, "seeds": len(g.seeds),
                        "lambda (fixed)": g.headline_lambda, "gate bias": g.gate_bias,
                        **{f"{c} mean": part[c].mean() for c in T1_COLUMNS},
                        **{f"{c} sd": part[c].std(ddof=1) if len(part) > 1 else float("nan") for c in T1_COLUMNS[:2]
                           + T1_COLUMNS[4:6]},
                        "paper plain": _paper_accuracy(g, "baseline"), "paper B-NET": _paper_accuracy(g, "branchynet"),
                        "paper proposed": _paper_accuracy(g, "proposed")})
    per_seed, means = pd.DataFrame(rows), pd.DataFrame(summary)
    accuracies = [c for c in T1_COLUMNS if "MACs" not in c]
    per_seed.attrs["percent"] = accuracies        # shown in % (tableformat.readable); the values stay fractions
    means.attrs["percent"] = [f"{c} {k}" for c in accuracies for k in ("mean", "sd")] + [
        "paper plain", "paper B-NET", "paper proposed"]
    return Table1(per_seed, means, branchy, hard)
