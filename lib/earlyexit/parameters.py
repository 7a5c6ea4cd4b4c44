"""A notebook's parameters: its ``parameters`` cell, a profile's overrides of it, and its study's plan.

The runner (``reproduce``, ``prepare``), the bench and ``notebook.start`` all resolve a notebook's
parameters here, so a notebook run by papermill and the same notebook stepped through in JupyterLab
get the same values, and the training plan of a profile is read from one place.
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from types import ModuleType

from .paths import project_root
from .profiles import PROFILE_NAMES, PROFILES

__all__ = ["ConfigError", "THREADS_ENV", "notebooks", "default_parameters", "resolve_parameters", "select",
           "plan_module", "call_plan"]

THREADS_ENV = "EARLYEXIT_THREADS"   # overrides every notebook's ``threads`` parameter when set


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
    """The notebooks named by ``--only`` ("00,03"; all when empty), refusing an unknown id."""
    found = notebooks()
    if not only:
        return found
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    missing = [w for w in wanted if w not in found]
    if missing:
        raise ConfigError(f"unknown notebook(s) {missing}; available: {', '.join(found)}")
    return {w: found[w] for w in wanted}


def plan_module(path: Path) -> ModuleType:
    """The study of a notebook (01_class_exclusion -> earlyexit.studies.class_exclusion), holding its plan."""
    return importlib.import_module(f"earlyexit.studies.{path.stem[3:]}")


def call_plan(plan, params: dict) -> list:
    """``plan`` with the notebook parameters it accepts (all of them if it takes ``**parameters``)."""
    accepted = inspect.signature(plan).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return plan(**params)
    return plan(**{k: v for k, v in params.items() if k in accepted})
