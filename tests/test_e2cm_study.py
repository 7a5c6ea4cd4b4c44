"""The comparison machinery of notebook 02: one threshold search per method, operating points scored
image by image for the paired bootstrap, the notebook's own search path on poisoned test outputs, the
claims built from them (with their sources and roles), and conclusions generated from the metrics."""
from types import SimpleNamespace

import pytest
import torch

from earlyexit.data import DataSpec
from earlyexit.methods.e2cm import threshold_cloud
from earlyexit.evaluate import ThresholdSweep
from earlyexit.macs import MacTable
from earlyexit.outputs import CachedOutputs
from earlyexit.studies import e2cm as study
from earlyexit.studies.e2cm import CloudSearch, MethodCurve, paired_accuracy_difference, points_table
from earlyexit.studies.e2cm_tables import (conclusions, unsupervised_claims, unsupervised_curves, unsupervised_mean,
                                           unsupervised_summary)
from earlyexit.policies import MaxProbability
from earlyexit.stats import seed_interval
from earlyexit.train import LossSpec, ModelSpec, RunSpec, TrainConfig, TrainedRun, train_cached

MACS = MacTable(stage_macs=[10, 10, 10], head_macs=[1, 1, 5], exit_stage=[0, 1, 2], backbone_macs=35)


def _outputs(n: int, seed: int, sharp: float) -> CachedOutputs:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    logits = torch.randn(3, n, 4, generator=g) + sharp * torch.nn.functional.one_hot(labels, 4)
    return CachedOutputs(logits, labels)


def _curve(name: str, sharp: float, test_labels_seed: int = 1) -> MethodCurve:
    val, test = _outputs(300, 0, sharp), _outputs(400, test_labels_seed, sharp)
    cloud = threshold_cloud(val, test, MaxProbability((0.0, 0.0)), MACS, 200, "quantile", 0)
    return MethodCurve(name, SimpleNamespace(macs=MACS), cloud, test)


def test_correct_images_give_the_sweeps_test_accuracy():
    c = _curve("E2CM", 1.5)
    for budget in (0.4, 0.7, 1.1):
        point = c.point(budget)
        assert point["val_cost"] <= budget
        assert c.correct(budget).mean().item() == pytest.approx(point["test_accuracy"], abs=1e-9)
    assert c.point(0.1) is None and c.correct(0.1) is None      # nothing is that cheap
    table = points_table({"bb": {"E2CM": c}}, [0.1, 0.7])
    assert table["test_accuracy"].isna().tolist() == [True, False]


def test_paired_difference_is_the_accuracy_difference_with_an_interval():
    good, bad = _curve("E2CM", 3.0), _curve("SDN", 0.5)
    mean, lo, hi = paired_accuracy_difference(good, bad, 0.7)
    assert mean == pytest.approx(100 * (good.point(0.7)["test_accuracy"] - bad.point(0.7)["test_accuracy"]))
    assert lo < mean < hi and lo > 0
    assert paired_accuracy_difference(good, bad, 0.1) is None
    with pytest.raises(ValueError, match="same test images"):
        paired_accuracy_difference(good, _curve("other", 0.5, test_labels_seed=2), 0.7)


def test_cloud_search_uses_max_probability_for_trained_heads():
    outs = {"val": _outputs(100, 0, 1.0), "test": _outputs(100, 1, 1.0)}
    run = SimpleNamespace(net=SimpleNamespace(num_exits=3), macs=MACS, outputs=outs.__getitem__)
    c = CloudSearch("val", 50, "quantile", 0).curve("SDN", run)
    assert isinstance(c.cloud.rule, MaxProbability) and len(c.cloud) == 51 and c.test is outs["test"]
    assert c.reads == {"thresholds drawn on": "val", "chosen on": "val", "reported on": "test"}


