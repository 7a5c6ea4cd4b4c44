"""The shared reference network: one backbone, trained once per seed in each form that notebooks
compare, and found in the run cache by every later notebook that asks for the same form and seed.

Forms (one RunSpec each per training seed):

- ``plain``: the backbone and its final classifier, no exits. The reference of class exclusion (01),
  the frozen backbone that E2CM and its SDN baseline read (02), the plain row of Table 1 (03).
- ``multi``: a linear exit head after every stage, all exits trained jointly with weighted
  cross-entropy (BranchyNet's loss), the final classifier carrying half of it (``half_final``), so
  that nine early exits do not starve the final classifier. The primer's network (00), CR's network (01), BranchyNet (03),
  the network EENet's scheduler and every confidence rule run on (04).

The data split is fixed by ``split_seed``; only the training seed (initialisation, batch order,
augmentation) changes between seeds, so seed-to-seed spread measures training noise alone. Two
notebooks share a training exactly when they pass the same arguments here (the run key hashes them);
``tests/test_reference.py`` checks that the cpu profiles of the notebooks do.
"""
from __future__ import annotations

from ..data import DataSpec
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig

__all__ = ["FORMS", "reference_run", "reference_runs"]

FORMS = ("plain", "multi")


def reference_run(form: str, seed: int, *, backbone: str, width: float, dataset: str, train_size: int | None,
                  val_size: int, test_size: int | None, epochs: int, batch_size: int, lr: float,
                  weight_decay: float, bf16: bool, channels_last: bool, split_seed: int = 0) -> RunSpec:
    """The reference network in ``form`` trained with ``seed``: SGD with Nesterov momentum, one-cycle
    learning rate, 2-pixel crops and flips, no label smoothing (the class-exclusion loss has none, and
    every form of a comparison trains under one recipe)."""
    if form not in FORMS:
        raise ValueError(f"unknown reference form {form!r}; known: {', '.join(FORMS)}")
    exits = () if form == "plain" else None
    weights = "uniform" if form == "plain" else "half_final"
    return RunSpec(f"ref_{dataset}_{backbone}x{width:g}_{form}_lr{lr:g}_s{seed}",
                   ModelSpec(backbone, width, exits, "linear"),
                   DataSpec(dataset, val_size=val_size, train_size=train_size, test_size=test_size, seed=split_seed),
                   LossSpec("weighted_ce", {"weights": weights}),
                   TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, bf16=bf16,
                               channels_last=channels_last, seed=seed))


def reference_runs(form: str, seeds: list[int], **options) -> list[RunSpec]:
    """``reference_run(form, seed, **options)`` for every seed, in order."""
    if not seeds:
        raise ValueError("give at least one training seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"training seeds repeat: {seeds}")
    return [reference_run(form, s, **options) for s in seeds]
