"""The rollback Python API on real git repositories: tags, listing, restoring, refusals, failure injection."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from git_support import (  # noqa: F401 - fixtures
    MODULE,
    Repo,
    build_repo,
    expected_tree,
    noon,
    repo_fixture,
    rollback_template_fixture,
    snapshot,
)
from updates.utils.errors import RollbackError
from updates.utils.gitutil import Git
from updates.utils.rollback import (
    STEPS,
    list_available_versions,
    mark_safe,
    rollback_module,
    rollback_to_last_safe,
    tag_module,
)

UTC = timezone.utc


def tag_names(repo: Repo) -> list[str]:
    return repo.git("tag", "-l").split()


class Unchanged:
    """Everything a refused rollback must leave alone: the module's bytes and modes, its directory inode,
    the manifest's bytes, and no backup or staging directory left behind."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.files = snapshot(repo.module_dir)
        self.inode = repo.module_dir.stat().st_ino
        self.manifest = (repo.root / "manifest.json").read_bytes()

    def check(self) -> None:
        assert snapshot(self.repo.module_dir) == self.files
        assert self.repo.module_dir.stat().st_ino == self.inode
        assert (self.repo.root / "manifest.json").read_bytes() == self.manifest
        backups = self.repo.root / "state" / "rollback"
        assert not backups.exists() or not any(backups.iterdir())
        assert not [p.name for p in self.repo.root.iterdir() if p.name.startswith(f".{MODULE}.")]


def assert_is_version(repo: Repo, version: str) -> None:
    files = snapshot(repo.module_dir)
    assert {k: v[0] for k, v in files.items() if k != "checksum"} == expected_tree(version)
    assert files.get("bin/tool.sh", (b"", 0o755))[1] == 0o755
    assert all(mode == 0o644 for rel, (_, mode) in files.items() if rel != "bin/tool.sh")


# -- listing ----------------------------------------------------------------------------------------------


def test_list_is_newest_first_and_ignores_other_modules_and_malformed_tags(repo: Repo) -> None:
    versions = list_available_versions(MODULE, paths=repo.paths)
    assert [v["version"] for v in versions] == ["2.0.0-rc.1", "1.1.0", "1.0.0"]
    assert [v["tag"] for v in versions] == [
        "demo-v2.0.0-rc.1-20260310",
        "demo-v1.1.0-20260210",
        "demo-v1.0.0-20260110",
    ]
    assert versions[0]["timestamp"] == datetime(2026, 3, 10, tzinfo=UTC)
    assert all(v["timestamp"].tzinfo is not None for v in versions)
    for v in versions:
        assert v["commit"] == repo.git("rev-parse", f"{v['tag']}^{{commit}}")
    # The template also holds demo_mirror-v9.9.9-..., demo-vbroken, demo-v1.0.0-2026 and demo-v-20260101.
    assert "demo_mirror-v9.9.9-20260401" in tag_names(repo)


def test_same_stamp_orders_by_the_tagged_commits_time_not_by_name(repo: Repo) -> None:
    older = repo.git("rev-parse", "demo-v1.0.0-20260110^{commit}")
    newer = repo.git("rev-parse", "demo-v1.1.0-20260210^{commit}")
    repo.git("tag", "demo-v0.9.1-20260401", older)  # lightweight tags are read too
    repo.git("tag", "-a", "-m", "x", "demo-v0.9.0-20260401", newer)
    versions = [v["version"] for v in list_available_versions(MODULE, paths=repo.paths)]
    assert versions[:2] == ["0.9.0", "0.9.1"]


def test_a_tag_of_a_tree_rather_than_a_commit_is_ignored(repo: Repo) -> None:
    tree = repo.git("rev-parse", "HEAD^{tree}")
    repo.git("tag", "demo-v5.0.0-20260501", tree)
    assert "5.0.0" not in [v["version"] for v in list_available_versions(MODULE, paths=repo.paths)]


# -- tagging ----------------------------------------------------------------------------------------------


