"""A rehearsal of a profile: every notebook end to end with that profile's parameters, at a tiny cost.

``python -m earlyexit.reproduce --profile paper --rehearse`` sets ``EARLYEXIT_REHEARSAL=1`` for the
notebooks it runs. Then every training stops after ``MAX_STEPS`` optimiser steps, every split is cut
to at most ``TRAIN_IMAGES`` / ``EVAL_IMAGES`` images, random threshold searches to
``THRESHOLD_VECTORS`` vectors, lists of repetitions (``REPEATED``: seeds, the
lambda grid) keep their first two entries, a data set that is not available offline is
replaced by a synthetic stand-in of the same shape and class count (never written to the data
cache), trainings go to their own artifacts root (``<artifacts>-rehearsal``, so nothing from a
rehearsal can enter a real run's cache) and reports and figures to ``<profile>-rehearsal``. Each
notebook says so at its top. A GPU user can thus find a crash of the paper profile in minutes on a
CPU, not hours into the real run.
"""
from __future__ import annotations

import os

__all__ = ["ENV", "MAX_STEPS", "BATCH", "JOBS", "MINUTES", "longest_first", "TRAIN_IMAGES", "EVAL_IMAGES", "LATENCY_IMAGES", "THRESHOLD_VECTORS", "REPEATED", "active",
           "output_profile", "cap", "trim_repeats", "banner"]

ENV = "EARLYEXIT_REHEARSAL"
MAX_STEPS = 2          # optimiser steps per training (scheduler fits included)
BATCH = 16             # training batch size at most (the code path is the same at any batch size)
TRAIN_IMAGES = 64      # training images per data set (at least two of every class)
EVAL_IMAGES = 32       # validation and test images per data set
LATENCY_IMAGES = 8     # images timed one by one
THRESHOLD_VECTORS = 256  # random per-exit threshold vectors per search (evaluate.random_thresholds)
# List parameters whose entries all run the same code (repetitions over seeds, a sweep over the lambda
# grid): a rehearsal keeps their first two entries, which still runs every aggregation over them.
REPEATED = ("seeds", "scheduler_seeds", "unsup_seeds", "lambda_grid")
JOBS = 2               # notebooks rehearsed at once by default (one process and one thread each)
# Minutes each notebook's paper rehearsal took (2 at a time, 1 thread each, AMD EPYC): only the order in
# which ``reproduce --rehearse`` starts them, longest first, so that two processes finish together.
MINUTES = {"02": 9.4, "03": 5.3, "01": 3.5, "05": 1.1, "00": 0.3, "04": 0.5}


def longest_first(notebook: str) -> float:
    """Sort key: the notebooks that take longest first, unknown ones after them."""
    return -MINUTES.get(notebook, 0.0)


def active() -> bool:
    return os.environ.get(ENV) == "1"


def output_profile(profile: str) -> str:
    """Where a profile's reports and figures go: ``<profile>-rehearsal`` during a rehearsal."""
    return f"{profile}-rehearsal" if active() and not profile.endswith("-rehearsal") else profile


def cap(n: int | None, limit: int) -> int | None:
    """``n`` items at most ``limit`` during a rehearsal (None: all, so the limit itself)."""
    if not active():
        return n
    return limit if n is None else min(n, limit)


def trim_repeats(params: dict) -> dict:
    """The ``REPEATED`` parameters of ``params`` cut to their first two entries during a rehearsal
    (only those that change); an empty dict otherwise."""
    if not active():
        return {}
    return {name: list(params[name])[:2] for name in REPEATED
            if isinstance(params.get(name), (list, tuple)) and len(params[name]) > 2}


def banner(profile: str, stand_ins: list[str], trimmed: dict | None = None) -> str:
    """The notice each rehearsed notebook prints at its top."""
    subs = ", ".join(stand_ins) if stand_ins else "none (every data set was available offline)"
    cut = "; ".join(f"{k} cut to {v}" for k, v in (trimmed or {}).items())
    return (f"REHEARSAL of profile {profile!r}: every training stops after {MAX_STEPS} optimiser steps (batches of at most "
            f"{BATCH}), splits are cut to "
            f"{TRAIN_IMAGES} training and {EVAL_IMAGES} validation/test images, random threshold searches to "
            f"{THRESHOLD_VECTORS} vectors"
            f"{'; ' + cut if cut else ''}; numbers mean nothing. "
            f"Synthetic stand-ins for data not available offline: {subs}. Outputs go to reports/"
            f"{output_profile(profile)}/ and figures/{output_profile(profile)}/.")
