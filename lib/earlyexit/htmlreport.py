"""HTML pages of a profile's executed notebooks, for reading and sharing without Jupyter.

    python -m earlyexit.htmlreport --profile cpu        (make report PROFILE=cpu)

Each executed notebook reports/<profile>/<notebook>.ipynb becomes reports/<profile>/html/<notebook>.html,
one self-contained file: figures embedded as data URIs, styles inline. (Formulas are typeset by MathJax
when a network is at hand; offline their TeX source shows.) Progress-bar widgets are dropped, since their
state is of no use on a static page. reports/<profile>/html/index.html links every page, the figures of
each notebook in figures/<profile>/ (PNG and PDF) and its rows of the paper-vs-ours summary.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import sys
from pathlib import Path

from .paths import portable, project_root
from .studies.claims import SMOKE_NOTE, SMOKE_VERDICT, is_smoke, shown_verdict
from .studies.report import format_value
from .profiles import PROFILE_NAMES

__all__ = ["notebook_html", "build", "main"]

_WIDGET = "application/vnd.jupyter.widget-view+json"


def _strip_widgets(nb) -> None:
    """Drop progress-bar widget outputs and the saved widget state."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if "outputs" in cell:
            cell.outputs = [o for o in cell.outputs if _WIDGET not in o.get("data", {})]


def notebook_html(path: Path) -> str:
    """One executed notebook as a self-contained HTML page."""
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(str(path), as_version=4)
    _strip_widgets(nb)
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem}})
    # require.js only serves widgets, which are dropped: no script from elsewhere is needed
    body = re.sub(r'<script[^>]*src="[^"]*require(\.min)?\.js"[^>]*>\s*</script>\n?', "", body)
    return portable(body)