def test_tag_is_annotated_and_names_version_and_utc_day(repo: Repo) -> None:
    moment = datetime(2026, 4, 2, 23, 30, tzinfo=timezone(-timedelta(hours=3)))
    tag = tag_module(MODULE, paths=repo.paths, now=moment)
    assert tag == "demo-v2.0.0-rc.1-20260403"  # 23:30 at UTC-3 is the next day in UTC
    assert repo.git("cat-file", "-t", tag) == "tag"
    assert repo.git("rev-parse", f"{tag}^{{commit}}") == repo.git("rev-parse", "HEAD")
    assert repo.entry()["checksum"] in repo.git("tag", "-l", "--format=%(contents)", tag)


def test_two_tags_on_one_day_and_reuse_of_the_tag_on_head(repo: Repo) -> None:
    day = datetime(2026, 3, 10, 15, 30, 45, tzinfo=UTC)  # 2.0.0-rc.1 was tagged that day on another commit
    before = tag_names(repo)
    second = tag_module(MODULE, paths=repo.paths, now=day)
    assert second == "demo-v2.0.0-rc.1-20260310153045"
    assert repo.git("rev-parse", f"{second}^{{commit}}") == repo.git("rev-parse", "HEAD")
    assert tag_module(MODULE, paths=repo.paths, now=day.replace(hour=18)) == second
    assert sorted(tag_names(repo)) == sorted([*before, second])
    versions = list_available_versions(MODULE, paths=repo.paths)
    assert versions[0]["tag"] == second  # the later tag of the day sorts first
    assert versions[0]["timestamp"] == day
    # A later day gets its own day tag, reused on a second call the same day.
    later = tag_module(MODULE, paths=repo.paths, now=datetime(2026, 3, 12, 9, tzinfo=UTC))
    assert later == "demo-v2.0.0-rc.1-20260312"
    assert tag_module(MODULE, paths=repo.paths, now=datetime(2026, 3, 12, 20, tzinfo=UTC)) == later
    assert len(tag_names(repo)) == len(before) + 2


def test_tag_with_an_explicit_version(repo: Repo) -> None:
    assert tag_module(MODULE, "2.0.0", paths=repo.paths, now=noon((2026, 5, 1))) == "demo-v2.0.0-20260501"


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: (d / "lib.py").write_text("VALUE = 99\n"),
        lambda d: (d / "untracked.txt").write_text("new\n"),
        lambda d: (d / "lib.py").unlink(),
    ],
    ids=["modified", "untracked", "deleted"],
)
def test_tag_refuses_uncommitted_changes_in_the_module(repo: Repo, edit: object) -> None:
    before = tag_names(repo)
    edit(repo.module_dir)  # type: ignore[operator]
    with pytest.raises(RollbackError, match="uncommitted changes"):
        tag_module(MODULE, paths=repo.paths, now=noon((2026, 5, 1)))
    assert tag_names(repo) == before


def test_tag_ignores_bytecode_caches_even_when_gitignore_does_not(repo: Repo) -> None:
    (repo.root / ".gitignore").write_text("state/\n")
    repo.git("commit", "-qam", "no ignore rules")
    cache = repo.module_dir / "__pycache__"
    cache.mkdir()
    (cache / "lib.cpython-311.pyc").write_bytes(b"\x00")
    assert tag_module(MODULE, paths=repo.paths, now=noon((2026, 5, 1))) == "demo-v2.0.0-rc.1-20260501"


def test_tag_refuses_a_committed_module_that_fails_its_checksum(repo: Repo) -> None:
    (repo.module_dir / "lib.py").write_text("VALUE = 99\n")
    repo.git("commit", "-qam", "edit without checksummer")
    with pytest.raises(RollbackError, match="checksum"):
        tag_module(MODULE, paths=repo.paths, now=noon((2026, 5, 1)))
    assert not [t for t in tag_names(repo) if t.endswith("20260501")]


@pytest.mark.parametrize(
    ("name", "version", "reason"),
    [
        ("nosuch", None, "not in the manifest"),
        ("all_services", None, "a group"),
        (MODULE, "1.0 beta", "cannot be tagged"),
        (MODULE, "1..2", "cannot be tagged"),
    ],
)
def test_tag_refuses_unknown_modules_and_bad_versions(
    repo: Repo, name: str, version: str | None, reason: str
) -> None:
    with pytest.raises(RollbackError, match=reason):
        tag_module(name, version, paths=repo.paths)


def test_tag_refuses_when_the_manifest_has_no_version(repo: Repo) -> None:
    repo.set_entry(version=None)
    with pytest.raises(RollbackError, match="no version"):
        tag_module(MODULE, paths=repo.paths)


