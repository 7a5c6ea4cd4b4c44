"""Losses over all exits of a multi-exit network, built by name so a training run can be cached
by its configuration. A loss is called as ``loss(outputs: ExitOutputs, targets) -> scalar``.

Other modules add their own losses with ``register_loss`` (class exclusion, soft-conditional,
E2CM's autoencoder reconstruction); ``registry`` finds them whatever was imported first. A loss whose
``target`` attribute is "inputs" is given the input batch instead of the labels.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .multiexit import ExitOutputs
from .registry import Registry

__all__ = ["LOSSES", "register_loss", "build_loss", "list_losses", "loss_target", "exit_weights", "WeightedCE"]

LossFn = Callable[[ExitOutputs, torch.Tensor], torch.Tensor]
LOSSES: Registry[Callable[..., LossFn]] = Registry("loss")
register_loss = LOSSES.register


def list_losses() -> list[str]:
    return LOSSES.names()


def build_loss(name: str, num_exits: int, **options) -> LossFn:
    """``options`` are the loss's own keyword arguments; ``num_exits`` is passed to every factory."""
    return LOSSES.get(name)(num_exits=num_exits, **options)


def loss_target(loss: LossFn) -> str:
    """What the loss compares the outputs with: "labels" (classification) or "inputs" (reconstruction)."""
    return getattr(loss, "target", "labels")


def exit_weights(scheme: str | Sequence[float], num_exits: int) -> torch.Tensor:
    """Per-exit weights: 'uniform', 'depth' (k/K, as EENet and SDN-style training use),
    'half_final' (the final classifier carries half of the loss, the early exits share the other half
    equally, so adding exits does not dilute the final classifier's training), 'final' (the plain
    backbone), or an explicit list."""
    if isinstance(scheme, str):
        k = torch.arange(1, num_exits + 1, dtype=torch.float32)
        early = torch.full((num_exits,), 1.0 / max(num_exits - 1, 1))
        early[-1] = 1.0
        table = {"uniform": torch.ones(num_exits), "depth": k / num_exits, "half_final": early,
                 "final": (k == num_exits).float()}
        if scheme not in table:
            raise ValueError(f"unknown weight scheme {scheme!r}; use uniform, depth, half_final, final or a list")
        return table[scheme]
    w = torch.tensor([float(v) for v in scheme])
    if len(w) != num_exits:
        raise ValueError(f"{len(w)} exit weights given for {num_exits} exits")
    return w


@register_loss("weighted_ce")
class WeightedCE:
    """sum_k w_k CE(exit k) / sum_k w_k, with optional label smoothing (BranchyNet, SDN, EENet)."""

    def __init__(self, num_exits: int, weights: str | Sequence[float] = "uniform", label_smoothing: float = 0.0):
        self.weights = exit_weights(weights, num_exits)
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing

    def __call__(self, outputs: ExitOutputs, targets: torch.Tensor) -> torch.Tensor:
        total = sum(w * F.cross_entropy(z.float(), targets, label_smoothing=self.label_smoothing)
                    for w, z in zip(self.weights.tolist(), outputs.logits) if w)
        return total / self.weights.sum()
