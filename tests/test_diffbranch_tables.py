"""The tables and claims of notebook 03 on small hand-made runs: Table 1 per seed, the lambda choice (with its
ties) and BranchyNet's thresholds by one validation rule (unchanged when test labels are shuffled), the gate
bias chosen on validation, Table 2, the claims with their intervals and their handling of collapsed networks,
and the written conclusions and protocol."""
import math
from dataclasses import dataclass, field

import pytest
import torch

from earlyexit.methods import differentiable_branching as db
from earlyexit.backbones import build_backbone
from earlyexit.macs import mac_table
from earlyexit.multiexit import MultiExitNet
from earlyexit.outputs import CachedOutputs
from earlyexit.train import LossSpec
from earlyexit.methods.differentiable_branching import Collapse
from earlyexit.studies import (differentiable_branching as study, differentiable_branching_claims as claims_of,
                               differentiable_branching_tables as tables)

N, C = 400, 10


@dataclass
class FakeRun:
    net: MultiExitNet
    outs: dict
    train_seconds: float = 60.0
    spec: object = None
    calls: list = field(default_factory=list)

    @property
    def macs(self):
        return mac_table(self.net)

    def outputs(self, split):
        self.calls.append(split)
        return self.outs[split]


def _net(exits):
    torch.manual_seed(0)
    return MultiExitNet(build_backbone("vgg13", num_classes=C, width=0.0625), exits, "gated" if exits else "linear",
                        features="linear", pool=1).eval()