# -- rolling back -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_rollback_restores_exactly_the_tagged_tree_and_keeps_a_backup(repo: Repo, version: str) -> None:
    previous = snapshot(repo.module_dir)
    head = repo.git("rev-parse", "HEAD")
    manifest_before = repo.entry()

    assert rollback_module(MODULE, version, paths=repo.paths) is True

    assert_is_version(repo, version)
    entry = repo.entry()
    assert entry["version"] == version
    assert entry["checksum"] == (repo.module_dir / "checksum").read_text().strip()
    unchanged = {k: v for k, v in manifest_before.items() if k not in ("version", "checksum")}
    assert {k: entry[k] for k in unchanged} == unchanged  # lastSafeVersion, args, unknown fields
    backups = list((repo.root / "state" / "rollback").iterdir())
    assert len(backups) == 1 and backups[0].name.startswith("demo-")
    assert snapshot(backups[0]) == previous
    assert repo.git("rev-parse", "HEAD") == head  # nothing committed
    assert not [p for p in repo.root.iterdir() if p.name.startswith(".demo.")]


def test_rollback_then_forward_again(repo: Repo) -> None:
    original = snapshot(repo.module_dir)
    assert rollback_module(MODULE, "1.0.0", paths=repo.paths)
    assert rollback_module(MODULE, "2.0.0-rc.1", paths=repo.paths)
    assert snapshot(repo.module_dir) == original
    assert repo.git("status", "--porcelain") == ""  # back to exactly what HEAD has
    assert len(list((repo.root / "state" / "rollback").iterdir())) == 2


def test_rollback_to_last_safe_uses_last_safe_version(repo: Repo) -> None:
    assert rollback_to_last_safe(MODULE, paths=repo.paths) is True
    assert_is_version(repo, "1.1.0")
    assert repo.entry()["version"] == "1.1.0"


def test_rollback_to_the_current_version_changes_nothing(repo: Repo) -> None:
    guard = Unchanged(repo)
    assert rollback_module(MODULE, "2.0.0-rc.1", paths=repo.paths) is True
    guard.check()


def test_rollback_picks_the_newest_tag_of_a_version(repo: Repo) -> None:
    # Retag 1.1.0 later on a commit whose module has a changed file (and a correct checksum).
    repo.write_module("1.1.0")
    (repo.module_dir / "new.txt").write_text("1.1.0, second build\n")
    from updates.utils.checksum import compute_folder_sha256

    (repo.module_dir / "checksum").write_text(compute_folder_sha256(repo.module_dir) + "\n")
    repo.git("add", "-A")
    repo.git("commit", "-qm", "1.1.0 rebuilt", date=noon((2026, 3, 20)))
    assert tag_module(MODULE, "1.1.0", paths=repo.paths, now=noon((2026, 3, 20))) == "demo-v1.1.0-20260320"
    repo.write_module("2.0.0-rc.1")
    repo.git("add", "-A")
    repo.git("commit", "-qm", "back to 2.0.0-rc.1")
    assert rollback_module(MODULE, "1.1.0", paths=repo.paths)
    assert (repo.module_dir / "new.txt").read_text() == "1.1.0, second build\n"


# -- refusals: False, and nothing changed ------------------------------------------------------------------


def refused(repo: Repo, call: object) -> None:
    guard = Unchanged(repo)
    assert call() is False  # type: ignore[operator]
    guard.check()


def test_refuses_unknown_module_and_group(repo: Repo) -> None:
    refused(repo, lambda: rollback_module("nosuch", "1.0.0", paths=repo.paths))
    refused(repo, lambda: rollback_module("all_services", "1.0.0", paths=repo.paths))
    refused(repo, lambda: rollback_to_last_safe("nosuch", paths=repo.paths))


def test_refuses_unknown_version(repo: Repo) -> None:
    refused(repo, lambda: rollback_module(MODULE, "7.7.7", paths=repo.paths))
    # "broken" exists only as the malformed tag demo-vbroken, which never counts.
    refused(repo, lambda: rollback_module(MODULE, "broken", paths=repo.paths))


