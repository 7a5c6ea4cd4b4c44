"""Test set-up: single-threaded torch, a throw-away artifacts folder, and the local data copies."""
import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

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
