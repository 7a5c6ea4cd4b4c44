"""Exit policies, the offline evaluator, and its agreement with the real early-exit forward."""
import math

import pytest
import torch

from earlyexit.backbones import build_backbone
from earlyexit.data import tensor_batches
from earlyexit.evaluate import cheapest_within, evaluate_policy, pareto_front, threshold_sweep
from earlyexit.macs import mac_table
from earlyexit.multiexit import MultiExitNet
from earlyexit.outputs import collect_outputs, CachedOutputs
from earlyexit.policies import Entropy, GateThreshold, MaxProbability, NeverExit, Patience, normalised_entropy


def _random_net(head="linear", seed=0, **head_options):
    torch.manual_seed(seed)
    net = MultiExitNet(build_backbone("resnet18_cifar", width=0.125), exit_after=[0, 2, 4, 6], head=head,
                       **head_options).double().eval()
    for m in net.modules():  # non-trivial running statistics so eval-mode batch-norm matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return net


def _policies(outputs: CachedOutputs, k: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(outputs.logits, 2).max(2).values
    ent = torch.stack([normalised_entropy(z) for z in outputs.logits])
    # random thresholds drawn inside the observed range so that every exit is used
    mp = [float(torch.quantile(probs[j], torch.rand(1, generator=g).item())) for j in range(k - 1)]
    en = [float(torch.quantile(ent[j], torch.rand(1, generator=g).item())) for j in range(k - 1)]
    return [MaxProbability(mp), Entropy(en), Patience(2), NeverExit()]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_early_exit_equals_offline_evaluation(seed):
    net = _random_net(seed=seed)
    torch.manual_seed(100 + seed)
    x = torch.randn(96, 3, 32, 32, dtype=torch.float64)
    y = torch.randint(0, 10, (96,))
    table = mac_table(net)
    outputs = collect_outputs(net, tensor_batches(x, y, 32))
    for policy in _policies(outputs, net.num_exits, seed):
        offline = evaluate_policy(outputs, policy, table)
        real = net.early_exit(x, policy, table.exit_macs)
        assert torch.equal(real.prediction, offline.prediction), policy
        assert torch.equal(real.exit_index, offline.exit_index), policy
        assert real.macs.mean().item() == pytest.approx(offline.mean_macs)


def test_gated_real_early_exit_equals_offline():
    net = _random_net(head="gated", features="linear")
    x = torch.randn(64, 3, 32, 32, dtype=torch.float64)
    y = torch.randint(0, 10, (64,))
    table = mac_table(net)
    outputs = collect_outputs(net, tensor_batches(x, y, 16))
    assert outputs.gates is not None and torch.isinf(outputs.gates[-1]).all()
    t = float(torch.sigmoid(outputs.gates[0]).median())
    offline = evaluate_policy(outputs, GateThreshold(t), table)
    real = net.early_exit(x, GateThreshold(t), table.exit_macs)
    assert torch.equal(real.exit_index, offline.exit_index) and torch.equal(real.prediction, offline.prediction)
    assert sum(c > 0 for c in offline.exit_counts) > 1  # the threshold really splits the batch


def _toy_outputs():
    # 3 exits, 4 samples, 3 classes
    logits = torch.tensor([
        [[5., 0, 0], [0, 1, 0], [0, 0, 0.1], [0, 3, 0]],
        [[5., 0, 0], [0, 6, 0], [0, 0, 0.2], [3, 0, 0]],
        [[0., 5, 0], [0, 6, 0], [0, 0, 9.0], [3, 0, 0]],
    ])
    return CachedOutputs(logits, torch.tensor([0, 1, 2, 0]))


class _Table:
    exit_macs = [10, 50, 100]
    backbone_macs = 100


def test_max_probability_exits_and_costs():
    r = evaluate_policy(_toy_outputs(), MaxProbability([0.9, 0.9]), _Table())
    assert r.exit_index.tolist() == [0, 1, 2, 0]
    assert r.prediction.tolist() == [0, 1, 2, 1]
    assert r.accuracy == 0.75 and r.mean_macs == (10 + 50 + 100 + 10) / 4
    assert r.exit_counts == [2, 1, 1] and r.per_class_exit_counts.sum() == 4


def test_patience_needs_consecutive_agreement():
    r = evaluate_policy(_toy_outputs(), Patience(2), _Table())
    # sample 0: argmax 0,0 -> exits at 1; sample 3: argmax 1 then 0 then 0 -> exits at 2
    assert r.exit_index.tolist() == [1, 1, 1, 2]


def test_entropy_threshold_zero_never_exits_early():
    r = evaluate_policy(_toy_outputs(), Entropy([0.0, 0.0]), _Table())
    assert r.exit_counts == [0, 0, 4]
    assert normalised_entropy(torch.zeros(1, 5)).item() == pytest.approx(1.0)


def test_sweep_front_and_choice_use_validation_columns():
    out = _toy_outputs()
    rows = threshold_sweep(out, out, lambda t: MaxProbability([t, t]), [0.0, 0.5, 0.99, 1.0], _Table())
    front = pareto_front(rows)
    assert all(a["val_fraction"] <= b["val_fraction"] for a, b in zip(front, front[1:]))
    best = cheapest_within(rows, reference_accuracy=0.75, tolerance=0.0)
    assert best["val_accuracy"] >= 0.75
    with pytest.raises(ValueError):
        cheapest_within(rows, reference_accuracy=2.0, tolerance=0.0)


def test_policy_arguments_are_checked():
    with pytest.raises(ValueError):
        MaxProbability([])
    with pytest.raises(ValueError):
        Patience(0)
    assert math.isclose(MaxProbability([0.5]).thresholds[0], 0.5)
