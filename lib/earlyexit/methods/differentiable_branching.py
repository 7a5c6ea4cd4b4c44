"""Differentiable branching (Scardapane, Comminiello, Scarpiniti, Baccarelli, Uncini, "Differentiable
branching in deep networks for fast inference", ICASSP 2020) and its BranchyNet baseline (Teerapittayanon,
McDanel, Kung, "BranchyNet: fast inference via early exiting from deep neural networks", ICPR 2016), for any
multi-exit network whose early heads carry a gate. Every early exit b has a classifier f_b and a sigmoid
gate g_b ("exit here"); training replaces the hard exit decision by the soft-conditional output, defined
recursively from the last exit (the authors' slides, eq. 1),

    f~_b = g_b f_b + (1 - g_b) f~_{b+1},    f~_{B+1} = f  (the backbone's own output, gate 1),

and minimises CE(f~_1) + lambda * mean_i cost~_1(x_i) (eq. 2), where cost~ follows the same recursion over
the per-exit costs v_b (MACs of exiting at b, normalised so that the full network costs 1:
``normalised_exit_costs``). Unrolled, f~_1 = sum_b pi_b f_b with pi_b = g_b prod_{j<b} (1 - g_j)
(``exit_probabilities``; a test checks the recursion against this closed form). At inference either the
soft-conditional output is an ensemble of every exit (the paper's option 1: ``ensemble_accuracy``) or the
gates become hard (option 2): leave at the first exit whose gate reaches t (``hard_gate_rule``, a
``policies.GateThreshold``). BranchyNet trains the same branches with a weighted sum of per-exit
cross-entropies (``losses.WeightedCE``) and exits when the entropy of an exit's softmax is below that exit's
threshold: ``fit_branchynet`` picks the per-exit thresholds among ``entropy_candidates`` on validation, the
cheapest within a tolerance of the best accuracy any candidate reaches.

Use it on a network of your own (a ``MultiExitNet`` with gated heads: one class output and one gate logit
per early exit)::

    from earlyexit.evaluate import evaluate_policy
    from earlyexit.losses import build_loss
    from earlyexit.macs import mac_table
    from earlyexit.methods.differentiable_branching import ensemble_accuracy, hard_gate_rule, normalised_exit_costs
    from earlyexit.multiexit import MultiExitNet
    from earlyexit.outputs import collect_outputs

    net = MultiExitNet(backbone, None, "gated", features="linear")    # a staged backbone, default exits
    macs = mac_table(net)
    loss_fn = build_loss("soft_conditional", net.num_exits, costs=normalised_exit_costs(macs), lam=0.1)
    ...                                            # train: loss_fn(net(x), y).backward()
    net.eval()
    test = collect_outputs(net, test_loader)       # (images, labels) batches
    ensemble_accuracy(test)                        # option 1: every exit runs, f~_1 decides
    rule = hard_gate_rule(net.num_exits, 0.5)      # option 2: leave at the first gate >= 0.5
    evaluate_policy(test, rule, macs).summary()    # accuracy and MACs offline, on cached outputs
    net.early_exit(x, rule, macs.exit_macs)        # real early exit: rows leave the batch as they exit

Where the paper is silent, the gates' initial bias is a named choice (``GATE_BIASES``, ``gate_bias_value``;
pass the value as the gated head's ``gate_bias`` option): PyTorch's default starts every gate near 0.5, so
the final exit of a ten-exit network starts with 2^-9 = 0.002 of the mixture. ``watch_collapse`` flags a
training whose gates collapse onto one exit (a gate above 0.99 early on, one exit taking 95% of the inputs,
the exits behind it starved of mixture weight).

For BranchyNet's rule on a network of plain heads: ``fit_branchynet(val, test, macs,
entropy_candidates(num_classes, net.num_exits - 1, shared=50, random=200), tolerance=0.01)``.
Notebook 03's study of the paper (its runs, lambda choice, tables, claims, figures) is
``earlyexit.studies.differentiable_branching``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from ..evaluate import ThresholdSweep, random_thresholds, sweep_thresholds
from ..losses import register_loss
from ..macs import MacTable
from ..multiexit import ExitOutputs
from ..outputs import CachedOutputs
from ..policies import Entropy, GateThreshold

__all__ = ["MIXING", "COST_REFERENCES", "soft_conditional", "exit_probabilities", "expected_cost",
           "normalised_exit_costs", "SoftConditionalLoss", "gate_probabilities", "ensemble_accuracy",
           "ensemble_prediction", "hard_gate_rule", "GATE_BIASES", "SHUT_BIAS", "gate_bias_value",
           "initial_mixture", "mixture_weights", "Collapse", "watch_collapse", "ENTROPY_LOW_NATS",
           "entropy_candidates", "BranchyChoice", "fit_branchynet"]


MIXING = ("probabilities", "logits")      # what the recursion mixes (the slides do not say)
COST_REFERENCES = ("final", "backbone")   # what costs 1: the whole net with its heads, or the plain backbone
ENTROPY_LOW_NATS = 1e-4                   # smallest entropy threshold BranchyNet may get
# initial gate bias: PyTorch's default (gates near 0.5), every gate shut, or the final exit's fair share
GATE_BIASES = ("pytorch", "shut", "fair")
SHUT_BIAS = -3.0                          # sigmoid(-3) = 0.047: every gate starts nearly shut
# the collapse watch's limits (``watch_collapse``)
GATE_OPEN, EXIT_TAKES, STARVED = 0.99, 0.95, 1e-3


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


# ---------------------------------------------------------------- initial gates and the collapse watch
def gate_bias_value(option: str | float, num_exits: int) -> float | None:
    """The gated heads' initial gate bias for ``option``: 'pytorch' -> None (PyTorch's default, gates near
    0.5), 'shut' -> ``SHUT_BIAS``, 'fair' -> the one bias shared by every gate at which the final exit starts
    with 1/K of the mixture, (1 - g)^(K-1) = 1/K (the early exits share the rest, the first the most); a
    number is taken as it is. Rounded to 6 decimals: it enters the run's configuration hash."""
    if isinstance(option, (int, float)) and not isinstance(option, bool):
        return float(option)
    if option not in GATE_BIASES:
        raise ValueError(f"gate bias must be a number or one of {GATE_BIASES}, got {option!r}")
    if option == "pytorch":
        return None
    if option == "shut":
        return SHUT_BIAS
    if num_exits < 2:
        raise ValueError("a fair share needs at least one early exit")
    g = 1 - num_exits ** (-1 / (num_exits - 1))
    return round(math.log(g / (1 - g)), 6)


