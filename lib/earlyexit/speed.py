"""Wall clock of the real early exit against the plain network, as ``make bench`` and notebook 05 time it.

Timings are interleaved repeats (plain, early exit, plain, ...; at batch 1 row by row), so that a noisy
neighbour shows up as spread in both columns instead of biasing one; a speed-up is the median of the
repeats' paired ratios with its 95% interval, and ``display`` shows each column as "median [min-max]" in
ms per image. The caller sets the thread count (one thread for every published number).
Both columns run with freed memory kept for reuse (``keep_freed_memory``), as under the caching allocators
that PyTorch's CPU performance tuning guide recommends.
"""
from __future__ import annotations

import ctypes
import functools
import platform
import statistics
import time

import torch

from .device import synchronize
from .stats import median_interval

__all__ = ["timings", "interleaved", "paired_rows", "stage_times", "time_predicted_speedup", "speed_rows", "display",
           "exit_breakdown", "keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4      # glibc's mallopt parameters (malloc.h)


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for the next allocation instead of handing it back to the
    system. By default it maps every block over 32 MB afresh and unmaps it when freed, so the kernel
    zeroes those pages again at first touch on every call: at batch 256 the 32x32 activations of
    VGG-small x0.25 (33.5 MB) cost the plain network 24,546 page faults per forward and about a fifth of its
    time (1.49 against 1.13-1.21 ms per image, AMD EPYC without AVX-512, one thread), a cost that MACs do
    not model and that a caching allocator (jemalloc, tcmalloc, as PyTorch's CPU tuning guide advises)
    does not pay. The heap settles within two calls (each timing has one untimed warm-up). Process-wide
    and for good (glibc has no way back to its adaptive default): the heap keeps its peak size. Returns
    whether it applied (False where the C library is not glibc)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))


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
    """Seconds of ``repeats`` calls of each of two functions, timed alternately and in alternating
    order (first, second, second, first, ...), so that a slow spell of the machine lands on both
    instead of biasing one, and a machine speeding up or slowing down favours neither."""
    a, b = [], []
    for i in range(repeats):
        pairs = [(first, a), (second, b)]
        for fn, out in (reversed(pairs) if i % 2 else pairs):
            out += timings(fn, 1)
    return a, b


