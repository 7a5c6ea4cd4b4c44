"""Notebook 01's protocol: the networks of the cpu profile are the shared reference network, learning
rates and thresholds are chosen on validation only (a poisoned test split changes nothing), and BC
against CR is decided over training seeds."""
import pytest
import torch

from earlyexit.macs import MacTable
from earlyexit.outputs import CachedOutputs
from earlyexit.studies.class_exclusion import (choose_lr, choose_lrs, evaluate_seeds, final_accuracies, lr_candidates,
                                               plan, protocol, seed_gap, seed_rows, seed_runs, table_i_gap)
from earlyexit.studies.class_exclusion_claims import claim_values, claims_with_rivals, setup_claims
from earlyexit.studies.reference import reference_run
from earlyexit.stats import seed_interval

CPU = dict(reference=True, train_size=None, val_size=5000, test_size=None, epochs=12, batch_size=256,
           weight_decay=5e-4, schedule="onecycle", warmup=0.2, crop_pad=2, flip=True, bce_mode="uniform_scale",
           rho=None, cr_loss="half_final", bf16=True, channels_last=True)
SETUP = {"name": "vgg13_c10", "backbone": "vgg13", "dataset": "cifar10", "width": 0.5}
REF = dict(backbone="vgg13", width=0.5, dataset="cifar10", train_size=None, val_size=5000, test_size=None, epochs=12,
           batch_size=256, lr=0.2, weight_decay=5e-4, bf16=True, channels_last=True)


def test_cpu_plain_and_cr_are_the_reference_and_bc_shares_its_recipe():
    runs = seed_runs([SETUP], {"vgg13_c10": {"plain": 0.2, "BC": 0.2, "CR": 0.2}}, [0, 1, 2], **CPU)["vgg13_c10"]
    for s, (plain, bc, cr) in enumerate(zip(runs["plain"], runs["BC"], runs["CR"])):
        assert plain.key == reference_run("plain", s, **REF).key and cr.key == reference_run("multi", s, **REF).key
        assert bc.model == cr.model and bc.data == cr.data and bc.train == cr.train and bc.loss.name == "class_exclusion"
    assert {s.key for s in plan([SETUP], [0.2], [0, 1, 2], **CPU)} == {s.key for rs in runs.values() for s in rs}
    authors_cr = seed_runs([SETUP], {"vgg13_c10": {"plain": 0.2, "BC": 0.2, "CR": 0.2}}, [0],
                           **{**CPU, "cr_loss": "authors"})["vgg13_c10"]["CR"][0]
    assert authors_cr.loss.name == "class_exclusion_cr" and authors_cr.train == runs["CR"][0].train
    with pytest.raises(ValueError, match="fixed by the reference"):
        lr_candidates([{**SETUP, "image_size": 64}], [0.2], [0], **CPU)
    grid = lr_candidates([SETUP], [0.1, 0.2], [0, 1], **CPU)["vgg13_c10"]
    assert all(list(by_lr) == [0.1, 0.2] and all(s.train.seed == 0 for s in by_lr.values()) for by_lr in grid.values())
    assert len(plan([SETUP], [0.1, 0.2], [0, 1], **CPU)) == 2 * 2 * 3


class _Run:
    """What the notebook's selections read of a TrainedRun: cached outputs per split and the MAC table."""

    def __init__(self, val: CachedOutputs, test: CachedOutputs, macs=None):
        self._outputs, self.macs = {"val": val, "test": test}, macs

    def outputs(self, split):
        return self._outputs[split]


def _outputs(n: int, strength: float, seed: int, exits: int = 4, classes: int = 10, label_seed: int | None = None) -> CachedOutputs:
    """Outputs of a network whose exits grow more accurate with depth; ``label_seed`` fixes the images."""
    y = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed if label_seed is None else label_seed))
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(exits, n, classes, generator=g) * 2 - 3
    for k in range(exits):
        logits[k, torch.arange(n), y] += strength * (1 + k)
    return CachedOutputs(logits, y)


def _poisoned(out: CachedOutputs, seed: int = 99) -> CachedOutputs:
    g = torch.Generator().manual_seed(seed)
    return CachedOutputs(out.logits, out.labels[torch.randperm(len(out.labels), generator=g)])


MACS = MacTable(stage_macs=[10] * 4, head_macs=[1] * 4, exit_stage=list(range(4)), backbone_macs=41)


