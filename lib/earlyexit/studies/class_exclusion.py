"""Notebook 01's study of early exit with class exclusion (Wang, Li, Zhang, AICAS 2024), built on the
method in ``earlyexit.methods.class_exclusion``: its training plan (``plan`` and the runs behind it), the
evaluation of each set-up and training seed (``evaluate_setup``/``evaluate_seeds`` -> ``SetupEvaluation``:
Table I, the common-tolerance fronts, the matched-accuracy comparison, the Fig. 4/5 analogues, the
remaining classes per exit, the limits of beta), the one validation rule for every method's learning
rate (``choose_lrs``; with a one-rate grid the rate is fixed, not selected), the per-seed tables and the
protocol. The claims, the rows beside the paper and the conclusions are in
``studies.class_exclusion_claims``; the figures and exit-count tables in ``studies.class_exclusion_figures``.

The runs: per set-up and training seed, the plain backbone (no exits, the reference), the class-exclusion
network (BC: BCE-trained exclusion heads) and the confidence baseline's network (CR), all trained from
scratch under one recipe, at learning rates chosen from one grid.

Two ways to get the networks (``reference``):

- ``True`` (the cpu profile): plain and CR are the shared reference network (``studies.reference``: plain,
  and the multi-exit network trained with weighted CE, the final classifier carrying half the loss);
  BC is the same architecture with the same linear GAP heads, trained with the class-exclusion loss under
  the reference recipe (SGD Nesterov, one-cycle, crops and flips). A set-up may then only name the
  reference architecture (no ``pool``, ``image_size`` or recipe overrides).
- ``False`` (the paper profile): each set-up's own networks with the authors' recipe; CR trained with
  ``cr_loss`` ("authors": CE(final) + sum_k w_k CE(exit k), their CR objective).

Learning rates: every method gets the same grid ``lrs``; the notebook trains each rate at the first
seed, picks each method's rate on validation final-exit accuracy and trains the other seeds at it (the
cpu profile's grid has one rate: fixed, not selected).

A set-up is a dict: ``name``, ``backbone``, ``dataset``, ``width``, ``pool`` (exit-head pooling grid:
1 = global average pooling, 2 = the CIFAR-100 "x2" heads), ``image_size`` (None = the data's; 224
for AlexNet), optionally the authors' tolerances ``bc_tolerance``/``cr_tolerance`` (used by the
notebook) and per-set-up overrides of the training parameters in ``TRAIN_KEYS``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import torch

from ..data import DataSpec
from ..evaluate import PolicyResult, evaluate_policy
from ..macs import MacTable
from ..methods.class_exclusion import (ClassExclusion, OperatingPoint, authors_exit_keys, exclusion_trace,
                                       fit_operating_point)
from ..outputs import CachedOutputs
from ..tableformat import number
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig
from .reference import reference_run

__all__ = ["TRAIN_KEYS", "SETUP_KEYS", "NETWORKS", "CR_LOSSES", "check_setups", "setup_lrs", "method_run",
           "lr_candidates", "seed_runs", "setup_runs", "plan", "mean_remaining_classes", "early_exit_class_shares",
           "early_exit_rates", "front_cost", "front_gap", "METHODS", "PAPER", "MANY_EARLY", "DRAWS",
           "per_exit_accuracy", "paper_setup_keys", "authors_thresholds", "SetupEvaluation", "evaluate_setup",
           "evaluate_seeds", "validation_accuracy", "choose_lr", "choose_lrs", "final_accuracies", "spread",
           "rivals_text", "seed_rows", "table_i_gap", "seed_gap", "protocol"]

TRAIN_KEYS = ("epochs", "batch_size", "lrs", "weight_decay", "schedule", "warmup", "crop_pad", "flip", "rho")
SETUP_KEYS = ("name", "backbone", "dataset", "width", "pool", "image_size", "bc_tolerance", "cr_tolerance") + TRAIN_KEYS
NETWORKS = ("plain", "BC", "CR")   # the networks trained per set-up and seed
CR_LOSSES = ("half_final", "authors")
_NOT_WITH_REFERENCE = ("pool", "image_size", "schedule", "warmup", "crop_pad", "flip")


def check_setups(setups: list[dict], reference: bool) -> None:
    """Refuse unknown keys, repeated names, and (on the reference network) anything the reference fixes."""
    names = set()
    for setup in setups:
        unknown = sorted(set(setup) - set(SETUP_KEYS))
        missing = sorted({"name", "backbone", "dataset"} - set(setup))
        if unknown or missing:
            raise ValueError(f"set-up {setup.get('name')!r}: unknown key(s) {unknown}, missing {missing}; "
                             f"allowed: {SETUP_KEYS}")
        if setup["name"] in names:
            raise ValueError(f"set-up name {setup['name']!r} used twice")
        names.add(setup["name"])
        fixed = [k for k in _NOT_WITH_REFERENCE if k in setup and not (k == "pool" and setup[k] == 1)]
        if reference and fixed:
            raise ValueError(f"set-up {setup['name']!r}: {fixed} are fixed by the reference network")


def setup_lrs(setup: dict, lrs: list[float]) -> list[float]:
    """The learning-rate grid of a set-up (its own ``lrs`` or the shared one), the same for every method."""
    grid = [float(v) for v in setup.get("lrs", lrs)]
    if not grid or len(set(grid)) != len(grid):
        raise ValueError(f"set-up {setup['name']!r}: the learning-rate grid must be non-empty and not repeat: {grid}")
    return grid


def method_run(setup: dict, method: str, lr: float, seed: int, *, reference: bool, train_size: int | None,
               val_size: int, test_size: int | None, epochs: int, batch_size: int, weight_decay: float,
               schedule: str, warmup: float, crop_pad: int, flip: bool, bce_mode: str, rho: float | None,
               cr_loss: str, bf16: bool, channels_last: bool, split_seed: int = 0) -> RunSpec:
    """The RunSpec of one method of one set-up at learning rate ``lr`` and training seed ``seed``."""
    if method not in NETWORKS:
        raise ValueError(f"method must be one of {NETWORKS}, got {method!r}")
    if cr_loss not in CR_LOSSES:
        raise ValueError(f"cr_loss must be one of {CR_LOSSES}, got {cr_loss!r}")
    p = {"epochs": epochs, "batch_size": batch_size, "weight_decay": weight_decay, "schedule": schedule,
         "warmup": warmup, "crop_pad": crop_pad, "flip": flip, "rho": rho,
         **{k: setup[k] for k in TRAIN_KEYS if k in setup and k != "lrs"}}
    bc_loss = LossSpec("class_exclusion", {"bce_mode": bce_mode, "rho": p["rho"]})
    cr = LossSpec("weighted_ce", {"weights": "half_final"}) if cr_loss == "half_final" else LossSpec("class_exclusion_cr")
    name = f"{setup['name']}-{method.lower()}-lr{lr:g}-s{seed}"
    if reference:
        ref = dict(backbone=setup["backbone"], width=setup.get("width", 1.0), dataset=setup["dataset"],
                   train_size=train_size, val_size=val_size, test_size=test_size, epochs=p["epochs"],
                   batch_size=p["batch_size"], lr=lr, weight_decay=p["weight_decay"], bf16=bf16,
                   channels_last=channels_last, split_seed=split_seed)
        if method == "plain":
            return reference_run("plain", seed, **ref)
        multi = reference_run("multi", seed, **ref)
        if method == "CR" and cr_loss == "half_final":
            return multi
        return replace(multi, name=name, loss=bc_loss if method == "BC" else cr)
    data = DataSpec(setup["dataset"], val_size=val_size, train_size=train_size, test_size=test_size, seed=split_seed)
    width, size = setup.get("width", 1.0), setup.get("image_size")
    exits = () if method == "plain" else None
    model = ModelSpec(setup["backbone"], width, exits, "linear", {} if exits == () else {"pool": setup.get("pool", 1)},
                      image_size=size)
    loss = {"plain": LossSpec("weighted_ce", {"weights": "uniform"}), "BC": bc_loss, "CR": cr}[method]
    train = TrainConfig(epochs=p["epochs"], batch_size=p["batch_size"], lr=lr, weight_decay=p["weight_decay"],
                        schedule=p["schedule"], warmup=p["warmup"], crop_pad=p["crop_pad"], flip=p["flip"],
                        bf16=bf16, channels_last=channels_last, seed=seed)
    return RunSpec(name, model, data, loss, train)


def _options(params: dict) -> dict:
    keys = ("reference", "train_size", "val_size", "test_size", "epochs", "batch_size", "weight_decay", "schedule",
            "warmup", "crop_pad", "flip", "bce_mode", "rho", "cr_loss", "bf16", "channels_last")
    return {k: params[k] for k in keys}


def lr_candidates(setups: list[dict], lrs: list[float], seeds: list[int],
                  **params) -> dict[str, dict[str, dict[float, RunSpec]]]:
    """{set-up: {method: {lr: RunSpec at the first seed}}}: the trainings the learning rate is chosen from."""
    check_setups(setups, params["reference"])
    return {s["name"]: {m: {lr: method_run(s, m, lr, seeds[0], **_options(params)) for lr in setup_lrs(s, lrs)}
                        for m in NETWORKS} for s in setups}


def seed_runs(setups: list[dict], chosen: dict[str, dict[str, float]], seeds: list[int],
              **params) -> dict[str, dict[str, list[RunSpec]]]:
    """{set-up: {method: [RunSpec per seed]}} at each method's chosen learning rate ``chosen[set-up][method]``."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"give distinct training seeds, got {seeds}")
    check_setups(setups, params["reference"])
    return {s["name"]: {m: [method_run(s, m, chosen[s["name"]][m], seed, **_options(params)) for seed in seeds]
                        for m in NETWORKS} for s in setups}


