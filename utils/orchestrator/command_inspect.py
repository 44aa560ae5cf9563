"""The read-only commands behind `index.py`: `status`, `verify` and `history`.

Contract: each `cmd_*(paths, opts) -> int` reports on stdout and returns the exit code (`verify`: 0 all
verified, 1 a checksum or permission problem, 2 an invalid manifest), raising an `UpdatesError` subclass for
anything the operator must fix. None of them takes the run lock, creates anything or changes the manifest
or the modules; `status` and `verify` list the changes a killed process left unfinished (the journal)
without completing them, name the state directory they read, and `status` tells of a run holding the lock
(from /proc/locks), warning when it has held it longer than its modules' timeouts together. `verify`
lets a permission refusal decide a module's line, ends with one verdict line that never calls anything
verified when a problem was found, and warns about a GitHub token file others can read.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
from typing import Any

from ..digest import compute_folder_sha256, read_checksum_file, script_checksum
from ..errors import ChecksumError, UsageError
from ..journal import Operation
from ..lock import lock_holder
from ..manifest import Entry, Manifest, display_name, load_manifest, read_raw
from ..paths import Paths
from ..permissions import enforced
from ..recovery import pending
from ..report.history import iso_utc, last_status_by_module, read_runs
from ..report.views import STATUS_SCHEMA, format_history, history_json, host_name, last_run_cells, table
from ..schema import validate
from ..state_move import legacy_note
from .command_pull import signing_line
from .runner import CHECKSUMMER_HINT, install_problems, permission_problem
from .script import DEFAULT_TIMEOUT as SCRIPT_TIMEOUT


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
    running = run_in_progress(paths, manifest)
    if opts.json:
        document = {
            "schema": STATUS_SCHEMA,
            "host": host_name(),
            "entrypoint": manifest.entrypoint,
            "state_dir": str(paths.state),
            "modules": rows,
            "pending": unfinished,
            "running": running,
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return 0
    headers = ["NAME", "ENABLED", "VERSION", "LAST SAFE", "LAST APPLIED", "CHECKSUM", "LAST RUN", "AT"]
    cells = [
        [
            r["name"],
            "yes" if r["enabled"] else "no",
            r["version"] or "-",
            r["lastSafeVersion"] or "-",
            "-" if r["kind"] == "group" else (r["lastApplied"] or "never"),  # a group is never applied itself
            r["checksum"] or "(group)",
            "-" if r["kind"] == "group" else (r["lastRun"] or "never"),
            r["lastRunAt"] or "-",
        ]
        for r in rows
    ]
    sys.stdout.write(table(headers, cells))
    sys.stdout.write(pending_lines(unfinished))
    if running:
        sys.stdout.write(running_line(running))
    sys.stdout.write(state_lines(paths))
    return 0


def run_bound(manifest: Manifest) -> float | None:
    """The longest a whole run can last: its modules run one after another, each within its timeout (None:
    a module without one has no bound)."""
    total = 0.0
    for entry in manifest.modules():
        limit = entry.timeout if entry.timeout else (SCRIPT_TIMEOUT if entry.script else None)
        if limit is None:
            return None
        total += limit
    return total


def run_in_progress(paths: Paths, manifest: Manifest, now: float | None = None) -> dict[str, Any] | None:
    """The run holding the lock (pid, since, for how long, and whether it outlasted every timeout), if any."""
    held = lock_holder(paths.lock)
    if held is None:
        return None
    pid, since = held
    seconds = max((time.time() if now is None else now) - since, 0.0)
    bound = run_bound(manifest)
    return {"pid": pid, "since": iso_utc(since), "seconds": round(seconds), "bound_s": bound,
            "stuck": bound is not None and seconds > bound}  # fmt: skip


def running_line(running: dict[str, Any]) -> str:
    held = f"a run (pid {running['pid']}) has held the lock since {running['since']} ({running['seconds']} s)"
    if running["stuck"]:
        return (
            f"warning: {held}, longer than its modules' timeouts together ({running['bound_s']:g} s): it "
            f"looks stuck, and every later run is refused until it ends; see `journalctl -u updates` and "
            f"end it with `kill {running['pid']}`\n"
        )
    return f"running: {held}\n"


def state_lines(paths: Paths) -> str:
    """Which state directory was read (and why that one), so a mistyped path is not an empty state."""
    note = legacy_note(paths)
    return f"state directory: {paths.describe_state()}\n" + (f"{note}\n" if note else "")


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
    strict = enforced()
    install = install_problems(paths) if strict else []
    for problem in install:
        sys.stdout.write(f"permissions: {problem}\n")
    matching = refused = 0
    for entry in modules:
        state = checksum_state(paths, entry)
        matching += state == "ok"
        refusal = permission_problem(paths, entry) if strict else None
        if refusal:
            # The refusal decides: a module root will not run is not "ok", whatever its checksum.
            refused += 1
            reason = refusal.split(": refusing to run: ", 1)[-1]
            checksum = " (checksum ok)" if state == "ok" else f"; checksum {state}"
            line = f"refused as root: {reason}{checksum}"
        else:
            line = state
        sys.stdout.write(f"{entry.name}: {line}\n")
    sys.stdout.write(pending_lines(pending_rows(paths)))
    sys.stdout.write(state_lines(paths))
    warning = token_file_warning(paths.token_file)
    if warning:
        sys.stdout.write(f"warning: {warning}\n")
    signing, unsigned = signing_line(paths)
    sys.stdout.write(f"{signing}\n")
    total = len(install) + refused + (len(modules) - matching) + unsigned
    checked = "; permissions checked (running as root)" if strict else ""
    if not total:
        warned = "; 1 warning above" if warning else ""
        count = len(modules)
        sys.stdout.write(f"{shown}: valid; {count} of {count} modules verified{checked}{warned}\n")
        return 0
    sys.stdout.write(
        f"verify failed: {total} problem{'s' if total != 1 else ''} listed above; {shown} is valid, "
        f"{matching} of {len(modules)} module checksums match{checked}\n"
    )
    if matching < len(modules):
        sys.stdout.write(f"hint: for a checksum mismatch, {CHECKSUMMER_HINT}\n")
    return 1


def token_file_warning(path: os.PathLike[str] | str, euid: int | None = None) -> str | None:
    """Why the GitHub token file is not private to root (None when it is, or when there is none)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot check the GitHub token file {path}: {exc.strerror or exc}"
    euid = os.geteuid() if euid is None else euid
    fix = f"chown root:root {path} && chmod 600 {path}"
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        return f"the GitHub token file {path} is not a regular file; make it one ({fix})"
    if st.st_uid != euid:
        return f"the GitHub token file {path} belongs to uid {st.st_uid}, who can read and change it; {fix}"
    if st.st_mode & 0o077:
        who = " and ".join(w for w, bits in (("group", 0o070), ("others", 0o007)) if st.st_mode & bits)
        mode = stat.S_IMODE(st.st_mode)
        return f"the GitHub token file {path} is open to {who} (mode {mode:04o}); chmod 600 {path}"
    return None


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
