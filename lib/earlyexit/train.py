"""One training loop for every multi-exit network, with runs cached by their configuration.

A run is named by a ``RunSpec`` (model, data, loss, optimisation, and optionally the run whose
weights it starts from and a fitting step). Its artifacts live in
``artifacts/<name>-<hash of the spec>/``: ``checkpoint.pt`` is rewritten atomically after every
epoch, so an interrupted run resumes where it stopped, and an unreadable file is moved aside
(``*.corrupt``) and rebuilt rather than trusted. Shuffling, augmentation and dropout are seeded per
(seed, epoch), so a resumed run gives the same weights as an uninterrupted one.

Options cover every training the notebooks need with this one loop: joint training from scratch;
head-only training on a frozen backbone started from another run (SDN-style heads, E2CM+SDN);
a wall-clock budget (equal-training-time comparisons); a fitting step without gradients
(E2CM's class means, registered by its module in ``FITS``); validation outputs after every epoch (to
follow training epoch by epoch); and reconstruction losses that compare the output with the input.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal

import torch
from tqdm.auto import tqdm

from . import rehearsal
from .backbones import build_backbone
from .data import Dataset, DataSpec, TensorLoader, load_dataset
from .device import autocast, bf16_supported, channels_last_trains, default_device, describe_device, maybe_compile, resolve_device
from .head_inputs import HeadInputs
from .losses import build_loss, loss_target
from .macs import MacTable, mac_table
from .multiexit import MultiExitNet
from .outputs import CachedOutputs, cached_outputs, load_epoch_outputs, save_epoch_outputs
from .paths import artifacts_root, atomic_save, config_hash, load_cached, move_aside
from .registry import Registry

__all__ = ["CACHE_FORMAT", "ModelSpec", "LossSpec", "TrainConfig", "FitSpec", "RunSpec", "TrainedRun", "FITS",
           "train_cached", "build_model", "set_seed"]

# Bump when a change to the code makes cached checkpoints or outputs invalid (part of every run hash).
CACHE_FORMAT = 2
# Set by the batch runner: print the one line per epoch even where a notebook asked for no progress
# bar, so the terminal shows every training (the line goes to that cell's output).
PROGRESS_LINES = "EARLYEXIT_PROGRESS_LINES"
# what train_cached shows: a bar and a line per epoch, nothing, or a bar and one line per run
Progress = Literal[True, False, "summary"]


@dataclass(frozen=True)
class ModelSpec:
    backbone: str = "airnet"
    width: float = 1.0
    exit_after: tuple[int, ...] | None = None   # stage indices; None = the backbone's defaults
    head: str = "linear"
    head_options: dict = field(default_factory=dict)
    backbone_options: dict = field(default_factory=dict)
    image_size: int | None = None               # input size if not the data's (AlexNet at 224)


@dataclass(frozen=True)
class LossSpec:
    name: str = "weighted_ce"
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "sgd"        # sgd (Nesterov momentum) | adam
    lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"    # onecycle (linear up, linear down) | cosine | constant
    warmup: float = 0.2           # fraction of steps spent warming up (onecycle, cosine)
    crop_pad: int = 2             # random translation in pixels; 0 disables
    flip: bool = True
    bf16: bool = False            # bf16 autocast where the CPU supports it; float32 otherwise
    channels_last: bool = False   # where training in it is safe (device.channels_last_trains); default layout otherwise
    seed: int = 0
    freeze_backbone: bool = False  # train the exit heads only; the backbone stays in eval mode
    # with a frozen backbone: "cached" computes each head's Linear input in one augmented pass and trains
    # on those (earlyexit.head_inputs); "live" runs the backbone on every batch
    head_inputs: str = "live"
    time_budget_s: float | None = None  # stop after this much training wall clock (checked every step)
    # also keep the validation outputs after every epoch (TrainedRun.epoch_outputs: how the gates evolve);
    # outputs, not weights: a paper-sized network's weights at every epoch would take hundreds of GB
    keep_epoch_outputs: bool = False
    # early stopping: stop once the mean validation accuracy of the trained exits has not improved for
    # this many epochs (``epochs`` stays the cap); the run keeps its last epoch's weights
    patience: int | None = None
    min_epochs: int = 0           # with patience: no plateau stops the run before this many epochs

    def __post_init__(self):
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.schedule not in ("onecycle", "cosine", "constant"):
            raise ValueError(f"schedule must be onecycle, cosine or constant, got {self.schedule!r}")
        if self.time_budget_s is not None and (self.time_budget_s <= 0 or self.schedule != "constant"):
            raise ValueError("a time budget needs time_budget_s > 0 and schedule='constant' (the total step "
                             "count, which other schedules need, is unknown)")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 epoch, got {self.patience}")
        if self.min_epochs < 0:
            raise ValueError(f"min_epochs must be >= 0, got {self.min_epochs}")
        if self.head_inputs not in ("live", "cached"):
            raise ValueError(f"head_inputs must be 'live' or 'cached', got {self.head_inputs!r}")
        if self.head_inputs == "cached" and not self.freeze_backbone:
            raise ValueError("head_inputs='cached' needs freeze_backbone=True (the inputs are fixed only then)")


@dataclass(frozen=True)
class FitSpec:
    """A step without gradients run once after initialisation, before any training epoch: a
    function registered in ``FITS`` as ``fit(net, data, **options) -> None`` that fills buffers."""

    name: str
    options: dict = field(default_factory=dict)


FITS: Registry[Callable[..., None]] = Registry("fitting step")


@dataclass(frozen=True)
class RunSpec:
    name: str
    model: ModelSpec = ModelSpec()
    data: DataSpec = DataSpec()
    loss: LossSpec = LossSpec()
    train: TrainConfig = TrainConfig()
    init_from: "RunSpec | None" = None   # start from this run's trained weights (matching names and shapes)
    init_heads: bool = False             # also take its exit heads (default: the backbone only)
    fit: FitSpec | None = None

    def __post_init__(self):
        if self.init_from is not None and self.init_from.data != self.data:
            raise ValueError(f"run {self.name!r} starts from {self.init_from.name!r}, trained on other data")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def key(self) -> str:
        """Directory name: the run's name and a hash of its whole configuration (parents included)
        and of ``CACHE_FORMAT``."""
        return f"{self.name}-{config_hash({**_unset_dropped(self.to_dict()), 'cache_format': CACHE_FORMAT})}"

    def with_train(self, **changes) -> "RunSpec":
        return replace(self, train=replace(self.train, **changes))


def _unset_dropped(spec: dict) -> dict:
    """The spec without options added after runs were cached and left at their defaults (``patience``,
    ``head_inputs``, ``min_epochs``), so that adding an option does not change the key of any run that
    does not use it."""
    defaults = {"patience": None, "head_inputs": "live", "min_epochs": 0}
    train = {k: v for k, v in spec["train"].items() if not (k in defaults and v == defaults[k])}
    # keep_epoch_outputs was keep_epoch_checkpoints (weights per epoch) when the cached runs were
    # trained; the weights it trains are the same, so it keeps that name in the key
    train = {("keep_epoch_checkpoints" if k == "keep_epoch_outputs" else k): v for k, v in train.items()}
    parent = spec.get("init_from")
    return {**spec, "train": train, "init_from": _unset_dropped(parent) if parent else parent}


def build_model(model: ModelSpec, num_classes: int, in_channels: int, image_size: int) -> MultiExitNet:
    backbone = build_backbone(model.backbone, num_classes=num_classes, width=model.width,
                              in_channels=in_channels, image_size=model.image_size or image_size,
                              **model.backbone_options)
    return MultiExitNet(backbone, model.exit_after, model.head, **model.head_options)


def set_seed(seed: int) -> None:
    import random
    import numpy as np
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    if cfg.schedule == "constant" or total == 0:
        return 1.0
    warm = max(1, int(cfg.warmup * total))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    if cfg.schedule == "onecycle":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1 + math.cos(math.pi * progress))


def _optimizer(net: MultiExitNet, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.ndim > 1]
    no_decay = [p for n, p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


@torch.no_grad()
def exit_accuracies(net: MultiExitNet, loader: TensorLoader) -> list[float]:
    net.eval()
    correct, n = torch.zeros(net.num_exits), 0
    for x, y in loader:
        correct += net(x).correct(y)
        n += len(y)
    return (correct / max(n, 1)).tolist()


@dataclass
class TrainedRun:
    spec: RunSpec
    net: MultiExitNet
    data: Dataset
    history: list[dict]
    directory: Path
    macs: MacTable
    device: torch.device = torch.device("cpu")   # where ``net`` lives and ``loader`` batches are made

    @property
    def train_seconds(self) -> float:
        """Wall clock of training and fitting (the fitting step's seconds included)."""
        return sum(h["seconds"] for h in self.history)

    @property
    def epochs_trained(self) -> int:
        """Epochs actually run: fewer than asked when a time budget (or a rehearsal) stopped the run."""
        return sum(1 for h in self.history if h.get("epoch", 0) > 0)

    @property
    def seconds_per_epoch(self) -> float:
        epochs = [h for h in self.history if h.get("epoch", 0) > 0]
        return sum(h["seconds"] for h in epochs) / max(len(epochs), 1)

    def loader(self, split: str, batch_size: int = 500) -> TensorLoader:
        return TensorLoader(self.data.split(split), self.data.mean, self.data.std, batch_size=batch_size,
                            image_size=self.spec.model.image_size, device=self.device)

    def outputs(self, split: str):
        """Per-exit logits (and gate logits) on a split, cached on disk."""
        return cached_outputs(self, split)

    def epoch_outputs(self, epoch: int) -> CachedOutputs:
        """Validation outputs as they were after ``epoch`` (recorded by training with ``keep_epoch_outputs``)."""
        return load_epoch_outputs(self.directory, epoch)


def _checkpoint(net: MultiExitNet, opt: torch.optim.Optimizer, epoch: int, done: bool, history: list[dict],
                spec: RunSpec) -> dict:
    """What a checkpoint holds; a finished run drops the optimizer state (only resuming needs it, and it
    doubles or triples the file: momentum, Adam's moments)."""
    state = {"model": net.state_dict(), "epoch": epoch, "done": done, "history": history, "spec": spec.to_dict()}
    if not done:
        state["optimizer"] = opt.state_dict()
    return state


def _initialise(net: MultiExitNet, spec: RunSpec, data: Dataset, progress: Progress, device: torch.device) -> None:
    """Weights from ``spec.init_from`` (trained first if needed), then the fitting step."""
    if spec.init_from is not None:
        parent = train_cached(spec.init_from, data, progress, device)
        own = net.state_dict()
        taken = {k: v.to(own[k].device) if k in own else v for k, v in parent.net.state_dict().items()
                 if k in own and own[k].shape == v.shape and (spec.init_heads or not k.startswith("heads."))}
        if not any(k.startswith("backbone.") for k in taken):
            raise ValueError(f"run {spec.name!r}: nothing of {spec.init_from.name!r}'s backbone fits this model")
        net.load_state_dict(taken, strict=False)
    if spec.fit is not None:
        FITS.get(spec.fit.name)(net, data, device=device, **spec.fit.options)


def train_cached(spec: RunSpec, data: Dataset | None = None, progress: Progress = True,
                 device: str | torch.device | None = None, compile: bool = False) -> TrainedRun:
    """Train ``spec`` or load it from artifacts/; resume an interrupted run. ``device`` (default: the
    notebook's ``device`` parameter, "auto") is where it trains and where the returned net lives; it
    is not part of the cache key, so a run trained on a GPU is found by a notebook on a CPU.
    ``progress``: True, a bar and a line per epoch; "summary", a bar and one line when the training ends,
    with why it stopped (for cells that train many runs); False, nothing (the batch runner still gets
    the epoch lines). ``compile``: torch.compile the training forward (opt-in)."""
    if progress not in (True, False, "summary"):
        raise ValueError(f"progress must be True, False or 'summary', not {progress!r}")
    device = default_device() if device is None else resolve_device(device)
    data = data or load_dataset(spec.data)
    if data.spec != spec.data:
        raise ValueError(f"data {data.spec} does not match the run's data spec {spec.data}")
    cfg = spec.train
    c, h, _ = data.train.images.shape[1:]
    directory = artifacts_root() / spec.key
    ckpt_path = directory / "checkpoint.pt"
    state = load_cached(ckpt_path)

    def fresh() -> tuple[MultiExitNet, torch.optim.Optimizer]:
        set_seed(cfg.seed)
        net = build_model(spec.model, data.num_classes, c, h).to(device)
        if cfg.freeze_backbone:
            net.backbone.requires_grad_(False)
        return net, _optimizer(net, cfg)

    net, opt = fresh()
    history: list[dict] = []
    start, done = 0, False
    if state is not None:
        try:
            net.load_state_dict(state["model"])
            if not state.get("done", False):
                opt.load_state_dict(state["optimizer"])
            history, start, done = state["history"], state["epoch"], state.get("done", False)
        except (KeyError, RuntimeError, ValueError) as exc:
            move_aside(ckpt_path, f"incompatible with this model ({exc.__class__.__name__})")
            net, opt = fresh()
            state = None
    _note_use(spec, reused=state is not None and done)
    if state is None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "spec.json").write_text(json.dumps(spec.to_dict(), indent=1, default=str))
        t0 = time.perf_counter()
        _initialise(net, spec, data, progress, device)
        if spec.init_from is not None or spec.fit is not None:
            history.append({"epoch": 0, "seconds": time.perf_counter() - t0 if spec.fit else 0.0,
                            "step": "fit" if spec.fit else "init"})
        if cfg.epochs == 0:
            done = True
        if done or spec.fit is not None:
            atomic_save(_checkpoint(net, opt, 0, done, history, spec), ckpt_path)
    if not done:
        history, done = _train_epochs(spec, net, opt, data, history, start, ckpt_path, progress, device, compile)
    net = net.to(memory_format=torch.contiguous_format).eval()
    return TrainedRun(spec, net, data, history, directory, mac_table(net), device=device)