def setup_runs(setups: list[dict], lrs: list[float], seeds: list[int], reference: bool, train_size: int | None,
               val_size: int, test_size: int | None, epochs: int, batch_size: int, weight_decay: float, schedule: str,
               warmup: float, crop_pad: int, flip: bool, bce_mode: str, rho: float | None, cr_loss: str, bf16: bool,
               channels_last: bool) -> dict[str, dict[str, RunSpec]]:
    """{set-up: {method: RunSpec}} at the first seed and the grid's first learning rate (one network per
    method, e.g. for timing)."""
    params = {k: v for k, v in locals().items() if k not in ("setups", "lrs", "seeds")}
    first = lr_candidates(setups, lrs, seeds, **params)
    return {name: {m: next(iter(by_lr.values())) for m, by_lr in by_m.items()} for name, by_m in first.items()}


def plan(setups: list[dict], lrs: list[float], seeds: list[int], reference: bool, train_size: int | None,
         val_size: int, test_size: int | None, epochs: int, batch_size: int, weight_decay: float, schedule: str,
         warmup: float, crop_pad: int, flip: bool, bce_mode: str, rho: float | None, cr_loss: str, bf16: bool,
         channels_last: bool, **_) -> list[RunSpec]:
    """Every run the notebook may train: each rate of the grid at the first seed, and the other seeds at
    every rate (the notebook trains them at the chosen rate only; with a one-rate grid this is exact)."""
    params = {k: v for k, v in locals().items() if k not in ("_", "setups", "lrs", "seeds")}
    check_setups(setups, reference)
    specs = []
    for s in setups:
        for lr in setup_lrs(s, lrs):
            runs = seed_runs([s], {s["name"]: {m: lr for m in NETWORKS}}, seeds, **params)[s["name"]]
            specs += [spec for m in NETWORKS for spec in runs[m]]
    return specs


