"""Notebook 03's study of differentiable branching (Scardapane et al., ICASSP 2020) against BranchyNet,
built on ``earlyexit.methods.differentiable_branching``: its training plan (``layout``, ``plan``: per data
set and backbone the plain backbone, BranchyNet and the proposed network at a lambda fixed in advance for
every seed, and one network per lambda of a grid), the trained runs grouped as the tables read them
(``group_runs``, ``BackboneRuns``), the choice of lambda on validation by the rule that also picks
BranchyNet's thresholds (the cheapest within a tolerance of the best accuracy the method reaches:
``select_lambda``, ``lambda_choice``), the paper's Table 1 per seed (``table1``), the claims with their
verdicts (``check_claims``: t intervals over seeds, a bootstrap over test images for the one-seed lambda
grid), the conclusions written from them so that no number of a run is typed by hand, and the protocol
for the metrics file. Table 2, the batch-1 latency, the gate figures, the numbers beside the paper's and
the metrics are in ``studies.differentiable_branching_tables``.
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
from ..methods.differentiable_branching import (ENTROPY_LOW_NATS, BranchyChoice, ensemble_accuracy,
                                                entropy_candidates, fit_branchynet, hard_gate_rule,
                                                normalised_exit_costs)
from ..multiexit import MultiExitNet
from ..outputs import CachedOutputs
from ..stats import bootstrap_weighted, seed_interval
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig, build_model
from .claims import VERDICTS, Claim, PaperNumber, claim, paper_number
from .reference import reference_run

__all__ = ["PAPER", "PAPER_BACKBONES", "GATE_GRID", "GRID_STARTS", "GRID_TRAIN", "KINDS", "RunLike",
           "BackboneRuns", "Layout", "layout", "plan", "group_runs", "LambdaChoice", "select_lambda",
           "lambda_choice", "candidate_budget", "paper_value", "exit_list", "parse_exit_list", "T1_COLUMNS",
           "Table1", "table1", "rivals_note", "monotone_drop_rows", "lambda_monotone_drop", "lambda_cost_interval",
           "check_claims", "conclusions", "protocol"]

PAPER = "differentiable_branching"         # data/paper_numbers/<PAPER>.csv
PAPER_BACKBONES = {"vgg13": "vgg13", "resnet18_cifar": "resnet18", "alexnet_cifar": "alexnet"}
GATE_GRID = tuple(i / 50 for i in range(1, 50))    # hard-gate thresholds t of the accuracy-vs-MACs curves
GRID_STARTS = ("warm", "scratch")
GRID_TRAIN = ("heads", "all")


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

    def at_epoch(self, epoch: int) -> "RunLike": ...


KINDS = ("plain", "branchynet", "proposed", "grid")


@dataclass
class BackboneRuns:
    """The runs compared on one data set and backbone: per training seed the plain backbone, BranchyNet
    and the proposed method at the lambda fixed in advance; per lambda of the grid one network (one seed).
    Cached outputs are read from disk once and kept here, since every table and claim reads them again."""
    dataset: str
    backbone: str
    plain: dict[int, RunLike]
    branchynet: dict[int, RunLike]
    proposed: dict[int, RunLike]
    grid: dict[float, RunLike]
    headline_lambda: float
    _outputs: dict = field(default_factory=dict, repr=False)

    def run(self, kind: str, key: int | float) -> RunLike:
        """``kind``: 'plain', 'branchynet', 'proposed' (key: seed) or 'grid' (key: lambda)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return getattr(self, kind)[key]

    def outputs(self, kind: str, key: int | float, split: str) -> CachedOutputs:
        if (kind, key, split) not in self._outputs:
            self._outputs[(kind, key, split)] = self.run(kind, key).outputs(split)
        return self._outputs[(kind, key, split)]

    @property
    def seeds(self) -> list[int]:
        return list(self.proposed)

    @property
    def paper_backbone(self) -> str:
        return PAPER_BACKBONES.get(self.backbone, self.backbone)

    def all_runs(self) -> dict[str, RunLike]:
        """Every run by a readable label ('plain s0', 'grid lambda=0.1', ...)."""
        out = {f"{k} s{s}": r for k in ("plain", "branchynet", "proposed") for s, r in getattr(self, k).items()}
        return {**out, **{f"grid lambda={lam:g}": r for lam, r in self.grid.items()}}


