"""Notebook 04's verdicts and reports, read from the per-network studies of ``studies.eenet``: the claims
with where each comes from (``network_claims``), the numbers beside those stored in the authors' released
scheduler files (``released_comparisons``), the per-network part of the metrics file (``network_metrics``)
and the written conclusions (``conclusions``).

The paper text at hand is the arXiv abstract (2301.07099); its sentences are quoted as the statements'
sources. What it does not give (a tolerance, a statistic, the baselines' list) is labelled "our reading"
with the reason, or taken from the authors' released code and said so.
"""
from __future__ import annotations

import json
from typing import Mapping, Sequence

from ..methods.eenet import EENetConfig
from ..stats import seed_estimate
from .claims import Claim, claim, paper_number
from .eenet import NetworkStudy, utility_weights
from .report import comparison

__all__ = ["SOURCES", "network_claims", "released_comparisons", "network_metrics", "conclusions", "seed_curves",
           "plot_seed_curves"]

_ABSTRACT = "arXiv 2301.07099 abstract"
SOURCES = {
    "budget": f'{_ABSTRACT}: "optimizes both the distribution of test samples to different exits and the '
              f'selection of the exit utility thresholds such that the given inference budget is satisfied"',
    "gain": f'{_ABSTRACT}: "The results demonstrate the performance improvements of EENet compared to existing '
            f'representative early exit techniques"',
    "utility": f'{_ABSTRACT}: "early exit utility scores ... to better estimate the correctness of test-time '
               f'predictions at a given exit"',
    "validation": f'{_ABSTRACT}: "we train a lightweight, budget-driven, multi-objective neural network over '
                  f'validation predictions"',
    "tight": "our reading: the text at hand does not say where along the budget axis the gains lie; the abstract "
             "motivates EENet by \"edge AI applications with limited resources at test time\"",
    "shift": "our reading: the abstract says the scheduler \"optimizes ... the distribution of test samples to "
             "different exits\" for \"a given inference budget\"; that the distribution moves to later exits as "
             "the budget grows is what meeting a larger budget implies, not a sentence of the paper",
    "baselines": "our reading of \"existing representative early exit techniques\" (the abstract names none): the "
                 "rules of the authors' released code (git-disl/EENet, --edm: maxpred \"MSDNet\", entropy "
                 "\"BranchyNet\", vote, PABEE-like), i.e. max probability and entropy with a geometric exit "
                 "distribution, and patience",
    "tolerance": "our reading: the text at hand gives no tolerance; 10% is the acceptance band of the authors' "
                 "released scheduler selection (dynamic_evaluate, utils/predict_utils.py)",
    "positive": "the abstract's \"performance improvements ... compared to\": a difference above 0 points",
    "auroc": "our reading of \"better estimate the correctness\" (the text at hand names no statistic): a higher "
             "test AUROC for correctness than the better of max probability and entropy confidence, a difference "
             "above 0",
    "none": "our reading: a single fit reading another split breaks the protocol, so fewer than 1",
    "move": "our reading: a move means a difference above 0",
}


def _seeds(evidence: Mapping[str, dict], name: str) -> tuple[float, tuple[float, float] | None, str]:
    """Mean over seeds, the t interval over seeds and how it was obtained, with each seed's own value and
    paired bootstrap interval over its test images."""
    e = evidence[name]
    per = "; ".join(f"seed {s}: {v['value']:+.3g} [{v['bootstrap_low']:+.3g}, {v['bootstrap_high']:+.3g}]"
                    for s, v in e["per_seed"].items())
    interval = None if e["low"] is None else (e["low"], e["high"])
    how = (f"mean over {len(e['per_seed'])} training seeds, t interval over their per-seed values" if interval else
           "one training seed: no interval across trainings")
    return e["mean"], interval, f"{how}; per network, paired bootstrap over its test images: {per}"


def _auroc_exits(evidence: Mapping[str, dict]) -> tuple[list[int], dict[int, list[str]]]:
    """Exits (1-based) whose AUROC gain is defined on every seed, and the others with the seeds where no
    test image leaves there (or its predictions are all right or all wrong)."""
    kept, left = [], {}
    for name, e in evidence.items():
        if name.startswith("auroc_exit_"):
            k = int(name.rsplit("_", 1)[1])
            if e["mean"] is None:
                left[k] = e["undefined_on"]
            else:
                kept.append(k)
    return kept, left


