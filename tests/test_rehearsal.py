"""The paper profile rehearsed end to end: every notebook runs with the paper's parameters at a tiny
cost, says so at its top, names its stand-in data, and leaves the real artifacts cache untouched.
One test per notebook, so that ``make test``'s two processes share the rehearsal."""
import contextlib
import fcntl
import json
import os
import tempfile
import shutil
import subprocess
import sys

import pytest

from earlyexit.paths import project_root
from earlyexit.reproduce import notebooks

# The rehearsals whose caches reach gigabytes (02: class means of flattened ResNet-50 maps, 03: 73
# paper-sized checkpoints): one at a time, so that the suite's peak disk use is one of them, not both.
DISK_HEAVY = {"02", "03"}


@contextlib.contextmanager
def _one_heavy_rehearsal_at_a_time(notebook):
    if notebook not in DISK_HEAVY:
        yield
        return
    with open(os.path.join(tempfile.gettempdir(), "earlyexit-heavy-rehearsal.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.mark.parametrize("notebook", sorted(notebooks()))
def test_paper_profile_rehearsal_runs_the_notebook(notebook, tmp_path):
    env = {**os.environ, "EARLYEXIT_ARTIFACTS": str(tmp_path / "artifacts")}
    env.pop("EARLYEXIT_REHEARSAL", None)
    cache = tmp_path / "artifacts-rehearsal"
    with _one_heavy_rehearsal_at_a_time(notebook):
        try:
            done = subprocess.run([sys.executable, "-m", "earlyexit.reproduce", "--profile", "paper", "--rehearse",
                                   "--only", notebook], capture_output=True, text=True, timeout=1800, env=env)
            cache_used = cache.exists() and any(cache.iterdir())
        finally:
            shutil.rmtree(cache, ignore_errors=True)   # gigabytes of paper-sized checkpoints
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    path = notebooks()[notebook]
    executed = (project_root() / "reports" / "paper-rehearsal" / path.name).read_text()
    first_output = next("".join(o.get("text", "")) for c in json.loads(executed)["cells"] if c["cell_type"] == "code"
                        for o in c.get("outputs", []) if o.get("name") == "stdout")
    assert first_output.startswith("REHEARSAL of profile 'paper'"), first_output[:200]
    if notebook == "03":
        assert "cifar100" in executed.lower() or "CIFAR-100" in executed   # a stand-in is named
    assert not (tmp_path / "artifacts").exists()                           # real cache untouched
    assert cache_used