@dataclass
class Layout:
    """The run specs of one (data set, backbone): per seed, and per lambda for the grid."""
    plain: dict[int, RunSpec] = field(default_factory=dict)
    branchynet: dict[int, RunSpec] = field(default_factory=dict)
    proposed: dict[int, RunSpec] = field(default_factory=dict)
    grid: dict[float, RunSpec] = field(default_factory=dict)

    def specs(self) -> list[RunSpec]:
        return [*self.plain.values(), *self.branchynet.values(), *self.proposed.values(), *self.grid.values()]


def _name(dataset: str, backbone: str, width: float, method: str, seed: int) -> str:
    return f"db_{dataset}_{backbone}x{width:g}_{method}_s{seed}"


def layout(datasets: list[str], backbones: list[str], width: float, exit_after: dict[str, list[int]],
           head_features: str, head_width: int, head_pool: int, train_size: int | None, val_size: int,
           test_size: int | None, epochs: int, batch_size: int, optimizer: str, schedule: str, lr: float,
           weight_decay: float, augment: bool, seeds: list[int], split_seed: int, headline_lambda: float,
           lambda_grid: list[float], grid_start: str, grid_train: str, grid_epochs: int, mixing: str,
           cost_reference: str, branchynet_weights: str | list[float], reference: bool, bf16: bool,
           channels_last: bool, **_) -> dict[tuple[str, str], Layout]:
    """Every run the notebook compares, grouped per (data set, backbone):

    - ``plain`` and ``branchynet`` for every training seed. With ``reference=True`` (the cpu profile) these
      are the shared reference network's "plain" and "multi" forms (``studies.reference``), which every
      notebook finds in one cache; otherwise (the paper profile) this notebook's own runs under the
      given recipe.
    - ``proposed``: the gated network trained with the soft-conditional loss at ``headline_lambda`` (fixed
      before any run) for every seed, under the same recipe and with the same linear heads as the rows
      above (plus one linear gate per head).
    - ``grid``: one network per lambda of ``lambda_grid``, one seed. ``grid_start="warm"`` fine-tunes from
      the first seed's proposed network for ``grid_epochs`` (``grid_train="heads"``: gates and early heads,
      backbone frozen, linear heads trained on inputs computed in one pass (``earlyexit.head_inputs``);
      ``"all"``: the whole network); ``"scratch"`` trains each from scratch like ``proposed``.
    """
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"give distinct training seeds, got {seeds}")
    if grid_start not in GRID_STARTS or grid_train not in GRID_TRAIN:
        raise ValueError(f"grid_start must be one of {GRID_STARTS} and grid_train one of {GRID_TRAIN}")
    if reference and (head_features != "linear" or head_pool != 1 or optimizer != "sgd" or schedule != "onecycle"
                      or not augment or exit_after):
        raise ValueError("the reference network has linear global-average-pool heads at the default exits and "
                         "trains with SGD, one-cycle and crops/flips: set reference=False for another set-up")
    train = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                        schedule=schedule, crop_pad=2 if augment else 0, flip=augment, bf16=bf16,
                        channels_last=channels_last)
    head = {"features": head_features, "pool": head_pool, **({"width": head_width} if head_features == "conv" else {})}
    out = {}
    for dataset in datasets:
        data = DataSpec(dataset, val_size=val_size, train_size=train_size, test_size=test_size, seed=split_seed)
        classes, channels, size = DATASET_SHAPES[dataset]
        for backbone in backbones:
            exits = exit_after.get(backbone)
            exits = None if exits is None else tuple(exits)
            gated = ModelSpec(backbone, width, exits, "gated", head)
            costs = [round(c, 6) for c in normalised_exit_costs(mac_table(build_model(gated, classes, channels, size)),
                                                                 cost_reference)]

            def soft(lam: float) -> LossSpec:
                return LossSpec("soft_conditional", {"costs": costs, "lam": float(lam), "mixing": mixing})

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
                    options = {k: v for k, v in head.items() if k != "features"}
                    lay.branchynet[seed] = RunSpec(_name(dataset, backbone, width, "branchynet", seed),
                                                   ModelSpec(backbone, width, exits, branchy_head, options), data,
                                                   LossSpec("weighted_ce", {"weights": branchynet_weights}), cfg)
                # "ref": the reference network's recipe (the paper profile's own recipe keeps the plain name)
                method = f"{'ref_' if reference else ''}lam{headline_lambda:g}"
                lay.proposed[seed] = RunSpec(_name(dataset, backbone, width, method, seed), gated,
                                             data, soft(headline_lambda),
                                             replace(train, seed=seed, keep_epoch_checkpoints=True))
            first = seeds[0]
            for lam in lambda_grid:
                if grid_start == "warm":
                    frozen = grid_train == "heads"   # linear heads on a frozen backbone: inputs computed once
                    cfg = replace(train, epochs=grid_epochs, seed=first, freeze_backbone=frozen,
                                  head_inputs="cached" if frozen and head_features == "linear" else "live",
                                  keep_epoch_checkpoints=True)
                    method = f"ft{grid_train}{lam:g}_from{headline_lambda:g}"
                    lay.grid[float(lam)] = RunSpec(_name(dataset, backbone, width, method, first), gated, data,
                                                   soft(lam), cfg, init_from=lay.proposed[first], init_heads=True)
                else:
                    lay.grid[float(lam)] = RunSpec(_name(dataset, backbone, width, f"lam{lam:g}", first), gated, data,
                                                   soft(lam), replace(train, seed=first, keep_epoch_checkpoints=True))
            out[(dataset, backbone)] = lay
    return out


