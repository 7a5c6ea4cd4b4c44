"""Runs of notebook 02_e2cm: plain backbones (only the final classifier is trained), one per
(data set, backbone). E2CM fits class means on them; the trained-head baselines (SDN on the frozen
backbone, BranchyNet jointly, E2CM+SDN) start from the same checkpoints inside the notebook."""
from __future__ import annotations

from ..backbones import build_backbone
from ..data import DataSpec
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig


def every_block(backbone: str) -> tuple[int, ...]:
    """Exits after the stem and every block but the last (the last feeds the classifier), merged
    with the backbone's own default exits."""
    bb = build_backbone(backbone, width=0.25)
    return tuple(sorted(set(bb.default_exits) | set(range(len(bb.stages) - 1))))


def plan(backbones: list[str], widths: list[float], datasets: list[str], train_size: int | None, val_size: int,
         test_size: int | None, epochs: list[int], batch_size: int, optimizer: str, lr: float,
         weight_decay: float, label_smoothing: float, bf16: list[bool], channels_last: bool, seed: int) -> list[RunSpec]:
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
