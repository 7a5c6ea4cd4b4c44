"""Notebook 03's claims on differentiable branching (Scardapane et al., ICASSP 2020) against BranchyNet, read
from the tables of ``studies.differentiable_branching``: each claim of the paper with the source of its
statement and of its threshold (the slides' tables, or our reading with why), t intervals over training
seeds, a bootstrap over test images for the one-seed lambda grid (``check_claims``); a claim that a
collapse of the gates alone would make true is decided on the networks that did not collapse, and marked
when there are none. Then the conclusions written from the tables and claims, so that no number of a run
is typed by hand, and the protocol for the metrics file.
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from ..methods.differentiable_branching import ENTROPY_LOW_NATS, EXIT_TAKES, GATE_OPEN, STARVED, Collapse
from ..stats import bootstrap_weighted, seed_estimate
from .claims import Claim, claim
from .differentiable_branching import (RECIPES, T1_COLUMNS, BackboneRuns, GateChoice, LambdaChoice, Table1,
                                       candidate_budget, paper_value, parse_exit_list)

__all__ = ["rivals_note", "monotone_drop_rows", "lambda_monotone_drop", "lambda_cost_interval", "check_claims",
           "conclusions", "protocol"]


# ---------------------------------------------------------------- claims
def rivals_note(t1: Table1, dataset: str, backbone: str) -> str:
    """The final-exit test accuracies of every compared network (mean over seeds), shown beside each claim
    so that a training gap between rivals is visible."""
    row = t1.summary[(t1.summary.dataset == dataset) & (t1.summary.backbone == backbone)].iloc[0]
    return (f"final exits (mean of {row['seeds']} seeds): plain {100 * row['plain mean']:.2f}%, BranchyNet "
            f"{100 * row['BranchyNet (final exit) mean']:.2f}%, proposed {100 * row['proposed (final exit) mean']:.2f}%")


def _over_seeds(statement: str, comparison: str, values: Sequence[float], **options) -> Claim:
    """A claim on per-seed values (seed s of every method paired): t interval over seeds where there
    are at least two."""
    note = options.pop("note", "")
    mean, interval = seed_estimate(list(values))
    evidence = (f"t interval over {len(values)} training seeds (seed s of each network paired)" if interval else
                "one training seed: no interval across trainings")
    return claim(statement, comparison, mean, interval=interval, evidence=evidence + note, **options)


def _working(keys: Sequence, collapsed: Sequence[bool], statement: str, role: str) -> tuple[list, str, str, str]:
    """The keys a claim that a collapse alone would make true is decided on: those whose network did not
    collapse. Where every network collapsed, all of them, the statement marked and a paper row turned into
    a sensitivity row, so that it is never counted as support of the paper's claim."""
    kept = [k for k, c in zip(keys, collapsed) if not c]
    left = [k for k, c in zip(keys, collapsed) if c]
    if kept:
        return kept, statement, role, (f"; {', '.join(map(str, left))} left out: collapsed (collapse watch)" if left else "")
    return (list(keys), f"{statement} [collapsed networks only]", "sensitivity" if role == "paper" else role,
            "; every network it reads collapsed (collapse watch): a collapse alone makes this hold, so it is not "
            "counted as support of the paper's claim")


def monotone_drop_rows(costs: torch.Tensor) -> torch.Tensor:
    """``lambda_monotone_drop`` of every row of ``costs`` [D, L] (lambdas in increasing order)."""
    rises = costs[:, 1:] - costs[:, :-1]
    worst = rises.max(1).values if rises.shape[1] else torch.zeros(len(costs), dtype=costs.dtype)
    out = torch.where(worst <= 1e-12, costs[:, 0] - costs[:, -1], -worst)
    return torch.where(out.abs() <= 1e-12, torch.zeros_like(out), out)   # float noise of equal costs is a tie


def lambda_monotone_drop(costs: Sequence[float]) -> float:
    """How far the cost falls from the first to the last lambda when it never rises on the way; else minus
    the largest rise between consecutive lambdas. Positive exactly when the costs never rise and end lower:
    "a larger lambda moves exits earlier", ties between neighbours allowed."""
    return float(monotone_drop_rows(torch.tensor([list(costs)], dtype=torch.float64))[0])


