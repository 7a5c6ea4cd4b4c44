"""MultiExitNet: a staged backbone with exit heads after chosen stages.

Exit k (k < K-1) is head k applied to the output of stage ``exit_after[k]``; the last exit is the
backbone's own classifier. ``forward`` computes every exit (for training and for caching outputs);
``early_exit`` is the real inference path, which runs stage by stage and drops the rows a policy
lets go, so a sample that exits early costs only the stages and heads it went through.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .backbones import StagedBackbone
from .heads import build_head
from .policies import ExitPolicy, run_exit_policy

__all__ = ["MultiExitNet", "ExitOutputs", "EarlyExitResult"]


@dataclass
class ExitOutputs:
    """Per-exit logits [B, C] and gate logits [B] (None for heads without a gate)."""

    logits: list[torch.Tensor]
    gates: list[torch.Tensor | None]

    @property
    def has_gates(self) -> bool:
        return any(g is not None for g in self.gates)


@dataclass
class EarlyExitResult:
    prediction: torch.Tensor   # [B] predicted class
    exit_index: torch.Tensor   # [B] exit taken, 0-based, K-1 is the final classifier
    macs: torch.Tensor         # [B] MACs spent on each sample (conv + linear, see macs.py)


class MultiExitNet(nn.Module):
    def __init__(self, backbone: StagedBackbone, exit_after: Sequence[int] | None = None,
                 head: str = "linear", **head_options):
        super().__init__()
        exits = list(backbone.default_exits if exit_after is None else exit_after)
        n_stages = len(backbone.stages)
        if sorted(set(exits)) != exits or any(not 0 <= e < n_stages for e in exits):
            raise ValueError(f"exit_after must be increasing stage indices in [0, {n_stages - 1}], got {exits}")
        self.backbone = backbone
        self.exit_after = exits
        self.head_kind = head
        shapes = backbone.stage_shapes()
        self.heads = nn.ModuleList(
            build_head(head, shapes[e], backbone.num_classes, **head_options) for e in exits)

    @property
    def num_exits(self) -> int:
        return len(self.exit_after) + 1

    @property
    def num_classes(self) -> int:
        return self.backbone.num_classes

    def _exit_stage(self, k: int) -> int:
        return self.exit_after[k] if k < len(self.exit_after) else len(self.backbone.stages) - 1

    def _head_output(self, k: int, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if k < len(self.heads):
            return self.heads[k](h)
        return self.backbone.classifier(h), None

    def forward(self, x: torch.Tensor) -> ExitOutputs:
        logits, gates = [], []
        stage_done = -1
        for k in range(self.num_exits):
            for s in range(stage_done + 1, self._exit_stage(k) + 1):
                x = self.backbone.stages[s](x)
            stage_done = self._exit_stage(k)
            out, gate = self._head_output(k, x)
            logits.append(out)
            gates.append(gate)
        return ExitOutputs(logits, gates)

    def exit_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stage outputs that each exit reads (the last one feeds the classifier)."""
        feats, stage_done = [], -1
        for k in range(self.num_exits):
            for s in range(stage_done + 1, self._exit_stage(k) + 1):
                x = self.backbone.stages[s](x)
            stage_done = self._exit_stage(k)
            feats.append(x)
        return feats

    @torch.no_grad()
    def early_exit(self, x: torch.Tensor, policy: ExitPolicy,
                   exit_costs: Sequence[float] | torch.Tensor | None = None) -> EarlyExitResult:
        """Real early-exit inference on a batch: rows leave the batch as soon as they exit."""
        if self.training:
            raise RuntimeError("call net.eval() before early_exit: batch-norm must use running statistics")
        if exit_costs is None:
            from .macs import mac_table
            exit_costs = mac_table(self).exit_macs
        costs = torch.as_tensor(list(exit_costs), dtype=torch.float64)
        progress = {"h": x, "stage_done": -1}

        def outputs_at(k, active, keep):
            h = progress["h"][keep]
            for s in range(progress["stage_done"] + 1, self._exit_stage(k) + 1):
                h = self.backbone.stages[s](h)
            progress["h"], progress["stage_done"] = h, self._exit_stage(k)
            return self._head_output(k, h)

        prediction, exit_index = run_exit_policy(policy, self.num_exits, len(x), outputs_at)
        return EarlyExitResult(prediction, exit_index, costs[exit_index])
