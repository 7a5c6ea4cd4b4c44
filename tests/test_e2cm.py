"""E2CM: class means without training, distance normalisation, threshold cloud, time-budgeted heads,
Hungarian clustering accuracy. Tiny nets on synthetic data (sklearn-free except KMeans/scipy)."""
import torch
import pytest

from earlyexit.backbones import build_backbone
from earlyexit.data import DataSpec, TensorLoader, load_dataset
from earlyexit.e2cm import (ClassMeans, ExitDistances, ExitScores, ExitTraining, build_autoencoder,
                            clustering_accuracy, e2cm_costs, e2cm_scores, evaluate_thresholds, exit_feature,
                            exit_points, fit_class_means, frontier, head_costs, random_thresholds, train_exits,
                            exit_distances, best_within_budget)
from earlyexit.macs import mac_table
from earlyexit.multiexit import MultiExitNet
from earlyexit.train import RunSpec, ModelSpec, LossSpec, TrainConfig, train_cached


def _net(seed=0):
    torch.manual_seed(seed)
    return MultiExitNet(build_backbone("resnet18_cifar", num_classes=10, width=0.0625), [0, 2, 4])


def _loader(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.arange(n) % 10
    return [(x[i:i + 32], y[i:i + 32]) for i in range(0, n, 32)]


def _snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("feature", ["gap", "flatten"])
def test_e2cm_trains_nothing(feature):
    net = _net()
    net.train()  # even a net left in training mode must not have its batch-norm statistics moved
    before = _snapshot(net)
    fit_class_means(net, _loader(), 10, feature)
    after = net.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.grad is not None for p in net.parameters())


def test_class_means_and_normalisers_match_brute_force():
    net = _net()
    loader = _loader()
    cm, dist = fit_class_means(net, loader, 10, "gap")
    net.eval()
    with torch.no_grad():
        feats = [torch.cat(col) for col in zip(*[[exit_feature(h) for h in net.exit_features(x)[:-1]] for x, _ in loader])]
    y = torch.cat([y for _, y in loader])
    for j, f in enumerate(feats):
        mu = torch.stack([f[y == k].mean(0) for k in range(10)])
        assert torch.allclose(cm.means[j], mu, atol=1e-5)
        d = torch.cdist(f.double(), mu.double())   # every sample to every class mean
        assert torch.allclose(cm.scale[j].double(), d.mean(0), rtol=1e-4)
        assert torch.allclose(dist.d[j].double(), d, rtol=1e-4, atol=1e-5)
    again = exit_distances(net, loader, cm)
    assert torch.equal(again.d, dist.d)  # same distances whatever pass computes them


def test_normalisation_changes_confidence_and_prediction_rule():
    # one exit, two classes: raw distances favour class 0, normalised ones favour class 1
    d = torch.tensor([[[1.0, 2.0]]])
    cm = ClassMeans([torch.zeros(2, 3)], [torch.tensor([0.5, 4.0])], "gap")
    dist = ExitDistances(d, torch.tensor([[0.0, 1.0]]), torch.tensor([1]))
    near, norm = e2cm_scores(dist, cm, "nearest"), e2cm_scores(dist, cm, "normalised")
    expected = torch.softmax(torch.tensor([-2.0, -0.5]), 0).max()
    assert torch.allclose(near.conf, expected[None, None])
    assert near.pred[0, 0] == 0 and norm.pred[0, 0] == 1 and near.pred[1, 0] == 1


def test_threshold_evaluation_matches_a_loop():
    g = torch.Generator().manual_seed(1)
    conf = torch.rand(3, 50, generator=g)
    pred = torch.randint(0, 4, (4, 50), generator=g)
    labels = torch.randint(0, 4, (50,), generator=g)
    scores = ExitScores(conf, pred, labels)
    costs = torch.tensor([1.0, 2.0, 3.0, 10.0], dtype=torch.float64)
    t = random_thresholds(40, scores, "uniform", seed=2)
    acc, cost = evaluate_thresholds(scores, costs, t, chunk=7)
    for i in range(len(t)):
        ok, spent = 0, 0.0
        for n in range(50):
            k = next((j for j in range(3) if conf[j, n] > t[i, j]), 3)
            ok += int(pred[k, n] == labels[n])
            spent += costs[k].item()
        assert acc[i].item() == pytest.approx(ok / 50)
        assert cost[i].item() == pytest.approx(spent / 50)
    assert (exit_points(scores, t[-1:]) == 3).all()       # the appended 'never exit' row
    tied = exit_points(scores, conf[:, :1].T.clone())     # strict '>': a threshold equal to conf does not fire
    assert tied[0, 0] != 0


def test_quantile_thresholds_cover_the_confidence_range():
    conf = 0.1 + 0.05 * torch.rand(2, 1000, generator=torch.Generator().manual_seed(0))
    scores = ExitScores(conf, torch.zeros(3, 1000, dtype=torch.long), torch.zeros(1000, dtype=torch.long))
    t = random_thresholds(500, scores, "quantile")[:-1]
    assert t.min() >= conf.min() and t.max() <= conf.max()
    shares = (exit_points(scores, t) == 0).float().mean(1)
    assert shares.min() < 0.1 and shares.max() > 0.9      # uniform draws would almost never exit here