def initial_mixture(gate_bias: float, num_exits: int) -> list[float]:
    """The mixture weights pi_b every input starts with when every gate's weight is 0 and its bias
    ``gate_bias`` (what ``GatedHead(gate_bias=...)`` builds)."""
    g = torch.full((1, num_exits - 1), 1 / (1 + math.exp(-gate_bias)), dtype=torch.float64)
    return exit_probabilities(list(g.T)).squeeze(0).tolist()


def mixture_weights(outputs: CachedOutputs) -> torch.Tensor:
    """Mean mixture weight pi_b of every exit over the cached images [K]: the share of f~_1 (and of the
    loss's gradient, at equal exit probabilities) each exit carries."""
    return exit_probabilities([torch.sigmoid(g.double()) for g in outputs.gates[:-1]]).mean(0)


@dataclass
class Collapse:
    """What ``watch_collapse`` found in one training (exits and branches numbered from 1)."""
    open_gates: dict[int, int]      # branch -> first epoch (within the early ones) its mean gate passed the limit
    dominant: int | None            # the exit taking at least EXIT_TAKES of the inputs (hard gates), if any
    starved: list[int]              # exits behind a flagged gate or exit whose mixture weight stayed under STARVED

    @property
    def collapsed(self) -> bool:
        return bool(self.open_gates) or self.dominant is not None

    def describe(self) -> str:
        if not self.collapsed:
            return "no collapse"
        parts = [f"gate {b} above {GATE_OPEN:g} at epoch {e}" for b, e in self.open_gates.items()]
        if self.dominant is not None:
            parts.append(f"exit {self.dominant} takes >= {EXIT_TAKES:.0%} of the inputs")
        if self.starved:
            parts.append(f"exits {', '.join(map(str, self.starved))} starved (mixture weight < {STARVED:g})")
        return "collapsed: " + "; ".join(parts)


def watch_collapse(gate_means: torch.Tensor, mixture: torch.Tensor, shares: Sequence[float],
                   early_epochs: int) -> Collapse:
    """Flag a gated network whose gates collapsed. ``gate_means`` [E, K-1]: the mean validation gate of every
    branch after each of E epochs; ``mixture`` [E, K]: the mean mixture weight of every exit after each epoch;
    ``shares`` [K]: the share of validation inputs each exit takes with hard gates at the end. Flags every
    branch whose mean gate passes ``GATE_OPEN`` within the first ``early_epochs`` epochs, an exit taking at
    least ``EXIT_TAKES`` of the inputs, and every exit behind the first flagged one whose mixture weight
    stays under ``STARVED`` at every epoch (it is never trained: its gradient is that small)."""
    gate_means, mixture = torch.as_tensor(gate_means, dtype=torch.float64), torch.as_tensor(mixture, dtype=torch.float64)
    early = gate_means[:max(1, early_epochs)]
    open_gates = {}
    for b in range(gate_means.shape[1]):
        passed = torch.nonzero(early[:, b] > GATE_OPEN).flatten()
        if len(passed):
            open_gates[b + 1] = int(passed[0]) + 1
    dominant = next((k + 1 for k, s in enumerate(shares) if s >= EXIT_TAKES), None)
    flagged = [*open_gates, *([] if dominant is None else [dominant])]
    starved = []
    if flagged:
        starved = [k + 1 for k in range(min(flagged), mixture.shape[1])
                   if bool((mixture[:, k] < STARVED).all())]
    return Collapse(open_gates, dominant, starved)


# ---------------------------------------------------------------- the hard-gate exit, BranchyNet's thresholds
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