def plan(**parameters) -> list[RunSpec]:
    """Every training of the notebook, each once (a grid run equal to a proposed run is the same spec)."""
    specs: dict[str, RunSpec] = {}
    for lay in layout(**parameters).values():
        for spec in lay.specs():
            if specs.setdefault(spec.name, spec) != spec:
                raise ValueError(f"two runs named {spec.name!r} differ")
    return list(specs.values())


def group_runs(runs: dict, layouts: dict[tuple[str, str], Layout], headline_lambda: float) -> dict[tuple[str, str], BackboneRuns]:
    """The trained runs (by run name) grouped per (data set, backbone), as every table compares them."""
    def pick(specs: dict) -> dict:
        return {k: runs[s.name] for k, s in specs.items()}

    return {(d, bb): BackboneRuns(d, bb, pick(lay.plain), pick(lay.branchynet), pick(lay.proposed), pick(lay.grid),
                                  headline_lambda)
            for (d, bb), lay in layouts.items()}


# ---------------------------------------------------------------- the lambda, chosen on validation
@dataclass
class LambdaChoice:
    frame: pd.DataFrame                 # per lambda: validation and test ensemble, hard-exit accuracy and cost
    chosen: float
    reference: float                    # best validation ensemble accuracy of the grid
    hard: dict[float, PolicyResult]     # hard-gate exits on test, per lambda


def select_lambda(models: dict[float, tuple[CachedOutputs, CachedOutputs, MacTable]], mixing: str,
                  gate_threshold: float, tolerance: float) -> LambdaChoice:
    """The cheapest hard-exit model on validation whose hard-exit accuracy is within ``tolerance`` of the
    best validation ensemble accuracy of the grid (``models``: lambda -> (val, test, MAC table)). Where no
    model qualifies, the most accurate hard-exit model on validation (the frame says so)."""
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
    return LambdaChoice(frame, lams[i], reference, hard)


def lambda_choice(group: BackboneRuns, mixing: str, gate_threshold: float, tolerance: float) -> LambdaChoice:
    """``select_lambda`` over the group's grid."""
    return select_lambda({lam: (group.outputs("grid", lam, "val"), group.outputs("grid", lam, "test"), r.macs)
                          for lam, r in group.grid.items()}, mixing, gate_threshold, tolerance)


