"""EENet scheduler and its budgeted baselines (``methods.eenet``) and notebook 04's study of them
(``studies.eenet``) on small synthetic multi-exit outputs."""
import math

import pytest
import torch

from earlyexit.studies.claims import VERDICTS
from earlyexit.methods.eenet import (EENetConfig, EENetPolicy, UtilityScheduler, _assignment, auroc, budget_grid,
                                    correctness_auroc, exit_features, fit_eenet, quantile_thresholds)
from earlyexit.methods.eenet_baselines import fit_geometric, geometric_shares
from earlyexit.studies.eenet import (BASELINES, PAPER_BASELINES, SEARCHED_BASELINES, _weighted_auroc, auroc_gains,
                                     compare_at_budgets, exit_share_shift, patience_points, utility_weights,
                                     versus_best_baseline)
from earlyexit.studies.eenet_tables import conclusions
from earlyexit.evaluate import evaluate_policy
from earlyexit.macs import MacTable
from earlyexit.outputs import CachedOutputs, collect_outputs
from earlyexit.policies import Patience
from earlyexit.train import ModelSpec, build_model

FAST = EENetConfig(epochs=60, patience=30)


def synthetic(n: int, seed: int, k: int = 3, c: int = 10) -> CachedOutputs:
    """Later exits are more accurate; a per-sample difficulty is shared by all exits."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    hard = torch.rand(n, generator=g)
    logits = torch.randn(k, n, c, generator=g)
    for j in range(k):
        logits[j, torch.arange(n), y] += (1.0 + 1.5 * j) * (1.6 - hard) * 2
    return CachedOutputs(logits, y)


class FakeRun:
    """Stands in for a TrainedRun and records which splits were read."""

    macs = MacTable([30, 30, 40], [0, 0, 0], [0, 1, 2], 100)

    def __init__(self):
        self.read = []

    def outputs(self, split, features=False):
        self.read.append(split)
        return synthetic({"val": 800, "test": 1000}[split], {"val": 0, "test": 1}[split])


def test_features_are_probabilities_max_and_entropy_confidence():
    z = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])
    f = exit_features(z)
    assert f.shape == (2, 6)
    assert torch.allclose(f[:, :4].sum(1), torch.ones(2))
    assert torch.allclose(f[:, 4], torch.tensor([0.25, 1.0]))
    assert torch.allclose(f[:, 5], torch.tensor([0.0, 1.0]), atol=1e-5)  # uniform -> 0, certain -> 1 (no log 0)


def test_scheduler_input_sizes_follow_the_released_code():
    s = UtilityScheduler(3, 10)
    assert [m.in_features for m in s.score] == [12, 13, 14]
    assert [m[0].out_features for m in s.assign] == [6, 6, 7]  # the shipped CIFAR-10 pickle: 12->6, 13->6, 14->7
    assert all(m.bias is None for m in s.score)


def test_assignment_options():
    a = torch.randn(50, 4) * 5
    for kind in ("softmax_logits", "softmax_sigmoid", "sequential"):
        pi, log_pi = _assignment(a, kind)
        assert torch.allclose(pi.sum(1), torch.ones(50), atol=1e-6)
        assert torch.allclose(log_pi.exp(), pi, atol=1e-6)
    capped, _ = _assignment(torch.tensor([[50.0, -50.0, -50.0]]), "softmax_sigmoid")
    assert capped.max() <= math.e / (math.e + 2) + 1e-6  # the released form cannot exceed 0.576 for K=3
    with pytest.raises(ValueError):
        EENetConfig(assignment="bogus")


def test_quantile_thresholds_hand_each_exit_its_share():
    scores = torch.rand(3, 1000, generator=torch.Generator().manual_seed(0))
    t = quantile_thresholds(scores, [0.5, 0.3, 0.2])
    remaining, counts = torch.ones(1000, dtype=torch.bool), []
    for k in range(2):
        out = remaining & (scores[k] >= t[k])
        counts.append(int(out.sum()))
        remaining &= ~out
    assert counts == [500, 300]
    assert quantile_thresholds(scores, [0.0, 0.5, 0.5])[0] == math.inf


def test_geometric_shares_meet_the_budget_exactly():
    costs = [0.3, 0.6, 1.0]
    for budget in (0.35, 0.6, 0.95):
        s = geometric_shares(costs, budget)
        assert sum(a * b for a, b in zip(s, costs)) == pytest.approx(budget, abs=1e-9)
        assert s[1] / s[0] == pytest.approx(s[2] / s[1], rel=1e-6)
    with pytest.raises(ValueError):
        geometric_shares(costs, 1.2)


def test_fitting_reads_validation_only_and_meets_the_budget():
    run = FakeRun()
    budget = budget_grid(run, 3)[0]
    fit = fit_eenet(run, budget, FAST, seeds=(0, 1))
    base = fit_geometric(run, budget, "entropy")
    assert set(run.read) == {"val"}
    assert abs(fit.expected_cost - budget) / budget <= 0.1
    assert abs(fit.val_cost - fit.expected_cost) < 0.01  # the quantile thresholds realise the planned shares
    assert abs(base.val_cost - budget) < 0.01
    assert len(fit.attempts) == 2 and any(a["accepted"] for a in fit.attempts)


def test_fit_is_deterministic_given_seeds():
    a, b = (fit_eenet(FakeRun(), 0.6, FAST, seeds=(3,)) for _ in range(2))
    assert a.policy.thresholds == b.policy.thresholds and a.val_accuracy == b.val_accuracy


def test_policy_matches_first_exit_above_threshold():
    run = FakeRun()
    fit = fit_eenet(run, 0.6, FAST, seeds=(0,))
    test = run.outputs("test")
    q = fit.policy.scores(test)
    above = torch.cat([q[:, :-1] >= torch.tensor(fit.policy.thresholds), torch.ones(len(test), 1, dtype=torch.bool)], 1)
    expected = above.float().argmax(1)
    assert torch.equal(evaluate_policy(test, fit.policy, run.macs).exit_index, expected)


def test_real_early_exit_agrees_with_offline_for_eenet():
    torch.manual_seed(0)
    net = build_model(ModelSpec("resnet18_cifar", 0.125, (2, 4)), 10, 3, 16).eval()
    x = torch.randn(64, 3, 16, 16)
    outputs = collect_outputs(net, [(x, torch.zeros(64, dtype=torch.long))])
    scheduler = UtilityScheduler(3, 10)
    q = EENetPolicy(scheduler, (math.inf, math.inf)).scores(outputs)
    policy = EENetPolicy(scheduler, (q[:, 0].median().item(), q[:, 1].median().item()))
    from earlyexit.macs import mac_table
    macs = mac_table(net)
    offline = evaluate_policy(outputs, policy, macs)
    real = net.early_exit(x, policy, macs.exit_macs)
    assert torch.equal(real.exit_index, offline.exit_index) and torch.equal(real.prediction, offline.prediction)
    assert 0 < (offline.exit_index == 0).sum() < 64


def test_auroc_against_pairs():
    score = torch.tensor([0.1, 0.4, 0.4, 0.8, 0.3, 0.9])
    pos = torch.tensor([0, 1, 0, 1, 0, 1])
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, pa in zip(score, pos) if pa
             for b, pb in zip(score, pos) if not pb]
    assert auroc(score, pos) == pytest.approx(sum(pairs) / len(pairs))
    assert math.isnan(auroc(score, torch.ones(6)))


def test_compare_at_budgets_and_auroc_rows():
    run = FakeRun()
    rows, fits = compare_at_budgets(run, [0.6], FAST, seeds=(0,))
    assert {r["method"] for r in rows} == {"EENet", *BASELINES}
    assert all(abs(r["cost_error"]) < 0.1 for r in rows if r["method"] not in (*SEARCHED_BASELINES, "patience (PABEE)"))
    for r in rows:   # searched and patience spend at most the budget on validation, the split they were chosen on
        assert r["method"] not in (*SEARCHED_BASELINES, "patience (PABEE)") or r["val_cost"] <= 0.6 + 1e-9
    table = correctness_auroc(fits[("EENet", 0.6)].policy, run.outputs("test"))
    assert [r["exit"] for r in table] == [1, 2, 3]
    assert all(0.5 < r[s] <= 1 for r in table[:2] for s in ("utility score", "max probability", "entropy confidence"))
    assert table[2]["accuracy"] == 1.0 and math.isnan(table[2]["utility score"])  # no wrong predictions: undefined
    assert evaluate_policy(run.outputs("test"), Patience(2), run.macs).exit_counts[0] == 0


@pytest.fixture(scope="module")
def two_budgets():
    run = FakeRun()
    rows, fits = compare_at_budgets(run, [0.45, 0.75], FAST, seeds=(0,))
    return run, rows, fits


def test_each_fit_records_the_splits_it_read(two_budgets):
    _, _, fits = two_budgets
    assert len(fits) == 2 * (1 + len(BASELINES)) and all(f.splits_read == ("val",) for f in fits.values())


def test_weighted_auroc_is_auroc_of_the_resampled_data():
    g = torch.Generator().manual_seed(0)
    score, positive = torch.randint(0, 5, (40,), generator=g).float(), torch.rand(40, generator=g) < 0.5
    assert _weighted_auroc(score, positive, torch.ones(40, 1)).item() == pytest.approx(auroc(score, positive))
    counts = torch.randint(0, 3, (40, 5), generator=g)
    repeated = [auroc(score.repeat_interleave(c), positive.repeat_interleave(c)) for c in counts.T]
    assert _weighted_auroc(score, positive, counts.float()).tolist() == pytest.approx(repeated)


def test_versus_best_baseline_picks_the_better_baseline_on_validation_and_pairs_the_images(two_budgets):
    run, rows, fits = two_budgets
    versus = versus_best_baseline(run, rows, fits, draws=300)
    assert [r["budget"] for r in versus.table] == [0.45, 0.75]
    for r in versus.table:
        acc = {x["method"]: x["test_accuracy"] for x in rows if x["budget"] == r["budget"]}
        val = {x["method"]: x["val_accuracy"] for x in rows if x["budget"] == r["budget"]}
        assert r["baseline val acc"] == max(val[m] for m in PAPER_BASELINES if m in val) == val[r["best baseline"]]
        assert r["baseline acc"] == acc[r["best baseline"]]
        assert r["EENet - baseline (points)"] == pytest.approx(100 * (acc["EENet"] - r["baseline acc"]))
        assert r["95% interval low"] <= r["EENet - baseline (points)"] <= r["95% interval high"]
    assert versus.eenet_correct.shape == (2, 1000)
    mean, lo, hi = versus.gain(draws=300)
    assert mean == pytest.approx(sum(r["EENet - baseline (points)"] for r in versus.table) / 2)
    assert lo <= mean <= hi
    assert versus.gain([0.45], draws=300)[0] == pytest.approx(versus.table[0]["EENet - baseline (points)"])
    with pytest.raises(ValueError):
        versus.gain([0.1])


def test_auroc_gains_per_exit_leave_out_undefined_exits(two_budgets):
    run, _, fits = two_budgets
    policy, test = fits[("EENet", 0.45)].policy, run.outputs("test")
    rows = correctness_auroc(policy, test)
    gains = auroc_gains(policy, test, [0, 1, 2], draws=300)
    assert sorted(gains) == [0, 1]   # exit 3 is always right on this data: no AUROC
    for k, (point, lo, hi) in gains.items():
        r = rows[k]
        assert point == pytest.approx(r["utility score"] - max(r["max probability"], r["entropy confidence"]))
        assert lo <= point <= hi
    assert list(auroc_gains(policy, test, [1], draws=50)) == [1] and auroc_gains(policy, test, [2], draws=50) == {}


def test_exit_share_shift_and_patience_points(two_budgets):
    run, rows, fits = two_budgets
    shares = {r["budget"]: r["test_exit_shares"] for r in rows if r["method"] == "EENet"}
    shift, lo, hi = exit_share_shift(run, fits, draws=300)
    assert shift == pytest.approx(shares[0.75][-1] - shares[0.45][-1]) and lo <= shift <= hi
    assert exit_share_shift(run, fits, at_exit=0, draws=300)[0] == pytest.approx(shares[0.75][0] - shares[0.45][0])
    points = patience_points(run)
    assert [p["method"] for p in points] == ["patience 1 (PABEE)", "patience 2 (PABEE)"]
    assert points[0]["exit_shares"] == [1.0, 0.0, 0.0] and points[0]["fraction_of_backbone"] == pytest.approx(0.3)


def test_utility_weights_split_the_score_weights():
    scheduler = UtilityScheduler(3, 10)
    rows = utility_weights(EENetPolicy(scheduler, (0.5, 0.5)))
    w = scheduler.score[2].weight[0]
    assert rows[2]["v max prob"] == w[10].item() and rows[2]["v entropy conf"] == w[11].item()
    assert [len(r["v earlier scores"]) for r in rows] == [0, 1, 2]
    assert rows[0]["max |w class|"] == scheduler.score[0].weight[0, :10].abs().max().item()


def test_conclusions_quote_the_verdicts_and_the_metrics():
    from earlyexit.studies.eenet import across_networks, study_network
    from earlyexit.studies.eenet_tables import network_claims, network_metrics
    run = FakeRun()
    studies = {s: study_network(run, [0.45, 0.75], FAST, (0,), draws=50, auroc_draws=20, baseline_vectors=50)
               for s in (0, 1)}
    evidence = across_networks({s: st.evidence for s, st in studies.items()})
    claims = network_claims(evidence, evidence, FAST, "toy", "toy, every exit", 12, 2)
    sweep = {"chosen": {"optimizer": "adam", "lr": 3e-5, "epochs": 1000}, "summary": [1, 2], "seeds": [0, 1, 2],
             "budgets": [0.45, 0.75], "networks": ["seed 0", "seed 1"]}
    metrics = {"model": "tiny x1", "backbone_MMACs": 1.0, "exit_fractions": run.macs.exit_fractions, "data": "synthetic",
               "headline_exits": [1, 2, 3], "headline_exit_fractions": run.macs.exit_fractions,
               "headline_exit_rule": "every exit of the network",
               "scheduler_seeds": [0], "budgets": [0.45, 0.75], "scheduler_config": vars(FAST), "val_images": 800,
               "test_images": 1000, "recipe_sweep": sweep, "scheduler_macs": [10, 20, 30], "scheduler_macs_fraction": 3e-7,
               "evidence": evidence, "evidence_all_exits": evidence,
               "networks": {str(s): {"headline": network_metrics(st)} for s, st in studies.items()}}
    text = conclusions(metrics, claims)
    assert f"Budget adherence: {claims['cost_error_pct'].label}" in text
    assert f"the paper's baselines: {claims['gain_all'].label}" in text
    assert "searched baselines added to the pool" in text and "every exit of the network:" in text
    assert "(our reading row)" in text or "inconclusive" in text   # tight budgets: an our-reading row
    assert "exit 3 (seed(s) 0, 1)" in text   # always right at exit 3: left out and said so
    assert "adam, lr 3e-05, 1000 epochs" in text and "3.0e-07 of the backbone" in text
    assert "0.934" in text and "released" in text  # the released scheduler file's weight, labelled as such


# ---------------------------------------------------------------- recipe sweep, stacked fits, poisoned test labels
from earlyexit.methods.eenet import (Recipe, fit_eenet_budgets, recipe_grid, scheduler_macs,  # noqa: E402
                                    sweep_budgets, sweep_recipes)
from earlyexit.studies.eenet import across_networks  # noqa: E402
from earlyexit.studies.eenet_tables import network_claims  # noqa: E402

TINY = EENetConfig(epochs=20, patience=10)


class PoisonedRun(FakeRun):
    """The same network with its test labels shuffled: a selection that read test would move."""

    def outputs(self, split, features=False):
        out = super().outputs(split, features)
        if split == "test":
            g = torch.Generator().manual_seed(7)
            out = CachedOutputs(out.logits, out.labels[torch.randperm(len(out.labels), generator=g)])
        return out


def _selections(run):
    budgets = [0.45, 0.75]
    sweep = sweep_recipes(run, [0.6], recipe_grid(["adam", "adamw"], [1e-3, 1e-2], [10, 20]), TINY, seeds=(0, 1))
    cfg = sweep.config(TINY)
    rows, fits = compare_at_budgets(run, budgets, cfg, seeds=(0, 1))
    versus = versus_best_baseline(run, rows, fits, draws=50)
    searched = versus_best_baseline(run, rows, fits, BASELINES, draws=50)
    return (sweep.chosen, [r["best baseline"] for r in versus.table + searched.table],
            {k: getattr(f.policy, "thresholds", f.policy) for k, f in fits.items()}, sweep.rows)


def test_selections_do_not_move_when_test_labels_are_shuffled():
    clean, poisoned = _selections(FakeRun()), _selections(PoisonedRun())
    assert clean[0] == poisoned[0]                 # scheduler recipe
    assert clean[1] == poisoned[1]                 # baseline chosen at each budget
    assert clean[2] == poisoned[2]                 # every fitted threshold (patience value), EENet's and the baselines'
    assert clean[3] == poisoned[3]                 # every fit of the sweep


def test_recipe_sweep_covers_the_grid_and_chooses_by_the_stated_rule():
    grid = recipe_grid(["adam", "adamw"], [1e-3, 1e-2], [10, 20])
    assert len(grid) == 8 and Recipe("adam", 1e-3, 10) in grid
    sweep = sweep_recipes(FakeRun(), [0.6], grid, TINY, seeds=(0, 1, 2))
    assert len(sweep.rows) == 8 * 3 and {r["seed"] for r in sweep.rows} == {0, 1, 2}
    key = lambda r: (r["in budget"], r["mean val accuracy in budget"] if r["in budget"] else -1.0)  # noqa: E731
    assert key(next(r for r in sweep.summary if r["recipe"] == sweep.chosen)) == max(map(key, sweep.summary))
    assert sweep.protocol()["chosen_on"] == "validation" and sweep.config(TINY).lr == sweep.chosen.lr
    assert sweep_budgets([0.1, 0.2, 0.3, 0.4, 0.5], 1) == [0.3] and len(sweep_budgets([0.1, 0.2, 0.3], 2)) == 2


def test_a_short_fit_is_the_start_of_a_long_one():
    """Recipes differing only in epochs share one pass: the 10-epoch rows equal a 10-epoch fit alone."""
    run = FakeRun()
    sweep = sweep_recipes(run, [0.6], [Recipe("adamw", 1e-2, 10), Recipe("adamw", 1e-2, 20)], TINY, seeds=(0,))
    alone = fit_eenet(run, 0.6, EENetConfig(epochs=10, patience=10, optimizer="adamw", lr=1e-2), seeds=(0,))
    short = next(r for r in sweep.rows if r["epochs"] == 10)
    assert short["expected_cost"] == pytest.approx(alone.expected_cost, abs=1e-5)
    assert short["epochs_run"] == alone.attempts[0]["epochs_run"]


def test_detaching_earlier_scores_changes_only_the_gradient():
    s = UtilityScheduler(3, 10)
    x = torch.randn(3, 8, 12, requires_grad=True)
    assert torch.equal(s(x, True)[0], s(x, False)[0])
    s(x, True)[0][:, 2].sum().backward()
    detached = s.score[0].weight.grad
    assert detached is None or torch.count_nonzero(detached) == 0  # exit 3's score does not train exit 1's
    s.zero_grad()
    s(x, False)[0][:, 2].sum().backward()
    assert torch.count_nonzero(s.score[0].weight.grad) > 0
    assert EENetConfig().detach_previous is True


def test_fit_budgets_at_once_and_optimizer_checked():
    fits = fit_eenet_budgets(FakeRun(), [0.45, 0.75], TINY, seeds=(0, 1))
    assert sorted(fits) == [0.45, 0.75] and all(len(f.attempts) == 2 for f in fits.values())
    with pytest.raises(ValueError, match="optimizer"):
        EENetConfig(optimizer="sgd")


def test_scheduler_macs_are_the_linear_layers():
    macs = scheduler_macs(3, 10)
    assert macs[0] == 12 + 12 * 6 + 6 and macs == sorted(macs) and len(macs) == 3


def _evidence(gains=(1.0, 2.0, 3.0), auroc_exit_2=0.01):
    return {s: {"gain_all": (g, g - 1, g + 1), "gain_tight": (g, g - 1, g + 1), "gain_all_searched": (-g, -g - 1, -g + 1),
                "auroc_exit_1": (0.01, 0.0, 0.02), "auroc_exit_2": (auroc_exit_2 if s else math.nan,) * 3,
                "last_exit_shift": (0.1, 0.05, 0.15), "cost_error_pct": (2.0, 2.0, 2.0),
                "fits_reading_other_splits": (0, 0, 0)} for s, g in enumerate(gains)}


def test_across_networks_gives_a_seed_interval_and_claims():
    ev = across_networks(_evidence())
    assert ev["gain_all"]["mean"] == pytest.approx(2.0) and ev["gain_all"]["low"] < 2.0 < ev["gain_all"]["high"]
    assert ev["gain_all"]["per_seed"]["1"]["value"] == 2.0
    assert ev["auroc_exit_2"]["mean"] is None and ev["auroc_exit_2"]["undefined_on"] == ["0"]
    assert ev["auroc_exit_2"]["per_seed"]["0"]["value"] is None   # no NaN in the metrics file
    claims = network_claims(ev, None, EENetConfig(), "toy", "", 12, 2)
    assert claims["cost_error_pct"].verdict == VERDICTS[0] and claims["fits_reading_other_splits"].verdict == VERDICTS[0]
    assert claims["gain_all"].interval == (ev["gain_all"]["low"], ev["gain_all"]["high"])
    assert "auroc_exit_1" in claims and "auroc_exit_2" not in claims   # undefined on a seed: left out ...
    assert "left out: exit 2" in claims["auroc_exit_1"].evidence and "seed(s) 0" in claims["auroc_exit_1"].evidence
    assert "gain_all_all_exits" not in claims   # the headline used every exit: no all-exit row
    named = network_claims(ev, None, EENetConfig(), "toy", "", 12, 2, network_exits=[3, 10])["auroc_exit_1"]
    assert "(exit 1 (network exit 3))" in named.statement and "left out: exit 2 (network exit 10)" in named.evidence


def test_every_claim_says_where_it_comes_from_and_its_role():
    ev = across_networks(_evidence((2.0, 2.5, 3.0)))
    claims = network_claims(ev, ev, EENetConfig(), "toy", "toy, all exits", 12, 2)
    roles = {name: c.role for name, c in claims.items()}
    assert roles == {"cost_error_pct": "paper", "gain_all": "paper", "gain_tight": "our reading",
                     "auroc_exit_1": "paper", "last_exit_shift": "our reading", "fits_reading_other_splits": "paper",
                     "gain_all_searched": "sensitivity", "gain_all_all_exits": "sensitivity"}
    for c in claims.values():
        assert c.statement_source and c.threshold_source
        assert c.statement_source.startswith("our reading") == (c.role == "our reading")
        assert c.role == "our reading" or "2301.07099 abstract" in c.statement_source
    assert "searched" in claims["gain_all_searched"].statement and claims["gain_all_all_exits"].setting == "toy, all exits"
    assert claims["gain_all"].label == VERDICTS[0] and claims["gain_all_searched"].label.endswith("(sensitivity row)")


def test_a_repeated_stack_of_fits_is_loaded_from_the_cache(fresh_artifacts, monkeypatch):
    """Notebook 05 repeats 04's fits: the same stack is fitted once, then loaded with the same weights;
    another budget is a new stack."""
    import earlyexit.methods.eenet as E
    calls = []
    real = E._fit_stacked
    monkeypatch.setattr(E, "_fit_stacked", lambda *a: calls.append(1) or real(*a))
    run, cfg = FakeRun(), EENetConfig(epochs=5, patience=5)
    first = fit_eenet(run, 0.6, cfg, seeds=(0, 1))
    again = fit_eenet(run, 0.6, cfg, seeds=(0, 1))
    assert len(calls) == 1 and list((fresh_artifacts / "eenet_fits").glob("*.pt"))
    assert first.attempts == again.attempts and first.val_accuracy == again.val_accuracy
    assert first.policy.thresholds == again.policy.thresholds
    fit_eenet(run, 0.5, cfg, seeds=(0, 1))
    assert len(calls) == 2


# ---------------------------------------------------------------- the paper's baselines, exit count and recipe sweep
from earlyexit.methods.eenet import BudgetedFit, pool_sweeps  # noqa: E402
from earlyexit.methods.eenet_baselines import fit_patience  # noqa: E402
from earlyexit.studies.eenet import ExitSubset, choose_recipe, headline_exits  # noqa: E402


def test_the_headline_pool_is_the_papers_baselines_and_the_searched_ones_only_a_sensitivity():
    """A searched baseline that is the most accurate on validation wins only in the sensitivity pool; patience,
    the most accurate of the paper's baselines on validation at one budget, wins the headline there."""
    assert PAPER_BASELINES == ("max-prob (MSDNet)", "entropy (BranchyNet)", "patience (PABEE)")
    assert not set(SEARCHED_BASELINES) & set(PAPER_BASELINES) and set(BASELINES) == {*PAPER_BASELINES, *SEARCHED_BASELINES}
    run = FakeRun()
    test = run.outputs("test")
    val_acc = {"EENet": 0.5, "max-prob (MSDNet)": 0.6, "entropy (BranchyNet)": 0.7, "patience (PABEE)": 0.8,
               "max-prob, searched": 0.9, "entropy, searched": 0.1}
    rows, fits = [], {}
    for budget in (0.45, 0.75):
        for i, (method, acc) in enumerate(val_acc.items()):
            if method == "patience (PABEE)" and budget == 0.45:
                continue                       # no patience value within this budget: not in its pool here
            policy = Patience(1 + i % 2)
            fits[(method, budget)] = BudgetedFit(method, budget, policy, [], budget, acc, budget)
            r = evaluate_policy(test, policy, run.macs)
            rows.append({"budget": budget, "method": method, "val_accuracy": acc, "test_accuracy": r.accuracy,
                         "test_cost": r.mean_fraction})
    headline = versus_best_baseline(run, rows, fits, draws=20)
    sensitivity = versus_best_baseline(run, rows, fits, BASELINES, draws=20)
    assert [r["best baseline"] for r in headline.table] == ["entropy (BranchyNet)", "patience (PABEE)"]
    assert [r["best baseline"] for r in sensitivity.table] == ["max-prob, searched"] * 2
    with pytest.raises(ValueError, match="no baseline"):
        versus_best_baseline(run, rows, fits, ("vote",), draws=20)


