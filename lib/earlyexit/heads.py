"""Exit heads: small classifiers attached to a stage's output.

- ``linear``: adaptive average pool to e x e, flatten, one Linear (the class-exclusion and SDN-style
  head; e = 1 is global average pooling).
- ``conv``: a BranchyNet-style head, conv3x3 -> BN -> ReLU -> pool to e x e -> Linear.
- ``gated``: the features of ``linear`` or ``conv`` feeding two outputs, class logits and one gate
  logit (sigmoid gives the probability of exiting), as in differentiable branching.
- ``class_means``: E2CM (Görmez et al., IJCNN 2022): no weights, only buffers filled by fitting
  (``e2cm.fit_class_means``): per class, the mean feature and the mean training distance to it. The
  logits are the negative normalised distances, so softmax(logits) is E2CM's pseudo-probability.
- ``class_means_linear``: the E2CM+SDN head: a linear classifier on the pooled feature
  concatenated with those normalised distances (the combination is our reading of the paper).

Every head is built from the shape (C, H, W) of the stage output it reads and returns
``(logits, gate_logit_or_None)``, so the multi-exit network treats them alike.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ExitHead", "LinearHead", "ConvHead", "GatedHead", "ClassMeansHead", "ClassMeansLinearHead", "FEATURE_MODES",
           "exit_feature", "euclidean_distances", "build_head", "HEAD_KINDS"]

# Feature columns per float64 block of ``euclidean_distances``: small enough to stay in cache.
_DISTANCE_BLOCK = 8192


def euclidean_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Float32 distances between the rows of ``x`` (N x D) and of ``y`` (K x D).

    Accumulated in float64 as |x|^2 + |y|^2 - 2 x.y over blocks of columns: a matrix product, so it
    is fast even for flattened feature maps (D ~ 10^5: 10x faster than torch.cdist's direct mode),
    and its float64 rounding (~1e-16 relative) sits far below float32's, so a row's distance does not
    depend on the batch it is computed in (real early exit == cached outputs)."""
    x, y = x.flatten(1), y.flatten(1)
    d2 = torch.zeros(len(x), len(y), dtype=torch.float64, device=x.device)
    for j in range(0, x.shape[1], _DISTANCE_BLOCK):
        a, b = x[:, j:j + _DISTANCE_BLOCK].double(), y[:, j:j + _DISTANCE_BLOCK].double()
        d2 += a.square().sum(1, keepdim=True) + b.square().sum(1) - 2 * (a @ b.T)
    return d2.clamp_min_(0).sqrt_().float()


class ExitHead(nn.Module):
    """Features -> class logits (and optionally a gate logit)."""

    has_gate = False

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.features = features
        self.fc = nn.Linear(feature_dim, num_classes)

    def fc_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the final Linear reads: with parameter-free features (pooling), a fixed function of the
        frozen backbone's output, so ``head_inputs`` can compute it once for head-only training."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.fc(self.fc_input(x)), None


class _GlobalAvgPoolFunction(torch.autograd.Function):
    """Global average pooling for training on a channels_last trunk. ``mean``'s backward writes the
    gradient out as a dense NCHW map, which autograd then adds slowly to the trunk's channels_last
    gradient; here the backward hands back a broadcast view (as ``sum``'s does), so the add is cheap.
    A bf16 map is averaged by ``avg_pool2d``: ``mean`` widens bf16 to float32 element by element on
    the CPU, 25 times slower on a 32 x 32 map. Together they cut the training step of VGG-13 x0.5 with
    nine linear exits from 1.30 to 1.03 times the plain network's (batch 256, bf16, 2 threads, AMD EPYC)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        if x.dtype in (torch.bfloat16, torch.float16):
            return F.avg_pool2d(x, x.shape[2:]).flatten(1)
        return x.mean((2, 3))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        n, c, h, w = ctx.shape
        return (grad / (h * w))[:, :, None, None].expand(n, c, h, w)


class GlobalAvgPool(nn.Module):
    """Mean over height and width, flattened: [N, C, H, W] -> [N, C]. In float32 the same numbers as
    AdaptiveAvgPool2d(1) + Flatten in one reduction, two to three times faster at batch 1 (it runs
    once per exit head on the real early-exit path); see ``_GlobalAvgPoolFunction`` for training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _GlobalAvgPoolFunction.apply(x)


def _pool(pool: int) -> nn.Module:
    return GlobalAvgPool() if pool == 1 else nn.Sequential(nn.AdaptiveAvgPool2d(pool), nn.Flatten())


def _pooled(channels: int, pool: int) -> tuple[nn.Module, int]:
    return _pool(pool), channels * pool * pool


def _conv_pooled(channels: int, width: int, pool: int) -> tuple[nn.Module, int]:
    body = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                         nn.ReLU(inplace=True), _pool(pool))
    return body, width * pool * pool


class LinearHead(ExitHead):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, pool: int = 1):
        super().__init__(*_pooled(in_shape[0], pool), num_classes)


