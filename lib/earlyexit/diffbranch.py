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
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .evaluate import ThresholdSweep, shared_threshold_sweep
from .losses import register_loss
from .macs import MacTable
from .multiexit import ExitOutputs, MultiExitNet
from .outputs import CachedOutputs
from .policies import Entropy, ExitPolicy

__all__ = ["MIXING", "COST_REFERENCES", "soft_conditional", "exit_probabilities", "expected_cost",
           "normalised_exit_costs", "SoftConditionalLoss", "ensemble_accuracy", "gate_probabilities",
           "fit_entropy_threshold", "Latency", "batch1_latency"]

MIXING = ("probabilities", "logits")      # what the recursion mixes (the paper does not say; B.7-2)
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
    if outputs.gates is None:
        raise ValueError("cached outputs without gates: not a gated network")
    gates = [torch.sigmoid(g) for g in outputs.gates[:-1]]
    parts = [torch.softmax(z, 1) for z in outputs.logits] if mixing == "probabilities" else list(outputs.logits)
    return (soft_conditional(parts, gates).argmax(1) == outputs.labels).float().mean().item()


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
