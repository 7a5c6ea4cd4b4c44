"""Batch runner: execute the notebooks of a profile with papermill.

    python -m earlyexit.reproduce --profile smoke|cpu|paper [--only 00,03] [--dry-run]

Executed notebooks go to reports/<profile>/, figures to figures/<profile>/ (written by the notebooks),
and a summary table (status and minutes per notebook) is printed at the end, followed by
reports/<profile>/summary.md (paper numbers beside ours). Unknown profiles, notebooks or parameters
fail before anything runs. ``--dry-run`` builds every model and data spec of the profile without
training or loading data.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import time
from pathlib import Path

from .paths import project_root
from .profiles import PROFILE_NAMES, PROFILES

__all__ = ["notebooks", "resolve_parameters", "dry_run", "run", "main"]


class ConfigError(ValueError):
    """A bad profile, notebook or parameter: reported as one line."""


def notebooks() -> dict[str, Path]:
    """Notebook sources by two-digit id: {'00': notebooks/00_primer.ipynb, ...}."""
    return {p.name[:2]: p for p in sorted((project_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))}


def default_parameters(path: Path) -> dict:
    """Names and default values of the notebook's ``parameters`` cell (plain assignments of literals,
    evaluated in an empty namespace)."""
    import nbformat
    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise ConfigError(f"{path.name} has no cell tagged 'parameters'")
    values: dict = {}
    exec(compile(cells[0].source, f"{path.name}:parameters", "exec"), {}, values)
    return values


def resolve_parameters(path: Path, profile: str) -> dict:
    """Profile overrides for a notebook, checked against its parameters cell."""
    if profile not in PROFILE_NAMES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}")
    stem = path.stem
    overrides = dict(PROFILES.get(stem, {}).get(profile, {}))
    known = default_parameters(path)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ConfigError(f"profile {profile!r} sets unknown parameter(s) {unknown} of {stem}; "
                          f"its parameters are {sorted(known)}")
    return {**overrides, "profile": profile}


def select(only: str | None) -> dict[str, Path]:
    found = notebooks()
    if not only:
        return found
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    missing = [w for w in wanted if w not in found]
    if missing:
        raise ConfigError(f"unknown notebook(s) {missing}; available: {', '.join(found)}")
    return {w: found[w] for w in wanted}


def plan_module(path: Path):
    return importlib.import_module(f"earlyexit.plans.{path.stem[3:]}")


def call_plan(plan, params: dict) -> list:
    """``plan`` with the notebook parameters it accepts (all of them if it takes ``**parameters``)."""
    accepted = inspect.signature(plan).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return plan(**params)
    return plan(**{k: v for k, v in params.items() if k in accepted})


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


def run(profile: str, chosen: dict[str, Path]) -> list[dict]:
    import papermill
    from .report import write_summary
    out_dir = project_root() / "reports" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(path, resolve_parameters(path, profile)) for path in chosen.values()]  # validate all first
    results = []
    for i, (path, params) in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {path.stem} (profile {profile}) ...", flush=True)
        t0 = time.perf_counter()
        status = "ok"
        try:
            papermill.execute_notebook(str(path), str(out_dir / path.name), parameters=params,
                                       cwd=str(path.parent), kernel_name="python3", progress_bar=True)
        except Exception as exc:  # keep going; report at the end
            status = f"FAILED: {exc.__class__.__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
        minutes = (time.perf_counter() - t0) / 60
        results.append({"notebook": path.stem, "status": status, "minutes": minutes})
        print(f"[{i}/{len(jobs)}] {path.stem}: {status} in {minutes:.1f} min", flush=True)
    summary = write_summary(profile)
    print(f"\nprofile {profile}: executed notebooks in {out_dir}, comparisons in {summary}")
    return results


def _table(rows: list[dict]) -> str:
    if not rows:
        return "(nothing)"
    cols = list(rows[0])
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    widths = {c: max(len(c), *(len(fmt(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(fmt(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m earlyexit.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", help=f"one of {', '.join(PROFILE_NAMES)} (default cpu)")
    parser.add_argument("--only", help="comma-separated notebook ids, e.g. 00,03")
    parser.add_argument("--dry-run", action="store_true", help="build every model and data spec, train nothing")
    args = parser.parse_args(argv)
    try:
        if args.profile not in PROFILE_NAMES:
            raise ConfigError(f"unknown profile {args.profile!r}; choose one of {', '.join(PROFILE_NAMES)}")
        chosen = select(args.only)
        if args.dry_run:
            rows = dry_run(args.profile, chosen)
            print(_table(rows))
            print(f"\ndry run of profile {args.profile}: {len(rows)} run(s) across {len(chosen)} notebook(s) built")
            return 0
        results = run(args.profile, chosen)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n" + _table(results))
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
