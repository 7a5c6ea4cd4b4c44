"""Differentiable branching (Scardapane et al., ICASSP 2020) and its BranchyNet baseline.

Every early exit b has a classifier f_b and a sigmoid gate g_b ("exit here"). Training replaces the
hard exit decision by the soft-conditional output, defined recursively from the last exit,

    f~_b = g_b f_b + (1 - g_b) f~_{b+1},    f~_{B+1} = f  (the backbone's own output, gate 1),

and minimises CE(f~_1) + lambda * mean_i cost~_1(x_i), where cost~ follows the same recursion over
the per-exit costs v_b (MACs of exiting at b, normalised so that the full network costs 1).
Unrolled, f~_1 = sum_b pi_b f_b with pi_b = g_b prod_{j<b} (1 - g_j): a mixture over "exit at b"
events (a test checks the recursion against this closed form). At inference the gates become hard:
leave at the first exit whose gate reaches t (``policies.GateThreshold``).

BranchyNet (Teerapittayanon et al., ICPR 2016) trains the same branches with a weighted sum of
per-exit cross-entropies (``losses.WeightedCE``) and exits when the entropy of an exit's softmax is
below that exit's threshold (``fit_branchynet``: per-exit thresholds chosen on validation).

The second half builds what notebook 03 shows from its trained runs, grouped per data set and backbone
(``BackboneRuns``: per training seed the plain backbone, BranchyNet and the proposed network at a lambda
fixed in advance; one network per lambda of the grid). Both methods' operating points are chosen on
validation by one rule, the cheapest within a tolerance of the best accuracy the method reaches
(``select_lambda``, ``fit_branchynet``). Then the paper's Table 1 per seed (``table1``), Table 2
(``table2``, ``latency_table``), the gate figures (Fig. 4 analogue, gates per epoch, accuracy vs MACs),
the numbers beside the paper's (``paper_comparisons``, read from data/paper_numbers) and the claims
with their verdicts (``check_claims``: t intervals over seeds, a bootstrap over test images for the
one-seed lambda grid), written up by ``conclusions`` so that no number of a run is typed by hand.
"""
from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from .. import rehearsal
from ..studies.claims import VERDICTS, Claim, PaperNumber, claim, paper_number
from ..evaluate import (PolicyResult, ThresholdSweep, evaluate_policy, random_thresholds, select,
                       shared_threshold_sweep, sweep_thresholds)
from ..losses import register_loss
from ..macs import MacTable
from ..multiexit import ExitOutputs, MultiExitNet
from ..outputs import CachedOutputs
from ..policies import Entropy, GateThreshold
from ..stats import bootstrap_weighted, seed_interval

__all__ = ["MIXING", "COST_REFERENCES", "soft_conditional", "exit_probabilities", "expected_cost",
           "normalised_exit_costs", "SoftConditionalLoss", "ensemble_accuracy", "ensemble_prediction",
           "gate_probabilities",
           # selections, tables, figures and claims of the notebook
           "PAPER", "PAPER_BACKBONES", "GATE_GRID", "ENTROPY_LOW_NATS", "KINDS", "BackboneRuns", "hard_gate_rule",
           "entropy_candidates", "BranchyChoice", "fit_branchynet", "LambdaChoice", "select_lambda", "lambda_choice",
           "candidate_budget", "paper_value", "exit_list", "parse_exit_list", "training_minutes", "branch_cost_table",
           "T1_COLUMNS", "Table1", "table1", "table2", "LatencyTable", "latency_table", "gate_values",
           "polarised_share", "plot_gate_distributions", "plot_accuracy_vs_macs", "gate_history", "plot_gate_history",
           "gate_collapse", "paper_comparisons", "rivals_note", "monotone_drop_rows", "lambda_monotone_drop",
           "lambda_cost_interval", "check_claims", "conclusions", "protocol", "metrics"]


MIXING = ("probabilities", "logits")      # what the recursion mixes (the slides do not say)
COST_REFERENCES = ("final", "backbone")   # what costs 1: the whole net with its heads, or the plain backbone


# ---------------------------------------------------------------- the recursion and its closed form
def soft_conditional(outputs: Sequence[torch.Tensor], gates: Sequence[torch.Tensor]) -> torch.Tensor:
    """f~_1 by the recursion from the last exit. ``outputs``: K tensors [N, C] (probabilities or
    logits, exit order); ``gates``: K-1 gate probabilities [N] of the early exits."""
    if len(gates) != len(outputs) - 1:
        raise ValueError(f"{len(outputs)} exits need {len(outputs) - 1} gates, got {len(gates)}")
    mix = outputs[-1]
    for f, g in zip(reversed(outputs[:-1]), reversed(gates)):
        g = g.unsqueeze(1)
        mix = g * f + (1 - g) * mix
    return mix


def exit_probabilities(gates: Sequence[torch.Tensor]) -> torch.Tensor:
    """Closed form of the mixture weights, pi_b = g_b prod_{j<b}(1 - g_j), the final exit taking
    what is left: [N, K], rows sum to 1. Also the chance of leaving at b if gates were coin flips."""
    g = torch.stack(list(gates), dim=1)                                    # [N, K-1]
    survive = torch.cumprod(torch.cat([torch.ones_like(g[:, :1]), 1 - g], dim=1), dim=1)  # [N, K]
    return survive * torch.cat([g, torch.ones_like(g[:, :1])], dim=1)


def expected_cost(gates: Sequence[torch.Tensor], costs: Sequence[float]) -> torch.Tensor:
    """cost~_1 per sample by the same recursion: cost~_b = g_b v_b + (1 - g_b) cost~_{b+1}, base v_K."""
    if len(costs) != len(gates) + 1:
        raise ValueError(f"{len(gates) + 1} exits need {len(gates) + 1} costs, got {len(costs)}")
    cost = torch.full_like(gates[-1], float(costs[-1])) if gates else torch.tensor(float(costs[-1]))
    for v, g in zip(reversed(costs[:-1]), reversed(gates)):
        cost = g * float(v) + (1 - g) * cost
    return cost


def normalised_exit_costs(macs: MacTable, reference: str = "final") -> list[float]:
    """Cost v_b of exiting at b (stages and heads run so far), as a fraction of ``reference``:
    'final' = running every stage and head (v_K = 1, as the Sapienza re-implementation divides by
    the final cost), 'backbone' = the plain backbone without heads (v_K = 1 + the heads' share)."""
    if reference not in COST_REFERENCES:
        raise ValueError(f"cost reference must be one of {COST_REFERENCES}, got {reference!r}")
    total = macs.exit_macs[-1] if reference == "final" else macs.backbone_macs
    return [m / total for m in macs.exit_macs]


