"""Notebook 01's claims (class exclusion, Wang, Li, Zhang, AICAS 2024): each claim's statistic on one
seed's networks, the estimate over training seeds (mean and t interval; a bootstrap over test images only
where one seed exists), the claim rows with where their statements and thresholds come from, the rows
beside the paper for SUMMARY.md and the conclusions, all read from the ``SetupEvaluation`` objects of
``studies.class_exclusion``."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..evaluate import PolicyResult
from ..macs import MacTable
from ..methods.class_exclusion import exclusion_trace
from .class_exclusion import (DRAWS, MANY_EARLY, METHODS, PAPER, SetupEvaluation, authors_thresholds, front_gap,
                              paper_setup_keys, rivals_text, spread)

__all__ = ["ABSTRACT", "TABLE_I", "matched_cost_gap", "claim_values", "setup_claims", "paper_comparisons",
           "claims_with_rivals", "conclusions"]


ABSTRACT = 'Abstract: "the computational cost of DNNs in inference can be reduced significantly"'
TABLE_I = ('Table I (values not retrieved) sets the remaining MACs of BC ("ours") beside those of CR ("the '
           'traditional method", the authors\' README), each searched at its own tolerance in the authors\' code')


def _columns(points: Sequence[PolicyResult], labels: torch.Tensor, macs: MacTable) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image correctness and cost (fraction of the plain backbone), [points, images] each."""
    cost = torch.tensor(macs.exit_fractions, dtype=torch.float64)
    return (torch.stack([(p.prediction == labels).double() for p in points]),
            torch.stack([cost[p.exit_index] for p in points]))


