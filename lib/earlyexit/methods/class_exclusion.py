"""Early exit with class exclusion (Wang, Li, Zhang, "Early-exit with class exclusion for efficient
inference of neural networks", AICAS 2024, arXiv 2309.13443) and its confidence baseline (CR), for any
multi-exit network. Instead of asking an early exit "am I sure which class this is?", each exit head is a
set of per-class logistic "exclusion networks" (GAP/2x2 pooling + one Linear + sigmoid; the paper's Fig. 2)
that rule classes *out* under a dynamic threshold beta_k x (largest score) (Fig. 3). Exclusions accumulate
over the exits; when one class remains the image leaves with it, and an image that reaches the end is
classified by the final layer among its remaining classes. The paper's full text (its sections and three
equations) was not readable, so the method follows the authors' code, github.com/TUDa-HWAI/eece (the paper
links HWAI-TUDa/EarlyClassExclusion); where code and paper may differ, both readings are named options.

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
  tolerance (strict acceptance, their clip of an exit whose first value fails, their effective exit
  order by default: ``authors_exit_keys``), with
  test-time (per-sample, cumulative) semantics (the authors' batched search in
  searcher/threshhold_searcher.py re-admits other images' argmax classes); ``search_betas`` and
  ``search_taus`` run it for BC and CR; ``fit_operating_point`` searches and evaluates on test.
- ``exclusion_trace``: the remaining-class sets R_k of every image at every early exit.

Use it on a network of your own (a ``MultiExitNet`` whose heads give one logit per class)::

    from earlyexit.evaluate import evaluate_policy
    from earlyexit.losses import build_loss
    from earlyexit.macs import mac_table
    from earlyexit.methods.class_exclusion import ClassExclusionLoss, fit_operating_point
    from earlyexit.outputs import collect_outputs

    loss_fn = ClassExclusionLoss(net.num_exits)   # or build_loss("class_exclusion", net.num_exits, rho=36.0)
    ...                                            # train: loss_fn(net(x), y).backward()
    macs = mac_table(net)
    val, test = collect_outputs(net, val_loader), collect_outputs(net, test_loader)   # (images, labels) batches
    point = fit_operating_point("BC", val, test, macs, tolerance=0.01)   # betas searched on val, scored on test
    point.search.thresholds, point.test.accuracy, point.test.mean_fraction
    evaluate_policy(test, point.policy, macs)      # the same rule offline, on any cached outputs
    net.early_exit(x, point.policy, macs.exit_macs)   # real early exit: rows leave the batch as they exit

``search_betas(val, tolerance, macs)`` alone gives the thresholds; ``ClassExclusion(betas)`` the rule.
Notebook 01's study of the paper (its plan, evaluation, claims, figures) is ``earlyexit.studies.class_exclusion``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..evaluate import PolicyResult, evaluate_policy
from ..fronts import score_vectors
from ..losses import register_loss
from ..macs import MacTable
from ..multiexit import ExitOutputs
from ..outputs import CachedOutputs
from ..policies import ExitPolicy, State

__all__ = ["BCE_MODES", "exclusion_weights", "ClassExclusionLoss", "ConfidenceLoss", "sigmoid64", "ClassExclusion",
           "SingleConfident", "SearchResult", "SEARCH_ORDERS", "authors_exit_keys", "resolve_order", "greedy_search",
           "BETA_GRID", "TAU_GRID", "search_betas", "search_taus", "OperatingPoint", "fit_operating_point",
           "exclusion_trace", "exclusion_candidates", "confident_candidates"]

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
def sigmoid64(z: list[float]) -> list[float]:
    """float64 sigmoid of Python floats as torch computes it element by element, 1 / (1 + exp(-z)), with
    the same libm exp: identical to ``torch.sigmoid`` on a float64 tensor of fewer than 16 elements
    (too short for its vectorised loop, whose exp differs in the last bit for ~3% of values), which is
    what the batch-of-one decision computed before, at a tenth of the cost of two tensor operations."""
    try:
        return [1.0 / (1.0 + math.exp(-v)) for v in z]
    except OverflowError:                 # exp(-v) beyond float64 (v < -709.78): torch's 1 / inf = 0
        return [_sigmoid64_one(v) for v in z]


def _sigmoid64_one(v: float) -> float:
    try:
        return 1.0 / (1.0 + math.exp(-v))
    except OverflowError:
        return 0.0


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

    def decide(self, k, num_exits, logits, gate, state):
        _per_exit(self.betas, num_exits, "betas")
        n, c = logits.shape
        remaining = state.get("remaining", torch.ones(n, c, dtype=torch.bool, device=logits.device))
        if k == num_exits - 1:
            z = logits.float()
            if self.restrict_final:
                usable = remaining | ~remaining.any(1, keepdim=True)
                z = z.masked_fill(~usable, -torch.inf)
            return torch.ones(n, dtype=torch.bool, device=logits.device), z.argmax(1), {"remaining": remaining}
        s = torch.sigmoid(logits.double())  # float64: no score underflows to 0 before beta * max
        top, a = s.max(1)
        remaining = remaining.scatter(1, a[:, None], True) & (s > self.betas[k] * top[:, None])
        stop = remaining.sum(1) == 1
        return stop, torch.where(stop, remaining.int().argmax(1), a), {"remaining": remaining}

    def row_decider(self, num_exits):
        """The same rule on one row with the remaining classes as a Python set and the float64 sigmoid
        in Python (``sigmoid64``): the same comparisons, with one tensor readout per exit."""
        _per_exit(self.betas, num_exits, "betas")
        betas, restrict_final, last = self.betas, self.restrict_final, num_exits - 1
        remaining = None                       # no class excluded yet

        def decide(k, logits, gate):
            nonlocal remaining
            z = logits.tolist()[0]             # the logits' own values (Python floats hold any float dtype's)
            if k == last:
                usable = remaining if restrict_final and remaining else range(len(z))
                return True, max(sorted(usable), key=z.__getitem__)        # max keeps the first largest
            s = sigmoid64(z)                   # as decide's sigmoid of logits.double()
            cut = betas[k] * max(s)
            if remaining is None:
                remaining = {c for c, v in enumerate(s) if v > cut}
            else:                              # the argmax (index: the first largest) rejoins the set
                remaining = {c for c in remaining | {s.index(max(s))} if s[c] > cut}
            if len(remaining) == 1:
                return True, min(remaining)
            return False, -1                   # the prediction counts only where the row stops
        return decide


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
            return torch.ones(len(logits), dtype=torch.bool, device=logits.device), logits.argmax(1), state
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


SEARCH_ORDERS = ("authors", "true_macs", "forward")


def authors_exit_keys(backbone_name: str, backbone, exit_after: Sequence[int], macs: MacTable) -> list[float]:
    """The authors' sort key of every early exit (searcher/threshhold_searcher.py sorts exits by it,
    descending, stably): the MACs of the layer just before the exit as their models count it. Their
    VGG (model/vgg.py) hard-codes each conv's input channels as the channel count of its own block, so
    every conv but the first is charged c_out^2 k^2 H W; with channels doubling as the resolution halves
    this ties every exit but the first (VGGsmall: 2, 3, 4, 5, 6, 1; VGG-13: 2, ..., 9, 1). Other backbones
    (their AlexNet and ResNet) count the true MACs of the layer or block before the exit; AlexNet's exit
    3 is charged its FLOPs (twice the MACs) instead."""
    if backbone_name.startswith("vgg"):
        shapes = backbone.stage_shapes()
        keys = []
        for s in exit_after:
            conv = [m for m in backbone.stages[s].modules() if isinstance(m, torch.nn.Conv2d)][-1]
            c_out, h, w = shapes[s]
            c_in = conv.in_channels if s == 0 else c_out
            keys.append(float(c_out * c_in * conv.kernel_size[0] * conv.kernel_size[1] * h * w))
        return keys
    keys = [float(macs.stage_macs[macs.exit_stage[k]]) for k in range(len(exit_after))]
    if backbone_name == "alexnet" and len(keys) > 2:
        keys[2] *= 2
    return keys


def resolve_order(order: str | Sequence[int], num_early: int, macs: MacTable,
                  authors_keys: Sequence[float] | None = None) -> list[int]:
    """The exits (0-based) in search order: "authors" (descending ``authors_keys``), "true_macs"
    (descending true MACs of the stage before each exit), "forward", or an explicit permutation. Sorts
    are stable, as Python's sort in the authors' search."""
    if not isinstance(order, str):
        found = [int(k) for k in order]
        if sorted(found) != list(range(num_early)):
            raise ValueError(f"order must be a permutation of 0..{num_early - 1}, got {found}")
        return found
    if order == "forward":
        return list(range(num_early))
    if order == "true_macs":
        cost = [macs.stage_macs[macs.exit_stage[k]] for k in range(num_early)]
        return sorted(range(num_early), key=lambda k: -cost[k])
    if order == "authors":
        if authors_keys is None or len(authors_keys) != num_early:
            raise ValueError("the authors' order needs one sort key per early exit (authors_exit_keys)")
        return sorted(range(num_early), key=lambda k: -authors_keys[k])
    raise ValueError(f"order must be one of {SEARCH_ORDERS} or a list of exits, got {order!r}")


def greedy_search(val: CachedOutputs, make_policy: Callable[[list[float]], ExitPolicy], grid: Sequence[float],
                  disabled: float, tolerance: float, macs: MacTable, order: str | Sequence[int] = "forward",
                  authors_keys: Sequence[float] | None = None, clip_on_failure: bool = True) -> SearchResult:
    """The authors' greedy search: with every exit disabled, take the reference validation accuracy;
    then, exit by exit in ``order`` (earlier choices kept), walk ``grid`` from the safe end and keep the
    last value whose accuracy stays strictly above reference - tolerance (their loop runs while
    ``acc > goal``). If even the first value fails, the exit takes that first grid value anyway
    (``clip_on_failure``, the default: their search backs off below the first value and clips the result
    into [0.01, 0.99], so beta = 0.01 and tau = 0.99), or stays disabled (``clip_on_failure=False``).
    The clip matters for class exclusion: beta = 0 excludes nothing but still re-admits the exit's top
    class, so the remaining set can grow there, while beta = 0.01 drops classes below 1 % of the top score."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    num_early = val.num_exits - 1

    def accuracy(values: list[float]) -> float:
        return evaluate_policy(val, make_policy(values), macs).accuracy

    thresholds = [float(disabled)] * num_early
    reference = accuracy(thresholds)
    goal = reference - tolerance
    visit = resolve_order(order, num_early, macs, authors_keys)
    for k in visit:
        for i, value in enumerate(grid):
            trial = thresholds[:k] + [float(value)] + thresholds[k + 1:]
            if not accuracy(trial) - goal > 1e-12:     # strict, robust to float rounding of goal
                if i == 0 and clip_on_failure:
                    thresholds = trial
                break
            thresholds = trial
    return SearchResult(thresholds, visit, reference, accuracy(thresholds), tolerance)


