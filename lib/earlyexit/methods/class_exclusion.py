"""Early exit with class exclusion (Wang, Li, Zhang, AICAS 2024) and its confidence baseline (CR).

Instead of asking an early exit "am I sure which class this is?", each exit head is a set of
per-class logistic "exclusion networks" (GAP/2x2 pooling + one Linear + sigmoid) that rule classes
*out*. Exclusions accumulate over the exits; when one class remains the image leaves with it, and an
image that reaches the end is classified by the final layer among its remaining classes.

What is here (the method as the authors' code TUDa-HWAI/eece implements it, since the paper's full text
was not readable; where code and paper may differ, both readings are named options):

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
  tolerance (strict acceptance, their effective exit order by default: ``authors_exit_keys``), with
  test-time (per-sample, cumulative) semantics (the authors' batched search in
  searcher/threshhold_searcher.py re-admits other images' argmax classes); ``fit_operating_point``
  searches and evaluates on test.
- ``evaluate_setup`` -> ``SetupEvaluation``: everything notebook 01 reports for one set-up (Table I,
  the common-tolerance curves, matched-accuracy comparison, Fig. 4/5 analogues, the limits of beta) and
  ``SetupEvaluation.claims``, the paper's six claims checked with bootstrap intervals over test images
  (rules on one network) or t intervals over training seeds (BC against CR); ``choose_lrs``, the one
  validation rule that picks every method's learning rate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..evaluate import PolicyResult, evaluate_policy, select
from ..losses import register_loss
from ..macs import MacTable
from ..multiexit import ExitOutputs
from ..outputs import CachedOutputs
from ..policies import ExitPolicy, State

__all__ = ["BCE_MODES", "exclusion_weights", "ClassExclusionLoss", "ConfidenceLoss", "ClassExclusion",
           "SingleConfident", "SearchResult", "SEARCH_ORDERS", "authors_exit_keys", "resolve_order", "greedy_search", "search_betas", "search_taus", "OperatingPoint",
           "fit_operating_point", "exclusion_trace", "mean_remaining_classes", "early_exit_class_shares",
           "per_exit_accuracy", "paper_setup_keys", "authors_thresholds", "SetupEvaluation", "evaluate_setup",
           "resampled", "matched_cost_gap", "setup_claims", "plot_accuracy_vs_macs", "operating_points",
           "plot_exit_points", "exit_count_rows", "plot_class_shares", "plot_remaining_classes",
           "paper_comparisons", "conclusions", "protocol", "claims_with_rivals", "validation_accuracy", "choose_lr",
           "choose_lrs", "evaluate_seeds", "final_accuracies", "spread", "rivals_text", "seed_rows", "seed_gap"]

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
                  authors_keys: Sequence[float] | None = None, clip_on_failure: bool = False) -> SearchResult:
    """The authors' greedy search: with every exit disabled, take the reference validation accuracy;
    then, exit by exit in ``order`` (earlier choices kept), walk ``grid`` from the safe end and keep the
    last value whose accuracy stays strictly above reference - tolerance (their loop runs while
    ``acc > goal``). If even the first value fails the exit stays disabled, or, with ``clip_on_failure``,
    takes the first grid value (their code clips the backed-off value into [0.01, 0.99])."""
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
    """Class-exclusion betas: start at 0.01 and raise by 0.01 while validation accuracy holds.
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


# ---------------------------------------------------------------- notebook 01: one set-up, evaluated
METHODS = ("BC", "CR")
PAPER = "class_exclusion"
EXTRA_DROP = 0.005   # claim 1: test drop allowed beyond the validation tolerance (validation-to-test transfer)
MANY_EARLY = 0.20    # claim 3: "many images" = at least this share leaves before the final layer
UNEVEN = 1.5         # claim 4: largest / smallest early-exit share per class
DRAWS = 2000         # bootstrap resamples of the test images


def per_exit_accuracy(tests: dict[str, CachedOutputs], macs: MacTable) -> list[dict]:
    """Accuracy of every BC and CR exit when all test images are forced out there, beside its cost."""
    bc, cr = tests["BC"].exit_accuracies(), tests["CR"].exit_accuracies()
    return [{"exit": k + 1, "fraction of backbone": f, "BC accuracy": bc[k], "CR accuracy": cr[k]}
            for k, f in enumerate(macs.exit_fractions)]


def paper_setup_keys(setup: dict) -> dict[str, str]:
    """The columns naming a set-up in data/paper_numbers/class_exclusion.csv (2x2-pooling heads are "_x2")."""
    backbone = {"resnet50_cifar": "resnet50"}.get(setup["backbone"], setup["backbone"])
    return {"dataset": setup["dataset"], "backbone": backbone + ("_x2" if setup.get("pool", 1) == 2 else "")}


