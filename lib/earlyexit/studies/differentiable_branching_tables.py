"""Notebook 03's tables and figures for differentiable branching against BranchyNet, read from the runs
grouped by ``studies.differentiable_branching``: training time and branch costs, the initial mixture
weights per gate bias (``initial_mixtures``), the paper's Table 2 from cached test outputs (``table2``) and
with measured batch-1 latency (``latency_table``), the gates (Fig. 4 analogue, accuracy against MACs, the
mean gate and mixture weight per epoch, ``gate_history``, and the collapse watch over them,
``collapse_table``, with every gated network's exits, ``model_table``), the numbers beside the paper's
(``paper_comparisons``) and the free-form part of the metrics file (``metrics``).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Iterable, Sequence

import pandas as pd
import torch

from .. import rehearsal
from ..evaluate import evaluate_policy, shared_threshold_sweep
from ..methods.differentiable_branching import (Collapse, ensemble_accuracy, exit_probabilities, expected_cost,
                                                hard_gate_rule, mixture_weights, normalised_exit_costs, watch_collapse)
from ..outputs import CachedOutputs
from ..train import build_model, set_seed
from .differentiable_branching import (GATE_GRID, PAPER_BACKBONES, BackboneRuns, LambdaChoice, Table1, exit_list,
                                       paper_value)
from .plots import network_title, panels_legend
from .report import comparison

__all__ = ["training_minutes", "branch_cost_table", "initial_mixtures", "table2", "LatencyTable", "latency_table",
           "gate_values", "polarised_share", "polarised_by_seed", "plot_gate_distributions", "plot_accuracy_vs_macs",
           "gate_history", "plot_gate_history", "early_epochs", "watch", "collapse_table", "model_table",
           "paper_comparisons", "metrics"]


# ---------------------------------------------------------------- run time and branch costs
def training_minutes(groups: Iterable[BackboneRuns]) -> pd.DataFrame:
    """Training wall time in minutes of every run (reference runs included: their time is spent once)."""
    return pd.DataFrame([{"data": g.dataset, "backbone": g.backbone, "run": label, "minutes": r.train_seconds / 60}
                         for g in groups for label, r in g.all_runs().items()])


def branch_cost_table(groups: Iterable[BackboneRuns], cost_reference: str) -> pd.DataFrame:
    """Branches per backbone, MACs of the plain backbone and of all early heads, and the exit costs v_b."""
    rows = []
    for g in groups:
        run = g.proposed[g.seeds[0]]
        v = normalised_exit_costs(run.macs, cost_reference)
        rows.append({"backbone": g.backbone, "branches": run.net.num_exits - 1,
                     "plain MMACs": g.plain[g.seeds[0]].macs.backbone_macs / 1e6,
                     "all heads MMACs": sum(run.macs.head_macs[:-1]) / 1e6,
                     "v_b": " ".join(f"{c:.3f}" for c in v)})
    return pd.DataFrame(rows)


def initial_mixtures(group: BackboneRuns, images: int = 500) -> pd.DataFrame:
    """The mixture weight pi_b every exit starts with, per gate bias: a fresh network as its training
    builds it (same seed), averaged over the first ``images`` validation images. With a set bias every
    image starts alike; PyTorch's default starts each gate near 0.5, so the final exit starts with about
    2^-(K-1) of the mixture."""
    rows = []
    for label, run in group.gate_options.items():
        x, _ = next(iter(run.loader("val", batch_size=images)))
        set_seed(run.spec.train.seed)
        net = build_model(run.spec.model, run.net.num_classes, x.shape[1], x.shape[2]).eval()
        with torch.no_grad():
            gates = [torch.sigmoid(g.float()) for g in net(x.contiguous()).gates[:-1]]
        pi = exit_probabilities(gates).double().mean(0)
        rows.append({"gate bias": label, **{f"exit {k + 1}": v for k, v in enumerate(pi.tolist())}})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the paper's Table 2 and batch-1 latency
def table2(group: BackboneRuns, t1: Table1, choice: LambdaChoice, mixing: str, cost_reference: str) -> pd.DataFrame:
    """The paper's Table 2 without timing, from cached test outputs: hard-gate accuracy beside the ensemble,
    mean MACs over the plain backbone, the soft expected cost the loss sees, and the share of inputs per
    exit (final included), for every seed at the fixed lambda and for the grid's lambda chosen on validation."""
    rows = []
    models = [(f"lambda={group.headline_lambda:g} (fixed), seed {s}", "proposed", s, t1.hard[(group.dataset, group.backbone, s)])
              for s in group.seeds]
    if choice is not None:
        models.append((f"lambda={choice.chosen:g} (val), seed {group.seeds[0]}", "grid", choice.chosen,
                       choice.hard[choice.chosen]))
    for label, kind, key, r in models:
        test, run = group.outputs(kind, key, "test"), group.run(kind, key)
        soft = expected_cost([torch.sigmoid(z) for z in test.gates[:-1]],
                             normalised_exit_costs(run.macs, cost_reference)).mean().item()
        rows.append({"model": label, "ensemble acc": ensemble_accuracy(test, mixing), "hard-exit acc": r.accuracy,
                     "MACs / plain": r.mean_fraction, "soft expected cost": soft,
                     "shares sum (%)": 100 * sum(r.exit_shares), "exits": exit_list(r.exit_shares)})
    p = _paper_table2_row(group.paper_backbone)
    rows.append({"model": p["backbone"], "hard-exit acc": p["hard-exit acc"], "exits": p["exits (timed images)"]})
    return pd.DataFrame(rows)