def test_refuses_last_safe_when_there_is_none(repo: Repo) -> None:
    repo.set_entry(lastSafeVersion=None)
    refused(repo, lambda: rollback_to_last_safe(MODULE, paths=repo.paths))


def test_refuses_a_tag_whose_commit_has_no_module_directory(repo: Repo) -> None:
    empty_tree = repo.git("hash-object", "-t", "tree", "/dev/null")
    commit = repo.git("commit-tree", empty_tree, "-m", "empty")
    repo.git("tag", "demo-v0.1.0-20250101", commit)
    refused(repo, lambda: rollback_module(MODULE, "0.1.0", paths=repo.paths))


def commit_and_tag_raw(repo: Repo, version: str, day: str) -> None:
    """Commit the work tree and tag it with plain git, bypassing tag_module's own checks."""
    repo.git("add", "-A")
    repo.git("commit", "-qm", f"raw {version}")
    repo.git("tag", "-a", "-m", version, f"demo-v{version}-{day}")
    repo.git("revert", "--no-edit", "HEAD")


def test_refuses_a_tagged_tree_that_fails_its_checksum(repo: Repo) -> None:
    (repo.module_dir / "lib.py").write_text("VALUE = 'tampered'\n")
    commit_and_tag_raw(repo, "2.0.1", "20260320")
    refused(repo, lambda: rollback_module(MODULE, "2.0.1", paths=repo.paths))


def test_refuses_a_tagged_tree_without_checksum_file(repo: Repo) -> None:
    (repo.module_dir / "checksum").unlink()
    commit_and_tag_raw(repo, "2.0.2", "20260320")
    refused(repo, lambda: rollback_module(MODULE, "2.0.2", paths=repo.paths))


def test_refuses_a_tagged_tree_with_a_symlink(repo: Repo) -> None:
    (repo.module_dir / "link.py").symlink_to("lib.py")
    commit_and_tag_raw(repo, "2.0.3", "20260320")
    refused(repo, lambda: rollback_module(MODULE, "2.0.3", paths=repo.paths))


def test_refuses_while_the_directory_has_an_edit_in_progress_and_force_keeps_it_in_the_backup(
    repo: Repo,
) -> None:
    (repo.module_dir / "lib.py").write_text("VALUE = 'hot fix'\n")
    (repo.module_dir / "notes.txt").write_text("scratch\n")
    edited = snapshot(repo.module_dir)
    refused(repo, lambda: rollback_module(MODULE, "1.1.0", paths=repo.paths))

    assert rollback_module(MODULE, "1.1.0", force=True, paths=repo.paths) is True
    assert_is_version(repo, "1.1.0")
    (backup,) = (repo.root / "state" / "rollback").iterdir()
    assert snapshot(backup) == edited


def test_refuses_outside_a_git_work_tree(repo: Repo) -> None:
    shutil.rmtree(repo.root / ".git")
    git = Git(repo.root, env={"GIT_CEILING_DIRECTORIES": str(repo.root.parent)})
    refused(repo, lambda: rollback_module(MODULE, "1.1.0", paths=repo.paths, git=git))
    with pytest.raises(RollbackError, match="not a git work tree"):
        list_available_versions(MODULE, paths=repo.paths, git=git)


def test_refuses_when_git_is_missing(repo: Repo, tmp_path: Path) -> None:
    empty = tmp_path / "no-git-here"
    empty.mkdir()
    git = Git(repo.root, env={"PATH": str(empty)})
    refused(repo, lambda: rollback_module(MODULE, "1.1.0", paths=repo.paths, git=git))
    with pytest.raises(RollbackError, match="git is not installed"):
        tag_module(MODULE, paths=repo.paths, git=git)


@pytest.fixture
def lock_holder(repo: Repo) -> Iterator[subprocess.Popen[str]]:
    """A separate process holding the run lock, as an orchestrator run would."""
    lock = repo.paths.lock
    lock.parent.mkdir(parents=True, exist_ok=True)
    script = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
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


def test_refuses_at_once_while_a_run_holds_the_lock(repo: Repo, lock_holder: subprocess.Popen[str]) -> None:
    started = datetime.now(UTC)
    refused(repo, lambda: rollback_module(MODULE, "1.1.0", paths=repo.paths))
    refused(repo, lambda: mark_safe(MODULE, paths=repo.paths))
    assert (datetime.now(UTC) - started).total_seconds() < 10
    assert lock_holder.poll() is None  # the holder was not disturbed


