"""Notebook 06, early exit for a network of your own: a torchvision classifier trained by the library's loop
(as a model you trained yourself would arrive), wrapped at named submodules (``earlyexit.wrap``), exits
given to the frozen model, every rule fitted on validation (``methods.every_rule``) and timed for real.

The runs (``plan``): the model without exits; linear heads after each named submodule trained on the frozen
model from inputs computed once (its own weights and classifier untouched, as 02's cached SDN heads); E2CM
class means at the same places (no gradient training). The model goes through ``train_cached`` as the
registry's ``torchvision`` backbone, so that its training is cached like every other.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import Mapping, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..data import DataSpec
from ..fronts import Front
from ..macs import mac_table
from ..methods.e2cm import class_means_run
from ..methods.eenet import EENetConfig
from ..methods.every_rule import operating_points, rule_fronts
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig
from ..wrapping import wrap
from .benchmark import speed_points

__all__ = ["plain_run", "heads_run", "e2cm_run", "plan", "equality_check", "mac_check",
           "fit_rules", "time_points", "point_rows", "speed_sentence", "conclusions"]

HEAD_BATCH = 256


def plain_run(model: str, exit_after: Sequence[str], width: float, dataset: str, train_size: int | None,
              val_size: int, test_size: int | None, epochs: int, batch_size: int, lr: float, weight_decay: float,
              bf16: bool, channels_last: bool, seed: int, split_seed: int = 0) -> RunSpec:
    """The model alone (its own classifier, no exits), trained with the library's reference recipe (SGD with
    Nesterov momentum, one-cycle learning rate, 2-pixel crops and flips)."""
    spec = ModelSpec("torchvision", width, (), "linear",
                     backbone_options={"model": model, "cut_after": list(exit_after)})
    return RunSpec(f"own_{dataset}_{model}x{width:g}_s{seed}", spec,
                   DataSpec(dataset, val_size=val_size, train_size=train_size, test_size=test_size, seed=split_seed),
                   LossSpec("weighted_ce", {"weights": "uniform"}),
                   TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, bf16=bf16,
                               channels_last=channels_last, seed=seed))


def heads_run(parent: RunSpec, epochs: int, lr: float, patience: int) -> RunSpec:
    """Linear heads after every named submodule on the frozen model: Adam at ``lr``, their inputs computed
    once (one augmented pass), stopped at a validation plateau of ``patience`` epochs or at ``epochs``."""
    early = len(parent.model.backbone_options["cut_after"])
    t = parent.train
    train = TrainConfig(epochs=epochs, batch_size=HEAD_BATCH, optimizer="adam", lr=lr, weight_decay=0.0,
                        schedule="constant", crop_pad=t.crop_pad, flip=t.flip, bf16=t.bf16,
                        channels_last=t.channels_last, seed=t.seed, patience=patience, freeze_backbone=True,
                        head_inputs="cached")
    return RunSpec(f"{parent.name}_heads", replace(parent.model, exit_after=tuple(range(early))), parent.data,
                   LossSpec("weighted_ce", {"weights": "uniform"}), train, init_from=parent)


def e2cm_run(parent: RunSpec) -> RunSpec:
    """E2CM class means (globally pooled features) after every named submodule of the frozen model."""
    early = len(parent.model.backbone_options["cut_after"])
    return class_means_run(parent, "gap", True, f"{parent.name}_e2cm", exit_after=tuple(range(early)))


def plan(model: str, exit_after: list[str], width: float, dataset: str, train_size: int | None, val_size: int,
         test_size: int | None, epochs: int, batch_size: int, lr: float, weight_decay: float, head_epochs: int,
         head_lr: float, head_patience: int, bf16: bool, channels_last: bool, seed: int,
         split_seed: int = 0, **_) -> list[RunSpec]:
    """Every training of notebook 06: the model, its heads, its class means."""
    parent = plain_run(model, exit_after, width, dataset, train_size, val_size, test_size, epochs, batch_size, lr,
                       weight_decay, bf16, channels_last, seed, split_seed)
    return [parent, heads_run(parent, head_epochs, head_lr, head_patience), e2cm_run(parent)]


# ---------------------------------------------------------------- checks a reader can see
@torch.no_grad()
def equality_check(model: nn.Module, exit_after: Sequence[str], input_shape: tuple[int, int, int],
                   images: int = 8, seed: int = 0) -> dict:
    """Wrap ``model`` (in eval mode) and compare the wrapped network's final exit with the model's own output
    on random images: the largest absolute difference, and whether they are bit for bit equal."""
    model = model.eval()
    net = wrap(model, exit_after, input_shape).eval()
    x = torch.randn(images, *input_shape, generator=torch.Generator().manual_seed(seed))
    original, wrapped = model(x), net(x).logits[-1]
    return {"exits": net.num_exits, "images": images, "max |difference|": (original - wrapped).abs().max().item(),
            "bit for bit equal": bool(torch.equal(original, wrapped))}


@torch.no_grad()
def mac_check(net: nn.Module, input_shape: tuple[int, int, int]) -> list[dict]:
    """The wrapped network's MAC table against torch's FLOP counter (FLOPs / 2 of the convolutions and matrix
    products): the plain model, and the network with every head (what running every exit costs)."""
    net = copy.deepcopy(net).cpu().float().eval()     # the caller's network stays where it is
    table = mac_table(net)
    x = torch.zeros(1, *input_shape)
    with FlopCounterMode(display=False) as plain:
        net.backbone(x)
    with FlopCounterMode(display=False) as every_exit:
        net(x)
    return [{"what": "the model alone", "MAC table (MMACs)": table.backbone_macs / 1e6,
             "FLOP counter / 2 (MMACs)": plain.get_total_flops() / 2e6},
            {"what": "every stage and every head", "MAC table (MMACs)": table.exit_macs[-1] / 1e6,
             "FLOP counter / 2 (MMACs)": every_exit.get_total_flops() / 2e6}]


def fit_rules(heads, e2cm, name: str, rules: Sequence[str], vectors: int, grid: int, seed: int,
              eenet_budgets: int, eenet_epochs: int, scheduler_seeds: Sequence[int], within: float
              ) -> tuple[dict[str, Front], list[dict]]:
    """Every rule's front on the heads (E2CM's on the class-means network), fitted on validation
    (``every_rule.rule_fronts``), and one operating point per rule (``every_rule.operating_points``)."""
    found = rule_fronts(heads, name, rules, vectors, grid, seed, eenet_budgets=eenet_budgets,
                        eenet_config=EENetConfig(epochs=eenet_epochs), scheduler_seeds=scheduler_seeds, e2cm=e2cm)
    return found, operating_points(found, within)


def time_points(found: Mapping[str, Front], points: Sequence[dict], heads, e2cm, repeats: int, rows: int,
                batches: Sequence[int]) -> list[dict]:
    """Real early exit at each rule's operating point against the model alone, one thread
    (``benchmark.speed_points``); E2CM runs on the class-means network, every other rule on the heads."""
    timed = []
    for p in points:
        run = e2cm if p["rule"] == "E2CM" else heads
        timed += speed_points(found[p["rule"]], run, [p["test cost"]], repeats, rows, batches, threads=1)
    return timed


def point_rows(points: Sequence[dict]) -> list[dict]:
    """``every_rule.operating_points`` for reading: accuracies in %, costs as % of the model's MACs."""
    return [{"rule": p["rule"], "candidates": p["candidates"], "val accuracy (%)": 100 * p["val accuracy"],
             "test accuracy (%)": 100 * p["test accuracy"], "test MACs (% of the model)": 100 * p["test cost"],
             "oracle accuracy (%)": 100 * p["oracle point accuracy"],
             "oracle MACs (% of the model)": 100 * p["oracle point cost"]} for p in points]