# ---------------------------------------------------------------- the training objective
@register_loss("soft_conditional")
class SoftConditionalLoss:
    """CE(f~_1) + lam * mean expected cost. ``costs`` (one per exit) come from
    ``normalised_exit_costs`` and sit in the loss options, so they enter the run's config hash."""

    def __init__(self, num_exits: int, costs: Sequence[float], lam: float = 0.0,
                 mixing: str = "probabilities", eps: float = 1e-8):
        if len(costs) != num_exits:
            raise ValueError(f"{len(costs)} exit costs given for {num_exits} exits")
        if mixing not in MIXING:
            raise ValueError(f"mixing must be one of {MIXING}, got {mixing!r}")
        if lam < 0:
            raise ValueError(f"lam must be non-negative, got {lam}")
        self.costs, self.lam, self.mixing, self.eps = [float(c) for c in costs], float(lam), mixing, eps

    def __call__(self, outputs: ExitOutputs, targets: torch.Tensor) -> torch.Tensor:
        gates = gate_probabilities(outputs)
        logits = [z.float() for z in outputs.logits]
        if self.mixing == "probabilities":
            mix = soft_conditional([torch.softmax(z, 1) for z in logits], gates)
            ce = F.nll_loss(torch.log(mix + self.eps), targets)
        else:
            ce = F.cross_entropy(soft_conditional(logits, gates), targets)
        return ce + self.lam * expected_cost(gates, self.costs).mean() if self.lam else ce


def gate_probabilities(outputs: ExitOutputs) -> list[torch.Tensor]:
    """sigmoid of the early exits' gate logits (the final exit has none: its gate is 1)."""
    early = outputs.gates[:-1]
    if any(g is None for g in early):
        raise ValueError("the soft-conditional output needs gated heads on every early exit")
    return [torch.sigmoid(g.float()) for g in early]


# ---------------------------------------------------------------- evaluation on cached outputs
def ensemble_accuracy(outputs: CachedOutputs, mixing: str = "probabilities") -> float:
    """Accuracy of argmax f~_1 (the paper's option 1: every exit runs, no speed-up)."""
    return (ensemble_prediction(outputs, mixing) == outputs.labels).float().mean().item()


def ensemble_prediction(outputs: CachedOutputs, mixing: str = "probabilities") -> torch.Tensor:
    """argmax f~_1 per image: the ensemble's prediction, every exit having run."""
    if outputs.gates is None:
        raise ValueError("cached outputs without gates: not a gated network")
    gates = [torch.sigmoid(g) for g in outputs.gates[:-1]]
    parts = [torch.softmax(z, 1) for z in outputs.logits] if mixing == "probabilities" else list(outputs.logits)
    return soft_conditional(parts, gates).argmax(1)


# ---------------------------------------------------------------- the notebook's runs and selections
PAPER = "differentiable_branching"         # data/paper_numbers/<PAPER>.csv
PAPER_BACKBONES = {"vgg13": "vgg13", "resnet18_cifar": "resnet18", "alexnet_cifar": "alexnet"}
GATE_GRID = tuple(i / 50 for i in range(1, 50))    # hard-gate thresholds t of the accuracy-vs-MACs curves
ENTROPY_LOW_NATS = 1e-4                            # smallest entropy threshold BranchyNet may get


class RunLike(Protocol):
    """What the tables read from a trained run (``train.TrainedRun``)."""
    net: MultiExitNet
    macs: MacTable
    spec: Any

    def outputs(self, split: str) -> CachedOutputs: ...

    def loader(self, split: str, batch_size: int = 500) -> Any: ...

    @property
    def epochs_trained(self) -> int: ...

    def at_epoch(self, epoch: int) -> "RunLike": ...


KINDS = ("plain", "branchynet", "proposed", "grid")


