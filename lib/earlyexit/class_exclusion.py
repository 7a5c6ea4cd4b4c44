"""Early exit with class exclusion (Wang, Li, Zhang, AICAS 2024) and its confidence baseline (CR).

Instead of asking an early exit "am I sure which class this is?", each exit head is a set of
per-class logistic "exclusion networks" (GAP/2x2 pooling + one Linear + sigmoid) that rule classes
*out*. Exclusions accumulate over the exits; when one class remains the image leaves with it, and an
image that reaches the end is classified by the final layer among its remaining classes.

What is here (facts from the spec, part A; choices marked there as assumptions are named options):

- ``ClassExclusionLoss`` ("class_exclusion"): CE on the final classifier plus depth-weighted BCE
  (one-vs-all, one-hot targets) on every exit head, w_k = 1/(K-k+2) for exit k = 1..K.
  ``bce_mode="uniform_scale"`` multiplies the BCE by rho (what the authors' code does, since rho
  lands in BCEWithLogitsLoss's ``weight``); ``"pos_weight"`` weights only the positive class by rho
  (what the variable name suggests). rho defaults to 4(N-1): 36 for 10 classes, 396 for 100.
- ``ConfidenceLoss`` ("class_exclusion_cr"): the CR baseline's CE(final) + sum_k w_k CE(exit k).
- ``ClassExclusion``: the per-sample cumulative exit rule, R_k = (R_{k-1} u {argmax}) n {c: s_c > beta_k max s};
  exit when |R_k| = 1; final prediction restricted to R_K (or not, ``restrict_final=False``).
- ``SingleConfident``: CR's rule, exit when exactly one softmax probability exceeds tau_k.
- ``greedy_search``: the authors' per-exit greedy threshold search on validation under an accuracy
  tolerance, with test-time (per-sample, cumulative) semantics (the authors' batched search
  re-admitted other images' argmax classes); ``fit_operating_point`` searches and evaluates on test.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .evaluate import PolicyResult, evaluate_policy
from .losses import register_loss
from .macs import MacTable
from .multiexit import ExitOutputs
from .outputs import CachedOutputs
from .policies import ExitPolicy, State

__all__ = ["BCE_MODES", "exclusion_weights", "ClassExclusionLoss", "ConfidenceLoss", "ClassExclusion",
           "SingleConfident", "SearchResult", "greedy_search", "search_betas", "search_taus", "OperatingPoint",
           "fit_operating_point", "exclusion_trace", "mean_remaining_classes", "early_exit_class_shares"]

BCE_MODES = ("uniform_scale", "pos_weight")


# ---------------------------------------------------------------- training objectives
def exclusion_weights(num_early: int) -> list[float]:
    """w_k = 1/(K-k+2), k = 1..K: 1/(K+1) for the first exit up to 1/2 for the last one."""
    return [1.0 / (num_early - k + 2) for k in range(1, num_early + 1)]


@register_loss("class_exclusion")
class ClassExclusionLoss:
    """CE(final) + sum_k w_k * rho * BCE(exit k, one-hot) (``uniform_scale``), or with rho as the
    positive-class weight inside the BCE (``pos_weight``). The BCE is a mean over batch x classes."""

    def __init__(self, num_exits: int, bce_mode: str = "uniform_scale", rho: float | None = None):
        if bce_mode not in BCE_MODES:
            raise ValueError(f"bce_mode must be one of {BCE_MODES}, got {bce_mode!r}")
        if rho is not None and rho <= 0:
            raise ValueError(f"rho must be positive, got {rho}")
        self.weights = exclusion_weights(num_exits - 1)
        self.bce_mode, self.rho = bce_mode, rho

    def __call__(self, outputs: ExitOutputs, targets: torch.Tensor) -> torch.Tensor:
        *heads, final = [z.float() for z in outputs.logits]
        num_classes = final.shape[1]
        rho = self.rho if self.rho is not None else 4.0 * (num_classes - 1)
        onehot = F.one_hot(targets, num_classes).float()
        loss = F.cross_entropy(final, targets)
        for w, z in zip(self.weights, heads):
            if self.bce_mode == "uniform_scale":
                bce = rho * F.binary_cross_entropy_with_logits(z, onehot)
            else:
                bce = F.binary_cross_entropy_with_logits(z, onehot, pos_weight=torch.full((num_classes,), rho))
            loss = loss + w * bce
        return loss


@register_loss("class_exclusion_cr")
class ConfidenceLoss:
    """The CR baseline's objective: CE(final) + sum_k w_k CE(exit k), same w_k, no rho, no normalising."""

    def __init__(self, num_exits: int):
        self.weights = exclusion_weights(num_exits - 1)

    def __call__(self, outputs: ExitOutputs, targets: torch.Tensor) -> torch.Tensor:
        *heads, final = [z.float() for z in outputs.logits]
        loss = F.cross_entropy(final, targets)
        for w, z in zip(self.weights, heads):
            loss = loss + w * F.cross_entropy(z, targets)
        return loss


