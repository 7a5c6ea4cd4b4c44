"""Runs of notebook 03_differentiable_branching: per data set and backbone, the plain backbone,
BranchyNet (same branches, weighted per-exit CE) and the soft-conditional method at every lambda."""
from __future__ import annotations

from dataclasses import replace

from ..data import DATASET_SHAPES, DataSpec
from ..diffbranch import BackboneRuns, normalised_exit_costs
from ..macs import mac_table
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig, build_model


def run_name(dataset: str, backbone: str, method: str) -> str:
    """'plain', 'branchynet' or 'lam<value>' for the proposed method at one lambda."""
    return f"db_{dataset}_{backbone}_{method}"


def lambda_method(lam: float) -> str:
    return f"lam{lam:g}"


def plan(datasets: list[str], backbones: list[str], width: float, exit_after: dict[str, list[int]],
         head_features: str, head_width: int, head_pool: int, train_size: int | None, val_size: int,
         test_size: int | None, epochs: int, batch_size: int, lr: float, weight_decay: float,
         lambdas: list[float], mixing: str, cost_reference: str, branchynet_weights: str | list[float],
         bf16: bool, channels_last: bool, seed: int, **_) -> list[RunSpec]:
    train = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer="adam", lr=lr, weight_decay=weight_decay,
                        schedule="constant", crop_pad=0, flip=False, bf16=bf16, channels_last=channels_last,
                        seed=seed)
    head = {"features": head_features, "pool": head_pool, **({"width": head_width} if head_features == "conv" else {})}
    specs = []
    for dataset in datasets:
        data = DataSpec(dataset, val_size=val_size, train_size=train_size, test_size=test_size, seed=seed)
        classes, channels, size = DATASET_SHAPES[dataset]
        for backbone in backbones:
            exits = exit_after.get(backbone)
            exits = None if exits is None else tuple(exits)
            gated = ModelSpec(backbone, width, exits, "gated", head)
            costs = normalised_exit_costs(mac_table(build_model(gated, classes, channels, size)), cost_reference)
            specs.append(RunSpec(run_name(dataset, backbone, "plain"), ModelSpec(backbone, width, ()), data,
                                 LossSpec("weighted_ce", {"weights": "uniform"}), train))
            branchy_head = "conv" if head_features == "conv" else "linear"
            branchy_options = {k: v for k, v in head.items() if k != "features"}
            specs.append(RunSpec(run_name(dataset, backbone, "branchynet"),
                                 ModelSpec(backbone, width, exits, branchy_head, branchy_options), data,
                                 LossSpec("weighted_ce", {"weights": branchynet_weights}), train))
            for lam in lambdas:
                specs.append(RunSpec(run_name(dataset, backbone, lambda_method(lam)), gated, data,
                                     LossSpec("soft_conditional", {"costs": [round(c, 6) for c in costs],
                                                                   "lam": float(lam), "mixing": mixing}),
                                     replace(train, keep_epoch_checkpoints=True)))
    return specs


def group_runs(runs: dict, datasets: list[str], backbones: list[str],
               lambdas: list[float]) -> dict[tuple[str, str], BackboneRuns]:
    """The trained runs (by run name) grouped per (data set, backbone), as every table compares them."""
    return {(d, bb): BackboneRuns(d, bb, runs[run_name(d, bb, "plain")], runs[run_name(d, bb, "branchynet")],
                                  {lam: runs[run_name(d, bb, lambda_method(lam))] for lam in lambdas})
            for d in datasets for bb in backbones}
