"""What the operator reads must always be writable: text from damaged records and odd module output."""
from __future__ import annotations

import json

from updates.utils.report.views import format_history, format_run, history_json, summary_text, table
from updates.utils.results import ModuleResult, Status

# A record damaged by hand, or written by a module's error holding an undecodable file name: JSON's
# `\udc80` escape reads back as a lone surrogate, which UTF-8 cannot encode.
DAMAGED = json.loads(
    '{"started": "2024-06-10T15:23:00Z\\udc80", "duration_s": 1.5, "ok": false, "exit_code": 1,'
    ' "modules": [{"name": "gogs\\udc80", "status": "failed", "duration_s": 1, "error": "bad \\udcff name"}]}'
)


def test_history_views_of_a_damaged_record_encode_and_show_the_escape() -> None:
    text = format_history([DAMAGED])
    text.encode("utf-8")
    assert "2024-06-10T15:23:00Z\\udc80" in text and "gogs\\udc80" in text
    detail = format_run(DAMAGED)
    detail.encode("utf-8")
    assert "bad \\udcff name" in detail


def test_history_json_round_trips_the_same_values() -> None:
    text = history_json([DAMAGED])
    text.encode("utf-8")
    document = json.loads(text)
    assert document["runs"] == [DAMAGED] and document["schema"] == 1 and document["host"]


def test_summary_and_tables_encode() -> None:
    result = ModuleResult("odd", Status.FAILED, 0.5, error="OSError: bad\udc80name")
    summary = summary_text([result], entrypoint="all_services", interrupted=False, dry_run=False)
    assert summary.splitlines()[0] == "odd: failed (OSError: bad\\udc80name) 0.5s"
    assert table(["A"], [["x\ud800"]]).encode("utf-8") == b"A\nx\\ud800\n"
