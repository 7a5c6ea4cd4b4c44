"""Runs of notebook 00_primer: one multi-exit network trained jointly on all exits."""
from __future__ import annotations

from ..data import DataSpec
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig


def plan(backbone: str, width: float, exit_after: list[int] | None, head: str, dataset: str,
         train_size: int | None, val_size: int, test_size: int | None, epochs: int, batch_size: int,
         lr: float, weight_decay: float, label_smoothing: float, exit_weights: list[float] | str,
         bf16: bool, channels_last: bool, seed: int, **_) -> list[RunSpec]:
    return [RunSpec(
        "primer",
        ModelSpec(backbone, width, None if exit_after is None else tuple(exit_after), head),
        DataSpec(dataset, val_size=val_size, train_size=train_size, test_size=test_size, seed=seed),
        LossSpec("weighted_ce", {"weights": exit_weights, "label_smoothing": label_smoothing}),
        TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, bf16=bf16,
                    channels_last=channels_last, seed=seed))]
