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
import html
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
from .paths import project_root
from .parameters import (THREADS_ENV, ConfigError, call_plan, default_parameters, notebooks, plan_module,
                         resolve_parameters, select)
from .profiles import PROFILE_NAMES

__all__ = ["notebooks", "resolve_parameters", "dry_run", "run", "check", "compare_reports", "compare_metrics",
           "main", "Progress", "portable", "make_portable_notebook"]


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


# ---------------------------------------------------------------- portable paths
def _machine_prefixes() -> list[tuple[str, str]]:
    """Absolute prefixes of this machine and what to write instead, longest first."""
    root = str(project_root())
    pairs = {root + os.sep: "", root: "."}
    for env, name in (("EARLYEXIT_LOCAL_DATA", "$EARLYEXIT_LOCAL_DATA"), ("EARLYEXIT_ARTIFACTS", "$EARLYEXIT_ARTIFACTS"),
                      ("EARLYEXIT_DATA", "$EARLYEXIT_DATA")):
        if os.environ.get(env):
            pairs.setdefault(str(Path(os.environ[env]).resolve()) + os.sep, name + "/")
            pairs.setdefault(os.environ[env].rstrip(os.sep) + os.sep, name + "/")
    pairs.setdefault(sys.prefix + os.sep, "<python>/")
    pairs.setdefault(tempfile.gettempdir() + os.sep, "<tmp>/")
    pairs.setdefault(str(Path.home()) + os.sep, "~/")
    return sorted(pairs.items(), key=lambda kv: -len(kv[0]))


def portable(text: str, prefixes: list[tuple[str, str]] | None = None) -> str:
    """``text`` with this machine's absolute prefixes (project root, data folders, interpreter, temp, home)
    replaced by relative or symbolic forms."""
    for prefix, replacement in prefixes or _machine_prefixes():
        if prefix in text:
            text = text.replace(prefix, replacement)
    return text


def _portable_value(value, prefixes):
    if isinstance(value, str):
        return portable(value, prefixes)
    if isinstance(value, list):
        return [_portable_value(v, prefixes) for v in value]
    return value


_BINARY_MIME = ("image/png", "image/jpeg", "application/pdf")


def make_portable_notebook(path: Path, source: Path | None = None) -> None:
    """Rewrite an executed notebook so that no absolute path of this machine remains: papermill's
    input/output paths become project-relative, and text outputs and tracebacks lose machine prefixes."""
    import nbformat
    nb = nbformat.read(str(path), as_version=4)
    prefixes = _machine_prefixes()
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


