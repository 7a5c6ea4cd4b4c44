"""E2CM, early exit via class means: A. Görmez, V. R. Dasari, E. Koyuncu, "E2CM: Early exit via class
means for efficient supervised and unsupervised learning", IJCNN 2022 (arXiv 2103.01148). It gives an
already trained network early exits without any gradient training or change to its layers: one pass over
the training set stores, at every exit, each class's mean feature and mean training distance; at inference
a sample leaves at the first exit where the largest softmax of its negative normalised distances to the class
means exceeds (strictly) that exit's threshold, predicting the nearest class mean. The paper's section and
equation numbers could not be read; the rule, the normalisation and the random threshold search follow the
authors' code (github.com/alperengormez/class_means). Here: the fit (``fit_class_means`` into ``heads.ClassMeansHead``,
the fitting step "class_means" of an ordinary run, ``class_means_run``), the exit rule (``E2CMExit``,
``e2cm_policy``), the threshold search (``threshold_cloud``) and the paper's unsupervised variant
(autoencoder backbone "conv_autoencoder" with loss "reconstruction", k-means pseudo-labels whose means fill
the same heads, clustering accuracy under the Hungarian map: ``unsupervised_e2cm``). Notebook 02's
comparison with trained-head rivals is ``studies.e2cm``.

Use it on a network of your own: a ``MultiExitNet(backbone, exits, "class_means", feature="gap")`` around
your trained backbone, loaders yielding (images, labels)::

    load_class_means(net, fit_class_means(net, train_loader, num_classes, "gap"))
    rule = e2cm_policy(net, thresholds)                # one threshold per early exit
    val, test = collect_outputs(net, val_loader), collect_outputs(net, test_loader)
    result = evaluate_policy(test, rule, mac_table(net))            # offline, on cached outputs
    real = net.eval().early_exit(images, rule)                       # or the real early exit
    cloud = threshold_cloud(val, test, e2cm_policy(net), mac_table(net), n=2000)   # search thresholds
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import StagedBackbone, register_backbone
from ..data import Dataset, DataSpec, Split, TensorLoader
from ..device import autocast, bf16_supported
from ..evaluate import ThresholdSweep, exit_scores, random_thresholds, sweep_thresholds
from ..heads import ClassMeansHead, euclidean_distances, exit_feature
from ..losses import register_loss
from ..macs import mac_table
from ..multiexit import ExitOutputs, MultiExitNet
from ..outputs import CachedOutputs, collect_outputs
from ..policies import MaxProbability, PerExitThresholds
from ..train import FITS, FitSpec, LossSpec, ModelSpec, RunSpec, TrainConfig, train_cached

__all__ = ["ClassMeans", "fit_class_means", "load_class_means", "class_means_run", "E2CMExit", "e2cm_policy",
           "threshold_cloud", "hungarian_map", "clustering_accuracy", "conv_autoencoder", "ReconstructionLoss",
           "autoencoder_run", "unsupervised_e2cm"]


# ---------------------------------------------------------------- class means
@dataclass
class ClassMeans:
    """Per early exit j: class means [K, D_j] and normalisers [K], the mean distance of *all*
    training samples to each class mean (the authors' demo normalises this way)."""

    means: list[torch.Tensor]
    scale: list[torch.Tensor]
    feature: str
    fit_seconds: float = 0.0


@torch.no_grad()
def fit_class_means(net: MultiExitNet, loader: Iterable, num_classes: int, feature: str = "gap",
                    bf16: bool = False, channels_last: bool = False) -> ClassMeans:
    """Class means at every early exit of ``net`` (no gradients, no weight or batch-norm change) and
    the normalisers, in the precision (``bf16`` autocast where supported) and memory layout the
    rivals train in, so that its ``fit_seconds`` (E2CM's whole 'training' time) is measured as theirs.
    One pass over the training set: pooled features are kept and the normalisers are computed from
    them; flattened maps are too large to keep and take a second pass."""
    t0 = time.perf_counter()
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    use_bf16 = bf16 and bf16_supported(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)

    def features(x: torch.Tensor) -> list[torch.Tensor]:
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, use_bf16):
            return [exit_feature(h, feature) for h in net.exit_features(x)[:-1]]

    keep = feature == "gap"
    sums, counts, kept = None, None, []
    for x, y in loader:
        fs = features(x)
        if sums is None:  # on the device the features are on
            sums = [torch.zeros(num_classes, f.shape[1], dtype=torch.float64, device=f.device) for f in fs]
            counts = torch.zeros(num_classes, dtype=torch.float64, device=y.device)
        for s, f in zip(sums, fs):
            s.index_add_(0, y, f.double())
        counts += torch.bincount(y, minlength=num_classes).double()
        if keep:
            kept.append(fs)
    if (counts == 0).any():
        raise ValueError(f"classes {torch.nonzero(counts == 0).flatten().tolist()} have no training samples")
    means = [(s / counts[:, None].to(s.device)).float() for s in sums]
    total = [torch.zeros(num_classes, dtype=torch.float64, device=m.device) for m in means]
    n = 0
    for fs in (kept if keep else (features(x) for x, _ in loader)):
        for t, f, m in zip(total, fs, means):
            t += euclidean_distances(f, m).double().sum(0)
        n += len(fs[0])
    if channels_last:
        net.to(memory_format=torch.contiguous_format)
    net.train(was_training)
    return ClassMeans([m.cpu() for m in means], [(t / n).float().cpu() for t in total], feature,
                      time.perf_counter() - t0)


