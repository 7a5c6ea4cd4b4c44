"""Test set-up: single-threaded torch, a throw-away artifacts folder, and the local data copies."""
import os
import tempfile
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

# Trainings made by tests (smoke notebooks included) never touch the project's artifacts/.
os.environ.setdefault("EARLYEXIT_ARTIFACTS", tempfile.mkdtemp(prefix="earlyexit-test-artifacts-"))

# The offline copies beside the checkout (../shared/data), unless the caller points elsewhere.
_shared = Path(__file__).resolve().parents[2] / "shared" / "data"
if "EARLYEXIT_LOCAL_DATA" not in os.environ and _shared.exists():
    os.environ["EARLYEXIT_LOCAL_DATA"] = str(_shared)


@pytest.fixture
def fresh_artifacts(tmp_path, monkeypatch):
    """An empty artifacts folder for one test."""
    monkeypatch.setenv("EARLYEXIT_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"
