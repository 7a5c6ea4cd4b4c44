"""Notebook 01's study of early exit with class exclusion (Wang, Li, Zhang, AICAS 2024), built on the
method in ``earlyexit.methods.class_exclusion``: its training plan (``plan`` and the runs behind it), the
evaluation of each set-up (``evaluate_setup``/``evaluate_seeds`` -> ``SetupEvaluation``: Table I, the
common-tolerance curves, the matched-accuracy comparison, the Fig. 4/5 analogues, the limits of beta), the
one validation rule that picks every method's learning rate (``choose_lrs``), the paper's six claims checked
with bootstrap intervals over test images (rules on one network) or t intervals over training seeds (BC
against CR), the paper comparisons, the protocol and the conclusions; its figures and exit-count tables are
in ``studies.class_exclusion_figures``.

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
seed, picks each method's rate on validation final-exit accuracy and trains the other seeds at it.

A set-up is a dict: ``name``, ``backbone``, ``dataset``, ``width``, ``pool`` (exit-head pooling grid:
1 = global average pooling, 2 = the CIFAR-100 "x2" heads), ``image_size`` (None = the data's; 224
for AlexNet), optionally the authors' tolerances ``bc_tolerance``/``cr_tolerance`` (used by the
notebook) and per-set-up overrides of the training parameters in ``TRAIN_KEYS``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..data import DataSpec
from ..evaluate import PolicyResult, evaluate_policy, select
from ..macs import MacTable
from ..methods.class_exclusion import (ClassExclusion, OperatingPoint, authors_exit_keys, exclusion_trace,
                                       fit_operating_point)
from ..outputs import CachedOutputs
from ..train import LossSpec, ModelSpec, RunSpec, TrainConfig
from .reference import reference_run

__all__ = ["TRAIN_KEYS", "SETUP_KEYS", "NETWORKS", "CR_LOSSES", "check_setups", "setup_lrs", "method_run",
           "lr_candidates", "seed_runs", "setup_runs", "plan", "mean_remaining_classes", "early_exit_class_shares",
           "METHODS", "PAPER", "EXTRA_DROP", "MANY_EARLY", "UNEVEN", "DRAWS", "per_exit_accuracy", "paper_setup_keys",
           "authors_thresholds", "SetupEvaluation", "evaluate_setup", "evaluate_seeds", "validation_accuracy",
           "choose_lr", "choose_lrs", "final_accuracies", "spread", "rivals_text", "seed_rows", "seed_gap",
           "matched_cost_gap", "setup_claims", "paper_comparisons", "protocol", "claims_with_rivals", "conclusions"]

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


# ---------------------------------------------------------------- exclusion statistics
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
    from .claims import paper_number
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
    from .claims import claim, paper_number
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


# ---------------------------------------------------------------- notebook 01: comparisons, protocol, conclusions
def paper_comparisons(ev: SetupEvaluation, note: str) -> list[dict]:
    """Rows beside the paper for SUMMARY.md: the paper's accuracy and MAC values were not retrieved, so
    only the thresholds of the authors' test configs have a paper column."""
    from .report import comparison
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
    from .claims import claims_table
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
