"""Runs of notebook 04_eenet: the multi-exit networks EENet schedules, one per training seed.

The cpu and smoke profiles schedule the shared reference network (``studies.reference``, form
"multi", one training per seed), which notebooks 00, 01 and 03 train or reuse; nothing is trained
for this notebook alone. The paper profile keeps the paper's own networks (``settings``), trained
with EENet's depth-weighted cross-entropy, one per seed. EENet and its baselines are then fitted on
the cached validation outputs of each run, so the plan holds only the backbone trainings.
"""
from __future__ import annotations

from ..data import DataSpec
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig
from .reference import reference_runs

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
