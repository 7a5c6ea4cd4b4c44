"""The README's "Use a method on your own network" example runs as written."""
from __future__ import annotations

import contextlib
import io
import re

from earlyexit.paths import project_root


def readme_example() -> str:
    text = (project_root() / "README.md").read_text()
    section = text[text.index("## Use a method on your own network"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_and_prints_its_summary():
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_example(), "README.md", "exec"), {})
    assert "'accuracy'" in printed.getvalue() and "'exit_shares'" in printed.getvalue()
