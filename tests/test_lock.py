"""The run lock and its state directory: no link followed, no directory others control, no lock in forks.

Real files, real forks and real SIGKILLs; the ownership cases need root (CI runs as root).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from orchestrator_support import hold_lock_for
from updates.utils.errors import LockHeld, UnsafePermissions
from updates.utils.lock import ensure_state_dir, run_lock
from updates.utils.orchestrator.cli import main
from updates.utils.paths import Paths

ROOT = Path(__file__).resolve().parent.parent
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the ownership checks apply to root's runs only")
OTHER_UID = 4242


def paths_for(state: Path) -> Paths:
    return Paths(root=state.parent, manifest=state.parent / "manifest.json", state=state)


def make_state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    return state


def test_the_lock_is_taken_and_its_pid_recorded(tmp_path: Path) -> None:
    paths = paths_for(make_state(tmp_path))
    with run_lock(paths):
        assert paths.lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(LockHeld, match=rf"another run holds the lock {paths.lock} \(pid {os.getpid()}\)"), run_lock(paths):
            pass
    with run_lock(paths):
        pass


def test_a_missing_state_directory_is_created_0700(tmp_path: Path) -> None:
    state = tmp_path / "var" / "lib" / "updates"
    old = os.umask(0)  # even under a careless umask
    try:
        with run_lock(paths_for(state)):
            pass
    finally:
        os.umask(old)
    assert state.stat().st_mode & 0o7777 == 0o700


def test_a_link_planted_at_the_lock_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious bytes\n")
    paths = paths_for(make_state(tmp_path))
    paths.lock.symlink_to(victim)
    with pytest.raises(UnsafePermissions) as refused, run_lock(paths):
        pass
    assert str(refused.value) == f"refusing the lock file {paths.lock}: it is a symbolic link"
    assert refused.value.exit_code == 2
    assert victim.read_bytes() == b"precious bytes\n"
    assert paths.lock.is_symlink()


def test_the_command_line_refuses_a_planted_lock_link_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    state = make_state(root)
    monkeypatch.setenv("UPDATES_STATE_DIR", str(state))  # the default state directory of a root without UPDATES_STATE_DIR
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious bytes\n")
    (state / "updates.lock").symlink_to(victim)
    assert main(["run"], root=root) == 2
    err = capsys.readouterr().err
    assert f"refusing the lock file {state / 'updates.lock'}: it is a symbolic link" in err.splitlines()[0]
    assert victim.read_bytes() == b"precious bytes\n"


def test_a_fifo_or_a_hard_link_at_the_lock_is_refused(tmp_path: Path) -> None:
    paths = paths_for(make_state(tmp_path))
    os.mkfifo(paths.lock)
    started = time.monotonic()
    with pytest.raises(UnsafePermissions, match="not a regular file"), run_lock(paths):
        pass
    assert time.monotonic() - started < 5  # refused, not hung opening a FIFO
    paths.lock.unlink()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious bytes\n")
    os.link(victim, paths.lock)
    with pytest.raises(UnsafePermissions, match="it has 2 names"), run_lock(paths):
        pass
    assert victim.read_bytes() == b"precious bytes\n"


@needs_root
@pytest.mark.parametrize(
    ("mode", "owner", "expected"),
    [
        (0o770, 0, "writable by group (mode 0770)"),
        (0o707, 0, "writable by others (mode 0707)"),
        (0o700, OTHER_UID, f"owned by uid {OTHER_UID}, not root"),
    ],
)
def test_a_state_directory_others_control_is_refused(tmp_path: Path, mode: int, owner: int, expected: str) -> None:
    state = make_state(tmp_path)
    state.chmod(mode)
    os.chown(state, owner, owner)
    with pytest.raises(UnsafePermissions) as refused, run_lock(paths_for(state)):
        pass
    assert str(refused.value) == f"refusing to use the state directory {state}: {state}: {expected}"
    assert not (state / "updates.lock").exists()


@needs_root
def test_an_ancestor_others_control_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    parent = tmp_path / "lib"
    parent.mkdir(mode=0o755)
    os.chown(parent, OTHER_UID, OTHER_UID)
    state = parent / "updates"
    with pytest.raises(UnsafePermissions, match=rf"{parent}: owned by uid {OTHER_UID}, not root"):
        ensure_state_dir(state)
    assert not state.exists()
    # A sticky directory of root's (like /tmp) is fine: nobody else can rename ours away in it.
    os.chown(parent, 0, 0)
    parent.chmod(0o1777)
    with run_lock(paths_for(state)):
        pass
    assert state.is_dir()


@needs_root
def test_a_state_directory_reached_through_a_link_is_checked_where_it_really_is(tmp_path: Path) -> None:
    real = tmp_path / "srv" / "updates"
    real.mkdir(parents=True, mode=0o700)
    link = tmp_path / "state"
    link.symlink_to(real)
    with run_lock(paths_for(link)):
        pass
    real.parent.chmod(0o777)
    with pytest.raises(UnsafePermissions, match=rf"{real.parent}: writable by group and others"):
        ensure_state_dir(link)


def test_a_forked_child_does_not_carry_the_lock(tmp_path: Path) -> None:
    paths = paths_for(make_state(tmp_path))
    with run_lock(paths):
        pid = os.fork()
        if pid == 0:  # the child: does it still have a descriptor of the lock file?
            held = any(os.path.realpath(f"/proc/self/fd/{fd}") == str(paths.lock) for fd in os.listdir("/proc/self/fd"))
            os._exit(1 if held else 0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The child closed only its copy: we still hold the lock.
        with pytest.raises(LockHeld), run_lock(paths):
            pass


HOLDER = """\
import os, runpy, sys, time
sys.dont_write_bytecode = True
runpy.run_path(sys.argv[1])["register_package"]()
from pathlib import Path
from updates.utils.lock import run_lock
from updates.utils.paths import Paths
state = Path(sys.argv[2])
with run_lock(Paths(root=state.parent, manifest=state.parent / "manifest.json", state=state)):
    child = os.fork()
    if child == 0:  # a helper like adblock's parser, outliving its parent
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    time.sleep(60)
"""


def test_a_helper_outliving_a_killed_holder_does_not_keep_the_next_run_out(tmp_path: Path) -> None:
    paths = paths_for(make_state(tmp_path))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(ROOT / "utils" / "bootstrap.py"), str(paths.state)],
        stdout=subprocess.PIPE,
        text=True,
    )
    helper = None
    try:
        assert holder.stdout is not None
        helper = int(holder.stdout.readline())
        with pytest.raises(LockHeld, match=rf"\(pid {holder.pid}\)"), run_lock(paths):
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        os.kill(helper, 0)  # the helper lives on...
        with run_lock(paths):  # ...and the next run takes the lock at once
            assert paths.lock.read_text() == f"{os.getpid()}\n"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
        if helper is not None:
            try:
                os.kill(helper, signal.SIGKILL)
            except ProcessLookupError:
                pass


@needs_root
def test_a_state_directory_another_user_owns_is_refused_before_the_log_file_is_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    state = make_state(root)
    monkeypatch.setenv("UPDATES_STATE_DIR", str(state))
    os.chown(state, OTHER_UID, OTHER_UID)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious bytes\n")
    (state / "logs").mkdir()
    (state / "logs" / "updates.log").symlink_to(victim)  # planted by the owner of the state directory
    for command in (["run"], ["status"], ["verify"], ["history"]):
        assert main(command, root=root) == 2
        lines = capsys.readouterr().err.splitlines()
        assert lines[0].startswith(f"error: refusing to use the state directory {state}: "), lines
        assert len([line for line in lines if line.startswith("error:")]) == 1
    assert victim.read_bytes() == b"precious bytes\n"


def test_the_log_file_is_never_opened_through_a_link(tmp_path: Path) -> None:
    from updates.utils.log import setup_logging

    victim = tmp_path / "victim"
    victim.write_bytes(b"precious bytes\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "updates.log").symlink_to(victim)
    assert setup_logging(logs) is None  # falls back to the terminal only
    assert victim.read_bytes() == b"precious bytes\n"


def test_a_waiting_lock_is_taken_when_the_holder_finishes_and_refused_past_its_wait(tmp_path: Path) -> None:
    paths = paths_for(make_state(tmp_path))
    holder = hold_lock_for(paths.lock, 1.5)
    started = time.monotonic()
    with pytest.raises(LockHeld, match=rf"pid {holder.pid}"), run_lock(paths, wait=0.4):
        pytest.fail("taken while another process held it")
    assert 0.4 <= time.monotonic() - started < 1.4
    with run_lock(paths, wait=30):
        waited = time.monotonic() - started
        assert paths.lock.read_text() == f"{os.getpid()}\n"
    assert 1.0 <= waited < 30 and holder.wait(timeout=30) == 0


def test_pull_wait_takes_a_number_of_seconds(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["pull", "--wait", "soon"], root=tmp_path) == 2
    assert "expected a number of seconds (0 or more), got 'soon'" in capsys.readouterr().err
    assert main(["pull", "--wait", "-1"], root=tmp_path) == 2