def speed_sentence(speed: Sequence[Mapping]) -> str:
    """How much of the MAC-predicted speed-up the real early exit keeps, per batch size, over the rules timed
    (a wall-clock measurement: printed beside the timing table, not part of the conclusions' text)."""
    parts = []
    for batch in sorted({r["batch"] for r in speed}):
        ratio = [r["realised/predicted"] for r in speed if r["batch"] == batch]
        parts.append(f"batch {batch}: {min(ratio):.2f}-{max(ratio):.2f}")
    return (f"real early exit keeps this share of the MAC-predicted speed-up over the {len(speed) // max(1, len(parts))} "
            f"rule(s) timed: {'; '.join(parts)}")


def conclusions(name: str, final_accuracy: float, points: Sequence[dict], within: float,
                fronts: Mapping[str, Front]) -> str:
    """What the run shows, in a few sentences built from its tables (so it holds for every profile)."""
    best = min(points, key=lambda p: p["test cost"])
    most = max(points, key=lambda p: p["test accuracy"])
    lines = [f"**{name}**, final exit {100 * final_accuracy:.2f}% on test. Each rule's operating point is the "
             f"cheapest point of its validation front within {100 * within:g} point(s) of that front's best "
             f"validation accuracy, read on test:",
             "",
             f"- cheapest: **{best['rule']}** at {100 * best['test cost']:.1f}% of the model's MACs, "
             f"{100 * best['test accuracy']:.2f}% accuracy;",
             f"- most accurate: **{most['rule']}** at {100 * most['test accuracy']:.2f}% "
             f"({100 * most['test cost']:.1f}% of the MACs);",
             f"- the oracle (every image at its first correct exit) needs {100 * best['oracle point cost']:.1f}% of "
             f"the MACs for {100 * best['oracle point accuracy']:.2f}%: what no rule on these heads can beat."]
    lines.append("- real speed: the table of section 4 (measured, so not part of this text).")
    single = [m for m, f in fronts.items() if f.curve()[0].shape[1] <= 1]
    if single:
        lines.append(f"- fronts of a single point (no other candidate of the rule is on its validation front): "
                     f"{', '.join(single)}.")
    return "\n".join(lines)