def lambda_cost_interval(group: BackboneRuns, choice: LambdaChoice, lams: Sequence[float] | None = None
                         ) -> tuple[float, float, float]:
    """``lambda_monotone_drop`` of the test hard-exit MACs / plain of the grid's networks at ``lams`` (default:
    all) and its bootstrap interval over test images (every network judged on the same resample). One network
    per lambda: the interval covers which test images were drawn, not what another training seed would give."""
    lams = sorted(choice.hard if lams is None else lams)
    per_image = torch.stack([torch.tensor(group.run("grid", lam).macs.exit_macs, dtype=torch.float64)
                             [choice.hard[lam].exit_index] / group.run("grid", lam).macs.backbone_macs for lam in lams])
    n = per_image.shape[1]
    return bootstrap_weighted(lambda w: monotone_drop_rows(w @ per_image.T / n), n)


def _paper_sources(backbone: str, dataset: str) -> dict[str, str]:
    """The slides' numbers each claim's statement and threshold come from, read from the paper-numbers file."""
    t1 = {m: paper_value(table=1, dataset=dataset, backbone=backbone, method=m, quantity="test_accuracy")
          for m in ("baseline", "branchynet", "proposed")}
    nets = ("alexnet", "vgg13", "resnet18")
    drops = {n: paper_value(table=1, dataset="cifar10", backbone=n, method="proposed", quantity="test_accuracy").value
             - paper_value(table=2, backbone=n, quantity="test_accuracy").value for n in nets}
    ups = {n: paper_value(table=2, backbone=n, quantity="speed_up").value for n in nets}
    top2 = {n: sum(sorted(parse_exit_list(paper_value(table=2, backbone=n, quantity="exits").value).values())[-2:])
            for n in nets}
    worst = max(drops, key=drops.get)
    slow = min(ups, key=ups.get)
    return {
        "table1": (f"Table 1 (slides): {backbone} on {dataset}, baseline {t1['baseline'].value:g}%, B-NET "
                   f"{t1['branchynet'].value:g}%, Prop. {t1['proposed'].value:g}%" if all(t1.values()) else
                   "Table 1 (slides): Prop. above B-NET above the baseline for every backbone and data set"),
        "order": "Table 1 (slides): the ordering itself, a difference above 0",
        "drop": "Table 2 (slides): hard exits lose " + ", ".join(f"{drops[n]:.2f} ({n})" for n in nets)
                + " points against Table 1's Prop. on CIFAR-10",
        "drop_bound": f"our reading: Table 2's largest loss is {drops[worst]:.2f} points ({worst}); 3 points rounds it up",
        "cut": "Table 2 (slides): hard exits are " + ", ".join(f"{ups[n]:g}% ({n})" for n in nets)
               + " faster than the baseline",
        "cut_bound": f"our reading: Table 2's smallest speed-up, {ups[slow]:g}% ({slow}), is a time ratio of "
                     f"{1 / (1 + ups[slow] / 100):.2f}; MACs stand in for time, rounded to 0.9",
        "few": "Table 2 (slides): inputs leave at a few branches (" + "; ".join(
            f"{n}: {paper_value(table=2, backbone=n, quantity='exits').value}" for n in nets) + ")",
        "few_bound": "our reading: the two busiest exits of Table 2 take " + ", ".join(
            f"{100 * top2[n]:.1f}% ({n})" for n in nets) + " of the inputs; 0.7 lies below all three",
        "polar": "our reading: Fig. 4 (slides) shows the gate values of 3 branches; its values were not retrieved, "
                 "a bimodal shape near 0 and 1 is the expected reading",
        "polar_bound": "our reading: most gate values (0.8) beyond 0.1 from 0 or 1 makes a distribution bimodal",
        "lambda": 'Conclusions (slides): "a novel regularization term to trade-off accuracy and computational cost of '
                  'inference" (eq. 2, weighted by lambda)',
        "lambda_bound": "eq. 2 (slides): a larger weight on the expected cost lowers it; 0 is the direction itself"}