# ---------------------------------------------------------------- exclusion and matched-accuracy statistics
def mean_remaining_classes(outputs: CachedOutputs, policy: ClassExclusion, exit_index: torch.Tensor) -> list[float]:
    """Average |R_k| after each early exit k over the images that go on past it (exit index > k): the
    classes the later layers still have to decide among, the authors' exclusion statistic. An image that
    leaves at k (|R_k| = 1) is not counted there, so an exit where many leave does not pull the mean down,
    and one where few leave does not seem to stall exclusion."""
    sizes = exclusion_trace(outputs, policy).sum(2).float()
    return [sizes[k][exit_index > k].mean().item() if (exit_index > k).any() else float("nan")
            for k in range(len(sizes))]


def early_exit_class_shares(prediction: torch.Tensor, labels: torch.Tensor, exit_index: torch.Tensor,
                            num_exits: int, num_classes: int) -> dict[str, torch.Tensor]:
    """Fig. 5 of the paper: share (%) of each class among the images that left before the final
    layer, keyed by the predicted (exited) class as the authors count, and by the true class."""
    early = exit_index < num_exits - 1
    total = max(int(early.sum()), 1)
    return {key: 100 * torch.bincount(v[early], minlength=num_classes).float() / total
            for key, v in (("predicted", prediction), ("true", labels))}


