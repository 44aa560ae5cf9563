"""The command line: `index.py [run] | status | verify`, and the one place that maps errors to exit codes.

Contract: `main(argv, root=None) -> int` never calls sys.exit and never lets an exception escape: usage and
manifest errors return 2, a held lock 75, Ctrl-C 130, a failed module 1, success 0. The operator sees one
line (and a hint) per problem on stderr; the log file under the state dir gets the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .checksum import compute_folder_sha256, read_checksum_file
from .errors import ChecksumError, UpdatesError, UsageError
from .lock import run_lock
from .log import setup_logging
from .manifest import Manifest, display_name, load_manifest, read_raw, update_entry, utc_timestamp, validate
from .paths import Paths
from .report import json_report, summary_text, table
from .runner import Runner, RunOptions

log = logging.getLogger(__name__)

COMMANDS = ("run", "status", "verify")
EXIT_INTERRUPTED = 130
_VALUE_OPTIONS = ("--manifest",)


class ParserExit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Parser(argparse.ArgumentParser):
    """argparse that reports instead of exiting, so that `main` stays the only place choosing exit codes."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", hint=f"see `{self.prog} --help`")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise ParserExit(status)


def _common(suppress: bool) -> argparse.ArgumentParser:
    default = argparse.SUPPRESS if suppress else None
    parent = Parser(add_help=False)
    parent.add_argument(
        "--manifest",
        type=Path,
        default=default,
        metavar="PATH",
        help="read this manifest instead of <root>/manifest.json",
    )
    parent.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS if suppress else 0,
        help="more detail on stderr (-vv: debug)",
    )
    parent.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="only errors on stderr",
    )
    return parent


