"""The command line `index.py [run] | status | verify | history`; the one place mapping errors to exit codes.

Contract: `main(argv, root=None) -> int` never calls sys.exit and never lets an exception escape: usage and
manifest errors return 2, a held lock 75, Ctrl-C 130, a failed module 1, success 0. The operator sees each
problem once: one line (and a hint) on stderr, except a module's failure, which the summary on stdout
already names (on stderr too under --json or -q, where the summary is not read); the log file gets the
traceback. Under --json an error prints the run report's shape (`views.refusal_report`). The read-only
commands (`status`, `verify`, `history`) create nothing, not even the log file; the others first move the
state an earlier version left in `<root>/state` (`state_move`). Progress bars are off under --json and -q.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ..cliparse import Parser, ParserExit, report_early_error
from ..errors import LockHeld, UnsafePermissions, UpdatesError, UsageError
from ..log import setup_logging
from ..paths import Paths
from ..permissions import FIX_HINT, check_state_dir, enforced
from ..progress import configure as configure_progress
from ..report.views import refusal_report
from ..schema import validate_notify
from ..state_move import move_legacy_state_or_refuse
from .command_inspect import cmd_history, cmd_status, cmd_verify
from .command_new import add_new_parser, cmd_new
from .command_pull import cmd_pull
from .command_run import EXIT_INTERRUPTED, cmd_run

log = logging.getLogger(__name__)

COMMANDS = ("run", "status", "verify", "history", "pull", "new")
READ_ONLY = frozenset({"status", "verify", "history"})  # they create nothing, not even the log file
_VALUE_OPTIONS = ("--manifest",)


ENVIRONMENT = (
    "Environment: UPDATES_STATE_DIR is the state directory (lock, history, caches, backups; default "
    "/var/lib/updates for root, else $XDG_STATE_HOME/updates), UPDATES_LOG_DIR the directory of updates.log "
    "(default /var/log/updates for root without UPDATES_STATE_DIR, else <state>/logs)."
)


def metrics_path(value: str) -> Path:
    """`--metrics-file` obeys the rule of the manifest's `notify.metrics_file`: one rule for both."""
    problems = validate_notify({"metrics_file": value})
    if problems:
        raise argparse.ArgumentTypeError(problems[0].split(": ", 1)[1])
    return Path(value)