def early_exit_rates(prediction: torch.Tensor, labels: torch.Tensor, exit_index: torch.Tensor,
                     num_exits: int, num_classes: int) -> dict[str, torch.Tensor]:
    """Per class, the share (%) of its images that leave before the final layer: of the images of that
    true class, and of the images predicted as that class. Unlike Fig. 5's shares these do not follow
    how often a class is predicted, so they show whether some classes really leave earlier."""
    early = (exit_index < num_exits - 1).float()
    return {key: 100 * torch.bincount(v, early, minlength=num_classes)
            / torch.bincount(v, minlength=num_classes).clamp_min(1)
            for key, v in (("true", labels), ("predicted", prediction))}


def front_cost(points: Sequence[tuple[float, float]], accuracy: float) -> float:
    """Cost of the cheapest (cost, accuracy) point whose accuracy is at least ``accuracy`` (inf if none)."""
    return min((c for c, a in points if a >= accuracy - 1e-12), default=float("inf"))


def front_gap(bc: Sequence[tuple[float, float]], cr: Sequence[tuple[float, float]]) -> float:
    """The matched-accuracy statistic: the area between the two cost fronts over the accuracy range both
    span, divided by its width, i.e. the mean over accuracies a in that range of (the cheapest BC point
    reaching a) minus (the cheapest CR point reaching a). Both methods are scored the same way, so a
    dominated point of either (more MACs for less accuracy than another of its own points) costs nothing,
    and no method's grid decides where the other is read. A front is a step function of a, so the area is
    exact: between consecutive point accuracies it is constant. Where the ranges share one accuracy at most
    this is the gap at the highest accuracy both reach."""
    lo = max(min(a for _, a in bc), min(a for _, a in cr))
    hi = min(max(a for _, a in bc), max(a for _, a in cr))
    if lo >= hi:
        return front_cost(bc, hi) - front_cost(cr, hi)
    cuts = sorted({a for _, a in list(bc) + list(cr) if lo < a < hi} | {lo, hi})
    area = sum((b - a) * (front_cost(bc, b) - front_cost(cr, b)) for a, b in zip(cuts, cuts[1:]))
    return area / (hi - lo)


# ---------------------------------------------------------------- notebook 01: one set-up, evaluated
METHODS = ("BC", "CR")
PAPER = "class_exclusion"
MANY_EARLY = 0.20    # claim 4: "many images" = at least this share leaves before the final layer (argued in 01)
DRAWS = 2000         # bootstrap resamples of the test images (one training seed only)


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
    from .claims import paper_number
    try:
        values = {q: paper_number(PAPER, method=m, quantity=q, **paper_setup_keys(setup)).value
                  for m, q in (("BC", "beta"), ("CR", "tau"))}
        return {q: [float(v) for v in str(v).split(",")] for q, v in values.items()}
    except ValueError:
        return None


