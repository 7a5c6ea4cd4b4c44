"""Wall clock of the real early exit against the plain network, as ``make bench`` and notebook 05 time it.

Timings are medians of interleaved repeats (plain, early exit, plain, ...), so that a noisy neighbour
shows up as spread in both columns instead of biasing one; each cell reads "median [min-max]" in ms
per image. The caller sets the thread count (one thread for every published number).
"""
from __future__ import annotations

import statistics
import time

import torch

__all__ = ["timings", "speed_rows"]


def timings(fn, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn``, after one untimed warm-up call."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _cell(times: list[float], per: int) -> str:
    ms = [1e3 * t / per for t in times]
    return f"{statistics.median(ms):.3f} [{min(ms):.3f}-{max(ms):.3f}]"


@torch.no_grad()
def speed_rows(form, x: torch.Tensor, policy, table, batch: int, repeats: int, label: dict) -> dict:
    """Plain backbone vs real early exit of ``form`` (a network as it will be timed, normally
    ``inference_form(net)``) on ``x``: one batch of ``batch`` rows, or ``len(x)`` rows one by one
    when batch is 1. Plain and early-exit repeats are interleaved."""
    x = x[:batch] if batch > 1 else x
    xs = x.contiguous(memory_format=form.input_format)
    if batch == 1:
        rows = [xs[i:i + 1] for i in range(len(xs))]
        plain = lambda: [form.backbone(r) for r in rows]  # noqa: E731
        early = lambda: [form.early_exit(r, policy, table.exit_macs) for r in rows]  # noqa: E731
    else:
        plain = lambda: form.backbone(xs)  # noqa: E731
        early = lambda: form.early_exit(xs, policy, table.exit_macs)  # noqa: E731
    tp, te = [], []
    for _ in range(repeats):
        tp += timings(plain, 1)
        te += timings(early, 1)
    result = early()
    exits = torch.cat([r.exit_index for r in result]) if batch == 1 else result.exit_index
    mean_macs = torch.tensor(table.exit_macs, dtype=torch.float64)[exits].mean().item()
    predicted = table.backbone_macs / mean_macs
    realised = statistics.median(tp) / statistics.median(te)
    shares = torch.bincount(exits, minlength=len(table.exit_macs)).float() / len(exits)
    return {**label, "batch": batch, "exit shares": " ".join(f"{s:.2f}" for s in shares.tolist()),
            "plain ms/img": _cell(tp, len(x)), "early exit ms/img": _cell(te, len(x)),
            "predicted": predicted, "realised": realised, "realised/predicted": realised / predicted}
