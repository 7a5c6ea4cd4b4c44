"""The comparison machinery of notebook 02: one threshold search per method, operating points scored
image by image for the paired bootstrap, the claims built from them, and conclusions generated from
the metrics."""
from types import SimpleNamespace

import pytest
import torch

from earlyexit.e2cm import (CloudSearch, MethodCurve, paired_accuracy_difference, points_table, threshold_cloud,
                            unsupervised_curves, unsupervised_mean, unsupervised_summary)
from earlyexit.evaluate import ThresholdSweep
from earlyexit.macs import MacTable
from earlyexit.outputs import CachedOutputs
from earlyexit.plans import e2cm as study
from earlyexit.policies import MaxProbability

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


def test_claims_compare_e2cm_with_each_rival_and_read_the_poster():
    curves = {"bb": {"E2CM": _curve("E2CM", 3.0), "SDN (frozen backbone)": _curve("SDN (frozen backbone)", 0.5)}}
    (c,) = study.equal_time_claims(curves, [0.7], 1.0, "seed 0")
    assert c.comparison == "E2CM - SDN (frozen backbone) test accuracy at cost <= 0.7"
    assert c.verdict == "supported" and c.interval[0] > 0 and "one seed" in c.evidence
    (missing,) = study.equal_time_claims(curves, [0.1], 1.0, "seed 0")
    assert missing.ours is None and missing.verdict == "inconclusive at this budget" and "no operating point" in missing.evidence
    combo = {"bb": {"SDN": _curve("SDN", 3.0), "E2CM+SDN": _curve("E2CM+SDN", 0.5)}}
    (c,) = study.combination_claims(combo, [0.15], "seed 0")
    assert c.paper == pytest.approx(2.4)          # poster: 82.4 vs 80 at cost 0.15
    assert c.ours is None                         # and nothing of ours is that cheap


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
    mnist, fashion = study.unsupervised_claims(results)
    assert mnist.ours == pytest.approx(-0.2) and mnist.verdict == "supported" and "3 autoencoder seeds" in mnist.evidence
    assert fashion.ours is None and fashion.verdict == "inconclusive at this budget"


def test_conclusions_quote_the_metrics_and_the_verdicts():
    curves = {"bb": {"E2CM": _curve("E2CM", 3.0), "SDN (frozen backbone)": _curve("SDN (frozen backbone)", 0.5)}}
    claims = study.equal_time_claims(curves, [0.7, 1.1], 1.0, "seed 0")
    ncm = [{"backbone": "bb", "exit": k + 1, "cost": c, "train acc": a + 0.01, "test acc": a, "overhead % of cost": 0.01,
            "nearest != argmax p": 0.0} for k, (c, a) in enumerate([(0.3, 0.2), (0.6, 0.5), (1.0, 0.7)])]
    metrics = {"options": study.options("gap", True, "nearest", "quantile", "val", 1.0),
               "backbones": {"bb": {"test_accuracy": 0.7}}, "ncm_accuracy": ncm,
               "e2cm_points": points_table({"bb": {"E2CM": curves["bb"]["E2CM"]}}, [0.7], ("val_accuracy", "test_accuracy")
                                           ).to_dict("records"),
               "equal_time": points_table(curves, [0.7, 1.1]).to_dict("records"),
               "equal_time_steps": [{"backbone": "bb", "method": "SDN (frozen backbone)", "steps": 10,
                                     "epochs of heads": 2.5, "final exit test acc": 0.7}],
               "combination": [], "flatten_ablation": [], "unsupervised": [], "unsupervised_full": []}
    text = study.conclusions(metrics, claims)
    assert "bb from 20.0 (first exit) to 50.0 (last early exit) against 70.0" in text
    e2cm = "/".join(f"{100 * curves['bb']['E2CM'].point(b)['test_accuracy']:.1f}" for b in (0.7, 1.1))
    assert f"E2CM {e2cm}" in text and "E2CM - SDN (frozen backbone): supported (2 of 2 budgets)" in text
    assert "Epochs of head training within the budget: SDN (frozen backbone) 2.5" in text