@dataclass
class SetupEvaluation:
    """One set-up's trained networks (plain, BC, CR) of one training seed, with thresholds searched on
    validation and every number notebook 01 reports, computed on test."""

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
    def title(self) -> str:
        """The set-up as a figure names it ("VGG-13 ×0.5, CIFAR-10")."""
        from .plots import network_title
        return network_title(self.setup["backbone"], self.setup.get("width"), self.setup["dataset"])

    @property
    def num_exits(self) -> int:
        return self.tests["BC"].num_exits

    def no_exit(self, method: str) -> tuple[float, float]:
        """(remaining MACs as a fraction of the plain backbone, test accuracy) with early exits disabled."""
        return self.macs[method].exit_fractions[-1], self.tests[method].exit_accuracies()[-1]

    def front(self, method: str) -> list[tuple[float, float]]:
        """(MAC fraction, test accuracy) of every point of ``method``: the common grid, then no early exit."""
        return [(p.test.mean_fraction, p.test.accuracy) for p in self.curves[method]] + [self.no_exit(method)]

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

    def matched_rows(self) -> list[dict]:
        """For every point of either method, the cheapest point of each front (its grid or no early exit)
        reaching that point's test accuracy: both methods read the same way (``front_gap``'s integrand)."""
        fronts = {m: self.front(m) for m in METHODS}
        rows = []
        for m in METHODS:
            for t, p in zip(self.tolerances, self.curves[m]):
                cost = {o: front_cost(fronts[o], p.test.accuracy) for o in METHODS}
                shown = {o: None if math.isinf(c) else 100 * c for o, c in cost.items()}
                rows.append({"set-up": self.name, "point": f"{m} at {100 * t:g} %", "test accuracy": p.test.accuracy,
                             "its MACs %": 100 * p.test.mean_fraction,
                             **{f"cheapest {o} MACs % at >= this accuracy": shown[o] for o in METHODS},
                             "cheaper": "n/a" if None in shown.values() else
                                        "tie" if cost["BC"] == cost["CR"] else min(METHODS, key=cost.get)})
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

    def class_rates(self, method: str) -> dict[str, torch.Tensor]:
        """Per class, the share (%) of its test images leaving early at the authors' tolerance."""
        p, out = self.authors[method].test, self.tests[method]
        return early_exit_rates(p.prediction, out.labels, p.exit_index, out.num_exits, out.logits.shape[2])

    def remaining_classes(self, point: OperatingPoint) -> list[float]:
        return mean_remaining_classes(self.tests["BC"], point.policy, point.test.exit_index)

    def limit(self, beta: float) -> PolicyResult:
        """BC with the same beta at every exit."""
        return evaluate_policy(self.tests["BC"], ClassExclusion([beta] * (self.num_exits - 1), self.restrict_final),
                               self.macs["BC"])

    def limit_rows(self, betas: Sequence[float] = (0.0, 0.99)) -> list[dict]:
        return [{"set-up": self.name, "betas": b, "test accuracy": r.accuracy, "remaining MACs %": 100 * r.mean_fraction,
                 "share leaving at exit 1": r.exit_shares[0]} for b in betas for r in [self.limit(b)]]

    def claim_curves(self) -> dict:
        """Every curve and operating point the claims read, for this seed's entry in the metrics file."""
        return {"fronts": {m: [{"tolerance": t, "test_accuracy": a, "test_fraction": c}
                               for t, (c, a) in zip([*self.tolerances, "no early exit"], self.front(m))] for m in METHODS},
                "curves": self.curve_rows(),
                "authors_tolerance": {m: p.row() for m, p in self.authors.items()},
                "remaining_classes_continuing": {"authors' tolerance": self.remaining_classes(self.authors["BC"]),
                                                 **{f"tolerance {100 * t:g} %": self.remaining_classes(p)
                                                    for t, p in zip(self.tolerances, self.curves["BC"])}},
                "early_exit_rates": {m: {k: v.tolist() for k, v in self.class_rates(m).items()} for m in METHODS},
                "limits": self.limit_rows()}


