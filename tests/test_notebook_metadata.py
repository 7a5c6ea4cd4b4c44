"""Opening a notebook leaves it clean: its kernelspec is the one JupyterLab reports for the kernel it names
(a differing display name marks the tab as changed as soon as the kernel starts)."""
import json

import pytest
from jupyter_client.kernelspec import KernelSpecManager

from earlyexit.parameters import notebooks


@pytest.mark.parametrize("path", list(notebooks().values()), ids=lambda p: p.stem)
def test_kernelspec_matches_the_installed_kernel(path):
    spec = json.loads(path.read_text())["metadata"]["kernelspec"]
    installed = KernelSpecManager().get_kernel_spec(spec["name"])
    assert spec == {"name": spec["name"], "display_name": installed.display_name, "language": installed.language}
