"""Runs of notebook 05_benchmark: one backbone family, every exit rule, per training seed.

Every network is a form of the shared reference network (``plans.reference``), built by the plan
module of the notebook that owns it, so that in the cpu profile each is found in the run cache
(``tests/test_reference.py`` checks that 05 trains nothing new there):

- ``multi`` (00): max-softmax, entropy, patience, the confidence baseline of class exclusion, EENet;
- ``BC`` (01): the same architecture trained with the class-exclusion loss; class exclusion;
- ``gated`` (03): the same architecture with gated heads, soft-conditional loss at a fixed lambda;
  differentiable branching's hard gates;
- ``plain`` (02) and ``E2CM`` (02): class means fitted on the frozen plain network; E2CM.
"""
from __future__ import annotations

from ..train import RunSpec
from . import class_exclusion as p01, differentiable_branching as p03, e2cm as p02
from .reference import reference_runs

__all__ = ["NETWORKS", "networks", "plan"]

NETWORKS = ("multi", "BC", "gated", "plain", "E2CM")


def networks(backbone: str, width: float, dataset: str, train_size: int | None, val_size: int,
             test_size: int | None, epochs: int, batch_size: int, lr: float, weight_decay: float, bf16: bool,
             channels_last: bool, seeds: list[int], class_exclusion: dict, gated: dict, e2cm: dict,
             **_) -> dict[str, list[RunSpec]]:
    """Network name (``NETWORKS``) -> one run per training seed. ``class_exclusion``: {setup (01's set-up
    name), bce_mode, rho}; ``gated``: {lambda, mixing, cost_reference} (03's headline network);
    ``e2cm``: {feature, fit_augment}. They must equal the owning notebooks' values for the runs to be shared."""
    ref = dict(backbone=backbone, width=width, dataset=dataset, train_size=train_size, val_size=val_size,
               test_size=test_size, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
               bf16=bf16, channels_last=channels_last)
    for name, given, needed in (("class_exclusion", class_exclusion, {"setup", "bce_mode", "rho"}),
                                ("gated", gated, {"lambda", "mixing", "cost_reference"}),
                                ("e2cm", e2cm, {"feature", "fit_augment"})):
        if set(given) != needed:
            raise ValueError(f"{name} must give exactly {sorted(needed)}, got {sorted(given)}")
    setup = {"name": class_exclusion["setup"], "backbone": backbone, "dataset": dataset, "width": width}
    bc = [p01.method_run(setup, "BC", lr, seed, reference=True, train_size=train_size, val_size=val_size,
                         test_size=test_size, epochs=epochs, batch_size=batch_size, weight_decay=weight_decay,
                         schedule="onecycle", warmup=0.0, crop_pad=2, flip=True, bce_mode=class_exclusion["bce_mode"],
                         rho=class_exclusion["rho"], cr_loss="half_final", bf16=bf16, channels_last=channels_last)
          for seed in seeds]
    layout = p03.layout(datasets=[dataset], backbones=[backbone], width=width, exit_after={}, head_features="linear",
                        head_width=64, head_pool=1, train_size=train_size, val_size=val_size, test_size=test_size,
                        epochs=epochs, batch_size=batch_size, optimizer="sgd", schedule="onecycle", lr=lr,
                        weight_decay=weight_decay, augment=True, seeds=seeds, split_seed=0,
                        headline_lambda=gated["lambda"], lambda_grid=[], grid_start="warm", grid_train="heads",
                        grid_epochs=1, mixing=gated["mixing"], cost_reference=gated["cost_reference"],
                        branchynet_weights="uniform", reference=True, bf16=bf16, channels_last=channels_last)
    plain = reference_runs("plain", seeds, **ref)
    return {"multi": reference_runs("multi", seeds, **ref), "BC": bc,
            "gated": [layout[(dataset, backbone)].proposed[s] for s in seeds], "plain": plain,
            "E2CM": [p02.e2cm_spec(p, e2cm["feature"], e2cm["fit_augment"]) for p in plain]}


def plan(**parameters) -> list[RunSpec]:
    """Every run of ``networks``, the parents before the runs that start from them."""
    nets = networks(**parameters)
    return [spec for name in NETWORKS for spec in nets[name]]
