"""Batch runner: execute the notebooks of a profile with papermill.

    python -m earlyexit.reproduce --profile smoke|cpu|paper [--only 00,03] [--dry-run]
    python -m earlyexit.reproduce --profile cpu --check [--only 00] [--fresh] [--scratch DIR]

Executed notebooks go to reports/<profile>/, figures to figures/<profile>/ (written by the notebooks;
both under ``EARLYEXIT_OUTPUT`` instead of the project root when it is set), and a summary table is
printed at the end: status, minutes and the trainings each notebook trained or found finished in the
cache (``train_cached`` notes each run in the file named by ``EARLYEXIT_TRAINING_LOG``), followed by
reports/<profile>/SUMMARY.md (claims with verdicts, paper numbers beside ours). Unknown profiles,
notebooks or parameters fail before anything runs. ``--dry-run`` builds every model and data spec of the
profile without training or loading data.

``--check`` reruns the chosen notebooks into a scratch folder (never over the committed reports; reusing
the artifacts cache, or with ``--fresh`` on an empty artifacts root) and compares every number of each
new metrics file with the committed reports/<profile>/<notebook>_metrics.json, printing what moved and by
how much; the exit status is 1 when anything moved beyond tolerance. Timings (any key naming seconds,
minutes, time, latency, speed, throughput, or ending in ``_s``/``_ms``, and any paper-vs-ours row whose
``quantity`` names one, such as 03's batch-1 speed-up) and the ``environment`` are never compared; strings
are not compared; a list that changed length counts as moved. The rule:

- **Same machine** (the two files' ``environment`` name the same CPU model, thread count and torch
  build): every number must be bit-identical as written (6 decimals). The training loop, the data order
  and the evaluation are seeded and deterministic on one CPU with one thread count.
- **Otherwise** (another CPU generation has other bf16 and float32 kernels, another thread count sums
  in another order): each number may move by the largest of ``ABS_TOL`` (0.01, one point of accuracy),
  ``REL_TOL`` (1% of the committed value) and ``SPREAD_FACTOR`` (3) times its seed-to-seed standard
  deviation where the metrics record one (``metrics.seed_spread``: path inside ``metrics`` -> standard
  deviation over training seeds; the primer records it for every exit's accuracy and its max-softmax
  operating point). Example: a fresh clone of notebook 00 on another machine gave final-exit accuracy
  88.30% against the committed 88.20% and exit 2 79.99% against 80.19% (within one point: passes) and
  chose threshold 0.625 against 0.6 (one step of its 0.025 grid: passes only when the seeds' own
  thresholds spread by at least a third of that, otherwise it is reported as moved).

While a notebook runs, the terminal shows one line per training epoch (run, epoch k/n, loss, validation
accuracy, elapsed and estimated time left) and, on a terminal, one status line rewritten in place (the
current cell, its time, the live progress bar). Everything the notebook prints goes to
reports/<profile>/logs/<notebook>.log. A failing notebook is summarised in a few lines: the cell, the
error, the executed copy and the log. Saved notebooks and logs name paths relative to the project root.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

from . import rehearsal
from .paths import machine_prefixes, portable
from .parameters import (THREADS_ENV, ConfigError, call_plan, default_parameters, notebooks, plan_module,
                         resolve_parameters, select)
from .profiles import PROFILE_NAMES
from .progress import ENGINE, LogHandler, Progress, failure_summary, register_engine

__all__ = ["notebooks", "resolve_parameters", "dry_run", "run", "check", "compare_reports", "compare_metrics",
           "main", "make_portable_notebook"]


def dry_run(profile: str, chosen: dict[str, Path]) -> list[dict]:
    """Build every model and data spec a profile asks for, count MACs, train nothing."""
    from .data import DATASET_SHAPES
    from .macs import mac_table
    from .train import build_model
    rows = []
    for nb_id, path in chosen.items():
        params = {**default_parameters(path), **resolve_parameters(path, profile)}
        specs = call_plan(plan_module(path).plan, params)
        for spec in specs:
            classes, channels, size = DATASET_SHAPES[spec.data.name]
            net = build_model(spec.model, classes, channels, size)
            macs = mac_table(net)
            rows.append({"notebook": path.stem, "run": spec.name, "data": spec.data.name,
                         "backbone": f"{spec.model.backbone} x{spec.model.width}", "exits": net.num_exits,
                         "MMACs": macs.backbone_macs / 1e6, "epochs": spec.train.epochs})
    return rows


# ---------------------------------------------------------------- executed notebooks without machine paths
def _portable_value(value, prefixes):
    if isinstance(value, str):
        return portable(value, prefixes)
    if isinstance(value, list):
        return [_portable_value(v, prefixes) for v in value]
    return value


_BINARY_MIME = ("image/png", "image/jpeg", "application/pdf")


def make_portable_notebook(path: Path, source: Path | None = None) -> None:
    """Rewrite an executed notebook so that no absolute path of this machine remains: papermill's
    input/output paths become project-relative, and text outputs and tracebacks lose machine prefixes. The
    progress bars' widget states are dropped (a notebook that trains many runs saved thousands of them,
    megabytes); each bar keeps its text form."""
    import nbformat
    nb = nbformat.read(str(path), as_version=4)
    nb.metadata.pop("widgets", None)
    prefixes = machine_prefixes()
    meta = nb.metadata.get("papermill", {})
    if "input_path" in meta and source is not None:
        meta["input_path"] = portable(str(source), prefixes)
    if "output_path" in meta:
        meta["output_path"] = portable(str(path), prefixes)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = _portable_value(out["text"], prefixes)
            for key in ("evalue", "traceback"):
                if key in out:
                    out[key] = _portable_value(out[key], prefixes)
            for mime, value in out.get("data", {}).items():
                if mime not in _BINARY_MIME and isinstance(value, (str, list)):
                    out["data"][mime] = _portable_value(value, prefixes)
    nbformat.write(nb, str(path))


def _relative(path: Path) -> str:
    return portable(str(path))


TIMINGS = "timings.json"   # reports/<profile>/: minutes per notebook of the latest run of each, and the machine


def record_timings(profile: str, results: list[dict]) -> Path:
    """Merge the runner's rows into reports/<profile>/timings.json: per notebook, the latest run's minutes,
    trainings and the machine it ran on (``make bench`` prints them)."""
    import torch
    from .device import cpu_model
    from .studies.report import reports_dir
    path = reports_dir(profile) / TIMINGS
    try:
        done = json.loads(path.read_text())
    except (OSError, ValueError):
        done = {}
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
               "threads": os.environ.get(THREADS_ENV, "the notebook's threads parameter")}
    for r in results:
        done[r["notebook"]] = {**{k: r[k] for k in ("status", "minutes", "trained", "reused")}, **machine}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(sorted(done.items())), indent=1) + "\n")
    return path


def run(profile: str, chosen: dict[str, Path], out: TextIO | None = None, tty: bool | None = None,
        record: bool = True) -> list[dict]:
    """Execute the chosen notebooks on ``profile``, showing live progress on ``out`` (stdout); ``record``:
    merge the minutes per notebook into reports/<profile>/timings.json."""
    import papermill
    from .studies.report import write_summary
    from .studies.report import reports_dir
    from .train import USE_LOG_ENV
    out = out or sys.stdout
    out_dir = reports_dir(profile)   # reports/<profile>/, under EARLYEXIT_OUTPUT when set (``--check``)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(path, resolve_parameters(path, profile)) for path in chosen.values()]  # validate all first
    register_engine()
    absolute_folder_settings()
    os.environ["EARLYEXIT_PROGRESS_LINES"] = "1"   # every training's epoch lines reach the terminal
    results = []
    for i, (path, params) in enumerate(jobs, 1):
        executed, log_path = out_dir / path.name, out_dir / "logs" / f"{path.stem}.log"
        print(f"[{i}/{len(jobs)}] {path.stem} (profile {profile}); log: {_relative(log_path)}", file=out, flush=True)
        progress = Progress(path.stem, log_path, out=out, tty=tty)
        # papermill's own messages (e.g. parameters it could not parse) go to the log, not the terminal
        handler = LogHandler(progress)
        pm_logger = logging.getLogger("papermill")
        pm_logger.addHandler(handler)
        t0 = time.perf_counter()
        status, failure = "ok", None
        uses = Path(tempfile.mkstemp(prefix=f"{path.stem}-trainings-", suffix=".jsonl")[1])
        previous_log = os.environ.get(USE_LOG_ENV)
        os.environ[USE_LOG_ENV] = str(uses)   # the kernel inherits it; train_cached notes each run there
        try:
            papermill.execute_notebook(str(path), str(executed), parameters=params, cwd=str(path.parent),
                                       kernel_name="python3", progress_bar=False, engine_name=ENGINE,
                                       progress=progress)
        except Exception as exc:  # keep going; report at the end
            ename = getattr(exc, "ename", exc.__class__.__name__)
            evalue = str(getattr(exc, "evalue", "") or (str(exc).splitlines() or [""])[0])
            status = f"FAILED: {ename}: {portable(evalue)[:120]}"
            failure = exc
        finally:
            pm_logger.removeHandler(handler)
            progress.close()
            if executed.exists():
                make_portable_notebook(executed, path)
            _restore_env(USE_LOG_ENV, previous_log)
        minutes = (time.perf_counter() - t0) / 60
        trained, reused = training_counts(uses)
        uses.unlink(missing_ok=True)
        results.append({"notebook": path.stem, "status": status, "minutes": minutes, "trained": trained,
                        "reused": reused})
        if failure is not None:
            for line in failure_summary(failure, executed, log_path):
                print(line, file=out)
        print(f"[{i}/{len(jobs)}] {path.stem}: {status} in {minutes:.1f} min", file=out, flush=True)
    summary = write_summary(profile)
    if record:
        record_timings(profile, results)
    print(f"\nprofile {profile}: executed notebooks in {_relative(out_dir)}, logs in {_relative(out_dir / 'logs')}, "
          f"comparisons in {_relative(summary)}", file=out)
    return results


def run_parallel(profile: str, chosen: dict[str, Path], jobs: int, out: TextIO | None = None) -> list[dict]:
    """A rehearsal's notebooks in up to ``jobs`` runner processes at once, one notebook each, the longest
    first (``rehearsal.longest_first``), each started as an earlier one ends; every line a child prints reaches ``out`` prefixed by its notebook. Only
    for rehearsals: there notebooks share no training, so two processes never train the same run."""
    import subprocess
    from .studies.report import write_summary
    out = out or sys.stdout
    lock = threading.Lock()

    def relay(nb: str, stream) -> None:
        for line in stream:
            with lock:
                print(f"{nb}| {line.rstrip()}", file=out, flush=True)

    pending, running, results = sorted(chosen, key=rehearsal.longest_first), [], []
    while pending or running:
        while pending and len(running) < jobs:
            nb = pending.pop(0)
            result_file = Path(tempfile.mkstemp(prefix=f"{nb}-results-", suffix=".json")[1])
            child = subprocess.Popen([sys.executable, "-m", "earlyexit.reproduce", "--profile", profile, "--only", nb,
                                      "--rehearse", "--results", str(result_file)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "EARLYEXIT_THREADS": "1"})
            reader = threading.Thread(target=relay, args=(nb, child.stdout), daemon=True)
            reader.start()
            running.append((nb, child, reader, result_file))
        time.sleep(0.5)
        for entry in [e for e in running if e[1].poll() is not None]:
            nb, child, reader, result_file = entry
            reader.join()
            running.remove(entry)
            text = result_file.read_text() if result_file.exists() else ""
            result_file.unlink(missing_ok=True)
            results += json.loads(text) if text.strip() else [{"notebook": chosen[nb].stem, "minutes": 0.0, "trained": 0,
                                                               "reused": 0, "status": f"FAILED: runner exit {child.returncode}"}]
    order = [p.stem for p in chosen.values()]
    results.sort(key=lambda r: order.index(r["notebook"]) if r["notebook"] in order else len(order))
    summary = write_summary(profile)
    record_timings(profile, results)
    print(f"\nprofile {profile}: {len(results)} notebook(s) in {jobs} processes; comparisons in {_relative(summary)}",
          file=out)
    return results


def training_counts(log: Path) -> tuple[int, int]:
    """(trained, reused) distinct runs in a notebook's training log (see ``train._note_use``): a run
    counts as reused when every call found it finished in the cache, as trained when one call trained
    or resumed it."""
    if not log.exists():
        return 0, 0
    reused: dict[str, bool] = {}
    for line in log.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            reused[entry["run"]] = reused.get(entry["run"], True) and entry["reused"]
    return sum(not r for r in reused.values()), sum(reused.values())


FOLDER_SETTINGS = ("EARLYEXIT_OUTPUT", "EARLYEXIT_ARTIFACTS", "EARLYEXIT_DATA", "EARLYEXIT_LOCAL_DATA")


def absolute_folder_settings() -> None:
    """Make the folder variables absolute: a notebook's kernel runs in notebooks/, where a relative
    path given on the command line (``--scratch out``, ``EARLYEXIT_ARTIFACTS=cache``) would point elsewhere."""
    for name in FOLDER_SETTINGS:
        if os.environ.get(name):
            os.environ[name] = os.path.abspath(os.environ[name])


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


# ---------------------------------------------------------------- --check: rerun and compare
ABS_TOL = 0.01        # default absolute tolerance: one point of accuracy (a fraction in [0, 1])
REL_TOL = 0.01        # default relative tolerance: 1% of the committed value (MACs, counts, anything unbounded)
SPREAD_FACTOR = 3     # a value with a measured seed spread sd may move by SPREAD_FACTOR * sd
# keys never compared: top-level fields that describe the run, and any key naming a time or a speed
_NOT_COMPARED_TOP = ("notebook", "profile", "environment")
_TIMING_KEY = re.compile(r"(second|minute|hour|time|latency|speed|throughput|elapsed|duration|wall"
                         r"|_s$|_ms$|^s$|^ms$)", re.I)
# what must agree for a rerun to be bit-identical: the same CPU, thread count and torch build
_SAME_MACHINE = ("machine", "cpu", "threads", "torch")


def numeric_leaves(body: dict) -> dict[str, float | None]:
    """Every number of a metrics file by dotted path (``metrics.exit_accuracy_test.2``), without the
    environment and without timings; ``None`` where a metric is missing, strings left out. A list is also
    recorded by its length (``<path>#len``) so a list that grew or shrank is seen."""
    leaves: dict[str, float | None] = {}

    def walk(value, path: str, key: str) -> None:
        if key and _TIMING_KEY.search(key):
            return
        if isinstance(value, bool):
            leaves[path] = float(value)
        elif isinstance(value, (int, float)):
            leaves[path] = float(value)
        elif value is None:
            leaves[path] = None
        elif isinstance(value, dict):
            if _TIMING_KEY.search(str(value.get("quantity", ""))):   # a paper-vs-ours row of a timing
                return
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else str(k), str(k))
        elif isinstance(value, list):
            leaves[f"{path}#len"] = float(len(value))
            for i, v in enumerate(value):
                walk(v, f"{path}.{i}", "")

    for key, value in body.items():
        if key not in _NOT_COMPARED_TOP:
            walk(value, key, key)
    return leaves


