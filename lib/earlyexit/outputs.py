"""Run a trained network once over a split and keep every exit's outputs.

Every exit policy, threshold search and budget sweep then works on these tensors in milliseconds
(the offline mode); ``MultiExitNet.early_exit`` is the real mode and a test shows the two agree.
Outputs are cached beside the run's checkpoint, in the run's hashed directory.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import TensorLoader
from .multiexit import MultiExitNet
from .paths import atomic_save, load_cached, move_aside

__all__ = ["CachedOutputs", "collect_outputs", "cached_outputs"]


@dataclass
class CachedOutputs:
    logits: torch.Tensor               # float32 [K, N, C]
    labels: torch.Tensor               # int64 [N]
    gates: torch.Tensor | None = None  # gate logits [K, N] (final exit: +inf), gated heads only

    @property
    def num_exits(self) -> int:
        return self.logits.shape[0]

    def __len__(self) -> int:
        return len(self.labels)

    def exit_accuracies(self) -> list[float]:
        return (self.logits.argmax(2) == self.labels).float().mean(1).tolist()

    def subset(self, index: torch.Tensor) -> "CachedOutputs":
        return CachedOutputs(self.logits[:, index], self.labels[index],
                             None if self.gates is None else self.gates[:, index])


@torch.no_grad()
def collect_outputs(net: MultiExitNet, loader: TensorLoader) -> CachedOutputs:
    """Every exit's logits (and gate logits) over ``loader``, computed on the net's device and
    returned on the CPU, where every offline evaluation runs."""
    net.eval()
    logits, gates, labels = [], [], []
    for x, y in loader:
        out = net(x)
        logits.append(torch.stack([z.float() for z in out.logits]))
        if out.has_gates:
            gates.append(torch.stack([g.float() if g is not None else torch.full((len(y),), float("inf"), device=y.device)
                                      for g in out.gates]))
        labels.append(y)
    return CachedOutputs(torch.cat(logits, 1).cpu(), torch.cat(labels).cpu(), torch.cat(gates, 1).cpu() if gates else None)


# Bumped whenever the forward computes heads differently (to the last bit): cached outputs of another
# format are recomputed from the checkpoint, so offline decisions stay identical to the real forward's.
OUTPUTS_FORMAT = 3


def cached_outputs(run, split: str) -> CachedOutputs:
    """Outputs of a TrainedRun (or one of its epoch snapshots) on a split, stored beside its checkpoint."""
    suffix = "" if run.epoch is None else f"_epoch{run.epoch}"
    path = run.directory / f"outputs_{split}{suffix}.pt"
    saved = load_cached(path)
    if saved is not None and saved.pop("format", None) == OUTPUTS_FORMAT:
        try:
            return CachedOutputs(**saved)
        except TypeError:
            move_aside(path, "malformed")
    out = collect_outputs(run.net, run.loader(split))
    atomic_save({"format": OUTPUTS_FORMAT, **vars(out)}, path)
    return out
