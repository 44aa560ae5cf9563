"""Builders for orchestrator tests: a root with a manifest and real module directories."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from updates.utils.digest import compute_folder_sha256

CHECKOUT = Path(__file__).resolve().parent.parent

INIT_PY = '''\
"""Test module."""
import os

from ..utils.index import compute_folder_sha256

_HERE = os.path.dirname(os.path.abspath(__file__))
try:
    with open(os.path.join(_HERE, "checksum"), encoding="ascii") as _fh:
        CHECKSUM = _fh.read().strip() or None
except FileNotFoundError:
    CHECKSUM = None
LIVE_CHECKSUM = compute_folder_sha256(_HERE)
'''


def add_module(root: Path, name: str, body: str, *, files: dict[str, str] | None = None, seal: bool = True) -> Path:
    """Create `<root>/<name>/` with index.py = `body` (dedented) and, with `seal`, a correct checksum file."""
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "__init__.py").write_text(INIT_PY)
    (directory / "index.py").write_text(textwrap.dedent(body))
    for rel, text in (files or {}).items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_text(text)
    if seal:
        seal_module(directory)
    return directory


def seal_module(directory: Path) -> str:
    digest = compute_folder_sha256(directory)
    (directory / "checksum").write_text(digest + "\n")
    return digest


def write_manifest(root: Path, entries: list[dict[str, Any]], entrypoint: str = "all_services") -> Path:
    path = root / "manifest.json"
    path.write_text(json.dumps({"updates": entries, "entrypoint": entrypoint}, indent=2) + "\n")
    return path


def group(children: list[str], name: str = "all_services") -> dict[str, Any]:
    return {"name": name, "children": children}


def read_manifest(root: Path) -> dict[str, Any]:
    return json.loads((root / "manifest.json").read_text())


def install_copy(dest: Path) -> Path:
    """A real installation of the orchestrator's code in `dest` (for subprocess scenarios)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(CHECKOUT / "index.py", dest / "index.py")
    shutil.copy2(CHECKOUT / "__init__.py", dest / "__init__.py")
    shutil.copytree(CHECKOUT / "utils", dest / "utils", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def run_index(root: Path, *args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / "index.py"), *args],
        cwd=root, capture_output=True, text=True, timeout=timeout, check=False, **kwargs,
    )


OK_MODULE = """
def main(args):
    return None
"""

CHANGED_MODULE = """
def main(args):
    return {"changed": True, "summary": "1.0 -> 1.1"}
"""

RECORDING_MODULE = """
import json, os
def main(args):
    with open(os.path.join(args["state_dir"], "calls.jsonl"), "a") as fh:
        fh.write(json.dumps(args) + "\\n")
"""


def hold_lock_for(lock: Path, seconds: float) -> subprocess.Popen[bytes]:
    """Another process holding the flock on `lock` for `seconds`, pid written, as a run does; returns once it
    holds it."""
    code = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.ftruncate(fd, 0); os.pwrite(fd, f'{os.getpid()}\\n'.encode(), 0)\n"
        "print('held', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock), str(seconds)], stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    return holder
