"""Run a trained network once over a split and keep every exit's outputs.

Every exit policy, threshold search and budget sweep then works on these tensors in milliseconds
(the offline mode); ``MultiExitNet.early_exit`` is the real mode and a test shows the two agree.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import TensorLoader
from .multiexit import MultiExitNet
from .paths import atomic_save

__all__ = ["CachedOutputs", "collect_outputs", "cached_outputs"]


@dataclass
class CachedOutputs:
    logits: torch.Tensor               # float32 [K, N, C]
    labels: torch.Tensor               # int64 [N]
    gates: torch.Tensor | None = None  # gate logits [K, N] (final exit: +inf), gated heads only
    features: list[torch.Tensor] | None = None  # per exit, global-average-pooled stage output [N, D_k]

    @property
    def num_exits(self) -> int:
        return self.logits.shape[0]

    def __len__(self) -> int:
        return len(self.labels)

    def exit_accuracies(self) -> list[float]:
        return (self.logits.argmax(2) == self.labels).float().mean(1).tolist()

    def subset(self, index: torch.Tensor) -> "CachedOutputs":
        return CachedOutputs(self.logits[:, index], self.labels[index],
                             None if self.gates is None else self.gates[:, index],
                             None if self.features is None else [f[index] for f in self.features])


@torch.no_grad()
def collect_outputs(net: MultiExitNet, loader: TensorLoader, features: bool = False) -> CachedOutputs:
    net.eval()
    logits, gates, labels, feats = [], [], [], []
    for x, y in loader:
        out = net(x)
        logits.append(torch.stack([z.float() for z in out.logits]))
        if out.has_gates:
            gates.append(torch.stack([g.float() if g is not None else torch.full((len(y),), float("inf"))
                                      for g in out.gates]))
        if features:
            feats.append([f.float().mean((2, 3)) if f.ndim == 4 else f.float() for f in net.exit_features(x)])
        labels.append(y)
    return CachedOutputs(torch.cat(logits, 1), torch.cat(labels),
                         torch.cat(gates, 1) if gates else None,
                         [torch.cat(col) for col in zip(*feats)] if features else None)


def cached_outputs(run, split: str, features: bool = False) -> CachedOutputs:
    """Outputs of a TrainedRun on a split, stored beside its checkpoint."""
    path = run.directory / f"outputs_{split}{'_features' if features else ''}.pt"
    if path.exists():
        try:
            return CachedOutputs(**torch.load(path, weights_only=False))
        except Exception as exc:
            print(f"warning: {path.name} unreadable ({exc.__class__.__name__}); recomputing")
    out = collect_outputs(run.net, run.loader(split), features)
    atomic_save(vars(out), path)
    return out
