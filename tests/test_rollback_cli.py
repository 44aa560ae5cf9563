"""`python utils/rollback.py ...` as an operator runs it: a real child process in a real git repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from git_support import (  # noqa: F401 - fixtures
    MODULE,
    Repo,
    expected_tree,
    lock_holder_fixture,
    repo_fixture,
    rollback_template_fixture,
    snapshot,
)
from updates.utils.rollback import main


def cli(repo: Repo, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {**os.environ, "UPDATES_STATE_DIR": str(repo.paths.state)}
    return subprocess.run(
        [sys.executable, "utils/rollback.py", *args],
        cwd=repo.root,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def module_files(repo: Repo) -> dict[str, bytes]:
    return {k: v[0] for k, v in snapshot(repo.module_dir).items() if k != "checksum"}


def test_list_prints_versions_newest_first_with_notes(repo: Repo) -> None:
    done = cli(repo, "list", MODULE)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["VERSION", "DATE", "(UTC)", "TAG", "COMMIT", "SIGNED", "NOTE"]
    assert [line.split()[0] for line in lines[1:]] == ["2.0.0-rc.1", "1.1.0", "1.0.0"]
    assert lines[1].endswith("current") and lines[2].endswith("last safe")
    assert "demo_mirror" not in done.stdout and "broken" not in done.stdout


def test_list_json(repo: Repo) -> None:
    done = cli(repo, "list", MODULE, "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["version"] for r in rows] == ["2.0.0-rc.1", "1.1.0", "1.0.0"]
    assert rows[0]["timestamp"] == "2026-03-10T00:00:00+00:00"
    assert rows[0]["commit"] == repo.git("rev-parse", "demo-v2.0.0-rc.1-20260310^{commit}")


def test_rollback_to_a_version_then_to_last_safe(repo: Repo) -> None:
    done = cli(repo, "rollback", MODULE, "--to", "1.0.0")
    assert done.returncode == 0, done.stderr
    assert "rolled back 2.0.0-rc.1 -> 1.0.0" in done.stdout
    assert module_files(repo) == expected_tree("1.0.0")
    assert repo.entry()["version"] == "1.0.0"

    done = cli(repo, "rollback", MODULE)  # default: lastSafeVersion
    assert done.returncode == 0, done.stderr
    assert module_files(repo) == expected_tree("1.1.0")
    assert len(list((repo.root / "state" / "rollback").iterdir())) == 2


def test_refusals_exit_1_with_one_line_and_change_nothing(repo: Repo) -> None:
    before = snapshot(repo.module_dir)
    for args in (["rollback", MODULE, "--to", "7.7.7"], ["rollback", "nosuch"], ["mark-safe", "nosuch"]):
        done = cli(repo, *args)
        assert done.returncode == 1, (args, done.stderr)
        one_line_error(done)
    assert snapshot(repo.module_dir) == before


def test_edit_in_progress_needs_force(repo: Repo) -> None:
    (repo.module_dir / "lib.py").write_text("VALUE = 'edit'\n")
    done = cli(repo, "rollback", MODULE, "--to", "1.1.0")
    assert done.returncode == 1
    assert "does not match its checksum file" in one_line_error(done)
    assert (repo.module_dir / "lib.py").read_text() == "VALUE = 'edit'\n"

    done = cli(repo, "rollback", MODULE, "--to", "1.1.0", "--force")
    assert done.returncode == 0, done.stderr
    assert module_files(repo) == expected_tree("1.1.0")
    (backup,) = (repo.root / "state" / "rollback").iterdir()
    assert (backup / "lib.py").read_text() == "VALUE = 'edit'\n"


def test_lock_held_exits_75(repo: Repo, lock_holder: subprocess.Popen[str]) -> None:
    before = snapshot(repo.module_dir)
    for args in (["rollback", MODULE, "--to", "1.0.0"], ["mark-safe", MODULE]):
        done = cli(repo, *args)
        assert done.returncode == 75, done.stderr
        assert "holds the lock" in one_line_error(done)
    assert snapshot(repo.module_dir) == before
    assert repo.entry()["version"] == "2.0.0-rc.1"


def test_git_missing_exits_1(repo: Repo, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    done = cli(repo, "rollback", MODULE, "--to", "1.0.0", env={"PATH": str(empty)})
    assert done.returncode == 1
    assert "git is not installed" in one_line_error(done)
    assert repo.entry()["version"] == "2.0.0-rc.1"


def test_not_a_work_tree_exits_1(repo: Repo) -> None:
    import shutil

    shutil.rmtree(repo.root / ".git")
    done = cli(repo, "list", MODULE, env={"GIT_CEILING_DIRECTORIES": str(repo.root.parent)})
    assert done.returncode == 1
    assert "not a git work tree" in one_line_error(done)


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["rollback"], ["list", MODULE, "--bogus"]])
def test_usage_errors_exit_2(repo: Repo, args: list[str]) -> None:
    done = cli(repo, *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ")


def test_help_exits_0(repo: Repo) -> None:
    done = cli(repo, "--help")
    assert done.returncode == 0
    assert "rollback" in done.stdout and "mark-safe" in done.stdout


def test_tag_and_push_to_origin(repo: Repo, tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True, timeout=30)
    repo.git("remote", "add", "origin", str(origin))
    (repo.module_dir / "lib.py").write_text("VALUE = 4\n")
    done = cli(repo, "tag", MODULE)
    assert done.returncode == 1  # uncommitted edit: the tag would not describe what runs
    assert "uncommitted changes" in one_line_error(done)
    repo.git("checkout", "--", MODULE)

    done = cli(repo, "tag", MODULE, "--push")
    assert done.returncode == 0, done.stderr
    tag = done.stdout.splitlines()[0]
    assert tag.startswith("demo-v2.0.0-rc.1-")
    remote = subprocess.run(
        ["git", "-C", str(origin), "rev-parse", f"refs/tags/{tag}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert remote.stdout.strip() == repo.git("rev-parse", "HEAD")


def test_push_failure_exits_1_without_prompting(repo: Repo, tmp_path: Path) -> None:
    repo.git("remote", "add", "origin", str(tmp_path / "no-such-remote.git"))
    done = cli(repo, "tag", MODULE, "--push")
    assert done.returncode == 1
    assert "git push" in one_line_error(done)
    assert done.stdout.startswith("demo-v2.0.0-rc.1-")  # the local tag stands; only the push failed


def test_mark_safe(repo: Repo) -> None:
    assert cli(repo, "rollback", MODULE, "--to", "1.0.0").returncode == 0
    done = cli(repo, "mark-safe", MODULE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "demo: lastSafeVersion = 1.0.0"
    assert repo.entry()["lastSafeVersion"] == "1.0.0"


def test_main_in_process_with_a_root(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rollback", MODULE, "--to", "1.0.0"], root=repo.root) == 0
    assert module_files(repo) == expected_tree("1.0.0")
    assert main(["rollback", MODULE, "--to", "1.0.0"], root=repo.root) == 0
    assert "nothing changed" in capsys.readouterr().out
    assert main(["list", "Bad-Name"], root=repo.root) == 1


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        ("deep", "error: manifest.json: line 1 column 115: nested more than 64 levels deep"),
        ("surrogate", "error: manifest.json: updates[0].description: the string holds a lone surrogate \\udc80, "
                      "which is not valid Unicode"),
    ],
)
@pytest.mark.parametrize("args", [["mark-safe", MODULE], ["tag", MODULE], ["rollback", MODULE, "--to", "1.0.0"]])
def test_a_manifest_python_cannot_handle_is_one_line_and_exit_2(
    repo: Repo, breakage: str, expected: str, args: list[str]
) -> None:
    manifest = repo.root / "manifest.json"
    if breakage == "deep":
        manifest.write_text('{"updates": [], "entrypoint": "all_services", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    else:
        manifest.write_text(manifest.read_text().replace('"everything"', '"everything\\udc80"'))
    before, tree = manifest.read_bytes(), module_files(repo)
    done = cli(repo, *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [expected], done.stderr
    assert done.stdout == ""
    assert manifest.read_bytes() == before and module_files(repo) == tree


def test_the_api_returns_false_on_an_unexpected_error_and_logs_the_traceback(
    repo: Repo, capsys: pytest.CaptureFixture[str]
) -> None:
    from updates.utils.log import setup_logging
    from updates.utils.rollback import rollback_module

    def bug(step: str) -> None:
        if step == "swapped":
            raise RuntimeError("a bug below the API")

    log_file = setup_logging(repo.paths.logs)
    before = (repo.root / "manifest.json").read_bytes(), module_files(repo)
    assert rollback_module(MODULE, "1.0.0", paths=repo.paths, _on_step=bug) is False
    assert ((repo.root / "manifest.json").read_bytes(), module_files(repo)) == before  # put back as it was
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: demo: rollback to 1.0.0 failed unexpectedly: RuntimeError: a bug below the API"
    ]
    assert log_file is not None
    assert "Traceback" in log_file.read_text() and 'raise RuntimeError("a bug below the API")' in log_file.read_text()
