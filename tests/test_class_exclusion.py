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
                                               authors_exit_keys, exclusion_trace, exclusion_weights,
                                               fit_operating_point, greedy_search, resolve_order, search_betas,
                                               search_taus)
from earlyexit.data import tensor_batches
from earlyexit.evaluate import evaluate_policy
from earlyexit.losses import build_loss
from earlyexit.macs import mac_table
from earlyexit.multiexit import ExitOutputs, MultiExitNet
from earlyexit.outputs import CachedOutputs, collect_outputs
from earlyexit.studies.class_exclusion import (SetupEvaluation, authors_thresholds, early_exit_class_shares,
                                               early_exit_rates, evaluate_setup, front_cost, front_gap, lr_candidates,
                                               mean_remaining_classes, method_run, paper_setup_keys, seed_gap,
                                               table_i_gap)
from earlyexit.studies.class_exclusion_claims import _largest_growth, conclusions, matched_cost_gap, setup_claims
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
    # the tolerance holds on validation when a failing exit stays disabled; the authors' clip (the default)
    # keeps the first value at such an exit, which may cost validation accuracy beyond the tolerance
    bc, cr = (search(data, tolerance, macs=macs, clip_on_failure=False) for search in (search_betas, search_taus))
    for found in (bc, cr):
        assert found.val_accuracy >= found.reference_accuracy - tolerance - 1e-9
        assert found.reference_accuracy == pytest.approx(data.exit_accuracies()[-1])
        assert len(found.thresholds) == 3
    assert sorted(bc.order) == [0, 1, 2]
    assert min(search_betas(data, tolerance, macs=macs).thresholds) >= 0.01
    assert max(search_taus(data, tolerance, macs=macs).thresholds) <= 0.99
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


def test_acceptance_is_strict_and_the_clip_on_failure_is_the_default():
    data = _one_exit([True] * 9 + [False], [0, 1, 2, 0, 1, 2, 0, 1, 2, 0])   # exit 1 alone: 90 %, final 100 %
    macs = _dummy_macs(2)
    make = lambda t: SingleConfident(t)  # noqa: E731
    # a drop of exactly the tolerance is refused (the authors' loop runs while acc > reference - tolerance);
    # the exit then keeps the first value anyway (the authors' clip), or stays disabled on request
    assert greedy_search(data, make, [0.9], 1.0, 0.1, macs, clip_on_failure=False).thresholds == [1.0]
    assert greedy_search(data, make, [0.9], 1.0, 0.1, macs).thresholds == [0.9]
    assert greedy_search(data, make, [0.9], 1.0, 0.11, macs, clip_on_failure=False).thresholds == [0.9]


