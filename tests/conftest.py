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


# Rehearsed notebooks, slowest first (measured: 02 and 03 take most of the rehearsal). 02 and 03 also
# write the largest caches (paper-sized checkpoints and class means: about 4 GB each at their peak), so
# they share one worker's lane and never run side by side (test_rehearsal.py also locks around them).
_REHEARSAL_LANES = (("02", "03"), ("01", "05", "00", "04"))


def pytest_collection_modifyitems(items):
    """Under ``-n N``, xdist first hands each worker a contiguous share of the collection in order
    (then idle workers steal from busy ones' tails). The rehearsal tests, the longest by far, go to the
    heads of those shares in ``_REHEARSAL_LANES``, so that they start at once, two lanes side by side."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    lane_of = {nb: (lane, i) for lane, nbs in enumerate(_REHEARSAL_LANES) for i, nb in enumerate(nbs)}

    def place(item):
        notebook = item.callspec.params.get("notebook") if hasattr(item, "callspec") else None
        return lane_of.get(notebook, (len(_REHEARSAL_LANES), 0))

    slow = sorted((i for i in items if "test_rehearsal.py" in i.nodeid), key=place)
    rest = [i for i in items if "test_rehearsal.py" not in i.nodeid]
    lanes = [[i for i in slow if place(i)[0] % workers == w] for w in range(workers)]
    remaining, ordered = len(items), []
    for w, lane in enumerate(lanes):
        share = remaining // (workers - w)      # xdist's initial share for this worker
        take = max(share - len(lane), 0)
        ordered += lane + rest[:take]
        rest, remaining = rest[take:], remaining - share
    items[:] = ordered + rest
