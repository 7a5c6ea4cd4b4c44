"""Comparing rules on equal terms (``fronts``, used by notebook 05): the oracle bound, fronts chosen on
validation, reading fronts at fixed costs; class exclusion's candidates."""
import dataclasses
import math

import pytest
import torch

from earlyexit import fronts
from earlyexit.methods.class_exclusion import ClassExclusion, confident_candidates, exclusion_candidates
from earlyexit.macs import MacTable
from earlyexit.outputs import CachedOutputs
from earlyexit.policies import Entropy, MaxProbability


def _table(fractions):
    cumulative = [round(1000 * f) for f in fractions]
    stages = [b - a for a, b in zip([0] + cumulative[:-1], cumulative)]
    return MacTable(stage_macs=stages, head_macs=[0] * len(stages), exit_stage=list(range(len(stages))),
                    backbone_macs=1000)


class FakeRun:
    def __init__(self, val, test, fractions):
        self.splits, self.macs = {"val": val, "test": test}, _table(fractions)

    def outputs(self, split):
        return self.splits[split]


def _outputs(n, k=3, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (n,), generator=g)
    # later exits are more often right: the true class gets a boost growing with depth
    logits = torch.randn(k, n, c, generator=g)
    for j in range(k):
        logits[j, torch.arange(n), labels] += 0.8 * (j + 1) * torch.rand(n, generator=g)
    return CachedOutputs(logits, labels)


def test_oracle_on_a_hand_made_example():
    # 4 rows, exits cost 0.2, 0.5, 1.0: row 0 right at exit 1, row 1 first right at exit 2,
    # row 2 right only at the final exit, row 3 never right
    right = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    first = fronts.first_right_cost(right, [0.2, 0.5, 1.0])
    assert first.tolist() == [0.2, 0.5, 1.0, math.inf]
    cost, acc = fronts.oracle_curve(first, 0.2)
    # serving nobody: everyone at exit 1 (cost 0.2, row 0 is not counted right: served rows only)
    assert acc[0].tolist() == [0.0, 0.25, 0.5, 0.75]
    assert torch.allclose(cost[0], torch.tensor([0.2, 0.2, 0.2 + 0.3 / 4, 0.2 + 1.1 / 4], dtype=torch.float64))
    # the oracle point: three rows right, the fourth leaves at exit 1
    assert cost[0, -1].item() == pytest.approx((0.2 + 0.5 + 1.0 + 0.2) / 4)
    assert fronts.oracle_cost(cost, acc, 0.5).item() == pytest.approx(0.275)
    assert math.isnan(fronts.oracle_cost(cost, acc, 0.9).item())


def test_weighted_oracle_counts_rows_by_multiplicity():
    right = torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)
    first = fronts.first_right_cost(right, [0.25, 1.0])
    cost, acc = fronts.oracle_curve(first, 0.25, torch.tensor([[2.0, 0.0], [0.0, 3.0]], dtype=torch.float64))
    assert acc[0, -1].item() == 1.0 and cost[0, -1].item() == 0.25       # only row 0, drawn twice
    assert acc[1, -2].item() == 0.0 and acc[1, -1].item() == 1.0 and cost[1, -1].item() == 1.0


@pytest.mark.parametrize("rule", [MaxProbability((0.0, 0.0)), Entropy((0.0, 0.0))])
def test_no_rule_beats_the_oracle(rule):
    run = FakeRun(_outputs(300, seed=1), _outputs(400, seed=2), [0.2, 0.5, 1.0])
    both = [fronts.threshold_front("rule", "net", run, rule, vectors=200, grid=11),
            fronts.policy_front("patience", "net", run, fronts.patience_candidates(3), "patience values")]
    for front in both:
        oc, oa = fronts.oracle_curve(fronts.first_right_cost(front.exit_correct, front.exit_costs), 0.2)
        cost, acc = front.curve()
        for c, a in zip(cost[0].tolist(), acc[0].tolist()):
            reach = fronts.oracle_cost(oc, oa, a).item()
            assert not math.isnan(reach) and reach <= c + 1e-12