def test_beta_whose_first_value_fails_is_clipped_to_0_01_or_kept_at_0():
    # the early head is confidently wrong on 3 of 10 images: at beta = 0.01 every image leaves there (70 %)
    data = _one_exit([True] * 7 + [False] * 3, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    macs = _dummy_macs(2)
    assert evaluate_policy(data, ClassExclusion([0.01]), macs).accuracy == pytest.approx(0.7)
    assert search_betas(data, 0.05, macs).thresholds == [0.01]                          # the authors' clip
    assert search_betas(data, 0.05, macs, clip_on_failure=False).thresholds == [0.0]    # exclusion disabled
    assert search_betas(data, 0.5, macs).thresholds[0] > 0.01                           # a passing first value goes on
    point = fit_operating_point("BC", data, data, macs, 0.05, clip_on_failure=False)
    assert point.search.thresholds == [0.0] and point.test.accuracy == 1.0


def _trace_data() -> CachedOutputs:
    """Three early exits and 5 classes, at beta = 0.1: POS and 0 logits survive, NEG ones are excluded.
    Images 0, 4, 5, 6 leave at exit 1; image 1 has |R| 3, 2, 1 (leaves at exit 3); image 2 has 3, 3, 2 and
    image 3 has 5, 2, 2 (both go on to the final classifier)."""
    patterns = {0: ([POS] + [NEG] * 4,) * 3, 1: ([POS, 0, 0, NEG, NEG], [POS, 0, NEG, NEG, NEG], [POS] + [NEG] * 4),
                2: ([POS, 0, 0, NEG, NEG], [POS, 0, 0, NEG, NEG], [POS, 0, NEG, NEG, NEG]),
                3: ([POS, 0, 0, 0, 0], [POS, 0, NEG, NEG, NEG], [POS, 0, NEG, NEG, NEG])}
    rows = [patterns[i] for i in (0, 1, 2, 3, 0, 0, 0)]
    early = torch.tensor([[r[k] for r in rows] for k in range(3)])
    final = torch.full((1, 7, 5), NEG)
    final[0, :, 0] = POS
    return CachedOutputs(torch.cat([early, final]), torch.zeros(7, dtype=torch.long))


def test_remaining_classes_count_the_images_that_go_on():
    data, policy = _trace_data(), ClassExclusion([0.1] * 3)
    exits = evaluate_policy(data, policy, _dummy_macs(4)).exit_index
    assert exits.tolist() == [0, 2, 3, 3, 0, 0, 0]
    # past exit 1: images 1-3 (3, 3, 5 classes); past exit 2: images 1-3 (2, 3, 2); past exit 3: images 2, 3 (2, 2)
    assert mean_remaining_classes(data, policy, exits) == pytest.approx([11 / 3, 7 / 3, 2.0])
    sizes = torch.tensor([[1, 3, 3, 5, 1, 1, 1], [1, 2, 3, 2, 1, 1, 1], [1, 1, 2, 2, 1, 1, 1]], dtype=torch.float64)
    assert torch.equal(exclusion_trace(data, policy).sum(2).double(), sizes)
    ones = torch.ones(1, 7, dtype=torch.float64)
    going_on = torch.stack([(exits > k).double() for k in range(3)])
    assert _largest_growth(sizes, going_on)(ones).item() == pytest.approx(2 - 7 / 3)   # falls: 11/3, 7/3, 2
    # counting the images that leave at each exit (|R| = 1 there) as well makes exit 1 look like a rise
    reached = torch.stack([(exits >= k).double() for k in range(3)])
    assert _largest_growth(sizes, reached)(ones).item() == pytest.approx(7 / 3 - 15 / 7)
    nobody = torch.zeros(3, 7, dtype=torch.float64)
    assert _largest_growth(sizes, nobody)(ones).item() == -math.inf


def test_operating_point_and_analysis_helpers():
    data = _learned_like()
    macs = _dummy_macs(4)
    point = fit_operating_point("BC", data, data, macs, 0.02)
    shares = early_exit_class_shares(point.test.prediction, data.labels, point.test.exit_index, 4, 10)
    assert shares["true"].sum().item() == pytest.approx(100) and shares["predicted"].sum().item() == pytest.approx(100)
    rates = early_exit_rates(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]), torch.tensor([0, 3, 3, 1]), 4, 3)
    assert rates["true"].tolist() == pytest.approx([100.0, 100 / 3, 0.0])   # class 1: one of its 3 images leaves early
    assert rates["predicted"].tolist() == pytest.approx([50.0, 50.0, 0.0])
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


def _asymmetric_gap(bc_grid, cr_front):
    """The former statistic: BC's grid points each charged in full, CR read at its cheapest point reaching them."""
    return sum(c - front_cost(cr_front, a) for c, a in bc_grid) / len(bc_grid)


def test_symmetric_front_gap_on_hand_made_fronts_where_the_asymmetric_one_gets_the_sign_wrong():
    # BC's 0.84 point is dominated by its own 0.85 point (cheaper and more accurate), as on seed 0 of the cpu run
    bc_grid, bc_final = [(0.80, 0.85), (0.95, 0.84)], (1.0, 0.86)
    cr = [(0.82, 0.85), (0.78, 0.838), (1.0, 0.86)]
    bc = bc_grid + [bc_final]
    assert _asymmetric_gap(bc_grid, cr) == pytest.approx(0.055)   # says BC is costlier ...
    # ... but at every accuracy both span (0.84-0.86) BC's cheapest point costs no more than CR's:
    # 0.80 vs 0.82 on (0.84, 0.85], 1.0 vs 1.0 on (0.85, 0.86]
    assert front_gap(bc, cr) == pytest.approx(-0.01)
    assert front_gap(cr, bc) == pytest.approx(0.01)                                  # symmetric
    assert front_gap(bc + [(0.99, 0.845)], cr) == pytest.approx(-0.01)               # a dominated point costs nothing
    # fronts sharing one accuracy at most: the gap at the highest accuracy both reach
    assert front_gap([(0.5, 0.80), (0.9, 0.90)], [(0.7, 0.95), (1.0, 0.97)]) == pytest.approx(0.9 - 0.7)
    assert front_cost(cr, 0.99) == math.inf