def load_class_means(net: MultiExitNet, cm: ClassMeans) -> None:
    """Write fitted means and normalisers into the class-means heads of ``net``."""
    heads = [h for h in net.heads if isinstance(h, ClassMeansHead)]
    if len(heads) != len(net.heads) or len(heads) != len(cm.means):
        raise ValueError(f"need {len(cm.means)} class-means heads, the net has {len(heads)} of {len(net.heads)}")
    for head, m, s in zip(heads, cm.means, cm.scale):
        if head.feature != cm.feature:
            raise ValueError(f"head compares {head.feature!r} features, the means are of {cm.feature!r}")
        head.means.copy_(m)
        head.scale.copy_(s)


@FITS.register("class_means")
def _class_means_step(net: MultiExitNet, data: Dataset, augment: bool = True, seed: int = 0,
                      batch_size: int = 500, bf16: bool = False, channels_last: bool = False,
                      device: torch.device | str = "cpu") -> None:
    """The fitting step of an E2CM run: class means of the training set (augmented as in the
    authors' code when ``augment``), written into the net's class-means heads."""
    loader = TensorLoader(data.train, data.mean, data.std, batch_size, crop_pad=2 if augment else 0, flip=augment,
                          seed=seed, channels_last=channels_last, device=device)
    feature = net.heads[0].feature if len(net.heads) else "gap"
    load_class_means(net, fit_class_means(net, loader, data.num_classes, feature, bf16, channels_last))


def class_means_run(parent: RunSpec, feature: str = "gap", augment: bool = True, name: str | None = None,
                    exit_after: tuple[int, ...] | None = None) -> RunSpec:
    """The E2CM network of a trained run: its backbone, class-means heads at its exits (or at
    ``exit_after``, for a parent trained without exits), no training. The fit runs in the parent's
    precision and memory layout (those its trained-head rivals use)."""
    exits = parent.model.exit_after if exit_after is None else tuple(exit_after)
    t = parent.train
    return RunSpec(name or f"{parent.name}_e2cm",
                   replace(parent.model, exit_after=exits, head="class_means", head_options={"feature": feature}),
                   parent.data, parent.loss, TrainConfig(epochs=0, seed=t.seed), init_from=parent,
                   fit=FitSpec("class_means", {"augment": augment, "seed": t.seed, "bf16": t.bf16,
                                               "channels_last": t.channels_last}))