def check_claims(t1: Table1, group: BackboneRuns, choice: LambdaChoice | None, polarised: dict[int, float],
                 watch: dict[str, Collapse], mixing: str, setting: str, role: str = "paper", max_drop: float = 0.03,
                 max_macs: float = 0.9, min_top2: float = 0.7, min_polarised: float = 0.8,
                 min_lambdas: int = 3) -> list[Claim]:
    """The paper's claims on one data set, backbone and recipe (``role``: 'paper' for the paper's recipe,
    'sensitivity' for another), each with the rivals' final-exit accuracies beside it. ``watch``: the
    collapse watch per gated network label.

    1-2. Table 1: plain <= BranchyNet (final exit) <= proposed (ensemble, lambda fixed in advance): the two
         steps per seed, t interval over seeds. The second is decided on the seeds whose network did not
         collapse (``_working``): a network collapsed into one exit is that exit's classifier, and its
         ensemble says nothing of the method (collapsed into the final exit it is a plain network).
    3-6. Table 2 at the fixed lambda: hard exits lose less than ``max_drop`` against the same network's
         ensemble, cost less than ``max_macs`` of the plain backbone, send more than ``min_top2`` of the
         inputs to the two busiest exits; Fig. 4: more than ``min_polarised`` of the gate values lie below
         0.1 or above 0.9 (per seed, t interval over seeds). A collapse alone makes these hold, so they are
         decided on the seeds whose network did not collapse (``_working``).
    7.   A larger lambda moves exits earlier, over the grid's networks that did not collapse (at least
         ``min_lambdas``; else every lambda, marked), one network per lambda trained from scratch: bootstrap
         over test images of the cost differences (what it does not cover is in its evidence).
    """
    d, bb, s = group.dataset, group.backbone, group.paper_backbone
    note, where = rivals_note(t1, d, bb), f"{setting}, {d} {s}"
    src = _paper_sources(s, d)
    vals = {c: t1.values(d, bb, c) for c in T1_COLUMNS}
    row = t1.summary[(t1.summary.dataset == d) & (t1.summary.backbone == bb)].iloc[0]
    p_src = paper_value(table=1, dataset=d, backbone=s, method="proposed", quantity="test_accuracy")
    p_src = "" if p_src is None else p_src.source
    step = {"b": row["paper B-NET"] - row["paper plain"], "p": row["paper proposed"] - row["paper B-NET"]}
    both = dict(statement_source=src["table1"], threshold_source=src["order"], unit="points",
                setting=where, paper_source=p_src)
    seeds, fixed = group.seeds, f"{where}, lambda={group.headline_lambda:g} (fixed), gate bias {group.gate_bias}"
    flags = [watch[group.label("proposed", seed)].collapsed for seed in seeds]
    # a network collapsed into one exit is that exit's classifier: its ensemble says nothing of the method
    kept, ensemble_statement, ensemble_role, extra = _working(
        seeds, flags, "Table 1: proposed (ensemble) >= BranchyNet (final exit)", role)
    claims = [
        _over_seeds(f"Table 1: BranchyNet (final exit) >= plain ({s})", f"BranchyNet final exit - plain, test accuracy; {note}",
                    [100 * (b - p) for b, p in zip(vals["BranchyNet (final exit)"], vals["plain"])],
                    paper=None if pd.isna(step["b"]) else round(100 * step["b"], 2), role=role, **both),
        _over_seeds(f"{ensemble_statement} ({s})",
                    f"proposed ensemble (lambda={group.headline_lambda:g}, fixed; gate bias {group.gate_bias}) - "
                    f"BranchyNet final exit, test accuracy; {note}",
                    [100 * (p - b) for seed, p, b in zip(seeds, vals["proposed (ensemble)"], vals["BranchyNet (final exit)"])
                     if seed in kept],
                    paper=None if pd.isna(step["p"]) else round(100 * step["p"], 2), role=ensemble_role, note=extra,
                    **both)]
    p_ens = paper_value(table=1, dataset=d, backbone=s, method="proposed", quantity="test_accuracy")
    p_hard, up, ex = (paper_value(table=2, dataset=d, backbone=s, quantity=q)
                      for q in ("test_accuracy", "speed_up", "exits"))
    top2 = [sum(sorted(t1.hard[(d, bb, seed)].exit_shares)[-2:]) for seed in seeds]
    table2 = (
        ("Table 2: hard exits lose little accuracy against the ensemble", "ensemble - hard-exit test accuracy, same network",
         [100 * (e - h) for e, h in zip(vals["proposed (ensemble)"], vals["proposed (hard exits)"])],
         dict(claimed="less", than=100 * max_drop, unit="points", statement_source=src["drop"],
              threshold_source=src["drop_bound"], role=role,
              paper=None if p_ens is None or p_hard is None else round(p_ens.value - p_hard.value, 2),
              paper_source="" if p_hard is None else "Table 1 proposed - " + p_hard.source)),
        ("Table 2: hard exits cut compute", "hard-exit mean MACs / plain-backbone MACs", vals["proposed MACs / plain"],
         dict(claimed="less", than=max_macs, unit="of plain MACs", statement_source=src["cut"],
              threshold_source=src["cut_bound"], role=role, paper=None if up is None else f"{up.value:g}% faster (time)",
              paper_source="" if up is None else up.source)),
        ("Table 2: inputs leave at a few exits", "share of test inputs at the two busiest exits", top2,
         dict(than=min_top2, unit="share", statement_source=src["few"], threshold_source=src["few_bound"], role=role,
              paper=None if ex is None else round(sum(sorted(parse_exit_list(ex.value).values())[-2:]), 3),
              paper_source="" if ex is None else ex.source)),
        ("Fig. 4: gate values are polarised near 0 and 1", "share of test gate values below 0.1 or above 0.9 (all branches)",
         [polarised[seed] for seed in seeds],
         dict(than=min_polarised, unit="share", statement_source=src["polar"], threshold_source=src["polar_bound"],
              role="our reading", paper_source="Scardapane et al. ICASSP 2020 slides, Fig. 4 (values not retrieved)")))
    for statement, comparison, values, options in table2:
        kept, statement, options["role"], extra = _working(seeds, flags, statement, options["role"])
        claims.append(_over_seeds(f"{statement} ({s})", f"{comparison}; {note}",
                                  [v for seed, v in zip(seeds, values) if seed in kept], setting=fixed, note=extra,
                                  **options))
    if choice is not None and len(choice.hard) >= 2:
        lams = sorted(choice.hard)
        flags = [watch[group.label("grid", lam)].collapsed for lam in lams]
        if sum(not f for f in flags) >= min_lambdas:
            kept, statement, kind, extra = _working(lams, flags, "A larger lambda moves exits earlier", role)
        else:
            kept, statement, kind = lams, "A larger lambda moves exits earlier [collapsed networks included]", \
                "sensitivity" if role == "paper" else role
            extra = (f"; fewer than {min_lambdas} lambdas trained networks that did not collapse: every lambda "
                     "counted, the row is not counted as support of the paper's claim")
        drop, lo, hi = lambda_cost_interval(group, choice, kept)
        claims.append(claim(f"{statement} ({s})", f"drop of test hard-exit MACs / plain from lambda={min(kept):g} to "
                            f"{max(kept):g} (negative: the largest rise between consecutive lambdas); {note}", drop,
                            interval=(lo, hi), unit="of plain MACs", statement_source=src["lambda"],
                            threshold_source=src["lambda_bound"], role=kind,
                            evidence="bootstrap over test images, one network per lambda trained from scratch: covers "
                                     f"the test sample, not retraining or another seed{extra}",
                            setting=f"{where}, lambdas {', '.join(f'{lam:g}' for lam in kept)}, gate bias {group.gate_bias}"))
    return claims


