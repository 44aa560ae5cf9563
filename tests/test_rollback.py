"""Rolling modules back through the Python API on real git repositories: restoring, refusals, failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from git_support import (  # noqa: F401 - fixtures
    MODULE,
    Repo,
    build_repo,
    expected_tree,
    lock_holder_fixture,
    noon,
    repo_fixture,
    rollback_template_fixture,
    snapshot,
)
from updates.utils.digest import compute_folder_sha256
from updates.utils.errors import RollbackError
from updates.utils.rollback import (
    STEPS,
    list_available_versions,
    mark_safe,
    rollback_module,
    rollback_to_last_safe,
    tag_module,
)
from updates.utils.vcs.git import Git
from updates.utils.vcs.operations import perform_rollback

UTC = timezone.utc


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


def test_an_unusable_backup_location_is_a_real_failure_that_is_undone(repo: Repo) -> None:
    (repo.root / "state").mkdir(exist_ok=True)
    (repo.root / "state" / "rollback").write_text("a file where the backup directory should go\n")
    guard = Unchanged(repo)
    assert rollback_module(MODULE, "1.0.0", paths=repo.paths) is False
    (repo.root / "state" / "rollback").unlink()
    guard.check()


def test_a_failure_after_the_swap_is_undone_even_when_the_live_directory_vanished(repo: Repo) -> None:
    guard = Unchanged(repo)

    def sabotage(at: str) -> None:
        if at == "swapped":  # the new tree is live, the original waits in the staging directory
            shutil.rmtree(repo.module_dir)
            raise OSError(5, "Input/output error (injected)")

    assert rollback_module(MODULE, "1.0.0", paths=repo.paths, _on_step=sabotage) is False
    guard.check()
    assert not [p for p in repo.root.iterdir() if p.name.startswith(f".{MODULE}.rollback-")]


def test_when_undoing_fails_too_the_record_stays_and_the_next_command_finishes_it(repo: Repo) -> None:
    original = snapshot(repo.module_dir)
    lost = repo.root.parent / "lost"

    def sabotage(at: str) -> None:
        if at == "swapped":  # the original, waiting in the staging directory, goes missing for a while
            (staging,) = [p for p in repo.root.iterdir() if p.name.startswith(f".{MODULE}.rollback-")]
            (staging / MODULE).rename(lost)
            raise OSError(5, "Input/output error (injected)")

    with pytest.raises(RollbackError, match="could not be undone") as raised:
        perform_rollback(MODULE, "1.0.0", paths=repo.paths, git=Git(repo.root), on_step=sabotage)
    assert "an unknown place" in str(raised.value)
    journal_dir = repo.paths.state / "journal"
    (record,) = list(journal_dir.glob("*.json"))
    assert json.loads(record.read_text())["op"] == "rollback"
    (staging,) = [p for p in repo.root.iterdir() if p.name.startswith(f".{MODULE}.rollback-")]
    lost.rename(staging / MODULE)  # the operator finds it; the next command that takes the lock finishes
    assert list_available_versions(MODULE, paths=repo.paths)  # reads only: no recovery
    assert record.exists()
    assert rollback_module(MODULE, "1.0.0", paths=repo.paths) is True
    assert not record.exists()
    history = [json.loads(line) for line in (repo.paths.state / "history.jsonl").read_text().splitlines()]
    assert [(h["command"], [r["outcome"] for r in h["recovered"]]) for h in history] == [("rollback", ["reverted"])]
    assert snapshot(repo.module_dir) != original  # now at 1.0.0, from the retried rollback
    assert repo.entry()["version"] == "1.0.0"


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
    assert repo.run_orchestrator("run", "--only", MODULE).returncode == 0
    assert repo.entry()["lastApplied"] is not None  # the newer version's run
    assert rollback_module(MODULE, "1.0.0", paths=repo.paths)
    assert repo.entry()["lastApplied"] is None  # the restored version has not been applied yet
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
    env = {**os.environ, "UPDATES_STATE_DIR": str(repo.paths.state)}
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