def candidate_budget(groups: Iterable[BackboneRuns], gate_grid: Sequence[float] = GATE_GRID) -> int:
    """The proposed method's tuning budget per backbone: its trainings (seeds and grid) times the gate
    thresholds a reader could sweep (only t is fixed here, so this overstates what it used)."""
    return max(len(g.proposed) + len(g.grid) for g in groups) * len(gate_grid)


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
                        "lambda (fixed)": g.headline_lambda,
                        **{f"{c} mean": part[c].mean() for c in T1_COLUMNS},
                        **{f"{c} sd": part[c].std(ddof=1) if len(part) > 1 else float("nan") for c in T1_COLUMNS[:1]
                           + T1_COLUMNS[1:2] + T1_COLUMNS[4:5]},
                        "paper plain": _paper_accuracy(g, "baseline"), "paper B-NET": _paper_accuracy(g, "branchynet"),
                        "paper proposed": _paper_accuracy(g, "proposed")})
    return Table1(pd.DataFrame(rows), pd.DataFrame(summary), branchy, hard)


# ---------------------------------------------------------------- claims, conclusions, protocol
def rivals_note(t1: Table1, dataset: str, backbone: str) -> str:
    """The final-exit test accuracies of every compared network (mean over seeds), shown beside each claim
    so that a training gap between rivals is visible."""
    row = t1.summary[(t1.summary.dataset == dataset) & (t1.summary.backbone == backbone)].iloc[0]
    return (f"final exits (mean of {row['seeds']} seeds): plain {100 * row['plain mean']:.2f}%, BranchyNet "
            f"{100 * row['BranchyNet (final exit) mean']:.2f}%, proposed {100 * row['proposed (final exit) mean']:.2f}%")


def _over_seeds(statement: str, comparison: str, values: Sequence[float], **options) -> Claim:
    """A claim on per-seed values (seed s of every method paired): t interval over seeds where there
    are at least two."""
    if len(values) >= 2:
        mean, lo, hi = seed_interval(list(values))
        return claim(statement, comparison, mean, interval=(lo, hi),
                     evidence=f"t interval over {len(values)} training seeds (seed s of each network paired)", **options)
    return claim(statement, comparison, values[0], evidence="one training seed: no interval across trainings", **options)


def monotone_drop_rows(costs: torch.Tensor) -> torch.Tensor:
    """``lambda_monotone_drop`` of every row of ``costs`` [D, L] (lambdas in increasing order)."""
    rises = costs[:, 1:] - costs[:, :-1]
    worst = rises.max(1).values if rises.shape[1] else torch.zeros(len(costs), dtype=costs.dtype)
    out = torch.where(worst <= 1e-12, costs[:, 0] - costs[:, -1], -worst)
    return torch.where(out.abs() <= 1e-12, torch.zeros_like(out), out)   # float noise of equal costs is a tie


def lambda_monotone_drop(costs: Sequence[float]) -> float:
    """How far the cost falls from the first to the last lambda when it never rises on the way; else minus
    the largest rise between consecutive lambdas. Positive exactly when the costs never rise and end lower:
    "a larger lambda moves exits earlier", ties between neighbours allowed."""
    return float(monotone_drop_rows(torch.tensor([list(costs)], dtype=torch.float64))[0])


def lambda_cost_interval(group: BackboneRuns, choice: LambdaChoice) -> tuple[float, float, float]:
    """``lambda_monotone_drop`` of the grid's test hard-exit MACs / plain and its bootstrap interval over test
    images (every grid network judged on the same resample). One network per lambda: the interval covers
    which test images were drawn, not what another training seed would give."""
    lams = sorted(choice.hard)
    per_image = torch.stack([torch.tensor(group.run("grid", lam).macs.exit_macs, dtype=torch.float64)
                             [choice.hard[lam].exit_index] / group.run("grid", lam).macs.backbone_macs for lam in lams])
    n = per_image.shape[1]
    return bootstrap_weighted(lambda w: monotone_drop_rows(w @ per_image.T / n), n)


