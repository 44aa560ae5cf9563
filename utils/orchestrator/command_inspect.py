"""The read-only commands behind `index.py`: `status`, `verify` and `history`.

Contract: each `cmd_*(paths, opts) -> int` reports on stdout and returns the exit code (`verify`: 0 all
verified, 1 a checksum or permission problem, 2 an invalid manifest), raising an `UpdatesError` subclass for
anything the operator must fix. None of them takes the run lock or changes the manifest or the modules;
`status` and `verify` list the changes a killed process left unfinished (the journal) without completing
them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..digest import compute_folder_sha256, read_checksum_file, script_checksum
from ..errors import ChecksumError, UsageError
from ..journal import Operation
from ..manifest import Entry, display_name, load_manifest, read_raw
from ..paths import Paths
from ..permissions import enforced
from ..recovery import pending
from ..report.history import last_status_by_module, read_runs
from ..report.views import format_history, history_json, last_run_cells, table
from ..schema import validate
from .runner import install_problems, permission_problem


def checksum_state(paths: Paths, entry: Entry) -> str:
    """`ok`, `mismatch`, `no checksum file` or `error: ...` for one module directory or script."""
    try:
        if entry.script:
            live = script_checksum(paths.root / entry.script)
            return "ok" if live == entry.checksum else "mismatch"
        directory = paths.module_dir(entry.name)
        live = compute_folder_sha256(directory)
        recorded = read_checksum_file(directory)
    except ChecksumError as exc:
        return f"error: {exc}"
    if recorded is None:
        return "no checksum file"
    if recorded != live or (entry.checksum is not None and entry.checksum != live):
        return "mismatch"
    return "ok"


def pending_rows(paths: Paths) -> list[dict[str, Any]]:
    """Changes a killed process left unfinished, which the next command that takes the lock completes."""
    rows: list[dict[str, Any]] = []
    for item in pending(paths):
        if isinstance(item, Operation):
            rows.append({"op": item.op, "describe": item.describe, "module": item.module,
                         "started": item.started, "pid": item.pid, "state": item.state})  # fmt: skip
        else:
            rows.append({"op": None, "describe": f"unreadable journal record {item}", "module": None,
                         "started": None, "pid": None, "state": "unreadable"})  # fmt: skip
    return rows


def pending_lines(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        outcome = "finishes" if row["state"] == "committed" else "reverts"
        lines.append(
            f"pending: an interrupted {row['describe']} (started {row['started']}, pid {row['pid']}); "
            f"the next run, rollback or checksummer {outcome} it\n"
            if row["op"]
            else f"pending: {row['describe']}; move it aside and check the module by hand\n"
        )
    return "".join(lines)


def cmd_status(paths: Paths, opts: argparse.Namespace) -> int:
    manifest = load_manifest(paths)
    last = last_status_by_module(read_runs(paths))
    rows: list[dict[str, Any]] = []
    for entry in manifest.entries.values():
        last_run, last_at = last_run_cells(last, entry.name)
        rows.append(
            {
                "name": entry.name,
                "kind": "group" if entry.is_group else ("script" if entry.script else "module"),
                "enabled": entry.enabled,
                "version": entry.version,
                "lastSafeVersion": entry.last_safe_version,
                "lastApplied": entry.last_applied,
                "checksum": None if entry.is_group else checksum_state(paths, entry),
                "lastRun": None if entry.is_group or last_run == "never" else last_run,
                "lastRunAt": None if entry.is_group or last_at == "-" else last_at,
            }
        )
    unfinished = pending_rows(paths)
    if opts.json:
        document = {"entrypoint": manifest.entrypoint, "modules": rows, "pending": unfinished}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return 0
    headers = ["NAME", "ENABLED", "VERSION", "LAST SAFE", "LAST APPLIED", "CHECKSUM", "LAST RUN", "AT"]
    cells = [
        [
            r["name"],
            "yes" if r["enabled"] else "no",
            r["version"] or "-",
            r["lastSafeVersion"] or "-",
            r["lastApplied"] or "never",
            r["checksum"] or "(group)",
            "-" if r["kind"] == "group" else (r["lastRun"] or "never"),
            r["lastRunAt"] or "-",
        ]
        for r in rows
    ]
    sys.stdout.write(table(headers, cells))
    sys.stdout.write(pending_lines(unfinished))
    return 0


def cmd_verify(paths: Paths, opts: argparse.Namespace) -> int:
    raw = read_raw(paths.manifest)
    problems = validate(raw, paths.root)
    shown = display_name(paths.manifest)
    if problems:
        for problem in problems:
            sys.stdout.write(f"{shown}: {problem}\n")
        return 2
    manifest = load_manifest(paths)
    modules = manifest.modules()
    bad = 0
    strict = enforced()
    if strict:
        for problem in install_problems(paths):
            bad += 1
            sys.stdout.write(f"permissions: {problem}\n")
    for entry in modules:
        state = checksum_state(paths, entry)
        if strict and (refusal := permission_problem(paths, entry)):
            state = f"{state}; {refusal.split(': ', 1)[1]}"
        bad += state != "ok"
        sys.stdout.write(f"{entry.name}: {state}\n")
    sys.stdout.write(pending_lines(pending_rows(paths)))
    verified = sum(1 for e in modules if checksum_state(paths, e) == "ok")
    sys.stdout.write(
        f"{shown}: valid; {verified} of {len(modules)} modules verified"
        f"{'; permissions checked (running as root)' if strict else ''}\n"
    )
    return 1 if bad else 0


def cmd_history(paths: Paths, opts: argparse.Namespace) -> int:
    if opts.n is not None and opts.n < 1:
        raise UsageError("history: -n takes a positive number")
    runs = read_runs(paths, limit=opts.n)
    if opts.json:
        sys.stdout.write(history_json(runs))
    elif not runs:
        sys.stdout.write(f"no runs recorded yet in {paths.state / 'history.jsonl'}\n")
    else:
        sys.stdout.write(format_history(runs))
    return 0