def test_compare_at_budgets_puts_patience_in_the_pool_and_searched_only_when_asked():
    run = FakeRun()
    rows, fits = compare_at_budgets(run, [0.35, 0.6], FAST, seeds=(0,), baseline_vectors=0)
    assert {r["method"] for r in rows} == {"EENet", *PAPER_BASELINES}   # searched baselines: none without vectors
    assert fits[("patience (PABEE)", 0.35)].policy == Patience(1)        # the only value within 0.35
    assert all(fits[("patience (PABEE)", b)].splits_read == ("val",) for b in (0.35, 0.6))


def test_fit_patience_takes_the_most_accurate_value_within_the_budget():
    run = FakeRun()
    val = run.outputs("val")
    results = {p: evaluate_policy(val, Patience(p), run.macs) for p in (1, 2)}
    assert fit_patience(run, 0.29) is None                        # patience 1 costs 0.3: nothing fits
    for budget in (0.31, 0.7, 1.0):
        fit = fit_patience(run, budget)
        inside = {p: r for p, r in results.items() if r.mean_fraction <= budget}
        best = max(inside, key=lambda p: (inside[p].accuracy, -p))
        assert fit.policy == Patience(best) and fit.val_cost == inside[best].mean_fraction <= budget
        assert fit.method == "patience (PABEE)" and fit.val_accuracy == inside[best].accuracy


