"""E2CM: early exit via class means (Görmez, Dasari, Koyuncu, IJCNN 2022), and the trained-head
baselines it is compared with under equal training time.

E2CM trains nothing. One pass over the training set stores, at every exit, the mean feature of each
class; at inference a sample leaves at the first exit where the softmax of its negative *normalised*
distances to the class means exceeds that exit's threshold, and the nearest class mean is the
prediction. Its only costs are that pass and K*D multiply-accumulates per exit for the distances.

Sections: features and class means; per-exit scores (E2CM and trained heads alike); costs; the random
threshold cloud and its hull; heads trained under a wall-clock budget (SDN on a frozen backbone,
BranchyNet jointly, E2CM+SDN heads that also read the distances); the unsupervised variant
(k-means cluster means, clustering accuracy by Hungarian matching).
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import StagedBackbone
from .data import Split, TensorLoader
from .macs import MacTable
from .multiexit import MultiExitNet
from .outputs import CachedOutputs
from .paths import artifacts_root, atomic_save, config_hash
from .train import bf16_supported, set_seed

__all__ = ["FEATURE_MODES", "exit_feature", "ClassMeans", "ExitDistances", "ExitScores", "fit_class_means",
           "exit_distances", "e2cm_scores", "prediction_disagreement", "head_scores", "head_costs", "e2cm_costs", "random_thresholds",
           "evaluate_thresholds", "exit_points", "frontier", "best_within_budget", "ThresholdCloud",
           "threshold_cloud", "ExitTraining",
           "TrainedExits", "DistanceHead", "train_exits", "clustering_accuracy", "hungarian_map",
           "build_autoencoder", "train_autoencoder", "CentroidLogits", "kmeans_classifier", "unsupervised_e2cm"]

FEATURE_MODES = ("gap", "flatten")


# ---------------------------------------------------------------- features and class means
def exit_feature(h: torch.Tensor, mode: str = "gap") -> torch.Tensor:
    """The vector E2CM compares with class means: global-average-pooled (default; cheap, and the
    only sane choice for large maps) or the flattened map (the official code; spec A7-3)."""
    if mode not in FEATURE_MODES:
        raise ValueError(f"feature mode must be one of {FEATURE_MODES}, got {mode!r}")
    h = h.float()
    if h.ndim == 2:
        return h
    return h.mean((2, 3)) if mode == "gap" else h.flatten(1)


def _distances(f: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Plain (not squared) L2 distances [N, K]; the direct form, so that batch size never changes a bit."""
    return torch.cdist(f, means, compute_mode="donot_use_mm_for_euclid_dist")


@dataclass
class ClassMeans:
    """Per early exit j: class means [K, D_j] and the normalisers [K], the mean distance of *all*
    training samples to each class mean (spec A2 step 3, the demo's batch normalisation)."""

    means: list[torch.Tensor]
    scale: list[torch.Tensor]
    feature: str
    fit_seconds: float = 0.0
    class_counts: torch.Tensor | None = None

    @property
    def num_exits(self) -> int:
        return len(self.means)

    @property
    def dims(self) -> list[int]:
        return [m.shape[1] for m in self.means]

    def overhead_macs(self) -> list[int]:
        """Analytic cost of the distances at each exit: K*D multiply-accumulates (subtract, square,
        add per coordinate and class); softmax and normalisation are negligible and not counted."""
        return [m.shape[0] * m.shape[1] for m in self.means]


@dataclass
class ExitDistances:
    """Raw distances to the class means at the early exits, and the backbone's final logits."""

    d: torch.Tensor             # [J, N, K]
    final_logits: torch.Tensor  # [N, C]
    labels: torch.Tensor        # [N]


