"""utils/proc.run: real child processes, and children run as another user (those need root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from updates.utils.errors import CommandError
from updates.utils.proc import SAFE_PATH, UNPRIVILEGED_HOME, Identity, run

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="running a child as another user needs root")
SERVICE = Identity(4242, 4243)  # a uid and gid that own nothing on this machine


def test_a_plain_run_captures_output_and_raises_on_failure(tmp_path: Path) -> None:
    assert run(["/bin/sh", "-c", "echo out; echo err >&2"], timeout=10).stdout == b"out\n"
    with pytest.raises(CommandError, match="exit code 3: last words"):
        run(["/bin/sh", "-c", "echo last words >&2; exit 3"], timeout=10)
    with pytest.raises(CommandError, match="command not found"):
        run([tmp_path / "missing"], timeout=10)


@needs_root
def test_as_user_drops_uid_gid_and_every_supplementary_group() -> None:
    done = run(["/bin/sh", "-c", "id -u; id -g; id -G; pwd"], timeout=10, as_user=SERVICE)
    uid, gid, groups, cwd = done.stdout.decode().split("\n")[:4]
    assert (uid, gid) == ("4242", "4243")
    assert groups.split() == ["4243"]  # root's groups (gid 0 among them) are gone
    assert cwd == "/"  # not root's working directory, which that user may not even enter


@needs_root
def test_as_user_gets_a_clean_environment_of_constants(tmp_path: Path) -> None:
    # /usr/bin/env prints exactly the environment it was given: none of ours (HOME, PATH, tokens) leaks in.
    done = run(["/usr/bin/env"], timeout=10, env={"TOOL_OPTION": "1"}, as_user=SERVICE)
    env = dict(line.split("=", 1) for line in done.stdout.decode().splitlines())
    assert env == {
        "PATH": SAFE_PATH,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": UNPRIVILEGED_HOME,
        "TOOL_OPTION": "1",
    }


@needs_root
def test_as_user_runs_in_a_new_session_without_our_terminal() -> None:
    # Field 6 of /proc/PID/stat is the session id: a session leader's equals its pid.
    script = 'read -r line < /proc/$$/stat; echo "$$ ${line#*) }"'
    done = run(["/bin/sh", "-c", script], timeout=10, as_user=SERVICE)
    pid, fields = done.stdout.decode().split(" ", 1)
    assert fields.split()[3] == pid
    ours = run(["/bin/sh", "-c", script], timeout=10)
    pid, fields = ours.stdout.decode().split(" ", 1)
    assert fields.split()[3] != pid  # without as_user the child stays in our session


@needs_root
def test_as_user_keeps_a_given_working_directory_and_the_timeout(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir(mode=0o755)
    done = run(["/bin/sh", "-c", "pwd; id -u"], timeout=10, cwd=work, as_user=SERVICE)
    assert done.stdout.decode().split() == [str(work), "4242"]
    with pytest.raises(CommandError, match=r"timed out after 0\.5 s"):
        run(["/bin/sleep", "30"], timeout=0.5, as_user=SERVICE)


@needs_root
def test_as_user_cannot_write_what_root_owns(tmp_path: Path) -> None:
    target = tmp_path / "root-only"
    target.mkdir(mode=0o755)
    done = run(["/bin/sh", "-c", f"echo x > {target}/planted"], timeout=10, cwd=target, as_user=SERVICE, check=False)
    assert done.returncode != 0
    assert not (target / "planted").exists()
