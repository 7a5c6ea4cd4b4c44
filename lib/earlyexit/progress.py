"""What the runner shows while a notebook executes: one line per training epoch with the time left, a
status line redrawn in place on a terminal (cell, time, live progress bar), the notebook's full output in
its log, and a few lines on a failure. ``Progress`` is fed by a papermill engine whose notebook client
reports every message of the kernel to it (registered as ``ENGINE``).
"""
from __future__ import annotations

import html
import logging
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from . import rehearsal
from .paths import machine_prefixes, portable

__all__ = ["Progress", "LogHandler", "ENGINE", "register_engine", "failure_summary"]


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# printed by train.py once per epoch: "<run> epoch k/n: loss L, val acc (final exit) A, S s" ("epoch k" for a
# run capped by time), and once per run trained with progress="summary": "<run>: trained k epochs, ..."
_EPOCH_LINE = re.compile(r"^(?P<run>\S.*?) epoch (?P<k>\d+)(?:/(?P<n>\d+))?: (?P<rest>.*)$")
_RUN_LINE = re.compile(r"^(?P<run>\S.*?): trained \d+ epochs?, ")
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
        self._prefixes = machine_prefixes()
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
        elif _RUN_LINE.match(plain):
            self.epoch_lines.append(f"    {plain}")
            self._bar_left = self._bar_right = ""
            self.say(f"    {plain}")
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
        run, k, n = m["run"], int(m["k"]), None if m["n"] is None else int(m["n"])
        if run not in self._runs or k <= self._runs[run][0]:  # first epoch seen (a resumed run starts late)
            self._runs[run] = (k, min(self._bar_seen.get(run, self._last_mark), now))
        k0, t_start = self._runs[run]
        elapsed = now - t_start
        left = None if n is None else elapsed / (k - k0 + 1) * (n - k)
        loss, acc, budget = _LOSS.search(m["rest"]), _VAL_ACC.search(m["rest"]), _BUDGET_LEFT.search(m["rest"])
        if budget:
            left = float(budget["v"]) if left is None else min(left, float(budget["v"]))
        parts = [f"    {run} epoch {k}" + ("" if n is None else f"/{n}")]
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
            parts.append("done" if n == k or left is None else f"left ~{_clock(left)}")
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


class LogHandler(logging.Handler):
    """Papermill's own log records, written into the notebook's log beside its output."""

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


ENGINE = "earlyexit-progress"


def register_engine() -> None:
    from papermill.engines import papermill_engines
    if ENGINE not in papermill_engines._engines:
        papermill_engines.register(ENGINE, _progress_engine())


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
    lines.append(f"  executed copy: {portable(str(executed))}")
    lines.append(f"  full output:   {portable(str(log_path))}")
    return lines
