"""The crash journal: records on disk before the first step, idempotent actions, recovery by the next
command that takes the lock, and what `status` and the history say about it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from orchestrator_support import OK_MODULE, add_module, group, install_copy, run_index, write_manifest
from updates.utils import journal
from updates.utils.journal import JournalError


def no_commands(argv: Sequence[str], timeout: float) -> None:
    raise AssertionError(f"no command expected, got {argv}")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_record_is_on_disk_before_begin_returns_and_gone_after_commit(tmp_path: Path) -> None:
    record = journal.begin(tmp_path / "journal", "demo", describe="demo change")
    saved = json.loads(record.path.read_text())
    assert saved["state"] == "pending" and saved["pid"] == os.getpid()
    assert oct(record.path.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "journal").stat().st_mode & 0o777) == "0o700"
    record.will_undo(journal.write_bytes(tmp_path / "f", None))
    assert json.loads(record.path.read_text())["undo"] == [{"do": "write", "path": str(tmp_path / "f"), "data": None}]
    record.commit(no_commands)
    assert list((tmp_path / "journal").iterdir()) == []


def test_a_pending_record_is_reverted_and_a_committed_one_finished(tmp_path: Path) -> None:
    target, staging = tmp_path / "config", tmp_path / "staging"
    target.write_bytes(b"old\n")
    pending = journal.begin(tmp_path / "journal", "edit", describe="edit of config")
    pending.will_undo(journal.write_bytes(target, b"old\n"))
    target.write_bytes(b"new\n")  # ... and the process dies here
    committed = journal.begin(tmp_path / "journal", "other", describe="other change")
    staging.mkdir()
    committed.will_clean(journal.remove(staging))
    committed.state = "committed"
    committed.save()  # ... and the process dies before its cleanup

    done = journal.recover(tmp_path / "journal", no_commands)
    assert sorted((d.describe, d.outcome) for d in done) == [("edit of config", "reverted"), ("other change", "finished")]
    assert target.read_bytes() == b"old\n"
    assert not staging.exists()
    assert list((tmp_path / "journal").iterdir()) == []
    assert journal.recover(tmp_path / "journal", no_commands) == []  # nothing left: a second pass is a no-op


def test_every_action_is_harmless_when_run_twice(tmp_path: Path) -> None:
    live, aside = tmp_path / "live", tmp_path / "aside"
    live.mkdir()
    (live / "a").write_text("old tree")
    old_inode = journal.inode(live)
    assert old_inode is not None
    record = journal.begin(tmp_path / "journal", "swap", describe="swap")
    record.will_undo(journal.restore_dir(live, old_inode, [aside], discard=tmp_path / "failed"))
    live.rename(aside)
    live.mkdir()
    (live / "a").write_text("new tree")
    record.revert(no_commands)
    assert (live / "a").read_text() == "old tree" and journal.inode(live) == old_inode
    assert (tmp_path / "failed" / "a").read_text() == "new tree"  # kept for diagnosis
    again = journal.begin(tmp_path / "journal", "swap", describe="swap")
    again.will_undo(journal.restore_dir(live, old_inode, [aside], discard=None))
    again.revert(no_commands)  # the old directory is already in place: nothing moves
    assert (live / "a").read_text() == "old tree"


def test_a_copy_that_is_not_the_old_file_is_never_restored(tmp_path: Path) -> None:
    target, copy = tmp_path / "hosts", tmp_path / "hosts.bak"
    target.write_bytes(b"current\n")
    copy.write_bytes(b"from an older run\n")
    record = journal.begin(tmp_path / "journal", "install", describe="list install")
    record.will_undo(journal.restore_file(target, sha(b"current\n"), copy))
    target.write_bytes(b"new\n")
    done = journal.recover(tmp_path / "journal", no_commands)
    assert [(d.outcome, "saved copy" in (d.error or "")) for d in done] == [("failed", True)]
    assert target.read_bytes() == b"new\n"  # not the stale copy
    assert record.path.exists()  # kept for the next command, or for the operator


def test_a_restored_file_gets_its_mode_and_owner_back(tmp_path: Path) -> None:
    target = tmp_path / "hosts"
    target.write_bytes(b"old\n")
    target.chmod(0o644)
    record = journal.begin(tmp_path / "journal", "install", describe="list install")
    copy = record.save_copy(target)
    record.will_undo(journal.restore_file(target, sha(b"old\n"), copy))
    tmp = tmp_path / "new"
    tmp.write_bytes(b"new\n")
    tmp.chmod(0o600)
    tmp.replace(target)
    record.revert(no_commands)
    assert target.read_bytes() == b"old\n"
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert not record.files.exists()


def test_after_commands_run_after_the_undo(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    record = journal.begin(tmp_path / "journal", "install", describe="binary install")
    record.then_run(["systemctl", "start", "demo.service"], 30)
    record.revert(lambda argv, timeout: calls.append(list(argv)))
    assert calls == [["systemctl", "start", "demo.service"]]


def test_an_exception_in_the_block_reverts_and_propagates(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("{}\n")
    with pytest.raises(OSError, match="disk full"), journal.operation(
        tmp_path / "journal", "edit", describe="edit"
    ) as record:
        record.will_undo(journal.write_bytes(target, b"{}\n"))
        target.write_text('{"half": true}\n')
        raise OSError("disk full")
    assert target.read_text() == "{}\n"
    assert list((tmp_path / "journal").iterdir()) == []


def test_an_unreadable_record_is_reported_not_acted_on(tmp_path: Path) -> None:
    (tmp_path / "journal").mkdir()
    (tmp_path / "journal" / "x.json").write_text("{not json")
    done = journal.recover(tmp_path / "journal", no_commands)
    assert [(d.outcome, (d.error or "").startswith("unreadable record")) for d in done] == [("failed", True)]
    with pytest.raises(JournalError, match="unknown journal action"):
        bad = journal.begin(tmp_path / "other", "x", describe="x")
        bad.undo.append({"do": "format-disk"})
        bad.revert(no_commands)



def test_nested_changes_are_undone_inner_first(tmp_path: Path) -> None:
    """A download's temp names (outer record) and the install that moved the live directory to such a
    name (inner record): the inner undo must take the directory back before the outer sweep runs."""
    live, staging = tmp_path / "app", tmp_path / ".app.new-x"
    live.mkdir()
    (live / "data").write_bytes(b"the only copy\n")
    old_inode = journal.inode(live)
    assert old_inode is not None
    outer = journal.begin(tmp_path / "journal", "temp-files", describe="download")
    outer.will_undo(journal.sweep(tmp_path, ".app.new-", ""))
    staging.mkdir()
    (staging / "data").write_bytes(b"new\n")
    inner = journal.begin(tmp_path / "journal", "directory-install", describe="install")
    inner.will_undo(journal.restore_dir(live, old_inode, [staging], discard=None))
    os.rename(live, tmp_path / "swap")
    os.rename(staging, live)
    os.rename(tmp_path / "swap", staging)  # the live directory is at the staging name; the process dies

    done = journal.recover(tmp_path / "journal", no_commands)
    assert [(d.describe, d.outcome) for d in done] == [("install", "reverted"), ("download", "reverted")]
    assert (live / "data").read_bytes() == b"the only copy\n" and journal.inode(live) == old_inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app", "journal"]


def test_a_failed_record_holds_back_the_older_records_of_its_process_only(tmp_path: Path) -> None:
    live = tmp_path / "app"
    live.mkdir()
    guard = tmp_path / ".app.new-x"
    guard.mkdir()  # at a staging name: the outer sweep would remove it if it ran
    outer = journal.begin(tmp_path / "journal", "temp-files", describe="download")
    outer.will_undo(journal.sweep(tmp_path, ".app.new-", ""))
    inner = journal.begin(tmp_path / "journal", "directory-install", describe="install")
    inner.will_undo(journal.restore_dir(live, [1, 2], [guard], discard=None))  # an inode found nowhere
    stranger = journal.begin(tmp_path / "journal", "edit", describe="edit by another run")
    stranger.pid = os.getpid() + 1
    stranger.will_undo(journal.write_bytes(tmp_path / "setting", b"old\n"))

    done = {d.describe: d.outcome for d in journal.recover(tmp_path / "journal", no_commands)}
    assert done == {"install": "failed", "download": "failed", "edit by another run": "reverted"}
    assert guard.is_dir(), "the sweep ran although the change nested in it could not be undone"
    assert (tmp_path / "setting").read_bytes() == b"old\n"
    assert len(journal.pending(tmp_path / "journal")) == 2

# -- through the command line ---------------------------------------------------------------------------------


def _pending_edit(root: Path) -> Path:
    """A journaled edit of `<root>/setting` that a kill interrupted: the file holds the new half."""
    setting = root / "setting"
    setting.write_bytes(b"old\n")
    record = journal.begin(root / "state" / "journal", "edit", describe="edit of setting", module="alpha")
    record.will_undo(journal.write_bytes(setting, b"old\n"))
    setting.write_bytes(b"new\n")
    return record.path


def test_status_shows_a_pending_change_and_the_next_run_reverts_it_once(tmp_path: Path) -> None:
    root = install_copy(tmp_path / "updates")
    add_module(root, "alpha", OK_MODULE)
    write_manifest(root, [group(["alpha"]), {"name": "alpha"}])
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("UPDATES_")},
           "UPDATES_STATE_DIR": str(root / "state")}  # fmt: skip
    record = _pending_edit(root)

    status = run_index(root, "status", env=env)
    assert status.returncode == 0, status.stderr
    assert "pending: an interrupted edit of setting (started " in status.stdout
    assert record.exists() and (root / "setting").read_bytes() == b"new\n"  # status changes nothing
    as_json = json.loads(run_index(root, "status", "--json", env=env).stdout)
    assert [(p["op"], p["module"], p["state"]) for p in as_json["pending"]] == [("edit", "alpha", "pending")]

    nightly = run_index(root, "run", env=env)
    assert nightly.returncode == 0, nightly.stderr
    assert (root / "setting").read_bytes() == b"old\n"
    assert not record.exists()
    lines = [line for line in nightly.stderr.splitlines() if "interrupted edit of setting" in line]
    assert len(lines) == 1 and lines[0].endswith(": reverted"), nightly.stderr
    last = json.loads((root / "state" / "history.jsonl").read_text().splitlines()[-1])
    assert [(r["describe"], r["outcome"]) for r in last["recovered"]] == [("edit of setting", "reverted")]
    assert not [line for line in run_index(root, "status", env=env).stdout.splitlines() if line.startswith("pending")]


def test_a_recovery_that_fails_makes_the_run_exit_1_and_stays_pending(tmp_path: Path) -> None:
    root = install_copy(tmp_path / "updates")
    add_module(root, "alpha", OK_MODULE)
    write_manifest(root, [group(["alpha"]), {"name": "alpha"}])
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("UPDATES_")},
           "UPDATES_STATE_DIR": str(root / "state")}  # fmt: skip
    target = root / "hosts"
    target.write_bytes(b"current\n")
    record = journal.begin(root / "state" / "journal", "install", describe="list install")
    record.will_undo(journal.restore_file(target, sha(b"current\n"), root / "missing.bak"))
    target.write_bytes(b"new\n")

    nightly = run_index(root, "run", env=env)
    assert nightly.returncode == 1
    assert "could not recover an interrupted list install" in nightly.stderr
    assert target.read_bytes() == b"new\n" and record.path.exists()
    assert "alpha: ok" in nightly.stdout  # the modules still ran
    shutil.rmtree(root / "state" / "journal")
