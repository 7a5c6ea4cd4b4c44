"""The batch runner's live progress: one line per epoch with elapsed and time left, batch bars only in the
status line, everything in the log; a failing notebook summarised in a few lines."""
import io
import json
from types import SimpleNamespace

import nbformat

from earlyexit import paths, progress as P, reproduce as R


def _cell(source, tags=()):
    return SimpleNamespace(source=source, cell_type="code", metadata={"tags": list(tags)})


def test_epoch_lines_are_shown_with_time_left_and_bars_are_not(tmp_path):
    out = io.StringIO()
    p = P.Progress("00_primer", tmp_path / "logs" / "00_primer.log", out=out, tty=False, refresh=0)
    p.cell_start(8, 24, _cell("run = train_cached(spec)"))
    for k in (1, 2):
        p.widget_text(f"primer epoch {k}/4:  50%")
        p.widget_text(" 88/176 [00:30&lt;00:30,  2.9it/s, loss=1.234]")
        p.stream("stderr", f"\rprimer epoch {k}/4:  10%|#         | 17/176 [00:05<00:40, 3.1it/s]")
        p.stream("stdout", f"primer epoch {k}/4: loss {2 - k / 4:.3f}, val acc (final exit) 0.{40 + k}00, 61 s\n")
    p.stream("stdout", "some table row\n")
    p.close()
    shown = out.getvalue().splitlines()
    assert len(shown) == 2, shown
    assert "primer epoch 1/4" in shown[0] and "loss 1.750" in shown[0] and "val acc 0.4100" in shown[0]
    assert "elapsed" in shown[0] and "left ~" in shown[0]
    assert "primer epoch 2/4" in shown[1]
    log = (tmp_path / "logs" / "00_primer.log").read_text()
    assert "--- cell 9/24" in log and ">>> run = train_cached(spec)" in log and "some table row" in log
    assert "primer epoch 2/4: loss 1.500" in log


def test_status_line_names_the_cell_and_the_live_bar(tmp_path):
    p = P.Progress("02_e2cm", tmp_path / "x.log", out=io.StringIO(), tty=False, refresh=0)
    p.cell_start(3, 30, _cell("# comment\nnet = build()"))
    p.widget_text("r18 epoch 3/9:  42%")
    p.widget_text(" 74/176 [00:30&lt;00:41,\u20072.4it/s]")
    line = p.status_line()
    p.close()
    assert "02_e2cm cell 4/30" in line and "r18 epoch 3/9:  42% 74/176 [00:30<00:41, 2.4it/s]" in line
    assert line.endswith("net = build()")


def _clocked_progress(tmp_path, monkeypatch) -> tuple[P.Progress, io.StringIO, list[float]]:
    """A non-terminal Progress inside a training cell, with a clock the test sets (``now[0]``)."""
    now = [0.0]
    monkeypatch.setattr(P.time, "perf_counter", lambda: now[0])
    out = io.StringIO()
    p = P.Progress("nb", tmp_path / "x.log", out=out, tty=False, refresh=0)
    p.cell_start(0, 1, _cell("train()"))
    return p, out, now


def test_eta_uses_epochs_seen_when_a_run_resumes(tmp_path, monkeypatch):
    p, out, now = _clocked_progress(tmp_path, monkeypatch)
    now[0] = 100.0
    p.stream("stdout", "run epoch 6/10: loss 1.000, val acc (final exit) 0.5000, 99 s\n")   # resumed at 6
    now[0] = 200.0
    p.stream("stdout", "run epoch 7/10: loss 0.900, val acc (final exit) 0.5500, 99 s\n")
    shown = out.getvalue().splitlines()
    assert "elapsed 1:40" in shown[0] and "left ~6:40" in shown[0]      # 100 s per epoch, 4 to go
    assert "elapsed 3:20" in shown[1] and "left ~5:00" in shown[1]


