"""The commands behind `index.py`: run, status, verify, history.

Contract: each `cmd_*(paths, opts) -> int` does its work and returns the exit code, raising an
`UpdatesError` subclass for anything the operator must fix (the CLI maps it to one line and a code).
`run` holds the run lock throughout, refuses to start as root when other users could change the code
(StrictModes), and publishes the outcome (history, metrics, notifications) without letting that change
the result.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from types import FrameType

from ..digest import compute_folder_sha256, read_checksum_file
from ..errors import ChecksumError, UnsafePermissions, UsageError
from ..lock import run_lock
from ..manifest import (
    Entry,
    Manifest,
    display_name,
    load_manifest,
    read_raw,
    update_entry,
    utc_timestamp,
    validate,
)
from ..paths import PACKAGE_ROOT, Paths
from ..permissions import FIX_HINT, check_ancestors, check_install, enforced
from ..report.history import last_status_by_module, read_runs
from ..report.notify import NotifyConfig
from ..report.publish import announce_start, publish, publish_refusal
from ..report.views import format_history, history_json, json_report, last_run_cells, summary_text, table
from .runner import FAILED, Runner, RunOptions, permission_problem
from .script import script_checksum

EXIT_INTERRUPTED = 130


def _known_names(manifest: Manifest, names: Sequence[str], flag: str) -> frozenset[str]:
    unknown = [n for n in names if n not in manifest.entries]
    if unknown:
        raise UsageError(f"{flag}: unknown module {', '.join(unknown)}; known: {', '.join(manifest.entries)}")
    return frozenset(names)


def install_problems(paths: Paths) -> list[str]:
    """What makes the installation unsafe for root to run: our own code, the manifest, their directories."""
    problems = check_install(PACKAGE_ROOT, paths.manifest)
    if paths.root != PACKAGE_ROOT:
        problems += [p for p in check_ancestors(paths.root) if p not in problems]
    return problems


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """systemd stops a unit with SIGTERM: end like Ctrl-C, with a summary and a history record."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_run(paths: Paths, opts: argparse.Namespace) -> int:
    with run_lock(paths), _sigterm_as_interrupt():
        manifest = load_manifest(paths)
        only = _known_names(manifest, opts.only, "--only") if opts.only is not None else None
        skip = _known_names(manifest, opts.skip, "--skip")
        config = NotifyConfig.parse(manifest.raw.get("notify"))
        if only is not None or skip:
            # A hand-picked run is not the nightly check-in: healthchecks must not count it as one.
            config = dataclasses.replace(config, ping_url=None)
        selection = {"only": sorted(only) if only else None, "skip": sorted(skip)}
        started = time.time()
        strict = enforced()
        if strict and (problems := install_problems(paths)):
            more = f" (+{len(problems) - 1} more; see `index.py verify`)" if len(problems) > 1 else ""
            refusal = UnsafePermissions(f"refusing to run as root: {problems[0]}{more}", hint=FIX_HINT)
            publish_refusal(
                paths, config, refusal, started=started, dry_run=opts.dry_run, selection=selection
            )
            raise refusal
        options = RunOptions(
            dry_run=opts.dry_run, only=only, skip=skip, quiet_stdout=opts.json, check_permissions=strict
        )

        def record(name: str) -> None:
            update_entry(paths.manifest, name, {"lastApplied": utc_timestamp()})

        announce_start(config, dry_run=opts.dry_run)
        runner = Runner(paths, manifest, options, on_success=record)
        results = runner.run()
        finished = time.time()
        if runner.interrupted:
            code = EXIT_INTERRUPTED
        else:
            code = 1 if any(r.status == FAILED for r in results) else 0
        report_text = json_report(
            results,
            interrupted=runner.interrupted,
            dry_run=opts.dry_run,
            started=utc_timestamp(datetime.fromtimestamp(started, timezone.utc)),
            duration_s=round(finished - started, 3),
        )
        if opts.json:
            sys.stdout.write(report_text)
        else:
            sys.stdout.write(
                summary_text(
                    results,
                    entrypoint=manifest.entrypoint,
                    interrupted=runner.interrupted,
                    dry_run=opts.dry_run,
                )
            )
        sys.stdout.flush()
        publish(
            paths,
            config,
            results,
            json.loads(report_text),
            started=started,
            finished=finished,
            exit_code=code,
            dry_run=opts.dry_run,
            interrupted=runner.interrupted,
            metrics_file=opts.metrics_file,
            known_modules=set(manifest.entries),
            selection=selection,
        )
    return code


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


def cmd_status(paths: Paths, opts: argparse.Namespace) -> int:
    manifest = load_manifest(paths)
    last = last_status_by_module(read_runs(paths))
    rows = []
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
    if opts.json:
        sys.stdout.write(json.dumps({"entrypoint": manifest.entrypoint, "modules": rows}, indent=2) + "\n")
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
        if strict and (problem := permission_problem(paths, entry)):
            state = f"{state}; {problem.split(': ', 1)[1]}"
        bad += state != "ok"
        sys.stdout.write(f"{entry.name}: {state}\n")
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


HANDLERS = {"run": cmd_run, "status": cmd_status, "verify": cmd_verify, "history": cmd_history}
