"""Jinja filters of the `updates` role: what the rollout decides and what the fleet report says.

Plain functions on the JSON that `index.py status --json`, `history --json` and `run --json` print (the
keys they have today; unknown keys are ignored), so they are tested without Ansible:
- `updates_changed_modules(before, after)`: names of the modules whose version differs between two
  `status --json` outputs (text or parsed), in the order of `after`.
- `updates_failed_modules(report, changed)` and `updates_run_failures(report, rc, stderr)`: which modules
  of a `run --json` report failed, and one line saying so (the run's last error line when no module
  failed: a refusal, the lock held).
- `updates_rollback_summary(results)`: one line about the rollbacks of a looped command task.
- `updates_fleet_report(hosts, max_age_days, now=None)`: `hosts` maps a host name to
  `{"status": <status --json>, "history": <history --json>}` or `{"error": "..."}`; returns the report
  `{"generated", "max_age_days", "rows": [...], "problems": [...], "ok"}`. A problem is a host that
  did not answer, a module whose last run failed, an enabled module with no success for `max_age_days`
  (or none ever), or a change a crash left pending.
- `updates_fleet_table(report)`: the rows as an aligned text table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

SUCCESS = ("ok", "changed")
COLUMNS = (("host", "HOST"), ("module", "MODULE"), ("version", "VERSION"), ("last_run", "LAST RUN"),
           ("status", "STATUS"), ("last_success", "LAST SUCCESS"))  # fmt: skip


def _parsed(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _modules(status: Any) -> list[Mapping[str, Any]]:
    data = _parsed(status) or {}
    modules = [m for m in data.get("modules") or [] if isinstance(m, Mapping)]
    return [m for m in modules if m.get("kind", "module") == "module"]


def changed_modules(before: Any, after: Any) -> list[str]:
    old = {m.get("name"): m.get("version") for m in _modules(before)}
    return [str(m["name"]) for m in _modules(after) if old.get(m.get("name"), ()) != m.get("version")]


def failed_modules(report: Any, changed: Iterable[str] = ()) -> list[str]:
    data = _parsed(report) or {}
    return [str(m["name"]) for m in data.get("modules") or [] if m.get("status") == "failed"]


def run_failures(report: Any, rc: int, stderr: str = "") -> str:
    data = _parsed(report) or {}
    failed = [m for m in data.get("modules") or [] if m.get("status") == "failed"]
    if not failed:
        last = (str(stderr or "").strip().splitlines() or [""])[-1]
        return f"index.py run exited {rc}" + (" (interrupted)" if data.get("interrupted") else "") + (
            f": {last}" if last else "")  # fmt: skip
    return "; ".join(f"{m.get('name')} failed: {m.get('error') or 'no error message'}" for m in failed)


def rollback_summary(results: Iterable[Mapping[str, Any]] | None) -> str:
    done, refused = [], []
    for result in results or []:
        if result.get("skipped"):
            continue
        name = result.get("item")
        if result.get("rc") == 0:
            done.append(str(name))
        else:
            text = str(result.get("stderr") or result.get("msg") or "").strip()
            lines = text.splitlines() or ["no reason given"]
            refused.append(f"{name} ({lines[-1]})")
    parts = []
    if done:
        parts.append("rolled back to lastSafeVersion: " + ", ".join(done))
    if refused:
        parts.append("could NOT roll back: " + ", ".join(refused))
    return "; ".join(parts) or "nothing was rolled back"


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def _last_success(module: Mapping[str, Any], runs: list[Mapping[str, Any]]) -> datetime | None:
    times = [_time(module.get("lastApplied"))]
    for run in runs:
        if run.get("dry_run"):
            continue
        for item in run.get("modules") or []:
            if item.get("name") == module.get("name") and item.get("status") in SUCCESS:
                times.append(_time(run.get("finished") or run.get("started")))
    return max((t for t in times if t is not None), default=None)


def _last_error(name: Any, runs: list[Mapping[str, Any]]) -> str | None:
    for run in runs:  # newest first
        for item in run.get("modules") or []:
            if item.get("name") == name and item.get("status") == "failed":
                return str(item.get("error") or "") or None
    return None


def fleet_report(hosts: Mapping[str, Any], max_age_days: float, now: str | None = None) -> dict[str, Any]:
    moment = _time(now) or datetime.now(timezone.utc)
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for host in sorted(hosts):
        data = hosts[host] or {}
        if data.get("error") or not data.get("status"):
            problems.append(f"{host}: no status: {data.get('error') or 'the host did not answer'}")
            rows.append({"host": host, "module": "-", "version": None, "last_run": None,
                         "status": "unreachable", "last_success": None, "enabled": None})  # fmt: skip
            continue
        status = _parsed(data["status"])
        history = _parsed(data.get("history")) or {}
        runs = [r for r in history.get("runs") or [] if isinstance(r, Mapping)]
        for pending in status.get("pending") or []:
            problems.append(f"{host}: a change a crash interrupted is pending: {pending}")
        for module in _modules(status):
            name = module.get("name")
            enabled = module.get("enabled", True) is not False
            success = _last_success(module, runs)
            row = {"host": host, "module": name, "version": module.get("version"),
                   "last_run": module.get("lastRunAt"), "status": module.get("lastRun") or "never",
                   "last_success": _iso(success), "enabled": enabled}  # fmt: skip
            if not enabled:
                row["status"] = f"{row['status']} (disabled)"
            rows.append(row)
            if enabled and module.get("lastRun") == "failed":
                error = _last_error(name, runs)
                problems.append(f"{host} {name}: failed" + (f": {error}" if error else ""))
            if enabled and success is None:
                problems.append(f"{host} {name}: never succeeded")
            elif enabled and (age := (moment - success).total_seconds()) > max_age_days * 86400:
                days = age / 86400
                problems.append(f"{host} {name}: no success for {days:.1f} days (since {_iso(success)})")
    return {"generated": _iso(moment), "max_age_days": max_age_days, "rows": rows, "problems": problems,
            "ok": not problems}  # fmt: skip


def fleet_table(report: Mapping[str, Any]) -> str:
    cells = [[title for _, title in COLUMNS]]
    for row in report.get("rows") or []:
        cells.append(["-" if row.get(key) is None else str(row.get(key)) for key, _ in COLUMNS])
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells)
    return "\n".join(lines) + "\n"


class FilterModule:
    """The filters above, under the names the role's tasks use."""

    def filters(self) -> dict[str, Any]:
        return {
            "updates_changed_modules": changed_modules,
            "updates_failed_modules": failed_modules,
            "updates_run_failures": run_failures,
            "updates_rollback_summary": rollback_summary,
            "updates_fleet_report": fleet_report,
            "updates_fleet_table": fleet_table,
        }
