"""Refused runs leave a trace (issue 13, item 7): a run the lock refuses (exit 75, a success for the unit) is
in the history with the holder's pid and since when, and in the metrics; `status` tells of a run holding
the lock longer than its modules' timeouts together; a permission refusal's history row gives the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from orchestrator_support import OK_MODULE, add_module, group, write_manifest
from updates.utils.orchestrator.cli import main

HOLD = (
    "import fcntl, os, sys, time\n"
    "fh = open(sys.argv[1], 'a+')\n"
    "fcntl.flock(fh, fcntl.LOCK_EX)\n"
    "fh.truncate(0); fh.write(f'{os.getpid()}\\n'); fh.flush()\n"  # as run_lock does
    "print('locked', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    add_module(tmp_path, "alpha", OK_MODULE)
    write_manifest(tmp_path, [group(["alpha"]), {"name": "alpha", "timeout": 2}])
    return tmp_path


@pytest.fixture
def holder(root: Path) -> Iterator[subprocess.Popen[str]]:
    state = root / "state"
    state.mkdir(mode=0o700)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(state / "updates.lock")], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def last_record(root: Path) -> dict:
    return json.loads((root / "state" / "history.jsonl").read_text().splitlines()[-1])


def test_a_run_refused_by_the_lock_is_in_the_history_and_the_metrics(
    root: Path, holder: subprocess.Popen[str], capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = root / "updates.prom"
    before = time.time()
    assert main(["run", "--metrics-file", str(metrics)], root=root) == 75
    record = last_record(root)
    assert record["exit_code"] == 75 and record["ok"] is False and record["refused"] == "lock"
    assert record["lock_holder"]["pid"] == holder.pid
    assert record["lock_holder"]["since"].endswith("Z")
    assert record["error"] == f"another run holds the lock {root / 'state' / 'updates.lock'} (pid {holder.pid})"
    assert record["modules"] == []
    samples = dict(line.rsplit(" ", 1) for line in metrics.read_text().splitlines() if not line.startswith("#"))
    assert float(samples["updates_run_refused_timestamp_seconds"]) >= int(before)
    capsys.readouterr()
    assert main(["history"], root=root) == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert " refused " in row and f"(pid {holder.pid}), since {record['lock_holder']['since']}" in row


def test_a_later_run_keeps_the_refusal_in_the_metrics(root: Path, holder: subprocess.Popen[str]) -> None:
    metrics = root / "updates.prom"
    assert main(["run", "--metrics-file", str(metrics)], root=root) == 75
    holder.kill()
    holder.wait()
    assert main(["run", "--metrics-file", str(metrics)], root=root) == 0
    text = metrics.read_text()
    assert len([line for line in text.splitlines() if line.startswith("updates_run_refused_timestamp_seconds ")]) == 1
    assert "updates_run_ok 1" in text


def test_status_warns_of_a_run_holding_the_lock_longer_than_its_timeouts(
    root: Path, holder: subprocess.Popen[str], capsys: pytest.CaptureFixture[str]
) -> None:
    lock = root / "state" / "updates.lock"
    assert main(["status"], root=root) == 0
    out = capsys.readouterr().out
    assert f"running: a run (pid {holder.pid}) has held the lock since " in out
    hour_ago = time.time() - 3600
    os.utime(lock, (hour_ago, hour_ago))
    assert main(["status"], root=root) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1
    assert lines[0].startswith(f"warning: a run (pid {holder.pid}) has held the lock since ")
    assert "longer than its modules' timeouts together (2 s): it looks stuck" in lines[0]
    assert main(["status", "--json"], root=root) == 0
    running = json.loads(capsys.readouterr().out)["running"]
    assert running["pid"] == holder.pid and running["stuck"] is True and running["seconds"] >= 3600


def test_status_says_nothing_of_a_lock_no_one_holds(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"], root=root) == 0
    capsys.readouterr()
    assert main(["status", "--json"], root=root) == 0
    assert json.loads(capsys.readouterr().out)["running"] is None


@pytest.mark.skipif(os.geteuid() != 0, reason="permission checks apply only to runs as root")
def test_a_permission_refusal_gives_its_reason_in_the_history(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (root / "manifest.json").chmod(0o666)
    assert main(["run", "--dry-run"], root=root) == 2
    capsys.readouterr()
    assert main(["history"], root=root) == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert "refused (dry run)" in row
    assert f"refusing to run as root: {root / 'manifest.json'}: writable by group and others" in row
    assert last_record(root)["refused"] == "permissions"
