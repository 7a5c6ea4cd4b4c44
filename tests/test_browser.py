"""The tutorial runs inside JupyterLab in a real browser.

Starts JupyterLab from this environment on a free loopback port with a random token, opens
notebooks/00_primer.ipynb in headless Chromium (Debian's chromium, driven by the playwright package),
switches the parameters cell to the smoke profile by editing it in the page, runs all cells from the Run
menu, and checks what a person would see: the kernel is this project's interpreter, no cell shows an error,
tqdm's progress bars render as widgets (no "IProgress not found" warning), figures are displayed.
A screenshot is saved in the test's temporary folder. Skipped, saying why, where no browser is installed
(CI installs it: see .ci/run). Autosave is off and the notebook file is checked unchanged afterwards.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from earlyexit.paths import project_root
from earlyexit.reproduce import resolve_parameters

ROOT = project_root()
NOTEBOOK = ROOT / "notebooks" / "00_primer.ipynb"
CHROMIUM = os.environ.get("EARLYEXIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RUN_TIMEOUT = 420  # seconds for Run All on the smoke profile (under a minute on one thread, plus start-up)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium found: install Debian's chromium (apt-get install chromium) "
                             "or set EARLYEXIT_CHROMIUM to a Chromium binary to run the JupyterLab browser test")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5):
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (loopback only)
        return json.loads(r.read())


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server of this environment: (base url, token). Its own config, data and runtime folders;
    autosave off so the notebook under test is never written."""
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed (pip install -e '.[dev]')")
    pytest.importorskip("ipywidgets", reason="ipywidgets is not installed (pip install -e .)")
    config = tmp_path / "jupyter-config"
    settings = config / "lab" / "user-settings" / "@jupyterlab"
    (settings / "docmanager-extension").mkdir(parents=True)
    (settings / "docmanager-extension" / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    (settings / "apputils-extension").mkdir(parents=True)
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    token, port = secrets.token_hex(16), _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"), "JUPYTER_PLATFORM_DIRS": "1",
           "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           # an empty run cache, so the primer trains (and shows its progress widget) whatever ran before
           "EARLYEXIT_ARTIFACTS": str(tmp_path / "artifacts")}
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}", "--ServerApp.port_retries=0",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
         *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],  # CI runs as root
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited: {(tmp_path / 'jupyterlab.log').read_text()[-2000:]}")
            try:
                _get(f"{base}/api/status?token={token}")
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer within 60 s")
        yield base, token
    finally:
        try:
            urllib.request.urlopen(urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST"),
                                   timeout=5)
            server.wait(timeout=20)
        except Exception:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=20)
        log.close()