def _exit_name(k: int, network_exits: Sequence[int] | None) -> str:
    """Exit k (1-based) of the exit set, with its number in the whole network where the set is a subset."""
    return f"exit {k}" if network_exits is None else f"exit {k} (network exit {network_exits[k - 1]})"


def network_claims(evidence: Mapping[str, dict], all_exits: Mapping[str, dict] | None, config: EENetConfig,
                   setting: str, all_exits_setting: str, fits: int, budgets: int,
                   network_exits: Sequence[int] | None = None) -> dict[str, Claim]:
    """The claims of notebook 04, keyed by the evidence they read (``studies.eenet.across_networks``).
    The headline (role "paper") runs on the paper's exit count against the paper's baselines; the pool with
    the searched baselines and the network's every exit (``all_exits``, None when the headline uses every
    exit) are "sensitivity" rows; ``network_exits`` (1-based) names the headline exits in the whole network.
    Each estimate is the mean over training seeds with the t interval over
    the per-seed values; properties of every fit (cost error, splits read) are decided on their worst seed."""
    worst = lambda name: max(v["value"] for v in evidence[name]["per_seed"].values())  # noqa: E731
    pool = "the paper's baselines (max probability and entropy with geometric exit distributions, patience)"
    chosen = "; at each budget the baseline of the pool more accurate on validation"
    out = {"cost_error_pct": claim(
        "EENet's realised cost meets the budget", "largest |realised test cost - budget| / budget over the budgets and "
        "networks", worst("cost_error_pct"), claimed="less", than=100 * config.tolerance, unit="%", setting=setting,
        evidence=f"deterministic property of the test split ({budgets} budgets per network)", deterministic=True,
        statement_source=SOURCES["budget"], threshold_source=SOURCES["tolerance"])}
    mean, interval, how = _seeds(evidence, "gain_all")
    out["gain_all"] = claim("EENet is at least as accurate as the paper's baselines at equal budget",
                            f"EENet - best of {pool}, test accuracy, mean over the budgets", mean, interval=interval,
                            unit="points", setting=setting, evidence=how + chosen, statement_source=SOURCES["gain"],
                            threshold_source=SOURCES["positive"] + "; baselines: " + SOURCES["baselines"])
    mean, interval, how = _seeds(evidence, "gain_tight")
    out["gain_tight"] = claim("EENet's gains come at tight budgets", f"EENet - best of {pool}, test accuracy, mean "
                              "over the tighter half of the budgets", mean, interval=interval, unit="points",
                              setting=setting, evidence=how + chosen, statement_source=SOURCES["tight"],
                              threshold_source=SOURCES["positive"], role="our reading")
    kept, left = _auroc_exits(evidence)
    gone = ("; left out: " + ", ".join(f"{_exit_name(k, network_exits)} (no test image leaves there, or none is "
                                       f"wrong, on seed(s) {', '.join(s)})" for k, s in sorted(left.items()))
            if left else "")
    for k in kept:
        mean, interval, how = _seeds(evidence, f"auroc_exit_{k}")
        out[f"auroc_exit_{k}"] = claim(
            f"Utility scores predict correctness better than max probability or entropy "
            f"({_exit_name(k, network_exits)})",
            f"test AUROC for correctness of q_{k} minus the better raw confidence's at exit {k} (scheduler of the "
            "middle budget)", mean, interval=interval, evidence=how + gone, setting=setting,
            statement_source=SOURCES["utility"], threshold_source=SOURCES["auroc"])
    mean, interval, how = _seeds(evidence, "last_exit_shift")
    out["last_exit_shift"] = claim("The learned exit distribution moves to later exits as the budget grows",
                                   "share of test images at the last exit, highest minus lowest budget", mean,
                                   interval=interval, evidence=how, setting=setting, statement_source=SOURCES["shift"],
                                   threshold_source=SOURCES["move"], role="our reading")
    out["fits_reading_other_splits"] = claim(
        "Only validation outputs fit the scheduler and thresholds", "fits that read a split other than validation",
        worst("fits_reading_other_splits"), claimed="less", than=1, unit=f"of {fits} fits", setting=setting,
        evidence="deterministic property: every split each fit read through the run is recorded", deterministic=True,
        statement_source=SOURCES["validation"], threshold_source=SOURCES["none"])
    if "gain_all_searched" in evidence:
        mean, interval, how = _seeds(evidence, "gain_all_searched")
        out["gain_all_searched"] = claim(
            "EENet is at least as accurate as the paper's baselines at equal budget (searched baselines added)",
            f"EENet - best of {pool} and max probability / entropy each searched over random threshold vectors (not "
            "in the paper), test accuracy, mean over the budgets", mean, interval=interval, unit="points",
            setting=setting, evidence=how + chosen, statement_source=SOURCES["gain"],
            threshold_source=SOURCES["positive"], role="sensitivity")
    if all_exits is not None:
        mean, interval, how = _seeds(all_exits, "gain_all")
        out["gain_all_all_exits"] = claim(
            "EENet is at least as accurate as the paper's baselines at equal budget (every exit of the network)",
            f"EENet - best of {pool}, test accuracy, mean over the budgets of the all-exit grid", mean,
            interval=interval, unit="points", setting=all_exits_setting, evidence=how + chosen,
            statement_source=SOURCES["gain"], threshold_source=SOURCES["positive"], role="sensitivity")
    return out