BETA_GRID = [round(0.01 * i, 2) for i in range(1, 100)]   # 0.01 .. 0.99, ascending: more exclusion
TAU_GRID = BETA_GRID[::-1]                                 # 0.99 .. 0.01, descending: more exits


def search_betas(val: CachedOutputs, tolerance: float, macs: MacTable, restrict_final: bool = True,
                 order: str | Sequence[int] = "forward", **options) -> SearchResult:
    """Class-exclusion betas: start at 0.01 and raise by 0.01 while validation accuracy holds (an exit
    where 0.01 already fails gets 0.01, or 0 with ``clip_on_failure=False``).
    ``options``: ``authors_keys``, ``clip_on_failure`` of ``greedy_search``."""
    return greedy_search(val, lambda b: ClassExclusion(b, restrict_final), BETA_GRID, 0.0, tolerance, macs, order,
                         **options)


def search_taus(val: CachedOutputs, tolerance: float, macs: MacTable, order: str | Sequence[int] = "forward",
                **options) -> SearchResult:
    """CR thresholds: start at 0.99 and lower by 0.01 while validation accuracy holds."""
    return greedy_search(val, SingleConfident, TAU_GRID, 1.0, tolerance, macs, order, **options)


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
                        restrict_final: bool = True, order: str | Sequence[int] = "forward",
                        **options) -> OperatingPoint:
    """Search BC's betas or CR's taus on ``val`` and evaluate the resulting policy on ``test``."""
    if method == "BC":
        search = search_betas(val, tolerance, macs, restrict_final, order, **options)
        policy: ExitPolicy = ClassExclusion(search.thresholds, restrict_final)
    elif method == "CR":
        search = search_taus(val, tolerance, macs, order, **options)
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


