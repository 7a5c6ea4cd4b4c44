"""Backbones built as an ordered list of stages plus a final classifier.

Exit k of a multi-exit network reads the output of one stage, so the same stage list drives the
MAC table, the real early-exit forward and the offline evaluator. Every builder takes a width
multiplier, the number of classes, the input channels and the input size, and is registered by
name (``build_backbone(name, **cfg)``, ``list_backbones()``), in the style of torchvision.models.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .registry import Registry

__all__ = ["StagedBackbone", "BackboneInfo", "BACKBONES", "register_backbone", "build_backbone", "list_backbones",
           "backbone_info"]


class StagedBackbone(nn.Module):
    """Stages applied in order, then ``classifier`` on the last stage's output."""

    def __init__(self, stages: list[nn.Module], classifier: nn.Module, default_exits: list[int],
                 in_channels: int, image_size: int, num_classes: int):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.classifier = classifier
        self.default_exits = list(default_exits)
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_classes = num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.classifier(x)

    @torch.no_grad()
    def stage_shapes(self) -> list[tuple[int, ...]]:
        """Output shape (C, H, W) of every stage for one input, found by a dummy forward."""
        was_training = self.training
        self.eval()
        x = torch.zeros(1, *self.input_shape, dtype=next(self.parameters()).dtype)
        shapes = []
        for stage in self.stages:
            x = stage(x)
            shapes.append(tuple(x.shape[1:]))
        self.train(was_training)
        return shapes


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    builder: Callable[..., StagedBackbone]
    description: str
    output: str = "logits"   # what the final 'classifier' returns: class logits, or a "reconstruction"
    defaults: dict = field(default_factory=dict)


BACKBONES: Registry[BackboneInfo] = Registry("backbone")


def register_backbone(name: str, description: str, output: str = "logits", **defaults):
    """Register a builder returning a StagedBackbone (other modules may add their own)."""
    def wrap(fn):
        BACKBONES.add(name, BackboneInfo(name, fn, description, defaults=defaults, output=output))
        return fn
    return wrap


def list_backbones(output: str | None = "logits") -> list[str]:
    """Registered names; by default the classifiers (``output=None``: every backbone)."""
    return [n for n in BACKBONES.names() if output is None or BACKBONES.get(n).output == output]


def backbone_info(name: str) -> BackboneInfo:
    return BACKBONES.get(name)


def build_backbone(name: str, num_classes: int = 10, width: float = 1.0,
                   in_channels: int | None = None, image_size: int | None = None,
                   **options) -> StagedBackbone:
    """Build a registered backbone; ``width`` scales every channel count."""
    info = backbone_info(name)
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    cfg = dict(info.defaults)
    if in_channels is not None:
        cfg["in_channels"] = in_channels
    if image_size is not None:
        cfg["image_size"] = image_size
    unknown = set(options) - set(info.builder.__code__.co_varnames[:info.builder.__code__.co_argcount])
    if unknown:
        raise ValueError(f"backbone {name!r} has no option(s) {sorted(unknown)}")
    cfg.update(options)
    return info.builder(num_classes=num_classes, width=width, **cfg)


def _ch(channels: int, width: float) -> int:
    return max(4, int(round(channels * width)))


def _flat_dim(stages: list[nn.Module], head: nn.Module, in_channels: int, image_size: int) -> int:
    with torch.no_grad():
        x = torch.zeros(1, in_channels, image_size, image_size)
        for s in stages:
            s.eval()
            x = s(x)
        return head(x).flatten(1).shape[1]


def _conv_bn_relu(cin: int, cout: int, bn: bool = True, bias: bool = False) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=bias or not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return layers


# ---------------------------------------------------------------- VGG family
def _vgg_stages(cfg: list, width: float, in_channels: int, bn: bool) -> list[nn.Module]:
    """One stage per conv; a max-pool that follows a conv opens the next stage, so an exit
    after a conv sees it before pooling (as the class-exclusion code places exits)."""
    stages, pending_pool, cin = [], False, in_channels
    for item in cfg:
        if item == "M":
            pending_pool = True
            continue
        layers = [nn.MaxPool2d(2)] if pending_pool else []
        cout = _ch(item, width)
        layers += _conv_bn_relu(cin, cout, bn)
        stages.append(nn.Sequential(*layers))
        cin, pending_pool = cout, False
    return stages


