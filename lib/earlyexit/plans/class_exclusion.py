"""Runs of notebook 01_class_exclusion: per set-up, the plain backbone (no exits, the reference), the
class-exclusion network (BC: BCE-trained exclusion heads) and the confidence baseline (CR: the same
heads trained with CE), all trained jointly from scratch with the same data, epochs and seed.

A set-up is a dict: ``name``, ``backbone``, ``dataset``, ``width``, ``pool`` (exit-head pooling grid:
1 = global average pooling, 2 = the CIFAR-100 "x2" heads), ``image_size`` (None = the data's; 224
for AlexNet), optionally the authors' tolerances ``bc_tolerance``/``cr_tolerance`` (used by the
notebook) and per-set-up overrides of any training parameter below.
"""
from __future__ import annotations

from ..data import DataSpec
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig

TRAIN_KEYS = ("epochs", "batch_size", "lr", "bc_lr", "weight_decay", "schedule", "warmup", "crop_pad", "flip",
              "rho")
SETUP_KEYS = ("name", "backbone", "dataset", "width", "pool", "image_size", "bc_tolerance", "cr_tolerance") + TRAIN_KEYS
METHODS = ("plain", "BC", "CR")


def setup_runs(setups: list[dict], train_size: int | None, val_size: int, test_size: int | None, epochs: int,
               batch_size: int, lr: float, bc_lr: float, weight_decay: float, schedule: str, warmup: float,
               crop_pad: int, flip: bool, bce_mode: str, rho: float | None, bf16: bool, channels_last: bool,
               seed: int) -> dict[str, dict[str, RunSpec]]:
    """{set-up name: {"plain" | "BC" | "CR": RunSpec}}. BC uses ``bc_lr`` (the authors train BC at a
    fifth of the others' learning rate, since rho scales its BCE term up 36-396 times)."""
    runs = {}
    for setup in setups:
        unknown = sorted(set(setup) - set(SETUP_KEYS))
        missing = sorted({"name", "backbone", "dataset"} - set(setup))
        if unknown or missing:
            raise ValueError(f"set-up {setup.get('name')!r}: unknown key(s) {unknown}, missing {missing}; "
                             f"allowed: {SETUP_KEYS}")
        if setup["name"] in runs:
            raise ValueError(f"set-up name {setup['name']!r} used twice")
        p = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "bc_lr": bc_lr, "weight_decay": weight_decay,
             "schedule": schedule, "warmup": warmup, "crop_pad": crop_pad, "flip": flip, "rho": rho,
             **{k: setup[k] for k in TRAIN_KEYS if k in setup}}
        data = DataSpec(setup["dataset"], val_size=val_size, train_size=train_size, test_size=test_size, seed=seed)
        width, size = setup.get("width", 1.0), setup.get("image_size")
        heads = ModelSpec(setup["backbone"], width, None, "linear", {"pool": setup.get("pool", 1)}, image_size=size)
        plain = ModelSpec(setup["backbone"], width, (), "linear", image_size=size)

        def train(run_lr: float) -> TrainConfig:
            return TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], lr=run_lr, weight_decay=p["weight_decay"],
                               schedule=p["schedule"], warmup=p["warmup"], crop_pad=p["crop_pad"], flip=p["flip"],
                               bf16=bf16, channels_last=channels_last, seed=seed)
        name = setup["name"]
        runs[name] = {
            "plain": RunSpec(f"{name}-plain", plain, data, LossSpec("weighted_ce", {"weights": "uniform"}), train(p["lr"])),
            "BC": RunSpec(f"{name}-bc", heads, data, LossSpec("class_exclusion", {"bce_mode": bce_mode, "rho": p["rho"]}),
                          train(p["bc_lr"])),
            "CR": RunSpec(f"{name}-cr", heads, data, LossSpec("class_exclusion_cr"), train(p["lr"])),
        }
    return runs


def plan(setups: list[dict], train_size: int | None, val_size: int, test_size: int | None, epochs: int,
         batch_size: int, lr: float, bc_lr: float, weight_decay: float, schedule: str, warmup: float,
         crop_pad: int, flip: bool, bce_mode: str, rho: float | None, bf16: bool, channels_last: bool,
         seed: int, **_) -> list[RunSpec]:
    """Every run of every set-up, in set-up order (plain, BC, CR)."""
    args = {k: v for k, v in locals().items() if k != "_"}
    return [spec for runs in setup_runs(**args).values() for spec in runs.values()]
