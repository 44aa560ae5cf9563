"""Real git repositories for the rollback tests: a copy of the orchestrator plus a module `demo` with three
tagged versions (files added, removed, changed and made executable between them).

The fixture `rollback_template` builds the repository once per session; `repo` gives each test its own copy.
Test files import the fixtures as `from git_support import repo_fixture, rollback_template_fixture`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from orchestrator_support import INIT_PY as ORCHESTRATOR_INIT_PY
from updates.utils.digest import compute_folder_sha256
from updates.utils.paths import Paths
from updates.utils.rollback import tag_module

ROOT = Path(__file__).resolve().parent.parent
MODULE = "demo"

INIT_PY = ORCHESTRATOR_INIT_PY  # the contract's __init__.py, as every module has it


def index_py(version: str) -> str:
    return f'''"""Demo module: writes its version and lib.VALUE to <state_dir>/ran.txt."""
from pathlib import Path

from .lib import VALUE

VERSION = "{version}"


def main(args):
    Path(args["state_dir"], "ran.txt").write_text(f"{{VERSION}} {{VALUE}}\\n")
    return {{"changed": True, "summary": VERSION}}
'''


# version -> {relative path: content or (content, mode)}; __init__.py and checksum are added for each.
VERSIONS: dict[str, dict[str, str | tuple[str, int]]] = {
    "1.0.0": {
        "index.py": index_py("1.0.0"),
        "lib.py": "VALUE = 1\n",
        "old.txt": "only in 1.0.0\n",
        "data/config.txt": "a=1\n",
    },
    "1.1.0": {
        "index.py": index_py("1.1.0"),
        "lib.py": "VALUE = 2\n",
        "new.txt": "added in 1.1.0\n",
        "data/config.txt": "a=2\n",
        "bin/tool.sh": ("#!/bin/sh\necho tool 1.1.0\n", 0o755),
    },
    "2.0.0-rc.1": {
        "index.py": index_py("2.0.0-rc.1"),
        "lib.py": "VALUE = 3\n",
        "new.txt": "added in 1.1.0, changed in 2.0.0-rc.1\n",
        "extra/deep/file.txt": "new in 2.0.0-rc.1\n",
        "bin/tool.sh": ("#!/bin/sh\necho tool 2.0.0\n", 0o755),
    },
}
# When each version was committed and tagged (UTC noon of these days).
DAYS = {"1.0.0": (2026, 1, 10), "1.1.0": (2026, 2, 10), "2.0.0-rc.1": (2026, 3, 10)}


def noon(day: tuple[int, int, int]) -> datetime:
    return datetime(*day, 12, tzinfo=timezone.utc)


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file below `directory` (bytecode caches excluded) with its bytes and permission bits."""
    out: dict[str, tuple[bytes, int]] = {}
    for path in sorted(directory.rglob("*")):
        if "__pycache__" in path.parts or path.is_dir():
            continue
        out[path.relative_to(directory).as_posix()] = (path.read_bytes(), path.stat().st_mode & 0o777)
    return out


def expected_tree(version: str) -> dict[str, bytes]:
    """The files version `version` of `demo` consists of, as bytes (checksum included)."""
    files = {"__init__.py": INIT_PY.encode()}
    for rel, content in VERSIONS[version].items():
        files[rel] = (content[0] if isinstance(content, tuple) else content).encode()
    return files


