"""Class exclusion (Wang, Li, Zhang): loss, cumulative exit rule, CR baseline, greedy search, the
100-class path with 2x2-pooling heads, agreement of the real early-exit forward with the offline one, and
the evaluation and claim checks of notebook 01."""
import math

import pytest
import torch

from earlyexit.stats import bootstrap_weighted
import torch.nn.functional as F

from earlyexit.backbones import build_backbone
from earlyexit.studies.claims import VERDICTS, claims_table
from earlyexit.methods.class_exclusion import (ClassExclusion, ClassExclusionLoss, ConfidenceLoss, SingleConfident,
                                               authors_exit_keys, exclusion_weights, fit_operating_point,
                                               greedy_search, resolve_order, search_betas, search_taus)
from earlyexit.data import tensor_batches
from earlyexit.evaluate import evaluate_policy
from earlyexit.losses import build_loss
from earlyexit.macs import mac_table
from earlyexit.multiexit import ExitOutputs, MultiExitNet
from earlyexit.outputs import CachedOutputs, collect_outputs
from earlyexit.studies.class_exclusion import (SetupEvaluation, _largest_growth, _uneven_shares, authors_thresholds,
                                               conclusions, early_exit_class_shares, evaluate_setup, lr_candidates,
                                               matched_cost_gap, mean_remaining_classes, method_run, paper_setup_keys)
from earlyexit.train import train_cached

NEG, POS = -6.0, 6.0


