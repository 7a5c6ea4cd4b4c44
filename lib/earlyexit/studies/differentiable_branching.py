"""Runs of notebook 03_differentiable_branching, per data set and backbone:

- ``plain`` and ``branchynet`` for every training seed. With ``reference=True`` (the cpu profile) these
  are the shared reference network's "plain" and "multi" forms (``studies.reference``), which every
  notebook finds in one cache; otherwise (the paper profile) this notebook's own runs under the
  given recipe.
- ``proposed``: the gated network trained with the soft-conditional loss at ``headline_lambda`` (fixed
  before any run) for every seed, under the same recipe and with the same linear heads as the rows
  above (plus one linear gate per head).
- ``grid``: one network per lambda of ``lambda_grid``, one seed. ``grid_start="warm"`` fine-tunes from
  the first seed's proposed network for ``grid_epochs`` (``grid_train="heads"``: gates and early heads,
  backbone frozen, linear heads trained on inputs computed in one pass (``earlyexit.head_inputs``);
  ``"all"``: the whole network); ``"scratch"`` trains each from scratch like ``proposed``.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..data import DATASET_SHAPES, DataSpec
from ..methods.differentiable_branching import BackboneRuns, normalised_exit_costs
from ..macs import mac_table
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig, build_model
from .reference import reference_run

GRID_STARTS = ("warm", "scratch")
GRID_TRAIN = ("heads", "all")


@dataclass
class Layout:
    """The run specs of one (data set, backbone): per seed, and per lambda for the grid."""
    plain: dict[int, RunSpec] = field(default_factory=dict)
    branchynet: dict[int, RunSpec] = field(default_factory=dict)
    proposed: dict[int, RunSpec] = field(default_factory=dict)
    grid: dict[float, RunSpec] = field(default_factory=dict)

    def specs(self) -> list[RunSpec]:
        return [*self.plain.values(), *self.branchynet.values(), *self.proposed.values(), *self.grid.values()]


def _name(dataset: str, backbone: str, width: float, method: str, seed: int) -> str:
    return f"db_{dataset}_{backbone}x{width:g}_{method}_s{seed}"


def layout(datasets: list[str], backbones: list[str], width: float, exit_after: dict[str, list[int]],
           head_features: str, head_width: int, head_pool: int, train_size: int | None, val_size: int,
           test_size: int | None, epochs: int, batch_size: int, optimizer: str, schedule: str, lr: float,
           weight_decay: float, augment: bool, seeds: list[int], split_seed: int, headline_lambda: float,
           lambda_grid: list[float], grid_start: str, grid_train: str, grid_epochs: int, mixing: str,
           cost_reference: str, branchynet_weights: str | list[float], reference: bool, bf16: bool,
           channels_last: bool, **_) -> dict[tuple[str, str], Layout]:
    """Every run the notebook compares, grouped per (data set, backbone)."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"give distinct training seeds, got {seeds}")
    if grid_start not in GRID_STARTS or grid_train not in GRID_TRAIN:
        raise ValueError(f"grid_start must be one of {GRID_STARTS} and grid_train one of {GRID_TRAIN}")
    if reference and (head_features != "linear" or head_pool != 1 or optimizer != "sgd" or schedule != "onecycle"
                      or not augment or exit_after):
        raise ValueError("the reference network has linear global-average-pool heads at the default exits and "
                         "trains with SGD, one-cycle and crops/flips: set reference=False for another set-up")
    train = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                        schedule=schedule, crop_pad=2 if augment else 0, flip=augment, bf16=bf16,
                        channels_last=channels_last)
    head = {"features": head_features, "pool": head_pool, **({"width": head_width} if head_features == "conv" else {})}
    out = {}
    for dataset in datasets:
        data = DataSpec(dataset, val_size=val_size, train_size=train_size, test_size=test_size, seed=split_seed)
        classes, channels, size = DATASET_SHAPES[dataset]
        for backbone in backbones:
            exits = exit_after.get(backbone)
            exits = None if exits is None else tuple(exits)
            gated = ModelSpec(backbone, width, exits, "gated", head)
            costs = [round(c, 6) for c in normalised_exit_costs(mac_table(build_model(gated, classes, channels, size)),
                                                                 cost_reference)]

            def soft(lam: float) -> LossSpec:
                return LossSpec("soft_conditional", {"costs": costs, "lam": float(lam), "mixing": mixing})

            lay = Layout()
            for seed in seeds:
                if reference:
                    ref = dict(backbone=backbone, width=width, dataset=dataset, train_size=train_size,
                               val_size=val_size, test_size=test_size, epochs=epochs, batch_size=batch_size, lr=lr,
                               weight_decay=weight_decay, bf16=bf16, channels_last=channels_last,
                               split_seed=split_seed)
                    lay.plain[seed] = reference_run("plain", seed, **ref)
                    lay.branchynet[seed] = reference_run("multi", seed, **ref)
                else:
                    cfg = replace(train, seed=seed)
                    lay.plain[seed] = RunSpec(_name(dataset, backbone, width, "plain", seed),
                                              ModelSpec(backbone, width, ()), data,
                                              LossSpec("weighted_ce", {"weights": "uniform"}), cfg)
                    branchy_head = "conv" if head_features == "conv" else "linear"
                    options = {k: v for k, v in head.items() if k != "features"}
                    lay.branchynet[seed] = RunSpec(_name(dataset, backbone, width, "branchynet", seed),
                                                   ModelSpec(backbone, width, exits, branchy_head, options), data,
                                                   LossSpec("weighted_ce", {"weights": branchynet_weights}), cfg)
                # "ref": the reference network's recipe (the paper profile's own recipe keeps the plain name)
                method = f"{'ref_' if reference else ''}lam{headline_lambda:g}"
                lay.proposed[seed] = RunSpec(_name(dataset, backbone, width, method, seed), gated,
                                             data, soft(headline_lambda),
                                             replace(train, seed=seed, keep_epoch_checkpoints=True))
            first = seeds[0]
            for lam in lambda_grid:
                if grid_start == "warm":
                    frozen = grid_train == "heads"   # linear heads on a frozen backbone: inputs computed once
                    cfg = replace(train, epochs=grid_epochs, seed=first, freeze_backbone=frozen,
                                  head_inputs="cached" if frozen and head_features == "linear" else "live",
                                  keep_epoch_checkpoints=True)
                    method = f"ft{grid_train}{lam:g}_from{headline_lambda:g}"
                    lay.grid[float(lam)] = RunSpec(_name(dataset, backbone, width, method, first), gated, data,
                                                   soft(lam), cfg, init_from=lay.proposed[first], init_heads=True)
                else:
                    lay.grid[float(lam)] = RunSpec(_name(dataset, backbone, width, f"lam{lam:g}", first), gated, data,
                                                   soft(lam), replace(train, seed=first, keep_epoch_checkpoints=True))
            out[(dataset, backbone)] = lay
    return out


def plan(**parameters) -> list[RunSpec]:
    """Every training of the notebook, each once (a grid run equal to a proposed run is the same spec)."""
    specs: dict[str, RunSpec] = {}
    for lay in layout(**parameters).values():
        for spec in lay.specs():
            if specs.setdefault(spec.name, spec) != spec:
                raise ValueError(f"two runs named {spec.name!r} differ")
    return list(specs.values())


def group_runs(runs: dict, layouts: dict[tuple[str, str], Layout], headline_lambda: float) -> dict[tuple[str, str], BackboneRuns]:
    """The trained runs (by run name) grouped per (data set, backbone), as every table compares them."""
    def pick(specs: dict) -> dict:
        return {k: runs[s.name] for k, s in specs.items()}

    return {(d, bb): BackboneRuns(d, bb, pick(lay.plain), pick(lay.branchynet), pick(lay.proposed), pick(lay.grid),
                                  headline_lambda)
            for (d, bb), lay in layouts.items()}
