"""Notebook 03's plan: the paper's recipe as the headline (plain, BranchyNet and the proposed network trained
alike, every lambda of the grid and every gate bias from scratch), the shared reference network's recipe as a
sensitivity whose runs keep their keys (notebook 05 reads them)."""
from dataclasses import replace

import pytest

from earlyexit.methods.differentiable_branching import gate_bias_value
from earlyexit.studies.differentiable_branching import layout, plan, recipes
from earlyexit.studies.reference import reference_run
from earlyexit.reproduce import default_parameters, notebooks, resolve_parameters


def _params(profile: str) -> dict:
    path = notebooks()["03"]
    return {**default_parameters(path), **resolve_parameters(path, profile)}


def test_cpu_headline_is_the_papers_recipe_for_every_row():
    p = _params("cpu")
    lay = recipes(**p)["paper"][("cifar10", "vgg13")]
    assert list(lay.proposed) == [0, 1, 2] and p["headline_lambda"] == 1e-3
    for seed in (0, 1, 2):
        cfgs = [lay.plain[seed].train, lay.branchynet[seed].train, replace(lay.proposed[seed].train,
                                                                           keep_epoch_outputs=False)]
        assert all(c == cfgs[0] for c in cfgs)                            # trained alike
        c = cfgs[0]
        assert (c.optimizer, c.lr, c.batch_size, c.schedule, c.crop_pad, c.flip) == ("adam", 1e-3, 128, "constant", 0, False)
        assert not lay.plain[seed].name.startswith("ref_") and lay.branchynet[seed].loss.options == {"weights": "uniform"}
        proposed = lay.proposed[seed]
        assert proposed.init_from is None and proposed.loss.options["lam"] == p["headline_lambda"]
        assert proposed.model.head_options["gate_bias"] == gate_bias_value(p["gate_bias"], 10)


def test_every_lambda_and_gate_bias_trains_from_scratch_with_its_own_key():
    p = _params("cpu")
    lay = recipes(**p)["paper"][("cifar10", "vgg13")]
    assert {0.0, 1e-3, 1e-2, 1e-1} <= set(lay.grid) and len(lay.grid) >= 6
    for lam, spec in lay.grid.items():
        assert spec.init_from is None and not spec.train.freeze_backbone and spec.train.epochs == p["epochs"]
        assert spec.loss.options["lam"] == lam and spec.train.seed == 0
    assert lay.grid[p["headline_lambda"]] == lay.proposed[0]              # the fixed lambda is the first seed's run
    assert set(lay.gate_options) == {"fair", "shut", "pytorch"} and lay.gate_options[p["gate_bias"]] == lay.proposed[0]
    assert "gate_bias" not in lay.gate_options["pytorch"].model.head_options
    gated = {s.key for s in [*lay.proposed.values(), *lay.grid.values(), *lay.gate_options.values()]}
    assert len(gated) == 3 + len(lay.grid) - 1 + len(lay.gate_options) - 1   # distinct models, distinct keys
    keys = [s.key for s in plan(**p)]
    assert len(keys) == len(set(keys))


def test_the_reference_recipe_keeps_the_shared_runs_and_05s_keys():
    p = _params("cpu")
    assert list(recipes(**p)["reference"][("cifar10", "vgg13")].proposed) == [0]   # 03 trains one seed of it
    p["reference_recipe"] = {**p["reference_recipe"], "seeds": [0, 1, 2]}       # 05 trains all three
    lay = recipes(**p)["reference"][("cifar10", "vgg13")]
    ref = dict(backbone="vgg13", width=0.5, dataset="cifar10", train_size=None, val_size=5000, test_size=None,
               epochs=12, batch_size=256, lr=0.2, weight_decay=5e-4, bf16=True, channels_last=True)
    assert not lay.grid and not lay.gate_options
    for seed in (0, 1, 2):
        assert lay.plain[seed].key == reference_run("plain", seed, **ref).key
        assert lay.branchynet[seed].key == reference_run("multi", seed, **ref).key
        assert lay.proposed[seed].name == f"db_cifar10_vgg13x0.5_ref_lam0.1_s{seed}"
        assert lay.proposed[seed].model.head_options == {"features": "linear", "pool": 1}   # PyTorch's default gates
    # the keys notebook 05 uses (db_cifar10_vgg13x0.5_ref_lam0.1_s{0,1,2}) before this plan changed
    assert [lay.proposed[s].key.rsplit("-", 1)[1] for s in (0, 1, 2)] == ["a359ffd1f8bd", "2b5dcdb3d636", "bba3b6f33a70"]


def test_bad_set_ups_are_refused_and_paper_keeps_its_own():
    with pytest.raises(ValueError, match="reference"):
        layout(**{**_params("cpu"), "reference": True})
    with pytest.raises(ValueError, match="gate_bias_options"):
        layout(**{**_params("cpu"), "gate_bias": "shut", "gate_bias_options": ["fair"]})
    paper = plan(**_params("paper"))
    assert not any(s.name.startswith("ref_") or "_ref_" in s.name for s in paper)
    alex = next(s for s in paper if "alexnet" in s.name and "lam" in s.name)
    assert alex.model.exit_after == (0, 1, 2, 3, 4) and alex.init_from is None   # a branch after every conv
    assert len({s.name for s in paper}) == len(paper)