def _front_columns(ev: SetupEvaluation, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``_columns`` of every point of ``ev.front(method)``: the grid points, then no early exit."""
    out = ev.tests[method]
    ok, cost = _columns([p.test for p in ev.curves[method]], out.labels, ev.macs[method])
    final_ok = (out.logits[-1].argmax(1) == out.labels).double()[None]
    return torch.cat([ok, final_ok]), torch.cat([cost, torch.full_like(final_ok, ev.no_exit(method)[0])])


def matched_cost_gap(ev: SetupEvaluation) -> Callable[[torch.Tensor], torch.Tensor]:
    """``seed_gap`` as a function of test-image multiplicities [D, n]: every point's accuracy and cost
    recomputed on each resample, then ``front_gap`` (points of the plain backbone's MACs). Used for a
    bootstrap where only one training seed exists."""
    if not torch.equal(ev.tests["BC"].labels, ev.tests["CR"].labels):
        raise ValueError("BC and CR must be evaluated on the same test images")
    columns = {m: _front_columns(ev, m) for m in METHODS}

    def stat(w: torch.Tensor) -> torch.Tensor:
        n = w.sum(1, keepdim=True)
        # per resample: ([cost of each front point], [accuracy of each front point]) of each method
        draws = {m: zip((w @ cost.T / n).tolist(), (w @ ok.T / n).tolist()) for m, (ok, cost) in columns.items()}
        return torch.tensor([100 * front_gap(list(zip(*bc)), list(zip(*cr))) for bc, cr in zip(draws["BC"], draws["CR"])],
                            dtype=torch.float64)
    return stat


def _largest_growth(sizes: torch.Tensor, going_on: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Claim 5's statistic: the largest rise of mean |R_k| from one exit to the next, each mean over the
    images that go on past that exit (exits that no image passes are left out)."""
    sizes, going_on = sizes.double(), going_on.double()

    def stat(w: torch.Tensor) -> torch.Tensor:
        mean = (w @ (sizes * going_on).T) / (w @ going_on.T)   # [D, exits]; nan where none goes on
        rise = mean[:, 1:] - mean[:, :-1]
        return torch.where(rise.isnan(), -torch.inf, rise).amax(1)
    return stat


def _statistics(ev: SetupEvaluation) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Every claim's statistic on one seed's networks as a function of test-image multiplicities [D, n]
    (all ones: the value; random counts: a bootstrap resample), in the claim's unit."""
    bc, cr, out, macs = ev.authors["BC"].test, ev.authors["CR"].test, ev.tests["BC"], ev.macs["BC"]
    k_final = ev.num_exits - 1
    final_ok = (out.logits[-1].argmax(1) == out.labels).double()
    (ok,), (cost,) = _columns([bc], out.labels, macs)
    cr_cost = _columns([cr], out.labels, ev.macs["CR"])[1][0]
    high_ok = _columns([ev.limit(0.99)], out.labels, macs)[0][0]
    trace = exclusion_trace(out, ev.authors["BC"].policy).sum(2).double()
    going_on = torch.stack([(bc.exit_index > k).double() for k in range(k_final)])

    def mean(values: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda w: 100 * (w @ values) / w.sum(1)
    return {"macs": mean(cost), "drop": mean(final_ok - ok), "table_i": mean(cost - cr_cost),
            "matched": matched_cost_gap(ev), "early": mean((bc.exit_index < k_final).double()),
            "growth": _largest_growth(trace, going_on), "beta_high": mean(high_ok - final_ok)}


def _late_share(ev: SetupEvaluation) -> float:
    """Of the images leaving BC early at the authors' tolerance, the share leaving at exits that cost at least
    half of the plain backbone's MACs: how "early" the early exits are."""
    exit_index = ev.authors["BC"].test.exit_index
    early = exit_index < ev.num_exits - 1
    late = torch.tensor(ev.macs["BC"].exit_fractions, dtype=torch.float64)[exit_index] >= 0.5
    return float((early & late).sum()) / max(int(early.sum()), 1)


def claim_values(seed_evals: Sequence[SetupEvaluation]) -> dict[str, list[float]]:
    """The per-seed value of every claim statistic (for the metrics file), in the claims' units."""
    ones = torch.ones(1, len(seed_evals[0].tests["BC"]), dtype=torch.float64)
    stats = [_statistics(ev) for ev in seed_evals]
    return {key: [float(s[key](ones)[0]) for s in stats] for key in stats[0]}


def _estimate(stats: Sequence[Callable[[torch.Tensor], torch.Tensor]], n: int, draws: int,
              seed: int) -> tuple[float | None, tuple[float, float] | None, str]:
    """The mean over training seeds with the t interval over the per-seed values (two seeds or more);
    with one seed, the value on its networks and a percentile bootstrap over its n test images."""
    from ..stats import bootstrap_weighted, seed_interval
    values = [float(s(torch.ones(1, n, dtype=torch.float64))[0]) for s in stats]
    shown = ", ".join(f"{v:.3g}" for v in values)
    if not all(math.isfinite(v) for v in values):
        return None, None, f"not measurable on every seed (per seed: {shown})"
    if len(values) >= 2:
        mean, lo, hi = seed_interval(values)
        return mean, (lo, hi), f"mean and 95 % t interval over {len(values)} training seeds (per seed: {shown})"
    value, lo, hi = bootstrap_weighted(stats[0], n, draws, seed)
    return value, (lo, hi), (f"one training seed: percentile bootstrap over its {n} test images ({draws} resamples), "
                             "which covers the test sample, not retraining")


def setup_claims(seed_evals: Sequence[SetupEvaluation], setting: str, draws: int = DRAWS, seed: int = 0) -> list:
    """The paper's claims for one set-up, each row with where its statement and threshold come from (the
    paper's abstract, Table I and Fig. 4, the authors' code, or our reading) and its role. Every estimate
    is the mean over the training seeds of ``seed_evals`` (seed s of BC against seed s of CR) with a t
    interval over seeds; with one seed, a bootstrap over that seed's test images. The paper gives no
    retrievable numbers, so no row has a paper value except the authors' search tolerance."""
    from .claims import claim, paper_number
    ev, n = seed_evals[0], len(seed_evals[0].tests["BC"])
    stats = [_statistics(e) for e in seed_evals]
    none = paper_number(PAPER, quantity="paper_accuracy_and_mac_values")
    common = {"setting": setting, "paper_source": none.source}
    rivals = f"final-exit test accuracy {rivals_text(seed_evals)}"

    def est(key: str) -> tuple[float | None, tuple[float, float] | None, str]:
        return _estimate([s[key] for s in stats], n, draws, seed)

    value, interval, how = est("macs")
    claims = [claim("Class exclusion cuts the MACs of the full network", "BC mean MACs at the authors' tolerance", value,
                    claimed="less", than=100.0, interval=interval, unit="% of plain-backbone MACs", evidence=how,
                    statement_source=ABSTRACT, threshold_source="Abstract: \"can be reduced\", i.e. below the full "
                    "network (100 %); the paper's \"significantly\" has no number we could read", **common)]
    tol = ev.authors["BC"].search.tolerance
    try:
        authors_tol = paper_number(PAPER, method="BC", quantity="search_tolerance", **paper_setup_keys(ev.setup))
        paper, source = authors_tol.value, authors_tol.source
        tol_source = f"the authors' BC search tolerance, {authors_tol.value:g} % ({source})"
    except ValueError:
        paper, source, tol_source = None, none.source, f"our reading: this set-up's bc_tolerance, {100 * tol:g} %"
    value, interval, how = est("drop")
    claims.append(claim("Class exclusion keeps test accuracy within the search tolerance", "test accuracy drop of BC at "
                        "the authors' tolerance against the same network with exits disabled", value, claimed="less",
                        than=100 * tol, interval=interval, unit="points", evidence=how, setting=setting, paper=paper,
                        paper_source=source, role="our reading", threshold_source=tol_source,
                        statement_source="our reading: the paper bounds no test drop; beta is searched under a "
                        "validation accuracy tolerance (authors' code), and this row asks whether that tolerance "
                        "also holds on test (no allowance added for the validation-to-test transfer)"))
    value, interval, how = est("table_i")
    accuracies = {m: spread([e.authors[m].test.accuracy for e in seed_evals]) for m in METHODS}
    claims.append(claim("BC needs fewer MACs than CR (Table I: each at its authors' tolerance)", "BC remaining MACs at "
                        f"its authors' tolerance ({100 * tol:g} %) minus CR's at its own "
                        f"({100 * ev.authors['CR'].search.tolerance:g} %)", value, claimed="less", interval=interval,
                        unit="points of plain-backbone MACs", statement_source=TABLE_I,
                        threshold_source="Table I framing: fewer remaining MACs than CR, a difference below 0",
                        evidence=f"{how}; test accuracy there: BC {accuracies['BC']}, CR {accuracies['CR']}; {rivals}",
                        **common))
    value, interval, how = est("matched")
    grid = ", ".join(f"{100 * t:g}" for t in ev.tolerances)
    claims.append(claim("BC needs fewer MACs than CR at matched accuracy", "mean, over the test accuracies both fronts "
                        "span, of BC's cheapest MACs reaching an accuracy minus CR's (area between the fronts / its "
                        f"width; fronts: tolerances {grid} % and no early exit)", value, claimed="less",
                        interval=interval, unit="points of plain-backbone MACs", role="sensitivity",
                        statement_source=TABLE_I, threshold_source="our reading: 0 = the two fronts cost the same; one "
                        "tolerance grid for both removes Table I's looser CR tolerance", evidence=f"{how}; {rivals}",
                        **common))
    value, interval, how = est("early")
    late = [_late_share(e) for e in seed_evals]
    claims.append(claim("Many images leave at intermediate exits (Fig. 4)", "share of test images leaving BC before the "
                        "final layer at the authors' tolerance", value, than=100 * MANY_EARLY, interval=interval,
                        unit="% of test images", statement_source='Fig. 4 caption: "The number of input images that '
                        'can be classified in the intermediate exit point of neural networks"',
                        threshold_source=f"our reading: the caption gives no number; {100 * MANY_EARLY:g} % (one "
                        "image in five) is a share that moves the mean cost (argued in notebook 01)",
                        evidence=f"{how}; of the early-leaving images, {spread(late)} leave at exits costing at least "
                        "half of the plain backbone's MACs", **common))
    value, interval, how = est("growth")
    claims.append(claim("Exclusion grows with depth: fewer classes remain at deeper exits", "largest rise of the mean "
                        "number of remaining classes from one exit to the next (each over the images that go on "
                        "past that exit)", value, claimed="less", interval=interval, unit="classes", evidence=how,
                        role="our reading", statement_source="our reading of the abstract (\"exclude as many irrelevant "
                        "classes as possible, so that later layers only have to determine the target class among the "
                        "remaining classes\"): the set the later layers decide among shrinks exit by exit",
                        threshold_source="our reading: shrinking = no rise from one exit to the next (below 0)",
                        **common))
    differ = [int((e.limit(0.0).prediction != e.tests["BC"].logits[-1].argmax(1)).sum()) for e in seed_evals]
    claims.append(claim("Limits: beta = 0 reproduces the final classifier", "test images whose prediction differs "
                        "from the final classifier's, summed over seeds", sum(differ), claimed="less", than=1.0,
                        unit="images", evidence=f"deterministic property of the rule, checked on every test image of "
                        f"{len(seed_evals)} seed(s): no interval", deterministic=True, role="our reading",
                        statement_source="our reading: a property of the rule (classes scoring at most beta x the "
                        "top score are excluded, so beta = 0 excludes none), not a sentence of the paper",
                        threshold_source="our reading: a deterministic property, so one differing image refutes it",
                        **common))
    value, interval, how = est("beta_high")
    first = spread([e.limit(0.99).exit_shares[0] for e in seed_evals])
    claims.append(claim("Limits: a large beta sends almost every image out at exit 1 and accuracy drops",
                        "test accuracy at beta = 0.99 minus the final classifier's", value, claimed="less",
                        interval=interval, unit="points", evidence=f"{how}; {first} leave at exit 1",
                        role="our reading", statement_source="our reading: a property of the rule (beta near 1 "
                        "keeps only classes near the top score), not a sentence of the paper",
                        threshold_source="our reading: any drop (below 0)", **common))
    return claims


# ---------------------------------------------------------------- beside the paper, conclusions
def paper_comparisons(seed_evals: Sequence[SetupEvaluation], note: str) -> list[dict]:
    """Rows beside the paper for SUMMARY.md, means over the training seeds: the paper's accuracy and MAC
    values were not retrieved, so only the thresholds of the authors' test configs have a paper column."""
    from .report import comparison
    rows = [ev.table_i_row() for ev in seed_evals]
    ev, missing = seed_evals[0], f"{note}; mean over {len(rows)} seed(s); paper value not retrieved"

    def mean(key: str) -> float:
        return sum(r[key] for r in rows) / len(rows)
    out = [comparison("BC test accuracy (authors' tolerance)", 100 * mean("BC acc"), None, "%", missing),
           comparison("BC remaining MACs", mean("BC remaining MACs %"), None, "% of plain", missing),
           comparison("CR remaining MACs", mean("CR remaining MACs %"), None, "% of plain", missing),
           comparison("plain backbone test accuracy", 100 * mean("plain acc"), None, "%", f"{note}; mean over seeds")]
    authors = authors_thresholds(ev.setup)
    for method, key, column in (("BC", "beta", "beta"), ("CR", "tau", "tau")) if authors else ():
        ours = "; ".join(str([round(b, 2) for b in r[column]]) for r in rows)
        out.append(comparison(f"{method} {key}s ({ev.name}), per seed", ours, str(authors[key]), "",
                              note + "; authors' value from their code's test config"))
    return out


def claims_with_rivals(claims: Sequence, rivals: dict[str, str], profile: str | None = None):
    """``claims_table`` (verdicts "n/a (smoke)" on the smoke ``profile``) with a column giving, beside each
    comparison, the rivals' final-exit test accuracies of its set-up (``rivals``: {set-up name: text}; a
    claim's setting starts with its name)."""
    from .claims import claims_table
    table = claims_table(list(claims), profile)
    table.insert(3, "rivals' final-exit test accuracy",
                 [next((t for name, t in rivals.items() if c.setting.startswith(name)), "") for c in claims])
    return table


def conclusions(seed_evals: dict[str, Sequence[SetupEvaluation]], claims: Sequence) -> str:
    """Markdown: what this run shows, per set-up, with its numbers read from the evaluations (means over
    the training seeds) and every claim row that does not hold with its label."""
    lines = []
    for name, evs in seed_evals.items():
        rows = [ev.table_i_row() for ev in evs]
        t = {k: sum(r[k] for r in rows) / len(rows) for k, v in rows[0].items() if isinstance(v, float)}
        verdicts = [c for c in claims if c.setting.startswith(name)]
        paper = [c for c in verdicts if c.role == "paper"]
        lines.append(f"- **{name}** ({len(evs)} training seed(s); final-exit test accuracy {rivals_text(evs)}): "
                     f"{sum(c.verdict == 'supported' for c in paper)} of the {len(paper)} rows that measure the paper's "
                     f"own claims are supported; {len(verdicts) - len(paper)} more rows are sensitivity or our-reading "
                     f"rows. At the authors' tolerances BC reaches {100 * t['BC acc']:.2f} % "
                     f"({100 * t['BC final-exit acc']:.2f} % with exits disabled) at {t['BC remaining MACs %']:.1f} % "
                     f"of the plain backbone's MACs; CR reaches {100 * t['CR acc']:.2f} % at "
                     f"{t['CR remaining MACs %']:.1f} % (means over seeds).")
        gap = t["CR final-exit acc"] - t["BC final-exit acc"]
        if abs(gap) >= 0.005:
            lines.append(f"  BC's final classifier ends {100 * abs(gap):.1f} points {'below' if gap > 0 else 'above'} "
                         "CR's (exits disabled, mean over seeds): a training gap that weighs on the BC-against-CR rows "
                         "beside the exit rule.")
        for c in verdicts:
            if c.verdict != "supported":
                value = "not measured" if c.ours is None else f"{c.ours:.3g} {c.unit}"
                lines.append(f"  *{c.statement}*: {c.label} ({c.comparison}: {value}).")
    return "\n".join(lines)
