"""Runs trained ahead by ``prepare`` (here on a local Ray instance) leave the notebooks nothing to train."""
import os
import subprocess
import sys

import papermill
import pytest

from earlyexit.prepare import profile_runs
from earlyexit.reproduce import notebooks, resolve_parameters


def _checkpoints(root):
    """Training checkpoints (not the output caches, nor the EENet scheduler fits notebook 04 caches)."""
    return {p.relative_to(root): p.stat().st_mtime_ns for p in root.rglob("*.pt")
            if not p.name.startswith("outputs_") and p.parent.name != "eenet_fits"}


def test_profile_runs_put_parents_first_and_count_shared_runs_once():
    specs = profile_runs("smoke", "02")
    keys = [s.key for s in specs]
    assert len(keys) == len(set(keys))
    for i, s in enumerate(specs):
        if s.init_from is not None:
            assert s.init_from.key in keys[:i]


def test_prepare_on_ray_then_the_notebooks_train_nothing(tmp_path, monkeypatch):
    pytest.importorskip("ray", reason="the ray executor needs the cluster extra: pip install -e '.[cluster]'")
    artifacts = tmp_path / "artifacts"
    monkeypatch.setenv("EARLYEXIT_ARTIFACTS", str(artifacts))
    done = subprocess.run([sys.executable, "-m", "earlyexit.prepare", "--profile", "smoke", "--only", "00,04",
                           "--executor", "ray", "--num-cpus", "2"], capture_output=True, text=True, timeout=900,
                          env=os.environ.copy())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    before = _checkpoints(artifacts)
    assert len([p for p in before if p.name == "checkpoint.pt"]) == len(profile_runs("smoke", "00,04"))
    for nb in ("00", "04"):
        path = notebooks()[nb]
        papermill.execute_notebook(str(path), str(tmp_path / path.name), parameters=resolve_parameters(path, "smoke"),
                                   cwd=str(path.parent), kernel_name="python3", progress_bar=False)
    assert _checkpoints(artifacts) == before   # no checkpoint written or rewritten by the notebooks