def test_frontier_hull_is_convex_subset_of_pareto():
    g = torch.Generator().manual_seed(3)
    cost, acc = torch.rand(300, generator=g), torch.rand(300, generator=g)
    pareto, hull = frontier(cost, acc, "pareto"), frontier(cost, acc, "hull")
    assert set(hull) <= set(pareto) and hull[0] == pareto[0] and hull[-1] == pareto[-1]
    for i in range(len(cost)):  # nothing is both cheaper and more accurate than a Pareto point
        assert not any(cost[i] < cost[p] and acc[i] > acc[p] for p in pareto)
    slopes = [(acc[b] - acc[a]) / (cost[b] - cost[a]) for a, b in zip(hull[:-1], hull[1:])]
    assert all(s1 >= s2 for s1, s2 in zip(slopes[:-1], slopes[1:]))  # concave chain
    i = best_within_budget(cost, acc, 0.5)
    assert cost[i] <= 0.5 and acc[i] == acc[cost <= 0.5].max()
    assert best_within_budget(cost, acc, -1.0) is None


def test_costs_include_the_distance_overhead():
    net = _net()
    macs = mac_table(net)
    cm, _ = fit_class_means(net, _loader(), 10, "gap")
    costs = e2cm_costs(macs, cm)
    stage_cum = torch.tensor(macs.stage_macs).cumsum(0)
    over = [10 * d for d in cm.dims]
    assert costs[0] == stage_cum[0] + over[0]
    assert costs[2] == stage_cum[4] + sum(over)
    assert costs[-1] == macs.backbone_macs + sum(over)


def test_hungarian_accuracy_on_a_permuted_labelling():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (300,), generator=g)
    perm = torch.randperm(6, generator=g)
    assert clustering_accuracy(perm[labels], labels) == 1.0
    noisy = perm[labels].clone()
    noisy[:30] = (noisy[:30] + 1) % 6                     # 30 of 300 moved to another cluster
    assert clustering_accuracy(noisy, labels) == pytest.approx(1 - (noisy[:30] != perm[labels][:30]).float().sum().item() / 300)
    assert (perm[labels] == labels).float().mean() < 1    # the raw ids alone would not score 1


def _tiny_run(fresh):
    spec = RunSpec("e2cm_test", ModelSpec("resnet18_cifar", 0.0625, (0, 2), "linear"),
                   DataSpec("synthetic10", val_size=64, train_size=128, test_size=64),
                   LossSpec("weighted_ce", {"weights": "final"}), TrainConfig(epochs=0, batch_size=64))
    return train_cached(spec, progress=False)


def test_frozen_heads_leave_the_backbone_alone_and_joint_training_does_not(fresh_artifacts):
    run = _tiny_run(fresh_artifacts)
    before = {k: v.clone() for k, v in run.net.backbone.state_dict().items()}
    cfg = ExitTraining("frozen", epochs=1, batch_size=64, bf16=False, channels_last=False)
    sdn = train_exits(run, cfg, "sdn_test")
    assert all(torch.equal(before[k], v) for k, v in sdn.net.backbone.state_dict().items())
    assert not torch.equal(sdn.net.heads[0].fc.weight, run.net.heads[0].fc.weight)
    assert sdn.log["steps"] == 2
    again = train_exits(run, cfg, "sdn_test")             # cached: identical weights, no retraining
    assert torch.equal(again.net.heads[1].fc.weight, sdn.net.heads[1].fc.weight)
    joint = train_exits(run, ExitTraining("joint", seconds=1e-9, epochs=None, batch_size=64, bf16=False,
                                          channels_last=False), "branchy_test")
    assert joint.log["steps"] == 1                        # a time budget stops after the first step
    assert any(not torch.equal(before[k], v) for k, v in joint.net.backbone.state_dict().items())


def test_distance_heads_cost_and_run(fresh_artifacts):
    run = _tiny_run(fresh_artifacts)
    loader = run.loader("train")
    cm, _ = fit_class_means(run.net, loader, 10, "gap")
    combo = train_exits(run, ExitTraining("frozen", epochs=1, batch_size=64, bf16=False, channels_last=False,
                                          distance_inputs=True), "combo_test", cm)
    costs = head_costs(combo, cm)
    assert costs[0] == combo.macs.exit_macs[0] + cm.overhead_macs()[0]
    assert costs[-1] == combo.macs.exit_macs[-1] + sum(cm.overhead_macs())
    out = combo.net(next(iter(loader))[0])
    assert len(out.logits) == 3 and out.logits[0].shape == (128, 10)


def test_autoencoder_reconstructs_the_input_shape():
    enc, dec = build_autoencoder((8, 8, 16), embed=10)
    x = torch.randn(2, 1, 28, 28)
    z = enc(x)
    assert z.shape == (2, 10) and dec(z).shape == x.shape
    assert len(enc.stages) == 4