def authors_thresholds(setup: dict) -> dict[str, list[float]] | None:
    """The betas and taus of the authors' test configs for this set-up, or None if they have none."""
    from ..studies.claims import paper_number
    try:
        values = {q: paper_number(PAPER, method=m, quantity=q, **paper_setup_keys(setup)).value
                  for m, q in (("BC", "beta"), ("CR", "tau"))}
        return {q: [float(v) for v in str(v).split(",")] for q, v in values.items()}
    except ValueError:
        return None


@dataclass
class SetupEvaluation:
    """One set-up's trained networks (plain, BC, CR) with thresholds searched on validation and every
    number notebook 01 reports, computed on test."""

    setup: dict
    tests: dict[str, CachedOutputs]           # "plain", "BC", "CR"
    macs: dict[str, MacTable]
    authors: dict[str, OperatingPoint]        # "BC", "CR" at the authors' tolerances for the set-up
    curves: dict[str, list[OperatingPoint]]   # "BC", "CR" on the common tolerance grid
    tolerances: list[float]
    restrict_final: bool = True

    @property
    def name(self) -> str:
        return self.setup["name"]

    @property
    def num_exits(self) -> int:
        return self.tests["BC"].num_exits

    def no_exit(self, method: str) -> tuple[float, float]:
        """(remaining MACs as a fraction of the plain backbone, test accuracy) with early exits disabled."""
        return self.macs[method].exit_fractions[-1], self.tests[method].exit_accuracies()[-1]

    def table_i_row(self) -> dict:
        """The paper's Table I for this set-up, at the authors' tolerances."""
        bc, cr = self.authors["BC"], self.authors["CR"]
        return {"set-up": self.name, "plain acc": self.tests["plain"].exit_accuracies()[-1],
                "BC final-exit acc": self.no_exit("BC")[1], "BC acc": bc.test.accuracy,
                "CR final-exit acc": self.no_exit("CR")[1], "CR acc": cr.test.accuracy,
                "full MMACs": self.macs["plain"].backbone_macs / 1e6,
                "BC remaining MACs %": 100 * bc.test.mean_fraction, "CR remaining MACs %": 100 * cr.test.mean_fraction,
                "BC tolerance %": 100 * bc.search.tolerance, "CR tolerance %": 100 * cr.search.tolerance,
                "beta": bc.search.thresholds, "tau": cr.search.thresholds}

    def curve_rows(self) -> list[dict]:
        return [{"set-up": self.name, **{k: v for k, v in p.row().items() if k != "test_exit_shares"}}
                for m in METHODS for p in self.curves[m]]

    def cheapest_reaching(self, method: str, accuracy: float) -> float | None:
        """MAC fraction of the cheapest test point of ``method`` (its curve, or no early exit) whose
        accuracy is at least ``accuracy``; None if none reaches it."""
        pts = [(p.test.mean_fraction, p.test.accuracy) for p in self.curves[method]] + [self.no_exit(method)]
        cost, acc = torch.tensor(pts, dtype=torch.float64).T
        i = select(cost, acc, reference=accuracy, tolerance=0.0)
        return None if i is None else float(cost[i])

    def matched_rows(self) -> list[dict]:
        """For every point of each method, the cheapest point of the other reaching its test accuracy."""
        rows = []
        for ours, other in (("BC", "CR"), ("CR", "BC")):
            for t, p in zip(self.tolerances, self.curves[ours]):
                rival = self.cheapest_reaching(other, p.test.accuracy)
                rows.append({"set-up": self.name, "method": ours, "tolerance %": 100 * t, "test accuracy": p.test.accuracy,
                             "remaining MACs %": 100 * p.test.mean_fraction,
                             "other method's MACs % at >= this accuracy": None if rival is None else 100 * rival,
                             "cheaper": "n/a" if rival is None else (ours if p.test.mean_fraction < rival else other)})
        return rows

    def example_traces(self, classes: Sequence[str]) -> list[dict]:
        """|R_k| after each exit for three test images at the authors' beta: one leaving at exit 1 or 2,
        one leaving later, one classified by the final layer."""
        bc, out = self.authors["BC"], self.tests["BC"]
        trace, exit_idx, k_final = exclusion_trace(out, bc.policy), bc.test.exit_index.tolist(), self.num_exits - 1
        rows = []
        for wanted in (lambda e: e <= 1, lambda e: 1 < e < k_final, lambda e: e == k_final):
            i = next((i for i, e in enumerate(exit_idx) if wanted(e)), None)
            if i is not None:
                rows.append({"test image": i, "true class": classes[int(out.labels[i])],
                             **{f"|R| after exit {k + 1}": int(trace[k, i].sum()) for k in range(len(trace))},
                             "left at exit": exit_idx[i] + 1, "prediction": classes[int(bc.test.prediction[i])]})
        return rows

    def class_shares(self, method: str) -> dict[str, torch.Tensor]:
        """Fig. 5: per-class shares (%) of the early-exited test images at the authors' tolerance."""
        p, out = self.authors[method].test, self.tests[method]
        return early_exit_class_shares(p.prediction, out.labels, p.exit_index, out.num_exits, out.logits.shape[2])

    def remaining_classes(self, point: OperatingPoint) -> list[float]:
        return mean_remaining_classes(self.tests["BC"], point.policy, point.test.exit_index)

    def limit(self, beta: float) -> PolicyResult:
        """BC with the same beta at every exit."""
        return evaluate_policy(self.tests["BC"], ClassExclusion([beta] * (self.num_exits - 1), self.restrict_final),
                               self.macs["BC"])

    def limit_rows(self, betas: Sequence[float] = (0.0, 0.99)) -> list[dict]:
        return [{"set-up": self.name, "betas": b, "test accuracy": r.accuracy, "remaining MACs %": 100 * r.mean_fraction,
                 "share leaving at exit 1": r.exit_shares[0]} for b in betas for r in [self.limit(b)]]

    def claims(self, setting: str, draws: int = DRAWS, seed: int = 0,
               seed_evals: Sequence["SetupEvaluation"] | None = None) -> list:
        """The paper's claims for this set-up as ``claims.Claim`` rows (see ``setup_claims``)."""
        return setup_claims(self, setting, draws, seed, seed_evals)


