"""What the operator reads: run summaries, the JSON report, aligned tables, and the run history.

Contract: pure functions from module results, table rows and history records (as `report.history.read_runs`
returns them, newest first) to text; nothing here prints or touches files. Records written by a newer schema
or damaged by hand are shown as far as they can be, never raising. Every text returned encodes as UTF-8
(`printable`: a lone surrogate is shown as its escape).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ..results import ModuleResult, Status
from .history import LastStatus, host_name

STATUS_ORDER = (Status.FAILED, Status.CHANGED, Status.OK, Status.SKIPPED)
# Versions of the JSON documents (schemas/*.schema.json); a reader checks `schema` before relying on keys.
REPORT_SCHEMA = 1
STATUS_SCHEMA = 1
HISTORY_SCHEMA = 1
HISTORY_HEADERS = ["STARTED", "DURATION", "RESULT", "EXIT", "MODULES", "FAILED"]


def printable(text: str) -> str:
    """`text` with any lone surrogate written as its escape (`\\udc80`), so that it can be encoded as UTF-8.

    A history record holding the escape, or a module's error carrying an undecodable file name, would
    otherwise make writing the report to a UTF-8 stream or file fail.
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
    """`ok`, `failed`, `refused` or `interrupted`, with `(dry run)` appended for dry runs."""
    if run.get("refused"):
        text = "refused"
    elif run.get("interrupted"):
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


def _failed_with_error(module: Mapping[str, Any]) -> bool:
    return module.get("status") == Status.FAILED and bool(module.get("error"))


def format_history(runs: Sequence[Mapping[str, Any]]) -> str:
    """An aligned table, one row per run, in the order given (newest first from `read_runs`)."""
    if not runs:
        return "no runs recorded yet\n"
    rows = []
    for run in runs:
        failed = [str(m.get("name", "?")) for m in _modules(run) if m.get("status") == Status.FAILED]
        rows.append(
            [
                _cell(run.get("started")),
                format_duration(run.get("duration_s")),
                run_result(run),
                _cell(run.get("exit_code")),
                status_counts(run),
                ", ".join(failed) or refusal_reason(run) or "-",
            ]
        )
    return table(HISTORY_HEADERS, rows)


def refusal_reason(run: Mapping[str, Any]) -> str | None:
    """Why a run that ran no module ended (a refusal's error, and since when the lock's holder held it)."""
    error = run.get("error")
    if not isinstance(error, str) or not error:
        return None
    holder = run.get("lock_holder")
    since = holder.get("since") if isinstance(holder, Mapping) else None
    return _cell(error + (f", since {since}" if isinstance(since, str) else ""))


def format_run(run: Mapping[str, Any]) -> str:
    """One run in detail: a heading line, then one aligned row per module with its summary or error."""
    head = (
        f"run started {_cell(run.get('started'))}, finished {_cell(run.get('finished'))}, "
        f"{format_duration(run.get('duration_s'))}: {run_result(run)}, "
        f"exit code {_cell(run.get('exit_code'))}\n"
    )
    modules = _modules(run)
    if not modules:
        return printable(head) + "no modules ran\n"
    rows = [
        [
            _cell(m.get("name")),
            _cell(m.get("status")),
            format_duration(m.get("duration_s")),
            _cell(m.get("error") if _failed_with_error(m) else m.get("summary")),
        ]
        for m in modules
    ]
    return printable(head) + table(["MODULE", "STATUS", "DURATION", "DETAIL"], rows)


def history_json(runs: Sequence[Mapping[str, Any]]) -> str:
    """`{"schema", "host", "runs": [...]}` newest first, for `index.py history --json`."""
    document = {"schema": HISTORY_SCHEMA, "host": host_name(), "runs": list(runs)}
    # A lone surrogate becomes the six characters `\udc80`: inside a JSON string, the same value again.
    return printable(json.dumps(document, indent=2, ensure_ascii=False)) + "\n"


def last_run_cells(last: Mapping[str, LastStatus], name: str) -> tuple[str, str]:
    """The `LAST RUN` and `AT` cells of `index.py status` for one module (`never`, `-` when unknown)."""
    found = last.get(name)
    if found is None:
        return "never", "-"
    return found.status, found.finished_at or "-"


def summary_line(result: ModuleResult) -> str:
    """`adblock: changed (1.2 -> 1.3) 2.1s`."""
    detail = result.error if result.status == Status.FAILED and result.error else result.summary
    text = f"{result.name}: {result.status}"
    if detail:
        text += f" ({detail})"
    if result.status != Status.SKIPPED:
        text += f" {result.duration_s:.1f}s"
    return printable(text)


def summary_text(
    results: Sequence[ModuleResult], *, entrypoint: str, interrupted: bool, dry_run: bool
) -> str:
    if not results:
        return f"nothing to do: {entrypoint} has no modules to run\n"
    lines = [summary_line(r) for r in results]
    counts = Counter(r.status for r in results)
    tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    tail = f"{len(results)} module{'s' if len(results) != 1 else ''}: {tally}"
    if dry_run:
        tail += " (dry run: nothing was changed)"
    if interrupted:
        tail += " (interrupted)"
    lines.append(tail)
    return printable("\n".join(lines)) + "\n"


def json_report(results: Sequence[ModuleResult], *, interrupted: bool, dry_run: bool, **extra: Any) -> str:
    """The run report (schemas/run-report.schema.json): `index.py run --json` and the webhook body."""
    ok = not interrupted and all(r.status != Status.FAILED for r in results)
    report = {"schema": REPORT_SCHEMA, "host": host_name(), "ok": ok, "dry_run": dry_run,
              "interrupted": interrupted, **extra}  # fmt: skip
    report["modules"] = [r.as_dict() for r in results]
    return json.dumps(report, indent=2) + "\n"


def refusal_report(error: str, exit_code: int, *, dry_run: bool, **extra: Any) -> dict[str, Any]:
    """A run report for a run that ran no module (refused, or a usage or manifest error): same shape."""
    return {"schema": REPORT_SCHEMA, "host": host_name(), "ok": False, "dry_run": dry_run,
            "interrupted": False, "exit_code": exit_code, "error": error, **extra, "modules": []}  # fmt: skip


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    ]
    return printable("\n".join(lines)) + "\n"