def _applies_profile(nb: dict) -> bool:
    """Whether the cell after the parameters cell applies the chosen profile's overrides."""
    cells = nb["cells"]
    i = next(i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", []))
    nxt = next((c for c in cells[i + 1:] if c["cell_type"] == "code"), None)
    return nxt is not None and "profile" in "".join(nxt["source"]) and "(" in "".join(nxt["source"])


_KERNEL_PROBE = """
async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, silent: false, store_history: false});
  let text = "";
  future.onIOPub = (msg) => { if (msg.header.msg_type === "stream") text += msg.content.text; };
  await future.done;
  return text;
}
"""

_OUTPUTS = """
() => {
  const nb = window.jupyterapp.shell.currentWidget.content.model;
  const cells = [];
  for (let i = 0; i < nb.cells.length; i++) {
    const c = nb.cells.get(i).toJSON();
    cells.push({type: c.cell_type, count: c.execution_count ?? null, outputs: c.outputs || []});
  }
  return cells;
}
"""


def test_primer_runs_in_jupyterlab(lab, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    base, token = lab
    source_nb = json.loads(NOTEBOOK.read_text())
    before = NOTEBOOK.read_bytes()
    smoke = resolve_parameters(NOTEBOOK, "smoke")
    param_cell = next(i for i, c in enumerate(source_nb["cells"]) if "parameters" in c["metadata"].get("tags", []))
    param_lines = "".join(source_nb["cells"][param_cell]["source"]).splitlines()
    profile_line = next(i for i, ln in enumerate(param_lines) if ln.startswith('profile = "cpu"'))

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{base}/lab/tree/notebooks/00_primer.ipynb?token={token}")
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget "
                                   "&& window.jupyterapp.shell.currentWidget.sessionContext "
                                   "&& window.jupyterapp.shell.currentWidget.sessionContext.session "
                                   "&& window.jupyterapp.shell.currentWidget.sessionContext.session.kernel")
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            page.wait_for_function("() => window.jupyterapp.shell.currentWidget.sessionContext.kernelDisplayStatus "
                                   "=== 'idle'")

            # --- opening the notebook and starting its kernel leave it unchanged (no unsaved-changes mark)
            page.wait_for_timeout(1000)
            assert page.evaluate("() => window.jupyterapp.shell.currentWidget.context.model.dirty") is False
            assert page.locator(".jp-mod-dirty").count() == 0

            # --- the kernel is this project's interpreter and imports this checkout's library
            probe = page.evaluate(_KERNEL_PROBE, "import sys, earlyexit; print(sys.executable); "
                                                 "print(earlyexit.__file__)")
            executable, library = probe.strip().splitlines()[-2:]
            assert Path(executable).resolve().parent == Path(sys.executable).resolve().parent, probe
            assert Path(library).resolve().is_relative_to(ROOT / "lib"), probe
            sessions = _get(f"{base}/api/sessions?token={token}")
            assert [s["kernel"]["name"] for s in sessions if s["path"].endswith("00_primer.ipynb")] == ["python3"]

            # --- pick the smoke profile in the parameters cell, as a reader would
            editor = page.locator(".jp-Notebook .jp-Cell").nth(param_cell).locator(".cm-content")
            editor.click()
            page.keyboard.press("Control+Home")
            for _ in range(profile_line):
                page.keyboard.press("ArrowDown")
            page.keyboard.press("Home")
            for _ in range(len('profile = "cpu"')):
                page.keyboard.press("Shift+ArrowRight")
            page.keyboard.insert_text('profile = "smoke"')
            if not _applies_profile(source_nb):
                # notebook without a profile-applying cell: type the smoke overrides into the cell too
                page.keyboard.press("Control+End")
                page.keyboard.insert_text("".join(f"\n{k} = {v!r}" for k, v in smoke.items() if k != "profile")
                                          + "\nthreads = 1")
            page.keyboard.press("Escape")
            cell_text = editor.inner_text()
            assert 'profile = "smoke"' in cell_text and 'profile = "cpu"' not in cell_text

            # --- Run > Run All Cells, watching for progress widgets while it runs
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
            seen_widgets, t0 = 0, time.monotonic()
            code_cells = sum(c["cell_type"] == "code" for c in source_nb["cells"])
            while True:
                seen_widgets = max(seen_widgets, page.locator(".jp-OutputArea-output .widget-hprogress").count())
                cells = page.evaluate(_OUTPUTS)
                done = [c for c in cells if c["type"] == "code" and c["count"] is not None]
                errors = [o for c in cells for o in c["outputs"] if o.get("output_type") == "error"]
                idle = page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext"
                                     ".kernelDisplayStatus") == "idle"
                if errors or (len(done) == code_cells and idle):
                    break
                assert time.monotonic() - t0 < RUN_TIMEOUT, f"Run All not finished after {RUN_TIMEOUT} s"
                time.sleep(0.2)
            page.wait_for_timeout(500)
            figure = page.locator(".jp-OutputArea-output img")
            if figure.count():
                figure.last.scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "jupyterlab_00_primer.png"), full_page=False)

            # --- what the reader sees
            assert not errors, [f"{e['ename']}: {e['evalue']}" for e in errors]
            outputs = [o for c in cells for o in c["outputs"]]
            texts = "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                            for o in outputs)
            assert "IProgress not found" not in texts and "IProgress not found" not in page.content()
            assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
            assert seen_widgets >= 1, "no progress bar was rendered as a widget"
            assert "CIFAR-10" in texts and "epoch 1/1" in texts  # the smoke run trained for its one epoch
            assert page.locator(".jp-OutputArea-output img").count() >= 1, "no figure displayed"
            assert sum("image/png" in o.get("data", {}) for o in outputs) >= 1
        finally:
            browser.close()
    assert NOTEBOOK.read_bytes() == before, "the notebook file was modified"
    assert (tmp_path / "jupyterlab_00_primer.png").stat().st_size > 10_000
