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
below a threshold, chosen here on validation (``fit_entropy_threshold``).

The second half builds what notebook 03 shows from its trained runs, grouped per data set and backbone
(``BackboneRuns``): the paper's Table 1 (``table1``) and Table 2 (``table2``, ``latency_table``), the
gate figures (Fig. 4 analogue, gates per epoch, accuracy vs MACs), the numbers beside the paper's
(``paper_comparisons``, read from data/paper_numbers) and the five claims with their verdicts
(``check_claims``), written up by ``conclusions`` so that no number of a run is typed by hand.
"""
from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from . import rehearsal
from .claims import VERDICTS, Claim, PaperNumber, claim, paper_number
from .evaluate import PolicyResult, ThresholdSweep, evaluate_policy, shared_threshold_sweep
from .losses import register_loss
from .macs import MacTable
from .multiexit import ExitOutputs, MultiExitNet
from .outputs import CachedOutputs
from .policies import Entropy, ExitPolicy, GateThreshold, NeverExit
from .stats import bootstrap_mean, paired_bootstrap

__all__ = ["MIXING", "COST_REFERENCES", "soft_conditional", "exit_probabilities", "expected_cost",
           "normalised_exit_costs", "SoftConditionalLoss", "ensemble_accuracy", "gate_probabilities",
           "fit_entropy_threshold", "Latency", "batch1_latency",
           # the notebook's tables, figures and claims
           "PAPER", "PAPER_BACKBONES", "ENTROPY_GRID", "GATE_GRID", "BackboneRuns", "paper_value", "exit_list",
           "training_minutes",
           "parse_exit_list", "branch_cost_table", "Table1", "table1", "Table2", "hard_gate_rule", "table2",
           "LatencyTable", "latency_table", "gate_values", "polarised_share", "plot_gate_distributions",
           "plot_accuracy_vs_macs", "gate_history", "plot_gate_history", "gate_collapse", "paper_comparisons",
           "ensemble_prediction", "check_claims", "lambda_monotone_drop", "conclusions", "protocol", "metrics"]

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


def fit_entropy_threshold(val: CachedOutputs, test: CachedOutputs, macs: MacTable, tolerance: float,
                          grid: Sequence[float]) -> tuple[dict, ThresholdSweep]:
    """BranchyNet's rule with one normalised-entropy threshold shared by the early exits: the
    cheapest on validation whose accuracy is within ``tolerance`` of the final exit's. Returns the
    chosen point and the whole sweep (validation and test columns)."""
    sweep = shared_threshold_sweep(val, test, Entropy((0.0,) * (val.num_exits - 1)), grid, macs)
    chosen = sweep.select(reference=val.exit_accuracies()[-1], tolerance=tolerance)
    if chosen is None:
        raise ValueError(f"no entropy threshold keeps validation accuracy within {tolerance} of the final exit")
    return chosen, sweep


# ---------------------------------------------------------------- batch-1 CPU latency
@dataclass
class Latency:
    mean_ms: float
    median_ms: float
    images: int
    threads: int
    exit_index: torch.Tensor   # [images] exit taken by each timed image

    def summary(self) -> dict:
        return {"mean_ms": self.mean_ms, "median_ms": self.median_ms, "images": self.images, "threads": self.threads}


@torch.no_grad()
def batch1_latency(net: MultiExitNet, images: torch.Tensor, policy: ExitPolicy, exit_costs: Sequence[float],
                   warmup: int = 50, threads: int = 1) -> Latency:
    """Mean wall time of the real early-exit forward, one image at a time, after ``warmup`` untimed
    images. One thread: 2-thread PyTorch collapses when another process holds a core."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    images = images[:rehearsal.cap(len(images), rehearsal.LATENCY_IMAGES)]
    warmup = rehearsal.cap(warmup, 2)
    try:
        net.eval()
        for x in images[:warmup]:
            net.early_exit(x[None], policy, exit_costs)
        times, exits = [], []
        for x in images:
            t0 = time.perf_counter()
            r = net.early_exit(x[None], policy, exit_costs)
            times.append(time.perf_counter() - t0)
            exits.append(r.exit_index)
    finally:
        torch.set_num_threads(previous)
    return Latency(1e3 * statistics.fmean(times), 1e3 * statistics.median(times), len(times), threads,
                   torch.cat(exits))


