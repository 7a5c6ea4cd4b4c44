"""Notebook 05_benchmark: every exit rule of the library on one backbone family, on equal terms.

The runs. Every network is a form of the shared reference network (``studies.reference``), built by the plan
module of the notebook that owns it, so that in the cpu profile each is found in the run cache
(``tests/test_reference.py`` checks that 05 trains nothing new there):

- ``multi`` (00): max-softmax, entropy, patience, the confidence baseline of class exclusion, EENet;
- ``BC`` (01): the same architecture trained with the class-exclusion loss; class exclusion;
- ``gated`` (03): the same architecture with gated heads, soft-conditional loss at a fixed lambda;
  differentiable branching's hard gates;
- ``plain`` (02) and ``E2CM`` (02): class means fitted on the frozen plain network; E2CM.

The comparison. A rule's candidates (threshold vectors, scheduler fits, patience values) are evaluated on the
validation split; its front is the validation Pareto front of those candidates, read on test. Every
threshold rule, class exclusion and its confidence baseline included, gets the same tuning budget:
``vectors`` random per-exit vectors drawn at validation quantiles of its own per-row score, plus
``grid`` thresholds shared by every exit (quantiles of the pooled score) and "never exit".

- ``Front``: a rule's validation-chosen operating points with their per-row test outcomes, so that
  any statistic of the front (accuracy at a cost, the cost of an accuracy) gets a bootstrap interval
  by resampling test images (``stats.bootstrap_many``).
- ``oracle_curve``: the best any exit policy can do with given heads. A row is right exactly when it
  leaves at an exit whose prediction is right, so at a mean cost the most rows are right when the
  rows are served in order of the cost of their first right exit; a row that no exit gets right
  leaves at the first exit, where it costs least. The end of the curve is the oracle point: every
  row that some exit gets right is right, at the least cost.
- ``fixed_cost_rows`` and ``reach_rows``: test accuracy at chosen normalised costs, interpolated along
  each front, with the share of the oracle's saving at that accuracy; the cost each front needs to
  come within a tolerance of the full network: the most accurate final exit among the networks
  compared (a network whose exits take every row early, such as the gated one, has an untrained
  final exit, and matching that would flatter it).
- ``speed_points``: the real batched early exit's wall clock at a front's point nearest a cost, against
  the plain network (``speed.speed_rows``).

Costs are MACs over the plain backbone's (``MacTable.exit_fractions``), each network against its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np
import torch

from .. import rehearsal
from ..methods.class_exclusion import ClassExclusion, SingleConfident
from ..methods.e2cm import e2cm_policy
from ..methods.eenet import EENetConfig, RecipeSweep, budget_grid, fit_eenet_budgets, recipe_grid
from ..evaluate import evaluate_policy, exit_scores, pareto_front, random_thresholds, sweep_thresholds, \
    threshold_outcomes
from ..macs import MacTable
from ..outputs import CachedOutputs
from ..policies import Entropy, ExitPolicy, GateThreshold, MaxProbability, Patience, PerExitThresholds
from ..stats import bootstrap_many, seed_interval
from ..train import RunSpec
from . import class_exclusion as p01, differentiable_branching as p03, e2cm as p02
from .eenet import ExitSubset, choose_recipe, headline_exits
from .reference import reference_runs

__all__ = ["NETWORKS", "networks", "plan", "Front", "METHODS", "seed_fronts", "benchmark_fronts", "threshold_front",
           "policy_front", "exclusion_candidates", "confident_candidates", "patience_candidates", "first_right_cost", "oracle_curve", "oracle_cost", "curve_accuracy", "accuracy_band",
           "curve_cost_to_reach", "fixed_cost_rows", "final_exits", "reach_rows", "nearest_point", "speed_points", "method_rows",
           "display_rows", "oracle_rows", "oracle_line", "protocol", "conclusions", "plot_fronts"]

NETWORKS = ("multi", "BC", "gated", "plain", "E2CM")


def networks(backbone: str, width: float, dataset: str, train_size: int | None, val_size: int,
             test_size: int | None, epochs: int, batch_size: int, lr: float, weight_decay: float, bf16: bool,
             channels_last: bool, seeds: list[int], class_exclusion: dict, gated: dict, e2cm: dict,
             **_) -> dict[str, list[RunSpec]]:
    """Network name (``NETWORKS``) -> one run per training seed. ``class_exclusion``: {setup (01's set-up
    name), bce_mode, rho}; ``gated``: {lambda, mixing, cost_reference} (03's headline network);
    ``e2cm``: {feature, fit_augment}. They must equal the owning notebooks' values for the runs to be shared."""
    ref = dict(backbone=backbone, width=width, dataset=dataset, train_size=train_size, val_size=val_size,
               test_size=test_size, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
               bf16=bf16, channels_last=channels_last)
    for name, given, needed in (("class_exclusion", class_exclusion, {"setup", "bce_mode", "rho"}),
                                ("gated", gated, {"lambda", "mixing", "cost_reference"}),
                                ("e2cm", e2cm, {"feature", "fit_augment"})):
        if set(given) != needed:
            raise ValueError(f"{name} must give exactly {sorted(needed)}, got {sorted(given)}")
    setup = {"name": class_exclusion["setup"], "backbone": backbone, "dataset": dataset, "width": width}
    bc = [p01.method_run(setup, "BC", lr, seed, reference=True, train_size=train_size, val_size=val_size,
                         test_size=test_size, epochs=epochs, batch_size=batch_size, weight_decay=weight_decay,
                         schedule="onecycle", warmup=0.0, crop_pad=2, flip=True, bce_mode=class_exclusion["bce_mode"],
                         rho=class_exclusion["rho"], cr_loss="half_final", bf16=bf16, channels_last=channels_last)
          for seed in seeds]
    layout = p03.layout(datasets=[dataset], backbones=[backbone], width=width, exit_after={}, head_features="linear",
                        head_width=64, head_pool=1, train_size=train_size, val_size=val_size, test_size=test_size,
                        epochs=epochs, batch_size=batch_size, optimizer="sgd", schedule="onecycle", lr=lr,
                        weight_decay=weight_decay, augment=True, seeds=seeds, split_seed=0,
                        headline_lambda=gated["lambda"], lambda_grid=[], grid_start="warm", grid_train="heads",
                        grid_epochs=1, mixing=gated["mixing"], cost_reference=gated["cost_reference"],
                        branchynet_weights="uniform", reference=True, bf16=bf16, channels_last=channels_last)
    plain = reference_runs("plain", seeds, **ref)
    return {"multi": reference_runs("multi", seeds, **ref), "BC": bc,
            "gated": [layout[(dataset, backbone)].proposed[s] for s in seeds], "plain": plain,
            "E2CM": [p02.e2cm_spec(p, e2cm["feature"], e2cm["fit_augment"]) for p in plain]}


def plan(**parameters) -> list[RunSpec]:
    """Every run of ``networks``, the parents before the runs that start from them."""
    nets = networks(**parameters)
    return [spec for name in NETWORKS for spec in nets[name]]


class RunLike(Protocol):
    macs: MacTable

    def outputs(self, split: str) -> CachedOutputs: ...


@dataclass
class Front:
    """One rule's operating points, chosen on validation (its Pareto front there, by increasing
    validation cost), with what each does to every test row."""

    method: str
    network: str
    tuning: str                   # how the candidates were made and chosen
    candidates: int               # configurations evaluated on validation
    policies: list[ExitPolicy]
    val_cost: torch.Tensor        # [P] mean cost on validation
    val_accuracy: torch.Tensor    # [P]
    test_correct: torch.Tensor    # [P, N] bool
    test_cost: torch.Tensor       # [P, N] float64, cost paid by each row
    exit_correct: torch.Tensor    # [K, N] bool: the rule's prediction at each exit is right (test)
    exit_costs: list[float]       # cost of leaving at each exit

    @property
    def final_correct(self) -> torch.Tensor:
        return self.exit_correct[-1]

    def curve(self, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(cost, accuracy) of every point on test, [D, P] for row multiplicities ``weights`` [D, N]
        (a bootstrap resample per row of ``weights``; None: the test set itself, D = 1)."""
        n = self.test_correct.shape[1]
        w = torch.ones(1, n, dtype=torch.float64) if weights is None else weights
        total = w.sum(1, keepdim=True)
        return w @ self.test_cost.T / total, w @ self.test_correct.double().T / total

    def oracle(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The oracle curve (cost, accuracy) of this front's network on test, [1, M+1] (``oracle_curve``)."""
        return oracle_curve(first_right_cost(self.exit_correct, self.exit_costs), self.exit_costs[0])

    def points(self) -> list[dict]:
        """Each point on both splits (accuracy and cost as fractions)."""
        cost, acc = self.curve()
        return [{"method": self.method, "val_cost": float(vc), "val_accuracy": float(va), "test_cost": float(tc),
                 "test_accuracy": float(ta)}
                for vc, va, tc, ta in zip(self.val_cost, self.val_accuracy, cost[0], acc[0])]


# ---------------------------------------------------------------- candidates and fronts
def _score_vectors(score: torch.Tensor, vectors: int, grid: int, seed: int) -> torch.Tensor:
    """Cuts on a per-row score [K-1, N] (a row leaves exit k alone when its score reaches the cut):
    ``vectors`` random per-exit quantile vectors, ``grid`` cuts shared by all exits at evenly spaced
    quantiles of the pooled score, and +inf ('never exit'). [T, K-1]."""
    pooled = score.flatten().double()
    shared = torch.quantile(pooled[torch.isfinite(pooled)], torch.linspace(0, 1, grid, dtype=torch.float64))
    cloud = random_thresholds(vectors, score, "quantile", seed)     # ends with the 'never' row
    return torch.cat([shared.float()[:, None].expand(-1, score.shape[0]), cloud])


def threshold_front(method: str, network: str, run: RunLike, rule: PerExitThresholds, vectors: int, grid: int,
                    seed: int = 0) -> Front:
    """A per-exit threshold rule (``rule`` is a template): its candidates on validation, the Pareto
    front there, the front's points on test."""
    val, test = run.outputs("val"), run.outputs("test")
    cuts = _score_vectors(exit_scores(val, rule).confidence, vectors, grid, seed)
    thresholds = rule.threshold_of(cuts)
    sweep = sweep_thresholds(val, val, rule, thresholds, run.macs)   # validation only: test is read below
    front = pareto_front(sweep.val_cost, sweep.val_accuracy)
    correct, cost = threshold_outcomes(test, rule, thresholds[front], run.macs)
    scores = exit_scores(test, rule)
    return Front(method, network, f"{len(cuts)} threshold vectors ({vectors} random at validation quantiles, "
                 f"{grid} shared, never), validation Pareto front", len(cuts), [sweep.policy(i) for i in front],
                 sweep.val_cost[front], sweep.val_accuracy[front], correct, cost, scores.prediction == scores.labels,
                 list(run.macs.exit_fractions))


def policy_front(method: str, network: str, run: RunLike, policies: Sequence[ExitPolicy], tuning: str) -> Front:
    """Any rules (one policy per candidate): each evaluated on validation, the Pareto front there read
    on test. The per-exit predictions of the oracle are the heads' argmax."""
    val, test = run.outputs("val"), run.outputs("test")
    results = [evaluate_policy(val, p, run.macs) for p in policies]
    cost = torch.tensor([r.mean_fraction for r in results], dtype=torch.float64)
    acc = torch.tensor([r.accuracy for r in results], dtype=torch.float64)
    front = pareto_front(cost, acc)
    fractions = torch.tensor(run.macs.exit_fractions, dtype=torch.float64)
    tests = [evaluate_policy(test, policies[i], run.macs) for i in front]
    return Front(method, network, f"{len(policies)} {tuning}, validation Pareto front", len(policies),
                 [policies[i] for i in front], cost[front], acc[front],
                 torch.stack([r.prediction == test.labels for r in tests]),
                 torch.stack([fractions[r.exit_index] for r in tests]), test.logits.argmax(2) == test.labels,
                 list(run.macs.exit_fractions))


def exclusion_candidates(val: CachedOutputs, vectors: int, grid: int, seed: int = 0,
                         restrict_final: bool = True) -> list[ClassExclusion]:
    """Class-exclusion betas at validation quantiles of each row's critical beta at each exit (the
    ratio of its second-largest to its largest sigmoid score: at larger betas the row is left with
    one class), drawn like every threshold rule's vectors; 'never' is beta = 0."""
    s = torch.sigmoid(val.logits[:-1].double()).topk(2, dim=2).values
    critical = (s[..., 1] / s[..., 0]).float()
    betas = (-_score_vectors(-critical, vectors, grid, seed)).clamp(0.0, 1.0)
    return [ClassExclusion(tuple(b.tolist()), restrict_final) for b in betas]


def confident_candidates(val: CachedOutputs, vectors: int, grid: int, seed: int = 0) -> list[SingleConfident]:
    """The confidence baseline's taus at validation quantiles of the largest softmax probability;
    'never' is tau = 1."""
    top = torch.softmax(val.logits[:-1].float(), 2).max(2).values
    taus = _score_vectors(top, vectors, grid, seed).clamp(max=1.0)
    return [SingleConfident(tuple(t.tolist())) for t in taus]


def patience_candidates(num_exits: int) -> list[Patience]:
    """Every patience the network allows (``num_exits``: nobody leaves before the final exit)."""
    return [Patience(p) for p in range(1, num_exits + 1)]


# Every rule of the library, the network form it runs on (NETWORKS).
METHODS = {"max-softmax": "multi", "entropy": "multi", "patience (PABEE)": "multi",
           "confidence baseline (CR)": "multi", "EENet": "multi", "class exclusion": "BC", "E2CM": "E2CM",
           "gates (diff. branching)": "gated"}


def seed_fronts(runs: Mapping[str, RunLike], vectors: int, grid: int, eenet_config: EENetConfig, eenet_budgets: int,
                scheduler_seeds: Sequence[int], e2cm_prediction: str = "nearest", restrict_final: bool = True,
                seed: int = 0) -> dict[str, Front]:
    """Every method of ``METHODS`` on one training seed's networks (``runs``: network name -> trained run)."""
    multi = runs["multi"]
    early = len(multi.macs.exit_macs) - 1
    fits = fit_eenet_budgets(multi, budget_grid(multi, eenet_budgets), eenet_config, scheduler_seeds)
    gated = runs["gated"]
    return {
        "max-softmax": threshold_front("max-softmax", "multi", multi, MaxProbability((0.0,) * early), vectors, grid, seed),
        "entropy": threshold_front("entropy", "multi", multi, Entropy((0.0,) * early), vectors, grid, seed),
        "patience (PABEE)": policy_front("patience (PABEE)", "multi", multi, patience_candidates(early + 1),
                                         "patience values"),
        "confidence baseline (CR)": policy_front("confidence baseline (CR)", "multi", multi,
                                                 confident_candidates(multi.outputs("val"), vectors, grid, seed),
                                                 "tau vectors (random at validation quantiles, shared, never)"),
        "EENet": policy_front("EENet", "multi", multi, [f.policy for f in fits.values()],
                              f"budgets, each the best of {len(scheduler_seeds)} scheduler fits in budget on validation"),
        "class exclusion": policy_front("class exclusion", "BC", runs["BC"],
                                        exclusion_candidates(runs["BC"].outputs("val"), vectors, grid, seed,
                                                             restrict_final),
                                        "beta vectors (random at validation quantiles, shared, never)"),
        "E2CM": threshold_front("E2CM", "E2CM", runs["E2CM"], e2cm_policy(runs["E2CM"].net, prediction=e2cm_prediction),
                                vectors, grid, seed),
        "gates (diff. branching)": threshold_front("gates (diff. branching)", "gated", gated,
                                                   GateThreshold((0.0,) * (len(gated.macs.exit_macs) - 1)), vectors,
                                                   grid, seed),
    }


def eenet_recipe(multi: Sequence[RunLike], seeds: Sequence[int], eenet_budgets: int, recipe: Mapping,
                 config: EENetConfig, scheduler_seeds: Sequence[int]) -> RecipeSweep:
    """EENet's training recipe chosen on validation exactly as notebook 04 chooses it
    (``studies.eenet.choose_recipe``): on the headline exits (``recipe["headline_exit_costs"]``) of the first
    ``recipe["networks"]`` seeds' multi networks, at the budgets ``recipe["budgets"]`` of the grid, so that
    every fit of the sweep is found in 04's cache."""
    swept = list(zip(seeds, multi))[:recipe["networks"]]
    subsets = [ExitSubset(r, headline_exits(r.macs.exit_fractions, recipe["headline_exit_costs"])) for _, r in swept]
    return choose_recipe(subsets, [f"seed {s}" for s, _ in swept], recipe["budgets"], eenet_budgets,
                         recipe_grid(recipe["optimizers"], recipe["lrs"], recipe["epochs"]), config, scheduler_seeds)


def benchmark_fronts(runs: Mapping[str, Sequence[RunLike]], seeds: Sequence[int], vectors: int, grid: int,
                     eenet_config: EENetConfig, eenet_budgets: int, scheduler_seeds: Sequence[int], recipe: Mapping,
                     e2cm_prediction: str = "nearest", restrict_final: bool = True
                     ) -> tuple[RecipeSweep, dict[int, dict[str, Front]]]:
    """Every method's fronts on every training seed (``runs``: network name -> one run per seed).
    EENet's recipe (``recipe``: optimizers, lrs, epochs, budgets, networks, headline_exit_costs) is chosen
    once as notebook 04 chooses it (``eenet_recipe``) and used on every seed and all exits, so that its tuning
    reads validation only."""
    sweep = eenet_recipe(runs["multi"], seeds, eenet_budgets, recipe, eenet_config, scheduler_seeds)
    config = sweep.config(eenet_config)
    fronts = {s: seed_fronts({name: rs[i] for name, rs in runs.items()}, vectors, grid, config, eenet_budgets,
                             scheduler_seeds, e2cm_prediction, restrict_final)
              for i, s in enumerate(seeds)}
    return sweep, fronts


# ---------------------------------------------------------------- the oracle
def first_right_cost(exit_correct: torch.Tensor, exit_costs: Sequence[float]) -> torch.Tensor:
    """Per row, the cost of the first exit whose prediction is right; +inf when none is. [N]"""
    costs = torch.tensor(list(exit_costs), dtype=torch.float64)
    right = exit_correct.bool()
    first = right.to(torch.uint8).argmax(0)
    return torch.where(right.any(0), costs[first], torch.full_like(costs[first], torch.inf))


def oracle_curve(first_cost: torch.Tensor, cheapest: float, weights: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The oracle's (cost, accuracy) as rows are served in order of ``first_cost`` [N] (rows not served
    leave at the cheapest exit, cost ``cheapest``), [D, M+1] for M servable rows: the first point serves
    nobody, the last every servable row. ``weights`` [D, N]: row multiplicities (None: D = 1)."""
    order = torch.argsort(first_cost, stable=True)
    servable = order[torch.isfinite(first_cost[order])]
    w = torch.ones(1, len(first_cost), dtype=torch.float64) if weights is None else weights
    total = w.sum(1, keepdim=True)
    ws = w[:, servable]
    extra = (first_cost[servable] - cheapest)[None] * ws            # what serving a row adds to the cost
    zero = torch.zeros(len(w), 1, dtype=torch.float64)
    cost = cheapest + torch.cat([zero, extra.cumsum(1)], 1) / total
    acc = torch.cat([zero, ws.cumsum(1)], 1) / total
    return cost, acc


def oracle_cost(cost: torch.Tensor, accuracy: torch.Tensor, target: float | torch.Tensor) -> torch.Tensor:
    """The oracle's least cost at accuracy ``target`` (per row of a [D, M] curve; NaN above its reach)."""
    target = torch.as_tensor(target, dtype=torch.float64).reshape(-1).expand(len(cost))
    out = torch.full((len(cost),), float("nan"), dtype=torch.float64)
    for d in range(len(cost)):
        if target[d] <= accuracy[d, -1]:
            out[d] = float(np.interp(float(target[d]), accuracy[d].numpy(), cost[d].numpy()))
    return out


# ---------------------------------------------------------------- reading a front
def curve_accuracy(cost: torch.Tensor, accuracy: torch.Tensor, at: Sequence[float]) -> torch.Tensor:
    """Accuracy at each cost of ``at`` on each row of [D, P] curves, [D, A]: linear between the points
    sorted by cost (a mixture of the two neighbouring policies achieves it); beyond the costliest point
    its accuracy (spending less is allowed); NaN below the cheapest."""
    out = torch.empty(len(cost), len(at), dtype=torch.float64)
    for d in range(len(cost)):
        order = torch.argsort(cost[d], stable=True)
        x, y = cost[d, order].numpy(), accuracy[d, order].numpy()
        out[d] = torch.from_numpy(np.interp(np.asarray(at, dtype=np.float64), x, y, left=float("nan"),
                                            right=float(y[-1])))
    return out


def accuracy_band(front: Front, at: Sequence[float], draws: int = 1000, seed: int = 0) -> list[tuple[float, float, float]]:
    """The front's test accuracy at each cost of ``at`` with its 95% bootstrap interval over test images."""
    return bootstrap_many(lambda w: curve_accuracy(*front.curve(w), at), front.test_correct.shape[1], draws, seed)


def curve_cost_to_reach(cost: torch.Tensor, accuracy: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The least cost at which each [D, P] curve (points sorted by cost, linear between them) reaches
    ``target`` [D]; NaN when it never does."""
    out = torch.full((len(cost),), float("nan"), dtype=torch.float64)
    for d in range(len(cost)):
        order = torch.argsort(cost[d], stable=True)
        x, y, t = cost[d, order], accuracy[d, order], float(target[d])
        hit = torch.nonzero(y >= t).flatten()
        if len(hit) == 0:
            continue
        i = int(hit[0])
        if i == 0 or y[i] == y[i - 1]:
            out[d] = x[i]
        else:
            out[d] = x[i - 1] + (t - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1])
    return out


def _saving_share(cost: float, oracle_at_accuracy: float) -> float:
    """Share of the oracle's saving (1 - its cost at the same accuracy) that a point at ``cost`` saves."""
    if not np.isfinite(oracle_at_accuracy) or oracle_at_accuracy >= 1.0:
        return float("nan")
    return (1.0 - cost) / (1.0 - oracle_at_accuracy)


def fixed_cost_rows(front: Front, costs: Sequence[float], draws: int = 1000, seed: int = 0) -> list[dict]:
    """Per cost: the front's test accuracy there (interpolated) with its 95% bootstrap interval over
    test images, the oracle's least cost at that accuracy and the share of the oracle's saving the
    rule achieves (1 - cost) / (1 - oracle cost)."""
    stats = accuracy_band(front, costs, draws, seed)
    oc, oa = front.oracle()
    rows = []
    for c, (acc, lo, hi) in zip(costs, stats):
        o = float(oracle_cost(oc, oa, acc)[0]) if np.isfinite(acc) else float("nan")
        rows.append({"method": front.method, "network": front.network, "cost": c, "accuracy": acc, "low": lo,
                     "high": hi, "oracle cost at this accuracy": o, "share of oracle saving": _saving_share(c, o)})
    return rows


def final_exits(fronts: Mapping[str, Front]) -> torch.Tensor:
    """[R, N] per-row test correctness of the final exit of each distinct network among ``fronts``."""
    finals = {f.network: f.final_correct for f in fronts.values()}
    return torch.stack(list(finals.values()))


def _best_accuracy(reference: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """[D] accuracy of the most accurate row of ``reference`` ([R, N] per-row correctness) under each
    of the row multiplicities ``weights`` ([D, N]; None: the test set itself, D = 1)."""
    ref = reference.double()
    w = torch.ones(1, ref.shape[1], dtype=torch.float64) if weights is None else weights
    return (w @ ref.T / w.sum(1, keepdim=True)).max(1).values


def reach_rows(front: Front, within: float, reference: torch.Tensor | None = None, draws: int = 1000,
               seed: int = 0) -> dict:
    """The cost at which the front comes within ``within`` (a fraction, 0.01 = one point) of the most
    accurate of the ``reference`` final exits ([R, N] per-row correctness; default: the front's own
    network's), with a 95% bootstrap interval (the reference resampled with the same rows)."""
    n = front.test_correct.shape[1]
    ref = front.final_correct[None] if reference is None else reference

    def stat(w):
        return curve_cost_to_reach(*front.curve(w), _best_accuracy(ref, w) - within)[:, None]

    (cost, lo, hi), = bootstrap_many(stat, n, draws, seed)
    best = float(_best_accuracy(ref)[0])
    return {"method": front.method, "network": front.network,
            "final-exit accuracy": float(front.final_correct.double().mean()), "reference accuracy": best,
            "target accuracy": best - within, "cost": cost, "low": lo, "high": hi}


def nearest_point(front: Front, cost: float) -> int:
    """Index of the front's point whose test cost is nearest ``cost``."""
    test_cost, _ = front.curve()
    return int((test_cost[0] - cost).abs().argmin())


def speed_points(front: Front, run, costs: Sequence[float], repeats: int, batch1_rows: int,
                 batches: Sequence[int] = (1, 256), threads: int = 1) -> list[dict]:
    """Real early exit (``MultiExitNet.early_exit`` on the inference form) at the points nearest ``costs``,
    against the plain network in the same form, on the first test images, with ``threads`` torch threads;
    one row per point and batch (``speed.speed_rows``)."""
    from ..inference import inference_form
    from ..speed import speed_rows
    batch1_rows = rehearsal.cap(batch1_rows, rehearsal.LATENCY_IMAGES)
    repeats = rehearsal.cap(repeats, 1)
    form = inference_form(run.net)
    x, _ = next(iter(run.loader("test", batch_size=max(max(batches), batch1_rows))))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        timed = set()
        for c in costs:
            i = nearest_point(front, c)
            if i in timed:      # a short front: the same point is nearest two costs
                continue
            timed.add(i)
            label = {"method": front.method, "target cost": c, "point cost (test)": float(front.curve()[0][0, i])}
            for b in batches:
                rows.append(speed_rows(form, x[:batch1_rows] if b == 1 else x, front.policies[i], run.macs, b,
                                       repeats, label))
    finally:
        torch.set_num_threads(previous)
    return rows


# ---------------------------------------------------------------- tables over seeds
def _over_seeds(values: Sequence[float]) -> dict:
    """Mean over training seeds with its 95% t interval (NaN where a seed has no value or one seed)."""
    if len(values) < 2 or any(not np.isfinite(v) for v in values):
        return {"mean": float(np.mean(values)) if values else float("nan"), "low": float("nan"), "high": float("nan")}
    mean, lo, hi = seed_interval(list(values))
    return {"mean": mean, "low": lo, "high": hi}


def method_rows(fronts: Mapping[int, Mapping[str, Front]], costs: Sequence[float], within: float,
                draws: int = 1000) -> list[dict]:
    """One row per method: on the first seed's networks, its test accuracy at each of ``costs`` with a
    bootstrap interval, the share of the oracle's saving there, and the cost of coming within ``within``
    of the full network (the most accurate final exit of the seed's networks, ``reach_rows``); over all
    seeds, the mean of each with its t interval. Fractions throughout."""
    seeds = list(fronts)
    references = {s: final_exits(fronts[s]) for s in seeds}
    rows = []
    for method, front in fronts[seeds[0]].items():
        fixed = fixed_cost_rows(front, costs, draws)
        reach = reach_rows(front, within, references[seeds[0]], draws)
        row = {"method": method, "network": front.network, "candidates": front.candidates, "tuning": front.tuning,
               "points": len(front.policies), "final-exit accuracy": reach["final-exit accuracy"],
               "reference accuracy": reach["reference accuracy"]}
        for c, f in zip(costs, fixed):
            per_seed = [float(curve_accuracy(*fronts[s][method].curve(), [c])[0, 0]) for s in seeds]
            row[f"accuracy at {c:g}"] = {"value": f["accuracy"], "low": f["low"], "high": f["high"],
                                         "per_seed": per_seed, "seeds": _over_seeds(per_seed)}
            row[f"oracle share at {c:g}"] = f["share of oracle saving"]
        per_seed = []
        for s in seeds:
            other = fronts[s][method]
            per_seed.append(float(curve_cost_to_reach(*other.curve(), _best_accuracy(references[s]) - within)[0]))
        row[f"cost within {within:g}"] = {"value": reach["cost"], "low": reach["low"], "high": reach["high"],
                                          "per_seed": per_seed, "seeds": _over_seeds(per_seed)}
        rows.append(row)
    return rows


def _cell(v: dict, scale: float = 100.0, digits: int = 1) -> str:
    if not np.isfinite(v["value"]):
        return "not reached"
    text = f"{scale * v['value']:.{digits}f}"
    if np.isfinite(v["low"]):
        text += f" [{scale * v['low']:.{digits}f}, {scale * v['high']:.{digits}f}]"
    return text


def _seed_cell(v: dict, scale: float = 100.0, digits: int = 1) -> str:
    s = v["seeds"]
    if not np.isfinite(s["mean"]):
        return "not reached"
    if not np.isfinite(s["low"]):
        return f"{scale * s['mean']:.{digits}f}"
    return f"{scale * s['mean']:.{digits}f} [{scale * s['low']:.{digits}f}, {scale * s['high']:.{digits}f}]"


def display_rows(rows: Sequence[dict], costs: Sequence[float], within: float) -> list[dict]:
    """``method_rows`` for reading: accuracies in %, intervals in brackets (first seed: bootstrap over test
    images; seeds: t interval over training seeds), the oracle share in %, costs as fractions."""
    out = []
    for r in rows:
        d = {"method": r["method"], "network": r["network"], "candidates (validation)": r["candidates"]}
        for c in costs:
            d[f"acc % at {c:g} (first seed)"] = _cell(r[f"accuracy at {c:g}"])
            d[f"acc % at {c:g} (seeds)"] = _seed_cell(r[f"accuracy at {c:g}"])
            share = r[f"oracle share at {c:g}"]
            d[f"oracle saving % at {c:g}"] = f"{100 * share:.0f}" if np.isfinite(share) else "n/a"
        d[f"cost within {100 * within:g} pt of full net (first seed)"] = _cell(r[f"cost within {within:g}"], 1.0, 3)
        d[f"cost within {100 * within:g} pt (seeds)"] = _seed_cell(r[f"cost within {within:g}"], 1.0, 3)
        out.append(d)
    return out


def oracle_rows(fronts: Mapping[str, Front]) -> list[dict]:
    """Per network (the first method on it), the final exit's test accuracy and the oracle point: the
    accuracy of a policy that knows which exits are right, and its least cost."""
    rows, seen = [], set()
    for front in fronts.values():
        if front.network in seen:
            continue
        seen.add(front.network)
        cost, acc = front.oracle()
        final = float(front.final_correct.double().mean())
        rows.append({"network": front.network, "final-exit accuracy": final, "oracle accuracy": float(acc[0, -1]),
                     "oracle cost": float(cost[0, -1]),
                     "oracle cost at final-exit accuracy": float(oracle_cost(cost, acc, final)[0])})
    return rows


def oracle_line(front: Front, points: int = 200) -> tuple[list[float], list[float]]:
    """The oracle curve of ``front``'s network, thinned to about ``points`` points for plotting."""
    cost, acc = front.oracle()
    step = max(1, cost.shape[1] // points)
    idx = list(range(0, cost.shape[1], step)) + [cost.shape[1] - 1]
    return cost[0, idx].tolist(), acc[0, idx].tolist()


def protocol(vectors: int, grid: int, eenet_config: EENetConfig, eenet_recipe: dict, eenet_budgets: int,
             scheduler_seeds: Sequence[int], fronts: Mapping[str, Front], runs: Mapping[str, Sequence]) -> dict:
    """How every method's operating points were chosen, for the metrics file (``eenet_recipe``: the
    recipe sweep's ``RecipeSweep.protocol()``)."""
    return {"selection": "validation Pareto front of each method's candidates; test read only at those points",
            "threshold_vectors": vectors, "shared_grid": grid,
            "eenet": {"budgets": eenet_budgets, "scheduler_seeds": list(scheduler_seeds), "config": vars(eenet_config),
                      "recipe": eenet_recipe},
            "methods": {m: {"network": f.network, "candidates": f.candidates, "tuning": f.tuning,
                            "front_points": len(f.policies)} for m, f in fronts.items()},
            "networks": {name: [r.spec.key for r in rs] for name, rs in runs.items()}}


def conclusions(rows: Sequence[dict], oracles: Sequence[dict], speed: Sequence[dict], costs: Sequence[float],
                within: float, goal: float = 0.9) -> str:
    """What the tables say, in sentences built from their numbers (first seed, bootstrap intervals)."""
    lines = []
    for c in costs:
        key = f"accuracy at {c:g}"
        reached = [r for r in rows if np.isfinite(r[key]["value"])]
        if not reached:
            continue
        best = max(reached, key=lambda r: r[key]["value"])
        tied = [r["method"] for r in reached if r is not best and r[key]["high"] >= best[key]["low"]]
        share = best[f"oracle share at {c:g}"]
        lines.append(f"- At cost {c:g}, **{best['method']}** is the most accurate on the first seed "
                     f"({100 * best[key]['value']:.1f}%, 95% interval {100 * best[key]['low']:.1f}-"
                     f"{100 * best[key]['high']:.1f}%)"
                     + (f"; {', '.join(tied)} overlap its interval" if tied else "; no other method's interval reaches it")
                     + (f"; it achieves {100 * share:.0f}% of the saving the oracle makes at that accuracy."
                        if np.isfinite(share) else "."))
    key = f"cost within {within:g}"
    reach = sorted((r for r in rows if np.isfinite(r[key]["value"])), key=lambda r: r[key]["value"])
    if reach:
        lines.append(f"- Coming within {100 * within:g} point of the full network ({100 * reach[0]['reference accuracy']:.1f}%, "
                     "the most accurate final exit of the networks compared) costs "
                     + ", ".join(f"{r['method']} {r[key]['value']:.3f}" for r in reach)
                     + " of the plain network's MACs"
                     + (f"; {', '.join(r['method'] for r in rows if not np.isfinite(r[key]['value']))} never get there."
                        if len(reach) < len(rows) else "."))
    for o in oracles:
        lines.append(f"- Oracle on the {o['network']} network: {100 * o['oracle accuracy']:.1f}% (final exit "
                     f"{100 * o['final-exit accuracy']:.1f}%) at cost {o['oracle cost']:.3f}; the final exit's accuracy "
                     f"at cost {o['oracle cost at final-exit accuracy']:.3f}.")
    for b in sorted({s["batch"] for s in speed}):
        ratios = [s for s in speed if s["batch"] == b]
        low = min(ratios, key=lambda s: s["realised/predicted"])
        met = sum(s["realised/predicted"] >= goal for s in ratios)
        lines.append(f"- Real speed at batch {b}: realised / MAC-predicted speed-up from "
                     f"{low['realised/predicted']:.2f} ({low['method']}, cost {low['point cost (test)']:.2f}) to "
                     f"{max(s['realised/predicted'] for s in ratios):.2f}; {met} of {len(ratios)} operating points meet "
                     f"the goal of {goal:g}.")
    return "\n".join(lines)


def plot_fronts(ax, fronts: Mapping[str, Front], draws: int = 1000):
    """Every front on test with its 95% bootstrap band (at the costs of its own points), and the oracle
    curve of each network (the first network's in black)."""
    from .plots import fronts_with_bands
    curves, bands, oracles = {}, {}, {}
    for m, f in fronts.items():
        cost, acc = f.curve()
        curves[m] = (cost[0].tolist(), acc[0].tolist())
        at = sorted({round(float(c), 4) for c in cost[0].tolist()})
        band = accuracy_band(f, at, draws)
        bands[m] = (at, [b[1] for b in band], [b[2] for b in band])
        oracles.setdefault(f"oracle ({f.network})", oracle_line(f))
    fronts_with_bands(ax, curves, bands, oracles)
    low = min(min(a) for _, a in curves.values())
    ax.set_ylim(100 * low - 2, 100 * max(max(a) for _, a in oracles.values()) + 1)
    return ax