USE_LOG_ENV = "EARLYEXIT_TRAINING_LOG"


def _note_use(spec: RunSpec, reused: bool) -> None:
    """Append ``{"run", "reused"}`` to the file named by ``EARLYEXIT_TRAINING_LOG``, if set: the batch
    runner counts, per notebook, the trainings found finished in the cache and those trained (or resumed)."""
    path = os.environ.get(USE_LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"run": spec.key, "reused": reused}) + "\n")


def _trained_exits(net: MultiExitNet) -> list[int]:
    """Exits whose own classifier has trainable parameters (the backbone's classifier is the last one)."""
    own = list(net.heads) + [net.backbone.classifier]
    return [k for k, m in enumerate(own) if any(p.requires_grad for p in m.parameters())]


def plateaued(history: list[dict], patience: int, exits: list[int]) -> bool:
    """Whether the mean validation accuracy over ``exits`` has not improved for ``patience`` epochs
    (read from the history, so a resumed run decides as an uninterrupted one)."""
    scores = [sum(h["val_acc"][k] for k in exits) / len(exits) for h in history
              if h.get("epoch", 0) > 0 and h.get("val_acc")]
    if not scores:
        return False
    best = scores.index(max(scores))
    return len(scores) - 1 - best >= patience


def _epoch_label(k: int, cfg: TrainConfig) -> str:
    """'epoch k/n'; a run capped by wall-clock time says 'epoch k' (its epoch cap is rarely reached)."""
    return f"epoch {k}" if cfg.time_budget_s is not None else f"epoch {k}/{cfg.epochs}"


