"""Wall clock of the real early exit against the plain network, as ``make bench`` and notebook 05 time it.

Timings are interleaved repeats (plain, early exit, plain, ...), so that a noisy neighbour shows up as
spread in both columns instead of biasing one; speed-ups compare medians, and ``display`` shows each
column as "median [min-max]" in ms per image. The caller sets the thread count (one thread for every published number).
"""
from __future__ import annotations

import statistics
import time

import torch

__all__ = ["timings", "speed_rows", "display"]


def timings(fn, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn``, after one untimed warm-up call."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


@torch.no_grad()
def speed_rows(form, x: torch.Tensor, policy, table, batch: int, repeats: int, label: dict) -> dict:
    """Plain backbone vs real early exit of ``form`` (a network as it will be timed, normally
    ``inference_form(net)``) on ``x``: one batch of ``batch`` rows, or ``len(x)`` rows one by one
    when batch is 1. Plain and early-exit repeats are interleaved. Times are ms per image, one per
    repeat; the speed-ups compare medians (``display`` formats a row for reading)."""
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
    shares = torch.bincount(exits, minlength=len(table.exit_macs)).double() / len(exits)
    return {**label, "batch": batch, "images": len(x), "exit shares": shares.tolist(),
            "plain ms": [1e3 * t / len(x) for t in tp], "early exit ms": [1e3 * t / len(x) for t in te],
            "predicted": predicted, "realised": realised, "realised/predicted": realised / predicted}


def display(rows: list[dict]) -> list[dict]:
    """``speed_rows`` results for reading: ms per image as "median [min-max]", exit shares as a line."""
    def cell(ms: list[float]) -> str:
        return f"{statistics.median(ms):.3f} [{min(ms):.3f}-{max(ms):.3f}]"

    return [{**r, "exit shares": " ".join(f"{v:.2f}" for v in r["exit shares"]), "plain ms": cell(r["plain ms"]),
             "early exit ms": cell(r["early exit ms"])} for r in rows]