# ---------------------------------------------------------------- the notebook's tables (Tables 1 and 2)
PAPER = "differentiable_branching"         # data/paper_numbers/<PAPER>.csv
PAPER_BACKBONES = {"vgg13": "vgg13", "resnet18_cifar": "resnet18", "alexnet_cifar": "alexnet"}
ENTROPY_GRID = tuple(i / 50 for i in range(51))    # BranchyNet's shared normalised-entropy thresholds
GATE_GRID = tuple(i / 50 for i in range(1, 50))    # hard-gate thresholds t of the accuracy-vs-MACs curves


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


@dataclass
class BackboneRuns:
    """The runs compared on one data set and backbone: the plain backbone, BranchyNet and the proposed
    method at every lambda. Cached outputs are read from disk once and kept here, since every table
    and claim reads them again."""
    dataset: str
    backbone: str
    plain: RunLike
    branchynet: RunLike
    proposed: dict[float, RunLike]
    _outputs: dict = field(default_factory=dict, repr=False)

    def outputs(self, method: str | float, split: str) -> CachedOutputs:
        """``method``: 'plain', 'branchynet' or a lambda of the proposed method."""
        key = (method, split)
        if key not in self._outputs:
            run = self.run(method)
            self._outputs[key] = run.outputs(split)
        return self._outputs[key]

    def run(self, method: str | float) -> RunLike:
        if method == "plain":
            return self.plain
        if method == "branchynet":
            return self.branchynet
        return self.proposed[method]

    @property
    def paper_backbone(self) -> str:
        return PAPER_BACKBONES.get(self.backbone, self.backbone)


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
    """Training wall time in minutes per data set and backbone (rows) and run (columns)."""
    rows = []
    for g in groups:
        methods = {"plain": g.plain, "branchynet": g.branchynet, **{f"lam{lam:g}": r for lam, r in g.proposed.items()}}
        rows.append({"data": g.dataset, "backbone": g.backbone,
                     **{m: r.train_seconds / 60 for m, r in methods.items()}})
    return pd.DataFrame(rows).set_index(["data", "backbone"]).rename_axis(columns="run")


def branch_cost_table(groups: Iterable[BackboneRuns], cost_reference: str) -> pd.DataFrame:
    """Branches per backbone, MACs of the plain backbone and of all early heads, and the exit costs v_b."""
    rows = []
    for g in groups:
        run = g.proposed[next(iter(g.proposed))]
        v = normalised_exit_costs(run.macs, cost_reference)
        rows.append({"backbone": g.backbone, "branches": run.net.num_exits - 1,
                     "plain MMACs": g.plain.macs.backbone_macs / 1e6,
                     "all heads MMACs": sum(run.macs.head_macs[:-1]) / 1e6,
                     "v_b": " ".join(f"{c:.3f}" for c in v)})
    return pd.DataFrame(rows)


@dataclass
class Table1:
    frame: pd.DataFrame
    chosen_lambda: dict[tuple[str, str], float]                   # (data set, backbone) -> lambda
    branchynet: dict[tuple[str, str], tuple[dict, ThresholdSweep]]  # the chosen entropy point and its sweep


def table1(groups: Iterable[BackboneRuns], mixing: str, tolerance: float,
           entropy_grid: Sequence[float] = ENTROPY_GRID) -> Table1:
    """The paper's Table 1 on our runs: plain, BranchyNet (final exit, and entropy exits chosen on
    validation within ``tolerance`` of its final exit) and the proposed ensemble at the lambda with the
    best validation ensemble accuracy (every lambda listed), beside the paper's numbers."""
    rows, chosen, branchy = [], {}, {}
    for g in groups:
        key = (g.dataset, g.backbone)
        b_val, b_test = g.outputs("branchynet", "val"), g.outputs("branchynet", "test")
        branchy[key] = fit_entropy_threshold(b_val, b_test, g.branchynet.macs, tolerance, entropy_grid)
        ens = {lam: [ensemble_accuracy(g.outputs(lam, split), mixing) for split in ("val", "test")]
               for lam in g.proposed}
        lam_star = max(g.proposed, key=lambda lam: ens[lam][0])
        chosen[key] = lam_star
        rows.append({"dataset": g.dataset, "backbone": g.backbone,
                     "plain": g.outputs("plain", "test").exit_accuracies()[-1],
                     "BranchyNet (final exit)": b_test.exit_accuracies()[-1],
                     "BranchyNet (entropy exits)": branchy[key][0]["test_accuracy"],
                     "proposed (ensemble)": ens[lam_star][1], "lambda (val)": lam_star,
                     **{f"ens. lambda={lam:g}": ens[lam][1] for lam in g.proposed},
                     "paper plain": _paper_accuracy(g, "baseline"), "paper B-NET": _paper_accuracy(g, "branchynet"),
                     "paper proposed": _paper_accuracy(g, "proposed")})
    return Table1(pd.DataFrame(rows), chosen, branchy)