def _train_epochs(spec: RunSpec, net: MultiExitNet, opt: torch.optim.Optimizer, data: Dataset, history: list[dict],
                  start: int, ckpt_path: Path, progress: Progress, device: torch.device,
                  compile: bool) -> tuple[list[dict], bool]:
    cfg = spec.train
    loss_fn = build_loss(spec.loss.name, net.num_exits, **spec.loss.options)
    classify = loss_target(loss_fn) == "labels"
    use_bf16 = cfg.bf16 and bf16_supported(device)
    where = describe_device(device, use_bf16)
    channels_last = cfg.channels_last and channels_last_trains(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    forward = maybe_compile(net, compile)
    batch_size = rehearsal.cap(cfg.batch_size, rehearsal.BATCH)
    train_loader = TensorLoader(data.train, data.mean, data.std, batch_size, shuffle=True,
                                crop_pad=cfg.crop_pad, flip=cfg.flip, drop_last=len(data.train) > batch_size,
                                seed=cfg.seed, image_size=spec.model.image_size, channels_last=channels_last,
                                device=device)
    val_loader = TensorLoader(data.val, data.mean, data.std, 500, image_size=spec.model.image_size,
                              channels_last=channels_last, device=device)
    total_steps = cfg.epochs * len(train_loader)
    spent = sum(h["seconds"] for h in history if h.get("epoch", 0) > 0)
    trained = _trained_exits(net)
    train_inputs = val_inputs = None
    pass_seconds = 0.0
    if cfg.head_inputs == "cached" and start < cfg.epochs:
        t0 = time.perf_counter()   # the pass is part of training time (it counts against a time budget)
        one_pass = TensorLoader(data.train, data.mean, data.std, batch_size, crop_pad=cfg.crop_pad, flip=cfg.flip,
                                seed=cfg.seed, image_size=spec.model.image_size, channels_last=channels_last,
                                device=device)   # every image once, augmented with epoch 0's draw
        train_inputs = HeadInputs(net, one_pass, use_bf16, device)
        val_inputs = HeadInputs(net, val_loader, False, device)   # validation in float32, as exit_accuracies
        pass_seconds = time.perf_counter() - t0
    done = False
    for epoch in range(start, cfg.epochs):
        torch.manual_seed(cfg.seed * 1000 + epoch)
        train_loader.set_epoch(epoch)
        net.train()
        if cfg.freeze_backbone:
            net.backbone.eval()
        # summed on the device (float64, the same arithmetic as Python floats): no host sync per step
        t0, seen, steps = time.perf_counter() - pass_seconds, 0, 0
        pass_seconds = 0.0
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        batches = train_loader if train_inputs is None else train_inputs.batches(batch_size, cfg.seed, epoch,
                                                                                  train_loader.drop_last)
        bar = tqdm(batches, desc=f"{spec.name} {_epoch_label(epoch + 1, cfg)}", disable=not progress,
                   leave=False, total=len(train_loader))
        for i, (x, y) in enumerate(bar):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * _lr_factor(cfg, epoch * len(train_loader) + i, total_steps)
            with autocast(device, use_bf16):
                out = forward(x) if train_inputs is None else train_inputs.outputs(net, x)
                loss = loss_fn(out, y if classify else x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            loss_sum += loss.detach().double() * len(y)
            seen += len(y)
            if classify:
                correct += (out.logits[-1].argmax(1) == y).sum()
            if progress and i % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}")
            if cfg.time_budget_s is not None and spent + time.perf_counter() - t0 >= cfg.time_budget_s:
                done = True
                break
            if rehearsal.active() and sum(h.get("steps", 0) for h in history) + steps >= rehearsal.MAX_STEPS:
                done = True
                break
        seconds = time.perf_counter() - t0
        spent += seconds
        if not classify:
            val_acc = None
        else:
            val_acc = exit_accuracies(net, val_loader) if val_inputs is None else val_inputs.accuracies(net)
        history.append({"epoch": epoch + 1, "steps": steps, "loss": loss_sum.item() / max(seen, 1),
                        "train_acc": correct.item() / max(seen, 1) if classify else None, "val_acc": val_acc,
                        "seconds": seconds, "bf16": use_bf16, "channels_last": channels_last, **where})
        stalled = (cfg.patience is not None and classify and bool(trained) and epoch + 1 >= cfg.min_epochs
                   and plateaued(history, cfg.patience, trained))
        done = done or stalled or epoch + 1 == cfg.epochs
        why = ("validation plateau" if stalled else "rehearsal" if rehearsal.active() else "time budget reached"
               if cfg.time_budget_s is not None and epoch + 1 < cfg.epochs else "epoch cap")
        shown = f", val acc (final exit) {val_acc[-1]:.4f}" if classify else ""
        if progress == "summary":
            if done:
                trained_s = sum(h["seconds"] for h in history if h.get("epoch", 0) > 0)
                print(f"{spec.name}: trained {epoch + 1} epoch{'s' if epoch else ''}, loss {history[-1]['loss']:.3f}"
                      f"{shown}, {trained_s:.0f} s (stopped: {why})")
        elif progress or os.environ.get(PROGRESS_LINES) == "1":
            if cfg.time_budget_s is not None and not done:
                shown += f", time budget {max(cfg.time_budget_s - spent, 0.0):.0f} s left"
            print(f"{spec.name} {_epoch_label(epoch + 1, cfg)}: loss {history[-1]['loss']:.3f}{shown}, {seconds:.0f} s"
                  + (f" (stopped: {why})" if done and why != "epoch cap" else ""))
        if cfg.keep_epoch_outputs:   # before the checkpoint: a resumed run never lacks an epoch's outputs
            save_epoch_outputs(net, TensorLoader(data.val, data.mean, data.std, 500, image_size=spec.model.image_size,
                                                 device=device), ckpt_path.parent, epoch + 1)
        atomic_save(_checkpoint(net, opt, epoch + 1, done, history, spec), ckpt_path)
        if done:
            break
    return history, True
