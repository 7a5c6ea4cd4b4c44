"""The shared reference network: one spec per (form, seed), the split fixed across seeds."""
import pytest

from earlyexit.studies.reference import reference_run, reference_runs

OPTIONS = dict(backbone="vgg13", width=0.5, dataset="cifar10", train_size=None, val_size=5000, test_size=None,
               epochs=12, batch_size=256, lr=0.2, weight_decay=5e-4, bf16=True, channels_last=True)


def test_seeds_change_training_not_the_split():
    a, b = reference_runs("multi", [0, 1], **OPTIONS)
    assert a.data == b.data and a.train.seed == 0 and b.train.seed == 1 and a.key != b.key
    assert reference_run("multi", 1, **OPTIONS).key == b.key           # the same arguments share a training
    plain = reference_run("plain", 0, **OPTIONS)
    assert plain.model.exit_after == () and a.model.exit_after is None and plain.key != a.key


def test_bad_forms_and_seeds_are_refused():
    with pytest.raises(ValueError, match="form"):
        reference_run("gated", 0, **OPTIONS)
    with pytest.raises(ValueError, match="repeat"):
        reference_runs("plain", [0, 0], **OPTIONS)
    with pytest.raises(ValueError, match="at least one"):
        reference_runs("plain", [], **OPTIONS)


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_a_run_name_means_one_configuration_across_notebooks(profile):
    """Notebooks share a training by building the same RunSpec; one that drifts (other epochs, say)
    would silently train a second network under the same name."""
    from collections import defaultdict

    from earlyexit.prepare import profile_runs
    keys = defaultdict(set)
    for spec in profile_runs(profile):
        keys[spec.name].add(spec.key)
    assert {name: k for name, k in keys.items() if len(k) > 1} == {}


def test_cpu_notebooks_reuse_the_reference_trainings():
    """Train once, use everywhere: each notebook's cpu plan asks for the same reference runs."""
    from earlyexit.prepare import profile_runs
    uses = {nb: {s.key for s in profile_runs("cpu", only=nb) if s.name.startswith("ref_")}
            for nb in ("00", "01", "02", "03", "04")}
    multi = {k for k in uses["00"] if "_multi_" in k}
    plain = {k for k in uses["01"] if "_plain_" in k}
    assert len(multi) == 3 and len(plain) == 3
    assert all(multi <= uses[nb] for nb in ("01", "04")) and plain <= uses["02"]
    first = {k for k in multi | plain if "_s0-" in k}
    assert first <= uses["03"]          # 03's reference-recipe row trains one seed, the first


def test_the_benchmark_notebook_trains_only_the_gated_seeds_03_does_not():
    """05 compares every rule on the networks 00-03 train: its cpu plan is inside theirs but for seeds 1 and 2
    of the gated reference-recipe network (03 trains seed 0 of it for its sensitivity row)."""
    from earlyexit.prepare import profile_runs
    earlier = {s.key for s in profile_runs("cpu", only="00,01,02,03,04")}
    own = {s.key for s in profile_runs("cpu", only="05")}
    assert len(own) == 15
    assert sorted(k.split("-")[0] for k in own - earlier) == ["db_cifar10_vgg13x0.5_ref_lam0.1_s1",
                                                               "db_cifar10_vgg13x0.5_ref_lam0.1_s2"]


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_the_benchmark_notebook_fits_eenet_as_notebook_04_does(profile):
    """05 asks for 04's EENet budgets, recipe grid and scheduler seeds, so its fits come from 04's cache."""
    from pathlib import Path

    from earlyexit.reproduce import default_parameters, resolve_parameters
    nbs = Path(__file__).resolve().parents[1] / "notebooks"
    p04, p05 = ({**default_parameters(p), **resolve_parameters(p, profile)}
                for p in (nbs / "04_eenet.ipynb", nbs / "05_benchmark.ipynb"))
    assert p05["eenet_budgets"] == p04["num_budgets"]
    for key in ("recipe_optimizers", "recipe_lrs", "recipe_epochs", "recipe_budgets", "recipe_networks",
                "headline_exit_costs", "scheduler_seeds", "scheduler"):
        assert p05[key] == p04[key], key