def test_matched_cost_gap_resamples_the_seed_gap():
    ev = _toy_setup()
    full = matched_cost_gap(ev)(torch.ones(1, len(ev.tests["BC"]), dtype=torch.float64)).item()
    assert full == pytest.approx(seed_gap(ev)) == pytest.approx(100 * front_gap(ev.front("BC"), ev.front("CR")))
    gap, lo, hi = bootstrap_weighted(matched_cost_gap(ev), len(ev.tests["BC"]), draws=200)
    assert gap == pytest.approx(full) and lo <= gap <= hi
    rows = ev.matched_rows()
    assert len(rows) == 2 * len(ev.tolerances) and {"cheapest BC MACs % at >= this accuracy"} <= set(rows[0])
    other = dict(ev.tests)
    other["CR"] = CachedOutputs(ev.tests["CR"].logits, ev.tests["CR"].labels.roll(1))
    with pytest.raises(ValueError, match="same test images"):
        matched_cost_gap(SetupEvaluation(ev.setup, other, ev.macs, ev.authors, ev.curves, ev.tolerances))


def test_setup_claims_give_one_row_per_claim_with_sources_roles_and_an_interval_or_a_reason():
    ev = _toy_setup()
    claims = setup_claims([ev], "toy, synthetic", draws=300)
    assert len(claims) == 8   # Table I and matched accuracy for claim 2; claim 6 in two parts; Fig. 5 descriptive
    assert all(c.verdict in VERDICTS and (c.interval is not None or c.evidence) for c in claims)
    assert all(c.interval[0] <= c.ours <= c.interval[1] for c in claims if c.interval)
    assert all(c.statement_source and c.threshold_source for c in claims)
    assert [c.role for c in claims].count("paper") == 3 and claims[3].role == "sensitivity"
    assert all(c.statement_source.startswith("our reading") == (c.role == "our reading") for c in claims)
    macs, drop, table_i, matched, beta0 = claims[0], claims[1], claims[2], claims[3], claims[6]
    assert macs.ours == pytest.approx(100 * ev.authors["BC"].test.mean_fraction) and "bootstrap" in macs.evidence
    assert table_i.ours == pytest.approx(table_i_gap(ev)) and matched.ours == pytest.approx(seed_gap(ev))
    assert beta0.ours == 0 and beta0.interval is None and beta0.verdict == "supported"
    assert drop.than == pytest.approx(100 * 0.01) and drop.role == "our reading"   # the tolerance, no allowance
    assert drop.paper == pytest.approx(0.1) and "search" in drop.paper_source       # authors' VGG C10 tolerance
    assert len(claims_table(claims)) == 8 and "toy" in conclusions({"toy": [ev]}, claims)
    assert ev.table_i_row()["beta"] == ev.authors["BC"].search.thresholds


def test_authors_thresholds_by_setup():
    vgg = authors_thresholds({"backbone": "vgg_small", "dataset": "cifar10"})
    assert vgg["beta"][2] == pytest.approx(0.12) and len(vgg["tau"]) == 6
    assert paper_setup_keys({"backbone": "vgg_small", "dataset": "cifar100", "pool": 2})["backbone"] == "vgg_small_x2"
    assert len(authors_thresholds({"backbone": "resnet50_cifar", "dataset": "cifar100"})["beta"]) == 4
    assert authors_thresholds({"backbone": "vgg_small", "dataset": "mnist"}) is None
