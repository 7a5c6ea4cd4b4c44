"""The paper profile rehearsed end to end: every notebook runs with the paper's parameters at a tiny
cost, says so at its top, names its stand-in data, and leaves the real artifacts cache untouched."""
import json
import os
import shutil
import subprocess
import sys

from earlyexit.paths import project_root
from earlyexit.reproduce import notebooks


def test_paper_profile_rehearsal_runs_every_notebook(tmp_path):
    env = {**os.environ, "EARLYEXIT_ARTIFACTS": str(tmp_path / "artifacts")}
    env.pop("EARLYEXIT_REHEARSAL", None)
    try:
        done = subprocess.run([sys.executable, "-m", "earlyexit.reproduce", "--profile", "paper", "--rehearse"],
                              capture_output=True, text=True, timeout=3600, env=env)
        cache_used = (tmp_path / "artifacts-rehearsal").exists() and any((tmp_path / "artifacts-rehearsal").iterdir())
    finally:
        shutil.rmtree(tmp_path / "artifacts-rehearsal", ignore_errors=True)   # gigabytes of paper-sized checkpoints
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    out = project_root() / "reports" / "paper-rehearsal"
    for path in notebooks().values():
        cells = json.loads((out / path.name).read_text())["cells"]
        first_output = next("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code"
                            for o in c.get("outputs", []) if o.get("name") == "stdout")
        assert first_output.startswith("REHEARSAL of profile 'paper'"), (path.name, first_output[:200])
    primer = json.loads((out / "03_differentiable_branching.ipynb").read_text())
    assert "CIFAR-100" in json.dumps(primer) or "cifar100" in json.dumps(primer)   # a stand-in is named
    assert not (tmp_path / "artifacts").exists()                                  # real cache untouched
    assert cache_used