def _fake_run(method: str, capped: bool) -> SimpleNamespace:
    """A trained run's fields the claims read: 'no limit' heads stop at a plateau (epoch 4 of 10) or,
    ``capped``, at the 10-epoch cap."""
    train = SimpleNamespace(time_budget_s=60.0 if "equal time" in method else None, patience=2, epochs=10,
                            freeze_backbone="BranchyNet" not in method,
                            head_inputs="cached" if "equal time" in method else "live", batch_size=128)
    return SimpleNamespace(macs=MACS, spec=SimpleNamespace(train=train), epochs_trained=10 if capped else 4,
                           history=[{"steps": 40}], data=SimpleNamespace(train=range(1280)))


def _seed_curves(sharpness: dict[str, float], seeds=(0, 1, 2), capped: bool = False) -> dict:
    """{(backbone, seed): {split: {method: curve}}} on synthetic outputs; ``capped``: the 'no limit'
    heads hit their epoch cap."""
    out = {}
    for s in seeds:
        by_split = {}
        for split in ("val", "train"):
            methods = {}
            for k, (name, sharp) in enumerate(sharpness.items()):
                search, test = _outputs(300, 10 * s + k + (0 if split == "val" else 5), sharp), _outputs(400, 100 + s, sharp)
                cloud = threshold_cloud(search, test, MaxProbability((0.0, 0.0)), MACS, 200, "quantile", 0)
                methods[name] = MethodCurve(name, _fake_run(name, capped), cloud, test)
            by_split[split] = methods
        out[("bb", s)] = by_split
    return out


SHARP = {study.E2CM: 3.0, study.E2CM_POOLED: 2.5, study.SDN_ONE: 0.5, study.BRANCHY_ONE: 0.5, study.SDN_TIMED: 0.5,
         "SDN (no limit)": 2.0, "E2CM+SDN (no limit)": 2.0}


def test_claims_pair_seeds_and_take_a_t_interval_over_them():
    main = study.flat(_seed_curves(SHARP), "val")
    diffs = study.seed_differences(main, study.CLAIM_PAIRS, [0.7])
    assert len(diffs) == 3 * len(study.CLAIM_PAIRS) and set(diffs["seed"]) == {0, 1, 2}
    claims = study.e2cm_claims(main, [0.7, 0.1], "profile test", timed_epochs=21.2)
    first = next(c for c in claims if c.comparison.startswith("E2CM - SDN (1 epoch) test accuracy at cost <= 0.7"))
    values = diffs[(diffs["a"] == study.E2CM) & (diffs["b"] == study.SDN_ONE)]["difference"].tolist()
    mean, lo, hi = seed_interval(values)
    assert first.ours == pytest.approx(mean) and first.interval == pytest.approx((lo, hi))
    assert "3 backbone seeds" in first.evidence and first.verdict == "supported" and first.role == "paper"
    assert "final exits E2CM" in first.comparison and "SDN (1 epoch)" in first.comparison
    roles = {c.comparison.split(" test accuracy")[0]: c.role for c in claims}
    assert roles == {"E2CM - SDN (1 epoch)": "paper", "E2CM - BranchyNet (1 epoch)": "paper",
                     "E2CM (pooled) - SDN (1 epoch)": "sensitivity", "E2CM - SDN (equal time)": "sensitivity",
                     "E2CM+SDN (no limit) - SDN (no limit)": "paper"}
    assert all(c.statement_source.startswith("Abstract: ") and c.threshold_source for c in claims)
    timed = next(c for c in claims if c.comparison.startswith("E2CM - SDN (equal time)"))
    assert "about 21 head epochs" in timed.setting and timed.label == "holds (sensitivity row)"
    cheap = [c for c in claims if "cost <= 0.1 " in c.comparison]
    assert cheap and all(c.ours is None and c.verdict == "inconclusive at this budget" for c in cheap)
    combo = [c for c in claims if c.comparison.startswith("E2CM+SDN (no limit) - SDN (no limit)")]
    assert len(combo) == 2 and combo[0].paper_source.startswith("IJCNN 2022 poster")
    assert "heads trained to a validation plateau," in combo[0].setting
    capped = study.e2cm_claims(study.flat(_seed_curves(SHARP, capped=True), "val"), [0.7], "profile test")
    assert "6 of 6 runs stopped at the cap (10 epoch(s))" in capped[-1].setting    # said, not called a plateau
    (one,) = [c for c in study.e2cm_claims(study.flat(_seed_curves(SHARP, seeds=(0,)), "val"), [0.7], "x")
              if c.comparison.startswith("E2CM - BranchyNet")]
    assert "one network" in one.evidence and one.interval is not None    # paired bootstrap over test images


