"""One state directory: read-only commands create nothing and name what they read; an earlier version's
`<root>/state` is moved once, with a message (issue 13, item 1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from orchestrator_support import (
    OK_MODULE,
    RECORDING_MODULE,
    add_module,
    group,
    install_copy,
    run_index,
    write_manifest,
)
from updates.utils.orchestrator.cli import main


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    directory = tmp_path / "root"
    add_module(directory, "alpha", RECORDING_MODULE)
    write_manifest(directory, [group(["alpha"]), {"name": "alpha"}])
    return directory


@pytest.mark.parametrize("argv", [["status"], ["status", "--json"], ["verify"], ["history"], ["history", "--json"]])
def test_read_only_commands_create_nothing(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    state = tmp_path / "mistyped"
    monkeypatch.setenv("UPDATES_STATE_DIR", str(state))
    before = tree(tmp_path)
    assert main(argv, root=root) == 0
    assert not state.exists()
    assert tree(tmp_path) == before


def test_read_only_commands_leave_an_existing_state_as_it_was(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run"], root=root) == 0
    state = tmp_path / "state"
    before = {p: p.stat().st_mtime_ns for p in state.rglob("*") if p.name != "updates.log"}
    capsys.readouterr()
    for argv in (["status"], ["verify"], ["history"]):
        assert main(argv, root=root) == 0
    assert {p: p.stat().st_mtime_ns for p in state.rglob("*") if p.name != "updates.log"} == before


def test_status_and_verify_name_the_directory_they_read(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "mistyped"
    monkeypatch.setenv("UPDATES_STATE_DIR", str(state))
    line = f"state directory: {state} (UPDATES_STATE_DIR; not created yet: no run has used it)"
    assert main(["status"], root=root) == 0
    assert line in capsys.readouterr().out.splitlines()
    assert main(["verify"], root=root) == 0
    assert line in capsys.readouterr().out.splitlines()
    assert main(["status", "--json"], root=root) == 0
    assert json.loads(capsys.readouterr().out)["state_dir"] == str(state)
    assert main(["run"], root=root) == 0
    capsys.readouterr()
    assert main(["status"], root=root) == 0
    assert f"state directory: {state} (UPDATES_STATE_DIR)" in capsys.readouterr().out.splitlines()


def test_state_left_in_the_root_is_moved_once_with_a_message(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = root / "state"
    (old / "modules" / "alpha").mkdir(parents=True)
    (old / "modules" / "alpha" / "cache.bin").write_bytes(b"kept")
    (old / "history.jsonl").write_text('{"schema": 1, "started": "2024-06-10T15:23:00Z", "modules": []}\n')
    (old / "updates.lock").write_text("")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)  # as systemd's StateDirectory= leaves it: empty
    # status only tells; it moves nothing.
    assert main(["status"], root=root) == 0
    assert f"note: {old} holds an earlier version's state; the next run moves it to {state}" in (
        capsys.readouterr().out.splitlines()
    )
    assert old.is_dir()
    assert main(["run"], root=root) == 0
    err = capsys.readouterr().err.splitlines()
    assert f"warning: moved the state of an earlier version from {old} to {state}, where it now lives" in err
    assert not old.exists()
    assert (state / "modules" / "alpha" / "cache.bin").read_bytes() == b"kept"
    assert len((state / "history.jsonl").read_text().splitlines()) == 2
    assert main(["run"], root=root) == 0
    assert "moved" not in capsys.readouterr().err


def test_state_left_in_the_root_moves_into_a_state_dir_a_checksummer_already_used(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = root / "state"
    (old / "modules" / "alpha").mkdir(parents=True)
    (old / "modules" / "alpha" / "cache.bin").write_bytes(b"kept")
    (old / "history.jsonl").write_text('{"schema": 1, "started": "2024-06-10T15:23:00Z", "modules": []}\n')
    (old / "logs").mkdir()
    (old / "logs" / "updates.log").write_text("old log\n")
    # What the checksummer (run as the README's deployment flow says, before any run) leaves: no state.
    state = tmp_path / "state"
    (state / "journal").mkdir(parents=True)
    (state / "logs").mkdir()
    (state / "logs" / "updates.log").write_text("checksummer\n")
    (state / "updates.lock").write_text("123\n")
    assert main(["run"], root=root) == 0
    err = capsys.readouterr().err
    assert f"moved the state of an earlier version from {old} to {state}, where it now lives; " in err
    assert f"the old copy is in {root / 'state.old'}" in err
    assert (state / "modules" / "alpha" / "cache.bin").read_bytes() == b"kept"
    assert len((state / "history.jsonl").read_text().splitlines()) == 2
    assert not old.exists() and (root / "state.old" / "logs" / "updates.log").read_text() == "old log\n"
    assert main(["run"], root=root) == 0
    assert "moved" not in capsys.readouterr().err


def test_state_left_in_the_root_beside_a_used_state_is_set_aside_not_merged(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run"], root=root) == 0
    old = root / "state"
    old.mkdir()
    (old / "history.jsonl").write_text("{}\n")
    capsys.readouterr()
    assert main(["run"], root=root) == 0
    err = capsys.readouterr().err
    assert f"an earlier version's state at {old} is not merged and was renamed {root / 'state.old'}" in err
    assert not old.exists() and (root / "state.old" / "history.jsonl").read_text() == "{}\n"
    assert len((tmp_path / "state" / "history.jsonl").read_text().splitlines()) == 2


def test_the_move_waits_for_a_run_of_the_earlier_version(root: Path, tmp_path: Path) -> None:
    import fcntl

    old = root / "state"
    old.mkdir()
    with open(old / "updates.lock", "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        assert main(["run"], root=root) == 75
    assert old.is_dir() and not (tmp_path / "state").exists()


def test_a_subprocess_status_creates_nothing(tmp_path: Path) -> None:
    install = install_copy(tmp_path / "updates")
    add_module(install, "alpha", OK_MODULE)
    write_manifest(install, [group(["alpha"]), {"name": "alpha"}])
    state = tmp_path / "elsewhere"
    proc = run_index(install, "status", env={**os.environ, "UPDATES_STATE_DIR": str(state)})
    assert proc.returncode == 0, proc.stderr
    assert not state.exists()
    assert proc.stdout.splitlines()[-1] == (
        f"state directory: {state} (UPDATES_STATE_DIR; not created yet: no run has used it)"
    )


def test_a_dry_run_moves_nothing_and_old_state_another_user_can_change_is_refused(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = root / "state"
    (old / "journal").mkdir(parents=True)
    (old / "history.jsonl").write_text('{"schema": 1, "started": "2024-06-10T15:23:00Z", "modules": []}\n')
    assert main(["run", "--dry-run"], root=root) == 0
    assert (old / "history.jsonl").exists()
    if os.geteuid() != 0:
        return  # the ownership check applies to root's runs only
    os.chown(old / "journal", 4242, 4242)
    capsys.readouterr()
    assert main(["run"], root=root) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (
        f"error: refusing to take over the state of an earlier version in {old}: "
        f"{old / 'journal'}: owned by uid 4242, not root"
    )
    assert (old / "journal").is_dir() and (old / "history.jsonl").exists()