@torch.no_grad()
def _pass(net: MultiExitNet, loader: Iterable, feature: str, means: list[torch.Tensor] | None, num_classes: int):
    """One forward pass: per-class feature sums (when ``means`` is None) or distances to ``means``."""
    net.eval()
    sums, counts, dists, finals, labels = None, torch.zeros(num_classes, dtype=torch.float64), [], [], []
    for x, y in loader:
        feats = net.exit_features(x)
        finals.append(net.backbone.classifier(feats[-1]).float())
        labels.append(y)
        fs = [exit_feature(h, feature) for h in feats[:-1]]
        if means is None:
            if sums is None:
                sums = [torch.zeros(num_classes, f.shape[1], dtype=torch.float64) for f in fs]
            for s, f in zip(sums, fs):
                s.index_add_(0, y, f.double())
            counts += torch.bincount(y, minlength=num_classes).double()
        else:
            dists.append(torch.stack([_distances(f, m) for f, m in zip(fs, means)]))
    return sums, counts, dists, torch.cat(finals), torch.cat(labels)


def fit_class_means(net: MultiExitNet, loader: Iterable, num_classes: int, feature: str = "gap"
                    ) -> tuple[ClassMeans, ExitDistances]:
    """Class means at every early exit of ``net`` (no gradients, no weight changes), then the
    normalisers from a second pass. Returns the means and the training distances, which the random
    threshold search can use directly. ``fit_seconds`` is the wall-clock E2CM 'training' time."""
    t0 = time.perf_counter()
    sums, counts, _, _, _ = _pass(net, loader, feature, None, num_classes)
    if (counts == 0).any():
        raise ValueError(f"classes {torch.nonzero(counts == 0).flatten().tolist()} have no training samples")
    means = [(s / counts[:, None]).float() for s in sums]
    _, _, dists, finals, labels = _pass(net, loader, feature, means, num_classes)
    d = torch.cat(dists, 1)
    scale = [d[j].mean(0) for j in range(len(means))]
    cm = ClassMeans(means, scale, feature, time.perf_counter() - t0, counts.long())
    return cm, ExitDistances(d, finals, labels)


def exit_distances(net: MultiExitNet, loader: Iterable, cm: ClassMeans) -> ExitDistances:
    """Distances of every sample of a split to the class means at every early exit (one pass)."""
    _, _, dists, finals, labels = _pass(net, loader, cm.feature, cm.means, cm.means[0].shape[0])
    return ExitDistances(torch.cat(dists, 1), finals, labels)


# ---------------------------------------------------------------- per-exit scores
@dataclass
class ExitScores:
    """What any per-exit threshold rule needs: confidence at each early exit [J, N], prediction at
    every exit including the final one [J+1, N], and the labels the predictions are scored against."""

    conf: torch.Tensor
    pred: torch.Tensor
    labels: torch.Tensor

    @property
    def num_exits(self) -> int:
        return self.pred.shape[0]

    def exit_accuracies(self) -> list[float]:
        return (self.pred == self.labels).float().mean(1).tolist()

    def relabel(self, labels: torch.Tensor) -> "ExitScores":
        return ExitScores(self.conf, self.pred, labels)


def e2cm_scores(dist: ExitDistances, cm: ClassMeans, prediction: str = "nearest") -> ExitScores:
    """conf = max softmax(-d / scale); prediction 'nearest' = argmin of the raw distance (the code,
    spec A2 step 6) or 'normalised' = argmax of that softmax. The final exit is the backbone's argmax."""
    if prediction not in ("nearest", "normalised"):
        raise ValueError(f"prediction must be 'nearest' or 'normalised', got {prediction!r}")
    scale = torch.stack(cm.scale)[:, None, :]
    logp = torch.log_softmax(-dist.d / scale, dim=2)
    conf, norm_pred = logp.max(2)
    early = dist.d.argmin(2) if prediction == "nearest" else norm_pred
    return ExitScores(conf.exp(), torch.cat([early, dist.final_logits.argmax(1)[None]]), dist.labels)


def prediction_disagreement(dist: ExitDistances, cm: ClassMeans) -> list[float]:
    """Share of samples per exit where the nearest raw mean and the largest normalised score differ."""
    a = e2cm_scores(dist, cm, "nearest").pred[:-1]
    b = e2cm_scores(dist, cm, "normalised").pred[:-1]
    return (a != b).float().mean(1).tolist()


def head_scores(outputs: CachedOutputs) -> ExitScores:
    """Max-softmax confidence of trained exit heads, in the same form as E2CM's scores."""
    p = torch.softmax(outputs.logits[:-1].float(), dim=2)
    return ExitScores(p.max(2).values, outputs.logits.argmax(2), outputs.labels)