def _poisoned(outputs: CachedOutputs) -> CachedOutputs:
    """Test outputs with shuffled labels and logits replaced by noise (so confidences change too)."""
    g = torch.Generator().manual_seed(7)
    return CachedOutputs(5 * torch.randn(outputs.logits.shape, generator=g),
                         outputs.labels[torch.randperm(len(outputs.labels), generator=g)], outputs.gates)


def test_the_notebooks_search_path_reads_nothing_of_the_test_split_to_choose(fresh_artifacts, monkeypatch):
    """``method_curves`` (E2CM fits, every rival trained, both searches) and ``operating_points``, as the
    notebook calls them, once on the real test outputs and once with the test split's labels shuffled and
    its logits replaced by noise: the chosen thresholds and their search-split numbers must not move, and
    every search reads test only to report, as it records."""
    parent_spec = RunSpec("e2cm_leak", ModelSpec("resnet18_cifar", 0.0625, (), "linear"),
                          DataSpec("synthetic10", val_size=96, train_size=256, test_size=96),
                          LossSpec("weighted_ce", {"weights": "final"}), TrainConfig(epochs=1, batch_size=64))
    parent = train_cached(parent_spec, progress=False)
    fits = study.fit_e2cm(parent, augment=False)
    searches = [CloudSearch(split, 100, "quantile") for split in ("val", "train")]
    budgets = [0.3, 0.5, 0.8, 1.05]

    def run(poison: bool):
        real, asked = TrainedRun.outputs, []

        def outputs(self, split):
            asked.append(split)
            out = real(self, split)
            return _poisoned(out) if poison and split == "test" else out

        monkeypatch.setattr(TrainedRun, "outputs", outputs)
        curves = {("bb", 0): study.method_curves(parent, fits, searches, 1e-3, 1, 2)}
        monkeypatch.setattr(TrainedRun, "outputs", real)
        return curves, study.operating_points(curves, budgets), set(asked)

    clean_curves, clean, asked = run(False)
    _, poisoned, _ = run(True)
    assert set(clean["method"]) == set(study.E2CMS + study.EQUAL_TIME + study.NO_LIMIT)
    assert clean["thresholds"].notna().sum() > len(clean) / 2
    assert clean["thresholds"].tolist() == poisoned["thresholds"].tolist()
    assert clean["search accuracy"].equals(poisoned["search accuracy"])
    assert not clean["test accuracy"].equals(poisoned["test accuracy"])   # the poison did reach the test numbers
    assert (clean["chosen on"] == clean["search split"]).all()
    assert (clean["thresholds drawn on"] == clean["search split"]).all()
    assert set(clean["reported on"]) == {"test"} and asked == {"val", "train", "test"}
    training = study.head_training_table(study.flat(clean_curves, "val")).set_index("method")
    read, epochs = training["backbone read"], training["epochs of heads"]
    assert read[study.SDN_ONE] == "live" and read[study.SDN_TIMED] == "cached" and read[study.BRANCHY_ONE] == "joint training"
    assert epochs[study.SDN_ONE] == 1 and epochs[study.BRANCHY_ONE] == 1
    assert training.loc[study.BRANCHY_ONE, "stopped by"] == "1 epoch(s)"


def _sweep(test_accuracy: list[float], cost: list[float]) -> ThresholdSweep:
    t = torch.tensor
    return ThresholdSweep(MaxProbability((0.0,)), t([[0.5]] * len(cost)), t(test_accuracy, dtype=torch.float64),
                          t(cost, dtype=torch.float64), t(test_accuracy, dtype=torch.float64), t(cost, dtype=torch.float64))