@dataclass
class LatencyTable:
    frame: pd.DataFrame
    timed: dict[str, dict]     # one ``speed.speed_rows`` result per timed model
    header: str

    def speed_up(self, label: str) -> float:
        """t_plain / t - 1, in % (medians)."""
        return 100 * (self.timed[label]["realised"] - 1)


def latency_table(group: BackboneRuns, choice: LambdaChoice, gate_threshold: float, images: int,
                  repeats: int) -> LatencyTable:
    """Batch-1 wall time of the real early-exit forward with hard gates (``speed.speed_rows``: the first
    ``images`` test images one by one, one thread, ``repeats`` interleaved with the plain backbone's) of the
    first seed's network at the fixed lambda and of the grid's chosen network, each in its inference form
    (``inference.inference_form``) against its own backbone in the same form."""
    from ..inference import inference_form
    from ..speed import speed_rows
    seed = group.seeds[0]
    x, _ = next(iter(group.run("plain", seed).loader("test", batch_size=images)))
    x = x[:rehearsal.cap(len(x), rehearsal.LATENCY_IMAGES)]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    timed, rows = {}, []
    try:
        for label, kind, key in ((f"lambda={group.headline_lambda:g} (fixed), seed {seed}", "proposed", seed),
                                 (f"lambda={choice.chosen:g} (val), seed {seed}", "grid", choice.chosen)):
            run = group.run(kind, key)
            r = timed[label] = speed_rows(inference_form(run.net), x, hard_gate_rule(run.net.num_exits, gate_threshold),
                                          run.macs, 1, rehearsal.cap(repeats, 1), {"model": label})
            rows.append({"model": label, "plain ms": statistics.median(r["plain ms"]),
                         "ms": statistics.median(r["early exit ms"]), "speed-up (%)": 100 * (r["realised"] - 1),
                         "time saved (%)": 100 * (1 - 1 / r["realised"]),
                         "MAC-predicted speed-up (%)": 100 * (r["predicted"] - 1),
                         "exits (timed images)": exit_list(r["exit shares"])})
    finally:
        torch.set_num_threads(previous)
    p = _paper_table2_row(group.paper_backbone)
    rows.append({"model": p["backbone"], "ms": p["ms"], "speed-up (%)": p["speed-up (%)"],
                 "exits (timed images)": p["exits (timed images)"]})
    header = (f"batch-1 latency: {len(x)} test images one by one, median of {rehearsal.cap(repeats, 1)} repeats "
              "interleaved with the plain backbone's, 1 torch thread, float32, inference form (batch norm folded, "
              "channels_last), real early-exit forward")
    return LatencyTable(pd.DataFrame(rows), timed, header)


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