def check_claims(t1: Table1, group: BackboneRuns, choice: LambdaChoice, polarised: dict[int, float], mixing: str,
                 setting: str, max_drop: float = 0.03, max_macs: float = 0.9, min_top2: float = 0.7,
                 min_polarised: float = 0.8) -> list[Claim]:
    """The paper's claims on one data set and backbone, each with the rivals' final-exit accuracies beside it.

    1-2. Table 1: plain <= BranchyNet (final exit) <= proposed (ensemble, lambda fixed in advance): the two
         steps per seed, t interval over seeds.
    3-4. Table 2: at the fixed lambda, hard exits lose less than ``max_drop`` against the same network's
         ensemble and cost less than ``max_macs`` of the plain backbone (per seed, t interval over seeds).
    5.   Inputs concentrate: more than ``min_top2`` leave at the two busiest exits (per seed).
    6.   Fig. 4: more than ``min_polarised`` of the gate values lie below 0.1 or above 0.9 (per seed).
    7.   A larger lambda moves exits earlier over the warm-start grid: one network per lambda, bootstrap
         over test images of the cost differences (what it does not cover is in its evidence).
    """
    d, bb, s = group.dataset, group.backbone, group.paper_backbone
    note, where = rivals_note(t1, d, bb), f"{setting}, {d} {s}"
    vals = {c: t1.values(d, bb, c) for c in T1_COLUMNS}
    row = t1.summary[(t1.summary.dataset == d) & (t1.summary.backbone == bb)].iloc[0]
    src = paper_value(table=1, dataset=d, backbone=s, method="proposed", quantity="test_accuracy")
    src = "" if src is None else src.source
    paper_step = {"b": row["paper B-NET"] - row["paper plain"], "p": row["paper proposed"] - row["paper B-NET"]}
    claims = [
        _over_seeds(f"Table 1: BranchyNet (final exit) >= plain ({s})",
                    f"BranchyNet final exit - plain, test accuracy; {note}",
                    [100 * (b - p) for b, p in zip(vals["BranchyNet (final exit)"], vals["plain"])], unit="points",
                    setting=where, paper=None if pd.isna(paper_step["b"]) else round(100 * paper_step["b"], 2),
                    paper_source=src),
        _over_seeds(f"Table 1: proposed (ensemble) >= BranchyNet (final exit) ({s})",
                    f"proposed ensemble (lambda={group.headline_lambda:g}, fixed) - BranchyNet final exit, test "
                    f"accuracy; {note}",
                    [100 * (p - b) for p, b in zip(vals["proposed (ensemble)"], vals["BranchyNet (final exit)"])],
                    unit="points", setting=where,
                    paper=None if pd.isna(paper_step["p"]) else round(100 * paper_step["p"], 2), paper_source=src)]
    fixed = f"{where}, lambda={group.headline_lambda:g} (fixed)"
    p_ens = paper_value(table=1, dataset=d, backbone=s, method="proposed", quantity="test_accuracy")
    p_hard = paper_value(table=2, dataset=d, backbone=s, quantity="test_accuracy")
    claims.append(_over_seeds(f"Table 2: hard exits lose little accuracy against the ensemble ({s})",
                              f"ensemble - hard-exit test accuracy, same network; {note}",
                              [100 * (e - h) for e, h in zip(vals["proposed (ensemble)"], vals["proposed (hard exits)"])],
                              claimed="less", than=100 * max_drop, unit="points", setting=fixed,
                              paper=None if p_ens is None or p_hard is None else round(p_ens.value - p_hard.value, 2),
                              paper_source="" if p_hard is None else "Table 1 proposed - " + p_hard.source))
    up = paper_value(table=2, dataset=d, backbone=s, quantity="speed_up")
    claims.append(_over_seeds(f"Table 2: hard exits cut compute ({s})",
                              f"hard-exit mean MACs / plain-backbone MACs; {note}", vals["proposed MACs / plain"],
                              claimed="less", than=max_macs, unit="of plain MACs", setting=fixed,
                              paper=None if up is None else f"{up.value:g}% faster (time)",
                              paper_source="" if up is None else up.source))
    top2 = []
    for seed in group.seeds:
        hard = t1.hard[(d, bb, seed)]
        top2.append(sum(sorted(hard.exit_shares)[-2:]))
    ex = paper_value(table=2, dataset=d, backbone=s, quantity="exits")
    claims.append(_over_seeds(f"Table 2: inputs leave at a few exits ({s})",
                              f"share of test inputs at the two busiest exits; {note}", top2, than=min_top2,
                              unit="share", setting=fixed,
                              paper=None if ex is None else round(sum(sorted(parse_exit_list(ex.value).values())[-2:]), 3),
                              paper_source="" if ex is None else ex.source))
    claims.append(_over_seeds(f"Fig. 4: gate values are polarised near 0 and 1 ({s})",
                              f"share of test gate values below 0.1 or above 0.9 (all branches); {note}",
                              [polarised[seed] for seed in group.seeds], than=min_polarised, unit="share", setting=fixed,
                              paper_source="Scardapane et al. ICASSP 2020 slides, Fig. 4 (values not retrieved)"))
    lams = sorted(choice.hard)
    if len(lams) >= 2:
        drop, lo, hi = lambda_cost_interval(group, choice)
        start = group.run("grid", lams[0]).spec
        claims.append(claim(f"A larger lambda moves exits earlier ({s})",
                            f"drop of hard-exit MACs / plain from lambda={lams[0]:g} to {lams[-1]:g} (negative: the "
                            f"largest rise between consecutive lambdas); {note}", drop, interval=(lo, hi),
                            unit="of plain MACs",
                            evidence="bootstrap over test images, one network per lambda"
                                     + (" fine-tuned from one seed's network" if start.init_from is not None else "")
                                     + ": covers the test sample, not retraining or another seed",
                            setting=f"{where}, lambda grid {', '.join(f'{lam:g}' for lam in lams)}"))
    return claims


