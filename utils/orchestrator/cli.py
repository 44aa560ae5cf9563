"""The command line `index.py [run] | status | verify | history`; the one place mapping errors to exit codes.

Contract: `main(argv, root=None) -> int` never calls sys.exit and never lets an exception escape: usage and
manifest errors return 2, a held lock 75, Ctrl-C 130, a failed module 1, success 0. The operator sees one
line (and a hint) per problem on stderr; the log file under the state dir gets the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ..cliparse import Parser, ParserExit, report_early_error
from ..errors import UnsafePermissions, UpdatesError, UsageError
from ..log import setup_logging
from ..paths import Paths
from ..permissions import FIX_HINT, check_state_dir, enforced
from .command_inspect import cmd_history, cmd_status, cmd_verify
from .command_run import EXIT_INTERRUPTED, cmd_run

log = logging.getLogger(__name__)

COMMANDS = ("run", "status", "verify", "history")
_VALUE_OPTIONS = ("--manifest",)


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
        "2 usage or manifest error, 75 another run holds the lock, 130 interrupted.",
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
    run.add_argument(
        "--metrics-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="write Prometheus textfile-collector metrics here (default: notify.metrics_file)",
    )
    status = sub.add_parser("status", parents=[_common(suppress=True)], help="versions and checksum state")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.add_parser(
        "verify",
        parents=[_common(suppress=True)],
        help="check the manifest, every checksum and (as root) permissions",
    )
    history = sub.add_parser("history", parents=[_common(suppress=True)], help="past runs, newest first")
    history.add_argument("-n", type=int, default=20, metavar="N", help="show the last N runs (default 20)")
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")
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


HANDLERS = {"run": cmd_run, "status": cmd_status, "verify": cmd_verify, "history": cmd_history}


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
    paths = Paths.create(root, manifest=opts.manifest)
    if enforced() and (problems := check_state_dir(paths.state)):
        # Before the log file is opened there: whoever controls the directory controls what root writes.
        refusal = f"refusing to use the state directory {paths.state}: {problems[0]}"
        return report_early_error(UnsafePermissions(refusal, hint=FIX_HINT))
    log_file = setup_logging(paths.logs, verbosity)
    try:
        return HANDLERS[opts.command](paths, opts)
    except UpdatesError as exc:
        log.debug("command failed", exc_info=True)
        log.error("%s", exc)
        if exc.hint:
            sys.stderr.write(f"hint: {exc.hint}\n")
        if getattr(opts, "json", False):  # keep `index.py --json | jq` pipelines parsing
            sys.stdout.write(json.dumps({"ok": False, "error": str(exc), "exit_code": exc.exit_code}) + "\n")
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:
        log.exception("unexpected error: %s", exc)
        where = f"; the traceback is in {log_file}" if log_file else ""
        sys.stderr.write(f"hint: this is a bug in updates{where}\n")
        return 1