# ---------------------------------------------------------------- conclusions and protocol
def _checked(claims: Sequence[Claim], prefix: str) -> str:
    """'(claim > 0.7 share: 2 supported, 1 not supported)' for the claims whose statement starts with
    ``prefix``, each counted by the verdict a reader sees (``Claim.label``)."""
    picked = [c for c in claims if c.statement.startswith(prefix)]
    if not picked:
        return "(no claim row)"
    labels = list(dict.fromkeys(c.label for c in picked))
    side = f" {'>' if picked[0].claimed == 'greater' else '<'} {picked[0].than:g} {picked[0].unit}"
    return f"(claim{side}: " + ", ".join(f"{sum(c.label == v for c in picked)} {v}" for v in labels) + ")"


def _pm(row: dict, column: str) -> str:
    sd = row.get(f"{column} sd", float("nan"))
    return f"{100 * row[f'{column} mean']:.2f}%" + ("" if pd.isna(sd) else f" ± {100 * sd:.2f}")


def _table1_lines(t1: Table1, claims: Sequence[Claim], recipe: str, width: float, epochs: int) -> list[str]:
    lines = []
    for row in t1.summary.to_dict("records"):
        lines.append(f"- **Table 1, {RECIPES[recipe]}** ({row['backbone']} x{width:g}, {epochs} epochs, {row['seeds']} seeds, "
                     f"mean ± sd): plain {_pm(row, 'plain')}, BranchyNet {_pm(row, 'BranchyNet (final exit)')}, "
                     f"proposed ensemble {_pm(row, 'proposed (ensemble)')} (its final exit "
                     f"{_pm(row, 'proposed (final exit)')}) at lambda = {row['lambda (fixed)']:g} (fixed in advance), "
                     f"gate bias {row['gate bias']}. BranchyNet >= plain {_checked(claims, 'Table 1: BranchyNet')}; "
                     f"proposed >= BranchyNet {_checked(claims, 'Table 1: proposed')}.")
        if not pd.isna(row["paper proposed"]):
            lines.append(f"  The paper's proposed ensemble is {100 * (row['paper proposed'] - row['proposed (ensemble) mean']):.1f} "
                         f"points above ours, its plain backbone {100 * (row['paper plain'] - row['plain mean']):.1f} "
                         "points above ours: the verdicts speak for this budget.")
        lines.append(f"  Hard exits at the fixed lambda spend {100 * row['proposed MACs / plain mean']:.1f}% of the plain "
                     f"backbone's MACs {_checked(claims, 'Table 2: hard exits cut')} at "
                     f"{100 * row['proposed (hard exits) mean']:.2f}% test accuracy "
                     f"{_checked(claims, 'Table 2: hard exits lose')}; BranchyNet's per-exit entropy thresholds, "
                     f"chosen by the same rule, spend {100 * row['BranchyNet MACs / plain mean']:.1f}% at "
                     f"{100 * row['BranchyNet (entropy exits) mean']:.2f}%. Inputs at the two busiest exits "
                     f"{_checked(claims, 'Table 2: inputs leave')}; polarised gates {_checked(claims, 'Fig. 4')}.")
    return lines