def _released(quantity: str):
    return paper_number("eenet", quantity=f"cifar10_resnet56_{quantity}")


def released_comparisons(studies: Mapping[int, NetworkStudy], exit_fractions: Sequence[float]) -> list[dict]:
    """Our schedulers beside the authors' released CIFAR-10 scheduler file (git-disl/EENet ``ea_pkls``; the
    paper's own tables were not available): labelled as the released file with its budget, unit and exit
    count. Ours (``exit_fractions``: the cost of each exit the studies ran on): each network's EENet fit at
    the budget of the grid nearest the released budget's fraction of the last exit's cost, the mean over
    training seeds (per-seed values in the note)."""
    budget, fraction = _released("readme_budget"), _released("readme_budget_fraction").value
    theirs = len(json.loads(_released("mean_exit_distribution").value))
    label = (f"authors' released scheduler file, not the paper (git-disl/EENet ea_pkls, CIFAR-10 ResNet56_3, {theirs} "
             f"exits, budget {budget.value:g} {budget.unit} = {fraction:g} of the last exit's latency)")
    first = next(iter(studies.values()))
    grid = sorted({b for m, b in first.fits if m == "EENet"})
    ours = min(grid, key=lambda b: abs(b - fraction * exit_fractions[-1]))
    per = {"expected cost vs budget (%)": [], "utility weight on max probability, exit 1": [],
           "utility weight on entropy confidence, exit 1": []}
    for st in studies.values():
        fit = st.fits[("EENet", ours)]
        w = utility_weights(fit.policy)[0]
        per["expected cost vs budget (%)"].append(100 * (fit.expected_cost - ours) / ours)
        per["utility weight on max probability, exit 1"].append(w["v max prob"])
        per["utility weight on entropy confidence, exit 1"].append(w["v entropy conf"])
    released = {"expected cost vs budget (%)": (_released("expected_cost_deviation_pct").value, "%"),
                "utility weight on max probability, exit 1": (_released("exit1_v_maxprob").value, ""),
                "utility weight on entropy confidence, exit 1": (_released("exit1_v_entropy").value, "")}
    out = []
    for quantity, values in per.items():
        value, unit = released[quantity]
        note = (f"ours: validation fit at budget {ours:.3f} of the backbone's MACs (the grid's nearest to {fraction:g} "
                f"of the last exit's), {len(exit_fractions)} exits, mean of {len(values)} network seed(s): "
                + ", ".join(f"{v:+.3g}" for v in values))
        out.append(comparison(f"{quantity}: {label}", sum(values) / len(values), value, unit, note))
    return out


def network_metrics(study: NetworkStudy) -> dict:
    """What the metrics file keeps of one network's study: every curve and table a claim reads."""
    return {"final_exit_accuracy": study.final_exit_accuracy, "results": study.rows,
            "eenet_vs_best_baseline": study.versus.table,
            "eenet_vs_best_baseline_searched": study.versus_searched.table if study.versus_searched else None,
            "patience": study.patience, "auroc_budget": study.middle, "auroc": study.auroc,
            "utility_weights": study.weights,
            "eenet_attempts": [{"budget": b, **a} for (m, b), f in study.fits.items() if m == "EENet" for a in f.attempts]}


