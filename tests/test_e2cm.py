"""E2CM on the spine: class means without training, normalised-distance heads, the exit rule, MACs
through the head, the rivals as ordinary runs, Hungarian clustering accuracy, the autoencoder run."""
import pytest
import torch

from earlyexit.backbones import build_backbone
from earlyexit.data import DataSpec, tensor_batches
from earlyexit.methods.e2cm import (E2CMExit, class_means_run, clustering_accuracy, e2cm_policy, fit_class_means,
                                    load_class_means, threshold_cloud)
from earlyexit.evaluate import evaluate_policy, sweep_thresholds
from earlyexit.heads import euclidean_distances, exit_feature
from earlyexit.losses import build_loss, loss_target
from earlyexit.macs import MacTable, mac_table
from earlyexit.multiexit import MultiExitNet
from earlyexit.outputs import CachedOutputs, collect_outputs, outputs_of_runs
from earlyexit.policies import MaxProbability
from earlyexit.studies.e2cm import head_runs
from earlyexit.studies.e2cm_tables import prediction_disagreement
from earlyexit.train import LossSpec, ModelSpec, RunSpec, TrainConfig, build_model, train_cached


def _net(head="class_means", seed=0, **options):
    torch.manual_seed(seed)
    return MultiExitNet(build_backbone("resnet18_cifar", num_classes=10, width=0.0625), [0, 2, 4], head, **options)


@pytest.mark.parametrize("dim", [7, 20000])
def test_distances_do_not_depend_on_the_batch(dim):
    g = torch.Generator().manual_seed(dim)
    x, means = torch.randn(33, dim, generator=g) * 3 + 1, torch.randn(10, dim, generator=g)
    batched = euclidean_distances(x, means)
    one_by_one = torch.cat([euclidean_distances(x[i:i + 1], means) for i in range(len(x))])
    assert torch.equal(batched, one_by_one)
    assert torch.allclose(batched, torch.cdist(x.double(), means.double()).float(), rtol=1e-6)


