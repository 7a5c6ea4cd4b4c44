"""Run a trained network once over a split and keep every exit's outputs.

Every exit policy, threshold search and budget sweep then works on these tensors in milliseconds
(the offline mode); ``MultiExitNet.early_exit`` is the real mode and a test shows the two agree.
Outputs are cached beside the run's checkpoint, in the run's hashed directory. Runs that share a
frozen backbone (head-only rivals trained from one parent) get theirs in one pass: ``outputs_of_runs``
runs the shared stages once per batch and every run's heads on them, the same numbers at a fraction of
the cost.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .data import TensorLoader
from .multiexit import MultiExitNet
from .paths import atomic_save, load_cached, move_aside

__all__ = ["CachedOutputs", "collect_outputs", "cached_outputs", "outputs_of_runs", "save_epoch_outputs",
           "load_epoch_outputs"]


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


class _Collector:
    """Accumulates one network's per-batch exit outputs into CachedOutputs."""

    def __init__(self):
        self.logits, self.gates, self.labels = [], [], []

    def add(self, logits: Sequence[torch.Tensor], gates: Sequence[torch.Tensor | None], y: torch.Tensor) -> None:
        self.logits.append(torch.stack([z.float() for z in logits]))
        if any(g is not None for g in gates):
            self.gates.append(torch.stack([g.float() if g is not None else torch.full((len(y),), float("inf"), device=y.device)
                                           for g in gates]))
        self.labels.append(y)

    def result(self) -> CachedOutputs:
        return CachedOutputs(torch.cat(self.logits, 1).cpu(), torch.cat(self.labels).cpu(),
                             torch.cat(self.gates, 1).cpu() if self.gates else None)


@torch.no_grad()
def collect_outputs(net: MultiExitNet, loader: TensorLoader) -> CachedOutputs:
    """Every exit's logits (and gate logits) over ``loader``, computed on the net's device and
    returned on the CPU, where every offline evaluation runs."""
    return _collect_shared([net], loader)[0]


@torch.no_grad()
def _collect_shared(nets: Sequence[MultiExitNet], loader: TensorLoader) -> list[CachedOutputs]:
    """``collect_outputs`` of networks whose backbone stages are identical: the stages of the first run
    once per batch, then each network's heads (and classifier) on the same stage outputs."""
    first = nets[0]
    for net in nets:
        net.eval()
    collectors = [_Collector() for _ in nets]
    for x, y in loader:
        outs = [([], []) for _ in nets]
        for k, h in first.exit_inputs(x):
            for net, (logits, gates) in zip(nets, outs):
                z, g = net.exit_output(k, h)
                logits.append(z)
                gates.append(g)
        for c, (logits, gates) in zip(collectors, outs):
            c.add(logits, gates, y)
    return [c.result() for c in collectors]


def _same_stages(a: MultiExitNet, b: MultiExitNet) -> bool:
    """Whether two networks compute the same stage outputs: exits after the same stages, and every
    stage tensor equal in value and layout (a shared frozen backbone)."""
    if a.exit_after != b.exit_after or len(a.backbone.stages) != len(b.backbone.stages):
        return False
    sa, sb = a.backbone.stages.state_dict(), b.backbone.stages.state_dict()
    return sa.keys() == sb.keys() and all(
        u.shape == v.shape and u.stride() == v.stride() and u.dtype == v.dtype and torch.equal(u, v)
        for u, v in ((sa[k], sb[k]) for k in sa))


# Bumped whenever the forward computes heads differently (to the last bit): cached outputs of another
# format are recomputed from the checkpoint, so offline decisions stay identical to the real forward's.
OUTPUTS_FORMAT = 3


def _path(run, split: str):
    return run.directory / f"outputs_{split}.pt"


def _epoch_path(directory: Path, epoch: int) -> Path:
    return directory / f"outputs_val_epoch{epoch}.pt"


def save_epoch_outputs(net: MultiExitNet, val_loader: TensorLoader, directory: Path, epoch: int) -> None:
    """Keep the validation outputs of a network in training after ``epoch`` (how its gates evolve)."""
    atomic_save({"format": OUTPUTS_FORMAT, **vars(collect_outputs(net, val_loader))}, _epoch_path(directory, epoch))


def load_epoch_outputs(directory: Path, epoch: int) -> CachedOutputs:
    """The outputs ``save_epoch_outputs`` kept; they cannot be recomputed (no weights are kept per epoch),
    so a missing or outdated file fails, naming what to do."""
    path = _epoch_path(directory, epoch)
    saved = load_cached(path)
    if saved is None or saved.pop("format", None) != OUTPUTS_FORMAT:
        raise FileNotFoundError(f"no validation outputs of epoch {epoch} (format {OUTPUTS_FORMAT}) in "
                                f"{directory.name}: train the run with keep_epoch_outputs=True (delete its "
                                f"folder to retrain it)")
    return CachedOutputs(**saved)


def _load(run, split: str) -> CachedOutputs | None:
    path = _path(run, split)
    saved = load_cached(path)
    if saved is not None and saved.pop("format", None) == OUTPUTS_FORMAT:
        try:
            return CachedOutputs(**saved)
        except TypeError:
            move_aside(path, "malformed")
    return None


def cached_outputs(run, split: str) -> CachedOutputs:
    """Outputs of a TrainedRun (or one of its epoch snapshots) on a split, stored beside its checkpoint."""
    return outputs_of_runs([run], split)[0]


def outputs_of_runs(runs: Sequence, split: str) -> list[CachedOutputs]:
    """``cached_outputs`` of several runs on one split. The runs not cached yet are grouped by shared
    backbone stages (same data, device and stage weights); each group costs one backbone pass."""
    found = [_load(run, split) for run in runs]
    groups: list[list[int]] = []
    for i, run in enumerate(runs):
        if found[i] is not None:
            continue
        for group in groups:
            other = runs[group[0]]
            if (other.data is run.data and other.device == run.device
                    and other.spec.model.image_size == run.spec.model.image_size and _same_stages(other.net, run.net)):
                group.append(i)
                break
        else:
            groups.append([i])
    for group in groups:
        outs = _collect_shared([runs[i].net for i in group], runs[group[0]].loader(split))
        for i, out in zip(group, outs):
            atomic_save({"format": OUTPUTS_FORMAT, **vars(out)}, _path(runs[i], split))
            found[i] = out
    return found