# ---------------------------------------------------------------- the exit rule
@dataclass(frozen=True)
class E2CMExit(PerExitThresholds):
    """Leave at the first exit where max softmax(-d / s) is strictly greater than its threshold (the
    authors' comparison, ``max p > t``; the paper's text available here does not spell it out). The
    prediction is the nearest class mean (argmin of the raw distance, the authors' code;
    ``nearest_scales`` holds each exit's normalisers to undo the normalisation) or, with
    ``nearest_scales=None``, the argmax of the normalised scores. The final exit is the backbone's own
    classifier."""

    nearest_scales: tuple[tuple[float, ...], ...] | None = None

    def cut(self, thresholds: torch.Tensor) -> torch.Tensor:
        # every sweep and the real forward fire on ``confidence >= cut``; the confidence is float32, so
        # the next float32 above t turns that into ``confidence > t`` exactly
        t = thresholds.float()
        return torch.nextafter(t, torch.full_like(t, float("inf")))

    def threshold_of(self, cuts: torch.Tensor) -> torch.Tensor:
        c = cuts.float()
        return torch.where(torch.isinf(c), c, torch.nextafter(c, torch.full_like(c, float("-inf"))))

    def confidence(self, k, logits, gate):
        return torch.softmax(logits.float(), dim=1).max(1).values

    def prediction(self, k, logits):
        if self.nearest_scales is None or k >= len(self.nearest_scales):
            return logits.argmax(1)
        scales = torch.tensor(self.nearest_scales[k], dtype=logits.dtype, device=logits.device)
        return (logits * scales).argmax(1)


def e2cm_policy(net: MultiExitNet, thresholds: Sequence[float] | None = None, prediction: str = "nearest") -> E2CMExit:
    """The E2CM rule for a net with class-means heads (thresholds default to 'never exit')."""
    if prediction not in ("nearest", "normalised"):
        raise ValueError(f"prediction must be 'nearest' or 'normalised', got {prediction!r}")
    thresholds = thresholds if thresholds is not None else [float("inf")] * len(net.heads)
    scales = tuple(tuple(h.scale.tolist()) for h in net.heads) if prediction == "nearest" else None
    return E2CMExit(tuple(thresholds), scales)


def threshold_cloud(search: CachedOutputs, test: CachedOutputs, rule: PerExitThresholds, macs, n: int,
                    space: str = "quantile", seed: int = 0, search_labels: torch.Tensor | None = None,
                    test_labels: torch.Tensor | None = None) -> ThresholdSweep:
    """The authors' search: ``n`` random per-exit threshold vectors drawn on the search split,
    evaluated there and on test; the hull of the search split gives the operating points. Trained
    heads use the same search with ``MaxProbability``."""
    if not isinstance(rule, (E2CMExit, MaxProbability)):
        raise ValueError("the random cloud draws thresholds on the confidence itself: use E2CMExit or MaxProbability")
    t = random_thresholds(n, exit_scores(search, rule).confidence, space, seed)
    return sweep_thresholds(search, test, rule, t, macs, search_labels, test_labels)


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


@register_backbone("conv_autoencoder", "Small convolutional autoencoder for deep clustering (E2CM's "
                   "unsupervised variant): a stride-1 stem, one stride-2 conv block per entry of channels; "
                   "its classifier is embedding + decoder, so the final output is the reconstruction.",
                   output="reconstruction", in_channels=1, image_size=28)
def conv_autoencoder(num_classes: int = 10, width: float = 1.0, in_channels: int = 1, image_size: int = 28,
                     channels: tuple[int, ...] = (16, 32, 64), embed: int = 10) -> StagedBackbone:
    channels = [max(1, int(round(c * width))) for c in channels]
    stem = max(4, channels[0] // 4)   # a thin full-resolution stem keeps the first exits cheap
    stages: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, stem, 3, padding=1), nn.ReLU(inplace=True))]
    cin = stem
    for c in channels:
        stages.append(nn.Sequential(nn.Conv2d(cin, c, 3, stride=2, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)))
        cin = c
    side = image_size
    for _ in channels:
        side = (side + 1) // 2
    pad = (2 ** len(channels) * side - image_size) // 2
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, embed),
                               _Decoder(channels, embed, in_channels, side), nn.ZeroPad2d(-pad) if pad else nn.Identity())
    return StagedBackbone(stages, classifier, list(range(len(stages) - 1)), in_channels, image_size, num_classes)


@register_loss("reconstruction")
class ReconstructionLoss:
    """Mean squared error between the final output and the (normalised) input image."""

    target = "inputs"

    def __init__(self, num_exits: int):
        pass

    def __call__(self, outputs: ExitOutputs, inputs: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs.logits[-1].float(), inputs.float())


