"""The comparison machinery of notebook 02: one threshold search per method, operating points scored
image by image for the paired bootstrap, the claims built from them, and conclusions generated from
the metrics."""
from types import SimpleNamespace

import pytest
import torch

from earlyexit.methods.e2cm import threshold_cloud
from earlyexit.evaluate import ThresholdSweep
from earlyexit.macs import MacTable
from earlyexit.outputs import CachedOutputs
from earlyexit.studies import e2cm as study
from earlyexit.studies.e2cm import CloudSearch, MethodCurve, paired_accuracy_difference, points_table
from earlyexit.studies.e2cm_tables import (unsupervised_claims, unsupervised_curves, unsupervised_mean,
                                           unsupervised_summary)
from earlyexit.policies import MaxProbability
from earlyexit.stats import seed_interval

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


def _fake_run(method: str, capped: bool) -> SimpleNamespace:
    """A trained run's fields the claims read: 'no limit' heads stop at a plateau (epoch 4 of 10) or,
    ``capped``, at the 10-epoch cap."""
    train = SimpleNamespace(time_budget_s=60.0 if "equal time" in method else None, patience=2, epochs=10)
    return SimpleNamespace(macs=MACS, spec=SimpleNamespace(train=train), epochs_trained=10 if capped else 4)


def _seed_curves(sharpness: dict[str, float], seeds=(0, 1, 2), poison: bool = False, capped: bool = False) -> dict:
    """{(backbone, seed): {split: {method: curve}}} on synthetic outputs; ``poison`` shuffles test labels;
    ``capped``: the 'no limit' heads hit their epoch cap."""
    out = {}
    for s in seeds:
        by_split = {}
        for split in ("val", "train"):
            methods = {}
            for k, (name, sharp) in enumerate(sharpness.items()):
                search, test = _outputs(300, 10 * s + k + (0 if split == "val" else 5), sharp), _outputs(400, 100 + s, sharp)
                if poison:
                    g = torch.Generator().manual_seed(7)
                    test = CachedOutputs(test.logits, test.labels[torch.randperm(len(test.labels), generator=g)])
                cloud = threshold_cloud(search, test, MaxProbability((0.0, 0.0)), MACS, 200, "quantile", 0)
                methods[name] = MethodCurve(name, _fake_run(name, capped), cloud, test)
            by_split[split] = methods
        out[("bb", s)] = by_split
    return out


SHARP = {study.E2CM: 3.0, "SDN (equal time)": 0.5, "BranchyNet (equal time)": 0.5, "SDN (1 head epoch)": 0.5,
         "SDN (no limit)": 2.0, "E2CM+SDN (no limit)": 2.0}


def test_claims_pair_seeds_and_take_a_t_interval_over_them():
    main = study.flat(_seed_curves(SHARP), "val")
    diffs = study.seed_differences(main, study.CLAIM_PAIRS, [0.7])
    assert len(diffs) == 3 * len(study.CLAIM_PAIRS) and set(diffs["seed"]) == {0, 1, 2}
    claims = study.e2cm_claims(main, [0.7, 0.1], "profile test")
    first = next(c for c in claims if c.comparison.startswith("E2CM - SDN (equal time) test accuracy at cost <= 0.7"))
    values = diffs[(diffs["b"] == "SDN (equal time)")]["difference"].tolist()
    mean, lo, hi = seed_interval(values)
    assert first.ours == pytest.approx(mean) and first.interval == pytest.approx((lo, hi))
    assert "3 backbone seeds" in first.evidence and first.verdict == "supported"
    assert "final exits E2CM" in first.comparison and "SDN (equal time)" in first.comparison
    cheap = [c for c in claims if "cost <= 0.1 " in c.comparison]
    assert cheap and all(c.ours is None and c.verdict == "inconclusive at this budget" for c in cheap)
    combo = [c for c in claims if c.comparison.startswith("E2CM+SDN (no limit) - SDN (no limit)")]
    assert len(combo) == 2 and combo[0].paper_source.startswith("IJCNN 2022 poster")
    assert "heads trained to a validation plateau," in combo[0].setting
    capped = study.e2cm_claims(study.flat(_seed_curves(SHARP, capped=True), "val"), [0.7], "profile test")
    assert "6 of 6 runs stopped at the cap (10 epoch(s))" in capped[-1].setting    # said, not called a plateau
    (one,) = [c for c in study.e2cm_claims(study.flat(_seed_curves(SHARP, seeds=(0,)), "val"), [0.7], "x")
              if c.comparison.startswith("E2CM - BranchyNet")]
    assert "one seed" in one.evidence and one.interval is not None       # paired bootstrap over test images


def test_operating_points_do_not_read_test_labels():
    budgets = [0.4, 0.7, 1.1]
    clean = study.operating_points(_seed_curves(SHARP), budgets)
    poisoned = study.operating_points(_seed_curves(SHARP, poison=True), budgets)
    assert clean["thresholds"].notna().any() and set(clean["search split"]) == {"val", "train"}
    assert clean["thresholds"].tolist() == poisoned["thresholds"].tolist()
    assert clean["search accuracy"].equals(poisoned["search accuracy"])
    assert not clean["test accuracy"].equals(poisoned["test accuracy"])   # the poison did reach the test numbers


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
    assert list(unsupervised_summary(curves, (0.4, 0.5)).index) == [0.4]
    mnist, fashion = unsupervised_claims(results)
    assert mnist.ours == pytest.approx(-0.2) and mnist.verdict == "supported" and "3 autoencoder seeds" in mnist.evidence
    assert fashion.ours is None and fashion.verdict == "inconclusive at this budget"


def test_conclusions_quote_the_metrics_and_the_verdicts():
    curves = _seed_curves(SHARP, seeds=(0, 1))
    main = study.flat(curves, "val")
    claims = study.e2cm_claims(main, [0.7, 1.1], "seed 0")
    ncm = [{"backbone": "bb", "seed": s, "exit": k + 1, "cost": c, "train acc": a + 0.01, "test acc": a + s / 100,
            "overhead % of cost": 0.01, "nearest != argmax p": 0.0}
           for s in (0, 1) for k, (c, a) in enumerate([(0.3, 0.2), (0.6, 0.5), (1.0, 0.7)])]
    training = [{"backbone": "bb", "seed": 0, "method": "SDN (no limit)", "steps": 10, "epochs of heads": 2.5,
                 "stopped by": "validation plateau", "final exit test acc": 0.7}]
    metrics = {"options": study.options("gap", True, "nearest", "quantile", ["val", "train"], [], [0, 1]),
               "ncm_accuracy": ncm, "operating_points": study.operating_points(curves, [0.4, 0.7, 1.1]).to_dict("records"),
               "head_training": training, "unsupervised": [], "unsupervised_full": [],
               "per_seed_differences": study.seed_differences(main, study.CLAIM_PAIRS, [0.7, 1.1]).to_dict("records")}
    text = study.conclusions(metrics, claims)
    assert "bb from 20.5 ± 0.7 (first exit) to 50.5 ± 0.7 (last early exit) against 70.5 ± 0.7" in text
    e2cm = [100 * main[("bb", s)][study.E2CM].point(0.7)["test_accuracy"] for s in (0, 1)]
    assert f"E2CM {sum(e2cm) / 2:.1f}" in text and "E2CM - SDN (equal time): supported (2 of 2 budgets)" in text
    assert "SDN (no limit) 2.5 (70.0)" in text and "Thresholds searched on train" in text
    assert "at cost <= 0.7/1.1." in text                       # only the budgets the claims judge
