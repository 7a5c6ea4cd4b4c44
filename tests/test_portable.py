"""Nothing in reports/ or figures/ names an absolute path of the machine that produced it, and the
producers (figure saving, data descriptions, the HTML report) write portable paths."""
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import pytest

from earlyexit.paths import project_root

ROOT = project_root()
SCANNED = [ROOT / "reports", ROOT / "figures"]
TEXT = {".ipynb", ".json", ".md", ".html", ".log", ".txt", ".csv", ".svg"}
BINARY = {".png", ".pdf", ".jpg"}
# a path rooted at one of the usual top-level folders of Linux, macOS or Windows
ABSOLUTE = re.compile(r"(?<![\w.:/~$<>-])/(?:home|root|work|tmp|usr|opt|var|mnt|srv|data|scratch|Users|private|"
                      r"Volumes|builds?|github|runner|workspace)/[\w.@+-]+|\b[A-Za-z]:\\\\?[\w.-]+\\\\")
DATA_URI = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+")
_BINARY_MIME = ("image/png", "image/jpeg", "application/pdf")


def _machine_prefixes() -> set[str]:
    prefixes = {str(ROOT), sys.prefix, str(Path.home()), tempfile.gettempdir()}
    for env in ("EARLYEXIT_LOCAL_DATA", "EARLYEXIT_ARTIFACTS", "EARLYEXIT_DATA"):
        if os.environ.get(env):
            prefixes.add(os.environ[env].rstrip("/"))
    return {p for p in prefixes if p not in ("", "/")}


def _notebook_text(path: Path) -> str:
    """Everything of an executed notebook but the base64 image data (which can look like anything)."""
    nb = json.loads(path.read_text())
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            for mime in _BINARY_MIME:
                out.get("data", {}).pop(mime, None)
            cell.get("attachments", {}).clear()
    return json.dumps(nb, indent=1)


def absolute_paths(path: Path) -> list[str]:
    """Absolute paths found in one file (text: any rooted path; binary: this machine's prefixes)."""
    if path.suffix in BINARY:
        data = path.read_bytes()
        return [p for p in _machine_prefixes() if p.encode() in data]
    text = _notebook_text(path) if path.suffix == ".ipynb" else path.read_text(errors="replace")
    text = DATA_URI.sub("data:", text)
    found = ABSOLUTE.findall(text) + [p for p in _machine_prefixes() if p in text]
    return sorted(set(found))


def _files():
    """Files of the shipped reports and figures (rehearsal outputs are ignored by git, never shipped, and
    may be being written by the rehearsal test running beside this one)."""
    for folder in SCANNED:
        if folder.exists():
            yield from (p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in TEXT | BINARY
                        and not any(part.endswith("-rehearsal") for part in p.relative_to(folder).parts))


def test_no_absolute_paths_in_reports_and_figures():
    offenders = {str(p.relative_to(ROOT)): hits[:3] for p in _files() if (hits := absolute_paths(p))}
    assert not offenders, f"absolute paths in generated files: {offenders}"


def test_the_scan_finds_what_it_should(tmp_path):
    bad = tmp_path / "x.md"
    bad.write_text(f"see {ROOT}/figures/cpu/a.png and /home/someone/data/cifar.tar.gz")
    assert len(absolute_paths(bad)) >= 2
    good = tmp_path / "y.md"
    good.write_text("figures/cpu/a.png, 592 img/s, loss/acc, https://example.org/a/b, data:image/png;base64,/ab/cd")
    assert absolute_paths(good) == []


def test_figures_are_png_and_pdf_and_paths_relative(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from earlyexit.studies import plots
    monkeypatch.setattr(plots, "project_root", lambda: tmp_path)
    plots.use_style()
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.plot([0, 1], [0, 1])
    ax.set_xlabel("cost")
    path = plots.save_figure(fig, "zz_demo", "smoke")
    assert path == Path("figures/smoke/zz_demo.png")
    assert (tmp_path / path).read_bytes()[:4] == b"\x89PNG"
    pdf = (tmp_path / path).with_suffix(".pdf").read_bytes()
    assert pdf[:5] == b"%PDF-" and str(tmp_path).encode() not in pdf
    assert list(fig.get_size_inches()) == [12, 4]          # the screen figure is left as drawn
    assert ax.xaxis.label.get_fontsize() > plots.PAPER_FONT_SIZES["label"]
    plt.close(fig)


def test_data_sources_are_named_by_copy_not_path():
    from earlyexit.data import _portable_source
    archive = Path(os.environ.get("EARLYEXIT_LOCAL_DATA", "/nonexistent")) / "cifar10-jpeg.tar.gz"
    if not archive.exists():
        pytest.skip("no local CIFAR-10 archive")
    label = _portable_source("cifar10", str(archive))
    assert re.fullmatch(r"CIFAR-10, local JPEG archive cifar10-jpeg\.tar\.gz, sha256 [0-9a-f]{12}", label), label
    assert _portable_source("cifar100", "torchvision CIFAR100 in /somewhere/data") == "torchvision CIFAR100 download"


def test_html_report_of_a_profile(tmp_path, monkeypatch):
    """The index links each notebook page, its figures (PNG and PDF) and its summary rows."""
    import nbformat
    from earlyexit import htmlreport
    monkeypatch.setattr(htmlreport, "project_root", lambda: tmp_path)
    reports, figures = tmp_path / "reports" / "smoke", tmp_path / "figures" / "smoke"
    reports.mkdir(parents=True)
    figures.mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(1)", outputs=[nbformat.v4.new_output("stream", text="1\n")])]
    nb.metadata["papermill"] = {"duration": 90.0, "parameters": {"profile": "smoke", "epochs": 1}}
    nbformat.write(nb, str(reports / "07_demo.ipynb"))
    (figures / "07_curve.png").write_bytes(b"\x89PNG\r\n")
    (figures / "07_curve.pdf").write_bytes(b"%PDF-1.4")
    (reports / "07_demo_metrics.json").write_text(json.dumps(
        {"comparisons": [{"quantity": "final accuracy", "paper": 0.9, "ours": 0.8, "unit": "fraction", "note": ""}]}))
    index = htmlreport.build("smoke")
    html = index.read_text()
    assert (index.parent / "07_demo.html").exists()
    assert 'href="07_demo.html"' in html and "../../../figures/smoke/07_curve.pdf" in html
    assert "final accuracy" in html and "1.5" in html
    page = (index.parent / "07_demo.html").read_text()
    assert "require.min.js" not in page and str(tmp_path) not in page + html


def test_committed_reports_keep_no_widget_state():
    """Progress-bar widget states are dropped when a report is written (thousands of them in a notebook that
    trains many runs); the bars keep their text."""
    import json
    reports = sorted((project_root() / "reports").glob("*/*.ipynb"))
    assert reports and [r.name for r in reports if "widgets" in json.loads(r.read_text()).get("metadata", {})] == []
