"""Exit heads trained on a frozen backbone from inputs computed once.

When the backbone is frozen and every trained head is a fixed, parameter-free map (pooling, distances
to fitted class means) followed by one Linear, the Linear's input depends only on the image. One pass
over a split computes it for every exit (and the frozen final classifier's logits), and a head epoch
then costs a few small matrix products instead of a forward pass of the backbone: on VGG-13 x0.5 /
CIFAR-10, one pass of about a backbone epoch's forward, then about a second per head epoch.

The pass reads each training image once, under the run's augmentation (one random crop and flip per
image, the draw of epoch 0), as E2CM's class-mean fit does; head epochs then revisit those views in a
new order each epoch. ``TrainConfig(head_inputs="cached")`` selects this; ``train._train_epochs``
keeps everything else (loss, optimiser, schedule, time budget, patience, checkpoints).
"""
from __future__ import annotations

from typing import Iterator

import torch

from .data import TensorLoader
from .device import autocast
from .multiexit import ExitOutputs, MultiExitNet

__all__ = ["HeadInputs", "check_cacheable"]


def check_cacheable(net: MultiExitNet) -> None:
    """Raise ``ValueError`` unless every head's trainable part is its final Linear (and gate, for a
    gated head) and the backbone (its classifier included) is frozen: only then are their inputs fixed."""
    if any(p.requires_grad for p in net.backbone.parameters()):
        raise ValueError("cached head inputs need a frozen backbone (freeze_backbone=True)")
    for k, head in enumerate(net.heads):
        fixed = [n for n, p in head.named_parameters() if p.requires_grad and not n.startswith(("fc.", "gate."))]
        if not hasattr(head, "fc_input") or fixed:
            raise ValueError(f"exit {k}: a {net.head_kind!r} head has trainable layers before its final "
                             "Linear, so its inputs cannot be cached; use head_inputs='live'")


class HeadInputs:
    """Per exit, the input of its trainable Linear and gate (the final classifier's logits for the last
    exit) for every image of one pass of ``loader``, in float32, with the labels."""

    def __init__(self, net: MultiExitNet, loader: TensorLoader, bf16: bool, device: torch.device):
        check_cacheable(net)
        was_training = net.training
        net.eval()
        parts: list[list[torch.Tensor]] = [[] for _ in range(net.num_exits)]
        labels = []
        with torch.no_grad(), autocast(device, bf16):
            for x, y in loader:
                for k, h in net.exit_inputs(x):
                    v = net.heads[k].fc_input(h) if k < len(net.heads) else net.backbone.classifier(h)
                    parts[k].append(v.float())
                labels.append(y)
        net.train(was_training)
        self.inputs = [torch.cat(p) for p in parts]
        self.labels = torch.cat(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def outputs(self, net: MultiExitNet, inputs: list[torch.Tensor]) -> ExitOutputs:
        """The exits' logits (and gate logits) from their cached inputs: each head's Linear (and gate);
        the frozen classifier's logits as stored."""
        heads = list(zip(net.heads, inputs[:-1]))
        logits = [head.fc(v) for head, v in heads] + [inputs[-1]]
        gates = [head.gate(v).squeeze(1) if head.has_gate else None for head, v in heads] + [None]
        return ExitOutputs(logits, gates)

    def batches(self, batch_size: int, seed: int, epoch: int, drop_last: bool
                ) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        """Shuffled batches, the order seeded by (seed, epoch) as ``TensorLoader``'s."""
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(len(self), generator=g).to(self.labels.device)
        count = len(self) // batch_size if drop_last else -(-len(self) // batch_size)
        for b in range(count):
            idx = order[b * batch_size:(b + 1) * batch_size]
            yield [v[idx] for v in self.inputs], self.labels[idx]

    @torch.no_grad()
    def accuracies(self, net: MultiExitNet, batch_size: int = 4096) -> list[float]:
        """Accuracy of every exit on these inputs (the validation accuracies of a head epoch)."""
        correct = torch.zeros(net.num_exits, dtype=torch.long)
        for b in range(0, len(self), batch_size):
            out = self.outputs(net, [v[b:b + batch_size] for v in self.inputs])
            correct += out.correct(self.labels[b:b + batch_size])
        return (correct.double() / max(len(self), 1)).tolist()