@dataclass
class Table2:
    frame: pd.DataFrame
    hard: dict[tuple[str, float], PolicyResult]   # (backbone, lambda) -> hard-gate exits on test


def hard_gate_rule(num_exits: int, threshold: float) -> GateThreshold:
    """Leave at the first branch whose gate reaches ``threshold``; the final classifier takes the rest."""
    return GateThreshold([threshold] * (num_exits - 1))


def table2(groups: Iterable[BackboneRuns], chosen_lambda: dict[tuple[str, str], float], gate_threshold: float,
           mixing: str, cost_reference: str) -> Table2:
    """The paper's Table 2 without timing, from cached test outputs: hard-gate accuracy beside the
    ensemble, mean MACs over the plain backbone, the soft expected cost the loss sees, and the share of
    inputs per exit (final included, so the shares sum to 100%), for every lambda."""
    rows, hard = [], {}
    for g in groups:
        for lam, run in g.proposed.items():
            test = g.outputs(lam, "test")
            r = evaluate_policy(test, hard_gate_rule(run.net.num_exits, gate_threshold), run.macs)
            hard[(g.backbone, lam)] = r
            costs = normalised_exit_costs(run.macs, cost_reference)
            soft = expected_cost([torch.sigmoid(z) for z in test.gates[:-1]], costs).mean().item()
            headline = lam == chosen_lambda[(g.dataset, g.backbone)]
            rows.append({"backbone": g.backbone, "lambda": lam, "headline": headline,
                         "ensemble acc": ensemble_accuracy(test, mixing), "hard-exit acc": r.accuracy,
                         "MACs / plain": r.mean_fraction, "soft expected cost": soft,
                         "shares sum (%)": 100 * sum(r.exit_shares), "exits": exit_list(r.exit_shares)})
    return Table2(pd.DataFrame(rows), hard)


@dataclass
class LatencyTable:
    frame: pd.DataFrame
    latency: dict[tuple[str, str | float], Latency]   # (backbone, 'plain' or lambda)
    header: str

    def speed_up(self, backbone: str, lam: float) -> float:
        """t_plain / t - 1, in %."""
        return 100 * (self.latency[(backbone, "plain")].mean_ms / self.latency[(backbone, lam)].mean_ms - 1)

    def summary(self, chosen_lambda: dict[str, float]) -> str:
        """One sentence on the headline models' batch-1 speed-up (timings: not part of any verdict)."""
        ups = {bb: self.speed_up(bb, lam) for bb, lam in chosen_lambda.items()}
        return ("Batch-1 speed-up t_plain/t - 1 of the headline models: "
                + ", ".join(f"{bb} {u:+.0f}%" for bb, u in ups.items()) + " (paper: "
                + ", ".join(f"{p.value:g}%" for bb in ups
                            if (p := paper_value(table=2, backbone=PAPER_BACKBONES.get(bb, bb), quantity="speed_up")))
                + ").")


def latency_table(groups: Iterable[BackboneRuns], chosen_lambda: dict[tuple[str, str], float],
                  hard: dict[tuple[str, float], PolicyResult], gate_threshold: float, images: int,
                  warmup: int) -> LatencyTable:
    """Batch-1 wall time of the real early-exit forward (``batch1_latency``, one thread) of every
    proposed model with hard gates, against the separately trained plain backbone through the same code
    path. Both are timed in their inference form (``inference.inference_form``: batch norm folded,
    channels_last), the same for both. The paper's Table 2 rows follow each backbone."""
    from .inference import inference_form
    rows, latency = [], {}
    for g in groups:
        x, _ = next(iter(g.plain.loader("test", batch_size=images)))
        base = batch1_latency(inference_form(g.plain.net), x, NeverExit(), g.plain.macs.exit_macs, warmup)
        latency[(g.backbone, "plain")] = base
        for lam, run in g.proposed.items():
            rule = hard_gate_rule(run.net.num_exits, gate_threshold)
            lat = batch1_latency(inference_form(run.net), x, rule, run.macs.exit_macs, warmup)
            latency[(g.backbone, lam)] = lat
            shares = torch.bincount(lat.exit_index, minlength=run.net.num_exits) / lat.images
            headline = lam == chosen_lambda[(g.dataset, g.backbone)]
            rows.append({"backbone": g.backbone, "lambda": lam, "headline": headline,
                         "hard-exit acc": hard[(g.backbone, lam)].accuracy, "plain ms": base.mean_ms, "ms": lat.mean_ms,
                         "speed-up (%)": 100 * (base.mean_ms / lat.mean_ms - 1),
                         "time saved (%)": 100 * (1 - lat.mean_ms / base.mean_ms),
                         "exits (timed images)": exit_list(shares.tolist())})
        rows.append(_paper_table2_row(g.paper_backbone))
    header = (f"batch-1 latency: {images} test images after {warmup} warm-up images, {base.threads} torch thread, "
              "float32, inference form (batch norm folded, channels_last), real early-exit forward")
    return LatencyTable(pd.DataFrame(rows), latency, header)


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


