"""The tables and claims of notebook 03 on small hand-made runs: Table 1's columns and lambda choice,
Table 2's hard exits, the five claims with their intervals, the gate watch and the written conclusions."""
from dataclasses import dataclass, field

import pandas as pd
import pytest
import torch

from earlyexit import diffbranch as db
from earlyexit.backbones import build_backbone
from earlyexit.macs import mac_table
from earlyexit.multiexit import MultiExitNet
from earlyexit.outputs import CachedOutputs
from earlyexit.plans.differentiable_branching import group_runs, lambda_method, run_name

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


def _group():
    labels = torch.arange(N) % C
    gated = _net([0, 3, 6])
    k = gated.num_exits
    plain = FakeRun(_net([]), {s: _outputs(1, labels, [0.60]) for s in ("val", "test")})
    branchy = FakeRun(_net([0, 3, 6]), {s: _outputs(k, labels, [0.3, 0.4, 0.5, 0.65]) for s in ("val", "test")})
    shut = torch.full((k, N), -10.0)
    shut[-1] = float("inf")
    half_open = shut.clone()
    half_open[0, : N // 2] = 10.0   # the first half of the images leaves at the first branch
    proposed = {}
    for lam, gates, acc in ((0.0, shut, [0.3, 0.4, 0.5, 0.70]), (0.1, half_open, [0.5, 0.4, 0.5, 0.68])):
        proposed[lam] = FakeRun(gated, {s: _outputs(k, labels, acc, gates) for s in ("val", "test")})
    return db.BackboneRuns("cifar10", "vgg13", plain, branchy, proposed)


def test_exit_list_round_trip_and_paper_cells():
    assert db.exit_list([0.013, 0.0, 0.821, 0.166]) == "#1: 1.3%, #3: 82.1%, #4: 16.6%"
    assert db.parse_exit_list("#1: 1.3%, #3: 82.1%, #4: 16.6%") == pytest.approx({1: 0.013, 3: 0.821, 4: 0.166})
    exits = db.paper_value(table=2, backbone="vgg13", quantity="exits")
    assert len(db.parse_exit_list(exits.value)) == 4
    assert db.paper_value(table=1, dataset="mnist", backbone="vgg13", method="proposed") is None


def test_outputs_are_read_once_per_run_and_split():
    g = _group()
    for _ in range(3):
        g.outputs(0.1, "test")
        g.outputs("plain", "test")
    assert g.proposed[0.1].calls == ["test"] and g.plain.calls == ["test"]
    assert g.run("branchynet") is g.branchynet


def test_group_runs_by_name():
    g = _group()
    runs = {run_name("cifar10", "vgg13", "plain"): g.plain, run_name("cifar10", "vgg13", "branchynet"): g.branchynet,
            **{run_name("cifar10", "vgg13", lambda_method(lam)): r for lam, r in g.proposed.items()}}
    grouped = group_runs(runs, ["cifar10"], ["vgg13"], [0.0, 0.1])
    assert grouped[("cifar10", "vgg13")].proposed[0.1] is g.proposed[0.1]


def test_table1_columns_lambda_choice_and_paper_numbers():
    g = _group()
    t1 = db.table1([g], "probabilities", tolerance=0.01)
    row = t1.frame.iloc[0]
    assert row["plain"] == pytest.approx(0.60) and row["BranchyNet (final exit)"] == pytest.approx(0.65)
    ens = {lam: db.ensemble_accuracy(g.outputs(lam, "val")) for lam in g.proposed}
    assert t1.chosen_lambda[("cifar10", "vgg13")] == max(ens, key=ens.get)
    assert row["paper plain"] == pytest.approx(0.7544) and row["paper proposed"] == pytest.approx(0.8711)
    assert row["proposed (ensemble)"] == row[f"ens. lambda={t1.chosen_lambda[('cifar10', 'vgg13')]:g}"]


def test_table2_hard_exits_and_training_minutes():
    g = _group()
    t1 = db.table1([g], "probabilities", 0.01)
    t2 = db.table2([g], t1.chosen_lambda, 0.5, "probabilities", "final")
    shut, half = t2.hard[("vgg13", 0.0)], t2.hard[("vgg13", 0.1)]
    assert shut.exit_counts[-1] == N and half.exit_counts[0] == N // 2
    assert half.mean_fraction < shut.mean_fraction
    assert t2.frame["shares sum (%)"].tolist() == pytest.approx([100.0, 100.0])
    minutes = db.training_minutes([g])
    assert list(minutes.columns) == ["plain", "branchynet", "lam0", "lam0.1"] and (minutes == 1.0).all().all()


def test_claims_intervals_and_paper_values():
    g = _group()
    t1 = db.table1([g], "probabilities", 0.01)
    t2 = db.table2([g], t1.chosen_lambda, 0.5, "probabilities", "final")
    claims = db.check_claims(t1, t2, [g], "probabilities", 0.5, "test")
    assert len(claims) == 6
    order, drop, cut, few, polar, lam = claims
    row = t1.frame.iloc[0]
    branchy = row["BranchyNet (final exit)"]
    step = min(branchy - row["plain"], row["proposed (ensemble)"] - branchy)
    assert order.ours == pytest.approx(100 * step) and order.interval is None and "one seed" in order.evidence
    assert order.paper == pytest.approx(min(82.88 - 75.44, 87.11 - 82.88))
    chosen = t1.chosen_lambda[("cifar10", "vgg13")]
    hard = t2.hard[("vgg13", chosen)]
    ens = db.ensemble_accuracy(g.outputs(chosen, "test"))
    assert drop.ours == pytest.approx(100 * (ens - hard.accuracy)) and drop.interval[0] <= drop.ours <= drop.interval[1]
    assert drop.paper == pytest.approx(87.11 - 86.70) and drop.claimed == "less"
    assert cut.ours == pytest.approx(hard.mean_fraction)
    assert few.ours == pytest.approx(sum(sorted(hard.exit_shares)[-2:])) and few.paper == pytest.approx(0.891)
    assert polar.ours == pytest.approx(1.0) and polar.verdict == "supported"   # gate logits +-10
    assert lam.ours > 0 and lam.verdict == "inconclusive at this budget" and lam.interval is None  # one seed


def test_gate_collapse_states():
    rows = [{"backbone": "a", "lambda": lam, "epoch": e, "branch": b, "mean gate": v}
            for lam, gates in ((0.0, [0.01, 0.02]), (0.1, [0.97, 0.5]), (1.0, [0.2, 0.6]))
            for e in (1, 2) for b, v in enumerate(gates, 1)]
    states = db.gate_collapse(pd.DataFrame(rows))["state"].tolist()
    assert states == ["all shut (< 0.05)", "first gate open (> 0.95)", "no collapse"]


def test_polarised_share_per_image():
    gates = torch.tensor([[0.05, 0.5], [0.95, 0.5]])
    assert db.polarised_share(gates).tolist() == [1.0, 0.0]


def test_conclusions_read_every_number_from_tables():
    g = _group()
    t1 = db.table1([g], "probabilities", 0.01)
    t2 = db.table2([g], t1.chosen_lambda, 0.5, "probabilities", "final")
    claims = db.check_claims(t1, t2, [g], "probabilities", 0.5, "test")
    history = pd.DataFrame([{"backbone": "vgg13", "lambda": 0.0, "epoch": 1, "branch": 1, "mean gate": 0.01}])
    text = db.conclusions(t1, t2, claims, db.gate_collapse(history), 0.125, 2)
    assert f"{100 * t1.frame.iloc[0]['plain']:.2f}%" in text
    assert "1 of 1 models: all shut" in text and "supported" in text


def test_lambda_claim_allows_ties_but_not_rises():
    assert db.lambda_monotone_drop([0.9, 0.9, 0.8, 0.8]) == pytest.approx(0.1)
    assert db.lambda_monotone_drop([0.9, 0.7, 0.8, 0.6]) == pytest.approx(-0.1)
    assert db.lambda_monotone_drop([0.9, 0.9]) == 0.0