# ---------------------------------------------------------------- live progress
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# printed by train.py once per epoch: "<run> epoch k/n: loss L, val acc (final exit) A, S s"
_EPOCH_LINE = re.compile(r"^(?P<run>\S.*?) epoch (?P<k>\d+)/(?P<n>\d+): (?P<rest>.*)$")
_LOSS = re.compile(r"\bloss (?P<v>[-+0-9.einfa]+)")
_VAL_ACC = re.compile(r"\bval acc[^0-9]*(?P<v>[0-9.]+)")
_BUDGET_LEFT = re.compile(r"\btime budget (?P<v>[0-9.]+) s left")   # a wall-clock-budgeted training ends by then
_STOPPED = re.compile(r"\(stopped: (?P<why>[^)]*)\)")                 # a training that ended before its epoch cap
_METER = re.compile(r"\d+/\d+ \[")          # the right-hand part of a tqdm bar: "80/176 [00:30<00:35, ...]"
_BAR_RUN = re.compile(r"^(?P<run>\S.*?) epoch \d+/\d+")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """What the runner shows while one notebook executes, and its log.

    Fed by the notebook client: ``cell_start`` for each cell, ``stream`` for printed text, ``display`` for
    rich outputs, ``widget_text`` for progress-bar widget updates, ``error`` for an exception. Per-epoch
    lines of train.py are printed as lines of their own with elapsed and estimated time left; anything
    else (batch progress, the current cell) only updates one status line, redrawn in place on a terminal
    and never printed elsewhere, so the terminal is not flooded. Everything goes to the log file.
    """

    def __init__(self, name: str, log_path: Path, out: TextIO | None = None, tty: bool | None = None,
                 refresh: float = 1.0, quiet_after: float = 30.0):
        self.name = name
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(log_path, "w", encoding="utf-8")
        self._prefixes = _machine_prefixes()
        self._lock = threading.RLock()
        self._buffers: dict[str, str] = {}
        self.cell_index: int | None = None
        self.cell_total = 0
        self.cell_title = ""
        self._cell_t0 = self._t0 = time.perf_counter()
        self._last_mark = self._t0
        self._bar_left = self._bar_right = ""
        self._bar_seen: dict[str, float] = {}
        self._runs: dict[str, tuple[int, float]] = {}
        self._status_width = 0
        self.epoch_lines: list[str] = []
        self._stop = threading.Event()
        # not on a terminal (CI, a pipe): name a cell once when it has run for quiet_after seconds
        self.quiet_after = quiet_after
        self._named_cell: int | None = None
        self._ticker = None
        if refresh:
            self._ticker = threading.Thread(target=self._tick, args=(refresh,), daemon=True)
            self._ticker.start()

    # ---- events from the notebook client
    def cell_start(self, index: int, total: int, cell) -> None:
        with self._lock:
            self._flush_buffers()
            self.cell_index, self.cell_total = index, total
            self._cell_t0 = self._last_mark = time.perf_counter()
            self._bar_left = self._bar_right = ""
            first = next((ln.strip() for ln in cell.source.splitlines() if ln.strip() and not ln.startswith("#")),
                         "")
            self.cell_title = first[:80]
            tags = ",".join(cell.metadata.get("tags", []))
            self._log(f"\n--- cell {index + 1}/{total} ({cell.cell_type}{', ' + tags if tags else ''}) "
                      f"at {_clock(self._cell_t0 - self._t0)} ---\n")
            self._log("".join(f">>> {ln}\n" for ln in cell.source.splitlines()))
            self._draw()

    def stream(self, name: str, text: str) -> None:
        with self._lock:
            buf = self._buffers.get(name, "") + text
            *lines, rest = buf.split("\n")
            for line in lines:
                self._line(name, line)
            # a carriage-return progress bar: show its latest state, keep only that
            if "\r" in rest:
                self._bar_text(rest.split("\r")[-1] or rest.rstrip("\r").split("\r")[-1])
                rest = rest[rest.rfind("\r", 0, len(rest) - 1):] if len(rest) > 4096 else rest
            self._buffers[name] = rest

    def display(self, text: str) -> None:
        with self._lock:
            self._log(text.rstrip("\n") + "\n")

    def widget_text(self, value: str) -> None:
        """A string state update of a widget: tqdm.notebook sends its description ('run epoch 1/3: 45%')
        and its meter (' 80/176 [00:30<00:35, 2.6it/s, loss=1.234]') this way."""
        text = html.unescape(value).replace("\u2007", " ").strip()
        with self._lock:
            if _METER.search(text):
                self._bar_right = text
            elif text:
                self._bar_left = text
                self._note_bar(text)
            self._draw()

    def error(self, ename: str, evalue: str, traceback: list[str]) -> None:
        with self._lock:
            self._flush_buffers()
            self._log("".join(_ANSI.sub("", t) + "\n" for t in traceback) or f"{ename}: {evalue}\n")

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
        with self._lock:
            self._flush_buffers()
            self._clear_status()
            self._log(f"\n--- finished after {_clock(time.perf_counter() - self._t0)} ---\n")
            self.log.close()

    def say(self, text: str) -> None:
        """A line of the runner's own (between notebooks or on failure)."""
        with self._lock:
            self._clear_status()
            self.out.write(text + "\n")
            self.out.flush()
            self._draw()

    # ---- internals
    def _log(self, text: str) -> None:
        if not self.log.closed:
            self.log.write(portable(_ANSI.sub("", text), self._prefixes))
            self.log.flush()

    def _flush_buffers(self) -> None:
        for name, rest in list(self._buffers.items()):
            if rest:
                self._line(name, rest)
        self._buffers.clear()

    def _line(self, name: str, line: str) -> None:
        segments = [s for s in line.split("\r") if s.strip()]
        line = segments[-1] if segments else ""
        self._log(line + "\n")
        plain = _ANSI.sub("", line).strip()
        match = _EPOCH_LINE.match(plain)
        if match and (_LOSS.search(match["rest"]) or _VAL_ACC.search(match["rest"])):
            self._epoch(match)
        elif plain.lower().startswith("warning"):
            self.say(f"    {plain[:200]}")
        elif "%|" in plain or _METER.search(plain):
            self._bar_text(plain)

    def _bar_text(self, text: str) -> None:
        text = _ANSI.sub("", text).strip()
        if text:
            self._bar_left, self._bar_right = text, ""
            self._note_bar(text)
            self._draw()

    def _note_bar(self, text: str) -> None:
        m = _BAR_RUN.match(text)
        if m:
            self._bar_seen.setdefault(m["run"], time.perf_counter())

    def _epoch(self, m: re.Match) -> None:
        now = time.perf_counter()
        run, k, n = m["run"], int(m["k"]), int(m["n"])
        if run not in self._runs or k <= self._runs[run][0]:  # first epoch seen (a resumed run starts late)
            self._runs[run] = (k, min(self._bar_seen.get(run, self._last_mark), now))
        k0, t_start = self._runs[run]
        elapsed = now - t_start
        left = elapsed / (k - k0 + 1) * (n - k)
        loss, acc, budget = _LOSS.search(m["rest"]), _VAL_ACC.search(m["rest"]), _BUDGET_LEFT.search(m["rest"])
        if budget:
            left = min(left, float(budget["v"]))
        parts = [f"    {run} epoch {k}/{n}"]
        if loss:
            parts.append(f"loss {loss['v']}")
        if acc:
            parts.append(f"val acc {acc['v']}")
        parts.append(f"elapsed {_clock(elapsed)}")
        if rehearsal.active():
            parts.append(f"rehearsal: stops after {rehearsal.MAX_STEPS} steps")
        elif stopped := _STOPPED.search(m["rest"]):
            parts.append(f"done ({stopped['why']})")
        else:
            parts.append(f"left ~{_clock(left)}" if k < n else "done")
        line = "  ".join(parts)
        self.epoch_lines.append(line)
        self._last_mark = now
        self._bar_left = self._bar_right = ""
        self._bar_seen.pop(run, None)
        self.say(line)

    def status_line(self) -> str:
        if self.cell_index is None:
            return ""
        now = time.perf_counter()
        # the live bar first: when the terminal is narrow, the cell's first line is what gets cut
        parts = [f"  {self.name} cell {self.cell_index + 1}/{self.cell_total} {_clock(now - self._cell_t0)}"]
        bar = " ".join(s for s in (self._bar_left, self._bar_right) if s)
        if bar:
            parts.append(bar)
        parts.append(self.cell_title)
        return " | ".join(parts)

    def _draw(self) -> None:
        if not self.tty:
            return
        width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        text = self.status_line()[:width]
        self.out.write("\r" + text + " " * max(0, self._status_width - len(text)))
        self.out.flush()
        self._status_width = len(text)

    def _clear_status(self) -> None:
        if self.tty and self._status_width:
            self.out.write("\r" + " " * self._status_width + "\r")
            self.out.flush()
            self._status_width = 0

    def _tick(self, every: float) -> None:
        while not self._stop.wait(every):
            with self._lock:
                if self.tty:
                    self._draw()
                elif (self.cell_index is not None and self._named_cell != self.cell_index
                      and time.perf_counter() - self._cell_t0 >= self.quiet_after):
                    self._named_cell = self.cell_index
                    self.say(f"    cell {self.cell_index + 1}/{self.cell_total} still running after "
                             f"{self.quiet_after:.0f} s: {self.cell_title}")