@dataclass
class Repo:
    root: Path

    @property
    def paths(self) -> Paths:
        return Paths.create(self.root, environ={"UPDATES_STATE_DIR": str(self.root / "state")})

    @property
    def module_dir(self) -> Path:
        return self.root / MODULE

    def git(self, *args: str, date: datetime | None = None) -> str:
        env = dict(os.environ)
        if date is not None:
            env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date.isoformat()
        done = subprocess.run(
            ["git", "-C", str(self.root), *args], env=env, capture_output=True, check=True, timeout=30
        )
        return done.stdout.decode().strip()

    def manifest(self) -> dict:
        return json.loads((self.root / "manifest.json").read_text())

    def entry(self, name: str = MODULE) -> dict:
        return next(e for e in self.manifest()["updates"] if e["name"] == name)

    def set_entry(self, name: str = MODULE, **changes: object) -> None:
        raw = self.manifest()
        next(e for e in raw["updates"] if e["name"] == name).update(changes)
        (self.root / "manifest.json").write_text(json.dumps(raw, indent=2) + "\n")

    def write_module(self, version: str) -> str:
        """Make `demo/` exactly version `version`, with a correct checksum file; returns the digest."""
        directory = self.module_dir
        if directory.exists():
            shutil.rmtree(directory)
        for rel, content in expected_tree(version).items():
            target = directory / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            spec = VERSIONS[version].get(rel)
            target.chmod(spec[1] if isinstance(spec, tuple) else 0o644)
        digest = compute_folder_sha256(directory)
        (directory / "checksum").write_text(digest + "\n")
        return digest

    def deploy(self, version: str, day: tuple[int, int, int]) -> str:
        """Write, bump, commit and tag `version` as an operator following the README would; returns the tag."""
        digest = self.write_module(version)
        self.set_entry(version=version, checksum=digest)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", f"demo {version}", date=noon(day))
        return tag_module(MODULE, paths=self.paths, now=noon(day))

    def run_orchestrator(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "index.py", *args],
            cwd=self.root,
            env={**os.environ, "UPDATES_STATE_DIR": str(self.root / "state")},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def build_repo(root: Path, top: Path | None = None) -> Repo:
    """A git repository holding the orchestrator and `demo` tagged at every version in VERSIONS.

    `top` puts the repository's top level above the installation (default: the installation itself).
    """
    root.mkdir(parents=True)
    for name in ("index.py", "__init__.py"):
        shutil.copy2(ROOT / name, root / name)
    shutil.copytree(ROOT / "utils", root / "utils", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (root / ".gitignore").write_text("state/\n__pycache__/\n*.pyc\n")
    manifest = {
        "updates": [
            {"name": "all_services", "description": "everything", "children": [MODULE]},
            {"name": MODULE, "version": None, "lastSafeVersion": None, "lastApplied": None,
             "checksum": None, "args": {}, "x-note": "unknown fields survive"},
        ],
        "entrypoint": "all_services",
    }  # fmt: skip
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    repo = Repo(root)
    repo.git("init", "-q", "-b", "main", str(top or root))
    for key, value in (
        ("user.name", "Rollback Tests"),
        ("user.email", "tests@example.invalid"),
        ("commit.gpgSign", "false"),
        ("tag.gpgSign", "false"),
    ):
        repo.git("config", key, value)
    for version, day in DAYS.items():
        repo.deploy(version, day)
    repo.set_entry(lastSafeVersion="1.1.0")
    repo.git("commit", "-q", "-am", "mark 1.1.0 safe", date=noon((2026, 3, 11)))
    # Tags that must never be read as demo's: another module's, and malformed ones.
    repo.git("tag", "demo_mirror-v9.9.9-20260401")
    repo.git("tag", "demo-vbroken")
    repo.git("tag", "demo-v1.0.0-2026")
    repo.git("tag", "demo-v-20260101")
    return repo


@pytest.fixture(scope="session", name="rollback_template")
def rollback_template_fixture(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    return build_repo(tmp_path_factory.mktemp("rollback-template") / "updates")


@pytest.fixture(name="repo")
def repo_fixture(rollback_template: Repo, tmp_path: Path) -> Repo:
    """A private copy of the template repository (git metadata included) named `updates/`."""
    root = tmp_path / "updates"
    shutil.copytree(rollback_template.root, root, symlinks=True)
    return Repo(root)


@pytest.fixture(name="lock_holder")
def lock_holder_fixture(repo: Repo) -> Iterator[subprocess.Popen[str]]:
    """A separate process holding the run lock of `repo` (flock, as an orchestrator run does)."""
    lock = repo.paths.lock
    lock.parent.mkdir(parents=True, exist_ok=True)
    script = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, f'{os.getpid()}\\n'.encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "locked\n"
        yield child
    finally:
        child.kill()
        child.wait(timeout=10)