def plot_gate_distributions(groups: Sequence[BackboneRuns], chosen_lambda: dict[tuple[str, str], float]):
    """Fig. 4 analogue: test gate histograms of an early, a middle and a late branch of each headline
    model. Returns the figure and the share of polarised gate values per backbone."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.6), squeeze=False)
    polarised = {}
    for ax, g in zip(axes[0], groups):
        lam = chosen_lambda[(g.dataset, g.backbone)]
        gates = gate_values(g.outputs(lam, "test"))
        for b in sorted({0, (len(gates) - 1) // 2, len(gates) - 1}):
            ax.hist(gates[b].numpy(), bins=40, range=(0, 1), alpha=0.55, label=f"branch {b + 1}")
        polarised[g.backbone] = ((gates < 0.1) | (gates > 0.9)).float().mean().item()
        ax.set_yscale("log")
        ax.set(title=f"{g.backbone}, lambda={lam:g}", xlabel="gate g_b(x) on test", ylabel="images")
        ax.legend()
    return fig, polarised


def plot_accuracy_vs_macs(groups: Sequence[BackboneRuns],
                          branchynet: dict[tuple[str, str], tuple[dict, ThresholdSweep]], mixing: str,
                          gate_grid: Sequence[float] = GATE_GRID):
    """Test accuracy against mean MACs / plain MACs: every lambda with the hard threshold t swept, the
    ensembles (open circles), BranchyNet's entropy sweep and the plain backbone. Returns the figure and
    the gate sweeps by (backbone, lambda)."""
    import matplotlib.pyplot as plt
    sweeps = {}
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.2), squeeze=False)
    for ax, g in zip(axes[0], groups):
        for lam, run in g.proposed.items():
            s = shared_threshold_sweep(g.outputs(lam, "val"), g.outputs(lam, "test"),
                                       hard_gate_rule(run.net.num_exits, 0.0), gate_grid, run.macs)
            sweeps[(g.backbone, lam)] = s
            line, = ax.plot(s.test_cost, 100 * s.test_accuracy, marker=".", ms=3, label=f"proposed lambda={lam:g}")
            ax.scatter([run.macs.exit_fractions[-1]], [100 * ensemble_accuracy(g.outputs(lam, "test"), mixing)],
                       facecolors="none", edgecolors=line.get_color(), s=50)
        b_sweep = branchynet[(g.dataset, g.backbone)][1]
        ax.plot(b_sweep.test_cost, 100 * b_sweep.test_accuracy, "k-", marker=".", ms=3, label="BranchyNet (entropy)")
        ax.scatter([1.0], [100 * g.outputs("plain", "test").exit_accuracies()[-1]], marker="*", s=150, c="k",
                   zorder=5, label="plain backbone")
        ax.set(title=f"{g.backbone} ({g.dataset}, test)", xlabel="mean MACs / plain-backbone MACs",
               ylabel="test accuracy (%)")
    ax.legend(fontsize=8)
    return fig, sweeps


def gate_history(groups: Iterable[BackboneRuns]) -> pd.DataFrame:
    """Mean validation gate of every branch after every epoch (from the per-epoch checkpoints), one row
    per backbone, lambda, epoch and branch: shows whether the gates collapse during training."""
    rows = []
    for g in groups:
        for lam, run in g.proposed.items():
            for epoch in range(1, run.epochs_trained + 1):
                snap = run.at_epoch(epoch)
                mean = gate_values(snap.outputs("val")).mean(1)
                rows += [{"backbone": g.backbone, "lambda": run.spec.loss.options["lam"], "epoch": snap.epoch,
                          "branch": b + 1, "mean gate": v} for b, v in enumerate(mean.tolist())]
    return pd.DataFrame(rows)


def plot_gate_history(history: pd.DataFrame, backbones: Sequence[str], lambdas: Sequence[float]):
    """Mean validation gate per branch against the epoch, one panel per backbone (rows) and lambda (columns)."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(backbones), len(lambdas), figsize=(3.2 * len(lambdas), 2.6 * len(backbones)),
                             squeeze=False, sharey=True)
    for i, bb in enumerate(backbones):
        for j, lam in enumerate(lambdas):
            part = history[(history.backbone == bb) & (history["lambda"] == lam)]
            wide = part.pivot(index="epoch", columns="branch", values="mean gate")
            for branch in wide.columns:
                axes[i, j].plot(wide.index, wide[branch], marker="o", ms=3, label=f"branch {branch}",
                                color=plt.cm.viridis((branch - 1) / max(1, len(wide.columns) - 1)))
            axes[i, j].set(title=f"{bb}, lambda={lam:g}", ylim=(0, 1), xticks=list(wide.index),
                           xlabel="epoch" if i == len(backbones) - 1 else None)
        axes[i, 0].set_ylabel("mean gate (val)")
        axes[i, -1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig


def gate_collapse(history: pd.DataFrame, shut: float = 0.05, open_: float = 0.95) -> pd.DataFrame:
    """After the last epoch, per backbone and lambda: the mean validation gate of the first and last
    branch, the largest, and the state: 'all shut' (every mean gate below ``shut``: the branches are never
    used), 'first gate open' (above ``open_``: everything leaves at the weakest branch) or 'no collapse'."""
    final = history[history.epoch == history.epoch.max()]
    rows = []
    for (bb, lam), part in final.groupby(["backbone", "lambda"], sort=False):
        g = part.sort_values("branch")["mean gate"].tolist()
        state = (f"all shut (< {shut:g})" if max(g) < shut else
                 f"first gate open (> {open_:g})" if g[0] > open_ else "no collapse")
        rows.append({"backbone": bb, "lambda": lam, "first": g[0], "last": g[-1], "max": max(g), "state": state})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- paper numbers beside ours, claims, conclusions
def paper_comparisons(t1: Table1, t2: Table2, lat: LatencyTable, dataset: str, gate_threshold: float,
                      setting: str) -> list[dict]:
    """Every number of the paper's Tables 1 and 2 that we measure, beside ours (``report.comparison``)."""
    from .report import comparison
    out = []
    for row in t1.frame.to_dict("records"):
        s = PAPER_BACKBONES.get(row["backbone"], row["backbone"])
        for method, ours, pap in (("plain", "plain", "paper plain"),
                                  ("BranchyNet final exit", "BranchyNet (final exit)", "paper B-NET"),
                                  ("proposed ensemble", "proposed (ensemble)", "paper proposed")):
            out.append(comparison(f"{row['dataset']} {s} {method} test accuracy", round(100 * row[ours], 2),
                                  None if pd.isna(row[pap]) else round(100 * row[pap], 2), "%",
                                  setting + (", JPEG CIFAR-10 copy" if row["dataset"] == "cifar10" else "")
                                  + (f", lambda={row['lambda (val)']:g}" if method.startswith("proposed") else "")))
    for (d, bb), lam in t1.chosen_lambda.items():
        if d != dataset:
            continue
        s = PAPER_BACKBONES.get(bb, bb)
        pap = paper_value(table=2, backbone=s, quantity="test_accuracy")
        out.append(comparison(f"{d} {s} proposed hard-exit test accuracy (t={gate_threshold})",
                              round(100 * t2.hard[(bb, lam)].accuracy, 2), None if pap is None else pap.value, "%",
                              f"lambda={lam:g}"))
        pap = paper_value(table=2, backbone=s, quantity="speed_up")
        out.append(comparison(f"{d} {s} batch-1 speed-up t_plain/t - 1", round(lat.speed_up(bb, lam), 1),
                              None if pap is None else pap.value, "%",
                              f"1 CPU thread, {lat.latency[(bb, lam)].images} images, inference form"))
    return out


def _correct(prediction: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (prediction == labels).double()


def check_claims(t1: Table1, t2: Table2, groups: Sequence[BackboneRuns], mixing: str, gate_threshold: float,
                 setting: str, max_drop: float = 0.03, max_macs: float = 0.9, min_top2: float = 0.7,
                 min_polarised: float = 0.8) -> list[Claim]:
    """The paper's five claims, one row per backbone (``groups``: the first data set's, as Table 2).

    1. Table 1: plain <= BranchyNet <= proposed (ensemble). Three separately trained networks, one seed:
       the smaller of the two steps, without an interval across trainings.
    2. Table 2: hard exits at t lose at most ``max_drop`` accuracy against the ensemble of the same
       network, and cost less than ``max_macs`` of the plain backbone: paired bootstrap over test images.
    3. Inputs concentrate on a few exits: at least ``min_top2`` leave at the two busiest (bootstrap).
    4. Fig. 4: gate values are polarised (below 0.1 or above 0.9) for at least ``min_polarised`` of them.
    5. A larger lambda moves exits earlier: hard-exit MACs fall with every step of lambda (one network
       per lambda, one seed: no interval).
    """
    one_seed = "one seed: no interval across trainings"
    claims = []
    for row in t1.frame.to_dict("records"):
        s = PAPER_BACKBONES.get(row["backbone"], row["backbone"])
        branchy = row["BranchyNet (final exit)"]
        step = min(branchy - row["plain"], row["proposed (ensemble)"] - branchy)
        paper = min(row["paper B-NET"] - row["paper plain"], row["paper proposed"] - row["paper B-NET"])
        src = paper_value(table=1, dataset=row["dataset"], backbone=s, method="proposed", quantity="test_accuracy")
        claims.append(claim(
            f"Table 1: plain <= BranchyNet <= proposed (ensemble), {row['dataset']} {s}",
            "smaller step of plain -> BranchyNet (final exit) -> proposed ensemble, test accuracy", 100 * step,
            unit="points", evidence=f"{one_seed} (three separately trained networks)",
            setting=f"{setting}, lambda={row['lambda (val)']:g} (val)",
            paper=None if pd.isna(paper) else round(100 * paper, 2), paper_source="" if src is None else src.source))
    for g in groups:
        lam = t1.chosen_lambda[(g.dataset, g.backbone)]
        s, test, hard = g.paper_backbone, g.outputs(lam, "test"), t2.hard[(g.backbone, lam)]
        where = f"{setting}, {g.dataset} {s}, lambda={lam:g}, t={gate_threshold:g}"
        boot = "paired bootstrap over test images (same network)"
        ens = _correct(ensemble_prediction(test, mixing), test.labels)
        drop, lo, hi = paired_bootstrap(ens, _correct(hard.prediction, test.labels))
        p_ens = paper_value(table=1, dataset=g.dataset, backbone=s, method="proposed", quantity="test_accuracy")
        p_hard = paper_value(table=2, dataset=g.dataset, backbone=s, quantity="test_accuracy")
        claims.append(claim(f"Table 2: hard exits lose little accuracy against the ensemble ({s})",
                            "ensemble - hard-exit test accuracy", 100 * drop, claimed="less", than=100 * max_drop,
                            interval=(100 * lo, 100 * hi), unit="points", evidence=boot, setting=where,
                            paper=None if p_ens is None or p_hard is None else round(p_ens.value - p_hard.value, 2),
                            paper_source="" if p_hard is None else "Table 1 proposed - " + p_hard.source))
        macs = g.run(lam).macs
        fraction = torch.tensor(macs.exit_macs, dtype=torch.float64)[hard.exit_index] / macs.backbone_macs
        mean, lo, hi = bootstrap_mean(fraction)
        up = paper_value(table=2, dataset=g.dataset, backbone=s, quantity="speed_up")
        claims.append(claim(f"Table 2: hard exits cut compute ({s})", "hard-exit mean MACs / plain-backbone MACs",
                            mean, claimed="less", than=max_macs, interval=(lo, hi), unit="of plain MACs",
                            evidence="bootstrap over test images", setting=where,
                            paper=None if up is None else f"{up.value:g}% faster (time)",
                            paper_source="" if up is None else up.source))
        busiest = torch.tensor(hard.exit_counts).argsort(descending=True, stable=True)[:2]
        top2, lo, hi = bootstrap_mean(torch.isin(hard.exit_index, busiest).double())
        ex = paper_value(table=2, dataset=g.dataset, backbone=s, quantity="exits")
        paper_top2 = None if ex is None else round(sum(sorted(parse_exit_list(ex.value).values())[-2:]), 3)
        claims.append(claim(f"Table 2: inputs leave at a few exits ({s})",
                            "share of test inputs at the two busiest exits", top2, than=min_top2, interval=(lo, hi),
                            unit="share", evidence="bootstrap over test images", setting=where, paper=paper_top2,
                            paper_source="" if ex is None else ex.source))
        pol, lo, hi = bootstrap_mean(polarised_share(gate_values(test)))
        claims.append(claim(f"Fig. 4: gate values are polarised near 0 and 1 ({s})",
                            "share of test gate values below 0.1 or above 0.9 (all branches)", pol, than=min_polarised,
                            interval=(lo, hi), unit="share", evidence="bootstrap over test images",
                            setting=f"{setting}, {g.dataset} {s}, lambda={lam:g}",
                            paper_source="Scardapane et al. ICASSP 2020 slides, Fig. 4 (values not retrieved)"))
    for g in groups:
        lams = sorted(g.proposed)
        if len(lams) < 2:
            continue
        cost = [t2.hard[(g.backbone, lam)].mean_fraction for lam in lams]
        claims.append(claim(f"A larger lambda moves exits earlier ({g.paper_backbone})",
                            f"drop of hard-exit MACs / plain from lambda={lams[0]:g} to {lams[-1]:g} "
                            "(negative: the largest rise between consecutive lambdas)", lambda_monotone_drop(cost),
                            unit="of plain MACs", evidence=f"{one_seed} (one network per lambda)",
                            setting=f"{setting}, {g.dataset}, t={gate_threshold:g}"))
    return claims


def lambda_monotone_drop(costs: Sequence[float]) -> float:
    """How far the cost falls from the first to the last lambda when it never rises on the way; else minus
    the largest rise between consecutive lambdas. Positive exactly when the costs never rise and end lower:
    "a larger lambda moves exits earlier", ties between neighbours allowed."""
    rises = [b - a for a, b in zip(costs, costs[1:])]
    worst = max(rises, default=0.0)
    return costs[0] - costs[-1] if worst <= 0 else -worst


def _checked(claims: Sequence[Claim], prefix: str, paper: str = "") -> str:
    """'(paper: ...; claim > 0.7 share: 2 supported, 1 not supported)' for the claims whose statement
    starts with ``prefix``."""
    picked = [c for c in claims if c.statement.startswith(prefix)]
    counts = {v: sum(c.verdict == v for c in picked) for v in VERDICTS}
    side = f" {'>' if picked[0].claimed == 'greater' else '<'} {picked[0].than:g} {picked[0].unit}" if picked else ""
    return f"({paper}claim{side}: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ")"


def _span(values: Sequence[float], fmt: str = ".2f") -> str:
    lo, hi = f"{min(values):{fmt}}", f"{max(values):{fmt}}"
    return lo if lo == hi else f"{lo} to {hi}"


def conclusions(t1: Table1, t2: Table2, claims: Sequence[Claim], collapse: pd.DataFrame, width: float,
                epochs: int) -> str:
    """What the run shows, in words (Markdown), every number read from the tables and claims. Timings
    are left out: they change from run to run and decide no claim."""
    rows = t1.frame.to_dict("records")
    cells = [f"{r['backbone']} plain {100 * r['plain']:.2f}%, BranchyNet {100 * r['BranchyNet (final exit)']:.2f}%, "
             f"proposed {100 * r['proposed (ensemble)']:.2f}% (lambda = {r['lambda (val)']:g})" for r in rows]
    lines = ["- **Table 1 ordering** plain <= BranchyNet <= proposed (ensemble) "
             f"{_checked(claims, 'Table 1')}: " + "; ".join(cells) + "."]
    gap = [100 * (r["paper proposed"] - r["proposed (ensemble)"]) for r in rows if not pd.isna(r["paper proposed"])]
    if gap:
        lines.append(f"  The paper's proposed ensembles are {_span(gap, '.1f')} points above ours (width {width:g}, "
                     f"{epochs} epochs, one seed): these verdicts speak for this budget, not for the paper's setting.")
    drops = [c for c in claims if c.statement.startswith("Table 2: hard exits lose")]
    if drops:
        headline = t2.frame[t2.frame.headline].to_dict("records")
        paper = [c.paper for c in drops if isinstance(c.paper, float)]
        lines.append(
            f"- **Hard exits** lose {_span([c.ours for c in drops])} points against the ensemble "
            + _checked(claims, "Table 2: hard exits lose", f"paper: {_span(paper)}; " if paper else "") + "; "
            "the headline models spend " + ", ".join(f"{r['MACs / plain']:.3f} ({r['backbone']})" for r in headline)
            + f" of the plain backbone's MACs {_checked(claims, 'Table 2: hard exits cut')}. Where inputs leave: "
            + "; ".join(f"{r['backbone']} {r['exits']}" for r in headline)
            + f" {_checked(claims, 'Table 2: inputs leave')}.")
    polarised = [c for c in claims if c.statement.startswith("Fig. 4")]
    if polarised:
        states = collapse["state"].value_counts(sort=False)
        lines.append(f"- **Gates**: {_span([100 * c.ours for c in polarised], '.1f')}% of the headline models' test "
                     f"gate values lie below 0.1 or above 0.9 {_checked(claims, 'Fig. 4')}; after the last epoch, "
                     + ", ".join(f"{n} of {len(collapse)} models: {s}" for s, n in states.items()) + ".")
    by_lambda = t2.frame.sort_values("lambda", kind="stable")
    lines.append(f"- **lambda** from {by_lambda['lambda'].min():g} to {by_lambda['lambda'].max():g} moves the "
                 "hard-exit MACs / plain: " + "; ".join(f"{bb} {' -> '.join(f'{v:.3f}' for v in part['MACs / plain'])}"
                                                for bb, part in by_lambda.groupby("backbone", sort=False))
                 + (f" {_checked(claims, 'A larger lambda')}" if any(c.statement.startswith("A larger lambda")
                                                                       for c in claims) else "")
                 + ". Lowering t trades accuracy for MACs along each model's curve in section 6, where BranchyNet's "
                 "entropy sweep can be compared at equal cost.")
    lines.append("- Batch-1 latency is in the table of section 4: measured, not predicted, and part of no verdict.")
    return "\n".join(lines)


def protocol(tolerance: float, gate_threshold: float, lambdas: Sequence[float], seed: int) -> dict:
    """How every compared configuration was chosen, for the metrics file."""
    return {"split": "thresholds and lambda chosen on validation, everything reported on test",
            "lambda": f"best validation ensemble accuracy among {list(lambdas)}",
            "branchynet_threshold": f"cheapest shared normalised-entropy threshold (grid of {len(ENTROPY_GRID)}) "
                                    f"within {tolerance:g} of the final exit's validation accuracy",
            "gate_threshold": f"t = {gate_threshold:g}, fixed (not tuned)",
            "seeds": [seed], "intervals": "paired bootstrap / bootstrap over test images for rules on one network; "
                                         "none across trainings (one seed)"}


def metrics(data: dict, runs: dict, parameters: dict, t1: Table1, t2: Table2, lat: LatencyTable,
            polarised: dict[str, float], history: pd.DataFrame,
            sweeps: dict[tuple[str, float], ThresholdSweep]) -> dict:
    """The metrics file's free-form part: every table, choice and curve of the notebook."""
    return {
        "data": {d: ds.describe() for d, ds in data.items()}, "runs": {n: r.spec.key for n, r in runs.items()},
        "train_minutes": {n: r.train_seconds / 60 for n, r in runs.items()},
        "assumptions": {k: parameters[k] for k in ("mixing", "cost_reference", "head_features", "gate_threshold",
                                                   "branchynet_weights")},
        "table1": t1.frame.to_dict("records"), "table2": t2.frame.to_dict("records"),
        "latency": {f"{bb}|{k}": v.summary() for (bb, k), v in lat.latency.items()},
        "chosen_lambda": {f"{d}|{bb}": lam for (d, bb), lam in t1.chosen_lambda.items()},
        "branchynet_entropy_threshold": {f"{d}|{bb}": c["thresholds"][0] for (d, bb), (c, _) in t1.branchynet.items()},
        "gate_polarisation": polarised, "gate_history": history.to_dict("records"),
        "sweeps": {f"{bb}|{lam:g}": [{"threshold": p["thresholds"][0], "test_accuracy": p["test_accuracy"],
                                      "test_fraction": p["test_cost"]} for p in map(s.point, range(len(s)))]
                   for (bb, lam), s in sweeps.items()},
    }