def test_headline_exits_follow_the_mac_rule():
    reference = [0.0154, 0.1795, 0.2615, 0.4257, 0.5077, 0.6718, 0.7539, 0.9181, 0.9591, 1.0002]  # the cpu network
    assert headline_exits(reference, [0.25, 0.5, 0.75]) == [2, 4, 6, 9]     # exits 3, 5, 7 and the final
    assert headline_exits(reference, None) == list(range(10))
    assert headline_exits([0.2, 0.3, 1.0], [0.25, 0.5, 0.75]) == [0, 1, 2]  # a tie goes to the earlier exit; no repeats
    assert headline_exits([0.1, 0.9, 1.0], [0.95]) == [1, 2]


def test_an_exit_subset_restricts_the_outputs_and_counts_only_its_heads():
    class Run(FakeRun):
        macs = MacTable([10, 20, 30, 40], [1, 2, 3, 4], [0, 1, 2, 3], 100)

        def outputs(self, split, features=False):
            return synthetic(50, 0, k=4)

    run = Run()
    sub = ExitSubset(run, [1, 3])
    assert sub.macs.exit_macs == [10 + 20 + 2, 100 + 2 + 4]    # stages so far + only the kept heads
    full = run.outputs("val")
    out = sub.outputs("val")
    assert torch.equal(out.logits, full.logits[[1, 3]]) and torch.equal(out.labels, full.labels)
    for bad in ([1, 2], [3, 1, 3], []):
        with pytest.raises(ValueError):
            ExitSubset(run, bad)