# ---------------------------------------------------------------- costs
def e2cm_costs(macs: MacTable, cm: ClassMeans) -> torch.Tensor:
    """Cumulative MACs of stopping at each exit: backbone stages so far plus the distance overhead of
    every exit passed (the head MACs in ``macs`` are ignored: E2CM has no heads). The last entry is
    the full backbone plus every overhead, so it slightly exceeds 1 when normalised."""
    stage_cum = torch.tensor(macs.stage_macs, dtype=torch.float64).cumsum(0)
    over = torch.tensor(cm.overhead_macs(), dtype=torch.float64).cumsum(0)
    early = stage_cum[torch.tensor(macs.exit_stage[:-1])] + over
    return torch.cat([early, torch.tensor([macs.backbone_macs + over[-1].item()], dtype=torch.float64)])


# ---------------------------------------------------------------- threshold cloud and hull
def random_thresholds(n: int, scores: ExitScores, space: str = "quantile", seed: int = 0) -> torch.Tensor:
    """``n`` random per-exit threshold vectors [n, J], plus 'never exit' as the last row.

    'uniform' draws t ~ U(0,1) per exit as the official demo does; 'quantile' draws u ~ U(0,1) and
    uses the u-quantile of that exit's confidence on ``scores`` (the split the search runs on). Both
    search the same family of rules; 'quantile' spreads the draws where confidences actually lie
    (with GAP features they sit in a narrow band just above 1/K, where U(0,1) wastes most draws)."""
    if space not in ("uniform", "quantile"):
        raise ValueError(f"space must be 'uniform' or 'quantile', got {space!r}")
    g = torch.Generator().manual_seed(seed)
    j = scores.conf.shape[0]
    u = torch.rand(n, j, generator=g, dtype=torch.float64)
    if space == "uniform":
        t = u.float()
    else:
        sorted_conf = scores.conf.sort(1).values.double()
        pos = (u * (sorted_conf.shape[1] - 1)).round().long()
        t = torch.stack([sorted_conf[k][pos[:, k]] for k in range(j)], 1).float()
    return torch.cat([t, torch.full((1, j), float("inf"))])


def exit_points(scores: ExitScores, thresholds: torch.Tensor) -> torch.Tensor:
    """Exit index per (threshold vector, sample) [T, N]: first exit with conf > t (strict, as the
    code), the final exit if none fires."""
    fire = scores.conf[None] > thresholds[:, :, None]
    fire = torch.cat([fire, torch.ones(len(thresholds), 1, fire.shape[2], dtype=torch.bool)], 1)
    return fire.to(torch.uint8).argmax(1)


