"""Runs of notebook 04_eenet: multi-exit networks trained with EENet's depth-weighted CE.

Each setting names a data set and a multi-exit model; EENet and its baselines are then fitted on the
cached validation outputs of each run, so the plan holds only the backbone trainings.
"""
from __future__ import annotations

from ..data import DataSpec
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig


def plan(settings: list[dict], train_size: int | None, val_size: int, test_size: int | None, epochs: int,
         batch_size: int, lr: float, weight_decay: float, schedule: str, bf16: bool, channels_last: bool,
         seed: int, **_) -> list[RunSpec]:
    """One run per setting {name, dataset, backbone, width, exit_after, head, head_options}."""
    runs = []
    for s in settings:
        unknown = set(s) - {"name", "dataset", "backbone", "width", "exit_after", "head", "head_options"}
        if unknown:
            raise ValueError(f"unknown setting key(s) {sorted(unknown)}")
        runs.append(RunSpec(
            f"eenet_{s['name']}",
            ModelSpec(s["backbone"], s.get("width", 1.0), tuple(s["exit_after"]), s.get("head", "linear"),
                      dict(s.get("head_options", {}))),
            DataSpec(s["dataset"], val_size=val_size, train_size=train_size, test_size=test_size, seed=seed),
            LossSpec("weighted_ce", {"weights": "depth"}),
            TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, schedule=schedule,
                        bf16=bf16, channels_last=channels_last, seed=seed)))
    return runs