def test_recipe_chosen_from_several_networks_at_the_tightest_and_loosest_budget():
    runs = [FakeRun(), PoisonedRun()]   # poisoned test labels: the sweep reads validation only
    grid = recipe_grid(["adamw"], [1e-3, 1e-2], [10, 20])
    sweep = choose_recipe(runs, ["seed 0", "seed 1"], [0, -1], 4, grid, TINY, seeds=(0, 1))
    budgets = budget_grid(runs[0], 4)
    assert sweep.budgets == [budgets[0], budgets[-1]] and sweep.networks == ["seed 0", "seed 1"]
    assert {(r["network"], r["budget"]) for r in sweep.rows} == {(n, b) for n in sweep.networks for b in sweep.budgets}
    assert len(sweep.rows) == 2 * 2 * len(grid) * 2 and all(set(r.read) == {"val"} for r in runs)
    key = lambda r: (r["in budget"], r["mean val accuracy in budget"] if r["in budget"] else -1.0)  # noqa: E731
    assert key(next(r for r in sweep.summary if r["recipe"] == sweep.chosen)) == max(map(key, sweep.summary))
    pooled = [r["val_accuracy"] for r in sweep.rows if r["accepted"] and (r["optimizer"], r["lr"], r["epochs"])
              == (sweep.chosen.optimizer, sweep.chosen.lr, sweep.chosen.epochs)]
    chosen = next(r for r in sweep.summary if r["recipe"] == sweep.chosen)
    assert chosen["mean val accuracy in budget"] == pytest.approx(sum(pooled) / len(pooled))
    assert sweep.protocol()["networks"] == ["seed 0", "seed 1"]
    with pytest.raises(ValueError):
        pool_sweeps([], [])