def test_learning_rate_choice_reads_validation_only():
    by_lr = {0.05: _Run(_outputs(300, 1.0, 1), _outputs(300, 3.0, 2)),
             0.2: _Run(_outputs(300, 2.0, 3), _outputs(300, 0.5, 4))}
    lr, scores = choose_lr(by_lr)
    assert lr == 0.2 and scores[0.2] > scores[0.05]
    poisoned = {k: _Run(r.outputs("val"), _poisoned(r.outputs("test"))) for k, r in by_lr.items()}
    assert choose_lr(poisoned) == (lr, scores)
    same = {0.1: by_lr[0.2], 0.3: by_lr[0.2]}
    assert choose_lr(same)[0] == 0.1                                  # ties: the first rate of the grid
    chosen, rows = choose_lrs({"toy": {"BC": by_lr, "CR": poisoned}})
    assert chosen == {"toy": {"BC": 0.2, "CR": 0.2}} and sum(r["chosen"] is True for r in rows) == 2
    _, fixed = choose_lrs({"toy": {"BC": {0.2: by_lr[0.2]}}})
    assert [r["chosen"] for r in fixed] == ["fixed (one rate)"]
    assert protocol([0.01], "forward", True, {}, [0.2], [0, 1], True, "half_final", True)["lr_selected_on"].startswith(
        "fixed, not selected")


def _seed_runs(poison: bool) -> dict[str, list[_Run]]:
    runs = {}
    for i, m in enumerate(("plain", "BC", "CR")):
        runs[m] = []
        for s in range(3):
            val = _outputs(400, 1.2 + 0.2 * i, 10 * s + i, label_seed=7)
            test = _outputs(400, 1.2 + 0.2 * i, 100 + 10 * s + i, label_seed=8)
            runs[m].append(_Run(val, _poisoned(test) if poison else test, MACS))
    return runs


def test_threshold_search_reads_validation_only_and_claims_use_seed_intervals():
    setup = {"name": "toy", "backbone": "vgg13", "dataset": "cifar10", "bc_tolerance": 0.01, "cr_tolerance": 0.02}
    clean, poisoned = (evaluate_seeds(setup, _seed_runs(p), [0.005, 0.02], order="forward") for p in (False, True))
    for a, b in zip(clean, poisoned):
        for m in ("BC", "CR"):
            assert a.authors[m].search.thresholds == b.authors[m].search.thresholds
            assert [p.search.thresholds for p in a.curves[m]] == [p.search.thresholds for p in b.curves[m]]
    claims = setup_claims(clean, "toy, seeds [0, 1, 2]", draws=200)
    values = claim_values(clean)
    for c, key in zip(claims, ("macs", "drop", "table_i", "matched", "early", "growth")):
        if c.ours is not None:     # every estimate: the mean over seeds, with the t interval over the per-seed values
            mean, lo, hi = seed_interval(values[key])
            assert c.ours == pytest.approx(mean) and c.interval == pytest.approx((lo, hi))
            assert "3 training seeds" in c.evidence
    table_i, matched = claims[2], claims[3]
    assert table_i.role == "paper" and values["table_i"] == pytest.approx([table_i_gap(ev) for ev in clean])
    assert matched.role == "sensitivity" and values["matched"] == pytest.approx([seed_gap(ev) for ev in clean])
    assert "plain" in matched.evidence
    curves = [ev.claim_curves() for ev in clean]     # every curve the claims read, for every seed
    assert all(len(c["fronts"]["BC"]) == 3 and len(c["remaining_classes_continuing"]) == 3 for c in curves)
    accuracies = final_accuracies(clean)
    assert set(accuracies) == {"plain", "BC", "CR"} and all(len(v) == 3 for v in accuracies.values())
    rows = seed_rows(clean, [0, 1, 2])
    assert [r["seed"] for r in rows] == [0, 1, 2, "mean", "95% interval"]
    table = claims_with_rivals(claims, {"toy": "plain 90 %"})
    assert (table["rivals' final-exit test accuracy"] == "plain 90 %").all()
    keys = protocol([0.005], "authors", True, {"toy": {"BC": 0.2}}, [0.1, 0.2], [0, 1, 2], True, "half_final", True)
    assert {"search_order", "lr", "lr_selected_on"} <= set(keys) and keys["lr"] == {"toy": {"BC": 0.2}}
    assert keys["lr_selected_on"].startswith("validation") and "beta 0.01" in keys["thresholds"]