def _checked(claims: Sequence[Claim], prefix: str, paper: str = "") -> str:
    """'(paper: ...; claim > 0.7 share: 2 supported, 1 not supported)' for the claims whose statement
    starts with ``prefix``."""
    picked = [c for c in claims if c.statement.startswith(prefix)]
    counts = {v: sum(c.verdict == v for c in picked) for v in VERDICTS}
    side = f" {'>' if picked[0].claimed == 'greater' else '<'} {picked[0].than:g} {picked[0].unit}" if picked else ""
    return f"({paper}claim{side}: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ")"


def _pm(row: dict, column: str) -> str:
    sd = row.get(f"{column} sd", float("nan"))
    return f"{100 * row[f'{column} mean']:.2f}%" + ("" if pd.isna(sd) else f" ± {100 * sd:.2f}")


def conclusions(t1: Table1, choices: dict[tuple[str, str], LambdaChoice], claims: Sequence[Claim],
                collapse: pd.DataFrame, width: float, epochs: int, grid_epochs: int) -> str:
    """What the run shows, in words (Markdown), every number read from the tables and claims. Timings
    are left out: they change from run to run and decide no claim."""
    lines = []
    for row in t1.summary.to_dict("records"):
        lines.append(f"- **Table 1** ({row['backbone']}, {row['seeds']} seeds, mean ± sd): plain {_pm(row, 'plain')}, "
                     f"BranchyNet {_pm(row, 'BranchyNet (final exit)')}, proposed ensemble "
                     f"{_pm(row, 'proposed (ensemble)')} at lambda = {row['lambda (fixed)']:g} (fixed in advance). "
                     f"BranchyNet >= plain {_checked(claims, 'Table 1: BranchyNet')}; proposed >= BranchyNet "
                     f"{_checked(claims, 'Table 1: proposed')}.")
        if not pd.isna(row["paper proposed"]):
            lines.append(f"  The paper's proposed ensemble is {100 * (row['paper proposed'] - row['proposed (ensemble) mean']):.1f} "
                         f"points above ours (width {width:g}, {epochs} epochs): these verdicts speak for this budget.")
        lines.append(f"- **Hard exits at the fixed lambda** spend {100 * row['proposed MACs / plain mean']:.1f}% of the plain "
                     f"backbone's MACs {_checked(claims, 'Table 2: hard exits cut')} at "
                     f"{100 * row['proposed (hard exits) mean']:.2f}% test accuracy "
                     f"{_checked(claims, 'Table 2: hard exits lose')}; BranchyNet's per-exit entropy thresholds, "
                     f"chosen by the same rule, spend {100 * row['BranchyNet MACs / plain mean']:.1f}% at "
                     f"{100 * row['BranchyNet (entropy exits) mean']:.2f}%. Inputs at the two busiest exits "
                     f"{_checked(claims, 'Table 2: inputs leave')}; polarised gates {_checked(claims, 'Fig. 4')}.")
    for (d, bb), choice in choices.items():
        f = choice.frame.sort_values("lambda")
        lines.append(f"- **lambda grid** ({bb}, warm start, {grid_epochs} epochs each, one seed): test hard-exit MACs / "
                     "plain " + " -> ".join(f"{v:.3f}" for v in f["test MACs / plain"]) + " for lambda "
                     + ", ".join(f"{lam:g}" for lam in f["lambda"])
                     + (f" {_checked(claims, 'A larger lambda')}" if any(c.statement.startswith("A larger lambda")
                                                                         for c in claims) else "")
                     + f". Chosen on validation: lambda = {choice.chosen:g}, test hard-exit accuracy "
                     f"{100 * choice.hard[choice.chosen].accuracy:.2f}% at {choice.hard[choice.chosen].mean_fraction:.3f} "
                     f"of the plain MACs" + ("" if f["within tolerance"].any() else
                                            " (no model within the tolerance: the most accurate hard-exit model)") + ".")
    states = collapse["state"].value_counts(sort=False)
    lines.append("- **Gates** after the last epoch: " + ", ".join(f"{n} of {len(collapse)} models: {s}"
                                                                   for s, n in states.items()) + ".")
    lines.append("- Batch-1 latency is in the table of section 5: measured, not predicted, and part of no verdict.")
    return "\n".join(lines)