class _LogHandler(logging.Handler):
    def __init__(self, progress: Progress):
        super().__init__(logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        with self.progress._lock:
            self.progress._log(f"[papermill {record.levelname.lower()}] {record.getMessage()}\n")


def _progress_engine():
    """A papermill engine whose notebook client reports to a ``Progress`` (passed as ``progress=``)."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine

    class ProgressClient(PapermillNotebookClient):
        progress: Progress | None = None
        _current = None

        def process_message(self, msg, cell, cell_index):
            progress = self.progress
            if progress is not None:
                if cell_index != self._current:
                    self._current = cell_index
                    progress.cell_start(cell_index, len(self.nb.cells), cell)
                kind, content = msg["msg_type"], msg.get("content", {})
                if kind in ("comm_open", "comm_msg"):
                    value = (content.get("data") or {}).get("state", {}).get("value")
                    if isinstance(value, str):
                        progress.widget_text(value)
                elif kind == "stream":
                    progress.stream(content.get("name", "stdout"), content.get("text", ""))
                elif kind in ("display_data", "execute_result"):
                    data = content.get("data", {})
                    progress.display(data.get("text/plain", "") or f"[{', '.join(data)}]")
                elif kind == "error":
                    progress.error(content.get("ename", ""), content.get("evalue", ""), content.get("traceback", []))
            return super().process_message(msg, cell, cell_index)

    class ProgressEngine(NBClientEngine):
        # NBClientEngine.execute_managed_notebook with the client above, told where to report
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, progress=None, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None, **kwargs):
            from papermill.engines import logger
            from papermill.utils import merge_kwargs, remove_args
            kwargs = remove_args(["input_path"], **kwargs)
            safe = remove_args(["timeout", "startup_timeout"], **kwargs)
            final = merge_kwargs(safe, timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
                                 startup_timeout=start_timeout, kernel_name=kernel_name, log=logger,
                                 log_output=log_output, stdout_file=stdout_file, stderr_file=stderr_file)
            client = ProgressClient(nb_man, **final)
            client.progress = progress
            # the kernel process's own stderr (its start-up warnings) goes to the log, not the terminal
            return client.execute(**({"stderr": progress.log} if progress is not None else {}))

    return ProgressEngine


_ENGINE = "earlyexit-progress"


def _register_engine() -> None:
    from papermill.engines import papermill_engines
    if _ENGINE not in papermill_engines._engines:
        papermill_engines.register(_ENGINE, _progress_engine())


def failure_summary(exc: BaseException, executed: Path, log_path: Path) -> list[str]:
    """A few lines: the failing cell and its error, where the executed copy and the log are."""
    lines = []
    if hasattr(exc, "ename") and hasattr(exc, "cell_index"):
        source = [ln for ln in (exc.source or "").splitlines() if ln.strip()]
        lines.append(f"  FAILED in cell {exc.cell_index + 1} (In [{exc.exec_count}]): {exc.ename}: "
                     f"{portable(str(exc.evalue))[:200]}")
        if source:
            lines.append(f"    cell starts: {source[0].strip()[:100]}")
        frames = [_ANSI.sub("", t).strip().splitlines() for t in exc.traceback or []]
        where = [ln for fr in frames for ln in fr if re.search(r"(File |Cell In|\.py:\d+)", ln)]
        if where:
            lines.append(f"    raised at: {portable(where[-1])[:160]}")
    else:
        text = str(exc).strip().splitlines()
        lines.append(f"  FAILED: {exc.__class__.__name__}: {portable(text[0] if text else '')[:200]}")
    lines.append(f"  executed copy: {_relative(executed)}")
    lines.append(f"  full output:   {_relative(log_path)}")
    return lines


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
    _register_engine()
    os.environ["EARLYEXIT_PROGRESS_LINES"] = "1"   # every training's epoch lines reach the terminal
    results = []
    for i, (path, params) in enumerate(jobs, 1):
        executed, log_path = out_dir / path.name, out_dir / "logs" / f"{path.stem}.log"
        print(f"[{i}/{len(jobs)}] {path.stem} (profile {profile}); log: {_relative(log_path)}", file=out, flush=True)
        progress = Progress(path.stem, log_path, out=out, tty=tty)
        # papermill's own messages (e.g. parameters it could not parse) go to the log, not the terminal
        handler = _LogHandler(progress)
        pm_logger = logging.getLogger("papermill")
        pm_logger.addHandler(handler)
        t0 = time.perf_counter()
        status, failure = "ok", None
        uses = Path(tempfile.mkstemp(prefix=f"{path.stem}-trainings-", suffix=".jsonl")[1])
        previous_log = os.environ.get(USE_LOG_ENV)
        os.environ[USE_LOG_ENV] = str(uses)   # the kernel inherits it; train_cached notes each run there
        try:
            papermill.execute_notebook(str(path), str(executed), parameters=params, cwd=str(path.parent),
                                       kernel_name="python3", progress_bar=False, engine_name=_ENGINE,
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