def _loader(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    return tensor_batches(x, torch.arange(n) % 10, 32)


def _fitted(feature="gap"):
    net = _net(feature=feature)
    load_class_means(net, fit_class_means(net, _loader(), 10, feature))
    return net.eval()


@pytest.mark.parametrize("feature", ["gap", "flatten"])
def test_e2cm_trains_nothing(feature):
    net = _net(feature=feature)
    net.train()  # even a net left in training mode must not have its batch-norm statistics moved
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fit_class_means(net, _loader(), 10, feature)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(p.grad is not None for p in net.parameters())


def test_class_means_normalisers_and_head_scores_match_brute_force():
    net = _fitted()
    loader = _loader()
    with torch.no_grad():
        feats = [torch.cat(col) for col in zip(*[[exit_feature(h) for h in net.exit_features(x)[:-1]] for x, _ in loader])]
        scores = [torch.cat(col) for col in zip(*[[z for z in net(x).logits[:-1]] for x, _ in loader])]
    y = torch.cat([y for _, y in loader])
    for j, f in enumerate(feats):
        mu = torch.stack([f[y == k].mean(0) for k in range(10)])
        d = torch.cdist(f.double(), mu.double())   # every sample to every class mean
        assert torch.allclose(net.heads[j].means, mu, atol=1e-5)
        assert torch.allclose(net.heads[j].scale.double(), d.mean(0), rtol=1e-4)
        assert torch.allclose(scores[j].double(), -d / d.mean(0), rtol=1e-4, atol=1e-5)


def test_nearest_mean_prediction_differs_from_the_normalised_argmax():
    # one exit, two classes: raw distances favour class 0, normalised ones favour class 1
    scale = (0.5, 4.0)
    logits = -torch.tensor([[1.0, 2.0]]) / torch.tensor(scale)
    near, norm = E2CMExit((0.0,), (scale,)), E2CMExit((0.0,))
    assert near.prediction(0, logits).item() == 0 and norm.prediction(0, logits).item() == 1
    expected = torch.softmax(torch.tensor([-2.0, -0.5]), 0).max()
    assert torch.allclose(near.confidence(0, logits, None), expected)


def test_e2cm_exits_only_strictly_above_its_threshold():
    """The authors' comparison is max p > t: a row whose confidence equals its exit's threshold goes on,
    in the vectorised sweep and in the per-row decision alike (max probability takes it: >=)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 4, generator=g)
    outputs = CachedOutputs(logits, torch.zeros(6, dtype=torch.long))
    template = E2CMExit((0.0,))
    t = template.confidence(0, logits[0], None)[2].item()      # row 2's confidence at the early exit
    strict, loose = E2CMExit((t,)), MaxProbability((t,))
    assert not strict.decide(0, 2, logits[0], None, None)[0][2] and loose.decide(0, 2, logits[0], None, None)[0][2]
    assert strict.row_decider(2)(0, logits[0][2:3], None)[0] is False
    macs = MacTable(stage_macs=[1, 1], head_macs=[0, 0], exit_stage=[0, 1], backbone_macs=2)
    sweep = sweep_thresholds(outputs, outputs, template, torch.tensor([[t]]), macs)
    above = (template.confidence(0, logits[0], None) > t).double()
    assert sweep.val_cost[0].item() == pytest.approx((1.0 - 0.5 * above).mean().item())   # exit 0.5, final 1.0
    assert strict.threshold_of(strict.cut(torch.tensor([t, float("inf")]))).tolist() == [t, float("inf")]


def test_mac_table_counts_the_distances_through_the_head():
    net = _fitted()
    plain = mac_table(_net(head="linear"))
    macs = mac_table(net)
    d = [h.means.shape[1] for h in net.heads]
    assert macs.head_macs[:3] == [round(10 * (3 * dim - 1) / 2) for dim in d]  # the authors' K(3D-1) FLOPs / 2
    assert macs.stage_macs == plain.stage_macs and macs.backbone_macs == plain.backbone_macs
    assert macs.exit_macs[-1] == macs.backbone_macs + sum(macs.head_macs[:3])


@pytest.mark.parametrize("prediction", ["nearest", "normalised"])
def test_real_early_exit_equals_offline_for_e2cm(prediction):
    net = _fitted()
    x, y = torch.randn(80, 3, 32, 32), torch.randint(0, 10, (80,))
    outputs, macs = collect_outputs(net, tensor_batches(x, y, 16)), mac_table(net)
    conf = torch.softmax(outputs.logits[:-1], 2).max(2).values
    policy = e2cm_policy(net, conf.median(1).values.tolist(), prediction)
    offline = evaluate_policy(outputs, policy, macs)
    real = net.early_exit(x, policy, macs.exit_macs)
    assert torch.equal(real.prediction, offline.prediction) and torch.equal(real.exit_index, offline.exit_index)
    assert sum(c > 0 for c in offline.exit_counts) > 1
    cloud = threshold_cloud(outputs, outputs, policy, macs, 50)
    assert len(cloud) == 51 and len(prediction_disagreement(outputs, policy)) == 3


def _parent():
    return RunSpec("e2cm_test", ModelSpec("resnet18_cifar", 0.0625, (0, 2), "linear"),
                   DataSpec("synthetic10", val_size=64, train_size=128, test_size=64),
                   LossSpec("weighted_ce", {"weights": "final"}), TrainConfig(epochs=1, batch_size=64))


def test_class_means_run_is_a_cached_run_on_the_parents_backbone(fresh_artifacts):
    parent = train_cached(_parent(), progress=False)
    e2cm = train_cached(class_means_run(_parent(), augment=False), parent.data, progress=False)
    backbone = {k: v for k, v in parent.net.state_dict().items() if k.startswith("backbone.")}
    assert all(torch.equal(v, e2cm.net.state_dict()[k]) for k, v in backbone.items())
    assert e2cm.history[0]["step"] == "fit" and e2cm.train_seconds > 0
    assert (e2cm.net.heads[0].scale != 1).all()
    again = train_cached(class_means_run(_parent(), augment=False), parent.data, progress=False)
    assert torch.equal(again.net.heads[1].means, e2cm.net.heads[1].means) and again.history == e2cm.history


def test_rivals_frozen_joint_and_e2cm_sdn(fresh_artifacts):
    parent = train_cached(_parent(), progress=False)
    e2cm_spec = class_means_run(_parent(), augment=False)
    e2cm = train_cached(e2cm_spec, parent.data, progress=False)
    runs = head_runs(_parent(), e2cm_spec, 1e-3, epochs=1)
    before = {k: v for k, v in parent.net.state_dict().items() if k.startswith("backbone.")}
    sdn = train_cached(runs["SDN"], parent.data, progress=False)
    assert all(torch.equal(v, sdn.net.state_dict()[k]) for k, v in before.items())   # frozen backbone
    assert sdn.history[-1]["steps"] == 1                                         # 128 images, batch 128
    joint = train_cached(runs["BranchyNet"], parent.data, progress=False)
    assert any(not torch.equal(v, joint.net.state_dict()[k]) for k, v in before.items())
    combo = train_cached(runs["E2CM+SDN"], parent.data, progress=False)
    assert torch.equal(combo.net.heads[0].means, e2cm.net.heads[0].means)        # means taken from the E2CM run
    assert combo.macs.head_macs[0] > e2cm.macs.head_macs[0]                     # distances plus the linear layer
    budget = head_runs(_parent(), e2cm_spec, 1e-3, epochs=50, seconds=1e-9)["SDN"]
    timed = train_cached(budget, parent.data, progress=False)
    assert len(timed.history) == 2 and timed.history[-1]["steps"] == 1          # the budget stops after one step


def test_hungarian_accuracy_on_a_permuted_labelling():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (300,), generator=g)
    perm = torch.randperm(6, generator=g)
    assert clustering_accuracy(perm[labels], labels) == 1.0
    noisy = perm[labels].clone()
    noisy[:30] = (noisy[:30] + 1) % 6                     # 30 of 300 moved to another cluster
    assert clustering_accuracy(noisy, labels) == pytest.approx(0.9)
    assert (perm[labels] == labels).float().mean() < 1    # the raw ids alone would not score 1


def test_autoencoder_reconstructs_the_input_and_its_loss_reads_inputs():
    net = build_model(ModelSpec("conv_autoencoder", 1.0, (), backbone_options={"channels": (8, 8, 16)}), 10, 1, 28)
    x = torch.randn(2, 1, 28, 28)
    assert net(x).logits[-1].shape == x.shape and len(net.backbone.stages) == 4
    loss = build_loss("reconstruction", net.num_exits)
    assert loss_target(loss) == "inputs" and loss(net(x), x).item() > 0


def test_fit_in_the_rivals_layout_and_precision_gives_the_same_means():
    net = _net()
    ref = fit_class_means(net, _loader(), 10)
    last = fit_class_means(net, _loader(), 10, channels_last=True)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ref.means + ref.scale, last.means + last.scale))
    assert all(p.is_contiguous() for p in net.parameters())        # the net is handed back in its own layout
    low = fit_class_means(net, _loader(), 10, bf16=True, channels_last=True)   # bf16 where the CPU has it
    assert all(torch.allclose(a, b, rtol=0.05, atol=0.05) for a, b in zip(ref.means, low.means))


def test_e2cm_and_rivals_on_a_parent_without_exits(fresh_artifacts):
    plain = RunSpec("e2cm_plain", ModelSpec("resnet18_cifar", 0.0625, (), "linear"), _parent().data, _parent().loss,
                    TrainConfig(epochs=1, batch_size=64, bf16=True, channels_last=True))
    spec = class_means_run(plain, augment=False, exit_after=(0, 2))
    assert spec.model.exit_after == (0, 2) and spec.fit.options["bf16"] and spec.fit.options["channels_last"]
    parent = train_cached(plain, progress=False)
    e2cm = train_cached(spec, parent.data, progress=False)
    assert len(e2cm.net.heads) == 2 and e2cm.net.num_exits == 3
    rivals = head_runs(plain, spec, 1e-3, epochs=1, patience=2)
    assert all(r.model.exit_after == (0, 2) for r in rivals.values())
    assert rivals["SDN"].train.patience == 2 and rivals["SDN"].train.bf16 and rivals["SDN"].loss.options["weights"][-1] == 1.0
    assert len(rivals["SDN"].loss.options["weights"]) == 3


def test_runs_sharing_a_frozen_backbone_get_the_same_outputs_from_one_pass(tmp_path):
    """outputs_of_runs groups head-only runs by identical stages and gives each exactly what its own
    forward gives; a run whose backbone differs is computed on its own."""
    from types import SimpleNamespace

    base = _net("linear", seed=0)
    other_heads = _net("linear", seed=1)
    other_heads.backbone.load_state_dict(base.backbone.state_dict())
    for p in other_heads.backbone.classifier.parameters():   # a retrained final classifier is a head too
        torch.nn.init.normal_(p)
    own_backbone = _net("linear", seed=2)
    data, model = object(), SimpleNamespace(image_size=None)
    runs = [SimpleNamespace(net=n, data=data, device=torch.device("cpu"), spec=SimpleNamespace(model=model),
                            directory=tmp_path / str(i), epoch=None, loader=lambda split: _loader())
            for i, n in enumerate([base, other_heads, own_backbone])]
    for r in runs:
        r.directory.mkdir()
    together = outputs_of_runs(runs, "test")
    for r, out in zip(runs, together):
        alone = collect_outputs(r.net, _loader())
        assert torch.equal(out.logits, alone.logits) and torch.equal(out.labels, alone.labels)
    assert not torch.equal(together[0].logits[-1], together[1].logits[-1])
    assert torch.equal(outputs_of_runs(runs[:1], "test")[0].logits, together[0].logits)  # read back from the cache


@pytest.mark.parametrize("feature", ["gap", "flatten"])
def test_inference_form_class_means_compute_the_same_function_and_exit_alike_at_batch_one(feature):
    """The inference form's E2CM heads (cdist in direct mode) give the original heads' scores up to float
    rounding, count the same MACs, and the real batch-of-one forward of the form exits exactly as the
    offline rule on the form's own outputs."""
    from earlyexit.inference import InferenceClassMeans, inference_form
    net = _fitted(feature)
    form = inference_form(net)
    assert all(isinstance(h, InferenceClassMeans) for h in form.heads)
    assert mac_table(form).head_macs == mac_table(net).head_macs
    x, y = torch.randn(48, 3, 32, 32), torch.randint(0, 10, (48,))
    a, b = net(x).logits, form(x.contiguous(memory_format=form.input_format)).logits
    assert all(torch.allclose(za, zb, rtol=1e-4, atol=1e-5) for za, zb in zip(a, b))
    outputs, macs = collect_outputs(form, tensor_batches(x, y, 16)), mac_table(net)
    conf = torch.softmax(outputs.logits[:-1], 2).max(2).values
    policy = e2cm_policy(net, conf.median(1).values.tolist())
    offline = evaluate_policy(outputs, policy, macs)
    real = [form.early_exit(x[i:i + 1], policy, macs.exit_macs) for i in range(len(x))]
    assert [r.exit_index.item() for r in real] == offline.exit_index.tolist()
    assert [r.prediction.item() for r in real] == offline.prediction.tolist()
    assert sum(c > 0 for c in offline.exit_counts) > 1