def _title(group: BackboneRuns, kind: str = "plain") -> str:
    """The group's network and data set as a paper prints them ("VGG-13 ×0.25, CIFAR-10")."""
    run = group.run(kind, group.seeds[0])
    return network_title(group.backbone, run.spec.model.width, group.dataset)


def plot_gate_distributions(group: BackboneRuns, choice: LambdaChoice):
    """Fig. 4 analogue: test gate histograms of an early, a middle and a late branch of the first seed's
    network at the fixed lambda and of the grid's chosen network. Returns the figure and the share of
    polarised gate values of every seed's network at the fixed lambda."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), squeeze=False, layout="constrained")
    models = ((f"λ = {group.headline_lambda:g} (fixed)", "proposed", group.seeds[0]),
              (f"λ = {choice.chosen:g} (chosen on val)", "grid", choice.chosen))
    for ax, (title, kind, key) in zip(axes[0], models):
        gates = gate_values(group.outputs(kind, key, "test"))
        for b in sorted({0, (len(gates) - 1) // 2, len(gates) - 1}):
            ax.hist(gates[b].numpy(), bins=40, range=(0, 1), alpha=0.55, label=f"branch {b + 1}")
        ax.set_yscale("log")
        ax.set(title=title, xlabel="gate $g_b(x)$ on test images", ylabel="images")
        ax.legend()
    fig.suptitle(f"{_title(group)}, seed {group.seeds[0]}")
    return fig, polarised_by_seed(group)


def polarised_by_seed(group: BackboneRuns) -> dict[int, float]:
    """Per seed, the share of test gate values (all branches) of the network at the fixed lambda below 0.1
    or above 0.9."""
    return {s: polarised_share(gate_values(group.outputs("proposed", s, "test"))).mean().item() for s in group.seeds}


def plot_accuracy_vs_macs(group: BackboneRuns, t1: Table1, choice: LambdaChoice, mixing: str,
                          gate_grid: Sequence[float] = GATE_GRID):
    """Test accuracy against mean MACs / plain MACs: every grid network (first seed, one colour per lambda,
    from light to dark) and the first seed's network at the fixed lambda when the grid lacks it, each with its
    hard threshold t swept and its soft-mixture ensemble (hollow circle at the cost of every stage);
    BranchyNet's validation front of per-exit entropy thresholds (test values), both chosen operating
    points and the plain backbone. Curves are joined in cost order. Returns the figure and the gate sweeps by
    label."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    seed, sweeps = group.seeds[0], {}
    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    lambdas = sorted(group.grid)
    models = [(f"λ = {lam:g}", "grid", lam) for lam in lambdas]
    if group.run("proposed", seed).spec.name not in {r.spec.name for r in group.grid.values()}:
        models.append((f"λ = {group.headline_lambda:g} (fixed)", "proposed", seed))
    colours = plt.cm.viridis([0.15 + 0.7 * i / max(1, len(models) - 1) for i in range(len(models))])
    for (label, kind, key), colour in zip(models, colours):
        run = group.run(kind, key)
        s = sweeps[label] = shared_threshold_sweep(group.outputs(kind, key, "val"), group.outputs(kind, key, "test"),
                                                   hard_gate_rule(run.net.num_exits, 0.0), gate_grid, run.macs)
        order = sorted(range(len(s.test_cost)), key=lambda i: s.test_cost[i])
        costs = [float(s.test_cost[i]) for i in order]
        swept = (f"{label}, gates swept over t" if costs[-1] - costs[0] >= 0.01 else    # a collapsed network
                 f"{label}: every t gives one point (cost {costs[0]:.2f})")
        ax.plot(costs, [100 * float(s.test_accuracy[i]) for i in order], marker=".", ms=3, lw=1.2, color=colour,
                label=swept)
        ax.scatter([run.macs.exit_fractions[-1]], [100 * ensemble_accuracy(group.outputs(kind, key, "test"), mixing)],
                   facecolors="none", edgecolors=[colour], s=45)
    b = t1.branchynet[(group.dataset, group.backbone, seed)]
    cost, acc = b.sweep.curve("test")
    order = sorted(range(len(cost)), key=lambda i: cost[i])
    ax.plot([cost[i] for i in order], [100 * acc[i] for i in order], color="0.35", lw=1.2, marker=".", ms=3,
            label="BranchyNet, entropy thresholds (val front)")
    ax.scatter([b.point["test_cost"]], [100 * b.point["test_accuracy"]], marker="s", c="k", s=50, zorder=5,
               label="BranchyNet, chosen on val")
    r = choice.hard[choice.chosen]
    ax.scatter([r.mean_fraction], [100 * r.accuracy], marker="D", c="tab:red", s=50, zorder=5,
               label=f"proposed, chosen on val (λ = {choice.chosen:g})")
    ax.scatter([1.0], [100 * group.outputs("plain", seed, "test").exit_accuracies()[-1]], marker="*", s=150, c="k",
               zorder=5, label="plain backbone")
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], ls="none", marker="o", mfc="none", mec="0.3", ms=7,
                          label="soft-mixture ensemble (every stage runs)"))
    ax.set(title=f"{_title(group)}, test set, seed {seed}", xlabel="mean MACs / plain-backbone MACs",
           ylabel="test accuracy (%)")
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig, sweeps