@dataclass
class BackboneRuns:
    """The runs compared on one data set and backbone: per training seed the plain backbone, BranchyNet
    and the proposed method at the lambda fixed in advance; per lambda of the grid one network (one seed).
    Cached outputs are read from disk once and kept here, since every table and claim reads them again."""
    dataset: str
    backbone: str
    plain: dict[int, RunLike]
    branchynet: dict[int, RunLike]
    proposed: dict[int, RunLike]
    grid: dict[float, RunLike]
    headline_lambda: float
    _outputs: dict = field(default_factory=dict, repr=False)

    def run(self, kind: str, key: int | float) -> RunLike:
        """``kind``: 'plain', 'branchynet', 'proposed' (key: seed) or 'grid' (key: lambda)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return getattr(self, kind)[key]

    def outputs(self, kind: str, key: int | float, split: str) -> CachedOutputs:
        if (kind, key, split) not in self._outputs:
            self._outputs[(kind, key, split)] = self.run(kind, key).outputs(split)
        return self._outputs[(kind, key, split)]

    @property
    def seeds(self) -> list[int]:
        return list(self.proposed)

    @property
    def paper_backbone(self) -> str:
        return PAPER_BACKBONES.get(self.backbone, self.backbone)

    def all_runs(self) -> dict[str, RunLike]:
        """Every run by a readable label ('plain s0', 'grid lambda=0.1', ...)."""
        out = {f"{k} s{s}": r for k in ("plain", "branchynet", "proposed") for s, r in getattr(self, k).items()}
        return {**out, **{f"grid lambda={lam:g}": r for lam, r in self.grid.items()}}


def hard_gate_rule(num_exits: int, threshold: float) -> GateThreshold:
    """Leave at the first branch whose gate reaches ``threshold``; the final classifier takes the rest."""
    return GateThreshold([threshold] * (num_exits - 1))


def entropy_candidates(num_classes: int, num_early: int, shared: int, random: int, seed: int = 0,
                       low_nats: float = ENTROPY_LOW_NATS) -> torch.Tensor:
    """BranchyNet's candidate per-exit entropy thresholds [T, K-1] in the rule's unit (normalised entropy,
    nats / ln C): ``shared`` values log-spaced from ``low_nats`` to ln C used by every exit, ``random``
    vectors drawn log-uniformly on the same range independently per exit (``evaluate.random_thresholds``),
    and a last row that never exits early (the final exit alone)."""
    top = math.log(num_classes)
    lo, hi = math.log(low_nats), math.log(top)
    nats = [torch.exp(torch.linspace(lo, hi, shared, dtype=torch.float64))[:, None].expand(-1, num_early)]
    if random:
        u = random_thresholds(random, torch.zeros(num_early, 1), "uniform", seed)[:-1].double()
        nats.append(torch.exp(lo + u * (hi - lo)))
    return torch.cat([(torch.cat(nats) / top).float(), torch.full((1, num_early), -1.0)])


@dataclass
class BranchyChoice:
    point: dict              # the chosen threshold vector with its validation and test accuracy and cost
    sweep: ThresholdSweep    # every candidate
    reference: float         # best validation accuracy among the candidates (final exit alone included)
    num_classes: int

    def nats(self) -> list[float]:
        """The chosen thresholds in nats (negative: that exit never lets an input out)."""
        return [round(t * math.log(self.num_classes), 6) for t in self.point["thresholds"]]


def fit_branchynet(val: CachedOutputs, test: CachedOutputs, macs: MacTable, candidates: torch.Tensor,
                   tolerance: float) -> BranchyChoice:
    """BranchyNet's per-exit entropy thresholds by the rule that also picks the proposed method's lambda:
    the cheapest candidate on validation whose accuracy is within ``tolerance`` of the best validation
    accuracy any candidate reaches. Test columns are only reported."""
    sweep = sweep_thresholds(val, test, Entropy((0.0,) * (val.num_exits - 1)), candidates, macs)
    reference = float(sweep.val_accuracy.max())
    return BranchyChoice(sweep.select(reference=reference, tolerance=tolerance), sweep, reference, val.logits.shape[2])


@dataclass
class LambdaChoice:
    frame: pd.DataFrame                 # per lambda: validation and test ensemble, hard-exit accuracy and cost
    chosen: float
    reference: float                    # best validation ensemble accuracy of the grid
    hard: dict[float, PolicyResult]     # hard-gate exits on test, per lambda


def select_lambda(models: dict[float, tuple[CachedOutputs, CachedOutputs, MacTable]], mixing: str,
                  gate_threshold: float, tolerance: float) -> LambdaChoice:
    """The cheapest hard-exit model on validation whose hard-exit accuracy is within ``tolerance`` of the
    best validation ensemble accuracy of the grid (``models``: lambda -> (val, test, MAC table)). Where no
    model qualifies, the most accurate hard-exit model on validation (the frame says so)."""
    lams = sorted(models)
    rows, hard = [], {}
    for lam in lams:
        val, test, macs = models[lam]
        rule = hard_gate_rule(val.num_exits, gate_threshold)
        v, hard[lam] = evaluate_policy(val, rule, macs), evaluate_policy(test, rule, macs)
        rows.append({"lambda": lam, "val ensemble acc": ensemble_accuracy(val, mixing), "val hard-exit acc": v.accuracy,
                     "val MACs / plain": v.mean_fraction, "test ensemble acc": ensemble_accuracy(test, mixing),
                     "test hard-exit acc": hard[lam].accuracy, "test MACs / plain": hard[lam].mean_fraction,
                     "test exits": exit_list(hard[lam].exit_shares)})
    frame = pd.DataFrame(rows)
    reference = float(frame["val ensemble acc"].max())
    cost, acc = torch.tensor(frame["val MACs / plain"].values), torch.tensor(frame["val hard-exit acc"].values)
    i = select(cost, acc, reference=reference, tolerance=tolerance)
    frame["within tolerance"] = (acc >= reference - tolerance - 1e-12).tolist()
    if i is None:
        i = select(cost, acc, budget=float(cost.max()))
    frame["chosen"] = [k == i for k in range(len(lams))]
    return LambdaChoice(frame, lams[i], reference, hard)


def lambda_choice(group: BackboneRuns, mixing: str, gate_threshold: float, tolerance: float) -> LambdaChoice:
    """``select_lambda`` over the group's grid."""
    return select_lambda({lam: (group.outputs("grid", lam, "val"), group.outputs("grid", lam, "test"), r.macs)
                          for lam, r in group.grid.items()}, mixing, gate_threshold, tolerance)


def candidate_budget(groups: Iterable[BackboneRuns], gate_grid: Sequence[float] = GATE_GRID) -> int:
    """The proposed method's tuning budget per backbone: its trainings (seeds and grid) times the gate
    thresholds a reader could sweep (only t is fixed here, so this overstates what it used)."""
    return max(len(g.proposed) + len(g.grid) for g in groups) * len(gate_grid)


# ---------------------------------------------------------------- the paper's tables
def paper_value(**where: str | float | int) -> PaperNumber | None:
    """The paper's number matching ``where`` (see ``claims.paper_number``), None where the slides give none."""
    try:
        return paper_number(PAPER, **where)
    except ValueError:
        return None


def _paper_accuracy(group: BackboneRuns, method: str) -> float:
    p = paper_value(table=1, dataset=group.dataset, backbone=group.paper_backbone, method=method,
                    quantity="test_accuracy")
    return float("nan") if p is None else p.value / 100


def exit_list(shares: Sequence[float]) -> str:
    """Shares of inputs per exit as the paper's Table 2 writes them ('#1: 1.3%, #4: 82.1%'), exits from 1."""
    return ", ".join(f"#{k + 1}: {100 * s:.1f}%" for k, s in enumerate(shares) if s > 0)


def parse_exit_list(text: str) -> dict[int, float]:
    """Inverse of ``exit_list``: exit number -> share (0-1), e.g. for the paper's Table 2 cells."""
    return {int(k): float(v) / 100 for k, v in re.findall(r"#(\d+):\s*([\d.]+)%", text)}


def training_minutes(groups: Iterable[BackboneRuns]) -> pd.DataFrame:
    """Training wall time in minutes of every run (reference runs included: their time is spent once)."""
    return pd.DataFrame([{"data": g.dataset, "backbone": g.backbone, "run": label, "minutes": r.train_seconds / 60}
                         for g in groups for label, r in g.all_runs().items()])


def branch_cost_table(groups: Iterable[BackboneRuns], cost_reference: str) -> pd.DataFrame:
    """Branches per backbone, MACs of the plain backbone and of all early heads, and the exit costs v_b."""
    rows = []
    for g in groups:
        run = g.proposed[g.seeds[0]]
        v = normalised_exit_costs(run.macs, cost_reference)
        rows.append({"backbone": g.backbone, "branches": run.net.num_exits - 1,
                     "plain MMACs": g.plain[g.seeds[0]].macs.backbone_macs / 1e6,
                     "all heads MMACs": sum(run.macs.head_macs[:-1]) / 1e6,
                     "v_b": " ".join(f"{c:.3f}" for c in v)})
    return pd.DataFrame(rows)


T1_COLUMNS = ("plain", "BranchyNet (final exit)", "BranchyNet (entropy exits)", "BranchyNet MACs / plain",
              "proposed (ensemble)", "proposed (final exit)", "proposed (hard exits)", "proposed MACs / plain")