def conclusions(t1: Table1, claims: Sequence[Claim], choices: dict[tuple[str, str], LambdaChoice],
                gates: dict[tuple[str, str], GateChoice], watch: dict[str, Collapse], parameters: dict,
                t1_reference: Table1 | None = None, reference_claims: Sequence[Claim] = ()) -> str:
    """What the run shows, in words (Markdown), every number read from the tables and claims. Timings
    are left out: they change from run to run and decide no claim."""
    p = parameters
    lines = _table1_lines(t1, claims, "paper", p["width"], p["epochs"])
    for (d, bb), g in gates.items():
        f = g.frame
        lines.append(f"- **Gate bias** ({bb}): " + "; ".join(
            f"{r['gate bias']}: validation ensemble {100 * r['val ensemble acc']:.2f}%, {r['collapse watch']}"
            for r in f.to_dict("records")) + f". The rule picks **{g.picked}**; the headline runs use {g.used}"
            + (" (they agree)." if g.agrees else " (**they disagree**: rerun with gate_bias = "
                                                  f"{g.picked!r} for the choice the protocol states)."))
    for (d, bb), choice in choices.items():
        f = choice.frame.sort_values("lambda")
        ties = choice.ties
        lines.append(f"- **lambda grid** ({bb}, each trained from scratch, one seed): test hard-exit MACs / plain "
                     + " -> ".join(f"{v:.3f}" for v in f["test MACs / plain"]) + " for lambda "
                     + ", ".join(f"{lam:g}" for lam in f["lambda"]) + f" {_checked(claims, 'A larger lambda')}. "
                     f"Chosen on validation: lambda = {choice.chosen:g}, test hard-exit accuracy "
                     f"{100 * choice.hard[choice.chosen].accuracy:.2f}% at {choice.hard[choice.chosen].mean_fraction:.3f} "
                     "of the plain MACs" + ("" if f["within tolerance"].any() else
                                           " (no model within the tolerance: the most accurate hard-exit model)")
                     + (f"; tied with lambda {', '.join(f'{t:g}' for t in ties)} (the smaller lambda wins)" if ties
                        else "; no tie") + ".")
    collapsed = [label for label, c in watch.items() if c.collapsed]
    lines.append(f"- **Collapse watch** ({len(collapsed)} of {len(watch)} gated networks collapsed): "
                 + ("; ".join(f"{label}: {watch[label].describe()}" for label in collapsed) if collapsed else "none")
                 + ". " + _recipe_verdict(watch))
    if t1_reference is not None:
        lines += _table1_lines(t1_reference, reference_claims, "reference", p["reference_recipe"]["width"],
                               p["reference_recipe"]["epochs"])
    lines.append("- Batch-1 latency is in the latency table of section 7: measured, not predicted, and part of no verdict.")
    return "\n".join(lines)