def protocol(parameters: dict, t1: Table1, choices: dict[tuple[str, str], LambdaChoice],
             groups: Sequence[BackboneRuns]) -> dict:
    """How every compared configuration was chosen, for the metrics file."""
    p = parameters
    start = (f"warm start: fine-tunes {'the gates and early heads (backbone frozen)' if p['grid_train'] == 'heads' else 'the whole network'} "
             f"of seed {p['seeds'][0]}'s network at lambda={p['headline_lambda']:g} for {p['grid_epochs']} epochs, one seed per lambda"
             if p["grid_start"] == "warm" else f"each lambda trained from scratch ({p['epochs']} epochs), one seed")
    rule = (f"cheapest on validation within {p['tolerance']:g} of the best validation accuracy the method reaches "
            "(proposed: best ensemble of the grid; BranchyNet: best of its candidates)")
    n = {f"{d}|{bb}|s{s}": len(c.sweep) for (d, bb, s), c in t1.branchynet.items()}
    return {
        "split": "every selection reads validation only; test is only reported",
        "seeds": list(p["seeds"]), "recipe": {k: p[k] for k in ("optimizer", "schedule", "lr", "epochs", "batch_size",
                                                                "weight_decay", "augment", "bf16", "channels_last")},
        "shared_reference": bool(p["reference"]),
        "headline_lambda": {"value": p["headline_lambda"], "chosen": "fixed before any run, reported for every seed"},
        "lambda_grid": {"values": list(p["lambda_grid"]), "start": start},
        "lambda_selection": {"rule": rule, "tolerance": p["tolerance"], "hard_gate_threshold": p["gate_threshold"],
                             "chosen": {f"{d}|{bb}": c.chosen for (d, bb), c in choices.items()}},
        "bnet_thresholds": {
            "rule": rule, "unit": "normalised entropy (nats / ln C)",
            "candidates": f"{p['bnet_shared']} shared values and {p['bnet_random']} per-exit vectors, log-spaced / "
                          f"log-uniform from {ENTROPY_LOW_NATS:g} nats to ln C, plus the final exit alone",
            "candidates_per_network": n, "proposed_budget": candidate_budget(groups),
            "chosen_nats": {f"{d}|{bb}|s{s}": c.nats() for (d, bb, s), c in t1.branchynet.items()}},
        "gate_threshold": f"t = {p['gate_threshold']:g}, fixed (not tuned)"}