def evaluate_setup(setup: dict, runs: dict, tolerances: Sequence[float], restrict_final: bool = True,
                   order: str | Sequence[int] = "authors", clip_on_failure: bool = True,
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
                   order: str | Sequence[int] = "authors", clip_on_failure: bool = True) -> list[SetupEvaluation]:
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
    and every rate's accuracy. The same rule for every method, so no rival is tuned harder; with a
    one-rate grid the rate is fixed, not selected."""
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
            rows += [{"set-up": name, "method": m, "lr": lr, "val final-exit acc": acc,
                      "chosen": "fixed (one rate)" if len(scores) == 1 else lr == chosen[name][m]}
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


def _valid_range(column: str) -> tuple[float, float] | None:
    """Where a seed_rows column's values can lie: accuracies (fractions) in [0, 1], MACs and tolerances in % at
    least 0 (MACs may pass 100 % with the heads); the BC - CR gaps anywhere."""
    if column.endswith("acc"):
        return 0.0, 1.0
    return (0.0, math.inf) if "%" in column and "gap" not in column else None


def seed_rows(seed_evals: Sequence[SetupEvaluation], seeds: Sequence[int]) -> list[dict]:
    """Table I per training seed with both BC-against-CR statistics, then the mean and the 95 % t
    interval over seeds of every number."""
    from ..stats import seed_interval
    rows = [{"seed": s, **{k: v for k, v in ev.table_i_row().items() if k not in ("beta", "tau")},
             "Table I MACs gap (BC - CR, points)": table_i_gap(ev),
             "matched-accuracy MACs gap (BC - CR, points)": seed_gap(ev)} for s, ev in zip(seeds, seed_evals)]
    if len(rows) > 1:
        numeric = [k for k, v in rows[0].items() if isinstance(v, float) and k != "seed"]
        stats = {k: seed_interval([r[k] for r in rows], _valid_range(k)) for k in numeric}
        rows.append({"seed": "mean", "set-up": rows[0]["set-up"], **{k: v[0] for k, v in stats.items()}})
        rows.append({"seed": "95% interval", "set-up": rows[0]["set-up"],
                     **{k: f"[{number(v[1])}, {number(v[2])}]" for k, v in stats.items()}})
    return rows


def table_i_gap(ev: SetupEvaluation) -> float:
    """The Table I framing on one seed: BC's remaining MACs at its authors' tolerance minus CR's at its
    own (points of the plain backbone's MACs)."""
    return 100 * (ev.authors["BC"].test.mean_fraction - ev.authors["CR"].test.mean_fraction)


def seed_gap(ev: SetupEvaluation) -> float:
    """The matched-accuracy statistic (``front_gap``) on one seed's pair of networks, in points."""
    return 100 * front_gap(ev.front("BC"), ev.front("CR"))


# ---------------------------------------------------------------- notebook 01: protocol
def protocol(tolerances: Sequence[float], search_order: str | Sequence[int], restrict_final: bool,
             chosen: dict[str, dict[str, float]], lrs: Sequence[float], seeds: Sequence[int],
             clip_on_failure: bool, cr_loss: str, reference: bool) -> dict:
    """How every compared configuration of notebook 01 was chosen, for the metrics file."""
    order = search_order if isinstance(search_order, str) else list(search_order)
    fixed = len(lrs) == 1
    return {"search_order": order,
            "search_order_meaning": {"authors": "descending authors' layer-cost key, stable (VGG: every exit but "
                                                "the first ties, so 2, 3, ..., 1)",
                                     "true_macs": "descending true MACs of the stage before each exit",
                                     "forward": "exit 1 first"}.get(order, "explicit list of exits"),
            "lr": chosen, "lr_grid": list(lrs),
            "lr_selected_on": (f"fixed, not selected: the grid has one rate ({lrs[0]:g}), the same for plain, BC and CR"
                               if fixed else
                               f"validation final-exit accuracy at the first training seed ({seeds[0]}); same grid "
                               "and rule for plain, BC and CR; the other seeds trained at the chosen rate"),
            "seeds": list(seeds), "cr_network": ("the shared reference multi-exit network (weighted CE, final exit "
                                                 "half the loss)" if reference and cr_loss == "half_final" else
                                                 f"trained with the {cr_loss} CR loss"),
            "thresholds": "greedy per-exit search on the validation split (BC: beta from 0.01 upwards; CR: tau "
                          "from 0.99 downwards; step 0.01), accepting a value while validation accuracy stays "
                          "strictly above the network with exits disabled minus the tolerance; an exit whose first "
                          + ("value fails takes it anyway (the authors' clip: beta 0.01, tau 0.99)" if clip_on_failure
                             else "value fails stays disabled (beta 0, tau 1)") + "; evaluated once on test",
            "clip_on_failure": clip_on_failure,
            "tolerances": {"authors": "per set-up (bc_tolerance, cr_tolerance)", "common grid": list(tolerances)},
            "restrict_final": restrict_final,
            "matched accuracy": "area between the BC and CR cost fronts (grid points and no early exit, each "
                                "method's cheapest point reaching an accuracy) over the test accuracies both span",
            "intervals": f"every claim: mean over the {len(seeds)} training seeds (seed s of BC with seed s of CR) and "
                         "the t interval over the per-seed values; with one seed, a bootstrap over its test images "
                         f"({DRAWS} resamples)"}
