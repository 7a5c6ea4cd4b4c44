"""Multiply-accumulate (MAC) counts per stage, per head and per exit.

Convention: MACs of convolution and linear layers only (weights x outputs; biases, batch-norm,
activations, pooling and element-wise products count zero), counted by thop at batch size 1 on a
deep copy of the module. This equals torch.utils.flop_counter.FlopCounterMode / 2 (a test checks it).
Exiting at k costs every stage up to the one exit k reads, plus every head evaluated so far (heads
0..k; the last exit's "head" is the backbone's classifier). Fractions are relative to the plain
backbone (all stages plus the classifier, no exit heads), so a network with heads can exceed 1.

``mac_table(net)`` profiles a network once: the table is kept on the network (keyed by its
structure: exits and every parameter's and buffer's shape) and its exit costs are stored as
``net.exit_costs``, which the real early-exit forward reads. Inference never profiles.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from thop import profile
from thop.vision.basic_hooks import count_convNd, count_linear, zero_ops

from .multiexit import MultiExitNet

__all__ = ["count_macs", "MacTable", "mac_table"]


def _rules(module: nn.Module) -> dict:
    """thop looks rules up by exact type and stops descending at a module that has one, so only
    leaf module types get a rule (conv, linear, zero for everything else), except a module type with
    its own ``count_macs(module, inputs, output)``: a head whose arithmetic is not only conv and
    linear layers (E2CM's distances to class means) counts itself, children included."""
    rules = {}
    for m in module.modules():
        if hasattr(type(m), "count_macs"):
            rules[type(m)] = type(m).count_macs
        elif any(True for _ in m.children()):
            continue
        elif isinstance(m, nn.modules.conv._ConvNd):
            rules[type(m)] = count_convNd
        elif isinstance(m, nn.Linear):
            rules[type(m)] = count_linear
        else:
            rules[type(m)] = zero_ops
    return rules


def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Conv + linear MACs of ``module`` for one input of shape ``input_shape`` (no batch dim)."""
    clone = copy.deepcopy(module).float().eval()
    x = torch.zeros(1, *input_shape)
    # wrapped, so that thop treats a module with its own rule alike as the root and as a child (at the
    # root it would add the children's counts to the rule's)
    macs, _ = profile(nn.Sequential(clone), inputs=(x,), custom_ops=_rules(clone), verbose=False)
    return int(round(macs))


@dataclass
class MacTable:
    stage_macs: list[int]     # per backbone stage
    head_macs: list[int]      # per exit: its head (the last one is the backbone classifier)
    exit_stage: list[int]     # the stage each exit reads
    backbone_macs: int        # plain backbone: all stages + classifier

    @property
    def exit_macs(self) -> list[int]:
        """Cumulative cost of stopping at each exit (stages so far + heads evaluated so far)."""
        return [sum(self.stage_macs[:s + 1]) + sum(self.head_macs[:k + 1])
                for k, s in enumerate(self.exit_stage)]

    @property
    def exit_fractions(self) -> list[float]:
        return [m / self.backbone_macs for m in self.exit_macs]

    def rows(self) -> list[dict]:
        """One row per exit, for printing as a table: exits and stages numbered from 1 (the final exit is K)."""
        return [{"exit": k + 1, "after stage": s + 1, "head MMACs": self.head_macs[k] / 1e6,
                 "cumulative MMACs": c / 1e6, "cumulative MACs (% of backbone)": 100 * f}
                for k, (s, c, f) in enumerate(zip(self.exit_stage, self.exit_macs, self.exit_fractions))]


def _structure(net: MultiExitNet) -> tuple:
    return (tuple(net.exit_after), tuple((n, tuple(t.shape)) for n, t in net.state_dict().items()))


# Tables already profiled in this process, by architecture (module tree with every layer's settings,
# tensor shapes, input shape): a notebook builds many networks of one architecture.
_PROFILED: dict[tuple, MacTable] = {}


def mac_table(net: MultiExitNet) -> MacTable:
    """The network's MAC table, profiled on the first call for its architecture and kept on the network
    afterwards; sets ``net.exit_costs`` for ``MultiExitNet.early_exit``."""
    key = _structure(net)
    cached = getattr(net, "_mac_table", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    architecture = (repr(net), key, tuple(net.backbone.input_shape))
    if architecture in _PROFILED:
        table = _PROFILED[architecture]
        net._mac_table = (key, table)
        net.exit_costs = table.exit_macs
        return table
    bb = net.backbone
    in_shapes = [bb.input_shape] + bb.stage_shapes()
    stage_macs = [count_macs(stage, in_shapes[i]) for i, stage in enumerate(bb.stages)]
    exit_stage = [net.exit_stage(k) for k in range(net.num_exits)]
    head_macs = [count_macs(head, in_shapes[s + 1]) for head, s in zip(net.heads, exit_stage)]
    classifier_macs = count_macs(bb.classifier, in_shapes[-1])
    head_macs.append(classifier_macs)
    table = MacTable(stage_macs, head_macs, exit_stage, sum(stage_macs) + classifier_macs)
    _PROFILED[architecture] = table
    net._mac_table = (key, table)
    net.exit_costs = table.exit_macs
    return table