def _outputs(n=6, c=10, k=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ExitOutputs([torch.randn(n, c, generator=g) for _ in range(k)], [None] * k), torch.randint(0, c, (n,), generator=g)


# ---------------------------------------------------------------- losses
def test_exclusion_weights_grow_with_depth():
    assert exclusion_weights(6) == pytest.approx([1 / 7, 1 / 6, 1 / 5, 1 / 4, 1 / 3, 1 / 2])
    assert exclusion_weights(4) == pytest.approx([1 / 5, 1 / 4, 1 / 3, 1 / 2])


def test_uniform_scale_loss_is_the_authors_bce_with_weight_argument():
    out, y = _outputs()
    onehot = F.one_hot(y, 10).float()
    authors = torch.nn.BCEWithLogitsLoss(36 * torch.ones(10))  # rho lands in `weight`, a uniform scale
    expected = F.cross_entropy(out.logits[-1], y) + sum(
        w * authors(z, onehot) for w, z in zip(exclusion_weights(6), out.logits[:-1]))
    loss = build_loss("class_exclusion", 7)(out, y)  # rho defaults to 4 (N - 1) = 36
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_pos_weight_loss_weights_only_the_true_class():
    out, y = _outputs()
    onehot = F.one_hot(y, 10).float()
    rho = 5.0
    manual = lambda z: -(rho * onehot * F.logsigmoid(z) + (1 - onehot) * F.logsigmoid(-z)).mean()  # noqa: E731
    expected = F.cross_entropy(out.logits[-1], y) + sum(
        w * manual(z) for w, z in zip(exclusion_weights(6), out.logits[:-1]))
    loss = ClassExclusionLoss(7, bce_mode="pos_weight", rho=rho)(out, y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() != pytest.approx(ClassExclusionLoss(7, rho=rho)(out, y).item(), rel=1e-3)


def test_default_rho_is_396_for_100_classes():
    out, y = _outputs(c=100, k=3)
    onehot = F.one_hot(y, 100).float()
    expected = F.cross_entropy(out.logits[-1], y) + sum(
        w * 396 * F.binary_cross_entropy_with_logits(z, onehot) for w, z in zip([1 / 3, 1 / 2], out.logits[:-1]))
    assert ClassExclusionLoss(3)(out, y).item() == pytest.approx(expected.item(), rel=1e-6)


def test_cr_loss_and_bad_options():
    out, y = _outputs()
    expected = F.cross_entropy(out.logits[-1], y) + sum(
        w * F.cross_entropy(z, y) for w, z in zip(exclusion_weights(6), out.logits[:-1]))
    assert ConfidenceLoss(7)(out, y).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="bce_mode"):
        ClassExclusionLoss(7, bce_mode="pos")
    with pytest.raises(ValueError, match="rho"):
        ClassExclusionLoss(7, rho=0)


# ---------------------------------------------------------------- exit rules
def _cached(rows_per_exit, labels):
    """rows_per_exit: K lists of per-row logit lists."""
    return CachedOutputs(torch.tensor(rows_per_exit, dtype=torch.float32), torch.tensor(labels))


def test_exclusion_is_cumulative_and_readmits_the_argmax():
    # 4 classes, 2 early exits + final; one row.
    exit1 = [[POS, POS, NEG, POS]]       # class 2 excluded
    exit2 = [[POS, NEG, POS, NEG]]       # argmax 0; 2 stays excluded (not argmax), 1 and 3 excluded now
    final = [[0.0, 0.0, 9.0, 0.0]]
    policy = ClassExclusion([0.5, 0.5])
    res = evaluate_policy(_cached([exit1, exit2, final], [0]), policy, _dummy_macs(3))
    assert res.exit_index.tolist() == [1] and res.prediction.tolist() == [0]
    # the argmax is re-admitted even if an earlier exit excluded it
    exit2b = [[NEG, NEG, POS, NEG]]
    res = evaluate_policy(_cached([exit1, exit2b, final], [2]), policy, _dummy_macs(3))
    assert res.exit_index.tolist() == [1] and res.prediction.tolist() == [2]


def test_final_prediction_restricted_to_remaining_classes_or_not():
    exit1 = [[POS, POS, NEG, NEG]]       # R = {0, 1}
    final = [[0.0, 1.0, 5.0, 0.0]]       # unrestricted argmax 2, restricted argmax 1
    data = _cached([exit1, final], [1])
    assert evaluate_policy(data, ClassExclusion([0.5]), _dummy_macs(2)).prediction.tolist() == [1]
    assert evaluate_policy(data, ClassExclusion([0.5], restrict_final=False), _dummy_macs(2)).prediction.tolist() == [2]
    assert evaluate_policy(data, ClassExclusion([0.5]), _dummy_macs(2)).accuracy == 1.0


def test_beta_one_empties_the_set_and_the_next_exit_takes_its_argmax():
    exit1 = [[POS, POS, POS, NEG]]
    exit2 = [[0.0, 0.1, 0.0, 0.0]]       # nearly flat: beta 0.5 would keep everything
    final = [[9.0, 0.0, 0.0, 0.0]]
    res = evaluate_policy(_cached([exit1, exit2, final], [1]), ClassExclusion([1.0, 0.5]), _dummy_macs(3))
    assert res.exit_index.tolist() == [1] and res.prediction.tolist() == [1]
    with pytest.raises(ValueError, match="betas"):
        ClassExclusion([1.5])
    with pytest.raises(ValueError, match="early exits"):
        evaluate_policy(_cached([exit1, exit2, final], [1]), ClassExclusion([0.5]), _dummy_macs(3))


def test_cr_exits_only_when_exactly_one_class_is_above_tau():
    confident = [[4.0, 0.0, 0.0, 0.0]]   # p0 ~ 0.95
    two_way = [[3.0, 3.0, -5.0, -5.0]]   # p0 = p1 ~ 0.5
    final = [[0.0, 0.0, 0.0, 1.0]]
    data = _cached([confident + two_way, final + final], [0, 1])
    res = evaluate_policy(data, SingleConfident([0.3]), _dummy_macs(2))
    assert res.exit_index.tolist() == [0, 1]           # two classes above 0.3: no exit
    assert res.prediction.tolist() == [0, 3]
    res = evaluate_policy(data, SingleConfident([0.49]), _dummy_macs(2))
    assert res.exit_index.tolist() == [0, 1]
    res = evaluate_policy(data, SingleConfident([0.499]), _dummy_macs(2))
    assert res.exit_index.tolist() == [0, 1]
    assert evaluate_policy(data, SingleConfident([1.0]), _dummy_macs(2)).exit_index.tolist() == [1, 1]
    # with a low tau the confident row has several classes above it too (p = 0.017 each)
    assert evaluate_policy(data, SingleConfident([0.01]), _dummy_macs(2)).exit_index.tolist() == [1, 1]
    assert evaluate_policy(data, SingleConfident([0.9]), _dummy_macs(2)).exit_index.tolist() == [0, 1]


def _dummy_macs(k):
    from earlyexit.macs import MacTable
    return MacTable(stage_macs=[10] * k, head_macs=[1] * k, exit_stage=list(range(k)), backbone_macs=10 * k + 1)


def _learned_like(n=400, c=10, k=4, seed=0):
    """Cached outputs whose exits get more accurate with depth, with sigmoid-style scores."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    logits = []
    for j in range(k):
        z = torch.randn(n, c, generator=g) * 2 - 3
        z[torch.arange(n), y] += 2.0 + 2.5 * j
        logits.append(z)
    return CachedOutputs(torch.stack(logits), y)


def test_decisions_are_per_sample():
    data = _learned_like()
    policy = ClassExclusion([0.2, 0.3, 0.4])
    together = evaluate_policy(data, policy, _dummy_macs(4))
    for i in range(0, 400, 37):
        alone = evaluate_policy(data.subset(torch.tensor([i])), policy, _dummy_macs(4))
        assert alone.prediction.item() == together.prediction[i].item()
        assert alone.exit_index.item() == together.exit_index[i].item()


# ---------------------------------------------------------------- search
@pytest.mark.parametrize("tolerance", [0.0, 0.01, 0.05])
def test_greedy_search_respects_the_tolerance_and_trades_accuracy_for_cost(tolerance):
    data = _learned_like()
    macs = _dummy_macs(4)
    bc, cr = search_betas(data, tolerance, macs=macs), search_taus(data, tolerance, macs=macs)
    for found in (bc, cr):
        assert found.val_accuracy >= found.reference_accuracy - tolerance - 1e-9
        assert found.reference_accuracy == pytest.approx(data.exit_accuracies()[-1])
        assert len(found.thresholds) == 3
    assert sorted(bc.order) == [0, 1, 2]
    if tolerance == 0.05:
        loose = evaluate_policy(data, ClassExclusion(bc.thresholds), macs)
        assert loose.mean_fraction < macs.exit_fractions[-1] and loose.exit_counts[-1] < len(data)


def test_search_orders_on_vgg_small_and_vgg13():
    net = MultiExitNet(build_backbone("vgg_small", width=0.125))
    data = _learned_like(k=7, n=60)
    macs = mac_table(net)
    keys = authors_exit_keys("vgg_small", net.backbone, net.exit_after, macs)
    # the authors' key ties exits 2-6 (their VGG charges each conv its own block's channels as input)
    assert search_betas(data, 0.5, macs=macs, order="authors", authors_keys=keys).order == [1, 2, 3, 4, 5, 0]
    # true MACs of the stage before each exit: conv2, conv4, conv6 cost twice conv3, conv5; conv1 least
    assert search_betas(data, 0.5, macs=macs, order="true_macs").order == [1, 3, 5, 2, 4, 0]
    assert search_betas(data, 0.5, macs=macs, order="forward").order == list(range(6))
    with pytest.raises(ValueError, match="permutation"):
        search_betas(data, 0.01, macs=macs, order=[0, 1])
    with pytest.raises(ValueError, match="sort key"):
        resolve_order("authors", 6, macs)
    net13 = MultiExitNet(build_backbone("vgg13", width=0.5))
    keys13 = authors_exit_keys("vgg13", net13.backbone, net13.exit_after, mac_table(net13))
    assert resolve_order("authors", 9, mac_table(net13), keys13) == [1, 2, 3, 4, 5, 6, 7, 8, 0]


def _one_exit(correct_early: list[bool], labels: list[int]) -> CachedOutputs:
    """Two exits: the early head is confident on every image, right where ``correct_early``; the final
    classifier is always right."""
    y = torch.tensor(labels)
    early = torch.full((len(y), 3), NEG)
    early[torch.arange(len(y)), torch.where(torch.tensor(correct_early), y, (y + 1) % 3)] = POS
    final = torch.full((len(y), 3), NEG)
    final[torch.arange(len(y)), y] = POS
    return CachedOutputs(torch.stack([early, final]), y)


def test_acceptance_is_strict_and_clip_on_failure_is_an_option():
    data = _one_exit([True] * 9 + [False], [0, 1, 2, 0, 1, 2, 0, 1, 2, 0])   # exit 1 alone: 90 %, final 100 %
    macs = _dummy_macs(2)
    make = lambda t: SingleConfident(t)  # noqa: E731
    # a drop of exactly the tolerance is refused (the authors' loop runs while acc > reference - tolerance)
    assert greedy_search(data, make, [0.9], 1.0, 0.1, macs).thresholds == [1.0]
    assert greedy_search(data, make, [0.9], 1.0, 0.11, macs).thresholds == [0.9]
    # their clip: an exit whose first value fails gets it anyway
    assert greedy_search(data, make, [0.9], 1.0, 0.1, macs, clip_on_failure=True).thresholds == [0.9]


def test_operating_point_and_analysis_helpers():
    data = _learned_like()
    macs = _dummy_macs(4)
    point = fit_operating_point("BC", data, data, macs, 0.02)
    remaining = mean_remaining_classes(data, point.policy, point.test.exit_index)
    assert remaining[0] <= 10 and all(a >= b for a, b in zip(remaining, remaining[1:]))
    shares = early_exit_class_shares(point.test.prediction, data.labels, point.test.exit_index, 4, 10)
    assert shares["true"].sum().item() == pytest.approx(100) and shares["predicted"].sum().item() == pytest.approx(100)
    with pytest.raises(ValueError, match="method"):
        fit_operating_point("XX", data, data, macs, 0.02)


# ---------------------------------------------------------------- real network
def test_real_early_exit_equals_offline_for_class_exclusion():
    torch.manual_seed(0)
    net = MultiExitNet(build_backbone("vgg_small", width=0.125), head="linear").double().eval()
    for head in net.heads:  # spread, mostly negative logits, as BCE training gives: exclusion bites
        head.fc.weight.data.normal_(0, 2.5)
        head.fc.bias.data.fill_(-5.0)
    scale = 3 * torch.rand(64, 1, 1, 1, dtype=torch.float64)  # images that differ, so exits differ
    x = torch.randn(64, 3, 32, 32, dtype=torch.float64) * scale + torch.randn(64, 3, 1, 1, dtype=torch.float64)
    y = torch.randint(0, 10, (64,))
    table = mac_table(net)
    outputs = collect_outputs(net, tensor_batches(x, y, 16))
    for betas in ([0.3] * 6, [0.05, 0.1, 0.2, 0.3, 0.5, 0.7], [0.0, 0.0, 0.6, 0.0, 0.9, 0.0]):
        for restrict in (True, False):
            policy = ClassExclusion(betas, restrict)
            offline = evaluate_policy(outputs, policy, table)
            real = net.early_exit(x, policy, table.exit_macs)
            assert torch.equal(real.prediction, offline.prediction)
            assert torch.equal(real.exit_index, offline.exit_index)
            assert real.macs.mean().item() == pytest.approx(offline.mean_macs)
    assert len(set(evaluate_policy(outputs, ClassExclusion([0.3] * 6), table).exit_index.tolist())) > 3


OPTIONS = dict(reference=False, train_size=300, val_size=200, test_size=200, epochs=1, batch_size=100,
               weight_decay=5e-4, schedule="cosine", warmup=0.0, crop_pad=0, flip=False, bce_mode="uniform_scale",
               rho=None, cr_loss="authors", bf16=False, channels_last=False)


def test_100_class_path_with_2x2_pooling_heads(fresh_artifacts, tmp_path, monkeypatch):
    monkeypatch.setenv("EARLYEXIT_DATA", str(tmp_path / "data"))
    setup = {"name": "c100", "backbone": "vgg_small", "dataset": "synthetic100", "width": 0.125, "pool": 2}
    run = train_cached(method_run(setup, "BC", 0.05, 0, **OPTIONS), progress=False)
    assert [h.fc.in_features for h in run.net.heads] == [4 * c for c in (16, 16, 32, 32, 64, 64)]
    assert math.isfinite(run.history[-1]["loss"])
    val, test = run.outputs("val"), run.outputs("test")
    assert val.logits.shape == (7, 200, 100)
    point = fit_operating_point("BC", val, test, run.macs, 0.01)
    assert point.search.val_accuracy >= point.search.reference_accuracy - 0.01 - 1e-9
    _, _, state = ClassExclusion([0.5] * 6).decide(0, 7, test.logits[0], None, {})
    assert state["remaining"].shape == (200, 100) and state["remaining"].dtype == torch.bool
    with pytest.raises(ValueError, match="unknown key"):
        lr_candidates([{"name": "x", "backbone": "vgg_small", "dataset": "cifar10", "widht": 1}], [0.1], [0], **OPTIONS)


# ---------------------------------------------------------------- notebook 01: one set-up evaluated, claims
class _Run:
    """What evaluate_setup reads of a TrainedRun: cached outputs per split and the MAC table."""

    def __init__(self, val: CachedOutputs, test: CachedOutputs, macs):
        self._outputs, self.macs = {"val": val, "test": test}, macs

    def outputs(self, split):
        return self._outputs[split]


def _noisy(data: CachedOutputs, seed: int, scale: float = 1.5) -> CachedOutputs:
    """Another network's outputs on the same images: same labels, other logits."""
    g = torch.Generator().manual_seed(seed)
    return CachedOutputs(data.logits + scale * torch.randn(data.logits.shape, generator=g), data.labels)


def _toy_setup():
    val, test, macs = _learned_like(seed=1), _learned_like(seed=2), _dummy_macs(4)
    runs = {"plain": _Run(val, test, macs), "BC": _Run(val, test, macs),
            "CR": _Run(_noisy(val, 3), _noisy(test, 4), macs)}
    setup = {"name": "toy", "backbone": "vgg_small", "dataset": "cifar10", "bc_tolerance": 0.01, "cr_tolerance": 0.02}
    return evaluate_setup(setup, runs, [0.005, 0.02, 0.08], order="forward")


def test_matched_cost_gap_is_the_matched_table_on_the_full_set():
    ev = _toy_setup()
    rows = [r for r in ev.matched_rows() if r["method"] == "BC"]
    final = 100 * ev.no_exit("CR")[0]
    expected = sum(r["remaining MACs %"] - (final if r["other method's MACs % at >= this accuracy"] is None
                                            else r["other method's MACs % at >= this accuracy"]) for r in rows) / len(rows)
    gap, lo, hi = bootstrap_weighted(matched_cost_gap(ev), len(ev.tests["BC"]), draws=300)
    assert gap == pytest.approx(expected) and lo <= gap <= hi
    other = dict(ev.tests)
    other["CR"] = CachedOutputs(ev.tests["CR"].logits, ev.tests["CR"].labels.roll(1))
    with pytest.raises(ValueError, match="same test images"):
        matched_cost_gap(SetupEvaluation(ev.setup, other, ev.macs, ev.authors, ev.curves, ev.tolerances))


def test_setup_claims_give_one_row_per_claim_with_an_interval_or_a_reason():
    ev = _toy_setup()
    claims = ev.claims("toy, synthetic", draws=300)
    assert len(claims) == 8   # claims 1 and 6 in two parts; claim 4 for 10 classes
    assert all(c.verdict in VERDICTS and (c.interval is not None or c.evidence) for c in claims)
    assert all(c.interval[0] <= c.ours <= c.interval[1] for c in claims if c.interval)
    macs, beta0 = claims[0], claims[6]
    assert macs.ours == pytest.approx(100 * ev.authors["BC"].test.mean_fraction)
    assert beta0.ours == 0 and beta0.interval is None and beta0.verdict == "supported"
    assert claims[1].paper == pytest.approx(0.1) and "search" in claims[1].paper_source   # authors' VGG C10 tolerance
    assert len(claims_table(claims)) == 8 and "toy" in conclusions({"toy": ev}, claims)
    assert ev.table_i_row()["beta"] == ev.authors["BC"].search.thresholds


def test_uneven_shares_and_largest_growth_statistics():
    uneven = _uneven_shares(torch.tensor([0, 0, 0, 1, 2]), torch.tensor([True, True, True, True, False]), 10)
    assert uneven(torch.ones(1, 5, dtype=torch.float64)).item() == 3.0   # classes with none count as one image
    sizes = torch.tensor([[3.0, 3.0], [2.0, 1.0], [2.0, 1.0], [5.0, 5.0]])
    reached = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    assert _largest_growth(sizes, reached)(torch.ones(1, 2, dtype=torch.float64)).item() == 0.0   # exit 4: nobody


def test_authors_thresholds_by_setup():
    vgg = authors_thresholds({"backbone": "vgg_small", "dataset": "cifar10"})
    assert vgg["beta"][2] == pytest.approx(0.12) and len(vgg["tau"]) == 6
    assert paper_setup_keys({"backbone": "vgg_small", "dataset": "cifar100", "pool": 2})["backbone"] == "vgg_small_x2"
    assert len(authors_thresholds({"backbone": "resnet50_cifar", "dataset": "cifar100"})["beta"]) == 4
    assert authors_thresholds({"backbone": "vgg_small", "dataset": "mnist"}) is None