def conclusions(metrics: dict, claims: Mapping[str, Claim]) -> str:
    """The notebook's conclusions as markdown: every number read from ``metrics`` (what the notebook saves)
    or from the released files' numbers, every verdict from ``claims`` (``network_claims``)."""
    m, ev = metrics, metrics["evidence"]
    nets = m["networks"]
    picked = [r["best baseline"] for n in nets.values() for r in n["headline"]["eenet_vs_best_baseline"]]
    best = ", ".join(f"{name} at {picked.count(name)} of {len(picked)} (network, budget) pairs"
                     for name in dict.fromkeys(picked))
    attempts = [a for n in nets.values() for a in n["headline"]["eenet_attempts"]]
    finals = ", ".join(f"seed {s} {100 * n['headline']['final_exit_accuracy']:.2f}%" for s, n in nets.items())
    sweep = m["recipe_sweep"]
    recipe = sweep["chosen"]
    first = next(iter(nets.values()))["headline"]
    ours_w = first["utility_weights"][0]
    paper_w = [_released(f"exit1_v_{q}").value for q in ("maxprob", "entropy")]
    exits = m["headline_exits"]

    def interval(c: Claim, digits: int = 2) -> str:
        inside = f" [{c.interval[0]:+.{digits}f}, {c.interval[1]:+.{digits}f}]" if c.interval else " (no interval)"
        return f"{c.ours:+.{digits}f}{inside}"

    def per_seed(evidence: Mapping[str, dict], name: str, digits: int = 2) -> str:
        return ", ".join(f"{v['value']:+.{digits}f}" for v in evidence[name]["per_seed"].values())

    kept, left = _auroc_exits(ev)
    named = exits if len(exits) < len(m["exit_fractions"]) else None
    roc = "; ".join(f"{_exit_name(k, named)}: {interval(claims[f'auroc_exit_{k}'], 3)}, "
                    f"{claims[f'auroc_exit_{k}'].label}" for k in kept)
    gone = ("; left out: " + ", ".join(f"{_exit_name(k, named)} (seed(s) {', '.join(s)})" for k, s in sorted(left.items()))
            if left else "; no exit left out")
    lines = [
        f"**On this run** ({m['model']}, {len(nets)} training seed(s), final-exit test accuracy {finals}; "
        f"headline on {len(exits)} of the network's {len(m['exit_fractions'])} exits, {', '.join(map(str, exits))} at "
        f"{' / '.join(f'{c:.2f}' for c in m['headline_exit_fractions'])} of the backbone's {m['backbone_MMACs']:.0f} "
        f"MMACs ({m['headline_exit_rule']}); {m['data']}; scheduler seeds {', '.join(map(str, m['scheduler_seeds']))}; "
        f"{len(m['budgets'])} budgets; scheduler recipe {recipe['optimizer']}, lr {recipe['lr']:g}, {recipe['epochs']} "
        f"epochs, chosen on validation from {len(sweep['summary'])} recipes x {len(sweep['seeds'])} seeds at budgets "
        f"{', '.join(f'{b:.3f}' for b in sweep['budgets'])} on networks {', '.join(sweep['networks'])}; the scheduler "
        f"costs at most {m['scheduler_macs'][-1]} MACs per image, {m['scheduler_macs_fraction']:.1e} of the backbone). "
        "Each estimate is the mean over the training seeds with the t interval over their per-seed values:",
        "",
        f"1. **Budget adherence: {claims['cost_error_pct'].label}.** {sum(a['accepted'] for a in attempts)} of "
        f"{len(attempts)} EENet fits landed within {100 * m['scheduler_config']['tolerance']:.0f}% of the budget on "
        f"validation; the realised test cost was within {claims['cost_error_pct'].ours:.1f}% of the budget at every "
        "budget of every network.",
        f"2. **EENet at least as accurate as the paper's baselines: {claims['gain_all'].label}.** EENet minus the "
        f"baseline chosen on validation ({best}), mean over the budgets: {interval(claims['gain_all'])} points "
        f"(per seed {per_seed(ev, 'gain_all')}).",
    ]
    if "gain_all_searched" in claims:
        lines.append(f"   Sensitivity, searched baselines added to the pool: {interval(claims['gain_all_searched'])} "
                     f"({claims['gain_all_searched'].label}; per seed {per_seed(ev, 'gain_all_searched')}).")
    if "gain_all_all_exits" in claims:
        lines.append(f"   Sensitivity, every exit of the network: {interval(claims['gain_all_all_exits'])} "
                     f"({claims['gain_all_all_exits'].label}; per seed {per_seed(m['evidence_all_exits'], 'gain_all')}).")
    lines += [
        f"3. **Gains at tight budgets: {claims['gain_tight'].label}** (tighter half of the budgets: "
        f"{interval(claims['gain_tight'])} points; per seed {per_seed(ev, 'gain_tight')}).",
        f"4. **Utility scores predict correctness better than raw confidence**, test AUROC of q_k minus the better of "
        f"max probability and entropy confidence, per exit: {roc or 'no exit defined on every seed'}{gone}.",
        f"5. **The learned distribution moves to later exits as the budget grows: {claims['last_exit_shift'].label}** "
        f"(last-exit share, highest minus lowest budget: {interval(claims['last_exit_shift'], 3)}; per seed "
        f"{per_seed(ev, 'last_exit_shift', 3)}).",
        f"6. **Validation only: {claims['fits_reading_other_splits'].label}** ({m['val_images']} validation images fit "
        f"everything, {m['test_images']} test images only evaluate; {claims['fits_reading_other_splits'].ours:.0f} "
        f"{claims['fits_reading_other_splits'].unit} read another split).",
        "",
        f"Our exit-1 utility score (seed {next(iter(nets))}, middle budget) weights max probability "
        f"{ours_w['v max prob']:.2f} and entropy confidence {ours_w['v entropy conf']:.2f}; the authors' released "
        f"CIFAR-10 scheduler file (not the paper) has {paper_w[0]} and {paper_w[1]}.",
    ]
    return "\n".join(lines)