def evaluate_setup(setup: dict, runs: dict, tolerances: Sequence[float], restrict_final: bool = True,
                   order: str | Sequence[int] = "authors", clip_on_failure: bool = False,
                   authors_keys: Sequence[float] | None = None) -> SetupEvaluation:
    """Search BC's betas and CR's taus on validation, at the set-up's own (the authors') tolerances
    and on the common grid, and evaluate them on test. ``runs``: {"plain" | "BC" | "CR": TrainedRun}.
    The authors' search order reads the architecture of BC's network unless ``authors_keys`` are given.
    Test outputs are only evaluated, never searched on."""
    tests = {m: r.outputs("test") for m, r in runs.items()}
    vals = {m: runs[m].outputs("val") for m in METHODS}
    macs = {m: r.macs for m, r in runs.items()}
    if order == "authors" and authors_keys is None:
        net = runs["BC"].net
        authors_keys = authors_exit_keys(setup["backbone"], net.backbone, net.exit_after, macs["BC"])

    def fit(method: str, tolerance: float) -> OperatingPoint:
        return fit_operating_point(method, vals[method], tests[method], macs[method], tolerance, restrict_final, order,
                                   authors_keys=authors_keys, clip_on_failure=clip_on_failure)

    authors = {m: fit(m, setup.get(f"{m.lower()}_tolerance", 0.01)) for m in METHODS}
    curves = {m: [fit(m, t) for t in tolerances] for m in METHODS}
    return SetupEvaluation(setup, tests, macs, authors, curves, list(tolerances), restrict_final)


# ---------------------------------------------------------------- learning rates and seeds
def evaluate_seeds(setup: dict, runs: dict[str, Sequence], tolerances: Sequence[float], restrict_final: bool = True,
                   order: str | Sequence[int] = "authors", clip_on_failure: bool = False) -> list[SetupEvaluation]:
    """``evaluate_setup`` for every training seed: ``runs`` is {method: [TrainedRun per seed]}, seed s of
    every method evaluated together (the pairing of the seed intervals)."""
    counts = {m: len(r) for m, r in runs.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"every method needs one run per seed, got {counts}")
    return [evaluate_setup(setup, {m: r[i] for m, r in runs.items()}, tolerances, restrict_final, order, clip_on_failure)
            for i in range(next(iter(counts.values())))]


def validation_accuracy(run) -> float:
    """Final-exit accuracy on the validation split: what a learning rate is chosen on."""
    return run.outputs("val").exit_accuracies()[-1]


def choose_lr(runs_by_lr: dict[float, object]) -> tuple[float, dict[float, float]]:
    """The rate whose run has the best validation final-exit accuracy (ties: the first in grid order),
    and every rate's accuracy. The same rule for every method, so no rival is tuned harder."""
    scores = {float(lr): validation_accuracy(run) for lr, run in runs_by_lr.items()}
    best = max(scores, key=lambda lr: (scores[lr], -list(scores).index(lr)))
    return best, scores


