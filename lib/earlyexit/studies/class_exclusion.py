"""Runs of notebook 01_class_exclusion: per set-up and training seed, the plain backbone (no exits, the
reference), the class-exclusion network (BC: BCE-trained exclusion heads) and the confidence baseline's
network (CR), all trained from scratch under one recipe, at learning rates chosen from one grid.

Two ways to get the networks (``reference``):

- ``True`` (the cpu profile): plain and CR are the shared reference network (``studies.reference``: plain,
  and the multi-exit network trained with weighted CE, the final classifier carrying half the loss);
  BC is the same architecture with the same linear GAP heads, trained with the class-exclusion loss under
  the reference recipe (SGD Nesterov, one-cycle, crops and flips). A set-up may then only name the
  reference architecture (no ``pool``, ``image_size`` or recipe overrides).
- ``False`` (the paper profile): each set-up's own networks with the authors' recipe; CR trained with
  ``cr_loss`` ("authors": CE(final) + sum_k w_k CE(exit k), their CR objective).

Learning rates: every method gets the same grid ``lrs``; the notebook trains each rate at the first
seed, picks each method's rate on validation final-exit accuracy and trains the other seeds at it.

A set-up is a dict: ``name``, ``backbone``, ``dataset``, ``width``, ``pool`` (exit-head pooling grid:
1 = global average pooling, 2 = the CIFAR-100 "x2" heads), ``image_size`` (None = the data's; 224
for AlexNet), optionally the authors' tolerances ``bc_tolerance``/``cr_tolerance`` (used by the
notebook) and per-set-up overrides of the training parameters in ``TRAIN_KEYS``.
"""
from __future__ import annotations

from dataclasses import replace

from ..data import DataSpec
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig
from .reference import reference_run

TRAIN_KEYS = ("epochs", "batch_size", "lrs", "weight_decay", "schedule", "warmup", "crop_pad", "flip", "rho")
SETUP_KEYS = ("name", "backbone", "dataset", "width", "pool", "image_size", "bc_tolerance", "cr_tolerance") + TRAIN_KEYS
METHODS = ("plain", "BC", "CR")
CR_LOSSES = ("half_final", "authors")
_NOT_WITH_REFERENCE = ("pool", "image_size", "schedule", "warmup", "crop_pad", "flip")


def check_setups(setups: list[dict], reference: bool) -> None:
    """Refuse unknown keys, repeated names, and (on the reference network) anything the reference fixes."""
    names = set()
    for setup in setups:
        unknown = sorted(set(setup) - set(SETUP_KEYS))
        missing = sorted({"name", "backbone", "dataset"} - set(setup))
        if unknown or missing:
            raise ValueError(f"set-up {setup.get('name')!r}: unknown key(s) {unknown}, missing {missing}; "
                             f"allowed: {SETUP_KEYS}")
        if setup["name"] in names:
            raise ValueError(f"set-up name {setup['name']!r} used twice")
        names.add(setup["name"])
        fixed = [k for k in _NOT_WITH_REFERENCE if k in setup and not (k == "pool" and setup[k] == 1)]
        if reference and fixed:
            raise ValueError(f"set-up {setup['name']!r}: {fixed} are fixed by the reference network")


def setup_lrs(setup: dict, lrs: list[float]) -> list[float]:
    """The learning-rate grid of a set-up (its own ``lrs`` or the shared one), the same for every method."""
    grid = [float(v) for v in setup.get("lrs", lrs)]
    if not grid or len(set(grid)) != len(grid):
        raise ValueError(f"set-up {setup['name']!r}: the learning-rate grid must be non-empty and not repeat: {grid}")
    return grid