def same_machine(committed: dict, fresh: dict) -> bool:
    """Whether two metrics files were measured where results are bit-identical: same CPU model, thread
    count and torch build (as recorded in their ``environment``; an older file without the CPU model
    counts as another machine)."""
    a, b = committed.get("environment", {}), fresh.get("environment", {})
    return all(k in a and a.get(k) == b.get(k) for k in _SAME_MACHINE)


def tolerance(path: str, committed: float, spread: dict[str, float]) -> float:
    """Allowed absolute change of one value on another machine: the larger of ``ABS_TOL``, ``REL_TOL``
    times the committed value and ``SPREAD_FACTOR`` times the value's measured seed-to-seed standard
    deviation (``metrics.seed_spread``, keyed by path inside ``metrics``) where the file records one."""
    sd = spread.get(path.removeprefix("metrics."), 0.0) or 0.0
    return max(ABS_TOL, REL_TOL * abs(committed), SPREAD_FACTOR * sd)


def compare_metrics(committed: dict, fresh: dict) -> tuple[str, list[dict]]:
    """The comparison rule (``exact`` or ``tolerance``) and every value that changed:
    ``{path, committed, fresh, change, allowed, beyond}``; ``beyond`` marks a move past the allowed change."""
    exact = same_machine(committed, fresh)
    spread = {k: v for k, v in (committed.get("metrics", {}).get("seed_spread") or {}).items()
              if isinstance(v, (int, float))}
    old, new = numeric_leaves(committed), numeric_leaves(fresh)
    rows = []
    for path in sorted(set(old) | set(new), key=lambda p: (p.split(".")[0], p)):
        a, b = old.get(path, "missing"), new.get(path, "missing")
        if a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
            continue
        numbers = isinstance(a, float) and isinstance(b, float)
        allowed = 0.0 if exact or not numbers or path.endswith("#len") else tolerance(path, a, spread)
        change = b - a if numbers else None
        rows.append({"path": path, "committed": a, "fresh": b, "change": change, "allowed": allowed,
                     "beyond": change is None or abs(change) > allowed})
    return ("exact" if exact else "tolerance"), rows


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def report_check(name: str, committed: dict, fresh: dict, out: TextIO, shown: int = 10) -> bool:
    """Print what moved in one notebook's metrics; True when nothing moved beyond tolerance."""
    rule, rows = compare_metrics(committed, fresh)
    beyond = [r for r in rows if r["beyond"]]
    within = sorted((r for r in rows if not r["beyond"]), key=lambda r: -abs(r["change"]) / max(r["allowed"], 1e-12))
    how = ("bit-identical required (same CPU, thread count and torch)" if rule == "exact" else
           "within tolerance (another machine, thread count or torch build)")
    print(f"  {name}: {len(numeric_leaves(committed))} values compared, {how}: "
          f"{len(beyond)} moved beyond it, {len(within)} moved within it", file=out)
    for r in beyond:
        change = f"{r['change']:+.6g}, allowed {r['allowed']:.4g}" if r["change"] is not None else "not comparable"
        print(f"    MOVED {r['path']}: {_fmt(r['committed'])} -> {_fmt(r['fresh'])} ({change})", file=out)
    for r in within[:shown]:
        print(f"    within {r['path']}: {_fmt(r['committed'])} -> {_fmt(r['fresh'])} ({r['change']:+.6g}, "
              f"allowed {r['allowed']:.4g})", file=out)
    if len(within) > shown:
        print(f"    ... and {len(within) - shown} more within tolerance", file=out)
    return not beyond