def test_eta_of_a_time_budgeted_run_is_at_most_its_budget_left(tmp_path, monkeypatch):
    p, out, now = _clocked_progress(tmp_path, monkeypatch)
    now[0] = 30.0
    p.stream("stdout", "heads epoch 1: loss 1.000, val acc (final exit) 0.5000, 30 s, time budget 40 s left\n")
    shown = out.getvalue().splitlines()
    assert "heads epoch 1  " in shown[0] and "left ~0:40" in shown[0]   # no epoch cap shown or used


def test_a_run_stopped_before_its_epoch_cap_is_shown_done(tmp_path, monkeypatch):
    p, out, now = _clocked_progress(tmp_path, monkeypatch)
    now[0] = 60.0
    p.stream("stdout", "heads epoch 1: loss 1.000, val acc (final exit) 0.5000, 59 s "
                       "(stopped: time budget reached)\n")
    shown = out.getvalue().splitlines()
    assert "done (time budget reached)" in shown[0] and "left ~" not in shown[0]


def test_a_run_summary_line_is_shown_as_a_line_of_its_own(tmp_path, monkeypatch):
    p, out, now = _clocked_progress(tmp_path, monkeypatch)
    p.stream("stderr", "\rsdn_s0 epoch 3/20:  10%|#         | 17/176 [00:05<00:40, 3.1it/s]")
    p.stream("stdout", "sdn_s0: trained 7 epochs, loss 0.812, val acc (final exit) 0.6100, 41 s "
                       "(stopped: validation plateau)\n")
    shown = out.getvalue().splitlines()
    assert shown == ["    sdn_s0: trained 7 epochs, loss 0.812, val acc (final exit) 0.6100, 41 s "
                     "(stopped: validation plateau)"]


def test_portable_replaces_machine_prefixes():
    root = str(paths.project_root())
    text = f"saved {root}/figures/cpu/a.png; python at {paths.sys.prefix}/lib/x.py"
    clean = paths.portable(text)
    assert clean.startswith("saved figures/cpu/a.png") and root not in clean


def _write_notebook(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def test_failed_notebook_is_summarised_in_a_few_lines(tmp_path, monkeypatch):
    import earlyexit.studies.report as report
    from earlyexit import parameters
    monkeypatch.setattr(paths, "project_root", lambda: tmp_path)
    monkeypatch.setattr(parameters, "project_root", lambda: tmp_path)
    monkeypatch.setattr(report, "project_root", lambda: tmp_path)
    (tmp_path / "notebooks").mkdir()
    nb = tmp_path / "notebooks" / "98_broken.ipynb"
    _write_notebook(nb, ['profile = "cpu"', 'print("run epoch 1/2: loss 1.000, val acc (final exit) 0.5000, 3 s")',
                         'def fit(x):\n    return 1 / x', 'fit(0)', 'print("never")'])
    out = io.StringIO()
    results = R.run("smoke", {"98": nb}, out=out, tty=False)
    text = out.getvalue()
    assert results[0]["status"].startswith("FAILED: ZeroDivisionError")
    assert "run epoch 1/2  loss 1.000  val acc 0.5000" in text
    assert "FAILED in cell 5 (In [5]): ZeroDivisionError: division by zero" in text
    assert "raised at: Cell In[4], line 2, in fit" in text
    assert "cell starts: fit(0)" in text
    assert "executed copy: reports/smoke/98_broken.ipynb" in text
    assert "full output:   reports/smoke/logs/98_broken.log" in text
    failure = [ln for ln in text.splitlines() if ln.startswith("  ")]
    assert len(failure) <= 8, text
    log = (tmp_path / "reports" / "smoke" / "logs" / "98_broken.log").read_text()
    assert "ZeroDivisionError" in log and str(tmp_path) not in log
    executed = json.loads((tmp_path / "reports" / "smoke" / "98_broken.ipynb").read_text())
    assert executed["metadata"]["papermill"]["input_path"] == "notebooks/98_broken.ipynb"
    assert str(tmp_path) not in json.dumps(executed)
