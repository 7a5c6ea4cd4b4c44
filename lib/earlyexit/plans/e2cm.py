"""Runs of notebook 02_e2cm. Per (data set, backbone): the plain backbone (only the final classifier
is trained), its E2CM network (class-means heads fitted on it, no training), and the trained-head
rivals that start from the same checkpoint: SDN heads on the frozen backbone, BranchyNet (heads and
backbone jointly) and E2CM+SDN heads (linear on pooled feature + normalised distances). The
equal-training-time versions of the rivals need the backbone's measured epoch time, so the notebook
derives them with ``head_runs(..., seconds=...)``; the plan lists the runs that are known up front.
The unsupervised variant's autoencoders are ordinary runs too."""
from __future__ import annotations

from dataclasses import replace

from ..backbones import build_backbone
from ..data import DATASET_SHAPES, DataSpec
from ..e2cm import autoencoder_run, class_means_run
from ..macs import mac_table
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig, build_model


def every_block(backbone: str) -> tuple[int, ...]:
    """Exits after the stem and every block but the last (the last feeds the classifier), merged
    with the backbone's own default exits."""
    bb = build_backbone(backbone, width=0.25)
    return tuple(sorted(set(bb.default_exits) | set(range(len(bb.stages) - 1))))


def backbone_runs(backbones: list[str], widths: list[float], datasets: list[str], train_size: int | None,
                  val_size: int, test_size: int | None, epochs: list[int], batch_size: int, optimizer: str, lr: float,
                  weight_decay: float, label_smoothing: float, bf16: list[bool], channels_last: bool,
                  seed: int, **_) -> list[RunSpec]:
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


def head_runs(parent: RunSpec, e2cm: RunSpec, head_lr: float, epochs: int, seconds: float | None = None,
              feature: str = "gap", tag: str = "") -> dict[str, RunSpec]:
    """The trained-head rivals of E2CM on ``parent``'s backbone, Adam at ``head_lr`` (the authors'
    optimiser), loss CE(final) + sum_i c_i CE(exit i) with c_i the exit's cost fraction (the
    authors' demo). ``seconds``: a wall-clock budget (``epochs`` is then only a cap)."""
    classes, channels, size = DATASET_SHAPES[parent.data.name]
    fractions = mac_table(build_model(parent.model, classes, channels, size)).exit_fractions
    weights = [round(f / fractions[-1], 6) for f in fractions[:-1]] + [1.0]
    t = parent.train
    train = TrainConfig(epochs=epochs, batch_size=128, optimizer="adam", lr=head_lr, weight_decay=0.0,
                        schedule="constant", crop_pad=2, flip=True, bf16=t.bf16, channels_last=t.channels_last,
                        seed=t.seed, time_budget_s=seconds)
    loss = LossSpec("weighted_ce", {"weights": weights})
    frozen = replace(train, freeze_backbone=True)
    heads = replace(parent.model, head="linear", head_options={})
    return {
        "SDN": RunSpec(f"{parent.name}_sdn{tag}", heads, parent.data, loss, frozen, init_from=parent),
        "BranchyNet": RunSpec(f"{parent.name}_branchy{tag}", heads, parent.data, loss, train, init_from=parent),
        "E2CM+SDN": RunSpec(f"{parent.name}_e2cm_sdn{tag}",
                            replace(parent.model, head="class_means_linear", head_options={"feature": feature}),
                            parent.data, loss, frozen, init_from=e2cm, init_heads=True),
    }


def plan(backbones: list[str], datasets: list[str], feature: str, fit_augment: bool, head_lr: float,
         combo_epochs: int, combo_backbones: list[str], unsup_datasets: list[str], unsup_seeds: list[int],
         unsup_epochs: int, unsup_channels: list[int], val_size: int, unsup_train_size: int | None,
         unsup_test_size: int | None, **parameters) -> list[RunSpec]:
    """Backbones, their E2CM networks, the no-time-limit SDN and E2CM+SDN heads, the autoencoders."""
    specs = []
    for parent in backbone_runs(backbones=backbones, datasets=datasets, val_size=val_size, **parameters):
        e2cm = class_means_run(parent, feature, fit_augment)
        specs += [parent, e2cm]
        if parent.model.backbone in combo_backbones:
            rivals = head_runs(parent, e2cm, head_lr, combo_epochs, feature=feature, tag="_full")
            specs += [rivals["SDN"], rivals["E2CM+SDN"]]
    specs += [autoencoder_run(d, s, unsup_epochs, unsup_channels, val_size, unsup_train_size, unsup_test_size)
              for d in unsup_datasets for s in unsup_seeds]
    return specs