def _errors(nb: dict) -> list[str]:
    return [f"{o.get('ename')}: {o.get('evalue')}" for c in nb.get("cells", []) for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


def _rows(metrics_path: Path, key: str) -> list[dict]:
    """The notebook's "claims" or "comparisons" rows from its metrics file."""
    if not metrics_path.exists():
        return []
    return json.loads(metrics_path.read_text()).get(key, [])


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.ok { color: #1a7f37; font-weight: bold; } .failed { color: #b3261e; font-weight: bold; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; }
.figures figure { margin: 0; width: 250px; font-size: 0.8em; }
.figures img { width: 250px; border: 1px solid #ddd; background: white; }
.meta { color: #555; font-size: 0.9em; }
"""


def _verdict_counts(claims: list[dict]) -> str:
    """Supported / not / inconclusive over the paper rows (sensitivity and our-reading rows are not counted)."""
    verdicts = [c["verdict"] for c in claims if c.get("role", "paper") == "paper"]
    return " / ".join(str(verdicts.count(v)) for v in ("supported", "not supported", "inconclusive at this budget"))


def _index(profile: str, entries: list[dict]) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>Early-exit notebooks: profile {e(profile)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>Early-exit notebooks: profile <code>{e(profile)}</code></h1>",
             "<p class=\"meta\">Executed notebooks from <code>python -m earlyexit.reproduce --profile "
             f"{e(profile)}</code>, rendered by <code>python -m earlyexit.htmlreport</code>. Figures link to "
             f"<code>figures/{e(profile)}/</code> (PNG for screens, PDF for papers); the summary is "
             f"<code>reports/{e(profile)}/SUMMARY.md</code>.</p>",
             *([f"<p><strong>{e(SMOKE_NOTE)}</strong></p>"] if is_smoke(profile) else []),
             "<table><tr><th>notebook</th><th>status</th><th>minutes</th><th>figures</th>"
             "<th>paper's claims (supported / not / inconclusive)</th><th>paper-vs-ours rows</th></tr>"]
    for en in entries:
        status = ("<span class=\"ok\">ok</span>" if not en["errors"]
                  else f"<span class=\"failed\">failed: {e(en['errors'][0][:80])}</span>")
        parts.append(f"<tr><td><a href=\"{e(en['page'])}\">{e(en['name'])}</a></td><td>{status}</td>"
                     f"<td>{en['minutes']}</td><td>{len(en['figures'])}</td><td>{SMOKE_VERDICT if is_smoke(profile) else _verdict_counts(en['claims'])}</td>"
                     f"<td>{len(en['rows'])}</td></tr>")
    parts.append("</table>")
    for en in entries:
        parts.append(f"<h2 id=\"{e(en['name'])}\"><a href=\"{e(en['page'])}\">{e(en['name'])}</a></h2>")
        if en["parameters"]:
            params = ", ".join(f"{k} = {v!r}" for k, v in en["parameters"].items())
            parts.append(f"<p class=\"meta\">parameters: <code>{e(params)}</code></p>")
        if en["figures"]:
            parts.append("<div class=\"figures\">")
            for fig in en["figures"]:
                pdf = (f" · <a href=\"{e(fig['pdf'])}\">PDF</a>" if fig["pdf"] else " · PDF on the next run")
                parts.append(f"<figure><a href=\"{e(fig['png'])}\"><img src=\"{e(fig['png'])}\" "
                             f"alt=\"{e(fig['name'])}\"></a><figcaption>{e(fig['name'])}: "
                             f"<a href=\"{e(fig['png'])}\">PNG</a>{pdf}</figcaption></figure>")
            parts.append("</div>")
        else:
            parts.append("<p class=\"meta\">no figures</p>")
        if en["claims"]:
            parts.append("<table><tr><th>claim</th><th>role</th><th>statement from</th><th>measured</th>"
                         "<th>ours [95% interval]</th><th>threshold from</th><th>verdict</th><th>evidence</th></tr>")
            for c in en["claims"]:
                inside = (f" [{format_value(c['interval'][0])}, {format_value(c['interval'][1])}]"
                          if c.get("interval") else "")
                parts.append("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in (
                    c["statement"], c.get("role", "paper"), c.get("statement_source", "n/a"), c["comparison"],
                    f"{format_value(c['ours'])}{inside} {c['unit']}", c.get("threshold_source", "n/a"),
                    shown_verdict(c["verdict"], c.get("role", "paper"), profile), c["evidence"])) + "</tr>")
            parts.append("</table>")
        if en["rows"]:
            parts.append("<table><tr><th>quantity</th><th>paper</th><th>ours</th><th>unit</th><th>note</th></tr>")
            for r in en["rows"]:
                parts.append("<tr>" + "".join(f"<td>{e(format_value(r.get(k)))}</td>"
                                              for k in ("quantity", "paper", "ours", "unit", "note")) + "</tr>")
            parts.append("</table>")
        else:
            parts.append("<p class=\"meta\">no paper-vs-ours rows (see the notebook's metrics JSON)</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def build(profile: str, out: Path | None = None) -> Path:
    """Render every executed notebook of ``profile`` and write the index; return the index path."""
    root = project_root()
    reports = root / "reports" / profile
    notebooks = sorted(reports.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no executed notebooks in reports/{profile}/: run "
                                f"`make reproduce PROFILE={profile}` first")
    out = out or reports / "html"
    out.mkdir(parents=True, exist_ok=True)
    figures = root / "figures" / profile
    entries = []
    for path in notebooks:
        page = out / f"{path.stem}.html"
        page.write_text(notebook_html(path), encoding="utf-8")
        nb = json.loads(path.read_text())
        meta = nb.get("metadata", {}).get("papermill", {})
        pngs = sorted(figures.glob(f"{path.stem[:2]}_*.png"))
        rel = lambda p: Path(os.path.relpath(p, out)).as_posix()  # noqa: E731
        entries.append({
            "name": path.stem, "page": page.name, "errors": _errors(nb),
            "minutes": f"{meta['duration'] / 60:.1f}" if meta.get("duration") else "",
            "parameters": meta.get("parameters", {}),
            "figures": [{"name": p.stem, "png": rel(p), "pdf": rel(p.with_suffix(".pdf"))
                         if p.with_suffix(".pdf").exists() else ""} for p in pngs],
            "rows": _rows(reports / f"{path.stem}_metrics.json", "comparisons"),
            "claims": _rows(reports / f"{path.stem}_metrics.json", "claims")})
    index = out / "index.html"
    index.write_text(portable(_index(profile, entries)), encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m earlyexit.htmlreport", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help=f"one of {', '.join(PROFILE_NAMES)} (default cpu)")
    args = parser.parse_args(argv)
    if args.profile not in PROFILE_NAMES:
        print(f"error: unknown profile {args.profile!r}; choose one of {', '.join(PROFILE_NAMES)}", file=sys.stderr)
        return 2
    try:
        index = build(args.profile)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pages = len(list(index.parent.glob("[0-9][0-9]_*.html")))
    print(f"{pages} notebook page(s) and the index in {index.parent.relative_to(project_root())}/; "
          f"open {index.relative_to(project_root())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
