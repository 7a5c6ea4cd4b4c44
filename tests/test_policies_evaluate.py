"""Exit policies, the offline evaluator, and its agreement with the real early-exit forward."""
import math

import pytest
import torch

from earlyexit.backbones import build_backbone
from earlyexit.data import tensor_batches
from earlyexit.methods.class_exclusion import ClassExclusion, SingleConfident
from earlyexit.methods.e2cm import E2CMExit
from earlyexit.methods.eenet import EENetPolicy, UtilityScheduler
from earlyexit.evaluate import (convex_hull, evaluate_policy, pareto_front, random_thresholds, select,
                                shared_threshold_sweep, sweep_thresholds)
from earlyexit.macs import mac_table
from earlyexit.multiexit import MultiExitNet
from earlyexit.outputs import collect_outputs, CachedOutputs
from earlyexit.policies import (Entropy, GateThreshold, MaxProbability, NeverExit, Patience, normalised_entropy,
                                run_exit_policy)


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
    cr = [float(torch.quantile(probs[j], torch.rand(1, generator=g).item())) for j in range(k - 1)]
    scales = tuple(tuple(torch.rand(outputs.logits.shape[2], generator=g).add(0.5).tolist()) for _ in range(k - 1))
    betas = [float(torch.rand(1, generator=g)) * 0.9 for _ in range(k - 1)]
    return [MaxProbability(mp), Entropy(en), Patience(2), NeverExit(), ClassExclusion(betas), SingleConfident(cr),
            E2CMExit(tuple(mp), scales), E2CMExit(tuple(mp))]


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
    rule = GateThreshold([t] * (net.num_exits - 1))
    offline = evaluate_policy(outputs, rule, table)
    real = net.early_exit(x, rule, table.exit_macs)
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
    exit_fractions = [0.1, 0.5, 1.0]
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


@pytest.mark.parametrize("rule", [MaxProbability((0.0, 0.0)), Entropy((0.0, 0.0)), E2CMExit((0.0, 0.0), ((1.0, 2.0, 0.5),) * 2)])
def test_vectorised_sweep_equals_the_policy_driver(rule):
    out = _toy_outputs()
    g = torch.Generator().manual_seed(0)
    thresholds = torch.rand(40, 2, generator=g)
    sweep = sweep_thresholds(out, out, rule, thresholds, _Table())
    for i in range(len(sweep)):
        r = evaluate_policy(out, sweep.policy(i), _Table())
        assert sweep.val_accuracy[i].item() == pytest.approx(r.accuracy)
        assert sweep.test_cost[i].item() == pytest.approx(r.mean_fraction)


def test_shared_sweep_front_and_selection_use_validation_columns():
    out = _toy_outputs()
    sweep = shared_threshold_sweep(out, out, MaxProbability((0.0, 0.0)), [0.0, 0.5, 0.99, 1.0], _Table())
    front = sweep.front()
    assert all(sweep.val_cost[a] <= sweep.val_cost[b] for a, b in zip(front, front[1:]))
    best = sweep.select(reference=0.75, tolerance=0.0)
    assert best["val_accuracy"] >= 0.75
    assert sweep.select(reference=2.0, tolerance=0.0) is None
    with pytest.raises(ValueError):
        sweep.select(budget=0.5, reference=0.75, tolerance=0.0)


def test_pareto_front_hull_and_selection_on_a_random_cloud():
    g = torch.Generator().manual_seed(3)
    cost, acc = torch.rand(3000, generator=g), torch.rand(3000, generator=g)
    pareto, hull = pareto_front(cost, acc), convex_hull(cost, acc)
    assert set(hull) <= set(pareto) and hull[0] == pareto[0] and hull[-1] == pareto[-1]
    best_so_far = -1.0
    for i in sorted(range(len(cost)), key=lambda i: (cost[i].item(), -acc[i].item())):
        if acc[i] > best_so_far:  # a brute-force front
            assert i in pareto
            best_so_far = acc[i].item()
    assert len(pareto) == len(set(pareto)) and all(cost[a] <= cost[b] for a, b in zip(pareto, pareto[1:]))
    slopes = [(acc[b] - acc[a]) / (cost[b] - cost[a]) for a, b in zip(hull[:-1], hull[1:])]
    assert all(s1 >= s2 for s1, s2 in zip(slopes[:-1], slopes[1:]))  # concave chain
    i = select(cost, acc, budget=0.5)
    assert cost[i] <= 0.5 and acc[i] == acc[cost <= 0.5].max()
    assert select(cost, acc, budget=-1.0) is None
    j = select(cost, acc, reference=0.9, tolerance=0.05)
    assert acc[j] >= 0.85 and cost[j] == cost[acc >= 0.85].min()