def choose_lrs(candidates: dict[str, dict[str, dict[float, object]]]) -> tuple[dict, list[dict]]:
    """``choose_lr`` for every set-up and method: ({set-up: {method: lr}}, rows for a table)."""
    chosen, rows = {}, []
    for name, by_m in candidates.items():
        chosen[name] = {}
        for m, by_lr in by_m.items():
            chosen[name][m], scores = choose_lr(by_lr)
            rows += [{"set-up": name, "method": m, "lr": lr, "val final-exit acc": acc, "chosen": lr == chosen[name][m]}
                     for lr, acc in scores.items()]
    return chosen, rows


def final_accuracies(seed_evals: Sequence[SetupEvaluation]) -> dict[str, list[float]]:
    """{"plain" | "BC" | "CR": [test final-exit accuracy per seed]}: the rivals' training gap."""
    return {m: [ev.tests[m].exit_accuracies()[-1] for ev in seed_evals] for m in ("plain",) + METHODS}


def spread(values: Sequence[float]) -> str:
    """'mean ± sd (n seeds)' in percent, for tables and claim evidence."""
    t = torch.tensor(list(values), dtype=torch.float64) * 100
    sd = t.std().item() if len(t) > 1 else 0.0
    return f"{t.mean().item():.2f} ± {sd:.2f} % ({len(t)} seed{'s' if len(t) > 1 else ''})"


def rivals_text(seed_evals: Sequence[SetupEvaluation]) -> str:
    """The rivals' final-exit test accuracies (mean ± sd over seeds), shown beside every comparison."""
    return "; ".join(f"{m} {spread(v)}" for m, v in final_accuracies(seed_evals).items())


def seed_rows(seed_evals: Sequence[SetupEvaluation], seeds: Sequence[int]) -> list[dict]:
    """Table I per training seed, then the mean and the 95 % t interval over seeds of every number."""
    from ..stats import seed_interval
    rows = [{"seed": s, **{k: v for k, v in ev.table_i_row().items() if k not in ("beta", "tau")},
             "matched MACs gap (BC - CR, points)": seed_gap(ev)} for s, ev in zip(seeds, seed_evals)]
    if len(rows) > 1:
        numeric = [k for k, v in rows[0].items() if isinstance(v, float) and k != "seed"]
        stats = {k: seed_interval([r[k] for r in rows]) for k in numeric}
        rows.append({"seed": "mean", "set-up": rows[0]["set-up"], **{k: v[0] for k, v in stats.items()}})
        rows.append({"seed": "95% interval", "set-up": rows[0]["set-up"],
                     **{k: f"[{v[1]:.4g}, {v[2]:.4g}]" for k, v in stats.items()}})
    return rows


def seed_gap(ev: SetupEvaluation) -> float:
    """Claim 2's statistic on one seed's pair of networks, on the full test set."""
    return matched_cost_gap(ev)(torch.ones(1, len(ev.tests["BC"]), dtype=torch.float64)).item()


# ---------------------------------------------------------------- the paper's claims, with intervals
def _columns(points: Sequence[PolicyResult], labels: torch.Tensor, macs: MacTable) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image correctness and cost (fraction of the plain backbone), [points, images] each."""
    cost = torch.tensor(macs.exit_fractions, dtype=torch.float64)
    return (torch.stack([(p.prediction == labels).double() for p in points]),
            torch.stack([cost[p.exit_index] for p in points]))


def matched_cost_gap(ev: SetupEvaluation) -> Callable[[torch.Tensor], torch.Tensor]:
    """Claim 2's statistic: over the BC points of the common grid, the mean of BC's MACs minus the MACs
    of the cheapest CR point (its curve or no early exit) reaching BC's accuracy, in points of the
    plain backbone's MACs. Where no CR point reaches it, CR is charged its cost with exits disabled,
    a bound that favours CR."""
    labels = ev.tests["BC"].labels
    if not torch.equal(labels, ev.tests["CR"].labels):
        raise ValueError("BC and CR must be evaluated on the same test images")
    final = ev.no_exit("CR")[0]
    bc_ok, bc_cost = _columns([p.test for p in ev.curves["BC"]], labels, ev.macs["BC"])
    cr_ok, cr_cost = _columns([p.test for p in ev.curves["CR"]], labels, ev.macs["CR"])
    cr_ok = torch.cat([cr_ok, (ev.tests["CR"].logits[-1].argmax(1) == labels).double()[None]])
    cr_cost = torch.cat([cr_cost, torch.full((1, len(labels)), final, dtype=torch.float64)])

    def stat(w: torch.Tensor) -> torch.Tensor:
        n = w.sum(1, keepdim=True)
        acc_b, cost_b, acc_c, cost_c = (w @ x.T / n for x in (bc_ok, bc_cost, cr_ok, cr_cost))   # [D, points]
        reach = acc_c[:, None, :] >= acc_b[:, :, None] - 1e-12                                  # [D, BC, CR]
        cheapest = torch.where(reach, cost_c[:, None, :], torch.inf).amin(2)
        return 100 * (cost_b - torch.where(cheapest.isinf(), torch.full_like(cheapest, final), cheapest)).mean(1)
    return stat


def _uneven_shares(prediction: torch.Tensor, early: torch.Tensor,
                   num_classes: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Claim 4's statistic: largest / smallest number of early-exited images per predicted class (a
    class with none counts as one image)."""
    onehot = F.one_hot(prediction, num_classes).double() * early.double()[:, None]

    def stat(w: torch.Tensor) -> torch.Tensor:
        counts = w @ onehot
        return counts.amax(1) / counts.amin(1).clamp_min(1.0)
    return stat