# ---------------------------------------------------------------- exit rules
def _per_exit(values: Sequence[float], num_exits: int, what: str) -> None:
    if len(values) != num_exits - 1:
        raise ValueError(f"{len(values)} {what} given for {num_exits - 1} early exits")


@dataclass(frozen=True)
class ClassExclusion(ExitPolicy):
    """Cumulative class exclusion. State: ``remaining`` [n, C] bool, all True before exit 1.

    At early exit k: s = sigmoid(z), a = argmax s; R <- (R u {a}) n {c : s_c > beta_k * max s}; the row
    exits when |R| = 1, predicting that class. beta_k = 0 disables exclusion at exit k. At the final
    classifier the prediction is argmax over R (``restrict_final``, the paper's reading) or over all
    classes (what the authors' test script does); an empty R (only possible with beta = 1) falls back
    to all classes.
    """

    betas: tuple[float, ...]
    restrict_final: bool = True

    def __post_init__(self):
        betas = tuple(float(b) for b in self.betas)
        if any(not 0 <= b <= 1 for b in betas):
            raise ValueError(f"betas must lie in [0, 1], got {betas}")
        object.__setattr__(self, "betas", betas)

    def init_state(self, n):
        return {}  # created at the first exit, when the number of classes is known

    def decide(self, k, num_exits, logits, gate, state):
        _per_exit(self.betas, num_exits, "betas")
        n, c = logits.shape
        remaining = state.get("remaining", torch.ones(n, c, dtype=torch.bool))
        if k == num_exits - 1:
            z = logits.float()
            if self.restrict_final:
                usable = remaining | ~remaining.any(1, keepdim=True)
                z = z.masked_fill(~usable, -torch.inf)
            return torch.ones(n, dtype=torch.bool), z.argmax(1), {"remaining": remaining}
        s = torch.sigmoid(logits.double())  # float64: no score underflows to 0 before beta * max
        top, a = s.max(1)
        remaining = remaining.scatter(1, a[:, None], True) & (s > self.betas[k] * top[:, None])
        stop = remaining.sum(1) == 1
        return stop, torch.where(stop, remaining.int().argmax(1), a), {"remaining": remaining}


@dataclass(frozen=True)
class SingleConfident(ExitPolicy):
    """CR ("CompareN"): exit at k when exactly one class has softmax probability > tau_k (not
    cumulative); tau_k >= 1 disables exit k. For tau_k >= 0.5 this is max-softmax > tau_k."""

    taus: tuple[float, ...]

    def __post_init__(self):
        object.__setattr__(self, "taus", tuple(float(t) for t in self.taus))

    def decide(self, k, num_exits, logits, gate, state):
        _per_exit(self.taus, num_exits, "taus")
        if k == num_exits - 1:
            return torch.ones(len(logits), dtype=torch.bool), logits.argmax(1), state
        above = torch.softmax(logits.float(), 1) > self.taus[k]
        return above.sum(1) == 1, above.int().argmax(1), state


# ---------------------------------------------------------------- threshold search
@dataclass
class SearchResult:
    thresholds: list[float]     # one per early exit
    order: list[int]            # exits (0-based) in the order they were searched
    reference_accuracy: float   # validation accuracy with every exit disabled
    val_accuracy: float         # validation accuracy with the chosen thresholds
    tolerance: float


def _search_order(order: str | Sequence[int], num_early: int, macs: MacTable) -> list[int]:
    if not isinstance(order, str):
        found = [int(k) for k in order]
        if sorted(found) != list(range(num_early)):
            raise ValueError(f"order must be a permutation of 0..{num_early - 1}, got {found}")
        return found
    if order == "forward":
        return list(range(num_early))
    if order == "stage_macs":
        cost = [macs.stage_macs[macs.exit_stage[k]] for k in range(num_early)]
        return sorted(range(num_early), key=lambda k: -cost[k])  # stable, as the authors' sort
    raise ValueError(f"order must be 'stage_macs', 'forward' or a list of exits, got {order!r}")


