"""Notebook 03's plan: the cpu profile's plain and BranchyNet rows are the shared reference network, the
proposed network trains under the same recipe, and the lambda grid fine-tunes from the first seed."""
from dataclasses import replace

import pytest

from earlyexit.studies.differentiable_branching import layout, plan
from earlyexit.studies.reference import reference_run
from earlyexit.reproduce import default_parameters, notebooks, resolve_parameters


def _params(profile: str) -> dict:
    path = notebooks()["03"]
    return {**default_parameters(path), **resolve_parameters(path, profile)}


def test_cpu_rows_are_the_reference_and_share_its_recipe():
    p = _params("cpu")
    lay = layout(**p)[("cifar10", "vgg13")]
    ref = dict(backbone="vgg13", width=0.5, dataset="cifar10", train_size=None, val_size=5000, test_size=None,
               epochs=12, batch_size=256, lr=0.2, weight_decay=5e-4, bf16=True, channels_last=True)
    assert list(lay.proposed) == [0, 1, 2] and len(lay.grid) >= 7
    for seed in (0, 1, 2):
        assert lay.plain[seed].key == reference_run("plain", seed, **ref).key
        assert lay.branchynet[seed].key == reference_run("multi", seed, **ref).key
        proposed = lay.proposed[seed]
        assert replace(proposed.train, keep_epoch_checkpoints=False) == lay.branchynet[seed].train
        assert proposed.data == lay.branchynet[seed].data and proposed.model.head_options == {"features": "linear", "pool": 1}
        assert proposed.loss.options["lam"] == p["headline_lambda"]
    assert {0.0, 1e-3, 1e-2, 1e-1, 0.3, 1.0, 3.0} <= set(lay.grid)
    for lam, spec in lay.grid.items():
        assert spec.init_from == lay.proposed[0] and spec.init_heads and spec.train.freeze_backbone
        assert spec.train.epochs == p["grid_epochs"] and spec.loss.options["lam"] == lam


def test_reference_refuses_another_setup_and_paper_keeps_its_own():
    with pytest.raises(ValueError, match="reference"):
        layout(**{**_params("cpu"), "optimizer": "adam"})
    paper = plan(**_params("paper"))
    assert not any(s.name.startswith("ref_") for s in paper)
    alex = next(s for s in paper if "alexnet" in s.name and "lam" in s.name)
    assert alex.model.exit_after == (0, 1, 2, 3, 4) and alex.init_from is None   # a branch after every conv
    assert len({s.name for s in paper}) == len(paper)