def test_threshold_front_is_chosen_on_validation_only():
    val, test = _outputs(300, seed=3), _outputs(400, seed=4)
    poisoned = CachedOutputs(test.logits, (test.labels + 1) % 4)
    a = fronts.threshold_front("m", "n", FakeRun(val, test, [0.2, 0.5, 1.0]), MaxProbability((0.0, 0.0)), 100, 11)
    b = fronts.threshold_front("m", "n", FakeRun(val, poisoned, [0.2, 0.5, 1.0]), MaxProbability((0.0, 0.0)), 100, 11)
    assert [p.thresholds for p in a.policies] == [p.thresholds for p in b.policies]
    assert a.candidates == 100 + 11 + 1
    # validation front: cost increasing, accuracy increasing
    assert torch.all(a.val_cost[1:] > a.val_cost[:-1]) and torch.all(a.val_accuracy[1:] > a.val_accuracy[:-1])
    # the per-row test outcomes are those of the policies themselves
    from earlyexit.evaluate import evaluate_policy
    r = evaluate_policy(test, a.policies[len(a.policies) // 2], FakeRun(val, test, [0.2, 0.5, 1.0]).macs)
    assert a.test_correct[len(a.policies) // 2].float().mean().item() == pytest.approx(r.accuracy)


def test_exclusion_candidates_span_never_to_always():
    val = _outputs(200, seed=5)
    cands = exclusion_candidates(val, vectors=50, grid=5)
    assert len(cands) == 56 and all(isinstance(c, ClassExclusion) for c in cands)
    assert cands[-1].betas == (0.0, 0.0)                       # never
    assert all(0.0 <= b <= 1.0 for c in cands for b in c.betas)
    taus = confident_candidates(val, vectors=50, grid=5)
    assert taus[-1].taus == (1.0, 1.0) and len(taus) == 56


def test_reading_a_curve_at_a_cost_and_reaching_an_accuracy():
    cost = torch.tensor([[0.5, 0.2, 1.0]], dtype=torch.float64)
    acc = torch.tensor([[0.8, 0.6, 0.9]], dtype=torch.float64)
    at = fronts.curve_accuracy(cost, acc, [0.35, 0.1, 1.2])[0]
    assert at[0].item() == pytest.approx(0.7) and math.isnan(at[1].item()) and at[2].item() == pytest.approx(0.9)
    assert fronts.curve_cost_to_reach(cost, acc, torch.tensor([0.85])).item() == pytest.approx(0.75)
    assert fronts.curve_cost_to_reach(cost, acc, torch.tensor([0.5])).item() == pytest.approx(0.2)
    assert math.isnan(fronts.curve_cost_to_reach(cost, acc, torch.tensor([0.95])).item())


def test_fixed_cost_and_reach_rows_have_intervals_around_the_estimate():
    run = FakeRun(_outputs(300, seed=6), _outputs(500, seed=7), [0.2, 0.5, 1.0])
    front = fronts.threshold_front("max-softmax", "net", run, MaxProbability((0.0, 0.0)), 200, 11)
    rows = fronts.fixed_cost_rows(front, [0.5, 0.75], draws=200)
    for r in rows:
        assert r["low"] <= r["accuracy"] <= r["high"]
        assert r["oracle cost at this accuracy"] <= r["cost"]
        assert 0 < r["share of oracle saving"] <= 1
    reach = fronts.reach_rows(front, 0.01, draws=200)
    assert reach["target accuracy"] == pytest.approx(reach["final-exit accuracy"] - 0.01)
    assert reach["low"] <= reach["cost"] <= reach["high"] <= 1.0


def test_reach_targets_the_most_accurate_final_exit_among_the_networks():
    run = FakeRun(_outputs(300, seed=6), _outputs(500, seed=7), [0.2, 0.5, 1.0])
    front = fronts.threshold_front("max-softmax", "net", run, MaxProbability((0.0, 0.0)), 200, 11)
    own = fronts.reach_rows(front, 0.01, draws=100)
    weak = torch.zeros_like(front.final_correct)          # a network whose final exit is never right
    strong = torch.ones_like(front.final_correct)          # one whose final exit is always right
    assert fronts.reach_rows(front, 0.01, torch.stack([front.final_correct, weak]), draws=100)["cost"] == pytest.approx(own["cost"])
    beyond = fronts.reach_rows(front, 0.01, torch.stack([weak, strong]), draws=100)
    assert beyond["reference accuracy"] == 1.0 and math.isnan(beyond["cost"])
    pair = {"a": front, "b": dataclasses.replace(front, network="other", exit_correct=front.exit_correct[[0, 1, 0]])}
    assert fronts.final_exits(pair).shape == (2, front.final_correct.numel())