@register_backbone("vgg_small", "VGGsmall of the class-exclusion paper: 6 convs 128-128-256-256-512-512, "
           "FC 1024-1024; exits after every conv", in_channels=3, image_size=32)
def vgg_small(num_classes: int, width: float, in_channels: int, image_size: int) -> StagedBackbone:
    stages = _vgg_stages([128, 128, "M", 256, 256, "M", 512, 512, "M"], width, in_channels, bn=True)
    pool = nn.MaxPool2d(2)
    flat = _flat_dim(stages, pool, in_channels, image_size)
    hidden = _ch(1024, width)
    classifier = nn.Sequential(
        pool, nn.Flatten(),
        nn.Linear(flat, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes))
    return StagedBackbone(stages, classifier, list(range(6)), in_channels, image_size, num_classes)


@register_backbone("vgg13", "VGG-13 for CIFAR (10 convs, optional BN), one stage per conv; exits after "
           "convs 1-9", in_channels=3, image_size=32, batch_norm=True)
def vgg13(num_classes: int, width: float, in_channels: int, image_size: int,
          batch_norm: bool) -> StagedBackbone:
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
    stages = _vgg_stages(cfg, width, in_channels, bn=batch_norm)
    pool = nn.Sequential(nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1))
    classifier = nn.Sequential(pool, nn.Flatten(), nn.Linear(_ch(512, width), num_classes))
    return StagedBackbone(stages, classifier, list(range(9)), in_channels, image_size, num_classes)


# ---------------------------------------------------------------- AlexNet family
@register_backbone("alexnet_cifar", "AlexNet-style CIFAR net: 5 convs 3x3 64-192-384-256-256, pooling "
           "after convs 2, 3 and 5, FC 2048-2048; exits after convs 1-4", in_channels=3, image_size=32)
def alexnet_cifar(num_classes: int, width: float, in_channels: int, image_size: int) -> StagedBackbone:
    c = [_ch(x, width) for x in (64, 192, 384, 256, 256)]
    stages = [
        nn.Sequential(*_conv_bn_relu(in_channels, c[0], bn=False)),
        nn.Sequential(*_conv_bn_relu(c[0], c[1], bn=False)),
        nn.Sequential(nn.MaxPool2d(2), *_conv_bn_relu(c[1], c[2], bn=False)),
        nn.Sequential(nn.MaxPool2d(2), *_conv_bn_relu(c[2], c[3], bn=False)),
        nn.Sequential(*_conv_bn_relu(c[3], c[4], bn=False)),
    ]
    pool = nn.MaxPool2d(2)
    flat = _flat_dim(stages, pool, in_channels, image_size)
    hidden = _ch(2048, width)
    classifier = nn.Sequential(pool, nn.Flatten(), nn.Dropout(0.5), nn.Linear(flat, hidden),
                               nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(hidden, hidden),
                               nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))
    return StagedBackbone(stages, classifier, [0, 1, 2, 3], in_channels, image_size, num_classes)


@register_backbone("alexnet", "ImageNet AlexNet topology (the class-exclusion paper's AlexNet on CIFAR "
           "resized to 224); exits after convs 1-5", in_channels=3, image_size=224)
def alexnet(num_classes: int, width: float, in_channels: int, image_size: int) -> StagedBackbone:
    c = [_ch(x, width) for x in (64, 192, 384, 256, 256)]
    relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
    stages = [
        nn.Sequential(nn.Conv2d(in_channels, c[0], 11, stride=4, padding=2), relu(), nn.MaxPool2d(3, 2)),
        nn.Sequential(nn.Conv2d(c[0], c[1], 5, padding=2), relu(), nn.MaxPool2d(3, 2)),
        nn.Sequential(nn.Conv2d(c[1], c[2], 3, padding=1), relu()),
        nn.Sequential(nn.Conv2d(c[2], c[3], 3, padding=1), relu()),
        nn.Sequential(nn.Conv2d(c[3], c[4], 3, padding=1), relu(), nn.MaxPool2d(3, 2),
                      nn.AdaptiveAvgPool2d(6)),
    ]
    hidden = _ch(4096, width)
    classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(c[4] * 36, hidden), relu(),
                               nn.Dropout(0.5), nn.Linear(hidden, _ch(1024, width)), relu(),
                               nn.Linear(_ch(1024, width), num_classes))
    return StagedBackbone(stages, classifier, [0, 1, 2, 3, 4], in_channels, image_size, num_classes)


