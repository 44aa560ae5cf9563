"""The role's modules write the checkout and the manifest only under the host's run lock (the one index.py
takes), wait for a run that holds it, and fail with nothing changed when it is held for too long."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from orchestrator_support import hold_lock_for
from role_support import ROLE, load
from updates.utils.lock import run_lock as orchestrator_lock
from updates.utils.paths import Paths

BIN = Path(sys.executable).parent


lock_utils = load(ROLE / "module_utils" / "updates_lock.py")


def paths(tmp_path: Path) -> Paths:
    return Paths(root=tmp_path / "root", manifest=tmp_path / "root" / "manifest.json", state=tmp_path / "state")


def test_a_held_run_lock_is_waited_for_then_refused(tmp_path: Path) -> None:
    where = paths(tmp_path)
    with orchestrator_lock(where):  # a nightly run holds it
        started = time.monotonic()
        busy = pytest.raises(lock_utils.LockBusy, match=r"has held .*updates.lock for more than 0.6 s; nothing")
        with busy, lock_utils.run_lock(str(where.lock), 0.6):
            pytest.fail("the block ran while the run held the lock")
        assert time.monotonic() - started >= 0.6
    # Free again: taken at once, and now a run of index.py is the one refused.
    refused = pytest.raises(Exception, match="another run holds the lock")
    with lock_utils.run_lock(str(where.lock), 0.6), refused, orchestrator_lock(where):
        pass


def test_a_run_that_ends_within_the_timeout_is_waited_for_and_the_lock_names_the_play(tmp_path: Path) -> None:
    lock = tmp_path / "state" / "updates.lock"
    lock.parent.mkdir()
    holder = hold_lock_for(lock, 1.5)
    started = time.monotonic()
    with lock_utils.run_lock(str(lock), 30):
        waited = time.monotonic() - started
        assert lock.read_text() == f"{os.getpid()}\n"  # what index.py reads to name the holder
    holder.wait(timeout=30)
    assert 1.0 <= waited < 30


def test_no_state_directory_means_no_lock_and_nothing_created(tmp_path: Path) -> None:
    lock = tmp_path / "state" / "updates.lock"
    with lock_utils.run_lock(str(lock), 0.1):
        pass
    assert not (tmp_path / "state").exists()


def test_a_link_at_the_lock_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    target = tmp_path / "elsewhere"
    target.write_text("precious\n")
    (tmp_path / "state" / "updates.lock").symlink_to(target)
    with pytest.raises(lock_utils.LockBusy, match="symbolic link"), lock_utils.run_lock(
        str(tmp_path / "state" / "updates.lock"), 0.1
    ):
        pass
    assert target.read_text() == "precious\n"


def ansible_module(tmp_path: Path, name: str, args: dict[str, object]) -> subprocess.CompletedProcess[str]:
    """The role's module `name` run by real Ansible on this machine (connection local), as a play would."""
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path / "home"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "ANSIBLE_LIBRARY": str(ROLE / "library"), "ANSIBLE_MODULE_UTILS": str(ROLE / "module_utils"),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ansible-remote"), "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable, "PYTHONDONTWRITEBYTECODE": "1",
    }  # fmt: skip
    (tmp_path / "home").mkdir(exist_ok=True)
    return subprocess.run(
        [str(BIN / "ansible"), "localhost", "-c", "local", "-m", name, "-a", json.dumps(args), "-o"],
        capture_output=True, text=True, env=env, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip


def test_updates_manifest_under_real_ansible_waits_for_the_run_lock(tmp_path: Path) -> None:
    if not (BIN / "ansible").exists():
        pytest.skip("ansible-core is not installed")
    where = paths(tmp_path)
    where.root.mkdir()
    original = json.dumps({"updates": [{"name": "adblock", "enabled": True}], "entrypoint": "adblock"}, indent=2)
    where.manifest.write_text(original + "\n")
    args = {"path": str(where.manifest), "modules": {"adblock": {"enabled": False}},
            "lock": str(where.lock), "lock_timeout": 1}  # fmt: skip
    with orchestrator_lock(where):
        held = ansible_module(tmp_path, "updates_manifest", args)
    assert held.returncode != 0
    assert "has held" in held.stdout and "nothing was changed" in held.stdout
    assert where.manifest.read_text() == original + "\n"
    # A run that ends while the module waits: the module then writes, after it.
    holder = hold_lock_for(where.lock, 2)
    started = time.monotonic()
    waited = ansible_module(tmp_path, "updates_manifest", {**args, "lock_timeout": 60})
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert time.monotonic() - started >= 1.5 and holder.wait(timeout=30) == 0
    assert json.loads(where.manifest.read_text())["updates"][0]["enabled"] is False


def git(cwd: Path, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}  # fmt: skip
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_updates_checkout_under_real_ansible_waits_for_the_run_lock(tmp_path: Path) -> None:
    """No code moves under a running module: with the run lock held past the timeout the checkout fails
    and the installation stays at its commit, files and manifest alike; a run that ends within the
    timeout is waited for, and the checkout then moves."""
    if not (BIN / "ansible").exists():
        pytest.skip("ansible-core is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    manifest = {"updates": [{"name": "adblock", "version": "1.0.0", "enabled": True}], "entrypoint": "adblock"}
    (repo / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (repo / "index.py").write_text("# version one\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one")
    git(repo, "tag", "v1")
    (repo / "index.py").write_text("# version two\n")
    git(repo, "commit", "-q", "-am", "two")
    git(repo, "tag", "v2")
    where = paths(tmp_path)
    args = {"repo": str(repo), "dest": str(where.root), "version": "v1", "lock": str(where.lock), "lock_timeout": 1}
    first = ansible_module(tmp_path, "updates_checkout", args)  # no state directory yet: no lock to take
    assert first.returncode == 0, first.stdout + first.stderr
    at_v1 = git(where.root, "rev-parse", "HEAD")
    where.state.mkdir()
    with orchestrator_lock(where):  # a nightly run holds the lock
        held = ansible_module(tmp_path, "updates_checkout", {**args, "version": "v2"})
    assert held.returncode != 0
    assert "has held" in held.stdout and "nothing was changed" in held.stdout
    assert git(where.root, "rev-parse", "HEAD") == at_v1
    assert (where.root / "index.py").read_text() == "# version one\n"
    holder = hold_lock_for(where.lock, 2)
    started = time.monotonic()
    moved = ansible_module(tmp_path, "updates_checkout", {**args, "version": "v2", "lock_timeout": 60})
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert time.monotonic() - started >= 1.5 and holder.wait(timeout=30) == 0
    assert git(where.root, "rev-parse", "HEAD") == git(repo, "rev-parse", "v2")
    assert (where.root / "index.py").read_text() == "# version two\n"