# ---------------------------------------------------------------- candidates for comparing rules on equal terms
def exclusion_candidates(val: CachedOutputs, vectors: int, grid: int, seed: int = 0,
                         restrict_final: bool = True) -> list[ClassExclusion]:
    """Class-exclusion betas at validation quantiles of each row's critical beta at each exit (the
    ratio of its second-largest to its largest sigmoid score: at larger betas the row is left with
    one class), drawn like every threshold rule's vectors; 'never' is beta = 0."""
    s = torch.sigmoid(val.logits[:-1].double()).topk(2, dim=2).values
    critical = (s[..., 1] / s[..., 0]).float()
    betas = (-score_vectors(-critical, vectors, grid, seed)).clamp(0.0, 1.0)
    return [ClassExclusion(tuple(b.tolist()), restrict_final) for b in betas]


def confident_candidates(val: CachedOutputs, vectors: int, grid: int, seed: int = 0) -> list[SingleConfident]:
    """The confidence baseline's taus at validation quantiles of the largest softmax probability;
    'never' is tau = 1."""
    top = torch.softmax(val.logits[:-1].float(), 2).max(2).values
    taus = score_vectors(top, vectors, grid, seed).clamp(max=1.0)
    return [SingleConfident(tuple(t.tolist())) for t in taus]
