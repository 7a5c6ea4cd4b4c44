"""Registries do not depend on import order, and refuse duplicate names."""
import subprocess
import sys

import pytest

from earlyexit.backbones import BACKBONES
from earlyexit.losses import LOSSES
from earlyexit.registry import Registry

FRESH = r"""
import sys, torch
from dataclasses import replace
torch.set_num_threads(1)
from earlyexit.reproduce import call_plan, default_parameters, notebooks, plan_module, resolve_parameters
from earlyexit.train import train_cached

def short(spec):
    # one epoch on a tiny subset; parents shortened the same way
    data = replace(spec.data, val_size=32, train_size=64, test_size=32)
    return replace(spec.with_train(epochs=min(spec.train.epochs, 1), time_budget_s=None, schedule="constant"),
                   data=data, init_from=None if spec.init_from is None else short(spec.init_from))

trained = 0
for nb_id, path in notebooks().items():
    params = {**default_parameters(path), **resolve_parameters(path, "smoke")}
    for spec in call_plan(plan_module(path).plan, params):
        train_cached(short(spec), progress=False)
        trained += 1
print("TRAINED", trained)
"""


def test_every_smoke_plan_trains_in_a_fresh_interpreter(fresh_artifacts):
    """A run built from a plan alone trains even though no notebook imported the method module first."""
    done = subprocess.run([sys.executable, "-c", FRESH], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "TRAINED" in done.stdout and int(done.stdout.split("TRAINED")[1].split()[0]) >= 10


def test_registries_refuse_duplicates_and_name_the_known_entries():
    reg = Registry("widget")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("a", 2)
    with pytest.raises(ValueError, match="unknown widget 'b'"):
        reg.get("b")
    with pytest.raises(ValueError, match="already registered"):
        LOSSES.add("weighted_ce", object())
    with pytest.raises(ValueError, match="already registered"):
        BACKBONES.add("airnet", object())
    assert {"class_exclusion", "soft_conditional", "reconstruction"} <= set(LOSSES.names())
