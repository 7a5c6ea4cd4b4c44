"""Wall clock of the real early exit against the plain network, as ``make bench`` and notebook 05 time it.

Timings are interleaved repeats (plain, early exit, plain, ...), so that a noisy neighbour shows up as
spread in both columns instead of biasing one; speed-ups compare medians, and ``display`` shows each
column as "median [min-max]" in ms per image. The caller sets the thread count (one thread for every published number).
"""
from __future__ import annotations

import statistics
import time

import torch

from .device import synchronize

__all__ = ["timings", "interleaved", "speed_rows", "display", "exit_breakdown"]


def timings(fn, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn``, after one untimed warm-up call; on an accelerator
    each call is timed until its queued work is done (``device.synchronize``)."""
    fn()
    out = []
    for _ in range(repeats):
        synchronize()
        t0 = time.perf_counter()
        fn()
        synchronize()
        out.append(time.perf_counter() - t0)
    return out


def interleaved(first, second, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds of ``repeats`` calls of each of two functions, timed alternately (first, second, first,
    ...), so that a slow spell of the machine lands on both instead of biasing one."""
    a, b = [], []
    for _ in range(repeats):
        a += timings(first, 1)
        b += timings(second, 1)
    return a, b


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
    tp, te = interleaved(plain, early, repeats)
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


@torch.no_grad()
def exit_breakdown(form, x: torch.Tensor, policy, table, batch: int, repeats: int) -> list[dict]:
    """Where the early-exit forward's time goes, exit by exit, when every row goes on to the end: ms per
    image of the stages run before each exit, of its head and of the policy's decision (``decide`` on the
    batch, ``decide_one`` at batch 1, as ``early_exit`` calls them), medians over ``repeats``, beside the
    MACs that predict them (% of the plain backbone). What the MACs do not predict (the decision, and a
    head slower than its MACs) is the fixed cost each exit adds whether or not a row leaves there."""
    rows = [x[i:i + 1] for i in range(len(x))] if batch == 1 else [x[:batch]]
    k_total = form.num_exits
    times = [[[], [], []] for _ in range(k_total)]       # per exit: stages, head, decision
    for rep in range(repeats + 1):                        # the first pass warms up and is dropped
        spent = [[0.0, 0.0, 0.0] for _ in range(k_total)]
        for r in rows:
            state, t = policy.init_state(len(r)), time.perf_counter()
            for k, h in form.exit_inputs(r.contiguous(memory_format=form.input_format)):
                t1 = time.perf_counter()
                logits, gate = form.exit_output(k, h)
                t2 = time.perf_counter()
                if batch == 1:
                    _, _, state = policy.decide_one(k, k_total, logits, gate, state)
                else:
                    _, _, state = policy.decide(k, k_total, logits, gate, state)
                t3 = time.perf_counter()
                for j, d in enumerate((t1 - t, t2 - t1, t3 - t2)):
                    spent[k][j] += d
                t = time.perf_counter()
        if rep:
            for k in range(k_total):
                for j in range(3):
                    times[k][j].append(1e3 * spent[k][j] / (len(rows) * len(rows[0])))
    macs, out, previous = table.backbone_macs, [], -1
    for k in range(k_total):
        stage = form.exit_stage(k)
        stage_macs = sum(table.stage_macs[previous + 1:stage + 1])
        previous = stage
        stages, head, decision = (statistics.median(v) for v in times[k])
        out.append({"exit": k + 1, "stages ms": stages, "head ms": head, "decision ms": decision,
                    "stages MACs %": 100 * stage_macs / macs, "head MACs %": 100 * table.head_macs[k] / macs})
    return out
