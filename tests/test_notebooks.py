"""Every notebook runs end to end on the smoke profile (papermill), and its executed copy passes nbval:
re-executed, every output must match (timings masked by tests/nbval_sanitize.cfg)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import papermill
import pytest

from earlyexit.reproduce import notebooks, resolve_parameters
from earlyexit.studies.plots import figure_dir, figure_problems

SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")


@pytest.fixture(scope="module", autouse=True)
def decoded_cifar10():
    """Decode CIFAR-10 once before the notebooks run, so its progress bar is not part of a cell's output."""
    from earlyexit.data import load_dataset
    load_dataset("cifar10")


@pytest.mark.parametrize("path", list(notebooks().values()), ids=lambda p: p.stem)
def test_notebook_smoke_then_nbval(path: Path, tmp_path: Path):
    executed = tmp_path / path.name
    papermill.execute_notebook(str(path), str(executed), parameters=resolve_parameters(path, "smoke"),
                               cwd=str(path.parent), kernel_name="python3", progress_bar=False)
    check = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", str(executed), "--nbval-sanitize-with", str(SANITIZE),
         "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, env=os.environ.copy())
    assert check.returncode == 0, check.stdout[-4000:] + check.stderr[-2000:]
    # every figure follows the collection's figure style (plots.figure_problems finds nothing)
    texts = sorted(figure_dir("smoke").glob(f"{path.name[:2]}_*.json"))
    assert texts and {t.name: figure_problems(json.loads(t.read_text())) for t in texts} == \
        {t.name: [] for t in texts}
