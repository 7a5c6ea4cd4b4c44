"""Benchmarks printed as tables (``make benchmark``), never asserted by timed tests.

1. Training throughput of the primer network (notebook 00, cpu profile) in float32 vs bf16 autocast +
   channels_last, 2 threads, batch 256: the measured gain of the mixed-precision option.
2. Backbone quality at CPU scale: the cpu-profile primer run (trained once and cached, the same run the
   notebook uses) on the CIFAR-10 copy: training minutes and test accuracy of the final exit, plain and
   with horizontal-flip test-time augmentation. Goal: at least 88% within 15 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import inspect
import time

import torch

from .losses import build_loss
from .plans import primer
from .reproduce import _table, default_parameters, notebooks
from .train import build_model, bf16_supported, train_cached

__all__ = ["primer_spec", "throughput", "flip_tta_accuracy", "main"]


def primer_spec():
    params = default_parameters(notebooks()["00"])
    accepted = inspect.signature(primer.plan).parameters
    return primer.plan(**{k: v for k, v in params.items() if k in accepted})[0]


def throughput(spec, bf16: bool, channels_last: bool, steps: int = 6, batch: int = 256) -> float:
    """Training images per second on random data (after two warm-up steps)."""
    net = build_model(spec.model, 10, 3, 32)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    loss_fn = build_loss(spec.loss.name, net.num_exits, **spec.loss.options)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


@torch.no_grad()
def flip_tta_accuracy(net, loader) -> float:
    """Final-exit accuracy averaging the logits of each image and its mirror image."""
    correct = n = 0
    for x, y in loader:
        z = net(x).logits[-1] + net(x.flip(3)).logits[-1]
        correct += (z.argmax(1) == y).sum().item()
        n += len(y)
    return correct / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m earlyexit.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-training", action="store_true", help="only the throughput table")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = primer_spec()
    rows = [{"precision": "float32", "channels_last": False, "img/s": throughput(spec, False, False)}]
    if bf16_supported():
        rows.append({"precision": "bf16 autocast", "channels_last": True, "img/s": throughput(spec, True, True)})
    print(f"training throughput, {spec.model.backbone} x{spec.model.width}, batch 256, {args.threads} threads")
    print(_table(rows))
    if len(rows) == 2:
        print(f"bf16 + channels_last speed-up: {rows[1]['img/s'] / rows[0]['img/s']:.2f}x")
    if args.skip_training:
        return 0
    run = train_cached(spec)
    test = run.outputs("test")
    result = [{"network": f"{spec.model.backbone} x{spec.model.width}", "epochs": spec.train.epochs,
               "train min": run.train_seconds / 60, "threads": run.history[-1]["threads"],
               "bf16": run.history[-1]["bf16"], "test acc": f"{100 * test.exit_accuracies()[-1]:.2f}%",
               "test acc (flip TTA)": f"{100 * flip_tta_accuracy(run.net, run.loader('test')):.2f}%",
               "goal": ">= 88% within 15 min"}]
    print(f"\nbackbone quality on {run.data.describe()}")
    print(_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
