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

The fronts, the oracle bound and the statistics read from them (accuracy at a cost, the cost of coming
within a tolerance of the most accurate final exit among the networks compared: a network whose exits take
every row early, such as the gated one, has an untrained final exit, and matching that would flatter it)
are the library's ``fronts`` module; class exclusion's candidates are in ``methods.class_exclusion``.

- ``speed_points``: the real batched early exit's wall clock at a front's point nearest a cost, against
  the plain network (``speed.speed_rows``).

Costs are MACs over the plain backbone's (``MacTable.exit_fractions``), each network against its own.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from .. import rehearsal
from ..fronts import Front, RunLike, accuracy_band, best_accuracy, curve_accuracy, curve_cost_to_reach, \
    final_exits, fixed_cost_rows, nearest_point, oracle_cost, reach_rows
from ..methods.eenet import EENetConfig, RecipeSweep, recipe_grid
from ..methods.every_rule import RULES, rule_fronts
from ..stats import seed_interval
from ..train import RunSpec
from . import class_exclusion as p01, differentiable_branching as p03, e2cm as p02
from .eenet import ExitSubset, choose_recipe, headline_exits
from .reference import reference_runs

__all__ = ["NETWORKS", "networks", "plan", "METHODS", "seed_fronts", "eenet_recipe", "benchmark_fronts", "speed_points",
           "method_rows", "display_rows", "oracle_rows", "oracle_line", "protocol", "conclusions", "plot_fronts"]

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


# ---------------------------------------------------------------- candidates and fronts
# Every rule of the library, the network form it runs on (NETWORKS).
METHODS = {"max-softmax": "multi", "entropy": "multi", "patience (PABEE)": "multi",
           "confidence baseline (CR)": "multi", "EENet": "multi", "class exclusion": "BC", "E2CM": "E2CM",
           "gates (diff. branching)": "gated"}


def seed_fronts(runs: Mapping[str, RunLike], vectors: int, grid: int, eenet_config: EENetConfig, eenet_budgets: int,
                scheduler_seeds: Sequence[int], e2cm_prediction: str = "nearest", restrict_final: bool = True,
                seed: int = 0) -> dict[str, Front]:
    """Every method of ``METHODS`` on one training seed's networks (``runs``: network name -> trained run),
    by ``methods.every_rule.rule_fronts``: the confidence rules and EENet on ``multi``, class exclusion on
    ``BC``, E2CM and the gates on their own networks."""
    return rule_fronts(runs["multi"], "multi", RULES, vectors, grid, seed, exclusion_run=runs["BC"],
                       restrict_final=restrict_final, eenet_budgets=eenet_budgets, eenet_config=eenet_config,
                       scheduler_seeds=scheduler_seeds, e2cm=runs["E2CM"], e2cm_prediction=e2cm_prediction,
                       gates=runs["gated"])


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
            per_seed.append(float(curve_cost_to_reach(*other.curve(), best_accuracy(references[s]) - within)[0]))
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
    curve of each network (the first network's in black, another's in the colour of the one rule on it)."""
    from .plots import fronts_with_bands, method_style
    curves, bands, oracles, users = {}, {}, {}, {}      # users: network -> the methods whose front it carries
    for m, f in fronts.items():
        users.setdefault(f.network, []).append(m)
        cost, acc = f.curve()
        curves[m] = (cost[0].tolist(), acc[0].tolist())
        at = sorted({round(float(c), 4) for c in cost[0].tolist()})
        band = accuracy_band(f, at, draws)
        bands[m] = (at, [b[1] for b in band], [b[2] for b in band])
        oracles.setdefault(f"oracle ({f.network})", oracle_line(f))
    first = next(iter(fronts.values())).network
    colors = {f"oracle ({n})": "k" if n == first else method_style(ms[0])["color"] if len(ms) == 1 else "0.55"
              for n, ms in users.items()}                 # an oracle in the colour of the one rule it bounds
    fronts_with_bands(ax, curves, bands, oracles, bound_colors=colors)
    low = min(min(a) for _, a in curves.values())
    ax.set_ylim(100 * low - 2, 100 * max(max(a) for _, a in oracles.values()) + 1)
    return ax