def evaluate_thresholds(scores: ExitScores, costs: torch.Tensor, thresholds: torch.Tensor,
                        chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy [T] and mean cost [T] (in the unit of ``costs``) of every threshold vector."""
    correct = scores.pred == scores.labels
    cols = torch.arange(correct.shape[1])
    accs, spent = [], []
    for t in thresholds.split(chunk):
        at = exit_points(scores, t)
        accs.append(correct[at, cols].float().mean(1))
        spent.append(costs[at].mean(1))
    return torch.cat(accs), torch.cat(spent)


def frontier(cost: torch.Tensor, acc: torch.Tensor, kind: str = "hull") -> list[int]:
    """Indices of the operating points, by increasing cost: 'pareto' keeps every point not beaten on
    both axes; 'hull' keeps the upper-left convex-hull chain of those (what the demo plots)."""
    if kind not in ("hull", "pareto"):
        raise ValueError(f"kind must be 'hull' or 'pareto', got {kind!r}")
    order = sorted(range(len(cost)), key=lambda i: (float(cost[i]), -float(acc[i])))
    front, best = [], -float("inf")
    for i in order:
        if float(acc[i]) > best:
            front.append(i)
            best = float(acc[i])
    if kind == "pareto":
        return front
    hull: list[int] = []
    for i in front:  # monotone chain, keeping right turns only (upper hull)
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (float(cost[b]) - float(cost[a])) * (float(acc[i]) - float(acc[a])) - \
                    (float(acc[b]) - float(acc[a])) * (float(cost[i]) - float(cost[a]))
            if cross >= 0:
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def best_within_budget(cost: torch.Tensor, acc: torch.Tensor, budget: float) -> int | None:
    """The most accurate point whose cost is at most ``budget`` (None if nothing is that cheap).
    Run on validation numbers; the test numbers of the chosen point are what gets reported."""
    ok = torch.nonzero(cost <= budget).flatten()
    if len(ok) == 0:
        return None
    return int(ok[acc[ok].argmax()])


@dataclass
class ThresholdCloud:
    """Random per-exit thresholds evaluated on a search split (validation or training) and on test.
    Costs are fractions of the plain backbone. ``hull`` indexes the search split's frontier; its
    test columns are the honest estimates."""

    thresholds: torch.Tensor
    search_acc: torch.Tensor
    search_cost: torch.Tensor
    test_acc: torch.Tensor
    test_cost: torch.Tensor
    hull: list[int]

    def curve(self, split: str = "test") -> tuple[list[float], list[float]]:
        """(cost, accuracy) of the hull points on ``split`` ('test' or 'search')."""
        cost, acc = (self.test_cost, self.test_acc) if split == "test" else (self.search_cost, self.search_acc)
        return [float(cost[i]) for i in self.hull], [float(acc[i]) for i in self.hull]

    def at_budget(self, budget: float) -> dict | None:
        """The most accurate search-split point within ``budget``, reported on both splits."""
        i = best_within_budget(self.search_cost, self.search_acc, budget)
        if i is None:
            return None
        return {"budget": budget, "search_accuracy": float(self.search_acc[i]), "search_cost": float(self.search_cost[i]),
                "test_accuracy": float(self.test_acc[i]), "test_cost": float(self.test_cost[i]),
                "thresholds": self.thresholds[i].tolist()}


def threshold_cloud(search: ExitScores, test: ExitScores, costs: torch.Tensor, n: int, space: str = "quantile",
                    seed: int = 0, kind: str = "hull") -> ThresholdCloud:
    """Draw ``n`` threshold vectors on ``search``, keep its frontier, and evaluate all on ``test``.
    ``costs`` [J+1] are cumulative exit costs as fractions of the plain backbone."""
    t = random_thresholds(n, search, space, seed)
    s_acc, s_cost = evaluate_thresholds(search, costs, t)
    t_acc, t_cost = evaluate_thresholds(test, costs, t)
    return ThresholdCloud(t, s_acc, s_cost, t_acc, t_cost, frontier(s_cost, s_acc, kind))


# ---------------------------------------------------------------- heads trained under a time budget
class DistanceHead(nn.Module):
    """E2CM+SDN exit head: a linear classifier on the pooled feature concatenated with the normalised
    distances to the class means (the official demo feeds these distances to the SDN heads; how the
    heads combine them was not published, spec A2.4: concatenation is our assumption)."""

    def __init__(self, means: torch.Tensor, scale: torch.Tensor, num_classes: int, feature: str):
        super().__init__()
        self.register_buffer("means", means.clone())
        self.register_buffer("scale", scale.clone())
        self.feature = feature
        self.fc = nn.Linear(means.shape[1] + means.shape[0], num_classes)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, None]:
        f = exit_feature(h, self.feature)
        d = _distances(f, self.means) / self.scale
        return self.fc(torch.cat([f, d], 1)), None


@dataclass(frozen=True)
class ExitTraining:
    """Training of exit heads on a trained backbone.

    mode 'frozen': SDN-style IC-only training, backbone fixed (eval mode, no gradients);
    mode 'joint': BranchyNet-style, backbone and heads trained together from the same checkpoint.
    The loss is CE(final) + sum_i c_i CE(exit i), c_i the exit's cumulative MAC fraction (both
    baselines of the demo; SDN's warm-up factor min(epoch, 50)/50 is left out since it would be 0
    within the first epoch). Training stops after ``seconds`` of wall clock or ``epochs`` epochs,
    whichever comes first (None = no limit of that kind)."""

    mode: str = "frozen"
    seconds: float | None = None
    epochs: float | None = 1.0
    distance_inputs: bool = False   # E2CM+SDN heads (DistanceHead)
    lr: float = 1e-3                # Adam, the official repo's optimiser
    batch_size: int = 128
    crop_pad: int = 2
    flip: bool = True
    bf16: bool = True
    channels_last: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.mode not in ("frozen", "joint"):
            raise ValueError(f"mode must be 'frozen' or 'joint', got {self.mode!r}")
        if self.seconds is None and self.epochs is None:
            raise ValueError("give a time budget (seconds), a number of epochs, or both")
        if self.distance_inputs and self.mode != "frozen":
            raise ValueError("distance inputs need the frozen backbone the class means were computed on")


@dataclass
class TrainedExits:
    net: MultiExitNet
    macs: MacTable
    log: dict = field(default_factory=dict)   # steps, epochs, seconds


def _exit_forward(net: MultiExitNet, x: torch.Tensor, frozen: bool) -> list[torch.Tensor]:
    if not frozen:
        return net(x).logits
    with torch.no_grad():
        feats = net.exit_features(x)
    return [head(f)[0] for head, f in zip(net.heads, feats[:-1])]


def train_exits(run, cfg: ExitTraining, name: str, cm: ClassMeans | None = None,
                progress: bool = False) -> TrainedExits:
    """Train exit heads (and, in 'joint' mode, the backbone) on a copy of ``run.net``; cached in
    artifacts/ by (backbone run, cfg) so that a time-budgeted run is reproduced exactly on re-run."""
    from .macs import mac_table
    net = copy.deepcopy(run.net)
    set_seed(cfg.seed)
    if cfg.distance_inputs:
        if cm is None:
            raise ValueError("distance_inputs needs the class means (cm)")
        net.heads = nn.ModuleList(DistanceHead(m, s, net.num_classes, cm.feature) for m, s in zip(cm.means, cm.scale))
    else:
        for head in net.heads:  # fresh seeded heads, whatever the checkpoint holds
            for m in head.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
    key = {"backbone": run.spec.key, "cfg": asdict(cfg), "means": None if cm is None or not cfg.distance_inputs
           else config_hash({"m": [float(m.sum()) for m in cm.means], "f": cm.feature})}
    path = artifacts_root() / f"{name}-{config_hash(key)}" / "exits.pt"
    if path.exists():
        state = torch.load(path, weights_only=False)
        net.load_state_dict(state["model"])
        net.eval()
        return TrainedExits(net, mac_table(net), state["log"])
    fractions = mac_table(net).exit_fractions
    weights = torch.tensor(fractions[:-1]) / fractions[-1]
    frozen = cfg.mode == "frozen"
    params = [p for h in net.heads for p in h.parameters()] if frozen else list(net.parameters())
    if frozen:
        for p in net.backbone.parameters():
            p.requires_grad_(False)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    data = run.data
    loader = TensorLoader(data.train, data.mean, data.std, cfg.batch_size, shuffle=True, crop_pad=cfg.crop_pad,
                          flip=cfg.flip, drop_last=len(data.train) > cfg.batch_size, seed=cfg.seed,
                          channels_last=cfg.channels_last)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    use_bf16 = cfg.bf16 and bf16_supported()
    max_steps = None if cfg.epochs is None else int(round(cfg.epochs * len(loader)))
    steps, t0, done = 0, time.perf_counter(), False
    epoch = 0
    while not done:
        loader.set_epoch(epoch)
        net.train()
        if frozen:
            net.backbone.eval()
        for x, y in loader:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                logits = _exit_forward(net, x, frozen)
                loss = sum(w * F.cross_entropy(z.float(), y) for w, z in zip(weights.tolist(), logits))
                if not frozen:
                    loss = loss + F.cross_entropy(logits[-1].float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            elapsed = time.perf_counter() - t0
            if (max_steps is not None and steps >= max_steps) or (cfg.seconds is not None and elapsed >= cfg.seconds):
                done = True
                break
        epoch += 1
        if progress:
            print(f"{name}: {steps} steps, {time.perf_counter() - t0:.0f} s")
    for p in net.parameters():
        p.requires_grad_(True)
    net = net.to(memory_format=torch.contiguous_format).eval()
    log = {"steps": steps, "epochs": steps / len(loader), "seconds": time.perf_counter() - t0, "bf16": use_bf16,
           "threads": torch.get_num_threads()}
    atomic_save({"model": net.state_dict(), "log": log}, path)
    return TrainedExits(net, mac_table(net), log)


def head_costs(trained: TrainedExits, cm: ClassMeans | None = None) -> torch.Tensor:
    """Cumulative MACs per exit of a net with trained heads; with DistanceHeads, plus K*D per exit passed."""
    costs = torch.tensor(trained.macs.exit_macs, dtype=torch.float64)
    if cm is not None:
        over = torch.tensor(cm.overhead_macs(), dtype=torch.float64).cumsum(0)
        costs = costs + torch.cat([over, over[-1:]])
    return costs


# ---------------------------------------------------------------- unsupervised variant
def hungarian_map(pred: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """The cluster -> class map maximising agreement (Hungarian matching on the confusion matrix)."""
    from scipy.optimize import linear_sum_assignment
    conf = torch.bincount(pred * k + labels, minlength=k * k).view(k, k).numpy()
    rows, cols = linear_sum_assignment(-conf)
    mapping = torch.arange(k)
    mapping[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return mapping


def clustering_accuracy(pred: torch.Tensor, labels: torch.Tensor, k: int | None = None) -> float:
    """Accuracy after the best one-to-one matching of cluster ids to classes."""
    k = k or int(max(pred.max(), labels.max())) + 1
    return (hungarian_map(pred, labels, k)[pred] == labels).float().mean().item()


class _Decoder(nn.Module):
    def __init__(self, channels: Sequence[int], embed: int, out_channels: int, side: int):
        super().__init__()
        self.side, self.c = side, channels[-1]
        self.fc = nn.Linear(embed, channels[-1] * side * side)
        layers: list[nn.Module] = []
        rev = list(channels[::-1]) + [out_channels]
        for i, (a, b) in enumerate(zip(rev[:-1], rev[1:])):
            layers += [nn.Upsample(scale_factor=2), nn.Conv2d(a, b, 3, padding=1)]
            if i < len(rev) - 2:
                layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.fc(z).view(len(z), self.c, self.side, self.side))


def build_autoencoder(channels: Sequence[int] = (16, 32, 64), embed: int = 10, in_channels: int = 1,
                      image_size: int = 28, num_classes: int = 10) -> tuple[StagedBackbone, nn.Module]:
    """A small convolutional autoencoder for deep clustering. The encoder is a staged backbone (a
    stride-1 stem, then one stride-2 conv block per entry of ``channels``), so its exits, MACs and
    early exit work like any other backbone's; its 'classifier' maps the last map to the embedding."""
    stem = max(4, channels[0] // 4)   # a thin full-resolution stem keeps the first exits cheap
    stages: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, stem, 3, padding=1), nn.ReLU(inplace=True))]
    cin = stem
    for c in channels:
        stages.append(nn.Sequential(nn.Conv2d(cin, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)))
        cin = c
    side = image_size
    for _ in channels:
        side = (side + 1) // 2
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, embed))
    encoder = StagedBackbone(stages, classifier, list(range(len(stages) - 1)), in_channels, image_size, num_classes)
    pad = (2 ** len(channels) * side - image_size) // 2
    decoder = nn.Sequential(_Decoder(channels, embed, in_channels, side),
                            nn.ZeroPad2d(-pad) if pad else nn.Identity())
    return encoder, decoder