def test_unsupervised_curves_claims_and_means_over_seeds():
    results = {("mnist", s): {"cloud": _sweep([0.60 - d, 0.60], [0.3, 1.0]), "full_accuracy": 0.60}
               for s, d in enumerate((0.002, 0.003, 0.001))}
    results[("fashion_mnist", 0)] = {"cloud": _sweep([0.5], [0.9]), "full_accuracy": 0.5}
    curves = unsupervised_curves(results, grid=(0.2, 0.4, 1.0))
    assert curves.loc[(curves["dataset"] == "mnist") & (curves["budget"] == 0.2), "test cost"].isna().all()
    mean = unsupervised_mean(curves, "mnist")
    assert list(mean.index) == [0.4, 1.0] and mean.loc[0.4, "test clustering acc"] == pytest.approx(0.598)
    assert mean.loc[0.4, "low"] < 0.598 < mean.loc[0.4, "high"]          # t interval over the 3 seeds
    assert mean.loc[1.0, "low"] == mean.loc[1.0, "high"] == pytest.approx(0.60)
    assert list(unsupervised_summary(curves, (0.4, 0.5)).index) == [0.4]
    mnist, fashion = unsupervised_claims(results)
    assert mnist.ours == pytest.approx(-0.2) and mnist.verdict == "supported" and "3 autoencoder seeds" in mnist.evidence
    assert fashion.ours is None and fashion.verdict == "inconclusive at this budget"
    assert mnist.role == "sensitivity" and mnist.label == "holds (sensitivity row)"
    assert mnist.statement_source.startswith("Abstract: ") and mnist.threshold_source.startswith("our reading: ")


def test_conclusions_quote_the_metrics_and_the_verdicts():
    curves = _seed_curves(SHARP, seeds=(0, 1))
    main = study.flat(curves, "val")
    claims = study.e2cm_claims(main, [0.7, 1.1], "seed 0")
    ncm = [{"backbone": "bb", "seed": s, "method": m, "exit": k + 1, "cost": c, "train acc": a + 0.01,
            "test acc": a + s / 100 + (0 if m == study.E2CM else 0.1), "overhead % of cost": 0.01, "nearest != argmax p": 0.0}
           for m in study.E2CMS for s in (0, 1) for k, (c, a) in enumerate([(0.3, 0.2), (0.6, 0.5), (1.0, 0.7)])]
    training = [{"backbone": "bb", "seed": 0, "method": "SDN (no limit)", "steps": 10, "epochs of heads": 2.5,
                 "backbone read": "cached", "stopped by": "validation plateau", "final exit test acc": 0.7}]
    metrics = {"options": study.options(True, "nearest", "quantile", ["val", "train"], [], [0, 1]),
               "ncm_accuracy": ncm, "operating_points": study.operating_points(curves, [0.4, 0.7, 1.1]).to_dict("records"),
               "head_training": training, "unsupervised": [], "unsupervised_full": [],
               "per_seed_differences": study.seed_differences(main, study.CLAIM_PAIRS, [0.7, 1.1]).to_dict("records")}
    text = conclusions(metrics, claims)
    assert "E2CM (bb) from 20.5 ± 0.7 (first exit) to 50.5 ± 0.7 (last early exit) against 70.5 ± 0.7" in text
    assert "E2CM (pooled) (bb) from 30.5 ± 0.7" in text
    e2cm = [100 * main[("bb", s)][study.E2CM].point(0.7)["test_accuracy"] for s in (0, 1)]
    assert f"E2CM {sum(e2cm) / 2:.1f}" in text and "E2CM - SDN (1 epoch): supported (2 of 2 budgets)" in text
    assert "E2CM - SDN (equal time): holds (sensitivity row) (2 of 2 budgets)" in text
    assert "SDN (no limit) 2.5, cached (70.0)" in text and "Thresholds searched on train" in text
    assert "at cost <= 0.7/1.1." in text                       # only the budgets the claims judge