def seed_curves(studies: Mapping[int, NetworkStudy]) -> dict[str, dict[str, list[float]]]:
    """Per method, the mean over training seeds of the test cost and accuracy at each budget where every
    seed has the method (patience is absent where no value meets the budget), with the t interval of the
    accuracy over seeds (no interval from one seed)."""
    per = [{(r["method"], r["budget"]): r for r in st.rows} for st in studies.values()]
    first = next(iter(studies.values())).rows
    out: dict[str, dict[str, list[float]]] = {}
    for method in dict.fromkeys(r["method"] for r in first):
        curve = out.setdefault(method, {"budget": [], "cost": [], "accuracy": [], "low": [], "high": []})
        for budget in sorted({r["budget"] for r in first}):
            rows = [p.get((method, budget)) for p in per]
            if any(r is None for r in rows):
                continue
            acc = [r["test_accuracy"] for r in rows]
            mean, interval = seed_estimate(acc, bounds=(0.0, 1.0))
            lo, hi = interval or (mean, mean)
            for key, value in (("budget", budget), ("cost", sum(r["test_cost"] for r in rows) / len(rows)),
                               ("accuracy", mean), ("low", lo), ("high", hi)):
                curve[key].append(value)
    return out


def plot_seed_curves(ax, curves: Mapping[str, Mapping[str, list[float]]], exit_costs: Sequence[float],
                     exit_accuracy: Sequence[float], title: str):
    """Accuracy (%) against realised test cost, mean over seeds with the 95% t interval as error bars, one
    line per method, and the single exits (mean over seeds) as a dotted line."""
    from .plots import legend_below, method_style
    for i, (method, c) in enumerate(curves.items()):
        if not c["cost"]:
            continue
        order = sorted(range(len(c["cost"])), key=lambda j: c["cost"][j])
        acc = [100 * c["accuracy"][j] for j in order]
        err = [[100 * (c["accuracy"][j] - c["low"][j]) for j in order],
               [100 * (c["high"][j] - c["accuracy"][j]) for j in order]]
        ax.errorbar([c["cost"][j] for j in order], acc, yerr=err, ms=4, capsize=2, label=method,
                    **method_style(method, i))
    ax.plot(exit_costs, [100 * a for a in exit_accuracy], "k:", lw=1, label="single exits")
    ax.set_xlabel("mean MACs / plain-backbone MACs (test)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    legend_below(ax, columns=2)                              # under the axes: it hides no curve
    return ax
