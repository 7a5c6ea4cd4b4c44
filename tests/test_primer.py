"""Notebook 00's plan and selections: the reference network per seed, the max-softmax threshold chosen
on validation only, the seed-spread table."""
import math

import pytest
import torch

from earlyexit.macs import MacTable
from earlyexit.outputs import CachedOutputs
from earlyexit.studies.primer import maxprob_choice, plan, seed_spread, spread_sentence
from earlyexit.studies.reference import reference_run
from earlyexit.stats import seed_interval

CPU = dict(backbone="vgg13", width=0.5, dataset="cifar10", train_size=None, val_size=5000, test_size=None,
           epochs=12, batch_size=256, lr=0.2, weight_decay=5e-4, bf16=True, channels_last=True)
MACS = MacTable(stage_macs=[10, 10, 10], head_macs=[1, 1, 5], exit_stage=[0, 1, 2], backbone_macs=35)


def test_plan_is_the_multi_reference_network_per_seed():
    specs = plan(seeds=[0, 1, 2], threads=2, tolerance=0.01, **CPU)
    assert [s.key for s in specs] == [reference_run("multi", s, **CPU).key for s in (0, 1, 2)]


def outputs(n: int, seed: int) -> CachedOutputs:
    """Three exits whose confidence grows with depth, labels right most of the time."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    logits = torch.randn(3, n, 10, generator=g)
    for k, strength in enumerate((1.5, 3.0, 5.0)):
        right = torch.rand(n, generator=g) < 0.5 + 0.15 * k
        logits[k, right, labels[right]] += strength * torch.rand(int(right.sum()), generator=g)
    return CachedOutputs(logits, labels)


def test_threshold_is_chosen_on_validation_only():
    val, test = outputs(2000, 0), outputs(2000, 1)
    _, choice = maxprob_choice(val, test, MACS, tolerance=0.01)
    poisoned = CachedOutputs(test.logits, test.labels[torch.randperm(len(test), generator=torch.Generator().manual_seed(2))])
    _, again = maxprob_choice(val, poisoned, MACS, tolerance=0.01)
    assert again["thresholds"] == choice["thresholds"] and again["val_accuracy"] == choice["val_accuracy"]
    assert again["test_accuracy"] != choice["test_accuracy"]       # the poison did reach the test numbers


def test_seed_spread_rows():
    rows = seed_spread({0: [0.5, 0.80, 0.88], 1: [0.52, 0.81, 0.89], 2: [0.48, 0.79, 0.87]})
    assert [r["exit"] for r in rows] == ["exit 1", "exit 2", "exit 3 (final)"]
    mean, lo, hi = seed_interval([0.88, 0.89, 0.87])
    final = rows[-1]
    assert final["seed 1"] == 0.89 and math.isclose(final["mean"], mean) and (final["low"], final["high"]) == (lo, hi)
    assert math.isclose(final["sd"], 0.01) and math.isclose(rows[0]["sd"], 0.02)
    text = spread_sentence(rows)
    assert "Over 3 training seeds" in text and "88.00%" in text and "largest at exit 1" in text
    with pytest.raises(ValueError, match="2 seeds"):
        seed_spread({0: [0.5]})
