"""Tagging and listing module versions on real git repositories."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from git_support import MODULE, Repo, noon, repo_fixture, rollback_template_fixture  # noqa: F401 - fixtures
from updates.utils.digest import compute_folder_sha256
from updates.utils.errors import RollbackError
from updates.utils.rollback import list_available_versions, tag_module
from updates.utils.vcs.git import Git

UTC = timezone.utc


def tag_names(repo: Repo) -> list[str]:
    return repo.git("tag", "-l").split()


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


def test_tag_works_on_a_server_where_git_has_no_identity(repo: Repo, tmp_path: Path) -> None:
    repo.git("config", "--unset", "user.name")
    repo.git("config", "--unset", "user.email")
    home = tmp_path / "empty-home"
    home.mkdir()
    git = Git(repo.root, env={"HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "XDG_CONFIG_HOME": str(home)})
    tag = tag_module(MODULE, paths=repo.paths, git=git, now=noon((2026, 5, 2)))
    assert repo.git("tag", "-l", "--format=%(taggername)", tag) == "updates"


def test_retagging_a_version_with_other_contents_warns(repo: Repo, caplog: pytest.LogCaptureFixture) -> None:
    # The operator changed the module, sealed and committed it, but forgot to bump the version.
    (repo.module_dir / "lib.py").write_text("VALUE = 99\n")
    digest = compute_folder_sha256(repo.module_dir)
    (repo.module_dir / "checksum").write_text(digest + "\n")
    repo.set_entry(checksum=digest)
    repo.git("commit", "-q", "-am", "demo: change without a version bump")
    with caplog.at_level("WARNING", logger="updates.utils.vcs.tagging"):
        tag = tag_module(MODULE, paths=repo.paths, now=noon((2026, 5, 1)))
    assert tag == "demo-v2.0.0-rc.1-20260501"
    warned = [r.getMessage() for r in caplog.records if r.name == "updates.utils.vcs.tagging"]
    assert len(warned) == 1 and "already tagged (demo-v2.0.0-rc.1-20260310)" in warned[0]
    # Retagging after a commit that leaves the module alone is routine and says nothing.
    caplog.clear()
    (repo.root / "NOTES").write_text("unrelated\n")
    repo.git("add", "NOTES")
    repo.git("commit", "-q", "-m", "unrelated change")
    with caplog.at_level("WARNING", logger="updates.utils.vcs.tagging"):
        assert tag_module(MODULE, paths=repo.paths, now=noon((2026, 5, 2))) == "demo-v2.0.0-rc.1-20260502"
    assert not [r for r in caplog.records if r.name == "updates.utils.vcs.tagging"]
