"""Run history: records appended as JSON lines, rotation, reading back newest first, damaged lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from updates.utils.paths import Paths
from updates.utils.report.history import (
    HISTORY_FILE,
    SCHEMA,
    append_run,
    last_status_by_module,
    make_record,
    read_runs,
)
from updates.utils.report.views import format_history, format_run, history_json, last_run_cells
from updates.utils.results import ModuleResult

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def record(n: int, *, status: str = "ok", dry_run: bool = False, name: str = "adblock") -> dict:
    started = T0 + timedelta(days=n)
    return make_record(
        [ModuleResult(name, status, 1.5, summary=f"run {n}", error="boom" if status == "failed" else None)],
        started=started,
        finished=started + timedelta(seconds=2.25),
        exit_code=1 if status == "failed" else 0,
        dry_run=dry_run,
        seq=n,
    )


def test_make_record_has_the_schema_fields() -> None:
    rec = make_record(
        [
            ModuleResult("adblock", "changed", 2.0, summary="1.2 -> 1.3"),
            {"name": "gogs", "status": "failed", "duration_s": 0.5, "summary": None, "error": "HTTP 500"},
        ],
        started=T0,
        finished=T0.timestamp() + 3.5,
        exit_code=1,
        dry_run=False,
    )
    assert rec["schema"] == SCHEMA == 1
    assert rec["started"] == "2026-01-02T03:04:05Z"
    assert rec["finished"] == "2026-01-02T03:04:08Z"
    assert rec["duration_s"] == 3.5
    assert rec["ok"] is False and rec["exit_code"] == 1 and rec["interrupted"] is False
    assert rec["modules"] == [
        {"name": "adblock", "status": "changed", "duration_s": 2.0, "summary": "1.2 -> 1.3", "error": None},
        {"name": "gogs", "status": "failed", "duration_s": 0.5, "summary": None, "error": "HTTP 500"},
    ]
    interrupted = make_record([], started=T0, finished=T0, exit_code=130, dry_run=False, interrupted=True)
    assert interrupted["ok"] is False


def test_append_writes_one_line_per_run_and_reads_back_newest_first(tmp_path: Path) -> None:
    paths = Paths(root=tmp_path, manifest=tmp_path / "manifest.json", state=tmp_path / "state")
    for n in range(3):
        written = append_run(paths, record(n))
    assert written == tmp_path / "state" / HISTORY_FILE
    lines = written.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4
    assert [json.loads(line)["seq"] for line in lines[:-1]] == [0, 1, 2]
    assert written.stat().st_mode & 0o777 == 0o640
    runs = read_runs(paths)
    assert [r["seq"] for r in runs] == [2, 1, 0]
    assert [r["seq"] for r in read_runs(tmp_path / "state", limit=2)] == [2, 1]
    assert read_runs(str(tmp_path / "state"), limit=0) == []
    assert read_runs(tmp_path / "nowhere") == []


def test_schema_is_added_when_the_caller_left_it_out(tmp_path: Path) -> None:
    append_run(tmp_path, {"ok": True, "modules": []})
    assert json.loads((tmp_path / HISTORY_FILE).read_text())["schema"] == SCHEMA


def test_rotation_keeps_n_old_files_and_reading_spans_them(tmp_path: Path) -> None:
    size = len(json.dumps(record(0), separators=(",", ":"))) + 1
    for n in range(20):
        append_run(tmp_path, record(n), max_bytes=size * 3 + 20, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [HISTORY_FILE, f"{HISTORY_FILE}.1", f"{HISTORY_FILE}.2"]
    for path in tmp_path.iterdir():
        assert path.stat().st_size <= size * 3 + 20
    seqs = [r["seq"] for r in read_runs(tmp_path, keep=2)]
    # Newest first, contiguous, across the three files; the oldest runs fell off with the third rotation.
    assert seqs == list(range(19, 19 - len(seqs), -1))
    assert 7 <= len(seqs) <= 9
    assert [r["seq"] for r in read_runs(tmp_path, limit=4, keep=2)] == [19, 18, 17, 16]


def test_truncated_last_line_and_garbage_lines_are_skipped(tmp_path: Path) -> None:
    append_run(tmp_path, record(0))
    append_run(tmp_path, record(1))
    path = tmp_path / HISTORY_FILE
    with path.open("ab") as fh:
        fh.write(b"not json at all\n[1, 2]\n")
    append_run(tmp_path, record(2))
    whole = json.dumps(record(3)).encode()
    with path.open("ab") as fh:
        fh.write(whole[: len(whole) // 2])  # a crash in the middle of a write
    assert [r["seq"] for r in read_runs(tmp_path)] == [2, 1, 0]


def test_last_status_by_module_prefers_the_newest_real_run(tmp_path: Path) -> None:
    append_run(tmp_path, record(0, status="changed"))
    append_run(tmp_path, record(1, status="failed"))
    append_run(tmp_path, record(2, status="skipped"))
    append_run(tmp_path, record(3, status="ok", dry_run=True))
    append_run(tmp_path, record(4, status="ok", name="gogs"))
    runs = read_runs(tmp_path)
    last = last_status_by_module(runs)
    # run 2 only skipped adblock and run 3 was a dry run: the failure of run 1 is the news.
    assert last["adblock"] == ("failed", "2026-01-03T03:04:07Z")
    assert last["gogs"].status == "ok"
    assert last_status_by_module(runs, include_dry_runs=True)["adblock"].status == "ok"
    only_skipped = last_status_by_module([record(5, status="skipped")])
    assert only_skipped["adblock"].status == "skipped"
    assert last_run_cells(last, "adblock") == ("failed", "2026-01-03T03:04:07Z")
    assert last_run_cells(last, "atuin") == ("never", "-")


def test_format_history_is_an_aligned_table() -> None:
    runs = [
        make_record(
            [ModuleResult("adblock", "changed", 3.0), ModuleResult("gogs", "failed", 1.0, error="HTTP 500")],
            started=T0,
            finished=T0 + timedelta(seconds=125),
            exit_code=1,
            dry_run=False,
        ),
        record(1, status="ok", dry_run=True),
        {"schema": 2, "modules": "weird"},  # a newer or damaged record is shown, not fatal
    ]
    text = format_history(runs)
    lines = text.splitlines()
    assert lines[0].split() == ["STARTED", "DURATION", "RESULT", "EXIT", "MODULES", "FAILED"]
    assert "2026-01-02T03:04:05Z  2m05s" in lines[1]
    assert "1 failed, 1 changed" in lines[1] and lines[1].endswith("gogs")
    assert "ok (dry run)" in lines[2]
    # Columns line up: every row starts its RESULT cell where the header does.
    col = lines[0].index("RESULT")
    assert lines[1][col:].startswith("failed") and lines[2][col:].startswith("ok (dry run)")
    assert format_history([]) == "no runs recorded yet\n"
    detail = format_run(runs[0])
    assert "exit code 1" in detail
    assert any(line.split()[:2] == ["gogs", "failed"] and "HTTP 500" in line for line in detail.splitlines())
    assert json.loads(history_json(runs[:1]))["runs"][0]["modules"][1]["error"] == "HTTP 500"


def test_readers_in_another_process_never_see_a_partial_line(tmp_path: Path) -> None:
    """A reader polling while runs are appended and rotated never sees a broken line before the last."""
    reader = tmp_path / "reader.py"
    reader.write_text(
        textwrap.dedent(
            f"""
            import json, sys, time
            from pathlib import Path
            path = Path({str(tmp_path / "state" / HISTORY_FILE)!r})
            stop = Path({str(tmp_path / "stop")!r})
            bad = reads = 0
            deadline = time.monotonic() + 60
            Path({str(tmp_path / "ready")!r}).touch()
            while time.monotonic() < deadline:
                done = stop.exists()  # one last read after the writer finished
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue
                reads += 1
                # Only lines followed by a newline must be whole; a tail without one is a write still
                # being copied in (it may cross a page), which read_runs() skips as an incomplete line.
                for line in data.split(b"\\n")[:-1]:
                    try:
                        json.loads(line)["seq"]
                    except Exception:
                        bad += 1
                if done:
                    break
            print(json.dumps({{"bad": bad, "reads": reads}}))
            """
        )
    )
    (tmp_path / "state").mkdir()
    child = subprocess.Popen([sys.executable, str(reader)], stdout=subprocess.PIPE)
    try:
        for _ in range(600):
            if (tmp_path / "ready").exists():
                break
            time.sleep(0.05)
        for n in range(400):
            append_run(tmp_path / "state", record(n), max_bytes=20_000, keep=2)
    finally:
        (tmp_path / "stop").touch()
        out, _ = child.communicate(timeout=70)
    seen = json.loads(out)
    assert seen["reads"] > 0
    assert seen["bad"] == 0


def test_append_fails_loudly_when_the_state_dir_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    with pytest.raises(OSError):
        append_run(blocker, record(0))
    assert os.path.isfile(blocker)


def test_an_unreadable_history_reads_as_empty(tmp_path: Path) -> None:
    (tmp_path / HISTORY_FILE).mkdir()  # reading a directory fails even for root
    assert read_runs(tmp_path) == []


def test_a_link_planted_at_the_history_is_neither_followed_nor_read(tmp_path: Path) -> None:
    from updates.utils.errors import UnsafePermissions

    victim = tmp_path / "victim"
    victim.write_text(json.dumps({"schema": 1, "modules": [], "secret": "not for the history"}) + "\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / HISTORY_FILE).symlink_to(victim)
    before = victim.read_bytes()
    with pytest.raises(UnsafePermissions, match="is a symbolic link; refusing to follow it"):
        append_run(state, record(0))
    # Even when the link is big enough to trigger a rotation, nothing is renamed into place or written.
    with pytest.raises(UnsafePermissions):
        append_run(state, record(1), max_bytes=1)
    assert victim.read_bytes() == before
    assert (state / HISTORY_FILE).is_symlink()
    assert read_runs(state) == []


def test_a_fifo_at_the_history_is_refused_without_hanging(tmp_path: Path) -> None:
    from updates.utils.errors import UnsafePermissions

    os.mkfifo(tmp_path / HISTORY_FILE)
    started = time.monotonic()
    with pytest.raises(UnsafePermissions, match="not a regular file"):
        append_run(tmp_path, record(0))
    assert read_runs(tmp_path) == []
    assert time.monotonic() - started < 5
