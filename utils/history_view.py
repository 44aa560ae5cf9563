"""What `index.py history` and `index.py status` show of the run history.

Contract: pure functions from history records (as `utils.history.read_runs` returns them, newest first) to
text; nothing here prints or touches files. Records written by a newer schema or damaged by hand are shown
as far as they can be, never raising.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .history import LastStatus
from .report import table

STATUS_ORDER = ("failed", "changed", "ok", "skipped")
HISTORY_HEADERS = ["STARTED", "DURATION", "RESULT", "EXIT", "MODULES", "FAILED"]


def format_duration(seconds: object) -> str:
    """`42.1s`, `3m05s`, `1h02m`; `-` when unknown."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _modules(run: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    modules = run.get("modules")
    if not isinstance(modules, list):
        return []
    return [m for m in modules if isinstance(m, Mapping)]


def run_result(run: Mapping[str, Any]) -> str:
    """`ok`, `failed` or `interrupted`, with `(dry run)` appended for dry runs."""
    if run.get("interrupted"):
        text = "interrupted"
    elif run.get("ok") is True:
        text = "ok"
    elif run.get("ok") is False:
        text = "failed"
    else:
        text = "?"
    return f"{text} (dry run)" if run.get("dry_run") else text


def status_counts(run: Mapping[str, Any]) -> str:
    """`1 failed, 2 changed, 3 ok` in a fixed order; `-` for a run with no modules."""
    counts = Counter(str(m.get("status", "?")) for m in _modules(run))
    if not counts:
        return "-"
    order = [s for s in STATUS_ORDER if s in counts] + sorted(s for s in counts if s not in STATUS_ORDER)
    return ", ".join(f"{counts[s]} {s}" for s in order)


def _cell(value: object) -> str:
    if value is None or value == "":
        return "-"
    return str(value).replace("\n", " ")


def format_history(runs: Sequence[Mapping[str, Any]]) -> str:
    """An aligned table, one row per run, in the order given (newest first from `read_runs`)."""
    if not runs:
        return "no runs recorded yet\n"
    rows = []
    for run in runs:
        failed = [str(m.get("name", "?")) for m in _modules(run) if m.get("status") == "failed"]
        rows.append(
            [
                _cell(run.get("started")),
                format_duration(run.get("duration_s")),
                run_result(run),
                _cell(run.get("exit_code")),
                status_counts(run),
                ", ".join(failed) or "-",
            ]
        )
    return table(HISTORY_HEADERS, rows)


def format_run(run: Mapping[str, Any]) -> str:
    """One run in detail: a heading line, then one aligned row per module with its summary or error."""
    head = (
        f"run started {_cell(run.get('started'))}, finished {_cell(run.get('finished'))}, "
        f"{format_duration(run.get('duration_s'))}: {run_result(run)}, "
        f"exit code {_cell(run.get('exit_code'))}\n"
    )
    modules = _modules(run)
    if not modules:
        return head + "no modules ran\n"
    rows = [
        [
            _cell(m.get("name")),
            _cell(m.get("status")),
            format_duration(m.get("duration_s")),
            _cell(m.get("error") if m.get("status") == "failed" and m.get("error") else m.get("summary")),
        ]
        for m in modules
    ]
    return head + table(["MODULE", "STATUS", "DURATION", "DETAIL"], rows)


def history_json(runs: Sequence[Mapping[str, Any]]) -> str:
    """`{"runs": [...]}` newest first, for `index.py history --json`."""
    return json.dumps({"runs": list(runs)}, indent=2, ensure_ascii=False) + "\n"


def last_run_cells(last: Mapping[str, LastStatus], name: str) -> tuple[str, str]:
    """The `LAST RUN` and `AT` cells of `index.py status` for one module (`never`, `-` when unknown)."""
    found = last.get(name)
    if found is None:
        return "never", "-"
    return found.status, found.finished_at or "-"
