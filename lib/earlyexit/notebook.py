"""What every notebook runs right after its ``parameters`` cell.

``start`` applies the chosen profile's overrides, so that a reader who changes ``profile = "cpu"`` to
``"smoke"`` in JupyterLab gets what ``python -m earlyexit.reproduce --profile smoke`` runs (there,
papermill has already injected the same values), then sets threads, the device every training and
evaluation uses (the ``device`` parameter: "auto" = CUDA, else MPS, else CPU), figure style and table format.
"""
from __future__ import annotations

import os

import torch

from . import rehearsal
from .data import available_offline
from .device import set_default_device
from .studies.claims import SMOKE_NOTE, is_smoke
from .studies.plots import use_style
from .tableformat import use_table_format
from .parameters import THREADS_ENV, call_plan, default_parameters, notebooks, plan_module, resolve_parameters

__all__ = ["start"]


def start(notebook: str, namespace: dict) -> dict:
    """Resolve the notebook's parameters in ``namespace`` (its globals) and return them as a dict."""
    path = notebooks()[notebook[:2]]
    params = {name: namespace[name] for name in default_parameters(path)}
    overrides = resolve_parameters(path, params["profile"])
    changed = sorted(k for k, v in overrides.items() if params[k] != v)
    params.update(overrides)
    namespace.update(overrides)
    if rehearsal.active():
        trimmed = rehearsal.trim_repeats(params)
        params.update(trimmed)
        namespace.update(trimmed)
        used = sorted({spec.data.name for spec in call_plan(plan_module(path).plan, params)})
        print(rehearsal.banner(params["profile"], [n for n in used if not available_offline(n)], trimmed))
    if changed:
        print(f"profile {params['profile']!r} sets {', '.join(changed)}")
    if is_smoke(params["profile"]):
        print(SMOKE_NOTE)
    # `reproduce --jobs` runs notebooks side by side and gives each one thread (EARLYEXIT_THREADS)
    torch.set_num_threads(int(os.environ.get(THREADS_ENV, params.get("threads", 1))))
    if "device" in params:
        print(f"device: {set_default_device(params['device'], params.get('bf16', False))}")
    use_style()
    use_table_format()
    return params