def build_parser() -> Parser:
    parser = Parser(
        prog="index.py",
        description="Run the update modules listed in manifest.json, verified and isolated.",
        epilog="exit codes: 0 all ok, 1 a module failed, 2 usage or manifest error, "
        "75 another run holds the lock, 130 interrupted",
        parents=[_common(suppress=False)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    run = sub.add_parser("run", parents=[_common(suppress=True)], help="run the modules (the default)")
    run.add_argument(
        "--only",
        nargs="+",
        action="extend",
        default=None,
        metavar="NAME",
        help="run only these modules or groups (repeatable)",
    )
    run.add_argument(
        "--skip",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME",
        help="do not run these modules or groups (repeatable)",
    )
    run.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
    run.add_argument("--json", action="store_true", help="print only a JSON report on stdout")
    status = sub.add_parser("status", parents=[_common(suppress=True)], help="versions and checksum state")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.add_parser("verify", parents=[_common(suppress=True)], help="check the manifest and every checksum")
    return parser


def _with_command(argv: Sequence[str]) -> list[str]:
    """Insert the default command `run` unless one is named after the leading global options."""
    args = list(argv)
    i = 0
    while i < len(args) and args[i].startswith("-"):
        if args[i] in ("-h", "--help"):
            return args
        i += 2 if args[i] in _VALUE_OPTIONS else 1
    if i < len(args) and args[i] in COMMANDS:
        return args
    return ["run", *args]


def _known_names(manifest: Manifest, names: Sequence[str], flag: str) -> frozenset[str]:
    unknown = [n for n in names if n not in manifest.entries]
    if unknown:
        raise UsageError(
            f"{flag}: unknown module {', '.join(unknown)}; known: {', '.join(manifest.entries)}",
        )
    return frozenset(names)


def cmd_run(paths: Paths, opts: argparse.Namespace) -> int:

    with run_lock(paths):
        manifest = load_manifest(paths)
        only = _known_names(manifest, opts.only, "--only") if opts.only is not None else None
        skip = _known_names(manifest, opts.skip, "--skip")
        options = RunOptions(dry_run=opts.dry_run, only=only, skip=skip, quiet_stdout=opts.json)

        def record(name: str) -> None:
            update_entry(paths.manifest, name, {"lastApplied": utc_timestamp()})

        started = utc_timestamp()
        t0 = time.monotonic()
        runner = Runner(paths, manifest, options, on_success=record)
        results = runner.run()
    if opts.json:
        sys.stdout.write(
            json_report(
                results,
                interrupted=runner.interrupted,
                dry_run=opts.dry_run,
                started=started,
                duration_s=round(time.monotonic() - t0, 3),
            )
        )
    else:
        sys.stdout.write(
            summary_text(
                results, entrypoint=manifest.entrypoint, interrupted=runner.interrupted, dry_run=opts.dry_run
            )
        )
    if runner.interrupted:
        return EXIT_INTERRUPTED
    return 1 if any(r.status == "failed" for r in results) else 0


def checksum_state(paths: Paths, name: str, manifest_checksum: str | None) -> str:
    """`ok`, `mismatch`, `no checksum file` or `error: ...` for one module directory."""

    directory = paths.module_dir(name)
    try:
        live = compute_folder_sha256(directory)
        recorded = read_checksum_file(directory)
    except ChecksumError as exc:
        return f"error: {exc}"
    if recorded is None:
        return "no checksum file"
    if recorded != live or (manifest_checksum is not None and manifest_checksum != live):
        return "mismatch"
    return "ok"


def cmd_status(paths: Paths, opts: argparse.Namespace) -> int:

    manifest = load_manifest(paths)
    rows = []
    for entry in manifest.entries.values():
        rows.append(
            {
                "name": entry.name,
                "kind": "group" if entry.is_group else "module",
                "enabled": entry.enabled,
                "version": entry.version,
                "lastSafeVersion": entry.last_safe_version,
                "lastApplied": entry.last_applied,
                "checksum": None if entry.is_group else checksum_state(paths, entry.name, entry.checksum),
            }
        )
    if opts.json:
        sys.stdout.write(json.dumps({"entrypoint": manifest.entrypoint, "modules": rows}, indent=2) + "\n")
        return 0
    headers = ["NAME", "ENABLED", "VERSION", "LAST SAFE", "LAST APPLIED", "CHECKSUM"]
    cells = [
        [
            r["name"],
            "yes" if r["enabled"] else "no",
            r["version"] or "-",
            r["lastSafeVersion"] or "-",
            r["lastApplied"] or "never",
            r["checksum"] or "(group)",
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
    bad = 0
    for entry in manifest.modules():
        state = checksum_state(paths, entry.name, entry.checksum)
        bad += state != "ok"
        sys.stdout.write(f"{entry.name}: {state}\n")
    sys.stdout.write(
        f"{shown}: valid; {len(manifest.modules()) - bad} of {len(manifest.modules())} modules verified\n"
    )
    return 1 if bad else 0


HANDLERS = {"run": cmd_run, "status": cmd_status, "verify": cmd_verify}


def main(argv: Sequence[str] | None = None, root: Path | None = None) -> int:
    """Parse `argv`, run the command, and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        opts = build_parser().parse_args(_with_command(argv))
    except ParserExit as done:
        return done.status
    except UsageError as exc:
        sys.stderr.write(f"error: {exc}\n")
        if exc.hint:
            sys.stderr.write(f"hint: {exc.hint}\n")
        return exc.exit_code
    verbosity = -1 if opts.quiet else opts.verbose
    paths = Paths.create(root, manifest=opts.manifest)
    log_file = setup_logging(paths.logs, verbosity)
    try:
        return HANDLERS[opts.command](paths, opts)
    except UpdatesError as exc:
        log.debug("command failed", exc_info=True)
        log.error("%s", exc)
        if exc.hint:
            sys.stderr.write(f"hint: {exc.hint}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        log.exception("unexpected error: %s", exc)
        where = f"; the traceback is in {log_file}" if log_file else ""
        sys.stderr.write(f"hint: this is a bug in updates{where}\n")
        return 1