class ConvHead(ExitHead):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, width: int = 64, pool: int = 2):
        super().__init__(*_conv_pooled(in_shape[0], width, pool), num_classes)


class GatedHead(ExitHead):
    """Class logits plus a scalar gate logit computed from the same features. ``gate_bias``: None keeps
    PyTorch's default initialisation of the gate (a logit near 0, so every gate starts near 0.5); a
    number starts the gate's weight at 0 and its bias at that number, so every input starts with the
    same gate, sigmoid(gate_bias) (differentiable branching's initial mixture is then set by it)."""

    has_gate = True

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, features: str = "conv", width: int = 64,
                 pool: int = 2, gate_bias: float | None = None):
        channels = in_shape[0]
        if features == "conv":
            body, dim = _conv_pooled(channels, width, pool)
        elif features == "linear":
            body, dim = _pooled(channels, pool)
        else:
            raise ValueError(f"gated head features must be 'conv' or 'linear', got {features!r}")
        super().__init__(body, dim, num_classes)
        self.gate = nn.Linear(dim, 1)
        if gate_bias is not None:
            nn.init.zeros_(self.gate.weight)
            nn.init.constant_(self.gate.bias, float(gate_bias))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.fc_input(x)
        return self.fc(h), self.gate(h).squeeze(1)


FEATURE_MODES = ("gap", "flatten")


def exit_feature(h: torch.Tensor, mode: str = "gap") -> torch.Tensor:
    """The vector compared with class means: global-average-pooled (cheap; the only sane choice for
    large maps) or the flattened map (what the E2CM authors' code compares)."""
    if mode not in FEATURE_MODES:
        raise ValueError(f"feature mode must be one of {FEATURE_MODES}, got {mode!r}")
    h = h.float()
    if h.ndim == 2:
        return h
    return h.mean((2, 3)) if mode == "gap" else h.flatten(1)


def _feature_dim(in_shape: tuple[int, ...], mode: str) -> int:
    return in_shape[0] if mode == "gap" or len(in_shape) == 1 else in_shape[0] * in_shape[1] * in_shape[2]


class ClassMeansHead(nn.Module):
    """E2CM's exit: logits_k = -||f - mu_k|| / s_k, f the exit feature, mu_k the mean feature of class
    k and s_k the mean distance of all training samples to mu_k. Buffers only; ``e2cm.fit_class_means``
    fills them. Distances come from ``euclidean_distances`` (float64 accumulation), so a row's value
    does not depend on the batch it is in and the real early exit agrees with cached outputs."""

    has_gate = False

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, feature: str = "gap"):
        super().__init__()
        dim = _feature_dim(in_shape, feature)
        exit_feature(torch.zeros(1, dim), feature)  # validates the mode
        self.feature = feature
        self.register_buffer("means", torch.zeros(num_classes, dim))
        self.register_buffer("scale", torch.ones(num_classes))

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        return -euclidean_distances(exit_feature(h, self.feature), self.means) / self.scale

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.scores(h), None

    def distance_macs(self) -> float:
        """The E2CM paper counts K(3D-1) FLOPs per exit (D subtractions, D squares, D-1 additions per
        class); as MACs that is K(3D-1)/2. Softmax and normalisation are not counted."""
        k, d = self.means.shape
        return k * (3 * d - 1) / 2

    @staticmethod
    def count_macs(module: "ClassMeansHead", inputs, output) -> None:
        module.total_ops += torch.DoubleTensor([len(inputs[0]) * module.distance_macs()])


class ClassMeansLinearHead(ClassMeansHead):
    """E2CM+SDN: a linear classifier on [pooled feature, normalised distances to the class means].
    It reads the pooled feature even when the distances use flattened maps, so its input stays small."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int, feature: str = "gap"):
        super().__init__(in_shape, num_classes, feature)
        self.fc = nn.Linear(in_shape[0] + num_classes, num_classes)

    def fc_input(self, h: torch.Tensor) -> torch.Tensor:
        """[pooled feature, normalised distances]: fixed once the class means are fitted."""
        return torch.cat([exit_feature(h, "gap"), -self.scores(h)], 1)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.fc(self.fc_input(h)), None

    @staticmethod
    def count_macs(module: "ClassMeansLinearHead", inputs, output) -> None:
        per_row = module.distance_macs() + module.fc.in_features * module.fc.out_features
        module.total_ops += torch.DoubleTensor([len(inputs[0]) * per_row])


HEAD_KINDS = {"linear": LinearHead, "conv": ConvHead, "gated": GatedHead, "class_means": ClassMeansHead,
              "class_means_linear": ClassMeansLinearHead}


def build_head(kind: str, in_shape: tuple[int, ...], num_classes: int, **options) -> nn.Module:
    """A head of ``kind`` reading a stage output of shape ``in_shape`` (C, H, W)."""
    if kind not in HEAD_KINDS:
        raise ValueError(f"unknown head kind {kind!r}; known: {', '.join(HEAD_KINDS)}")
    return HEAD_KINDS[kind](tuple(in_shape), num_classes, **options)