@dataclass
class Table1:
    per_seed: pd.DataFrame
    summary: pd.DataFrame
    branchynet: dict[tuple[str, str, int], BranchyChoice]
    hard: dict[tuple[str, str, int], PolicyResult]          # the proposed method's hard exits on test

    def values(self, dataset: str, backbone: str, column: str) -> list[float]:
        """``column`` of Table 1 per seed, in seed order."""
        part = self.per_seed[(self.per_seed.dataset == dataset) & (self.per_seed.backbone == backbone)]
        return part.sort_values("seed")[column].tolist()


def table1(groups: Iterable[BackboneRuns], mixing: str, gate_threshold: float, tolerance: float, bnet_shared: int,
           bnet_random: int, gate_grid: Sequence[float] = GATE_GRID) -> Table1:
    """The paper's Table 1 per training seed: plain, BranchyNet (final exit, and per-exit entropy exits chosen
    on validation), the proposed network at the lambda fixed in advance (ensemble, final exit, hard exits);
    then mean and standard deviation over seeds beside the paper's numbers. BranchyNet gets at least as
    many candidate threshold vectors as ``candidate_budget``."""
    groups = list(groups)
    budget = candidate_budget(groups, gate_grid)
    rows, summary, branchy, hard = [], [], {}, {}
    for g in groups:
        for seed in g.seeds:
            b_val, b_test = g.outputs("branchynet", seed, "val"), g.outputs("branchynet", seed, "test")
            candidates = entropy_candidates(b_val.logits.shape[2], b_val.num_exits - 1, bnet_shared, bnet_random, seed)
            if len(candidates) < budget:
                raise ValueError(f"BranchyNet gets {len(candidates)} threshold vectors, fewer than the proposed "
                                 f"method's {budget} (trainings x gate thresholds)")
            b = branchy[(g.dataset, g.backbone, seed)] = fit_branchynet(
                b_val, b_test, g.run("branchynet", seed).macs, candidates, tolerance)
            test, run = g.outputs("proposed", seed, "test"), g.run("proposed", seed)
            h = hard[(g.dataset, g.backbone, seed)] = evaluate_policy(
                test, hard_gate_rule(run.net.num_exits, gate_threshold), run.macs)
            rows.append({"dataset": g.dataset, "backbone": g.backbone, "seed": seed,
                         "plain": g.outputs("plain", seed, "test").exit_accuracies()[-1],
                         "BranchyNet (final exit)": b_test.exit_accuracies()[-1],
                         "BranchyNet (entropy exits)": b.point["test_accuracy"],
                         "BranchyNet MACs / plain": b.point["test_cost"],
                         "proposed (ensemble)": ensemble_accuracy(test, mixing),
                         "proposed (final exit)": test.exit_accuracies()[-1],
                         "proposed (hard exits)": h.accuracy, "proposed MACs / plain": h.mean_fraction})
        part = pd.DataFrame(rows[-len(g.seeds):])
        summary.append({"dataset": g.dataset, "backbone": g.backbone, "seeds": len(g.seeds),
                        "lambda (fixed)": g.headline_lambda,
                        **{f"{c} mean": part[c].mean() for c in T1_COLUMNS},
                        **{f"{c} sd": part[c].std(ddof=1) if len(part) > 1 else float("nan") for c in T1_COLUMNS[:1]
                           + T1_COLUMNS[1:2] + T1_COLUMNS[4:5]},
                        "paper plain": _paper_accuracy(g, "baseline"), "paper B-NET": _paper_accuracy(g, "branchynet"),
                        "paper proposed": _paper_accuracy(g, "proposed")})
    return Table1(pd.DataFrame(rows), pd.DataFrame(summary), branchy, hard)


def table2(group: BackboneRuns, t1: Table1, choice: LambdaChoice, mixing: str, cost_reference: str) -> pd.DataFrame:
    """The paper's Table 2 without timing, from cached test outputs: hard-gate accuracy beside the ensemble,
    mean MACs over the plain backbone, the soft expected cost the loss sees, and the share of inputs per
    exit (final included), for every seed at the fixed lambda and for the grid's lambda chosen on validation."""
    rows = []
    models = [(f"lambda={group.headline_lambda:g} (fixed), seed {s}", "proposed", s, t1.hard[(group.dataset, group.backbone, s)])
              for s in group.seeds]
    models.append((f"lambda={choice.chosen:g} (val), warm start", "grid", choice.chosen, choice.hard[choice.chosen]))
    for label, kind, key, r in models:
        test, run = group.outputs(kind, key, "test"), group.run(kind, key)
        soft = expected_cost([torch.sigmoid(z) for z in test.gates[:-1]],
                             normalised_exit_costs(run.macs, cost_reference)).mean().item()
        rows.append({"model": label, "ensemble acc": ensemble_accuracy(test, mixing), "hard-exit acc": r.accuracy,
                     "MACs / plain": r.mean_fraction, "soft expected cost": soft,
                     "shares sum (%)": 100 * sum(r.exit_shares), "exits": exit_list(r.exit_shares)})
    p = _paper_table2_row(group.paper_backbone)
    rows.append({"model": p["backbone"], "hard-exit acc": p["hard-exit acc"], "exits": p["exits (timed images)"]})
    return pd.DataFrame(rows)


@dataclass
class LatencyTable:
    frame: pd.DataFrame
    timed: dict[str, dict]     # one ``speed.speed_rows`` result per timed model
    header: str

    def speed_up(self, label: str) -> float:
        """t_plain / t - 1, in % (medians)."""
        return 100 * (self.timed[label]["realised"] - 1)


def latency_table(group: BackboneRuns, choice: LambdaChoice, gate_threshold: float, images: int,
                  repeats: int) -> LatencyTable:
    """Batch-1 wall time of the real early-exit forward with hard gates (``speed.speed_rows``: the first
    ``images`` test images one by one, one thread, ``repeats`` interleaved with the plain backbone's) of the
    first seed's network at the fixed lambda and of the grid's chosen network, each in its inference form
    (``inference.inference_form``) against its own backbone in the same form."""
    from ..inference import inference_form
    from ..speed import speed_rows
    seed = group.seeds[0]
    x, _ = next(iter(group.run("plain", seed).loader("test", batch_size=images)))
    x = x[:rehearsal.cap(len(x), rehearsal.LATENCY_IMAGES)]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    timed, rows = {}, []
    try:
        for label, kind, key in ((f"lambda={group.headline_lambda:g} (fixed), seed {seed}", "proposed", seed),
                                 (f"lambda={choice.chosen:g} (val), warm start", "grid", choice.chosen)):
            run = group.run(kind, key)
            r = timed[label] = speed_rows(inference_form(run.net), x, hard_gate_rule(run.net.num_exits, gate_threshold),
                                          run.macs, 1, rehearsal.cap(repeats, 1), {"model": label})
            rows.append({"model": label, "plain ms": statistics.median(r["plain ms"]),
                         "ms": statistics.median(r["early exit ms"]), "speed-up (%)": 100 * (r["realised"] - 1),
                         "time saved (%)": 100 * (1 - 1 / r["realised"]),
                         "MAC-predicted speed-up (%)": 100 * (r["predicted"] - 1),
                         "exits (timed images)": exit_list(r["exit shares"])})
    finally:
        torch.set_num_threads(previous)
    p = _paper_table2_row(group.paper_backbone)
    rows.append({"model": p["backbone"], "ms": p["ms"], "speed-up (%)": p["speed-up (%)"],
                 "exits (timed images)": p["exits (timed images)"]})
    header = (f"batch-1 latency: {len(x)} test images one by one, median of {rehearsal.cap(repeats, 1)} repeats "
              "interleaved with the plain backbone's, 1 torch thread, float32, inference form (batch norm folded, "
              "channels_last), real early-exit forward")
    return LatencyTable(pd.DataFrame(rows), timed, header)