def _outputs(k, labels, correct_share, gate_logits=None, seed=0):
    """Logits of ``k`` exits where exit j is right on the first ``correct_share[j]`` of the images."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(k, len(labels), C, generator=g)
    for j, share in enumerate(correct_share):
        right = torch.arange(len(labels)) < int(share * len(labels))
        logits[j, right, labels[right]] += 20.0
        wrong = (labels[~right] + 1) % C
        logits[j, ~right, wrong] += 20.0
    return CachedOutputs(logits, labels, gate_logits)



@dataclass
class Spec:
    init_from: object = None
    loss: object = None


SEEDS = (0, 1, 2)


def _group():
    labels = torch.arange(N) % C
    gated = _net([0, 3, 6])
    k = gated.num_exits
    both = ("val", "test")
    plain = {s: FakeRun(_net([]), {sp: _outputs(1, labels, [0.60 + 0.01 * s]) for sp in both}) for s in SEEDS}
    branchy = {s: FakeRun(_net([0, 3, 6]), {sp: _outputs(k, labels, [0.3, 0.55, 0.6, 0.65 + 0.01 * s], seed=s)
                                            for sp in both}, spec=Spec(loss=LossSpec("weighted_ce", {"weights": "uniform"})))
               for s in SEEDS}
    shut = torch.full((k, N), -10.0)
    shut[-1] = float("inf")
    half_open = shut.clone()
    half_open[0, : N // 2] = 10.0   # the first half of the images leaves at the first branch
    all_open = shut.clone()
    all_open[0] = 10.0
    proposed = {s: FakeRun(gated, {sp: _outputs(k, labels, [0.5, 0.4, 0.5, 0.70 + 0.01 * s], half_open, seed=s)
                                   for sp in both}, spec=Spec()) for s in SEEDS}
    grid = {}
    for lam, gates, acc in ((0.0, shut, [0.3, 0.4, 0.5, 0.70]), (0.1, half_open, [0.5, 0.4, 0.5, 0.70]),
                            (1.0, all_open, [0.5, 0.4, 0.5, 0.70])):
        grid[lam] = FakeRun(gated, {sp: _outputs(k, labels, acc, gates) for sp in both}, spec=Spec())
    grid[0.1] = proposed[0]                                   # the fixed lambda's grid network is seed 0's
    options = {"fair": proposed[0],
               "shut": FakeRun(gated, {sp: _outputs(k, labels, [0.3, 0.4, 0.5, 0.72], shut) for sp in both}),
               "pytorch": FakeRun(gated, {sp: _outputs(k, labels, [0.5, 0.4, 0.5, 0.60], all_open) for sp in both})}
    return study.BackboneRuns("cifar10", "vgg13", plain, branchy, proposed, grid, 0.1, options, "fair")


def _watch(g, collapsed=()):
    """A collapse watch over every gated network of ``g``: the labels in ``collapsed`` flagged."""
    return {label: Collapse({}, 4 if label in collapsed else None, []) for label in g.gated()}


def _tables(g):
    t1 = study.table1([g], "probabilities", 0.5, 0.01, bnet_shared=64, bnet_random=400)
    return t1, study.lambda_choice(g, "probabilities", 0.5, 0.01)


def test_exit_list_round_trip_and_paper_cells():
    assert study.exit_list([0.013, 0.0, 0.821, 0.166]) == "#1: 1.3%, #3: 82.1%, #4: 16.6%"
    assert study.parse_exit_list("#1: 1.3%, #3: 82.1%, #4: 16.6%") == pytest.approx({1: 0.013, 3: 0.821, 4: 0.166})
    exits = study.paper_value(table=2, backbone="vgg13", quantity="exits")
    assert len(study.parse_exit_list(exits.value)) == 4
    assert study.paper_value(table=1, dataset="mnist", backbone="vgg13", method="proposed") is None


def test_outputs_are_read_once_per_run_and_split():
    g = _group()
    for _ in range(3):
        g.outputs("grid", 0.1, "test")
        g.outputs("plain", 1, "test")
    assert g.grid[0.1].calls == ["test"] and g.plain[1].calls == ["test"]
    assert g.run("branchynet", 2) is g.branchynet[2] and g.seeds == [0, 1, 2]
    with pytest.raises(ValueError, match="kind"):
        g.run("bnet", 0)


def test_group_runs_by_name():
    g = _group()
    assert list(g.gated()) == ["λ=0.1 fair s0", "λ=0.1 fair s1", "λ=0.1 fair s2", "λ=0 fair s0", "λ=1 fair s0",
                               "λ=0.1 shut s0", "λ=0.1 pytorch s0"]    # equal configurations listed once
    lay = study.Layout({0: Spec()}, {0: Spec()}, {0: Spec()}, {0.5: Spec()})
    for i, spec in enumerate(lay.specs()):
        spec.name = f"r{i}"
    runs = {"r0": g.plain[0], "r1": g.branchynet[0], "r2": g.proposed[0], "r3": g.grid[0.1]}
    grouped = study.group_runs(runs, {("cifar10", "vgg13"): lay}, 0.1)[("cifar10", "vgg13")]
    assert grouped.grid[0.5] is g.grid[0.1] and grouped.proposed[0] is g.proposed[0] and grouped.headline_lambda == 0.1


def test_entropy_candidates_are_log_spaced_from_1e4_nats_and_end_with_final_exit_alone():
    t = db.entropy_candidates(10, 3, shared=5, random=20, seed=0)
    assert t.shape == (26, 3) and (t[-1] == -1).all()
    nats = t[:-1] * math.log(10)
    assert nats.min() >= 1e-4 * 0.999 and nats.max() <= math.log(10) * 1.001
    assert nats[0, 0] == pytest.approx(1e-4, rel=1e-3) and (nats[:5, 0] == nats[:5, 1]).all()
    assert not (nats[5:, 0] == nats[5:, 1]).all()       # the random vectors differ per exit


def test_table1_per_seed_and_summary_with_paper_numbers():
    g = _group()
    t1, _ = _tables(g)
    assert len(t1.per_seed) == 3 and t1.values("cifar10", "vgg13", "plain") == pytest.approx([0.60, 0.61, 0.62])
    row = t1.summary.iloc[0]
    assert row["plain mean"] == pytest.approx(0.61) and row["plain sd"] == pytest.approx(0.01)
    assert row["paper plain"] == pytest.approx(0.7544) and row["paper proposed"] == pytest.approx(0.8711)
    assert t1.hard[("cifar10", "vgg13", 0)].exit_counts[0] == N // 2


def test_branchynet_gets_at_least_the_proposed_budget():
    g = _group()
    assert study.candidate_budget([g]) == 7 * len(study.GATE_GRID)
    with pytest.raises(ValueError, match="fewer than"):
        study.table1([g], "probabilities", 0.5, 0.01, bnet_shared=10, bnet_random=10)


def test_lambda_choice_is_the_cheapest_within_tolerance_of_the_best_ensemble():
    g = _group()
    choice = study.lambda_choice(g, "probabilities", 0.5, 0.01)
    f = choice.frame.set_index("lambda")
    assert choice.reference == pytest.approx(f["val ensemble acc"].max())
    ok = f[f["val hard-exit acc"] >= choice.reference - 0.01 - 1e-12]
    assert choice.chosen == ok["val MACs / plain"].idxmin() and f.loc[choice.chosen, "chosen"]


def _poisoned(g):
    """The same group whose test labels are shuffled in every run."""
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(1))
    every = {id(r): r for d in (g.plain, g.branchynet, g.proposed, g.grid, g.gate_options) for r in d.values()}
    for run in every.values():
        t = run.outs["test"]
        run.outs["test"] = CachedOutputs(t.logits, t.labels[perm], t.gates)
    return g


def test_selections_do_not_read_test_labels():
    clean_t1, clean_choice = _tables(_group())
    bad = _poisoned(_group())
    bad_t1, bad_choice = _tables(bad)
    assert bad_choice.chosen == clean_choice.chosen
    clean_gates = study.choose_gate_bias(_group(), _watch(bad), "probabilities", 0.5, 0.0)
    assert study.choose_gate_bias(bad, _watch(bad), "probabilities", 0.5, 0.0).frame.equals(clean_gates.frame)
    for key, c in clean_t1.branchynet.items():
        assert bad_t1.branchynet[key].point["thresholds"] == c.point["thresholds"]
        assert bad_t1.branchynet[key].point["test_accuracy"] != c.point["test_accuracy"]   # test did change


def test_table2_and_training_minutes():
    g = _group()
    t1, choice = _tables(g)
    t2 = tables.table2(g, t1, choice, "probabilities", "final")
    assert len(t2) == 5 and t2["shares sum (%)"].iloc[:4].tolist() == pytest.approx([100.0] * 4)
    minutes = tables.training_minutes([g])
    assert len(minutes) == 13 and (minutes["minutes"] == 1.0).all()


def test_claims_over_seeds_and_the_lambda_bootstrap():
    g = _group()
    t1, choice = _tables(g)
    polarised = {s: 1.0 for s in SEEDS}
    claims = claims_of.check_claims(t1, g, choice, polarised, _watch(g), "probabilities", "test", min_lambdas=3)
    assert len(claims) == 7
    bnet, prop, drop, cut, few, polar, lam = claims
    diffs = [100 * (b - p) for b, p in zip(t1.values("cifar10", "vgg13", "BranchyNet (final exit)"),
                                            t1.values("cifar10", "vgg13", "plain"))]
    assert bnet.ours == pytest.approx(sum(diffs) / 3) and "3 training seeds" in bnet.evidence
    assert bnet.paper == pytest.approx(82.88 - 75.44) and prop.paper == pytest.approx(87.11 - 82.88)
    assert "final exits (mean of 3 seeds): plain 61.00%" in bnet.comparison
    assert drop.claimed == "less" and drop.paper == pytest.approx(87.11 - 86.70)
    assert cut.ours == pytest.approx(t1.summary.iloc[0]["proposed MACs / plain mean"])
    assert few.paper == pytest.approx(0.891) and polar.ours == 1.0 and polar.role == "our reading"
    assert lam.ours > 0 and lam.interval is not None and "not retraining" in lam.evidence and lam.role == "paper"
    for c in claims:
        assert c.statement_source and c.threshold_source and (c.role == "our reading") == c.statement_source.startswith("our reading")
    assert "75.44%" in bnet.statement_source and "2.58 points (alexnet)" in drop.threshold_source


def test_claims_a_collapse_makes_true_are_decided_on_working_networks_or_marked():
    g = _group()
    t1, choice = _tables(g)
    polarised = {0: 0.9, 1: 1.0, 2: 0.95}
    some = claims_of.check_claims(t1, g, choice, polarised, _watch(g, {"λ=0.1 fair s1"}), "probabilities", "test")
    polar = next(c for c in some if c.statement.startswith("Fig. 4"))
    assert polar.ours == pytest.approx(0.925) and "1 left out: collapsed" in polar.evidence
    everyone = _watch(g, {"λ=0.1 fair s0", "λ=0.1 fair s1", "λ=0.1 fair s2", "λ=1 fair s0"})
    marked = claims_of.check_claims(t1, g, choice, polarised, everyone, "probabilities", "test", min_lambdas=3)
    bnet, prop, drop, cut, few, polar, lam = marked
    assert bnet.role == "paper"                          # no gated network in it
    some_prop = next(c for c in some if c.statement.startswith("Table 1: proposed"))
    assert some_prop.role == "paper" and "1 left out: collapsed" in some_prop.evidence
    for c in (prop, drop, cut, few):
        assert "[collapsed networks only]" in c.statement and c.role == "sensitivity"
        assert "not counted as support" in c.evidence and not c.label.startswith(("supported", "not supported"))
    assert polar.role == "our reading" and polar.ours == pytest.approx(0.95)
    assert "[collapsed networks included]" in lam.statement and lam.role == "sensitivity"


def test_the_gate_bias_rule_skips_collapsed_options_and_prefers_the_listed_order():
    g = _group()
    choice = study.choose_gate_bias(g, _watch(g), "probabilities", 0.5, tolerance=0.5)
    assert choice.picked == "fair" and choice.agrees                   # within a wide tolerance: the first listed
    strict = study.choose_gate_bias(g, _watch(g), "probabilities", 0.5, tolerance=0.0)
    best = strict.frame.loc[strict.frame["val ensemble acc"].idxmax(), "gate bias"]
    assert strict.picked == best
    skip = study.choose_gate_bias(g, _watch(g, {"λ=0.1 fair s0"}), "probabilities", 0.5, tolerance=0.5)
    assert skip.picked == "shut" and not skip.agrees and skip.frame["bias value"].tolist()[:2] == pytest.approx(
        [-0.532047, -3.0])                                             # fair for 4 exits: logit(1 - 4^(-1/3))


def test_lambda_ties_are_shown_and_broken_by_the_smaller_lambda():
    labels = torch.arange(N) % C
    g = _group()
    same = _outputs(4, labels, [0.5, 0.4, 0.5, 0.7], torch.full((4, N), -10.0))
    net = g.grid[0.0].net
    models = {lam: (same, same, mac_table(net)) for lam in (0.0, 0.01, 0.1)}
    choice = study.select_lambda(models, "probabilities", 0.5, 0.01)
    assert choice.chosen == 0.0 and choice.ties == [0.01, 0.1]
    assert choice.frame["same validation results as"].tolist() == ["0.01, 0.1", "0, 0.1", "0, 0.01"]


def test_collapse_table_and_early_epochs():
    found = {"a": Collapse({5: 1}, 5, [6, 7]), "b": Collapse({}, None, [])}
    frame = tables.collapse_table(found)
    assert frame["collapsed"].tolist() == [True, False] and frame.iloc[0]["open gates (branch: epoch)"] == "5: 1"
    assert frame.iloc[0]["starved exits"] == "6, 7" and frame.iloc[1]["watch"] == "no collapse"
    assert [tables.early_epochs(e) for e in (1, 3, 6, 12)] == [1, 1, 2, 4]


def test_polarised_share_per_image():
    gates = torch.tensor([[0.05, 0.5], [0.95, 0.5]])
    assert tables.polarised_share(gates).tolist() == [1.0, 0.0]


def test_conclusions_and_protocol_read_every_number_from_tables():
    g = _group()
    t1, choice = _tables(g)
    found = _watch(g, {"λ=1 fair s0"})
    claims = claims_of.check_claims(t1, g, choice, {s: 1.0 for s in SEEDS}, found, "probabilities", "test")
    gates = {("cifar10", "vgg13"): study.choose_gate_bias(g, found, "probabilities", 0.5, 0.01)}
    params = dict(seeds=[0, 1, 2], optimizer="adam", schedule="constant", lr=1e-3, epochs=6, batch_size=128,
                  weight_decay=0.0, augment=False, width=0.25, bf16=True, channels_last=True,
                  headline_lambda=0.1, lambda_grid=[0.0, 0.1, 1.0], tolerance=0.01, gate_threshold=0.5,
                  bnet_shared=64, bnet_random=400, gate_bias="fair", gate_bias_options=["fair", "shut", "pytorch"],
                  reference_recipe=None)
    text = claims_of.conclusions(t1, claims, {("cifar10", "vgg13"): choice}, gates, found, params)
    assert f"{100 * t1.summary.iloc[0]['plain mean']:.2f}%" in text and f"lambda = {choice.chosen:g}" in text
    assert "1 of 7 gated networks collapsed" in text and "λ=1 fair s0: collapsed" in text
    assert "The rule picks **shut**" in text and "they disagree" in text     # 2 points above fair on validation
    proto = claims_of.protocol(params, t1, {("cifar10", "vgg13"): choice}, gates, [g], {"paper": 2})
    assert {"lambda_grid", "lambda_selection", "bnet_thresholds", "gate_bias", "collapse_watch"} <= set(proto)
    assert proto["lambda_selection"]["chosen"] == {"cifar10|vgg13": choice.chosen}
    assert proto["gate_bias"]["picked"] == {"cifar10|vgg13": "shut"} and not proto["gate_bias"]["agrees"]
    assert proto["branchynet_loss_weights"] == {"paper": ["uniform"]}
    assert all(n >= proto["bnet_thresholds"]["proposed_budget"]
               for n in proto["bnet_thresholds"]["candidates_per_network"].values())


def test_lambda_claim_allows_ties_but_not_rises():
    assert claims_of.lambda_monotone_drop([0.9, 0.9, 0.8, 0.8]) == pytest.approx(0.1)
    assert claims_of.lambda_monotone_drop([0.9, 0.7, 0.8, 0.6]) == pytest.approx(-0.1)
    assert claims_of.lambda_monotone_drop([0.9, 0.9]) == 0.0
    assert claims_of.lambda_monotone_drop([0.5, 0.5 + 1e-16]) == 0.0