def _recipe_verdict(watch: dict[str, Collapse]) -> str:
    """Whether each recipe's gated networks collapsed, in one sentence (reference-recipe labels start 'ref ')."""
    out = []
    for recipe, mine in (("paper", [c for k, c in watch.items() if "ref λ=" not in k]),
                         ("reference", [c for k, c in watch.items() if "ref λ=" in k])):
        if mine:
            out.append(f"under the {RECIPES[recipe]}, {sum(c.collapsed for c in mine)} of {len(mine)} collapsed")
    text = "; ".join(out) + "."
    return text[0].upper() + text[1:]


def protocol(parameters: dict, t1: Table1, choices: dict[tuple[str, str], LambdaChoice],
             gates: dict[tuple[str, str], GateChoice], groups: Sequence[BackboneRuns],
             early_epochs: dict[str, int]) -> dict:
    """How every compared configuration was chosen, for the metrics file."""
    p = parameters
    rule = (f"cheapest on validation within {p['tolerance']:g} of the best validation accuracy the method reaches "
            "(proposed: best ensemble of the grid; BranchyNet: best of its candidates)")
    n = {f"{d}|{bb}|s{s}": len(c.sweep) for (d, bb, s), c in t1.branchynet.items()}
    recipe = ("optimizer", "schedule", "lr", "epochs", "batch_size", "weight_decay", "augment", "width", "bf16",
              "channels_last")
    return {
        "split": "every selection reads validation only; test is only reported",
        "seeds": list(p["seeds"]), "recipe": {k: p[k] for k in recipe},
        "reference_recipe": p.get("reference_recipe"),
        "headline_lambda": {"value": p["headline_lambda"], "chosen": "fixed before any run, reported for every seed "
                            "(the reason is stated in the notebook's section 1)"},
        "lambda_grid": {"values": list(p["lambda_grid"]),
                        "start": f"each lambda trained from scratch end to end ({p['epochs']} epochs), first seed"},
        "lambda_selection": {"rule": rule, "ties": "equal validation cost: the more accurate; still equal: the "
                             "smaller lambda", "tolerance": p["tolerance"], "hard_gate_threshold": p["gate_threshold"],
                             "chosen": {f"{d}|{bb}": c.chosen for (d, bb), c in choices.items()},
                             "tied_with_chosen": {f"{d}|{bb}": c.ties for (d, bb), c in choices.items()}},
        "gate_bias": {"options": [str(o) for o in p["gate_bias_options"]], "used": str(p["gate_bias"]),
                      "rule": f"first option in the listed order whose network (first seed, lambda "
                              f"{p['headline_lambda']:g}) the collapse watch does not flag and whose validation "
                              f"ensemble accuracy is within {p['tolerance']:g} of the best unflagged option's",
                      "values": {f"{d}|{bb}": dict(zip(g.frame["gate bias"], g.frame["bias value"]))
                                 for (d, bb), g in gates.items()},
                      "picked": {f"{d}|{bb}": g.picked for (d, bb), g in gates.items()},
                      "agrees": all(g.agrees for g in gates.values())},
        "collapse_watch": {"gate_above": GATE_OPEN, "early_epochs": early_epochs, "exit_takes": EXIT_TAKES,
                           "starved_below": STARVED,
                           "rule": "collapsed when a branch's mean validation gate passes gate_above within the first "
                                   "third of the epochs, or one exit takes exit_takes of the validation inputs with "
                                   "hard gates; the exits behind whose mean mixture weight stays under starved_below "
                                   "at every epoch are listed",
                           "claims": "a claim a collapse alone makes true (Table 2, Fig. 4, the lambda trend) is "
                                     "decided on the networks that did not collapse; with none, it is marked "
                                     "'[collapsed networks only]' and is a sensitivity row"},
        "branchynet_loss_weights": {g.recipe: sorted({str(r.spec.loss.options.get("weights")) for r in g.branchynet.values()})
                                    for g in groups},
        "bnet_thresholds": {
            "rule": rule, "unit": "normalised entropy (nats / ln C)",
            "candidates": f"{p['bnet_shared']} shared values and {p['bnet_random']} per-exit vectors, log-spaced / "
                          f"log-uniform from {ENTROPY_LOW_NATS:g} nats to ln C, plus the final exit alone",
            "candidates_per_network": n, "proposed_budget": candidate_budget([g for g in groups if g.recipe == "paper"]),
            "chosen_nats": {f"{d}|{bb}|s{s}": c.nats() for (d, bb, s), c in t1.branchynet.items()}},
        "gate_threshold": f"t = {p['gate_threshold']:g}, fixed (not tuned)"}