def greedy_search(val: CachedOutputs, make_policy: Callable[[list[float]], ExitPolicy], grid: Sequence[float],
                  disabled: float, tolerance: float, macs: MacTable,
                  order: str | Sequence[int] = "stage_macs") -> SearchResult:
    """The authors' greedy search: with every exit disabled, take the reference validation accuracy;
    then, exit by exit in ``order`` (earlier choices kept), walk ``grid`` from the safe end and keep
    the last value whose accuracy stays >= reference - tolerance (the exit stays disabled if even
    the first value fails; the authors' code clips to the first value instead)."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    num_early = val.num_exits - 1

    def accuracy(values: list[float]) -> float:
        return evaluate_policy(val, make_policy(values), macs).accuracy

    thresholds = [float(disabled)] * num_early
    reference = accuracy(thresholds)
    goal = reference - tolerance - 1e-9
    visit = _search_order(order, num_early, macs)
    for k in visit:
        for value in grid:
            trial = thresholds[:k] + [float(value)] + thresholds[k + 1:]
            if accuracy(trial) < goal:
                break
            thresholds = trial
    return SearchResult(thresholds, visit, reference, accuracy(thresholds), tolerance)


BETA_GRID = [round(0.01 * i, 2) for i in range(1, 100)]   # 0.01 .. 0.99, ascending: more exclusion
TAU_GRID = BETA_GRID[::-1]                                 # 0.99 .. 0.01, descending: more exits


def search_betas(val: CachedOutputs, tolerance: float, macs: MacTable, restrict_final: bool = True,
                 order: str | Sequence[int] = "stage_macs") -> SearchResult:
    """Class-exclusion betas: start at 0.01 and raise by 0.01 while validation accuracy holds."""
    return greedy_search(val, lambda b: ClassExclusion(b, restrict_final), BETA_GRID, 0.0, tolerance, macs, order)


def search_taus(val: CachedOutputs, tolerance: float, macs: MacTable,
                order: str | Sequence[int] = "stage_macs") -> SearchResult:
    """CR thresholds: start at 0.99 and lower by 0.01 while validation accuracy holds."""
    return greedy_search(val, SingleConfident, TAU_GRID, 1.0, tolerance, macs, order)


@dataclass
class OperatingPoint:
    """Thresholds searched on validation under a tolerance, and what they give on test."""

    method: str               # "BC" (class exclusion) or "CR" (confidence)
    search: SearchResult
    policy: ExitPolicy
    test: PolicyResult

    def row(self) -> dict:
        return {"method": self.method, "tolerance": self.search.tolerance, "thresholds": self.search.thresholds,
                "val_reference": self.search.reference_accuracy, "val_accuracy": self.search.val_accuracy,
                "test_accuracy": self.test.accuracy, "test_fraction": self.test.mean_fraction,
                "test_exit_shares": self.test.exit_shares}


def fit_operating_point(method: str, val: CachedOutputs, test: CachedOutputs, macs: MacTable, tolerance: float,
                        restrict_final: bool = True, order: str | Sequence[int] = "stage_macs") -> OperatingPoint:
    """Search BC's betas or CR's taus on ``val`` and evaluate the resulting policy on ``test``."""
    if method == "BC":
        search = search_betas(val, tolerance, macs, restrict_final, order)
        policy: ExitPolicy = ClassExclusion(search.thresholds, restrict_final)
    elif method == "CR":
        search = search_taus(val, tolerance, macs, order)
        policy = SingleConfident(search.thresholds)
    else:
        raise ValueError(f"method must be 'BC' or 'CR', got {method!r}")
    return OperatingPoint(method, search, policy, evaluate_policy(test, policy, macs))


# ---------------------------------------------------------------- analysis
def exclusion_trace(outputs: CachedOutputs, policy: ClassExclusion) -> torch.Tensor:
    """Remaining-class sets R_k [K-1, N, C] of every image at every early exit, as if it went on."""
    state: State = {}
    sets = []
    for k in range(outputs.num_exits - 1):
        _, _, state = policy.decide(k, outputs.num_exits, outputs.logits[k], None, state)
        sets.append(state["remaining"])
    return torch.stack(sets)


def mean_remaining_classes(outputs: CachedOutputs, policy: ClassExclusion, exit_index: torch.Tensor) -> list[float]:
    """Average |R_k| at each early exit over the images that reached it (the authors' exclusion statistic)."""
    sizes = exclusion_trace(outputs, policy).sum(2).float()
    return [sizes[k][exit_index >= k].mean().item() if (exit_index >= k).any() else float("nan")
            for k in range(len(sizes))]


def early_exit_class_shares(prediction: torch.Tensor, labels: torch.Tensor, exit_index: torch.Tensor,
                            num_exits: int, num_classes: int) -> dict[str, torch.Tensor]:
    """Fig. 5 of the paper: share (%) of each class among the images that left before the final
    layer, keyed by the predicted (exited) class as the authors count, and by the true class."""
    early = exit_index < num_exits - 1
    total = max(int(early.sum()), 1)
    return {key: 100 * torch.bincount(v[early], minlength=num_classes).float() / total
            for key, v in (("predicted", prediction), ("true", labels))}