# -- failures in the middle ----------------------------------------------------------------------------------


@pytest.mark.parametrize("step", STEPS)
def test_a_failure_at_any_step_puts_the_original_directory_back(repo: Repo, step: str) -> None:
    def fail(at: str) -> None:
        if at == step:
            raise OSError(28, "No space left on device (injected)")

    guard = Unchanged(repo)
    assert rollback_module(MODULE, "1.0.0", paths=repo.paths, _on_step=fail) is False
    guard.check()


def test_an_interrupt_mid_rollback_also_restores_and_propagates(repo: Repo) -> None:
    def interrupt(at: str) -> None:
        if at == "backed-up":
            raise KeyboardInterrupt

    guard = Unchanged(repo)
    with pytest.raises(KeyboardInterrupt):
        rollback_module(MODULE, "1.0.0", paths=repo.paths, _on_step=interrupt)
    guard.check()


def test_steps_are_reported_in_order(repo: Repo) -> None:
    seen: list[str] = []
    assert rollback_module(MODULE, "1.0.0", paths=repo.paths, _on_step=seen.append)
    assert seen == list(STEPS)


# -- with the orchestrator ----------------------------------------------------------------------------------


def test_the_restored_module_passes_verification_and_runs(repo: Repo) -> None:
    assert rollback_module(MODULE, "1.0.0", paths=repo.paths)
    verify = repo.run_orchestrator("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    run = repo.run_orchestrator("run", "--only", MODULE)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (repo.root / "state" / "modules" / MODULE / "ran.txt").read_text() == "1.0.0 1\n"
    assert repo.entry()["lastApplied"] is not None


def test_mark_safe_records_the_current_version(repo: Repo) -> None:
    assert rollback_module(MODULE, "1.0.0", paths=repo.paths)
    assert mark_safe(MODULE, paths=repo.paths) is True
    assert repo.entry()["lastSafeVersion"] == "1.0.0"
    assert rollback_module(MODULE, "2.0.0-rc.1", paths=repo.paths)
    assert rollback_to_last_safe(MODULE, paths=repo.paths)
    assert_is_version(repo, "1.0.0")


def test_mark_safe_refuses_unknown_module_and_missing_version(repo: Repo) -> None:
    before = (repo.root / "manifest.json").read_bytes()
    assert mark_safe("nosuch", paths=repo.paths) is False
    assert mark_safe("all_services", paths=repo.paths) is False
    assert (repo.root / "manifest.json").read_bytes() == before
    repo.set_entry(version=None)
    assert mark_safe(MODULE, paths=repo.paths) is False
    assert repo.entry()["lastSafeVersion"] == "1.1.0"


def test_install_below_the_top_of_a_larger_repository(tmp_path: Path) -> None:
    """The root may be a subdirectory of the work tree (`git rev-parse --show-prefix` is not empty)."""
    outer = tmp_path / "outer"
    repo = build_repo(outer / "srv" / "updates", top=outer)
    assert (outer / ".git").is_dir() and not (repo.root / ".git").exists()
    assert list_available_versions(MODULE, paths=repo.paths)[0]["version"] == "2.0.0-rc.1"
    assert rollback_module(MODULE, "1.0.0", paths=repo.paths)
    assert_is_version(repo, "1.0.0")
    repo.git("add", "-A", ".")
    repo.git("commit", "-qm", "rolled back")
    tag = tag_module(MODULE, paths=repo.paths, now=noon((2026, 6, 1)))
    assert tag == "demo-v1.0.0-20260601"
    assert repo.git("rev-parse", f"{tag}^{{commit}}") == repo.git("rev-parse", "HEAD")


def test_from_python_in_the_parent_directory_of_an_install_named_updates(repo: Repo) -> None:
    """The README's recipe: `from updates.utils import rollback_to_last_safe` in a shell in the parent dir."""
    code = (
        "import sys\n"
        "from updates.utils import rollback_to_last_safe\n"
        "sys.exit(0 if rollback_to_last_safe('demo') else 1)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "UPDATES_STATE_DIR"}
    done = subprocess.run(
        [sys.executable, "-B", "-c", code],
        cwd=repo.root.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert_is_version(repo, "1.1.0")
