"""One training loop for every multi-exit network, with runs cached by their configuration.

A run is named by a ``RunSpec`` (model, data, loss, optimisation). Its artifacts live in
``artifacts/<name>-<hash of the spec>/``: ``checkpoint.pt`` is rewritten atomically after every
epoch, so an interrupted run resumes where it stopped, and an unreadable file is moved aside
(``*.corrupt``) and rebuilt rather than trusted. Shuffling, augmentation and dropout are seeded per
(seed, epoch), so a resumed run gives the same weights as an uninterrupted one.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import __version__
from .backbones import build_backbone
from .data import Dataset, DataSpec, TensorLoader, load_dataset
from .losses import build_loss
from .macs import MacTable, mac_table
from .multiexit import MultiExitNet
from .paths import artifacts_root, atomic_save, config_hash

__all__ = ["ModelSpec", "LossSpec", "TrainConfig", "RunSpec", "TrainedRun", "train_cached",
           "build_model", "bf16_supported", "set_seed"]


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
    channels_last: bool = False
    seed: int = 0

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


@dataclass(frozen=True)
class RunSpec:
    name: str
    model: ModelSpec = ModelSpec()
    data: DataSpec = DataSpec()
    loss: LossSpec = LossSpec()
    train: TrainConfig = TrainConfig()

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def key(self) -> str:
        """Directory name: the run's name and a hash of its whole configuration and the library
        version (bump ``earlyexit.__version__`` when a change to the code invalidates old weights)."""
        return f"{self.name}-{config_hash({**self.to_dict(), 'version': __version__})}"

    def with_train(self, **changes) -> "RunSpec":
        return replace(self, train=replace(self.train, **changes))


def build_model(model: ModelSpec, num_classes: int, in_channels: int, image_size: int) -> MultiExitNet:
    backbone = build_backbone(model.backbone, num_classes=num_classes, width=model.width,
                              in_channels=in_channels, image_size=model.image_size or image_size,
                              **model.backbone_options)
    return MultiExitNet(backbone, model.exit_after, model.head, **model.head_options)


def bf16_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


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
    import math
    return 0.5 * (1 + math.cos(math.pi * progress))


def _optimizer(net: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


@torch.no_grad()
def exit_accuracies(net: MultiExitNet, loader: TensorLoader) -> list[float]:
    net.eval()
    correct, n = torch.zeros(net.num_exits), 0
    for x, y in loader:
        out = net(x)
        correct += torch.tensor([(z.argmax(1) == y).sum().item() for z in out.logits], dtype=torch.float32)
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

    @property
    def train_seconds(self) -> float:
        return sum(h["seconds"] for h in self.history)

    def loader(self, split: str, batch_size: int = 500) -> TensorLoader:
        return TensorLoader(self.data.split(split), self.data.mean, self.data.std, batch_size=batch_size,
                            image_size=self.spec.model.image_size)

    def outputs(self, split: str, features: bool = False):
        """Per-exit logits (and gates, optionally pooled features) on a split, cached on disk."""
        from .outputs import cached_outputs
        return cached_outputs(self, split, features)


def _move_aside(path: Path, why: str) -> None:
    aside = path.with_name(path.name + f".corrupt-{int(time.time())}")
    path.rename(aside)
    print(f"warning: {path} is {why}; moved to {aside.name}, rebuilding")


def _load(path: Path) -> dict | None:
    """Read a checkpoint; move an unreadable one aside so it is rebuilt, never silently reused."""
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=False)
    except Exception as exc:
        _move_aside(path, f"unreadable ({exc.__class__.__name__})")
        return None


def train_cached(spec: RunSpec, data: Dataset | None = None, progress: bool = True) -> TrainedRun:
    """Train ``spec`` or load it from artifacts/; resume an interrupted run."""
    data = data or load_dataset(spec.data)
    if data.spec != spec.data:
        raise ValueError(f"data {data.spec} does not match the run's data spec {spec.data}")
    cfg = spec.train
    set_seed(cfg.seed)
    c, h, _ = data.train.images.shape[1:]
    net = build_model(spec.model, data.num_classes, c, h)
    directory = artifacts_root() / spec.key
    ckpt_path = directory / "checkpoint.pt"
    state = _load(ckpt_path)
    history: list[dict] = []
    loss_fn = build_loss(spec.loss.name, net.num_exits, **spec.loss.options)
    opt = _optimizer(net, cfg)
    start = 0
    if state is not None:
        try:
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            history, start = state["history"], state["epoch"]
        except (KeyError, RuntimeError, ValueError) as exc:
            _move_aside(ckpt_path, f"incompatible with this model ({exc.__class__.__name__})")
            set_seed(cfg.seed)
            net = build_model(spec.model, data.num_classes, c, h)
            opt = _optimizer(net, cfg)
    use_bf16 = cfg.bf16 and bf16_supported()
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    train_loader = TensorLoader(data.train, data.mean, data.std, cfg.batch_size, shuffle=True,
                                crop_pad=cfg.crop_pad, flip=cfg.flip, drop_last=len(data.train) > cfg.batch_size,
                                seed=cfg.seed, image_size=spec.model.image_size, channels_last=cfg.channels_last)
    val_loader = TensorLoader(data.val, data.mean, data.std, 500, image_size=spec.model.image_size,
                              channels_last=cfg.channels_last)
    total_steps = cfg.epochs * len(train_loader)
    if start < cfg.epochs:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "spec.json").write_text(__import__("json").dumps(spec.to_dict(), indent=1, default=str))
    for epoch in range(start, cfg.epochs):
        torch.manual_seed(cfg.seed * 1000 + epoch)
        train_loader.set_epoch(epoch)
        net.train()
        t0, loss_sum, seen, correct = time.perf_counter(), 0.0, 0, 0
        bar = tqdm(train_loader, desc=f"{spec.name} epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False)
        for i, (x, y) in enumerate(bar):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * _lr_factor(cfg, epoch * len(train_loader) + i, total_steps)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                out = net(x)
                loss = loss_fn(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            seen += len(y)
            correct += (out.logits[-1].argmax(1) == y).sum().item()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        seconds = time.perf_counter() - t0
        val_acc = exit_accuracies(net, val_loader)
        history.append({"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                        "val_acc": val_acc, "seconds": seconds, "bf16": use_bf16,
                        "threads": torch.get_num_threads()})
        if progress:
            print(f"{spec.name} epoch {epoch + 1}/{cfg.epochs}: loss {history[-1]['loss']:.3f}, "
                  f"val acc (final exit) {val_acc[-1]:.4f}, {seconds:.0f} s")
        atomic_save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                     "history": history, "spec": spec.to_dict()}, ckpt_path)
    net = net.to(memory_format=torch.contiguous_format).eval()
    return TrainedRun(spec, net, data, history, directory, mac_table(net))