def check(profile: str, chosen: dict[str, Path], fresh: bool = False, scratch: Path | None = None,
          out: TextIO | None = None, tty: bool | None = None) -> tuple[int, list[dict]]:
    """Rerun the chosen notebooks into ``scratch`` (a new temporary folder unless given; with ``fresh``,
    on an empty artifacts root inside it) and compare each metrics file with the committed one in
    reports/<profile>/. Returns the exit status (0: nothing moved beyond tolerance) and the run's rows."""
    from .studies.report import reports_dir
    out = out or sys.stdout
    committed_dir = reports_dir(profile)
    scratch = Path(scratch) if scratch is not None else Path(tempfile.mkdtemp(prefix="earlyexit-check-"))
    if scratch.resolve() == committed_dir.parent.parent.resolve():
        raise ConfigError("the check's scratch folder cannot be the one holding the committed reports")
    saved = {k: os.environ.get(k) for k in ("EARLYEXIT_OUTPUT", "EARLYEXIT_ARTIFACTS")}
    os.environ["EARLYEXIT_OUTPUT"] = str(scratch)
    if fresh:
        os.environ["EARLYEXIT_ARTIFACTS"] = str(scratch / "artifacts")
    print(f"check of profile {profile}: rerunning into {scratch} "
          f"({'from scratch, empty artifacts root' if fresh else 'reusing the artifacts cache'}); "
          f"committed metrics in {_relative(committed_dir)}", file=out, flush=True)
    try:
        results = run(profile, chosen, out=out, tty=tty)
        fresh_dir = reports_dir(profile)
    finally:
        for k, v in saved.items():
            _restore_env(k, v)
        if fresh:
            shutil.rmtree(scratch / "artifacts", ignore_errors=True)
    failed = [r["notebook"] for r in results if r["status"] != "ok"]
    status = compare_reports(committed_dir, fresh_dir, [p.stem for p in chosen.values() if p.stem not in failed], out)
    for name in failed:
        print(f"  {name}: the rerun failed, nothing to compare", file=out)
    ok = status == 0 and not failed
    print(f"check {'passed' if ok else 'FAILED'}: fresh reports kept in {scratch}", file=out, flush=True)
    return (0 if ok else 1), results


