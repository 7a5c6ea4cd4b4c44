"""Test set-up: single-threaded torch, a throw-away artifacts folder, and the local data copies."""
import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
# Under pytest-xdist (``make test``: two processes on two cores) every notebook kernel and subprocess gets
# one thread too: two processes of two threads each on two cores run several times slower, not 2x.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("EARLYEXIT_THREADS", "1")

# Trainings made by tests (smoke notebooks included) never touch the project's artifacts/.
# The folder is removed when the session ends: checkpoints add up to gigabytes over a suite.
if "EARLYEXIT_ARTIFACTS" not in os.environ:
    os.environ["EARLYEXIT_ARTIFACTS"] = tempfile.mkdtemp(prefix="earlyexit-test-artifacts-")
    atexit.register(shutil.rmtree, os.environ["EARLYEXIT_ARTIFACTS"], True)
    atexit.register(shutil.rmtree, os.environ["EARLYEXIT_ARTIFACTS"] + "-rehearsal", True)

# The offline copies beside the checkout (../shared/data), unless the caller points elsewhere.
_shared = Path(__file__).resolve().parents[2] / "shared" / "data"
if "EARLYEXIT_LOCAL_DATA" not in os.environ and _shared.exists():
    os.environ["EARLYEXIT_LOCAL_DATA"] = str(_shared)


@pytest.fixture
def fresh_artifacts(tmp_path, monkeypatch):
    """An empty artifacts folder for one test."""
    monkeypatch.setenv("EARLYEXIT_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"


# Rehearsed notebooks, slowest first (measured: 02 and 03 take most of the rehearsal).
_REHEARSAL_ORDER = ("02", "03", "01", "05", "00", "04")


def pytest_collection_modifyitems(items):
    """Under ``-n N``, xdist first hands each worker a contiguous share of the collection in order
    (then idle workers steal from busy ones' tails). The rehearsal tests, the longest by far, are
    dealt round-robin to the heads of those shares, so that they run side by side from the start."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    rank = {nb: i for i, nb in enumerate(_REHEARSAL_ORDER)}
    slow = sorted((i for i in items if "test_rehearsal.py" in i.nodeid),
                  key=lambda i: rank.get(i.callspec.params.get("notebook") if hasattr(i, "callspec") else None, 99))
    rest = [i for i in items if "test_rehearsal.py" not in i.nodeid]
    lanes = [slow[w::workers] for w in range(workers)]
    remaining, ordered = len(items), []
    for w, lane in enumerate(lanes):
        share = remaining // (workers - w)      # xdist's initial share for this worker
        take = max(share - len(lane), 0)
        ordered += lane + rest[:take]
        rest, remaining = rest[take:], remaining - share
    items[:] = ordered + rest
