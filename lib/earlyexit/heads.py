"""Exit heads: small classifiers attached to a stage's output.

- ``linear``: adaptive average pool to e x e, flatten, one Linear (the class-exclusion and SDN-style
  head; e = 1 is global average pooling).
- ``conv``: a BranchyNet-style head, conv3x3 -> BN -> ReLU -> pool to e x e -> Linear.
- ``gated``: the features of ``linear`` or ``conv`` feeding two outputs, class logits and one gate
  logit (sigmoid gives the probability of exiting), as in differentiable branching.

Every head returns ``(logits, gate_logit_or_None)`` so the multi-exit network treats them alike.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["ExitHead", "LinearHead", "ConvHead", "GatedHead", "build_head", "HEAD_KINDS"]


class ExitHead(nn.Module):
    """Features -> class logits (and optionally a gate logit)."""

    has_gate = False

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.features = features
        self.fc = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.fc(self.features(x)), None


def _pooled(channels: int, pool: int) -> tuple[nn.Module, int]:
    return nn.Sequential(nn.AdaptiveAvgPool2d(pool), nn.Flatten()), channels * pool * pool


def _conv_pooled(channels: int, width: int, pool: int) -> tuple[nn.Module, int]:
    body = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                         nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(pool), nn.Flatten())
    return body, width * pool * pool


class LinearHead(ExitHead):
    def __init__(self, channels: int, num_classes: int, pool: int = 1):
        super().__init__(*_pooled(channels, pool), num_classes)


class ConvHead(ExitHead):
    def __init__(self, channels: int, num_classes: int, width: int = 64, pool: int = 2):
        super().__init__(*_conv_pooled(channels, width, pool), num_classes)


class GatedHead(ExitHead):
    """Class logits plus a scalar gate logit computed from the same features."""

    has_gate = True

    def __init__(self, channels: int, num_classes: int, features: str = "conv", width: int = 64,
                 pool: int = 2):
        if features == "conv":
            body, dim = _conv_pooled(channels, width, pool)
        elif features == "linear":
            body, dim = _pooled(channels, pool)
        else:
            raise ValueError(f"gated head features must be 'conv' or 'linear', got {features!r}")
        super().__init__(body, dim, num_classes)
        self.gate = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return self.fc(h), self.gate(h).squeeze(1)


HEAD_KINDS = {"linear": LinearHead, "conv": ConvHead, "gated": GatedHead}


def build_head(kind: str, channels: int, num_classes: int, **options) -> ExitHead:
    if kind not in HEAD_KINDS:
        raise ValueError(f"unknown head kind {kind!r}; known: {', '.join(HEAD_KINDS)}")
    return HEAD_KINDS[kind](channels, num_classes, **options)