def test_random_thresholds_quantile_space_covers_the_confidences():
    conf = 0.1 + 0.05 * torch.rand(2, 1000, generator=torch.Generator().manual_seed(0))
    t = random_thresholds(500, conf, "quantile")
    assert torch.isinf(t[-1]).all()                        # 'never exit' is always a candidate
    assert t[:-1].min() >= conf.min() and t[:-1].max() <= conf.max()
    with pytest.raises(ValueError):
        random_thresholds(5, conf, "normal")


def test_policy_arguments_are_checked():
    with pytest.raises(ValueError):
        MaxProbability([])
    with pytest.raises(ValueError):
        Patience(0)
    assert math.isclose(MaxProbability([0.5]).thresholds[0], 0.5)


@pytest.mark.parametrize("classes", [10, 100])
def test_batch_of_one_decisions_equal_the_batched_ones(classes):
    """row_decider (the batch-of-one forward's decision) gives, row by row, exactly what the batched
    driver gives, for every rule, including float32 logits near the thresholds."""
    g = torch.Generator().manual_seed(classes)
    k, n = 5, 400
    logits = (torch.randn(k, n, classes, generator=g) * torch.rand(1, n, 1, generator=g) * 6).float()
    logits[:, :40] = logits[:, :40].round()               # exact ties between classes
    gates = torch.randn(k, n, generator=g) * 3
    probs = torch.softmax(logits, 2).max(2).values
    rules = [MaxProbability([float(probs[j].median()) for j in range(k - 1)]),   # a row sits on each cut
             Entropy([0.5] * (k - 1)), Patience(2), GateThreshold([0.7] * (k - 1)), NeverExit(),
             ClassExclusion([0.0, 0.3, 0.6, 0.9]), ClassExclusion([0.5, 1.0, 0.2, 0.4], restrict_final=False),
             SingleConfident([0.2, 0.5, 0.9, 0.3])]
    torch.manual_seed(classes)
    scheduler = UtilityScheduler(k, classes)
    scores = EENetPolicy(scheduler, [0.0] * (k - 1)).scores(CachedOutputs(logits, torch.zeros(n, dtype=torch.long)))
    for carried in ("clamped", "unclamped_at_test"):
        # cuts halfway between two rows' scores, not on one: the scheduler's matrix product rounds a
        # row's score differently alone and in a batch (BLAS), so a row exactly on a cut may go either way
        cuts = [float(v.sort().values[n // 2 - 1:n // 2 + 1].mean()) for v in scores.T[:-1]]
        rules.append(EENetPolicy(scheduler, cuts, carried))
    for rule in rules:
        prediction, exit_index = run_exit_policy(rule, k, n, lambda j, a, keep: (logits[j, a], gates[j, a]))
        for i in range(0, n, 3):
            decide = rule.row_decider(k)
            for j in range(k):
                stop, pred = decide(j, logits[j, i:i + 1], gates[j, i:i + 1])
                if stop or j == k - 1:
                    break
            assert (j, pred) == (exit_index[i].item(), prediction[i].item()), (rule, i)


def test_every_rule_decides_on_the_device_of_its_logits():
    """The real early exit runs on an accelerator: no rule may make a tensor on the CPU beside its logits
    (the meta device, which computes shapes only, raises on any mix, as a GPU would)."""
    k, n, classes = 4, 6, 10
    logits, gate = torch.empty(n, classes, device="meta"), torch.empty(n, device="meta")
    scheduler = UtilityScheduler(k, classes).to("meta")
    rules = [MaxProbability([0.5] * (k - 1)), Entropy([0.5] * (k - 1)), Patience(2), GateThreshold([0.5] * (k - 1)),
             NeverExit(), ClassExclusion([0.2, 0.5, 0.8]), SingleConfident([0.3, 0.5, 0.9]),
             E2CMExit((0.5,) * (k - 1), ((1.0,) * classes,) * (k - 1)), EENetPolicy(scheduler, [0.5] * (k - 1))]
    for rule in rules:
        state = {}
        for j in range(k):
            stop, pred, state = rule.decide(j, k, logits, gate, state)
            assert {t.device.type for t in (stop, pred, *state.values())} == {"meta"}, (rule, j)