def paired_rows(first, second, rows: list, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds per repeat of ``first(row)`` and of ``second(row)`` over all ``rows``, the two timed back
    to back on each row in alternating order: a batch-1 call lasts about a millisecond while this
    kind of machine drifts by 20% over tenths of a second, so pairing row by row cancels drift that
    interleaving whole passes leaves in. The first two rows warm up untimed."""
    def clock() -> float:
        synchronize()      # on an accelerator, the queued work of the call before
        return time.perf_counter()

    for r in rows[:2]:
        first(r), second(r)
    a, b = [], []
    for _ in range(repeats):
        ta = tb = 0.0
        for i, r in enumerate(rows):
            one, two = (first, second) if i % 2 else (second, first)
            t0 = clock()
            one(r)
            t1 = clock()
            two(r)
            t2 = clock()
            d_first, d_second = (t1 - t0, t2 - t1) if i % 2 else (t2 - t1, t1 - t0)
            ta, tb = ta + d_first, tb + d_second
        a.append(ta)
        b.append(tb)
    return a, b


@torch.inference_mode()
def stage_times(backbone, batches: list[torch.Tensor], repeats: int) -> list[float]:
    """Seconds per image of each stage of the plain ``backbone`` and then of its classifier, summed over
    ``batches`` (each row alone at batch 1), medians over ``repeats`` after one warm-up pass."""
    parts = list(backbone.stages) + [backbone.classifier]
    runs = []
    for rep in range(repeats + 1):
        spent = [0.0] * len(parts)
        for h in batches:
            for i, part in enumerate(parts):
                synchronize()
                t0 = time.perf_counter()
                h = part(h)
                synchronize()
                spent[i] += time.perf_counter() - t0
        if rep:
            runs.append(spent)
    images = sum(len(b) for b in batches)
    return [statistics.median(r[i] for r in runs) / images for i in range(len(parts))]


def time_predicted_speedup(form, exits: torch.Tensor, per_stage: list[float]) -> float:
    """The speed-up a free exit would give: the plain backbone's own time over the mean time of the
    stages each row runs (its exit's stages; the classifier for rows that reach it). MACs predict
    time only as far as every stage runs as many MACs per second; this prediction needs no such
    assumption, so realised / time-predicted is what the early-exit engine itself keeps."""
    upto = [sum(per_stage[:form.exit_stage(k) + 1]) for k in range(form.num_exits)]
    upto[-1] = sum(per_stage)
    spent = torch.tensor(upto, dtype=torch.float64)[exits].mean().item()
    return sum(per_stage) / spent


@torch.inference_mode()
def speed_rows(form, x: torch.Tensor, policy, table, batch: int, repeats: int, label: dict,
               stage_timed: bool = False) -> dict:
    """Plain backbone vs real early exit of ``form`` (a network as it will be timed, normally
    ``inference_form(net)``) on ``x``: one batch of ``batch`` rows (plain and early-exit repeats
    interleaved), or ``len(x)`` rows one by one when batch is 1 (``paired_rows``; the early exit as
    ``batch_of_one``, which answers with Python ints, while the plain backbone's answer is still a
    logits tensor to read), both in inference mode. Times are ms per image, one per repeat. The realised
    speed-up is the median over repeats of plain / early-exit time, each repeat's two timings taken side by
    side, with its distribution-free 95% interval (``stats.median_interval``; NaN under 6 repeats): pairing
    cancels the machine's drift, which a ratio of the two columns' medians keeps (``display`` formats a row
    for reading). ``stage_timed`` adds the speed-up predicted by the plain backbone's stage times
    (``time_predicted_speedup``) and realised over it."""
    keep_freed_memory()
    x = x[:batch] if batch > 1 else x
    xs = x.contiguous(memory_format=form.input_format)
    if batch == 1:
        rows = [xs[i:i + 1] for i in range(len(xs))]
        run = form.batch_of_one(policy)
        tp, te = paired_rows(form.backbone, run, rows, repeats)
        exits = torch.tensor([run(r)[1] for r in rows])
    else:
        tp, te = interleaved(lambda: form.backbone(xs), lambda: form.early_exit(xs, policy, table.exit_macs), repeats)
        exits = form.early_exit(xs, policy, table.exit_macs).exit_index.cpu()
    mean_macs = torch.tensor(table.exit_macs, dtype=torch.float64)[exits].mean().item()
    predicted = table.backbone_macs / mean_macs
    realised, low, high = median_interval([p / e for p, e in zip(tp, te)])
    shares = torch.bincount(exits, minlength=len(table.exit_macs)).double() / len(exits)
    row = {**label, "batch": batch, "images": len(x), "exit shares": shares.tolist(),
           "plain ms": [1e3 * t / len(x) for t in tp], "early exit ms": [1e3 * t / len(x) for t in te],
           "predicted": predicted, "realised": realised, "realised 95% CI": [low, high],
           "realised/predicted": realised / predicted,
           "realised/predicted 95% CI": [low / predicted, high / predicted]}
    if stage_timed:
        per_stage = stage_times(form.backbone, rows if batch == 1 else [xs], repeats)
        row["time-predicted"] = time_predicted_speedup(form, exits, per_stage)
        row["realised/time-predicted"] = realised / row["time-predicted"]
    return row


def display(rows: list[dict]) -> list[dict]:
    """``speed_rows`` results for reading: ms per image as "median [min-max]", exit shares as a line, the
    95% intervals as "low-high" ("n/a" under 6 repeats)."""
    def cell(ms: list[float]) -> str:
        return f"{statistics.median(ms):.3f} [{min(ms):.3f}-{max(ms):.3f}]"

    def interval(bounds: list[float]) -> str:
        low, high = bounds
        return "n/a" if low != low else f"{low:.3f}-{high:.3f}"

    return [{**r, "exit shares": " ".join(f"{v:.2f}" for v in r["exit shares"]), "plain ms": cell(r["plain ms"]),
             "early exit ms": cell(r["early exit ms"]), "realised 95% CI": interval(r["realised 95% CI"]),
             "realised/predicted 95% CI": interval(r["realised/predicted 95% CI"])} for r in rows]


@torch.no_grad()
def exit_breakdown(form, x: torch.Tensor, policy, table, batch: int, repeats: int) -> list[dict]:
    """Where the early-exit forward's time goes, exit by exit, when every row goes on to the end:
    microseconds per image of the stages run before each exit, of its head and of the policy's decision (``decide`` on the
    batch, ``row_decider`` at batch 1, as ``early_exit`` calls them), medians over ``repeats``, beside the
    MACs that predict them (% of the plain backbone). What the MACs do not predict (the decision, and a
    head slower than its MACs) is the fixed cost each exit adds whether or not a row leaves there."""
    keep_freed_memory()
    rows = [x[i:i + 1] for i in range(len(x))] if batch == 1 else [x[:batch]]
    k_total = form.num_exits
    times = [[[], [], []] for _ in range(k_total)]       # per exit: stages, head, decision
    for rep in range(repeats + 1):                        # the first pass warms up and is dropped
        spent = [[0.0, 0.0, 0.0] for _ in range(k_total)]
        for r in rows:
            decide_row = policy.row_decider(k_total) if batch == 1 else None
            state, t = {}, time.perf_counter()
            for k, h in form.exit_inputs(r.contiguous(memory_format=form.input_format)):
                t1 = time.perf_counter()
                logits, gate = form.exit_output(k, h)
                t2 = time.perf_counter()
                if batch == 1:
                    decide_row(k, logits, gate)
                else:
                    _, _, state = policy.decide(k, k_total, logits, gate, state)
                t3 = time.perf_counter()
                for j, d in enumerate((t1 - t, t2 - t1, t3 - t2)):
                    spent[k][j] += d
                t = time.perf_counter()
        if rep:
            for k in range(k_total):
                for j in range(3):
                    times[k][j].append(1e6 * spent[k][j] / (len(rows) * len(rows[0])))
    macs, out, previous = table.backbone_macs, [], -1
    for k in range(k_total):
        stage = form.exit_stage(k)
        stage_macs = sum(table.stage_macs[previous + 1:stage + 1])
        previous = stage
        stages, head, decision = (statistics.median(v) for v in times[k])
        out.append({"exit": k + 1, "stages us": stages, "head us": head, "decision us": decision,
                    "stages MACs %": 100 * stage_macs / macs, "head MACs %": 100 * table.head_macs[k] / macs})
    return out
