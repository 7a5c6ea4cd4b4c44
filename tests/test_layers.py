"""The package's layers, read from the source: core <- methods <- studies <- runner.

A module may import its own layer and the layers below it, never above; the import graph has no cycle;
and a method module, imported alone in a fresh interpreter, loads neither a plotting library nor pandas
(a researcher applying a rule to a network of their own should not pay for the notebooks' figures).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "earlyexit"
RUNNER = {"reproduce", "prepare", "parameters", "notebook", "htmlreport", "benchmark"}
LAYERS = ("core", "methods", "studies", "runner")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    top = (module.split(".") + [""])[1]
    if top in ("methods", "studies"):
        return top
    return "runner" if top in RUNNER else "core"


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """Every earlyexit module (of ``known``) that ``name`` imports, at module level or inside a function."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("earlyexit")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if not source.startswith("earlyexit"):
                continue
            subs = {f"{source}.{a.name}" for a in node.names} & known
            found |= subs or {source}
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(path, name, set(found)) for name, path in found.items()}


def test_layers_are_known():
    assert {layer(m) for m in modules()} == set(LAYERS)
    assert layer("earlyexit.methods.eenet") == "methods" and layer("earlyexit.studies.plots") == "studies"
    assert layer("earlyexit.train") == "core" and layer("earlyexit.reproduce") == "runner"


def test_imports_point_down_the_layers():
    upward = [f"{m} ({layer(m)}) imports {t} ({layer(t)})" for m, targets in graph().items() for t in targets
              if LAYERS.index(layer(t)) > LAYERS.index(layer(m))]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_every_module_says_what_it_is_for():
    missing = [m for m, p in modules().items() if not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, missing


METHODS = sorted(m for m in modules() if layer(m) == "methods" and m != "earlyexit.methods")


@pytest.mark.parametrize("method", METHODS)
def test_a_method_loads_no_plotting_or_pandas(method):
    code = ("import sys, importlib; importlib.import_module(%r); "
            "print(sorted(m for m in ('matplotlib', 'seaborn', 'pandas') if m in sys.modules)); "
            "print(sorted(m for m in sys.modules if m.startswith('earlyexit.studies')))" % method)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]", f"{method} loads {out[0]}"
    assert out[1] == "[]", f"{method} loads studies {out[1]}"