def _paper_table2_row(backbone: str) -> dict:
    def value(quantity: str):
        p = paper_value(table=2, backbone=backbone, quantity=quantity)
        return None if p is None else p.value
    acc, ms, up = value("test_accuracy"), value("inference_time"), value("speed_up")
    return {"backbone": f"paper {backbone}", "hard-exit acc": float("nan") if acc is None else acc / 100,
            "ms": float("nan") if ms is None else ms, "speed-up (%)": float("nan") if up is None else up,
            "exits (timed images)": value("exits") or ""}



# ---------------------------------------------------------------- gates: Fig. 4 and their training history
def gate_values(outputs: CachedOutputs) -> torch.Tensor:
    """Gate probabilities of the early exits, [K-1, N]."""
    return torch.sigmoid(outputs.gates[:-1])


def polarised_share(gates: torch.Tensor, low: float = 0.1, high: float = 0.9) -> torch.Tensor:
    """Per image, the share of its branches whose gate is below ``low`` or above ``high`` ([K-1, N] -> [N]);
    its mean is the share of all gate values that are polarised."""
    return ((gates < low) | (gates > high)).double().mean(0)


def plot_gate_distributions(group: BackboneRuns, choice: LambdaChoice):
    """Fig. 4 analogue: test gate histograms of an early, a middle and a late branch of the first seed's
    network at the fixed lambda and of the grid's chosen network. Returns the figure and the share of
    polarised gate values of every seed's network at the fixed lambda."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), squeeze=False)
    models = ((f"seed {group.seeds[0]}, lambda={group.headline_lambda:g} (fixed)", "proposed", group.seeds[0]),
              (f"warm start, lambda={choice.chosen:g} (val)", "grid", choice.chosen))
    for ax, (title, kind, key) in zip(axes[0], models):
        gates = gate_values(group.outputs(kind, key, "test"))
        for b in sorted({0, (len(gates) - 1) // 2, len(gates) - 1}):
            ax.hist(gates[b].numpy(), bins=40, range=(0, 1), alpha=0.55, label=f"branch {b + 1}")
        ax.set_yscale("log")
        ax.set(title=f"{group.backbone}, {title}", xlabel="gate g_b(x) on test", ylabel="images")
        ax.legend()
    polarised = {s: polarised_share(gate_values(group.outputs("proposed", s, "test"))).mean().item() for s in group.seeds}
    return fig, polarised


def plot_accuracy_vs_macs(group: BackboneRuns, t1: Table1, choice: LambdaChoice, mixing: str,
                          gate_grid: Sequence[float] = GATE_GRID):
    """Test accuracy against mean MACs / plain MACs: every grid network and the first seed's network at the
    fixed lambda with t swept, their ensembles (open circles), BranchyNet's validation front of per-exit
    entropy thresholds (first seed, test values), both chosen operating points and the plain backbone.
    Returns the figure and the gate sweeps by label."""
    import matplotlib.pyplot as plt
    seed, sweeps = group.seeds[0], {}
    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    models = [(f"grid lambda={lam:g}", "grid", lam) for lam in sorted(group.grid)]
    models.append((f"lambda={group.headline_lambda:g} fixed, seed {seed}", "proposed", seed))
    for label, kind, key in models:
        run = group.run(kind, key)
        s = sweeps[label] = shared_threshold_sweep(group.outputs(kind, key, "val"), group.outputs(kind, key, "test"),
                                                   hard_gate_rule(run.net.num_exits, 0.0), gate_grid, run.macs)
        line, = ax.plot(s.test_cost, 100 * s.test_accuracy, marker=".", ms=2, lw=1, label=label,
                        ls="--" if kind == "proposed" else "-")
        ax.scatter([run.macs.exit_fractions[-1]], [100 * ensemble_accuracy(group.outputs(kind, key, "test"), mixing)],
                   facecolors="none", edgecolors=line.get_color(), s=40)
    b = t1.branchynet[(group.dataset, group.backbone, seed)]
    cost, acc = b.sweep.curve("test")
    ax.plot(cost, [100 * a for a in acc], "k-", marker=".", ms=3, label="BranchyNet entropy (val front)")
    ax.scatter([b.point["test_cost"]], [100 * b.point["test_accuracy"]], marker="s", c="k", s=50, zorder=5,
               label="BranchyNet chosen (val)")
    r = choice.hard[choice.chosen]
    ax.scatter([r.mean_fraction], [100 * r.accuracy], marker="D", c="tab:red", s=50, zorder=5,
               label=f"proposed chosen (val): lambda={choice.chosen:g}")
    ax.scatter([1.0], [100 * group.outputs("plain", seed, "test").exit_accuracies()[-1]], marker="*", s=150, c="k",
               zorder=5, label="plain backbone")
    ax.set(title=f"{group.backbone} ({group.dataset}, test)", xlabel="mean MACs / plain-backbone MACs",
           ylabel="test accuracy (%)")
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1, 0.5))
    return fig, sweeps


def gate_history(models: dict[str, RunLike]) -> pd.DataFrame:
    """Mean validation gate of every branch after every epoch (from the per-epoch checkpoints), one row
    per model, epoch and branch: shows whether the gates collapse during training."""
    rows = []
    for label, run in models.items():
        for epoch in range(1, run.epochs_trained + 1):
            snap = run.at_epoch(epoch)
            mean = gate_values(snap.outputs("val")).mean(1)
            rows += [{"model": label, "lambda": run.spec.loss.options["lam"], "epoch": snap.epoch, "branch": b + 1,
                      "mean gate": v} for b, v in enumerate(mean.tolist())]
    return pd.DataFrame(rows)


def plot_gate_history(history: pd.DataFrame, columns: int = 4):
    """Mean validation gate per branch against the epoch, one panel per model."""
    import matplotlib.pyplot as plt
    labels = list(dict.fromkeys(history["model"]))
    nrows = -(-len(labels) // columns)
    fig, axes = plt.subplots(nrows, columns, figsize=(3.2 * columns, 2.6 * nrows), squeeze=False, sharey=True)
    for ax, label in zip(axes.flat, labels):
        wide = history[history.model == label].pivot(index="epoch", columns="branch", values="mean gate")
        for branch in wide.columns:
            ax.plot(wide.index, wide[branch], marker="o", ms=3, label=f"branch {branch}",
                    color=plt.cm.viridis((branch - 1) / max(1, len(wide.columns) - 1)))
        ax.set(title=label, ylim=(0, 1), xticks=list(wide.index), xlabel="epoch")
    for ax in axes.flat[len(labels):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("mean gate (val)")
    axes[0, -1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig


def gate_collapse(history: pd.DataFrame, shut: float = 0.05, open_: float = 0.95) -> pd.DataFrame:
    """After the last epoch, per model: the mean validation gate of the first and last
    branch, the largest, and the state: 'all shut' (every mean gate below ``shut``: the branches are never
    used), 'first gate open' (above ``open_``: everything leaves at the weakest branch) or 'no collapse'."""
    final = history[history.epoch == history.groupby("model").epoch.transform("max")]
    rows = []
    for label, part in final.groupby("model", sort=False):
        g = part.sort_values("branch")["mean gate"].tolist()
        state = (f"all shut (< {shut:g})" if max(g) < shut else
                 f"first gate open (> {open_:g})" if g[0] > open_ else "no collapse")
        rows.append({"model": label, "first": g[0], "last": g[-1], "max": max(g), "state": state})
    return pd.DataFrame(rows)



# ---------------------------------------------------------------- paper numbers beside ours, claims, conclusions
def paper_comparisons(t1: Table1, t2: dict[str, pd.DataFrame], lat: dict[str, LatencyTable],
                      choices: dict[tuple[str, str], LambdaChoice], setting: str) -> list[dict]:
    """Every number of the paper's Tables 1 and 2 that we measure, beside ours (``report.comparison``);
    Table 1 as the mean over seeds."""
    from ..studies.report import comparison
    out = []
    for row in t1.summary.to_dict("records"):
        s = PAPER_BACKBONES.get(row["backbone"], row["backbone"])
        for method, ours, pap in (("plain", "plain", "paper plain"),
                                  ("BranchyNet final exit", "BranchyNet (final exit)", "paper B-NET"),
                                  ("proposed ensemble", "proposed (ensemble)", "paper proposed")):
            out.append(comparison(f"{row['dataset']} {s} {method} test accuracy", round(100 * row[f"{ours} mean"], 2),
                                  None if pd.isna(row[pap]) else round(100 * row[pap], 2), "%",
                                  f"{setting}, mean of {row['seeds']} seeds"
                                  + (", JPEG CIFAR-10 copy" if row["dataset"] == "cifar10" else "")
                                  + (f", lambda={row['lambda (fixed)']:g}" if method.startswith("proposed") else "")))
    for (d, bb), choice in choices.items():
        s = PAPER_BACKBONES.get(bb, bb)
        pap = paper_value(table=2, backbone=s, quantity="test_accuracy")
        out.append(comparison(f"{d} {s} proposed hard-exit test accuracy", round(100 * choice.hard[choice.chosen].accuracy, 2),
                              None if pap is None else pap.value, "%", f"lambda={choice.chosen:g} chosen on validation"))
        if bb in lat:
            label = f"lambda={choice.chosen:g} (val), warm start"
            pap = paper_value(table=2, backbone=s, quantity="speed_up")
            out.append(comparison(f"{d} {s} batch-1 speed-up t_plain/t - 1", round(lat[bb].speed_up(label), 1),
                                  None if pap is None else pap.value, "%",
                                  f"1 CPU thread, {lat[bb].timed[label]['images']} images, inference form"))
    return out


def _correct(prediction: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (prediction == labels).double()


def rivals_note(t1: Table1, dataset: str, backbone: str) -> str:
    """The final-exit test accuracies of every compared network (mean over seeds), shown beside each claim
    so that a training gap between rivals is visible."""
    row = t1.summary[(t1.summary.dataset == dataset) & (t1.summary.backbone == backbone)].iloc[0]
    return (f"final exits (mean of {row['seeds']} seeds): plain {100 * row['plain mean']:.2f}%, BranchyNet "
            f"{100 * row['BranchyNet (final exit) mean']:.2f}%, proposed {100 * row['proposed (final exit) mean']:.2f}%")


def _over_seeds(statement: str, comparison: str, values: Sequence[float], **options) -> Claim:
    """A claim on per-seed values (seed s of every method paired): t interval over seeds where there
    are at least two."""
    if len(values) >= 2:
        mean, lo, hi = seed_interval(list(values))
        return claim(statement, comparison, mean, interval=(lo, hi),
                     evidence=f"t interval over {len(values)} training seeds (seed s of each network paired)", **options)
    return claim(statement, comparison, values[0], evidence="one training seed: no interval across trainings", **options)


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


def lambda_cost_interval(group: BackboneRuns, choice: LambdaChoice) -> tuple[float, float, float]:
    """``lambda_monotone_drop`` of the grid's test hard-exit MACs / plain and its bootstrap interval over test
    images (every grid network judged on the same resample). One network per lambda: the interval covers
    which test images were drawn, not what another training seed would give."""
    lams = sorted(choice.hard)
    per_image = torch.stack([torch.tensor(group.run("grid", lam).macs.exit_macs, dtype=torch.float64)
                             [choice.hard[lam].exit_index] / group.run("grid", lam).macs.backbone_macs for lam in lams])
    n = per_image.shape[1]
    return bootstrap_weighted(lambda w: monotone_drop_rows(w @ per_image.T / n), n)


def check_claims(t1: Table1, group: BackboneRuns, choice: LambdaChoice, polarised: dict[int, float], mixing: str,
                 setting: str, max_drop: float = 0.03, max_macs: float = 0.9, min_top2: float = 0.7,
                 min_polarised: float = 0.8) -> list[Claim]:
    """The paper's claims on one data set and backbone, each with the rivals' final-exit accuracies beside it.

    1-2. Table 1: plain <= BranchyNet (final exit) <= proposed (ensemble, lambda fixed in advance): the two
         steps per seed, t interval over seeds.
    3-4. Table 2: at the fixed lambda, hard exits lose less than ``max_drop`` against the same network's
         ensemble and cost less than ``max_macs`` of the plain backbone (per seed, t interval over seeds).
    5.   Inputs concentrate: more than ``min_top2`` leave at the two busiest exits (per seed).
    6.   Fig. 4: more than ``min_polarised`` of the gate values lie below 0.1 or above 0.9 (per seed).
    7.   A larger lambda moves exits earlier over the warm-start grid: one network per lambda, bootstrap
         over test images of the cost differences (what it does not cover is in its evidence).
    """
    d, bb, s = group.dataset, group.backbone, group.paper_backbone
    note, where = rivals_note(t1, d, bb), f"{setting}, {d} {s}"
    vals = {c: t1.values(d, bb, c) for c in T1_COLUMNS}
    row = t1.summary[(t1.summary.dataset == d) & (t1.summary.backbone == bb)].iloc[0]
    src = paper_value(table=1, dataset=d, backbone=s, method="proposed", quantity="test_accuracy")
    src = "" if src is None else src.source
    paper_step = {"b": row["paper B-NET"] - row["paper plain"], "p": row["paper proposed"] - row["paper B-NET"]}
    claims = [
        _over_seeds(f"Table 1: BranchyNet (final exit) >= plain ({s})",
                    f"BranchyNet final exit - plain, test accuracy; {note}",
                    [100 * (b - p) for b, p in zip(vals["BranchyNet (final exit)"], vals["plain"])], unit="points",
                    setting=where, paper=None if pd.isna(paper_step["b"]) else round(100 * paper_step["b"], 2),
                    paper_source=src),
        _over_seeds(f"Table 1: proposed (ensemble) >= BranchyNet (final exit) ({s})",
                    f"proposed ensemble (lambda={group.headline_lambda:g}, fixed) - BranchyNet final exit, test "
                    f"accuracy; {note}",
                    [100 * (p - b) for p, b in zip(vals["proposed (ensemble)"], vals["BranchyNet (final exit)"])],
                    unit="points", setting=where,
                    paper=None if pd.isna(paper_step["p"]) else round(100 * paper_step["p"], 2), paper_source=src)]
    fixed = f"{where}, lambda={group.headline_lambda:g} (fixed)"
    p_ens = paper_value(table=1, dataset=d, backbone=s, method="proposed", quantity="test_accuracy")
    p_hard = paper_value(table=2, dataset=d, backbone=s, quantity="test_accuracy")
    claims.append(_over_seeds(f"Table 2: hard exits lose little accuracy against the ensemble ({s})",
                              f"ensemble - hard-exit test accuracy, same network; {note}",
                              [100 * (e - h) for e, h in zip(vals["proposed (ensemble)"], vals["proposed (hard exits)"])],
                              claimed="less", than=100 * max_drop, unit="points", setting=fixed,
                              paper=None if p_ens is None or p_hard is None else round(p_ens.value - p_hard.value, 2),
                              paper_source="" if p_hard is None else "Table 1 proposed - " + p_hard.source))
    up = paper_value(table=2, dataset=d, backbone=s, quantity="speed_up")
    claims.append(_over_seeds(f"Table 2: hard exits cut compute ({s})",
                              f"hard-exit mean MACs / plain-backbone MACs; {note}", vals["proposed MACs / plain"],
                              claimed="less", than=max_macs, unit="of plain MACs", setting=fixed,
                              paper=None if up is None else f"{up.value:g}% faster (time)",
                              paper_source="" if up is None else up.source))
    top2 = []
    for seed in group.seeds:
        hard = t1.hard[(d, bb, seed)]
        top2.append(sum(sorted(hard.exit_shares)[-2:]))
    ex = paper_value(table=2, dataset=d, backbone=s, quantity="exits")
    claims.append(_over_seeds(f"Table 2: inputs leave at a few exits ({s})",
                              f"share of test inputs at the two busiest exits; {note}", top2, than=min_top2,
                              unit="share", setting=fixed,
                              paper=None if ex is None else round(sum(sorted(parse_exit_list(ex.value).values())[-2:]), 3),
                              paper_source="" if ex is None else ex.source))
    claims.append(_over_seeds(f"Fig. 4: gate values are polarised near 0 and 1 ({s})",
                              f"share of test gate values below 0.1 or above 0.9 (all branches); {note}",
                              [polarised[seed] for seed in group.seeds], than=min_polarised, unit="share", setting=fixed,
                              paper_source="Scardapane et al. ICASSP 2020 slides, Fig. 4 (values not retrieved)"))
    lams = sorted(choice.hard)
    if len(lams) >= 2:
        drop, lo, hi = lambda_cost_interval(group, choice)
        start = group.run("grid", lams[0]).spec
        claims.append(claim(f"A larger lambda moves exits earlier ({s})",
                            f"drop of hard-exit MACs / plain from lambda={lams[0]:g} to {lams[-1]:g} (negative: the "
                            f"largest rise between consecutive lambdas); {note}", drop, interval=(lo, hi),
                            unit="of plain MACs",
                            evidence="bootstrap over test images, one network per lambda"
                                     + (" fine-tuned from one seed's network" if start.init_from is not None else "")
                                     + ": covers the test sample, not retraining or another seed",
                            setting=f"{where}, lambda grid {', '.join(f'{lam:g}' for lam in lams)}"))
    return claims


def _checked(claims: Sequence[Claim], prefix: str, paper: str = "") -> str:
    """'(paper: ...; claim > 0.7 share: 2 supported, 1 not supported)' for the claims whose statement
    starts with ``prefix``."""
    picked = [c for c in claims if c.statement.startswith(prefix)]
    counts = {v: sum(c.verdict == v for c in picked) for v in VERDICTS}
    side = f" {'>' if picked[0].claimed == 'greater' else '<'} {picked[0].than:g} {picked[0].unit}" if picked else ""
    return f"({paper}claim{side}: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ")"


def _pm(row: dict, column: str) -> str:
    sd = row.get(f"{column} sd", float("nan"))
    return f"{100 * row[f'{column} mean']:.2f}%" + ("" if pd.isna(sd) else f" ± {100 * sd:.2f}")


def conclusions(t1: Table1, choices: dict[tuple[str, str], LambdaChoice], claims: Sequence[Claim],
                collapse: pd.DataFrame, width: float, epochs: int, grid_epochs: int) -> str:
    """What the run shows, in words (Markdown), every number read from the tables and claims. Timings
    are left out: they change from run to run and decide no claim."""
    lines = []
    for row in t1.summary.to_dict("records"):
        lines.append(f"- **Table 1** ({row['backbone']}, {row['seeds']} seeds, mean ± sd): plain {_pm(row, 'plain')}, "
                     f"BranchyNet {_pm(row, 'BranchyNet (final exit)')}, proposed ensemble "
                     f"{_pm(row, 'proposed (ensemble)')} at lambda = {row['lambda (fixed)']:g} (fixed in advance). "
                     f"BranchyNet >= plain {_checked(claims, 'Table 1: BranchyNet')}; proposed >= BranchyNet "
                     f"{_checked(claims, 'Table 1: proposed')}.")
        if not pd.isna(row["paper proposed"]):
            lines.append(f"  The paper's proposed ensemble is {100 * (row['paper proposed'] - row['proposed (ensemble) mean']):.1f} "
                         f"points above ours (width {width:g}, {epochs} epochs): these verdicts speak for this budget.")
        lines.append(f"- **Hard exits at the fixed lambda** spend {100 * row['proposed MACs / plain mean']:.1f}% of the plain "
                     f"backbone's MACs {_checked(claims, 'Table 2: hard exits cut')} at "
                     f"{100 * row['proposed (hard exits) mean']:.2f}% test accuracy "
                     f"{_checked(claims, 'Table 2: hard exits lose')}; BranchyNet's per-exit entropy thresholds, "
                     f"chosen by the same rule, spend {100 * row['BranchyNet MACs / plain mean']:.1f}% at "
                     f"{100 * row['BranchyNet (entropy exits) mean']:.2f}%. Inputs at the two busiest exits "
                     f"{_checked(claims, 'Table 2: inputs leave')}; polarised gates {_checked(claims, 'Fig. 4')}.")
    for (d, bb), choice in choices.items():
        f = choice.frame.sort_values("lambda")
        lines.append(f"- **lambda grid** ({bb}, warm start, {grid_epochs} epochs each, one seed): test hard-exit MACs / "
                     "plain " + " -> ".join(f"{v:.3f}" for v in f["test MACs / plain"]) + " for lambda "
                     + ", ".join(f"{lam:g}" for lam in f["lambda"])
                     + (f" {_checked(claims, 'A larger lambda')}" if any(c.statement.startswith("A larger lambda")
                                                                         for c in claims) else "")
                     + f". Chosen on validation: lambda = {choice.chosen:g}, test hard-exit accuracy "
                     f"{100 * choice.hard[choice.chosen].accuracy:.2f}% at {choice.hard[choice.chosen].mean_fraction:.3f} "
                     f"of the plain MACs" + ("" if f["within tolerance"].any() else
                                            " (no model within the tolerance: the most accurate hard-exit model)") + ".")
    states = collapse["state"].value_counts(sort=False)
    lines.append("- **Gates** after the last epoch: " + ", ".join(f"{n} of {len(collapse)} models: {s}"
                                                                   for s, n in states.items()) + ".")
    lines.append("- Batch-1 latency is in the table of section 5: measured, not predicted, and part of no verdict.")
    return "\n".join(lines)


def protocol(parameters: dict, t1: Table1, choices: dict[tuple[str, str], LambdaChoice],
             groups: Sequence[BackboneRuns]) -> dict:
    """How every compared configuration was chosen, for the metrics file."""
    p = parameters
    start = (f"warm start: fine-tunes {'the gates and early heads (backbone frozen)' if p['grid_train'] == 'heads' else 'the whole network'} "
             f"of seed {p['seeds'][0]}'s network at lambda={p['headline_lambda']:g} for {p['grid_epochs']} epochs, one seed per lambda"
             if p["grid_start"] == "warm" else f"each lambda trained from scratch ({p['epochs']} epochs), one seed")
    rule = (f"cheapest on validation within {p['tolerance']:g} of the best validation accuracy the method reaches "
            "(proposed: best ensemble of the grid; BranchyNet: best of its candidates)")
    n = {f"{d}|{bb}|s{s}": len(c.sweep) for (d, bb, s), c in t1.branchynet.items()}
    return {
        "split": "every selection reads validation only; test is only reported",
        "seeds": list(p["seeds"]), "recipe": {k: p[k] for k in ("optimizer", "schedule", "lr", "epochs", "batch_size",
                                                                "weight_decay", "augment", "bf16", "channels_last")},
        "shared_reference": bool(p["reference"]),
        "headline_lambda": {"value": p["headline_lambda"], "chosen": "fixed before any run, reported for every seed"},
        "lambda_grid": {"values": list(p["lambda_grid"]), "start": start},
        "lambda_selection": {"rule": rule, "tolerance": p["tolerance"], "hard_gate_threshold": p["gate_threshold"],
                             "chosen": {f"{d}|{bb}": c.chosen for (d, bb), c in choices.items()}},
        "bnet_thresholds": {
            "rule": rule, "unit": "normalised entropy (nats / ln C)",
            "candidates": f"{p['bnet_shared']} shared values and {p['bnet_random']} per-exit vectors, log-spaced / "
                          f"log-uniform from {ENTROPY_LOW_NATS:g} nats to ln C, plus the final exit alone",
            "candidates_per_network": n, "proposed_budget": candidate_budget(groups),
            "chosen_nats": {f"{d}|{bb}|s{s}": c.nats() for (d, bb, s), c in t1.branchynet.items()}},
        "gate_threshold": f"t = {p['gate_threshold']:g}, fixed (not tuned)"}


def metrics(data: dict, runs: dict, parameters: dict, t1: Table1, choices: dict[tuple[str, str], LambdaChoice],
            t2: dict[str, pd.DataFrame], lat: dict[str, LatencyTable], polarised: dict[str, dict[int, float]],
            history: pd.DataFrame) -> dict:
    """The metrics file's free-form part: every table (each seed's numbers), choice and curve of the notebook."""
    return {
        "data": {d: ds.describe() for d, ds in data.items()}, "runs": {n: r.spec.key for n, r in runs.items()},
        "train_minutes": {n: r.train_seconds / 60 for n, r in runs.items()},
        "assumptions": {k: parameters[k] for k in ("mixing", "cost_reference", "head_features", "head_pool",
                                                   "gate_threshold", "branchynet_weights")},
        "table1_per_seed": t1.per_seed.to_dict("records"), "table1": t1.summary.to_dict("records"),
        "branchynet_choice": {f"{d}|{bb}|s{s}": c.point for (d, bb, s), c in t1.branchynet.items()},
        "lambda_grid": {f"{d}|{bb}": c.frame.to_dict("records") for (d, bb), c in choices.items()},
        "table2": {bb: f.to_dict("records") for bb, f in t2.items()},
        "latency": {f"{bb}|{k}": v for bb, t in lat.items() for k, v in t.timed.items()},
        "gate_polarisation": {bb: {f"s{s}": v for s, v in p.items()} for bb, p in polarised.items()},
        "gate_history": history.to_dict("records"),
    }