def seconds(value: str) -> float:
    """A number of seconds, 0 or more."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds (0 or more), got {value!r}")
    return number


def _common(suppress: bool) -> Parser:
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
        epilog="Without a command, `run` is meant; `index.py run --help` lists its options (--only, --skip, "
        "--dry-run, --json, --metrics-file). Exit codes: 0 all ok, 1 a module failed, "
        "2 usage or manifest error, 75 another run holds the lock, 130 interrupted. " + ENVIRONMENT,
        parents=[_common(suppress=False)],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    run = sub.add_parser(
        "run",
        parents=[_common(suppress=True)],
        help="run the modules (the default)",
        description="Run the entrypoint's modules in manifest order, each verified against its checksum and "
        "isolated; print one summary line per module. Takes the run lock.",
        epilog="Exit codes: 0 no module failed, 1 a module failed, 2 usage, manifest or permission error "
        "(nothing ran), 75 another run holds the lock, 130 interrupted. " + ENVIRONMENT,
    )
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
    run.add_argument(
        "--metrics-file",
        type=metrics_path,
        default=None,
        metavar="PATH",
        help="write Prometheus textfile-collector metrics to this absolute *.prom path "
        "(default: notify.metrics_file)",
    )
    status = sub.add_parser(
        "status",
        parents=[_common(suppress=True)],
        help="versions and checksum state",
        description="Show each entry's version, last safe version, lastApplied, checksum state and last run, "
        "a run in progress, changes a killed run left, and the state directory read. Changes nothing.",
        epilog=ENVIRONMENT,
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.add_parser(
        "verify",
        parents=[_common(suppress=True)],
        help="check the manifest, every checksum and (as root) permissions",
        description="Validate the manifest, every module's checksum and, as root, the permissions of the "
        "code, and warn about a GitHub token file others can read. Changes nothing. Exit codes: 0 all "
        "verified, 1 a checksum or permission problem, 2 an invalid manifest.",
        epilog=ENVIRONMENT,
    )
    history = sub.add_parser(
        "history",
        parents=[_common(suppress=True)],
        help="past runs, newest first",
        description="Past runs from <state>/history.jsonl, newest first, refused runs included, with the "
        "modules that failed or why the run was refused. Changes nothing.",
        epilog=ENVIRONMENT,
    )
    history.add_argument("-n", type=int, default=20, metavar="N", help="show the last N runs (default 20)")
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pull = sub.add_parser(
        "pull",
        parents=[_common(suppress=True)],
        help="move the checkout to a signed fast-forward of the remote (needs the allowed-signers file)",
    )
    pull.add_argument("--remote", default="origin", metavar="NAME", help="the git remote (default: origin)")
    pull.add_argument(
        "--ref", default=None, metavar="REF", help="a branch or tag (default: the branch checked out)"
    )
    pull.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="also move to an older commit or a rewritten history (still signed)",
    )
    pull.add_argument(
        "--wait",
        type=seconds,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for a run that holds the lock (default: refuse at once, exit 75)",
    )
    pull.add_argument("--json", action="store_true", help="print JSON instead of a line")
    add_new_parser(sub, [_common(suppress=True)])
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
    if i == 0 and args:
        raise UsageError(
            f"unknown command {args[0]!r}; commands: {', '.join(COMMANDS)}", hint="see `index.py --help`"
        )
    return ["run", *args]


HANDLERS = {
    "run": cmd_run,
    "status": cmd_status,
    "verify": cmd_verify,
    "history": cmd_history,
    "pull": cmd_pull,
    "new": cmd_new,
}


def main(argv: Sequence[str] | None = None, root: Path | None = None) -> int:
    """Parse `argv`, run the command, and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        opts = build_parser().parse_args(_with_command(argv))
    except ParserExit as done:
        return done.status
    except UsageError as exc:
        return report_early_error(exc)
    verbosity = -1 if opts.quiet else opts.verbose
    # Bars only for a person at a terminal: not with --json (a program reads) nor -q (errors only).
    configure_progress(enabled=not getattr(opts, "json", False) and verbosity >= 0)
    paths = Paths.create(root, manifest=opts.manifest)
    if enforced() and (problems := check_state_dir(paths.state)):
        # Before the log file is opened there: whoever controls the directory controls what root writes.
        refusal = f"refusing to use the state directory {paths.state}: {problems[0]}"
        return report_early_error(UnsafePermissions(refusal, hint=FIX_HINT))
    read_only = opts.command in READ_ONLY
    moved = None
    # A dry run changes nothing, not even where the state lives (`status` says it will move).
    if not read_only and not getattr(opts, "dry_run", False):
        try:
            # Before the log file: under UPDATES_STATE_DIR it lives in the state directory, which must
            # still be empty for the old one to take its place.
            moved = move_legacy_state_or_refuse(paths)
        except UpdatesError as exc:
            return report_early_error(exc)
    # The summary on stdout names each failed module: its error line on stderr too would say it twice. Under
    # --json or -q (cron discards stdout) stderr keeps it.
    summary_follows = opts.command == "run" and not opts.json and verbosity >= 0
    log_file = setup_logging(paths.logs, verbosity, create=not read_only, summary_follows=summary_follows)
    if moved:
        log.warning("%s", moved)
    try:
        return HANDLERS[opts.command](paths, opts)
    except UpdatesError as exc:
        log.debug("command failed", exc_info=True)
        log.error("%s", exc)
        if exc.hint:
            sys.stderr.write(f"hint: {exc.hint}\n")
        if getattr(opts, "json", False):  # keep `index.py --json | jq` pipelines parsing
            refused = {LockHeld: "lock", UnsafePermissions: "permissions"}.get(type(exc))
            report = refusal_report(str(exc), exc.exit_code, dry_run=bool(getattr(opts, "dry_run", False)),
                                    **({"refused": refused} if refused else {}))  # fmt: skip
            sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        log.exception("unexpected error: %s", exc)
        where = f"; the traceback is in {log_file}" if log_file else ""
        sys.stderr.write(f"hint: this is a bug in updates{where}\n")
        return 1
