"""Where things live (data, artifacts, figures, reports) and how files are written safely."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import rehearsal

__all__ = ["project_root", "output_root", "data_root", "artifacts_root", "atomic_save", "load_cached", "move_aside", "config_hash",
           "machine_prefixes", "portable"]


def project_root() -> Path:
    """The checkout holding lib/earlyexit, or the working directory for an installed copy."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def output_root(default: Path | None = None) -> Path:
    """The folder holding reports/ and figures/: ``EARLYEXIT_OUTPUT`` when set (where ``reproduce --check``
    puts a rerun, so the committed reports are never overwritten), else ``default`` (the project root)."""
    return Path(os.environ.get("EARLYEXIT_OUTPUT") or (default if default is not None else project_root()))


def data_root() -> Path:
    return Path(os.environ.get("EARLYEXIT_DATA", project_root() / "data"))


def artifacts_root() -> Path:
    """Trainings and cached outputs; a rehearsal (see rehearsal.py) uses a sibling folder of its own."""
    root = Path(os.environ.get("EARLYEXIT_ARTIFACTS", project_root() / "artifacts"))
    return root.with_name(root.name + "-rehearsal") if rehearsal.active() else root


def atomic_save(obj, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except (RuntimeError, OSError) as error:
        # torch reports a short write (a full disk) as "unexpected pos N vs M" from its zip writer.
        short_write = getattr(error, "errno", None) == errno.ENOSPC or "unexpected pos" in str(error)
        if short_write:
            free_mb = shutil.disk_usage(path.parent).free / 2**20
            raise OSError(f"could not write {path.name} to {path.parent}: the write stopped short, the disk is "
                          f"probably full ({free_mb:.0f} MB free after the failed write). Free space there or "
                          f"point EARLYEXIT_ARTIFACTS at a larger disk.") from error
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def move_aside(path: Path, why: str) -> None:
    """Rename a bad cache file to ``*.corrupt-<time>`` so it is rebuilt, never silently reused."""
    aside = path.with_name(path.name + f".corrupt-{int(time.time())}")
    path.rename(aside)
    print(f"warning: {path.name} in {path.parent.name} is {why}; moved to {aside.name}, rebuilding")


def load_cached(path: str | Path):
    """A torch file from a cache, or None when it is missing or unreadable (then moved aside)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, weights_only=False, map_location="cpu")
    except Exception as exc:
        move_aside(path, f"unreadable ({exc.__class__.__name__})")
        return None


def config_hash(config: dict) -> str:
    """A short stable hash of a JSON-serialisable configuration."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def machine_prefixes() -> list[tuple[str, str]]:
    """Absolute prefixes of this machine and what to write instead, longest first."""
    root = str(project_root())
    pairs = {root + os.sep: "", root: "."}
    for env, name in (("EARLYEXIT_LOCAL_DATA", "$EARLYEXIT_LOCAL_DATA"), ("EARLYEXIT_ARTIFACTS", "$EARLYEXIT_ARTIFACTS"),
                      ("EARLYEXIT_DATA", "$EARLYEXIT_DATA")):
        if os.environ.get(env):
            pairs.setdefault(str(Path(os.environ[env]).resolve()) + os.sep, name + "/")
            pairs.setdefault(os.environ[env].rstrip(os.sep) + os.sep, name + "/")
    pairs.setdefault(sys.prefix + os.sep, "<python>/")
    pairs.setdefault(tempfile.gettempdir() + os.sep, "<tmp>/")
    pairs.setdefault(str(Path.home()) + os.sep, "~/")
    return sorted(pairs.items(), key=lambda kv: -len(kv[0]))


def portable(text: str, prefixes: list[tuple[str, str]] | None = None) -> str:
    """``text`` with this machine's absolute prefixes (project root, data folders, interpreter, temp, home)
    replaced by relative or symbolic forms."""
    for prefix, replacement in prefixes or machine_prefixes():
        if prefix in text:
            text = text.replace(prefix, replacement)
    return text