# ---------------------------------------------------------------- ResNet family
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4."""

    def __init__(self, cin: int, planes: int, stride: int, expansion: int = 4):
        super().__init__()
        cout = planes * expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def _residual_stages(in_channels: int, width: float, stem: int, planes: tuple[int, ...],
                     blocks: tuple[int, ...], block: type, expansion: int) -> tuple[list[nn.Module], int]:
    """A 3x3 stem, then groups of residual blocks (stride 2 at the start of every group but the
    first), one stage per block. Returns the stages and the last stage's channels."""
    cin = _ch(stem, width)
    stages: list[nn.Module] = [nn.Sequential(*_conv_bn_relu(in_channels, cin))]
    for i, (p, n) in enumerate(zip(planes, blocks)):
        for j in range(n):
            stages.append(block(cin, _ch(p, width), 2 if (j == 0 and i > 0) else 1))
            cin = _ch(p, width) * expansion
    return stages, cin


def _gap_linear(cin: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


@register_backbone("resnet18_cifar", "ResNet-18 for CIFAR (3x3 stem, no max-pool, 8 basic blocks); one "
           "stage for the stem and one per block; exits after the stem and blocks 1-7",
           in_channels=3, image_size=32)
def resnet18_cifar(num_classes: int, width: float, in_channels: int, image_size: int) -> StagedBackbone:
    stages, cout = _residual_stages(in_channels, width, 64, (64, 128, 256, 512), (2, 2, 2, 2), BasicBlock, 1)
    return StagedBackbone(stages, _gap_linear(cout, num_classes), list(range(8)),
                          in_channels, image_size, num_classes)


@register_backbone("resnet50_cifar", "ResNet-50 for CIFAR (bottleneck blocks 3-4-6-3, 3x3 stem, no "
           "max-pool), one stage per block; exits after the stem, conv2_x, conv3_x and conv4_x",
           in_channels=3, image_size=32)
def resnet50_cifar(num_classes: int, width: float, in_channels: int, image_size: int) -> StagedBackbone:
    stages, cout = _residual_stages(in_channels, width, 64, (64, 128, 256, 512), (3, 4, 6, 3), Bottleneck, 4)
    # stage indices: 0 stem, 1-3 conv2_x, 4-7 conv3_x, 8-13 conv4_x, 14-16 conv5_x
    return StagedBackbone(stages, _gap_linear(cout, num_classes), [0, 3, 7, 13],
                          in_channels, image_size, num_classes)


# ---------------------------------------------------------------- MobileNetV3-style
class SqueezeExcite(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        hidden = max(8, channels // 4)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1),
                                  nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1), nn.Hardsigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, expand: int, cout: int, kernel: int, stride: int, se: bool, hs: bool):
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        layers: list[nn.Module] = []
        if expand != cin:
            layers += [nn.Conv2d(cin, expand, 1, bias=False), nn.BatchNorm2d(expand), act()]
        layers += [nn.Conv2d(expand, expand, kernel, stride, kernel // 2, groups=expand, bias=False),
                   nn.BatchNorm2d(expand), act()]
        if se:
            layers.append(SqueezeExcite(expand))
        layers += [nn.Conv2d(expand, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


@register_backbone("mobilenetv3_cifar", "MobileNetV3-Small-style net for 32x32 input (stride-1 stem, "
           "11 inverted-residual blocks with SE and hard-swish); one stage per block",
           in_channels=3, image_size=32)
def mobilenetv3_cifar(num_classes: int, width: float, in_channels: int, image_size: int) -> StagedBackbone:
    # (kernel, expand, out, SE, hard-swish, stride), MobileNetV3-Small with the first two
    # downsamplings removed so that a 32x32 image ends at 4x4 rather than 1x1.
    cfg = [(3, 16, 16, True, False, 1), (3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1),
           (5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
           (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1), (5, 288, 96, True, True, 2),
           (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1)]
    c0 = _ch(16, width)
    stages: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, c0, 3, 1, 1, bias=False),
                                             nn.BatchNorm2d(c0), nn.Hardswish())]
    cin = c0
    for k, e, o, se, hs, s in cfg:
        stages.append(InvertedResidual(cin, _ch(e, width), _ch(o, width), k, s, se, hs))
        cin = _ch(o, width)
    last, hidden = _ch(576, width), _ch(1024, width)
    classifier = nn.Sequential(nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.Hardswish(),
                               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(last, hidden),
                               nn.Hardswish(), nn.Dropout(0.2), nn.Linear(hidden, num_classes))
    return StagedBackbone(stages, classifier, list(range(len(stages))), in_channels, image_size, num_classes)


# ---------------------------------------------------------------- airbench-shaped net
class ConvPoolBlock(nn.Module):
    """conv -> max-pool -> BN -> GELU -> conv -> BN -> GELU, the block of fast CIFAR-10 recipes."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2),
            nn.BatchNorm2d(cout), nn.GELU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ScaledLinear(nn.Linear):
    """Linear layer whose output is multiplied by a fixed scale (a temperature on the logits)."""

    def __init__(self, cin: int, cout: int, scale: float):
        super().__init__(cin, cout, bias=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.scale


@register_backbone("airnet", "airbench-shaped CIFAR net: 3x3 stem then three conv-pool blocks "
           "64/256/256 (2M params at width 1); one stage for the stem and one per block",
           in_channels=3, image_size=32)
def airnet(num_classes: int, width: float, in_channels: int, image_size: int) -> StagedBackbone:
    c0, c1, c2, c3 = (_ch(c, width) for c in (32, 64, 256, 256))
    stages = [nn.Sequential(nn.Conv2d(in_channels, c0, 3, padding=1, bias=False), nn.BatchNorm2d(c0), nn.GELU()),
              ConvPoolBlock(c0, c1), ConvPoolBlock(c1, c2), ConvPoolBlock(c2, c3)]
    classifier = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), ScaledLinear(c3, num_classes, 1 / 9))
    return StagedBackbone(stages, classifier, [1, 2], in_channels, image_size, num_classes)


# ---------------------------------------------------------------- EENet's CIFAR backbones
@register_backbone("resnet56_bottleneck", "EENet's CIFAR-10 'ResNet56': bottleneck blocks 9-9-9, planes 16/32/64 "
           "(x4 expansion), 3x3 stem 3->16; one stage per group; exits after groups 1 and 2",
           in_channels=3, image_size=32)
def resnet56_bottleneck(num_classes: int, width: float, in_channels: int, image_size: int) -> StagedBackbone:
    blocks, cout = _residual_stages(in_channels, width, 16, (16, 32, 64), (9, 9, 9), Bottleneck, 4)
    stages = [nn.Sequential(*blocks[:10]), nn.Sequential(*blocks[10:19]), nn.Sequential(*blocks[19:])]
    return StagedBackbone(stages, _gap_linear(cout, num_classes), [0, 1], in_channels, image_size, num_classes)


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (4k) - BN-ReLU-conv3x3 (k), output concatenated to the input."""

    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, 4 * growth, 1, bias=False),
            nn.BatchNorm2d(4 * growth), nn.ReLU(inplace=True), nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.body(x)], 1)


@register_backbone("densenet_bc_cifar", "DenseNet-BC for CIFAR (blocks 6-12-24-16, growth 12, reduction 0.5, "
           "3x3 stem 3->24), EENet's CIFAR-100 backbone; one stage per dense block (with its transition); "
           "exits after transitions 1-3", in_channels=3, image_size=32)
def densenet_bc_cifar(num_classes: int, width: float, in_channels: int, image_size: int) -> StagedBackbone:
    growth = max(2, int(round(12 * width)))
    cin = 2 * growth
    stages: list[nn.Module] = []
    first: list[nn.Module] = [nn.Conv2d(in_channels, cin, 3, padding=1, bias=False)]
    for b, n_layers in enumerate((6, 12, 24, 16)):
        layers = first if b == 0 else []
        for _ in range(n_layers):
            layers.append(DenseLayer(cin, growth))
            cin += growth
        if b < 3:
            cout = cin // 2
            layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2)]
            cin = cout
        else:
            layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True)]
        stages.append(nn.Sequential(*layers))
    return StagedBackbone(stages, _gap_linear(cin, num_classes), [0, 1, 2], in_channels, image_size, num_classes)