def method_run(setup: dict, method: str, lr: float, seed: int, *, reference: bool, train_size: int | None,
               val_size: int, test_size: int | None, epochs: int, batch_size: int, weight_decay: float,
               schedule: str, warmup: float, crop_pad: int, flip: bool, bce_mode: str, rho: float | None,
               cr_loss: str, bf16: bool, channels_last: bool, split_seed: int = 0) -> RunSpec:
    """The RunSpec of one method of one set-up at learning rate ``lr`` and training seed ``seed``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if cr_loss not in CR_LOSSES:
        raise ValueError(f"cr_loss must be one of {CR_LOSSES}, got {cr_loss!r}")
    p = {"epochs": epochs, "batch_size": batch_size, "weight_decay": weight_decay, "schedule": schedule,
         "warmup": warmup, "crop_pad": crop_pad, "flip": flip, "rho": rho,
         **{k: setup[k] for k in TRAIN_KEYS if k in setup and k != "lrs"}}
    bc_loss = LossSpec("class_exclusion", {"bce_mode": bce_mode, "rho": p["rho"]})
    cr = LossSpec("weighted_ce", {"weights": "half_final"}) if cr_loss == "half_final" else LossSpec("class_exclusion_cr")
    name = f"{setup['name']}-{method.lower()}-lr{lr:g}-s{seed}"
    if reference:
        ref = dict(backbone=setup["backbone"], width=setup.get("width", 1.0), dataset=setup["dataset"],
                   train_size=train_size, val_size=val_size, test_size=test_size, epochs=p["epochs"],
                   batch_size=p["batch_size"], lr=lr, weight_decay=p["weight_decay"], bf16=bf16,
                   channels_last=channels_last, split_seed=split_seed)
        if method == "plain":
            return reference_run("plain", seed, **ref)
        multi = reference_run("multi", seed, **ref)
        if method == "CR" and cr_loss == "half_final":
            return multi
        return replace(multi, name=name, loss=bc_loss if method == "BC" else cr)
    data = DataSpec(setup["dataset"], val_size=val_size, train_size=train_size, test_size=test_size, seed=split_seed)
    width, size = setup.get("width", 1.0), setup.get("image_size")
    exits = () if method == "plain" else None
    model = ModelSpec(setup["backbone"], width, exits, "linear", {} if exits == () else {"pool": setup.get("pool", 1)},
                      image_size=size)
    loss = {"plain": LossSpec("weighted_ce", {"weights": "uniform"}), "BC": bc_loss, "CR": cr}[method]
    train = TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], lr=lr, weight_decay=p["weight_decay"],
                        schedule=p["schedule"], warmup=p["warmup"], crop_pad=p["crop_pad"], flip=p["flip"],
                        bf16=bf16, channels_last=channels_last, seed=seed)
    return RunSpec(name, model, data, loss, train)


def _options(params: dict) -> dict:
    keys = ("reference", "train_size", "val_size", "test_size", "epochs", "batch_size", "weight_decay", "schedule",
            "warmup", "crop_pad", "flip", "bce_mode", "rho", "cr_loss", "bf16", "channels_last")
    return {k: params[k] for k in keys}


def lr_candidates(setups: list[dict], lrs: list[float], seeds: list[int],
                  **params) -> dict[str, dict[str, dict[float, RunSpec]]]:
    """{set-up: {method: {lr: RunSpec at the first seed}}}: the trainings the learning rate is chosen from."""
    check_setups(setups, params["reference"])
    return {s["name"]: {m: {lr: method_run(s, m, lr, seeds[0], **_options(params)) for lr in setup_lrs(s, lrs)}
                        for m in METHODS} for s in setups}


def seed_runs(setups: list[dict], chosen: dict[str, dict[str, float]], seeds: list[int],
              **params) -> dict[str, dict[str, list[RunSpec]]]:
    """{set-up: {method: [RunSpec per seed]}} at each method's chosen learning rate ``chosen[set-up][method]``."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"give distinct training seeds, got {seeds}")
    check_setups(setups, params["reference"])
    return {s["name"]: {m: [method_run(s, m, chosen[s["name"]][m], seed, **_options(params)) for seed in seeds]
                        for m in METHODS} for s in setups}


def setup_runs(setups: list[dict], lrs: list[float], seeds: list[int], reference: bool, train_size: int | None,
               val_size: int, test_size: int | None, epochs: int, batch_size: int, weight_decay: float, schedule: str,
               warmup: float, crop_pad: int, flip: bool, bce_mode: str, rho: float | None, cr_loss: str, bf16: bool,
               channels_last: bool) -> dict[str, dict[str, RunSpec]]:
    """{set-up: {method: RunSpec}} at the first seed and the grid's first learning rate (one network per
    method, e.g. for timing)."""
    params = {k: v for k, v in locals().items() if k not in ("setups", "lrs", "seeds")}
    first = lr_candidates(setups, lrs, seeds, **params)
    return {name: {m: next(iter(by_lr.values())) for m, by_lr in by_m.items()} for name, by_m in first.items()}


def plan(setups: list[dict], lrs: list[float], seeds: list[int], reference: bool, train_size: int | None,
         val_size: int, test_size: int | None, epochs: int, batch_size: int, weight_decay: float, schedule: str,
         warmup: float, crop_pad: int, flip: bool, bce_mode: str, rho: float | None, cr_loss: str, bf16: bool,
         channels_last: bool, **_) -> list[RunSpec]:
    """Every run the notebook may train: each rate of the grid at the first seed, and the other seeds at
    every rate (the notebook trains them at the chosen rate only; with a one-rate grid this is exact)."""
    params = {k: v for k, v in locals().items() if k not in ("_", "setups", "lrs", "seeds")}
    check_setups(setups, reference)
    specs = []
    for s in setups:
        for lr in setup_lrs(s, lrs):
            runs = seed_runs([s], {s["name"]: {m: lr for m in METHODS}}, seeds, **params)[s["name"]]
            specs += [spec for m in METHODS for spec in runs[m]]
    return specs