def train_autoencoder(split: Split, mean, std, epochs: int, seed: int, name: str, lr: float = 1e-3,
                      batch_size: int = 128, **arch) -> StagedBackbone:
    """Train encoder + decoder on reconstruction (MSE, no labels); cached in artifacts/."""
    set_seed(seed)
    encoder, decoder = build_autoencoder(**arch)
    key = {"n": len(split), "sum": int(split.images[:64].sum()), "mean": list(mean), "epochs": epochs,
           "seed": seed, "lr": lr, "batch": batch_size, "arch": {k: list(v) if isinstance(v, tuple) else v
                                                                  for k, v in arch.items()}}
    path = artifacts_root() / f"{name}-{config_hash(key)}" / "autoencoder.pt"
    if path.exists():
        encoder.load_state_dict(torch.load(path, weights_only=False)["encoder"])
        return encoder.eval()
    model = nn.Sequential(encoder, decoder)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loader = TensorLoader(split, mean, std, batch_size, shuffle=True, seed=seed, drop_last=True)
    model.train()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, _ in loader:
            loss = F.mse_loss(model(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    atomic_save({"encoder": encoder.state_dict()}, path)
    return encoder.eval()


class CentroidLogits(nn.Module):
    """Negative squared distances to the k-means centroids: argmax = the nearest centroid."""

    def __init__(self, centroids: torch.Tensor):
        super().__init__()
        self.register_buffer("centroids", centroids)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(z.float(), self.centroids, compute_mode="donot_use_mm_for_euclid_dist") ** 2


@torch.no_grad()
def kmeans_classifier(encoder: StagedBackbone, loader: Iterable, k: int, seed: int) -> StagedBackbone:
    """Cluster the final embeddings of ``loader`` with k-means and make 'nearest centroid' the
    encoder's final classifier, so cluster ids play the role of classes for E2CM (spec A2.3 [U])."""
    from sklearn.cluster import KMeans
    encoder.eval()
    z = torch.cat([encoder(x) for x, _ in loader]).numpy().astype(np.float64)
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(z)
    out = copy.deepcopy(encoder)
    out.classifier = nn.Sequential(encoder.classifier, CentroidLogits(torch.tensor(km.cluster_centers_, dtype=torch.float32)))
    return out.eval()


def unsupervised_e2cm(data, seed: int, epochs: int, channels: Sequence[int], feature: str, n_thresholds: int,
                      space: str = "quantile", name: str = "e2cm_ae") -> dict:
    """The whole unsupervised pipeline for one seed (spec A2.3, our reading of it):
    autoencoder (no labels) -> k-means on the final embedding -> cluster means at the encoder's exits
    from the k-means pseudo-labels -> E2CM early exit. Thresholds are searched on validation against
    the full-cost clustering (still no labels); test predictions are scored by clustering accuracy
    under the Hungarian map of the full-cost test clustering."""
    from .macs import mac_table
    c, h = data.train.images.shape[1:3]
    arch = {"channels": tuple(channels), "in_channels": c, "image_size": h, "num_classes": data.num_classes}
    encoder = train_autoencoder(data.train, data.mean, data.std, epochs, seed, f"{name}_{data.spec.name}", **arch)
    loader = lambda split: TensorLoader(split, data.mean, data.std, 1000)  # noqa: E731
    clustered = kmeans_classifier(encoder, loader(data.train), data.num_classes, seed)
    # exits after the stride-2 blocks only: at the full-resolution stem the distances to flattened
    # means would cost more than the convolution itself
    net = MultiExitNet(clustered, clustered.default_exits[1:]).eval()
    with torch.no_grad():
        pseudo = torch.cat([clustered(x).argmax(1) for x, _ in loader(data.train)])
    cm, _ = fit_class_means(net, loader(Split(data.train.images, pseudo)), data.num_classes, feature)
    val = e2cm_scores(exit_distances(net, loader(data.val), cm), cm)
    val = val.relabel(val.pred[-1])                       # agreement with the full-cost clustering
    test = e2cm_scores(exit_distances(net, loader(data.test), cm), cm)
    mapping = hungarian_map(test.pred[-1], test.labels, data.num_classes)
    test = ExitScores(test.conf, mapping[test.pred], test.labels)
    macs = mac_table(net)
    costs = e2cm_costs(macs, cm) / macs.backbone_macs
    cloud = threshold_cloud(val, test, costs, n_thresholds, space, seed)
    return {"cloud": cloud, "exit_costs": costs.tolist(), "exit_accuracy": test.exit_accuracies(),
            "full_accuracy": test.exit_accuracies()[-1], "backbone_MMACs": macs.backbone_macs / 1e6}
