"""The git wrapper's discipline (argument lists, timeouts, GIT_TERMINAL_PROMPT=0), tree reading, tag parsing,
and the directory swap, with real git and real child processes."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from git_support import MODULE, Repo, repo_fixture, rollback_template_fixture  # noqa: F401 - fixtures
from updates.utils.errors import CommandError, RollbackError
from updates.utils.rollback import list_available_versions, rollback_module, tag_module
from updates.utils.vcs.git import Git, TreeFile
from updates.utils.vcs.tags import ModuleTag, format_tag, newest_first, parse_tag
from updates.utils.vcs.treeswap import exchange, move_tree, write_tree

UTC = timezone.utc
REAL_GIT = shutil.which("git")

# A stand-in `git` first on PATH: records argv (NUL-separated) and environment per call, then runs real git.
RECORDING_GIT = """#!/bin/sh
{{ printf '%s\\0' "$@"; printf '\\n--env--\\n'; env; printf '\\n--end--\\n'; }} >> "{record}"
exec "{git}" "$@"
"""


def fake_git(bin_dir: Path, body: str) -> Path:
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "git"
    script.write_text(body)
    script.chmod(0o755)
    return script


def recorded_calls(record: Path) -> list[tuple[list[str], dict[str, str]]]:
    calls = []
    for chunk in record.read_bytes().split(b"\n--end--\n"):
        if not chunk.strip():
            continue
        argv_part, _, env_part = chunk.partition(b"\n--env--\n")
        argv = [a.decode() for a in argv_part.split(b"\0")[:-1]]
        env = dict(line.split("=", 1) for line in env_part.decode().splitlines() if "=" in line)
        calls.append((argv, env))
    return calls


def test_every_git_call_is_an_argument_list_with_prompts_off(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert REAL_GIT
    record = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    fake_git(bin_dir, RECORDING_GIT.format(record=record, git=REAL_GIT))
    # Something in our own environment that must not reach git: proc.run passes a small explicit env.
    monkeypatch.setenv("UPDATES_TEST_SECRET", "do-not-leak")
    git = Git(repo.root, env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})

    tag = tag_module(MODULE, paths=repo.paths, git=git, now=datetime(2026, 5, 1, 8, tzinfo=UTC))
    assert list_available_versions(MODULE, paths=repo.paths, git=git)[0]["tag"] == tag
    assert rollback_module(MODULE, "1.0.0", paths=repo.paths, git=git)

    calls = recorded_calls(record)
    assert len(calls) >= 8
    for argv, env in calls:
        assert argv[:2] == ["-C", str(repo.root)]
        assert env["GIT_TERMINAL_PROMPT"] == "0"
        assert "UPDATES_TEST_SECRET" not in env
    # The tag message (spaces, newlines) arrived as one argument: no shell ever split it.
    tag_call = next(argv for argv, _ in calls if argv[2:4] == ["tag", "-a"])
    message = tag_call[tag_call.index("-m") + 1]
    assert message.startswith("demo 2.0.0-rc.1\n\nchecksum ")
    assert tag_call[-2] == tag
    subcommands = {argv[2] for argv, _ in calls}
    assert {"for-each-ref", "ls-tree", "cat-file", "status", "tag"} <= subcommands
    assert "checkout" not in subcommands  # the work tree is never checked out


def test_a_hanging_git_is_killed_at_the_timeout(repo: Repo, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    fake_git(tmp_path / "bin", f'#!/bin/sh\necho $$ > "{pid_file}"\nexec sleep 60\n')
    git = Git(repo.root, timeout=1.0, env={"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
    started = time.monotonic()
    with pytest.raises(CommandError, match="timed out after 1 s"):
        git.run("status")
    assert time.monotonic() - started < 15
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    # Through the bool API the same hang is a refusal, not a hang.
    assert rollback_module(MODULE, "1.0.0", paths=repo.paths, git=git) is False


def test_a_failing_git_reports_the_subcommand_and_its_fatal_line(repo: Repo) -> None:
    with pytest.raises(CommandError, match=r"^git rev-parse: exit code 128: fatal: ambiguous argument"):
        Git(repo.root).run("rev-parse", "no-such-revision-anywhere")


def test_git_missing_is_a_clear_refusal(tmp_path: Path) -> None:
    with pytest.raises(RollbackError, match="git is not installed"):
        Git(tmp_path, executable=str(tmp_path / "nowhere" / "git")).run("status")


def test_an_empty_repository_has_no_head(tmp_path: Path) -> None:
    Repo(tmp_path).git("init", "-q")
    git = Git(tmp_path)
    assert git.prefix() == ""
    with pytest.raises(RollbackError, match="no commit yet"):
        git.head()


# -- reading trees from the object store --------------------------------------------------------------------


def test_read_tree_returns_exact_bytes_and_modes(repo: Repo) -> None:
    binary = b"\x00\n\xff binary with newlines\n\n"
    (repo.module_dir / "blob.bin").write_bytes(binary)
    (repo.module_dir / "empty.txt").write_bytes(b"")
    repo.git("add", "-A")
    repo.git("commit", "-qm", "binary")
    files = {f.path: f for f in Git(repo.root).read_tree(repo.git("rev-parse", "HEAD"), MODULE)}
    assert files["blob.bin"].data == binary
    assert files["empty.txt"].data == b""
    assert files["bin/tool.sh"].mode == 0o755
    assert files["lib.py"].mode == 0o644
    assert files["extra/deep/file.txt"].data == b"new in 2.0.0-rc.1\n"


def test_read_tree_refuses_submodules_and_missing_directories(repo: Repo) -> None:
    head = repo.git("rev-parse", "HEAD")
    repo.git("update-index", "--add", "--cacheinfo", f"160000,{head},{MODULE}/vendored")
    repo.git("commit", "-qm", "gitlink")
    git = Git(repo.root)
    with pytest.raises(RollbackError, match="not a regular file"):
        git.read_tree(repo.git("rev-parse", "HEAD"), MODULE)
    with pytest.raises(RollbackError, match="has no directory"):
        git.read_tree(head, "nosuch")


# -- tag names ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "version", "stamp"),
    [
        ("gogs-v1.2.0-20240610", "1.2.0", datetime(2024, 6, 10, tzinfo=UTC)),
        ("gogs-v1.0.0-rc.1-20240610", "1.0.0-rc.1", datetime(2024, 6, 10, tzinfo=UTC)),
        ("gogs-v0.13.0-20240610152300", "0.13.0", datetime(2024, 6, 10, 15, 23, tzinfo=UTC)),
        ("gogs-v2-beta-20240101-20240610", "2-beta-20240101", datetime(2024, 6, 10, tzinfo=UTC)),
    ],
)
def test_parse_tag(tag: str, version: str, stamp: datetime) -> None:
    parsed = parse_tag("gogs", tag)
    assert parsed is not None
    assert (parsed.version, parsed.stamp) == (version, stamp)
    assert format_tag("gogs", version, stamp, with_time=parsed.has_time) == tag


@pytest.mark.parametrize(
    "tag",
    [
        "gogs_mirror-v1.0.0-20240610",  # another module
        "gogsx-v1.0.0-20240610",
        "gogs-1.0.0-20240610",  # no v
        "gogs-v1.0.0",  # no stamp
        "gogs-v-20240610",  # no version
        "gogs-v1.0.0-2024061",  # 7 digits
        "gogs-v1.0.0-20241310",  # month 13
        "gogs-v1.0.0-202406101523",  # 12 digits
        "gogs-v1..0-20240610",
        "gogs-v.1-20240610",
    ],
)
def test_parse_tag_rejects(tag: str) -> None:
    assert parse_tag("gogs", tag) is None


def test_newest_first_orders_by_stamp_then_commit_time() -> None:
    day = datetime(2024, 6, 10, tzinfo=UTC)
    a = ModuleTag("m", "1.0", day, "m-v1.0-20240610", commit="a", commit_time=100)
    b = ModuleTag("m", "0.9", day, "m-v0.9-20240610", commit="b", commit_time=200)
    c = ModuleTag("m", "0.8", day.replace(hour=9), "m-v0.8-20240610090000", commit="c", commit_time=1)
    assert [t.version for t in newest_first([a, b, c])] == ["0.8", "0.9", "1.0"]


# -- swapping directories -----------------------------------------------------------------------------------


@pytest.mark.parametrize("atomic", [True, False], ids=["renameat2", "two-renames"])
def test_exchange_swaps_two_directories(tmp_path: Path, atomic: bool) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_tree([TreeFile("x.txt", 0o644, b"A")], a)
    write_tree([TreeFile("sub/y.sh", 0o755, b"B")], b)
    inode_a = a.stat().st_ino
    exchange(a, b, atomic=atomic)
    assert (a / "sub" / "y.sh").read_bytes() == b"B"
    assert (a / "sub" / "y.sh").stat().st_mode & 0o777 == 0o755
    assert (b / "x.txt").read_bytes() == b"A"
    assert b.stat().st_ino == inode_a
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_move_tree_across_filesystems_copies(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm as a writable filesystem other than tmp_path's")
    src = tmp_path / "old"
    write_tree([TreeFile("a/b.txt", 0o644, b"kept")], src)
    (src / "link").symlink_to("a/b.txt")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        dst = Path(other) / "backup" / "old"
        assert move_tree(src, dst) is True
        assert (dst / "a" / "b.txt").read_bytes() == b"kept"
        assert (dst / "link").is_symlink()
        assert src.exists()  # the caller removes it once the rollback is final
    same = tmp_path / "state" / "old"
    assert move_tree(src, same) is False
    assert not src.exists() and (same / "a" / "b.txt").read_bytes() == b"kept"


def test_rollback_with_the_state_dir_on_another_filesystem(repo: Repo) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or shm.stat().st_dev == repo.root.stat().st_dev:
        pytest.skip("needs /dev/shm as a writable filesystem other than the repository's")
    from dataclasses import replace

    from git_support import snapshot

    before = snapshot(repo.module_dir)
    with tempfile.TemporaryDirectory(dir=shm) as state:
        paths = replace(repo.paths, state=Path(state))
        assert rollback_module(MODULE, "1.0.0", paths=paths)
        (backup,) = (Path(state) / "rollback").iterdir()
        assert snapshot(backup) == before
    assert not [p for p in repo.root.iterdir() if p.name.startswith(".demo.")]