def test_released_numbers_are_labelled_with_their_budget_unit_and_exit_count():
    from earlyexit.studies.eenet import study_network
    from earlyexit.studies.eenet_tables import released_comparisons
    run = FakeRun()
    studies = {s: study_network(run, [0.45, 0.55, 0.75], FAST, (0,), draws=20, auroc_draws=10, baseline_vectors=0)
               for s in (0, 1)}
    rows = released_comparisons(studies, run.macs.exit_fractions)
    assert len(rows) == 3
    for r in rows:
        assert "not the paper" in r["quantity"] and "3 exits" in r["quantity"] and "2.5 ms/sample" in r["quantity"]
        assert "budget 0.550" in r["note"] and "mean of 2 network seed(s)" in r["note"]   # nearest 0.507 of c_K
    assert rows[0]["paper"] == 1.9 and rows[1]["paper"] == 0.934


def test_seed_intervals_stay_in_each_quantitys_valid_range():
    evidence = _evidence()
    for s, auroc in zip(evidence, (-0.6, 0.4, 0.9)):           # three seeds far apart: the t interval is wide
        evidence[s]["auroc_exit_1"] = (auroc, auroc, auroc)
    ev = across_networks(evidence)
    assert ev["auroc_exit_1"]["low"] == -1.0 and ev["auroc_exit_1"]["high"] == 1.0
    assert ev["gain_all"]["low"] > -100                        # points of accuracy: clipped only at +-100