def autoencoder_run(data_name: str, seed: int, epochs: int, channels: Sequence[int], val_size: int,
                    train_size: int | None = None, test_size: int | None = None) -> RunSpec:
    """The unsupervised variant's autoencoder as an ordinary run (Adam 1e-3, no augmentation)."""
    return RunSpec(f"e2cm_ae_{data_name}_s{seed}",
                   ModelSpec("conv_autoencoder", 1.0, (), backbone_options={"channels": tuple(channels)}),
                   DataSpec(data_name, val_size=val_size, train_size=train_size, test_size=test_size, seed=0),
                   LossSpec("reconstruction"),
                   TrainConfig(epochs=epochs, batch_size=128, optimizer="adam", lr=1e-3, weight_decay=0.0,
                               schedule="constant", crop_pad=0, flip=False, seed=seed))


class _CentroidLogits(nn.Module):
    """Negative squared distances to the k-means centroids: argmax = the nearest centroid."""

    def __init__(self, centroids: torch.Tensor):
        super().__init__()
        self.register_buffer("centroids", centroids)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return -euclidean_distances(z.float(), self.centroids) ** 2


@torch.no_grad()
def _clustered(encoder: StagedBackbone, loader: Iterable, k: int, seed: int) -> StagedBackbone:
    """The encoder with 'nearest k-means centroid of the embedding' as its classifier."""
    from sklearn.cluster import KMeans
    out = copy.deepcopy(encoder).eval()
    out.classifier = out.classifier[:2]            # flatten + embedding, without the decoder
    z = torch.cat([out(x) for x, _ in loader]).numpy().astype(np.float64)
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(z)
    out.classifier = nn.Sequential(*out.classifier, _CentroidLogits(torch.tensor(km.cluster_centers_, dtype=torch.float32)))
    return out


def unsupervised_e2cm(spec: RunSpec, feature: str, n_thresholds: int, space: str = "quantile") -> dict:
    """The whole unsupervised pipeline for one autoencoder run (our reading of the paper):
    autoencoder (no labels) -> k-means on the final embedding -> cluster means of the k-means
    pseudo-labels at the encoder's exits -> E2CM early exit. Thresholds are searched on validation
    against the full-cost clustering (still no labels); test predictions are scored by clustering
    accuracy under the Hungarian map of the full-cost test clustering."""
    run = train_cached(spec, progress=False)
    data, seed = run.data, spec.train.seed
    loader = lambda split: TensorLoader(split, data.mean, data.std, 1000)  # noqa: E731
    clustered = _clustered(run.net.backbone, loader(data.train), data.num_classes, seed)
    # exits after the stride-2 blocks only: at the full-resolution stem the distances to flattened
    # means would cost more than the convolution itself
    net = MultiExitNet(clustered, clustered.default_exits[1:], "class_means", feature=feature).eval()
    with torch.no_grad():
        pseudo = torch.cat([clustered(x).argmax(1) for x, _ in loader(data.train)])
    load_class_means(net, fit_class_means(net, loader(Split(data.train.images, pseudo)), data.num_classes, feature))
    val, test = collect_outputs(net, loader(data.val)), collect_outputs(net, loader(data.test))
    rule = e2cm_policy(net)
    full_test = test.logits[-1].argmax(1)
    inverse = torch.argsort(hungarian_map(full_test, test.labels, data.num_classes))
    test_labels = inverse[test.labels]            # mapping[pred] == y  <=>  pred == inverse[y]
    macs = mac_table(net)
    cloud = threshold_cloud(val, test, rule, macs, n_thresholds, space, seed,
                            search_labels=val.logits[-1].argmax(1), test_labels=test_labels)
    exit_accuracy = exit_scores(test, rule, test_labels).exit_accuracies()
    return {"cloud": cloud, "exit_costs": macs.exit_fractions, "exit_accuracy": exit_accuracy,
            "full_accuracy": exit_accuracy[-1], "backbone_MMACs": macs.backbone_macs / 1e6,
            "autoencoder": spec.key, "autoencoder_epochs": run.epochs_trained,
            "autoencoder_loss": [h["loss"] for h in run.history if h.get("epoch", 0) > 0],
            "reads": {"thresholds drawn on": "val", "chosen on": "val (full-cost clusters as labels)",
                      "reported on": "test"}}
