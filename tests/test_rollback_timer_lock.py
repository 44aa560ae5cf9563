"""A rollback started by hand with another state directory still excludes the timer's runs: it takes the
lock of the timer's state directory too when that lock file exists, without creating or writing it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from git_support import (  # noqa: F401 - fixtures
    MODULE,
    Repo,
    repo_fixture,
    rollback_template_fixture,
    snapshot,
)
from updates.utils.rollback import mark_safe, rollback_module, rollback_to_last_safe

HOLD = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDWR)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "print('locked', flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.fixture(name="timer_state")
def timer_state_fixture(tmp_path: Path) -> Path:
    """Stands in for /var/lib/updates: the lock file a timer run has left there (pid of an old run)."""
    state = tmp_path / "var-lib-updates"
    state.mkdir()
    (state / "updates.lock").write_text("4242\n")
    return state


@pytest.fixture(name="timer_run")
def timer_run_fixture(timer_state: Path) -> Iterator[subprocess.Popen[str]]:
    """A process holding the timer's lock, as a nightly run does."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(timer_state / "updates.lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "locked\n"
        yield child
    finally:
        child.kill()
        child.wait(timeout=10)


def test_refused_while_the_timer_holds_its_lock(
    repo: Repo, timer_state: Path, timer_run: subprocess.Popen[str]
) -> None:
    files = snapshot(repo.module_dir)
    manifest = (repo.root / "manifest.json").read_bytes()
    assert repo.paths.state != timer_state  # the operator forgot UPDATES_STATE_DIR

    assert rollback_module(MODULE, "1.0.0", paths=repo.paths, timer_state=timer_state) is False
    assert rollback_to_last_safe(MODULE, paths=repo.paths, timer_state=timer_state) is False
    assert mark_safe(MODULE, paths=repo.paths, timer_state=timer_state) is False

    assert snapshot(repo.module_dir) == files
    assert (repo.root / "manifest.json").read_bytes() == manifest
    assert timer_run.poll() is None
    assert (timer_state / "updates.lock").read_text() == "4242\n"


def test_an_idle_timer_lock_is_taken_but_never_written(repo: Repo, timer_state: Path) -> None:
    lock = timer_state / "updates.lock"
    before = lock.stat()
    assert rollback_module(MODULE, "1.0.0", paths=repo.paths, timer_state=timer_state) is True
    assert repo.entry()["version"] == "1.0.0"
    after = lock.stat()
    assert (after.st_ino, after.st_mtime_ns, lock.read_text()) == (before.st_ino, before.st_mtime_ns, "4242\n")


def test_no_timer_lock_file_means_no_timer_to_exclude(repo: Repo, tmp_path: Path) -> None:
    absent = tmp_path / "no-timer-here"
    assert rollback_module(MODULE, "1.0.0", paths=repo.paths, timer_state=absent) is True
    assert not absent.exists()  # nothing is created there


def test_the_same_state_directory_is_locked_once(repo: Repo) -> None:
    # The operator did export UPDATES_STATE_DIR: the timer's lock is the run lock itself, taken once.
    repo.paths.state.mkdir(parents=True, exist_ok=True)
    repo.paths.lock.write_text("")
    assert rollback_module(MODULE, "1.0.0", paths=repo.paths, timer_state=repo.paths.state) is True


def test_the_timer_state_can_be_named_by_the_environment(
    repo: Repo, timer_state: Path, timer_run: subprocess.Popen[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A timer whose drop-in moved its state: UPDATES_TIMER_STATE_DIR names it, for the API and the CLI.
    monkeypatch.setenv("UPDATES_TIMER_STATE_DIR", str(timer_state))
    manifest = (repo.root / "manifest.json").read_bytes()
    assert rollback_module(MODULE, "1.0.0", paths=repo.paths) is False
    done = subprocess.run([sys.executable, "utils/rollback.py", "rollback", MODULE, "--to", "1.0.0"],
                          cwd=repo.root, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 75, done.stderr
    assert f"a run of the timer holds the lock {timer_state / 'updates.lock'}" in done.stderr
    assert (repo.root / "manifest.json").read_bytes() == manifest