def compare_reports(committed_dir: Path, fresh_dir: Path, names: list[str], out: TextIO | None = None) -> int:
    """Compare ``<name>_metrics.json`` of each notebook in two report folders; the exit status of
    ``--check`` (1 when a value moved beyond tolerance or a metrics file is missing)."""
    out = out or sys.stdout
    print("\ncomparison with the committed metrics (timings and environment are not compared):", file=out)
    ok = True
    for name in names:
        ref, new = Path(committed_dir) / f"{name}_metrics.json", Path(fresh_dir) / f"{name}_metrics.json"
        if not new.exists():
            print(f"  {name}: the rerun wrote no metrics", file=out)
            ok = False
        elif not ref.exists():
            print(f"  {name}: no committed metrics in {_relative(Path(committed_dir))} to compare with", file=out)
            ok = False
        else:
            ok &= report_check(name, json.loads(ref.read_text()), json.loads(new.read_text()), out)
    return 0 if ok else 1


def _table(rows: list[dict]) -> str:
    if not rows:
        return "(nothing)"
    cols = list(dict.fromkeys(c for r in rows for c in r))   # every row's columns, in order of appearance
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    widths = {c: max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(fmt(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m earlyexit.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help=f"one of {', '.join(PROFILE_NAMES)} (default cpu)")
    parser.add_argument("--only", help="comma-separated notebook ids, e.g. 00,03")
    parser.add_argument("--dry-run", action="store_true", help="build every model and data spec, train nothing")
    parser.add_argument("--rehearse", action="store_true",
                        help=f"run every notebook end to end at a tiny cost: trainings stop after {rehearsal.MAX_STEPS} "
                             f"steps, splits shrink to a few hundred images, missing data become synthetic stand-ins")
    parser.add_argument("--check", action="store_true",
                        help="rerun into a scratch folder and compare every metric with the committed "
                             "reports/<profile>/ within tolerance; exit status 1 when anything moved beyond it")
    parser.add_argument("--fresh", action="store_true",
                        help="with --check: train everything again on an empty artifacts root")
    parser.add_argument("--scratch", help="with --check: where the rerun's reports and figures go "
                                          "(default: a new temporary folder)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="with --rehearse: run up to this many notebooks at once, one process and one thread "
                             f"each, the longest first (default {rehearsal.JOBS})")
    parser.add_argument("--results", help=argparse.SUPPRESS)   # a child of --jobs writes its result rows here
    args = parser.parse_args(argv)
    if (args.fresh or args.scratch) and not args.check:
        parser.error("--fresh and --scratch go with --check")
    if args.jobs is None:   # a --jobs child (it has --results) runs its one notebook itself
        args.jobs = rehearsal.JOBS if args.rehearse and not args.results else 1
    if args.jobs < 1 or (args.jobs > 1 and not args.rehearse):
        parser.error("--jobs N (N >= 1) goes with --rehearse: a real run's notebooks share trainings")
    if args.rehearse:
        os.environ[rehearsal.ENV] = "1"   # read by the library in this process and in the notebooks' kernels
    try:
        if args.profile not in PROFILE_NAMES:
            raise ConfigError(f"unknown profile {args.profile!r}; choose one of {', '.join(PROFILE_NAMES)}")
        chosen = select(args.only)
        if args.dry_run:
            rows = dry_run(args.profile, chosen)
            print(_table(rows))
            print(f"\ndry run of profile {args.profile}: {len(rows)} run(s) across {len(chosen)} notebook(s) built")
            return 0
        if args.check:
            status, results = check(args.profile, chosen, fresh=args.fresh, scratch=args.scratch)
        else:
            results = (run_parallel(args.profile, chosen, args.jobs) if args.jobs > 1 and len(chosen) > 1
                       else run(args.profile, chosen, record=not args.results))   # a --jobs child: its parent records
            status = 0 if all(r["status"] == "ok" for r in results) else 1
            if args.results:
                Path(args.results).write_text(json.dumps(results))
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n" + _table(results))
    print(f"{sum(r['minutes'] for r in results):.1f} min in all; trainings: {sum(r['trained'] for r in results)} "
          f"trained, {sum(r['reused'] for r in results)} reused from the cache")
    return status


if __name__ == "__main__":
    sys.exit(main())