def gate_history(groups: Iterable[BackboneRuns]) -> pd.DataFrame:
    """Mean validation gate of every branch and mean mixture weight pi_b of every exit after every epoch (from
    the validation outputs kept after every epoch), one row per gated network, epoch and exit (the final
    exit's gate is 1 by definition, left empty): shows whether and when the gates collapse."""
    rows = []
    for g in groups:
        for label, (kind, key) in g.gated().items():
            run = g.run(kind, key)
            for epoch in range(1, run.epochs_trained + 1):
                val = run.epoch_outputs(epoch)
                gates, pi = gate_values(val).mean(1).tolist() + [float("nan")], mixture_weights(val).tolist()
                rows += [{"model": label, "recipe": g.recipe, "lambda": run.spec.loss.options["lam"], "epoch": epoch,
                          "exit": k + 1, "mean gate": gates[k], "mixture weight": pi[k]} for k in range(len(pi))]
    return pd.DataFrame(rows)


def plot_gate_history(history: pd.DataFrame, columns: int = 4):
    """Mean validation gate per branch against the epoch, one panel per gated network."""
    import matplotlib.pyplot as plt
    labels = list(dict.fromkeys(history["model"]))
    nrows = -(-len(labels) // columns)
    fig, axes = plt.subplots(nrows, columns, figsize=(3.2 * columns, 2.9 * nrows), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, label in zip(axes.flat, labels):
        part = history[(history.model == label) & history["mean gate"].notna()]
        wide = part.pivot(index="epoch", columns="exit", values="mean gate")
        for branch in wide.columns:
            ax.plot(wide.index, wide[branch], marker="o", ms=3, label=f"branch {branch}",
                    color=plt.cm.viridis((branch - 1) / max(1, len(wide.columns) - 1)))
        ax.set(title=_panel_title(label), ylim=(0, 1), xlabel="epoch")
        ax.set_xticks(list(wide.index)[::-(-len(wide.index) // 6)])      # at most 6 epoch ticks
    for ax in axes.flat[len(labels):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("mean gate (val)")
    panels_legend(fig, columns=1, loc="outside right upper")
    return fig


def _panel_title(label: str) -> str:
    """A gated network's label ('ref λ=0.1 pytorch s0', with the backbone and data set in front when a run has
    several) as a panel title of short lines: 'λ = 0.1, seed 0', 'gate bias pytorch', 'reference recipe'."""
    *front, lam, bias, seed = label.split()
    lines = [f"{lam.replace('=', ' = ')}, seed {seed.removeprefix('s')}", f"gate bias {bias}"]
    if front[:1] != ["ref"] and len(front) >= 2:
        lines.insert(0, network_title(front[0], None, front[1]))
    return "\n".join(lines + (["reference recipe"] if "ref" in front else []))


def early_epochs(epochs: int) -> int:
    """'Early in training' for the collapse watch: the first third of the epochs, at least one."""
    return max(1, -(-epochs // 3))


def watch(history: pd.DataFrame, groups: Iterable[BackboneRuns], gate_threshold: float) -> dict[str, Collapse]:
    """The collapse watch (``methods.differentiable_branching.watch_collapse``) of every gated network: its
    gate and mixture history and the share of validation inputs each exit takes with hard gates."""
    out = {}
    for g in groups:
        for label, (kind, key) in g.gated().items():
            val, run = g.outputs(kind, key, "val"), g.run(kind, key)
            shares = evaluate_policy(val, hard_gate_rule(val.num_exits, gate_threshold), run.macs).exit_shares
            part = history[history.model == label]
            gates = part.pivot(index="epoch", columns="exit", values="mean gate").iloc[:, :-1]
            mixture = part.pivot(index="epoch", columns="exit", values="mixture weight")
            out[label] = watch_collapse(torch.tensor(gates.values), torch.tensor(mixture.values), shares,
                                        early_epochs(run.spec.train.epochs))
    return out


def collapse_table(found: dict[str, Collapse]) -> pd.DataFrame:
    """One row per gated network: collapsed or not, and what the watch saw."""
    return pd.DataFrame([{"model": label, "collapsed": c.collapsed,
                          "open gates (branch: epoch)": ", ".join(f"{b}: {e}" for b, e in c.open_gates.items()),
                          "exit taking >= 95%": c.dominant or "", "starved exits": ", ".join(map(str, c.starved)),
                          "watch": c.describe()} for label, c in found.items()])


def model_table(groups: Iterable[BackboneRuns], mixing: str, gate_threshold: float) -> pd.DataFrame:
    """Every gated network on test: its final exit's and ensemble's accuracy, hard-exit accuracy and cost,
    and the share of inputs per exit (hard gates, exits from 1)."""
    rows = []
    for g in groups:
        for label, (kind, key) in g.gated().items():
            test, run = g.outputs(kind, key, "test"), g.run(kind, key)
            h = evaluate_policy(test, hard_gate_rule(test.num_exits, gate_threshold), run.macs)
            rows.append({"model": label, "final exit acc": test.exit_accuracies()[-1],
                         "ensemble acc": ensemble_accuracy(test, mixing), "hard-exit acc": h.accuracy,
                         "MACs / plain": h.mean_fraction, "exits": exit_list(h.exit_shares)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- paper numbers beside ours, the metrics file
def paper_comparisons(t1: Table1, t2: dict[str, pd.DataFrame], lat: dict[str, LatencyTable],
                      choices: dict[tuple[str, str], LambdaChoice], setting: str) -> list[dict]:
    """Every number of the paper's Tables 1 and 2 that we measure, beside ours (``report.comparison``);
    Table 1 as the mean over seeds."""
    out = []
    for row in t1.summary.to_dict("records"):
        s = PAPER_BACKBONES.get(row["backbone"], row["backbone"])
        for method, ours, pap in (("plain", "plain", "paper plain"),
                                  ("BranchyNet final exit", "BranchyNet (final exit)", "paper B-NET"),
                                  ("proposed ensemble", "proposed (ensemble)", "paper proposed")):
            out.append(comparison(f"{row['dataset']} {s} {method} test accuracy", round(100 * row[f"{ours} mean"], 2),
                                  None if pd.isna(row[pap]) else round(100 * row[pap], 2), "%",
                                  f"{setting}, mean of {row['seeds']} seeds"
                                  + (", JPEG CIFAR-10 copy" if row["dataset"] == "cifar10" else "")
                                  + (f", lambda={row['lambda (fixed)']:g}" if method.startswith("proposed") else "")))
    for (d, bb), choice in choices.items():
        s = PAPER_BACKBONES.get(bb, bb)
        pap = paper_value(table=2, backbone=s, quantity="test_accuracy")
        out.append(comparison(f"{d} {s} proposed hard-exit test accuracy", round(100 * choice.hard[choice.chosen].accuracy, 2),
                              None if pap is None else pap.value, "%", f"lambda={choice.chosen:g} chosen on validation"))
        label = next((k for k in lat[bb].timed if k.startswith(f"lambda={choice.chosen:g} (val)")), None) if bb in lat else None
        if label is not None:
            pap = paper_value(table=2, backbone=s, quantity="speed_up")
            out.append(comparison(f"{d} {s} batch-1 speed-up t_plain/t - 1", round(lat[bb].speed_up(label), 1),
                                  None if pap is None else pap.value, "%",
                                  f"1 CPU thread, {lat[bb].timed[label]['images']} images, inference form"))
    return out


def _loss_weights(groups: Iterable[BackboneRuns]) -> dict[str, str]:
    """BranchyNet's per-exit loss weights as its runs were trained (read from their specs), per recipe."""
    return {g.recipe: ", ".join(sorted({str(r.spec.loss.options.get("weights")) for r in g.branchynet.values()}))
            for g in groups}


def metrics(data: dict, runs: dict, parameters: dict, groups: Iterable[BackboneRuns], t1: Table1,
            choices: dict[tuple[str, str], LambdaChoice], t2: dict[str, pd.DataFrame], lat: dict[str, LatencyTable],
            polarised: dict[str, dict[int, float]], history: pd.DataFrame, gates: dict, initial: dict[str, pd.DataFrame],
            found: dict[str, Collapse], models: pd.DataFrame, t1_reference: Table1 | None = None) -> dict:
    """The metrics file's free-form part: every table (each seed's numbers), choice and curve of the notebook;
    BranchyNet's loss weights as trained."""
    return {
        "data": {d: ds.describe() for d, ds in data.items()}, "runs": {n: r.spec.key for n, r in runs.items()},
        "train_minutes": {n: r.train_seconds / 60 for n, r in runs.items()},
        "assumptions": {**{k: parameters[k] for k in ("mixing", "cost_reference", "head_features", "head_pool",
                                                      "gate_threshold")},
                        "branchynet_loss_weights": _loss_weights(groups)},
        "table1_per_seed": t1.per_seed.to_dict("records"), "table1": t1.summary.to_dict("records"),
        "reference_recipe_table1_per_seed": None if t1_reference is None else t1_reference.per_seed.to_dict("records"),
        "reference_recipe_table1": None if t1_reference is None else t1_reference.summary.to_dict("records"),
        "branchynet_choice": {f"{d}|{bb}|s{s}": c.point for (d, bb, s), c in t1.branchynet.items()},
        "gate_bias": {f"{d}|{bb}": g.frame.to_dict("records") for (d, bb), g in gates.items()},
        "initial_mixture": {bb: f.to_dict("records") for bb, f in initial.items()},
        "lambda_grid": {f"{d}|{bb}": c.frame.to_dict("records") for (d, bb), c in choices.items()},
        "table2": {bb: f.to_dict("records") for bb, f in t2.items()},
        "latency": {f"{bb}|{k}": v for bb, t in lat.items() for k, v in t.timed.items()},
        "gate_polarisation": {bb: {f"s{s}": v for s, v in p.items()} for bb, p in polarised.items()},
        "gate_history": history.to_dict("records"),
        "collapse_watch": collapse_table(found).to_dict("records"),
        "gated_networks": models.to_dict("records"),
    }