def _largest_growth(sizes: torch.Tensor, reached: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Claim 5's statistic: the largest rise of mean |R_k| from one exit to the next, over the images
    that reached each exit (exits no image reached are left out)."""
    sizes, reached = sizes.double(), reached.double()

    def stat(w: torch.Tensor) -> torch.Tensor:
        mean = (w @ (sizes * reached).T) / (w @ reached.T)   # [D, exits]; nan where none reached
        rise = mean[:, 1:] - mean[:, :-1]
        return torch.where(rise.isnan(), -torch.inf, rise).amax(1)
    return stat


def setup_claims(ev: SetupEvaluation, setting: str, draws: int = DRAWS, seed: int = 0,
                 seed_evals: Sequence[SetupEvaluation] | None = None) -> list:
    """Claims 1-6 of the paper (its abstract, introduction and Figs. 4 and 5; the paper gives no
    retrievable numbers) for one set-up. Rules on one network (BC with and without exits, two betas)
    get a paired bootstrap over the test images of ``ev`` (the first seed's networks). BC against CR
    compares separately trained networks: with ``seed_evals`` (one evaluation per training seed, >= 2)
    its interval is the t interval over seeds of the per-seed statistic (seed s of BC against seed s of
    CR); with one seed it falls back to a bootstrap over test images, which covers the test sample only."""
    from ..studies.claims import claim, paper_number
    from ..stats import bootstrap_mean, bootstrap_weighted, paired_bootstrap
    bc, out, macs = ev.authors["BC"].test, ev.tests["BC"], ev.macs["BC"]
    n, k_final = len(out), ev.num_exits - 1
    none = paper_number(PAPER, quantity="paper_accuracy_and_mac_values")
    common = {"setting": setting, "paper_source": none.source}
    one_seed = "one seed: no interval across trainings"
    boot = f"bootstrap over the {n} test images ({draws} resamples) on one training seed's networks"
    (ok, cost), final_ok = _columns([bc], out.labels, macs), (out.logits[-1].argmax(1) == out.labels).double()
    claims = [claim("Class exclusion cuts the MACs of the full network", "BC mean MACs at the authors' tolerance",
                    100 * bc.mean_fraction, claimed="less", than=100.0,
                    interval=[100 * v for v in bootstrap_mean(cost[0], draws, seed)[1:]],
                    unit="% of plain-backbone MACs", evidence=boot, **common)]
    tol = ev.authors["BC"].search.tolerance
    try:
        authors_tol = paper_number(PAPER, method="BC", quantity="search_tolerance", **paper_setup_keys(ev.setup))
        paper, source = authors_tol.value, authors_tol.source
    except ValueError:
        paper, source = None, none.source
    drop = [100 * v for v in paired_bootstrap(final_ok, ok[0], draws, seed)]
    claims.append(claim("Class exclusion keeps test accuracy within the search tolerance", "test accuracy drop of BC against the "
                        f"same network with exits disabled (allowed: the {100 * tol:g} % validation tolerance plus "
                        f"{100 * EXTRA_DROP:g} points for validation-to-test transfer)", drop[0], claimed="less",
                        than=100 * (tol + EXTRA_DROP), interval=drop[1:], unit="points",
                        evidence=f"paired {boot}", setting=setting, paper=paper, paper_source=source))
    wins = sum(r["cheaper"] == "BC" for r in ev.matched_rows() if r["method"] == "BC")
    statement, comparison = "BC needs fewer MACs than CR at matched accuracy", ("mean over the common tolerance "
                            "grid of BC's MACs minus those of the cheapest CR point reaching BC's test accuracy")
    rivals = f"final-exit test accuracy {rivals_text(seed_evals or [ev])}"
    if seed_evals is not None and len(seed_evals) >= 2:
        from ..stats import seed_interval
        per_seed = [seed_gap(e) for e in seed_evals]
        gap = seed_interval(per_seed)
        evidence = (f"t interval over {len(per_seed)} training seeds of the per-seed value (seed s of BC against "
                    f"seed s of CR): {', '.join(f'{v:.3g}' for v in per_seed)}; {rivals}")
    else:
        gap = bootstrap_weighted(matched_cost_gap(ev), n, draws, seed)
        evidence = (f"paired bootstrap over the {n} test images ({draws} resamples; accuracies, matching and costs "
                    f"recomputed in each); {one_seed}; BC cheaper at {wins} of {len(ev.tolerances)} tolerances; {rivals}")
    claims.append(claim(statement, comparison, gap[0], claimed="less", interval=gap[1:],
                        unit="points of plain-backbone MACs", evidence=evidence, **common))
    early = (bc.exit_index < k_final).double()
    used = sum(s >= 0.05 for s in bc.exit_shares[:-1])
    claims.append(claim("Many images leave at intermediate exits (Fig. 4)", "share of test images leaving BC before the "
                        "final layer at the authors' tolerance", 100 * early.mean().item(), than=100 * MANY_EARLY,
                        interval=[100 * v for v in bootstrap_mean(early, draws, seed)[1:]], unit="% of test images",
                        evidence=f"{boot}; {used} of {k_final} early exits take >= 5 %", **common))
    if out.logits.shape[2] == 10:
        uneven = bootstrap_weighted(_uneven_shares(bc.prediction, bc.exit_index < k_final, 10), n, draws, seed)
        claims.append(claim("The early-exit share is uneven across classes (Fig. 5)", "largest / smallest number of "
                            "early-exited test images per predicted class (uniform: 1)", uneven[0], than=UNEVEN,
                            interval=uneven[1:], unit="ratio", evidence=boot, **common))
    trace = exclusion_trace(out, ev.authors["BC"].policy).sum(2).double()
    reached = torch.stack([(bc.exit_index >= k).double() for k in range(k_final)])
    measured = k_final > 1 and reached[1].sum() > 0
    growth = bootstrap_weighted(_largest_growth(trace, reached), n, draws, seed) if measured else (None, None, None)
    claims.append(claim("Exclusion grows with depth: fewer classes remain at deeper exits", "largest rise of the mean "
                        "number of remaining classes from one exit to the next (each over the images that reached it)",
                        growth[0], claimed="less", interval=growth[1:] if measured else None, unit="classes",
                        evidence=boot if measured else "fewer than two exits reached", **common))
    zero, high = ev.limit(0.0), ev.limit(0.99)
    claims.append(claim("Limits: beta = 0 reproduces the final classifier", "test images whose prediction differs "
                        "from the final classifier's", int((zero.prediction != out.logits[-1].argmax(1)).sum()),
                        claimed="less", than=1.0, unit="images", evidence="deterministic property of the rule, "
                        f"checked on every test image: no interval; it costs {100 * zero.mean_fraction:.1f} % MACs",
                        deterministic=True, **common))
    loss = [100 * v for v in paired_bootstrap(_columns([high], out.labels, macs)[0][0], final_ok, draws, seed)]
    claims.append(claim("Limits: a large beta sends almost every image out at exit 1 and accuracy drops",
                        "test accuracy at beta = 0.99 minus the final classifier's", loss[0], claimed="less",
                        interval=loss[1:], unit="points", evidence=f"paired {boot}; "
                        f"{100 * high.exit_shares[0]:.1f} % leave at exit 1", **common))
    return claims


# ---------------------------------------------------------------- notebook 01: figures, comparisons, conclusions
def _grid(panels: int, rows: int, width: float, height: float):
    import matplotlib.pyplot as plt
    return plt.subplots(rows, panels, figsize=(width * panels, height), squeeze=False)


def plot_accuracy_vs_macs(evals: dict[str, SetupEvaluation]):
    """Test accuracy against remaining MACs on the common tolerance grid, one panel per set-up; stars:
    each network with early exits disabled; dotted: the plain backbone."""
    from ..studies.plots import accuracy_vs_cost
    fig, axes = _grid(len(evals), 1, 6.2, 4.4)
    for ax, ev in zip(axes[0], evals.values()):
        grid = ", ".join(f"{100 * t:g}" for t in ev.tolerances)
        accuracy_vs_cost(ax, {f"{m} (tolerance {grid} %)": ([100 * p.test.mean_fraction for p in ev.curves[m]],
                                                            [p.test.accuracy for p in ev.curves[m]]) for m in METHODS},
                         reference={f"{m}, no early exit": (100 * ev.no_exit(m)[0], ev.no_exit(m)[1]) for m in METHODS},
                         xlabel="remaining MACs (% of the plain backbone)")
        ax.axhline(100 * ev.tests["plain"].exit_accuracies()[-1], color="gray", ls=":", lw=1, label="plain backbone")
        ax.legend(frameon=True, fontsize=8)
        ax.set_title(f"{ev.name} (test)")
    return fig


Points = dict[str, dict[str, dict[str, OperatingPoint]]]   # {label: {set-up: {method: point}}}


def operating_points(evals: dict[str, SetupEvaluation], common: float) -> Points:
    """{label: {set-up: {method: point}}} at the authors' tolerances and at one common tolerance."""
    return {"authors' tolerances": {n: ev.authors for n, ev in evals.items()},
            f"common {100 * common:g} % tolerance": {n: {m: ev.curves[m][ev.tolerances.index(common)] for m in METHODS}
                                                  for n, ev in evals.items()}}


def plot_exit_points(evals: dict[str, SetupEvaluation], points: Points):
    """Fig. 4: share of test images leaving at each exit, BC beside CR; one row per operating point."""
    from ..studies.plots import exit_histogram
    fig, axes = _grid(len(evals), len(points), 6.5, 3.5 * len(points))
    for r, (label, pts) in enumerate(points.items()):
        for ax, (name, ev) in zip(axes[r], evals.items()):
            exit_histogram(ax, {m: p.test.exit_shares for m, p in pts[name].items()},
                           [f"{i + 1}" for i in range(ev.num_exits - 1)] + ["final"])
            ax.set_ylabel(f"share of the {len(ev.tests['BC'])} test images (%)")
            ax.set_xlabel("exit point")
            ax.set_title(f"{name}: {label}", fontsize=10)
    fig.tight_layout()
    return fig


def exit_count_rows(points: Points) -> list[dict]:
    return [{"set-up": n, "operating point": label, "method": m,
             **{f"exit {i + 1}": c for i, c in enumerate(p.test.exit_counts)}}
            for label, pts in points.items() for n, by_m in pts.items() for m, p in by_m.items()]


def plot_class_shares(evals: dict[str, SetupEvaluation], classes: dict[str, Sequence[str]]):
    """Fig. 5 for the 10-class set-ups: share of each class among the early-exited test images, keyed on
    the predicted class (as the authors count) and on the true class. Returns the figure and the
    shares {(set-up, method, "predicted" | "true"): tensor}."""
    ten = [ev for ev in evals.values() if ev.tests["BC"].logits.shape[2] == 10]
    fig, axes = _grid(2, max(len(ten), 1), 6.5, 3.8 * max(len(ten), 1))
    shares, width = {}, 0.4
    for r, ev in enumerate(ten):
        by_m = {m: ev.class_shares(m) for m in METHODS}
        for ax, key in zip(axes[r], ("predicted", "true")):
            for j, m in enumerate(METHODS):
                shares[(ev.name, m, key)] = by_m[m][key]
                ax.bar([i + (j - 0.5) * width for i in range(10)], by_m[m][key].tolist(), width=width, label=m)
            ax.axhline(10, color="gray", ls=":", lw=1)
            ax.set_xticks(range(10), classes[ev.name], rotation=40, ha="right")
            ax.set(ylabel="% of early-exited images", title=f"{ev.name}: by {key} class")
            ax.legend(frameon=True)
    fig.tight_layout()
    return fig, shares


def plot_remaining_classes(evals: dict[str, SetupEvaluation]):
    """Mean |R_k| per exit at each tolerance of the grid and at the authors' tolerance. Returns the
    figure and {set-up: {label: [mean |R_k| per exit]}}."""
    fig, axes = _grid(len(evals), 1, 6, 4)
    remaining = {}
    for ax, (name, ev) in zip(axes[0], evals.items()):
        remaining[name] = {**{f"tolerance {100 * t:g} %": ev.remaining_classes(p) for t, p in zip(ev.tolerances, ev.curves["BC"])},
                           "authors' tolerance": ev.remaining_classes(ev.authors["BC"])}
        for label, values in remaining[name].items():
            style = {"ls": "--", "color": "k", "marker": "s"} if label == "authors' tolerance" else {"marker": "o"}
            ax.plot(range(1, len(values) + 1), values, label=label, **style)
        ax.set(xlabel="exit point", ylabel="mean remaining classes |R_k|", title=f"{name}: BC (test)")
        ax.legend(frameon=True, fontsize=8)
    return fig, remaining


def paper_comparisons(ev: SetupEvaluation, note: str) -> list[dict]:
    """Rows beside the paper for SUMMARY.md: the paper's accuracy and MAC values were not retrieved, so
    only the thresholds of the authors' test configs have a paper column."""
    from ..studies.report import comparison
    row, missing = ev.table_i_row(), note + "; paper value not retrieved"
    rows = [comparison("BC test accuracy (authors' tolerance)", row["BC acc"], None, "fraction", missing),
            comparison("BC remaining MACs", row["BC remaining MACs %"], None, "% of plain", missing),
            comparison("CR remaining MACs", row["CR remaining MACs %"], None, "% of plain", missing),
            comparison("plain backbone test accuracy", row["plain acc"], None, "fraction", note)]
    authors = authors_thresholds(ev.setup)
    for method, key, column in (("BC", "beta", "beta"), ("CR", "tau", "tau")) if authors else ():
        rows.append(comparison(f"{method} {key}s ({ev.name})", str([round(b, 2) for b in row[column]]), str(authors[key]),
                               "", note + "; authors' value from their code's test config"))
    return rows


def protocol(tolerances: Sequence[float], search_order: str | Sequence[int], restrict_final: bool,
             chosen: dict[str, dict[str, float]], lrs: Sequence[float], seeds: Sequence[int],
             clip_on_failure: bool, cr_loss: str, reference: bool) -> dict:
    """How every compared configuration of notebook 01 was chosen, for the metrics file."""
    order = search_order if isinstance(search_order, str) else list(search_order)
    return {"search_order": order,
            "search_order_meaning": {"authors": "descending authors' layer-cost key, stable (VGG: every exit but "
                                                "the first ties, so 2, 3, ..., 1)",
                                     "true_macs": "descending true MACs of the stage before each exit",
                                     "forward": "exit 1 first"}.get(order, "explicit list of exits"),
            "lr": chosen, "lr_grid": list(lrs),
            "lr_selected_on": f"validation final-exit accuracy at the first training seed ({seeds[0]}); same grid "
                              "and rule for plain, BC and CR; the other seeds trained at the chosen rate",
            "seeds": list(seeds), "cr_network": ("the shared reference multi-exit network (weighted CE, final exit "
                                                 "half the loss)" if reference and cr_loss == "half_final" else
                                                 f"trained with the {cr_loss} CR loss"),
            "thresholds": "greedy per-exit search on the validation split (BC: beta from 0.01 upwards; CR: tau "
                          "from 0.99 downwards; step 0.01), accepting a value while validation accuracy stays "
                          "strictly above the network with exits disabled minus the tolerance; evaluated once on test",
            "clip_on_failure": clip_on_failure,
            "tolerances": {"authors": "per set-up (bc_tolerance, cr_tolerance)", "common grid": list(tolerances)},
            "restrict_final": restrict_final,
            "matched accuracy": "on test accuracies of the points searched on validation",
            "intervals": f"BC against CR (separate networks): t interval over the {len(seeds)} training seeds of the "
                         f"per-seed difference; rules on one network: bootstrap over test images ({DRAWS} resamples, "
                         "seed 0) on the first seed's networks"}


def claims_with_rivals(claims: Sequence, rivals: dict[str, str]):
    """``claims_table`` with a column giving, beside each comparison, the rivals' final-exit test
    accuracies of its set-up (``rivals``: {set-up name: text}; a claim's setting starts with its name)."""
    from ..studies.claims import claims_table
    table = claims_table(list(claims))
    table.insert(3, "rivals' final-exit test accuracy",
                 [next((t for name, t in rivals.items() if c.setting.startswith(name)), "") for c in claims])
    return table


def conclusions(evals: dict[str, SetupEvaluation], claims: Sequence,
                seed_evals: dict[str, Sequence[SetupEvaluation]] | None = None) -> str:
    """Markdown: what this run shows, per set-up, with its numbers read from the evaluation (the first
    seed's networks, and the final-exit accuracies over all seeds where given)."""
    lines = []
    for name, ev in evals.items():
        if seed_evals and name in seed_evals:
            lines.append(f"- **{name}**, final-exit test accuracy over seeds: {rivals_text(seed_evals[name])}.")
        t = ev.table_i_row()
        verdicts = [c for c in claims if c.setting.startswith(name)]
        held = sum(c.verdict == "supported" for c in verdicts)
        lines.append(f"- **{name}**: {held} of {len(verdicts)} claim rows supported. At the authors' tolerances BC "
                     f"reaches {100 * t['BC acc']:.2f} % ({100 * t['BC final-exit acc']:.2f} % with exits disabled) at "
                     f"{t['BC remaining MACs %']:.1f} % of the plain backbone's MACs; CR reaches {100 * t['CR acc']:.2f} % "
                     f"at {t['CR remaining MACs %']:.1f} %.")
        gap = t["CR final-exit acc"] - t["BC final-exit acc"]
        if abs(gap) >= 0.005:
            lines.append(f"  On the first seed BC's final classifier ends {100 * abs(gap):.1f} points "
                         f"{'below' if gap > 0 else 'above'} CR's (with exits disabled): a training gap that weighs "
                         "on the matched-accuracy comparison beside the exit rule.")
        for c in verdicts:
            if c.verdict != "supported":
                value = "not measured" if c.ours is None else f"{c.ours:.3g} {c.unit}"
                lines.append(f"  *{c.statement}*: {c.verdict} ({c.comparison}: {value}).")
    return "\n".join(lines)
